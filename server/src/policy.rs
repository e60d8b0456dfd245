//! What each attached SAE may do as a master (the `[[sae]]` policy fields): which slaves it may
//! name, how many keys per second it may take, and what share of a pair's material one request
//! may take. The KME asks before it allocates anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;

/// A token bucket of keys.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// One SAE's policy.
#[derive(Debug)]
struct SaePolicy {
    allowed_slaves: Option<Vec<String>>,
    bucket: Option<Mutex<Bucket>>,
    max_share: f64,
}

/// The policies of every SAE attached to this KME.
#[derive(Debug)]
pub(crate) struct Policy(HashMap<String, SaePolicy>);

impl Policy {
    pub(crate) fn new(cfg: &Config) -> Self {
        let burst = f64::from(cfg.keys.max_per_request);
        Self(
            cfg.saes
                .iter()
                .map(|s| {
                    let bucket = s.max_keys_per_sec.map(|rate| {
                        let burst = burst.max(rate);
                        Mutex::new(Bucket {
                            rate,
                            burst,
                            tokens: burst,
                            at: Instant::now(),
                        })
                    });
                    let policy = SaePolicy {
                        allowed_slaves: s.allowed_slaves.clone(),
                        bucket,
                        max_share: s.max_pool_share.unwrap_or(1.0),
                    };
                    (s.id.clone(), policy)
                })
                .collect(),
        )
    }

    /// The first of `slaves` that `master` may not name, if any.
    pub(crate) fn forbidden_slave<'a>(
        &self,
        master: &str,
        slaves: &'a [String],
    ) -> Option<&'a str> {
        let allowed = self.0.get(master)?.allowed_slaves.as_ref()?;
        slaves
            .iter()
            .find(|s| !allowed.contains(s))
            .map(String::as_str)
    }

    /// Takes `number` keys from `master`'s rate budget; `false` (nothing taken) when it is
    /// spent.
    pub(crate) fn take_rate(&self, master: &str, number: u64) -> bool {
        let Some(bucket) = self.0.get(master).and_then(|p| p.bucket.as_ref()) else {
            return true;
        };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.take(number as f64, Instant::now())
    }

    /// The largest share of a pair's allocatable material one request of `master` may take.
    pub(crate) fn max_share(&self, master: &str) -> f64 {
        self.0.get(master).map_or(1.0, |p| p.max_share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket {
            rate: 10.0,
            burst: 20.0,
            tokens: 20.0,
            at: t0,
        };
        assert!(b.take(20.0, t0));
        assert!(!b.take(1.0, t0), "empty");
        assert!(
            b.take(5.0, t0 + Duration::from_millis(500)),
            "5 back after 0.5 s"
        );
        assert!(!b.take(1.0, t0 + Duration::from_millis(500)));
        assert!(
            !b.take(21.0, t0 + Duration::from_secs(100)),
            "never more than the burst"
        );
        assert!(b.take(20.0, t0 + Duration::from_secs(100)));
    }
}
