//! What two KMEs say when a connection opens, and how Alice settles what the last connection
//! (or process) left open: see the module docs of [`super`], rule 4.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::channel::{self, Control, Hello};
use super::ledger::{BlockState, Counter};
use super::{LinkRuntime, Outbox, Shared, lock, send};

/// How long each side waits for the other's hello.
const HELLO_WAIT: Duration = Duration::from_secs(15);

impl LinkRuntime {
    fn hello(&self) -> Result<Hello, String> {
        let bob = !self.is_alice();
        Ok(Hello {
            version: channel::CONTROL_VERSION,
            role: self.cfg.role,
            auth_share_bits: self.cfg.auth_share_bits,
            watermark: lock(&self.auth_file).watermark(),
            refills: self.ledger.counter(&self.peer, Counter::Refills)?,
            pending: if bob {
                self.ledger
                    .open_blocks(&self.peer, |s| *s == BlockState::Pending)?
                    .into_iter()
                    .map(|(b, _)| b)
                    .collect()
            } else {
                Vec::new()
            },
            files: if bob {
                let mut files = lock(&self.raw).files();
                files.truncate(channel::MAX_HELLO_FILES);
                files
            } else {
                Vec::new()
            },
        })
    }

    pub(super) fn handshake(&self, rx: &Receiver<Vec<u8>>, out: &Outbox) -> Result<(), String> {
        // Sessions of an earlier connection (or process) are gone: their blocks end here.
        for (b, _) in self
            .ledger
            .open_blocks(&self.peer, |s| *s == BlockState::Started)?
        {
            self.discard(
                &b,
                "interrupted: the connection or the process ended",
                "interrupted",
                out,
            )?;
        }
        *self.shared() = Shared::default();
        lock(&self.raw).reset_offers();
        send(out, &Control::Hello(self.hello()?));
        let deadline = Instant::now() + HELLO_WAIT;
        let theirs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(f) => {
                    if let Ok(Control::Hello(h)) = Control::decode(&f) {
                        break h;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err("no hello from the peer".into()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the channel closed before the peer's hello".into());
                }
            }
        };
        if theirs.version != channel::CONTROL_VERSION {
            return Err(format!(
                "the peer speaks control protocol {}; this KME {}",
                theirs.version,
                channel::CONTROL_VERSION
            ));
        }
        if theirs.role == self.cfg.role {
            return Err(format!(
                "both KMEs are configured as {:?} on this link",
                self.cfg.role
            ));
        }
        if theirs.auth_share_bits != self.cfg.auth_share_bits {
            return Err(format!(
                "auth_share_bits differ: {} here, {} at the peer",
                self.cfg.auth_share_bits, theirs.auth_share_bits
            ));
        }
        // Words either side may have used are used on both.
        let mark = theirs.watermark.max(lock(&self.auth_file).watermark());
        lock(&self.auth_file).raise(mark)?;
        self.link.auth_keys().discard_below(mark);
        if self.is_alice() {
            self.settle_as_alice(&theirs, out)?;
        }
        Ok(())
    }

    /// Alice settles what Bob's hello says he holds.
    fn settle_as_alice(&self, bob: &Hello, out: &Outbox) -> Result<(), String> {
        let refills = self.ledger.counter(&self.peer, Counter::Refills)?;
        if bob.refills > refills {
            return Err(format!(
                "the peer applied {} authentication refills, this KME only {refills}: \
                 the pools diverged (restored from a backup?)",
                bob.refills
            ));
        }
        for n in bob.refills..refills {
            let block = self
                .ledger
                .refill_block(&self.peer, n)?
                .ok_or_else(|| format!("refill {n} is not in the ledger"))?;
            send(
                out,
                &Control::Activated {
                    block,
                    refill: Some(n),
                },
            );
        }
        let held: HashSet<&String> = bob.pending.iter().collect();
        for block in &bob.pending {
            match self.ledger.state(&self.peer, block)? {
                Some(BlockState::Pending) => self.activate_alice(block, out)?,
                Some(BlockState::Active { refill: None }) => send(
                    out,
                    &Control::Activated {
                        block: block.clone(),
                        refill: None,
                    },
                ),
                // Resent above with its refill.
                Some(BlockState::Active { refill: Some(_) }) => {}
                _ => {
                    self.discard(block, "Alice holds no key of it", "peer_only", out)?;
                }
            }
        }
        for (block, _) in self
            .ledger
            .open_blocks(&self.peer, |s| *s == BlockState::Pending)?
        {
            if !held.contains(&block) {
                self.discard(&block, "Bob holds no key of it", "peer_only", out)?;
            }
        }
        for name in &bob.files {
            if self.ledger.is_file_done(&self.peer, name)? {
                send(out, &Control::FileDone { name: name.clone() });
            }
        }
        Ok(())
    }
}
