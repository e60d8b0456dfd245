//! A link's connections: Alice's KME dials and redials, Bob's accepts; each connection has a
//! reader and a writer task and one thread that runs the hellos, then every session of the link
//! ([`run_side_with`]), with the control protocol in order beside them.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use qkd_core::session::drive::{
    BlockResult, BlockSource, NextBlock, Role, SideConfig, SideEvents, run_side_with,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use super::channel::{self, Control};
use super::{LinkRuntime, LinkStats, Outbox};
use crate::monitor::Event;

/// An idle channel sends a ping this often.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A channel with nothing received for this long is closed.
const READ_IDLE: Duration = Duration::from_secs(20);
/// The writer sends what is queued in writes of up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 1 << 20;

impl LinkRuntime {
    /// Alice: dials the peer until stopped, serving each connection until it ends.
    pub(crate) async fn run_alice(self: Arc<Self>, tls: Arc<rustls::ClientConfig>) {
        let mut stop = self.stop.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                return;
            }
            match channel::dial(&self.url, tls.clone()).await {
                Ok(s) => {
                    backoff = Duration::from_millis(200);
                    self.clone().serve(s).await;
                }
                Err(e) => self.note(|s| s.set_down(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Bob: a channel arrived on the peer listener; an older one ends first.
    pub(crate) async fn accept(self: Arc<Self>, s: Box<dyn channel::Stream>) {
        self.kick.send_modify(|n| *n += 1);
        self.serve(s).await;
    }

    async fn serve(self: Arc<Self>, s: Box<dyn channel::Stream>) {
        // Subscribed before waiting: a connection accepted after this one ends it, even while it
        // still waits for its turn.
        let mut kicked = self.kick.subscribe();
        let _one = self.connection.lock().await;
        let (rd, mut wr) = tokio::io::split(s);
        let mut rd = tokio::io::BufReader::new(rd);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let close = Arc::new(Notify::new());
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            let mut batch = Vec::new();
            loop {
                let first = tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = ping.tick() => Control::Ping.encode(),
                };
                // Everything queued goes out in one write (a Cascade round of every frame of
                // every block in flight, say), then a flush.
                batch.clear();
                channel::push_frame(&mut batch, &first);
                while batch.len() < WRITE_BATCH_BYTES {
                    let Ok(m) = out_rx.try_recv() else { break };
                    channel::push_frame(&mut batch, &m);
                }
                let sent = async {
                    wr.write_all(&batch).await?;
                    wr.flush().await
                };
                if sent.await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let rt = self.clone();
        let close2 = close.clone();
        let session = tokio::task::spawn_blocking(move || {
            let r = rt.connected(&in_rx, &out_tx, &close2);
            if let Err(e) = &r {
                rt.note(|s| s.set_down(e));
                tracing::warn!(peer = %rt.peer, error = %e, "post-processing channel closed");
            }
            close2.notify_one();
        });
        let mut stop = self.stop.clone();
        loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(READ_IDLE, channel::read_frame(&mut rd)) => f,
                _ = close.notified() => break,
                _ = kicked.changed() => break,
                _ = stop.changed() => break,
            };
            match frame {
                Ok(Ok(Some(f))) => {
                    if f.first() == Some(&channel::CONTROL_TAG)
                        && Control::decode(&f) == Ok(Control::Ping)
                    {
                        continue;
                    }
                    if in_tx.send(f).is_err() {
                        break;
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    self.note(|s| s.set_down(&format!("channel: {e}")));
                    break;
                }
                Err(_) => {
                    self.note(|s| s.set_down("channel: nothing received within 20 s"));
                    break;
                }
            }
        }
        drop(in_tx);
        let _ = session.await;
        writer.abort();
        self.note(|s| s.set_down_unless_down("channel closed"));
    }

    /// One connection, on a thread of its own: hellos, settling, then the sessions.
    fn connected(
        &self,
        rx: &Receiver<Vec<u8>>,
        out: &Outbox,
        close: &Notify,
    ) -> Result<(), String> {
        self.handshake(rx, out)?;
        self.note(LinkStats::set_up);
        self.monitor.event(Event::Channel {
            peer: self.peer.clone(),
            up: true,
            reason: None,
        });
        let side = SideConfig {
            in_flight: self.cfg.in_flight,
            block_timeout: Duration::from_secs(self.cfg.block_timeout_secs),
        };
        let mut events = Events {
            rt: self,
            out,
            close,
            fatal: None,
        };
        let mut sender = |m: Vec<u8>| {
            out.send(m)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed"))
        };
        let result = if self.is_alice() {
            let mut blocks = AliceBlocks { rt: self, out };
            let role = Role::Alice {
                link: self.link.clone(),
                blocks: &mut blocks,
            };
            run_side_with(role, rx, &mut sender, side, &mut events)
        } else {
            let mut raw_for = |id: &str| self.start_bob(id);
            let role = Role::Bob {
                link: self.link.clone(),
                raw_for: &mut raw_for,
            };
            run_side_with(role, rx, &mut sender, side, &mut events)
        };
        let result = match events.fatal {
            Some(e) => Err(e),
            None => result.map(|_| ()).map_err(|e| format!("channel: {e}")),
        };
        self.monitor.event(Event::Channel {
            peer: self.peer.clone(),
            up: false,
            reason: result.as_ref().err().cloned(),
        });
        result
    }
}

/// Alice's blocks: offered to Bob first, started once he is ready.
struct AliceBlocks<'a> {
    rt: &'a LinkRuntime,
    out: &'a Outbox,
}

impl BlockSource for AliceBlocks<'_> {
    fn next_block(&mut self) -> NextBlock {
        if *self.rt.stop.borrow() {
            return NextBlock::Done;
        }
        if let Err(e) = self.rt.pump_offers(self.out) {
            self.rt.monitor.event(Event::SourceError {
                pool: self.rt.peer.clone(),
                message: e,
            });
        }
        loop {
            let Some(r) = self.rt.shared().ready.pop_front() else {
                return NextBlock::Later;
            };
            match self.rt.start_alice(&r) {
                Ok(bits) => return NextBlock::Ready(r.block, bits),
                Err(e) => {
                    self.rt.shared().live.remove(&r.block);
                    let _ = self.rt.discard(&r.block, &e, "raw", self.out);
                    self.rt.monitor.event(Event::SourceError {
                        pool: self.rt.peer.clone(),
                        message: e,
                    });
                }
            }
        }
    }
}

/// The events of one connection's sessions.
struct Events<'a> {
    rt: &'a LinkRuntime,
    out: &'a Outbox,
    /// Ends the connection.
    close: &'a Notify,
    /// An error that ends the connection (the next one settles).
    fatal: Option<String>,
}

impl Events<'_> {
    fn fail(&mut self, e: String) {
        tracing::error!(peer = %self.rt.peer, error = %e, "post-processing");
        self.rt.monitor.event(Event::SourceError {
            pool: self.rt.peer.clone(),
            message: e.clone(),
        });
        if self.fatal.is_none() {
            self.fatal = Some(e);
            // The sessions end with the connection, and the next connection settles.
            self.close.notify_one();
        }
    }
}

impl SideEvents for Events<'_> {
    fn on_block(&mut self, id: &str, result: BlockResult) {
        if let Err(e) = self.rt.block_ended(id, result, self.out) {
            self.fail(e);
        }
    }

    fn on_other(&mut self, message: Vec<u8>) {
        let r = Control::decode(&message).and_then(|m| self.rt.control(m, self.out));
        if let Err(e) = r {
            self.fail(e);
        }
    }
}
