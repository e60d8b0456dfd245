//! A block's way through a link: offered, started, ended (pending or discarded), activated;
//! and the control messages that move it (see the module docs of [`super`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use qkd_core::BitBlock;
use qkd_core::pipeline::BlockOutcome;
use qkd_core::session::SessionError;
use qkd_core::session::drive::BlockResult;
use zeroize::Zeroizing;

use super::channel::Control;
use super::ledger::{BlockState, Counter};
use super::raw::{self, RawRef};
use super::{LinkRuntime, Outbox, lock, send};
use crate::monitor::Event;

/// A raw block Bob does not hold is offered again after this long.
const MISSING_RETRY: Duration = Duration::from_secs(2);

/// The whole bytes of a final key (its bits past the last whole byte are dropped).
fn key_bytes(key: &BitBlock) -> Zeroizing<Vec<u8>> {
    let mut b = key.to_bytes();
    b.truncate(key.len() / 8);
    b
}

/// Splits a final key into its authentication share (the first `share_bytes`, in whole
/// 16-byte words; all of a shorter key's whole words) and the rest, for SAEs.
fn split_share(key: &[u8], share_bytes: usize) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let n = share_bytes.min(key.len() / 16 * 16);
    (
        Zeroizing::new(key[..n].to_vec()),
        Zeroizing::new(key[n..].to_vec()),
    )
}

/// Why a block yielded no key, as a short category for counters.
fn category(result: &Result<&BlockOutcome, &SessionError>) -> &'static str {
    match result {
        Ok(BlockOutcome::Discarded(why)) if why.contains("QBER") => "qber",
        Ok(BlockOutcome::Discarded(why)) if why.contains("confirmation") => "confirmation",
        Ok(BlockOutcome::Discarded(why)) if why.contains("secret length") => "no_secret_length",
        Ok(BlockOutcome::Discarded(_)) => "other",
        Ok(BlockOutcome::Quarantined(_)) => "entropy_check",
        Ok(BlockOutcome::Key) => "kept",
        Err(SessionError::Auth(_)) => "authentication",
        Err(SessionError::PeerAborted(_)) => "peer_aborted",
        Err(SessionError::Stage {
            stage: "transport", ..
        }) => "transport",
        Err(_) => "error",
    }
}

impl LinkRuntime {
    /// Alice: offers raw blocks until `in_flight` are offered or ready ahead of the sessions.
    pub(super) fn pump_offers(&self, out: &Outbox) -> Result<(), String> {
        let (want, busy) = {
            let mut sh = self.shared();
            let now = Instant::now();
            sh.missing.retain(|_, t| *t > now);
            let ahead = sh.offered.len() + sh.ready.len();
            let want = self.cfg.in_flight.saturating_sub(ahead);
            if want == 0 {
                return Ok(());
            }
            let busy: HashSet<String> = sh
                .offered
                .keys()
                .chain(sh.ready.iter().map(|r| &r.block))
                .chain(sh.live.iter())
                .chain(sh.missing.keys())
                .cloned()
                .collect();
            (want, busy)
        };
        let offers = lock(&self.raw).poll_new(&self.ledger, &self.peer, &busy, want)?;
        let mut sh = self.shared();
        for r in offers {
            send(out, &Control::Offer(r.clone()));
            sh.offered.insert(r.block.clone(), r);
        }
        Ok(())
    }

    /// Alice starts a block Bob is ready for: recorded, then loaded.
    pub(super) fn start_alice(&self, r: &RawRef) -> Result<BitBlock, String> {
        match raw::simulated_number(&r.block) {
            Some(n) => {
                let next = self.ledger.counter(&self.peer, Counter::NextSimulated)?;
                self.ledger.start_with_counter(
                    &self.peer,
                    &r.block,
                    Counter::NextSimulated,
                    next.max(n + 1),
                )?;
            }
            None => self
                .ledger
                .set(&self.peer, &r.block, &BlockState::Started)?,
        }
        self.shared().live.insert(r.block.clone());
        lock(&self.raw).load(r, true)
    }

    /// Bob starts a block when Alice's first message for it arrives: only one he answered
    /// `Ready` for and never started.
    pub(super) fn start_bob(&self, id: &str) -> Option<BitBlock> {
        let r = self.shared().accepted.remove(id)?;
        let fresh = matches!(self.ledger.state(&self.peer, id), Ok(None));
        if !fresh
            || self
                .ledger
                .set(&self.peer, id, &BlockState::Started)
                .is_err()
        {
            return None;
        }
        self.shared().live.insert(id.to_string());
        lock(&self.raw).load(&r, false).ok()
    }

    /// A session ended on this side.
    pub(super) fn block_ended(
        &self,
        id: &str,
        result: BlockResult,
        out: &Outbox,
    ) -> Result<(), String> {
        self.shared().live.remove(id);
        // Every block spends pool bits, whether or not it refills the pool.
        self.check_auth_watermark();
        let (report, key) = match result {
            Ok(o) => (o.report, o.key),
            Err(e) => {
                let cat = category(&Err(&e));
                return self.discard(id, &e.to_string(), cat, out);
            }
        };
        let alarm = report.sample_bits > 0 && report.qber > self.cfg.max_qber;
        self.note(|s| s.block_measured(&report, alarm));
        if alarm {
            self.monitor.event(Event::QberAlarm {
                peer: self.peer.clone(),
                block: id.to_string(),
                qber: report.qber,
                limit: self.cfg.max_qber,
            });
        }
        let Some(key) = key.filter(|_| report.outcome == BlockOutcome::Key) else {
            let why = match &report.outcome {
                BlockOutcome::Discarded(w) | BlockOutcome::Quarantined(w) => w.clone(),
                BlockOutcome::Key => "no key".into(),
            };
            return self.discard(id, &why, category(&Ok(&report.outcome)), out);
        };
        let bytes = key_bytes(&key);
        drop(key);
        if let Err(e) = self
            .ledger
            .write_pending(&self.peer, id, &bytes)
            .and_then(|()| self.ledger.set(&self.peer, id, &BlockState::Pending))
        {
            let _ = self.ledger.burn_pending(&self.peer, id);
            return self.discard(id, &format!("cannot hold its key: {e}"), "store", out);
        }
        if self.is_alice() {
            if self.shared().peer_held.remove(id) {
                self.activate_alice(id, out)?;
            }
        } else {
            send(
                out,
                &Control::Held {
                    block: id.to_string(),
                },
            );
        }
        Ok(())
    }

    /// No key from this block on this side; the peer is told.
    pub(super) fn discard(
        &self,
        id: &str,
        why: &str,
        category: &'static str,
        out: &Outbox,
    ) -> Result<(), String> {
        self.ledger.set(
            &self.peer,
            id,
            &BlockState::Discarded {
                reason: why.to_string(),
            },
        )?;
        self.ledger.burn_pending(&self.peer, id)?;
        self.note(|s| s.discarded(category));
        send(
            out,
            &Control::Dropped {
                block: id.to_string(),
                reason: why.to_string(),
            },
        );
        self.raw_decided(id, out)
    }

    fn raw_decided(&self, id: &str, out: &Outbox) -> Result<(), String> {
        if self.is_alice()
            && let Some(name) = lock(&self.raw).decided(&self.ledger, &self.peer, id)?
        {
            send(out, &Control::FileDone { name });
        }
        Ok(())
    }

    /// Moves a pending key into the store and its share into the authentication pool (with
    /// refill `number`, checked against the pool's count when given).
    fn activate(&self, id: &str, number: Option<u64>) -> Result<Option<u64>, String> {
        let key = self.ledger.read_pending(&self.peer, id)?;
        let (share, rest) = split_share(&key, self.cfg.auth_share_bits as usize / 8);
        drop(key);
        let bits = rest.len() as u64 * 8;
        let pool = self.pool.clone();
        pool.add_block(&self.peer, id, rest)
            .map_err(|e| format!("storing block {id}: {e}"))?;
        let refill = if share.is_empty() {
            if number.is_some() {
                return Err(format!("block {id} has no authentication share here"));
            }
            self.ledger.activate(&self.peer, id, None)?;
            None
        } else {
            let next = self.ledger.counter(&self.peer, Counter::Refills)?;
            let n = number.unwrap_or(next);
            if n != next {
                return Err(format!(
                    "refill {n} of block {id} arrived where {next} was next"
                ));
            }
            let mut file = lock(&self.auth_file);
            let r = file.append(&share, n)?;
            self.ledger.activate(&self.peer, id, Some(r))?;
            file.committed(r);
            drop(file);
            self.link.auth_keys().refill(&share);
            Some(n)
        };
        self.ledger.burn_pending(&self.peer, id)?;
        self.note(|s| s.activated(bits));
        self.monitor.event(Event::Activated {
            pool: self.peer.clone(),
            block: id.to_string(),
            bytes: bits / 8,
        });
        self.check_auth_watermark();
        Ok(refill)
    }

    /// Bob: Alice reserves keys in a block she activated before her `Activated` arrived here.
    /// Its key goes into the store now, so the reservation need not fail; the block stays
    /// pending in the ledger and its authentication refill waits for `Activated` (Alice's order).
    /// Alice allocates only from blocks she activated, and never drops one, so `Activated`
    /// follows, at the latest at the next connection.
    pub(crate) fn store_early(&self, block: &str) -> Result<(), String> {
        if self.is_alice() || self.ledger.state(&self.peer, block)? != Some(BlockState::Pending) {
            return Ok(());
        }
        let key = self.ledger.read_pending(&self.peer, block)?;
        let (_, rest) = split_share(&key, self.cfg.auth_share_bits as usize / 8);
        drop(key);
        self.pool
            .add_block(&self.peer, block, rest)
            .map(|_| ())
            .map_err(|e| format!("storing block {block}: {e}"))
    }

    pub(super) fn activate_alice(&self, id: &str, out: &Outbox) -> Result<(), String> {
        let refill = self.activate(id, None)?;
        send(
            out,
            &Control::Activated {
                block: id.to_string(),
                refill,
            },
        );
        self.raw_decided(id, out)
    }

    /// A control message from the peer.
    pub(super) fn control(&self, m: Control, out: &Outbox) -> Result<(), String> {
        match m {
            Control::Ready { block } if self.is_alice() => {
                let mut sh = self.shared();
                if let Some(r) = sh.offered.remove(&block) {
                    sh.ready.push_back(r);
                }
            }
            Control::Missing { block, reason } if self.is_alice() => {
                let first = {
                    let mut sh = self.shared();
                    sh.offered.remove(&block);
                    sh.missing
                        .insert(block.clone(), Instant::now() + MISSING_RETRY)
                        .is_none()
                };
                if first && lock(&self.stats).note_missing(&block) {
                    self.monitor.event(Event::RawMissing {
                        peer: self.peer.clone(),
                        block,
                        reason,
                    });
                }
            }
            Control::Held { block } if self.is_alice() => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) => self.activate_alice(&block, out)?,
                    Some(BlockState::Started) => {
                        self.shared().peer_held.insert(block);
                    }
                    Some(BlockState::Active { .. }) => {}
                    _ => send(
                        out,
                        &Control::Dropped {
                            block,
                            reason: "Alice holds no key of it".into(),
                        },
                    ),
                }
            }
            Control::Offer(r) if !self.is_alice() => {
                let reply = match self.ledger.state(&self.peer, &r.block)? {
                    Some(_) => Control::Dropped {
                        block: r.block.clone(),
                        reason: "Bob started or decided it before".into(),
                    },
                    None => match lock(&self.raw).check(&r) {
                        Ok(()) => Control::Ready {
                            block: r.block.clone(),
                        },
                        Err(reason) => Control::Missing {
                            block: r.block.clone(),
                            reason,
                        },
                    },
                };
                if matches!(reply, Control::Ready { .. }) {
                    self.shared().accepted.insert(r.block.clone(), r);
                }
                send(out, &reply);
            }
            Control::Activated { block, refill } if !self.is_alice() => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) => {
                        self.activate(&block, refill)?;
                    }
                    Some(BlockState::Active { .. }) => {}
                    other => {
                        return Err(format!(
                            "Alice activated block {block}, which is {other:?} here"
                        ));
                    }
                }
            }
            Control::FileDone { name } if !self.is_alice() => {
                lock(&self.raw).file_done(&name)?;
            }
            Control::Dropped { block, reason } => {
                match self.ledger.state(&self.peer, &block)? {
                    Some(BlockState::Pending) | None => {
                        self.ledger.burn_pending(&self.peer, &block)?;
                        self.ledger.set(
                            &self.peer,
                            &block,
                            &BlockState::Discarded {
                                reason: format!("the peer dropped it: {reason}"),
                            },
                        )?;
                        self.note(|s| s.discarded("peer_dropped"));
                        self.shared().offered.remove(&block);
                        self.raw_decided(&block, out)?;
                    }
                    Some(BlockState::Active { .. }) => {
                        return Err(format!(
                            "the peer dropped block {block}, which is active here"
                        ));
                    }
                    // A live session ends by itself (the peer aborts it too).
                    Some(BlockState::Started | BlockState::Discarded { .. }) => {}
                }
            }
            Control::Ping | Control::Hello(_) => {}
            other => {
                return Err(format!(
                    "unexpected {other:?} for a {:?} KME",
                    self.cfg.role
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_whole_words_from_the_front_and_the_rest_goes_to_saes() {
        let key: Vec<u8> = (0..200u8).collect();
        let (share, rest) = split_share(&key, 128);
        assert_eq!(&share[..], &key[..128]);
        assert_eq!(&rest[..], &key[128..]);
        // A key shorter than the share gives its whole words and keeps the tail.
        let (share, rest) = split_share(&key[..100], 128);
        assert_eq!((share.len(), rest.len()), (96, 4));
        let bits = BitBlock::from_bytes(&[0xff, 0x01], 13).unwrap();
        assert_eq!(&key_bytes(&bits)[..], &[0xff]);
    }
}
