//! What the sessions of one link share: the configuration, the reconciliation algorithm and its
//! plans, the QBER ladder and the authentication key pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::SessionError;
use super::wire::HelloParams;
use crate::amplify::QberLadder;
use crate::auth::AuthKeys;
use crate::pipeline::PipelineConfig;
use crate::reconcile::algorithm::Algorithm;
use crate::reconcile::cascade::{Params, Plan, Variant};
use crate::rng::RandomSource;

/// QBER buckets of the plan cache are geometric with this ratio: the estimate is rounded to the
/// nearest power of it (it is an estimate anyway; Cascade's block sizes, about 0.73/QBER, move by
/// at most 2.5 % within a bucket).
const QBER_BUCKET_RATIO: f64 = 1.05;

/// Plans kept per link before the cache starts afresh (a link sees few lengths and buckets).
const MAX_CACHED_PLANS: usize = 256;

/// Cached plans by (shuffle seed, frame bits, QBER bucket).
type PlanCache = HashMap<([u8; 32], u32, i32), Arc<Plan>>;

/// One side's view of a link: create it once and share it (`Arc`) with every session.
///
/// Cascade shuffles are public and independent of the errors, so Alice draws one shuffle seed
/// per link and every block reuses the plan (permutations and block sizes) of its frame length
/// and QBER bucket: building a plan costs about as much as reconciling a frame. Everything else
/// (sample positions, confirmation and Toeplitz seeds) is fresh per block.
pub struct Link {
    cfg: PipelineConfig,
    algorithm: Algorithm,
    ladder: QberLadder,
    shuffle_seed: [u8; 32],
    plans: Mutex<PlanCache>,
    auth: Mutex<Box<dyn AuthKeys>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("cfg", &self.cfg)
            .field("auth_spent_bits", &self.auth_keys().spent_bits())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link with `cfg` (both sides must use the same protocol settings; `block_bits` is not
    /// used: each session's raw block has its own length) authenticated with `auth`; the
    /// shuffle seed (used when this side is Alice) is drawn from `rng`.
    pub fn new(
        cfg: PipelineConfig,
        auth: Box<dyn AuthKeys>,
        rng: &mut dyn RandomSource,
    ) -> Result<Arc<Self>, SessionError> {
        let algorithm = cfg
            .validate_protocol()
            .map_err(|e| SessionError::Config(e.to_string()))?;
        let ladder = QberLadder::default_up_to(cfg.max_qber)
            .map_err(|e| SessionError::Config(e.to_string()))?;
        Ok(Arc::new(Self {
            cfg,
            algorithm,
            ladder,
            shuffle_seed: rng.seed32()?,
            plans: Mutex::default(),
            auth: Mutex::new(auth),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The reconciliation algorithm.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// The parameters a hello carries.
    pub fn params(&self) -> HelloParams {
        HelloParams::of(&self.cfg)
    }

    /// The tolerated QBERs blocks are sized for, fixed by `max_qber`.
    pub fn ladder(&self) -> &QberLadder {
        &self.ladder
    }

    /// The shuffle seed Alice announces.
    pub(crate) fn shuffle_seed(&self) -> [u8; 32] {
        self.shuffle_seed
    }

    /// The authentication keys (locked while the guard lives).
    pub fn auth_keys(&self) -> MutexGuard<'_, Box<dyn AuthKeys>> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan of an `n`-bit frame at `qber` under `seed`, cached per QBER bucket.
    pub(crate) fn plan(
        &self,
        seed: [u8; 32],
        n: usize,
        qber: f64,
    ) -> Result<Arc<Plan>, SessionError> {
        let bucket = (qber.ln() / QBER_BUCKET_RATIO.ln()).round() as i32;
        let n32 =
            u32::try_from(n).map_err(|_| SessionError::Config(format!("frame of {n} bits")))?;
        let key = (seed, n32, bucket);
        if let Some(p) = self.lock_plans().get(&key) {
            return Ok(Arc::clone(p));
        }
        // Built outside the lock: other blocks keep going meanwhile.
        let plan = self.fresh_plan(seed, n, QBER_BUCKET_RATIO.powi(bucket).min(0.5))?;
        let mut plans = self.lock_plans();
        if plans.len() >= MAX_CACHED_PLANS {
            plans.clear();
        }
        plans.insert(key, Arc::clone(&plan));
        Ok(plan)
    }

    /// A plan that is not cached (a retry's fresh shuffle).
    pub(crate) fn fresh_plan(
        &self,
        seed: [u8; 32],
        n: usize,
        qber: f64,
    ) -> Result<Arc<Plan>, SessionError> {
        let params = Params {
            variant: self.cascade_variant()?.clone(),
            n: u32::try_from(n).map_err(|_| SessionError::Config(format!("frame of {n} bits")))?,
            qber,
            seed,
        };
        Ok(Plan::new(params)?)
    }

    fn cascade_variant(&self) -> Result<&Variant, SessionError> {
        match &self.algorithm {
            Algorithm::Cascade(v) => Ok(v),
            Algorithm::Ldpc(_) => Err(SessionError::Config("the link reconciles with LDPC".into())),
        }
    }

    fn lock_plans(&self) -> MutexGuard<'_, PlanCache> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }
}
