//! Drivers that carry the sessions' messages: in process ([`run_pair`], [`run_pair_with`]),
//! over a transport shared by many blocks in flight ([`run_side`]), and the latency line
//! ([`DelayLine`], [`run_latency_line`]) that makes a link of a given delay and bandwidth out of
//! two threads, so a benchmark shows what a real link would do.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire::{block_id_of, is_session_message};
use super::{AliceSession, BobSession, Link, Party, SessionError, SessionOutcome};
use crate::BitBlock;
use crate::auth::Direction;
use crate::rng::OsRandom;

/// Either side's result for one block.
pub type BlockResult = Result<SessionOutcome, SessionError>;

/// Runs two sessions of one block against each other in this process, every message through
/// its encoding, until both have ended. Returns `(Alice's, Bob's)` outcomes.
pub fn run_pair(alice: &mut dyn Party, bob: &mut dyn Party) -> (BlockResult, BlockResult) {
    run_pair_with(alice, bob, |_, m| vec![m])
}

/// [`run_pair`] with a tap on the wire: `tap(direction, message)` returns what is delivered
/// instead (nothing to drop it, a changed copy to alter it, two copies to replay it).
pub fn run_pair_with(
    alice: &mut dyn Party,
    bob: &mut dyn Party,
    mut tap: impl FnMut(Direction, Vec<u8>) -> Vec<Vec<u8>>,
) -> (BlockResult, BlockResult) {
    let mut outcomes: (Option<BlockResult>, Option<BlockResult>) = (None, None);
    loop {
        let mut moved = false;
        while let Some(m) = alice.poll_transmit() {
            moved = true;
            for m in tap(Direction::AliceToBob, m) {
                // An error is also the session's outcome; later messages get `Ended`.
                let _ = bob.handle(&m);
            }
        }
        while let Some(m) = bob.poll_transmit() {
            moved = true;
            for m in tap(Direction::BobToAlice, m) {
                let _ = alice.handle(&m);
            }
        }
        if outcomes.0.is_none() {
            outcomes.0 = alice.take_outcome();
        }
        if outcomes.1.is_none() {
            outcomes.1 = bob.take_outcome();
        }
        if !moved {
            // Nothing left in flight: a side still waiting will wait forever.
            let stalled = || {
                Err(SessionError::Stage {
                    stage: "transport",
                    message: "no message in flight and the session has not ended".into(),
                })
            };
            return (
                outcomes.0.take().unwrap_or_else(stalled),
                outcomes.1.take().unwrap_or_else(stalled),
            );
        }
    }
}

/// How one side runs many blocks over one connection.
#[derive(Debug, Clone, Copy)]
pub struct SideConfig {
    /// Blocks Alice keeps in flight at once.
    pub in_flight: usize,
    /// A block with no message for this long is ended with [`SessionError::Stage`]
    /// (`transport`); so is every block when the connection closes.
    pub block_timeout: Duration,
}

impl Default for SideConfig {
    fn default() -> Self {
        Self {
            in_flight: 4,
            block_timeout: Duration::from_secs(60),
        }
    }
}

/// What Alice's block source has next.
#[derive(Debug)]
pub enum NextBlock {
    /// A block to start: its ID and raw bits.
    Ready(String, BitBlock),
    /// Nothing now; ask again shortly (a device still producing, a peer not ready yet).
    Later,
    /// No more blocks: [`run_side`] returns once the blocks in flight have ended.
    Done,
}

/// Where Alice's raw blocks come from. Every iterator of `(block ID, raw block)` is one that is
/// never [`NextBlock::Later`].
pub trait BlockSource {
    /// The next block, if there is one now.
    fn next_block(&mut self) -> NextBlock;
}

impl<I: Iterator<Item = (String, BitBlock)>> BlockSource for I {
    fn next_block(&mut self) -> NextBlock {
        match self.next() {
            Some((id, raw)) => NextBlock::Ready(id, raw),
            None => NextBlock::Done,
        }
    }
}

/// How long [`run_side`] waits for a message before it asks a source that said
/// [`NextBlock::Later`] again.
const SOURCE_POLL: Duration = Duration::from_millis(20);

/// Which side [`run_side`] plays, and where its raw blocks come from.
pub enum Role<'a> {
    /// Alice starts a session for every block the source yields, `in_flight` at a time.
    Alice {
        /// Her link.
        link: Arc<Link>,
        /// Her raw blocks, in order.
        blocks: &'a mut dyn BlockSource,
    },
    /// Bob starts a session when a block's first message arrives, on the raw block
    /// `raw_for(block ID)` gives (a block it does not have is refused, and Alice told with an
    /// abort).
    Bob {
        /// His link.
        link: Arc<Link>,
        /// Bob's raw block of an ID.
        raw_for: &'a mut dyn FnMut(&str) -> Option<BitBlock>,
    },
}

impl std::fmt::Debug for Role<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Alice { .. } => "Role::Alice",
            Role::Bob { .. } => "Role::Bob",
        })
    }
}

/// What [`run_side`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideStats {
    /// Messages sent.
    pub messages_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Messages dropped because their block had ended or was unknown (late aborts, say).
    pub messages_dropped: u64,
}

struct Active {
    party: Box<dyn Party>,
    last_heard: Instant,
}

/// The sessions of one side in flight, in the order they started (for round-robin sending).
#[derive(Default)]
struct InFlight {
    active: HashMap<String, Active>,
    order: VecDeque<String>,
}

impl InFlight {
    fn start(&mut self, id: String, party: Box<dyn Party>) {
        self.order.push_back(id.clone());
        let last_heard = Instant::now();
        self.active.insert(id, Active { party, last_heard });
    }
}

/// An abort for a block that has no session on this side (its first message is the only one
/// this side sends, so its number is 0).
fn abort_without_session(block_id: &str, why: &SessionError) -> Option<Vec<u8>> {
    let reason = why.to_string();
    let body = super::wire::Body::Abort { reason };
    let block_id = block_id.to_owned();
    super::wire::Envelope {
        block_id,
        seq: 0,
        body,
    }
    .encode()
    .ok()
}

/// What [`run_side_with`] tells its caller.
pub trait SideEvents {
    /// A block ended on this side.
    fn on_block(&mut self, id: &str, result: BlockResult);
    /// A message that is not a session message ([`super::wire::is_session_message`]): the
    /// caller's own protocol on the same connection, seen in order with the session messages
    /// around it. Dropped unless overridden.
    fn on_other(&mut self, message: Vec<u8>) {
        let _ = message;
    }
}

struct OnBlock<'a>(&'a mut dyn FnMut(&str, BlockResult));

impl SideEvents for OnBlock<'_> {
    fn on_block(&mut self, id: &str, result: BlockResult) {
        (self.0)(id, result);
    }
}

/// Runs one side of a link: sessions of many blocks over one ordered message channel
/// (`incoming`, and `send` for the other way). Alice returns once every block has ended; Bob
/// once `incoming` is closed. `on_block(id, result)` sees each block as it ends.
pub fn run_side(
    role: Role<'_>,
    incoming: &Receiver<Vec<u8>>,
    send: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    cfg: SideConfig,
    on_block: &mut dyn FnMut(&str, BlockResult),
) -> std::io::Result<SideStats> {
    run_side_with(role, incoming, send, cfg, &mut OnBlock(on_block))
}

/// [`run_side`] with every event, non-session messages included, going to `events`.
pub fn run_side_with(
    role: Role<'_>,
    incoming: &Receiver<Vec<u8>>,
    send: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    cfg: SideConfig,
    events: &mut dyn SideEvents,
) -> std::io::Result<SideStats> {
    let mut stats = SideStats::default();
    let mut flight = InFlight::default();
    let mut ended = RecentIds::default();
    let (mut role, mut source_done) = (role, false);
    let tick = cfg.block_timeout.min(Duration::from_millis(200));
    let mut last_sweep = Instant::now();
    loop {
        let mut source_later = false;
        if let Role::Alice { link, blocks } = &mut role {
            while !source_done && flight.active.len() < cfg.in_flight.max(1) {
                let (id, raw) = match blocks.next_block() {
                    NextBlock::Ready(id, raw) => (id, raw),
                    NextBlock::Later => {
                        source_later = true;
                        break;
                    }
                    NextBlock::Done => {
                        source_done = true;
                        break;
                    }
                };
                match AliceSession::new(Arc::clone(link), id.clone(), raw, Box::new(OsRandom)) {
                    Ok(s) => flight.start(id, Box::new(s)),
                    Err(e) => events.on_block(&id, Err(e)),
                }
            }
        }
        // Send what every session has to say, then retire the ended ones.
        for id in &flight.order {
            if let Some(a) = flight.active.get_mut(id) {
                while let Some(m) = a.party.poll_transmit() {
                    stats.messages_sent += 1;
                    stats.bytes_sent += m.len() as u64;
                    send(m)?;
                }
            }
        }
        let InFlight { active, order } = &mut flight;
        order.retain(|id| {
            let Some(a) = active.get_mut(id) else {
                return false;
            };
            match a.party.take_outcome() {
                Some(r) => {
                    events.on_block(id, r);
                    active.remove(id);
                    ended.insert(id.clone());
                    false
                }
                None => true,
            }
        });
        if matches!(role, Role::Alice { .. }) && source_done && flight.active.is_empty() {
            return Ok(stats);
        }
        // Blocks that went quiet end, whether or not other blocks' messages keep arriving.
        let now = Instant::now();
        if now - last_sweep >= tick {
            last_sweep = now;
            let stale: Vec<String> = flight
                .active
                .iter()
                .filter(|(_, a)| now - a.last_heard >= cfg.block_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in stale {
                flight.active.remove(&id);
                ended.insert(id.clone());
                events.on_block(
                    &id,
                    Err(transport_error("no message within the block timeout")),
                );
            }
        }
        let wait = if source_later {
            tick.min(SOURCE_POLL)
        } else {
            tick
        };
        let m = match incoming.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                for (id, _) in flight.active.drain() {
                    events.on_block(&id, Err(transport_error("the connection closed")));
                }
                return Ok(stats);
            }
        };
        stats.messages_received += 1;
        if !is_session_message(&m) {
            events.on_other(m);
            continue;
        }
        let Ok(id) = block_id_of(&m) else {
            stats.messages_dropped += 1;
            continue;
        };
        if let Some(a) = flight.active.get_mut(&id) {
            a.last_heard = Instant::now();
            // An error is the session's outcome, reported when it is retired.
            let _ = a.party.handle(&m);
            continue;
        }
        let Role::Bob { link, raw_for } = &mut role else {
            stats.messages_dropped += 1;
            continue;
        };
        if ended.contains(&id) {
            stats.messages_dropped += 1;
            continue;
        }
        let started = match raw_for(&id) {
            Some(raw) => BobSession::new(Arc::clone(link), id.clone(), raw),
            None => Err(SessionError::Hello(format!("no raw block {id:?} here"))),
        };
        match started {
            Ok(mut s) => {
                let _ = s.handle(&m);
                flight.start(id, Box::new(s));
            }
            Err(e) => {
                // Alice is told, so her session ends now instead of at its timeout.
                stats.messages_dropped += 1;
                if let Some(abort) = abort_without_session(&id, &e) {
                    stats.messages_sent += 1;
                    stats.bytes_sent += abort.len() as u64;
                    send(abort)?;
                }
                events.on_block(&id, Err(e));
                ended.insert(id);
            }
        }
    }
}

fn transport_error(why: &str) -> SessionError {
    SessionError::Stage {
        stage: "transport",
        message: why.into(),
    }
}

/// The IDs of the blocks that ended most recently (a bounded set: late messages for them are
/// dropped instead of starting a new session).
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
}

/// One direction of a link with a one-way delay and a bandwidth: [`DelayLine::send`] returns at
/// once, and a thread hands each message to the sink when it has crossed the line (its bits
/// serialized at the bandwidth, then the delay), in order.
pub struct DelayLine {
    queue: Option<Sender<(Instant, Vec<u8>)>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    delay: Duration,
    bits_per_second: Option<f64>,
    line_free_at: Instant,
}

impl std::fmt::Debug for DelayLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayLine")
            .field("delay", &self.delay)
            .field("bits_per_second", &self.bits_per_second)
            .finish_non_exhaustive()
    }
}

impl DelayLine {
    /// A line into `sink` with `delay` one way and `bits_per_second` (`None`: unlimited).
    pub fn new(
        mut sink: impl FnMut(Vec<u8>) -> std::io::Result<()> + Send + 'static,
        delay: Duration,
        bits_per_second: Option<f64>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let thread = std::thread::spawn(move || {
            for (due, m) in rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                sink(m)?;
            }
            Ok(())
        });
        Self {
            queue: Some(tx),
            thread: Some(thread),
            delay,
            bits_per_second,
            line_free_at: Instant::now(),
        }
    }

    /// Puts a message on the line.
    pub fn send(&mut self, m: Vec<u8>) -> std::io::Result<()> {
        let now = Instant::now();
        let start = self.line_free_at.max(now);
        let on_wire = self.bits_per_second.map_or(Duration::ZERO, |bps| {
            Duration::from_secs_f64(m.len() as f64 * 8.0 / bps)
        });
        self.line_free_at = start + on_wire;
        let due = self.line_free_at + self.delay;
        self.queue
            .as_ref()
            .and_then(|q| q.send((due, m)).ok())
            .ok_or_else(|| std::io::Error::other("the delay line's sink has failed"))
    }

    /// Waits until every message has been delivered, then closes the line.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.queue = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the delay line's thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A latency line's settings.
#[derive(Debug, Clone, Copy)]
pub struct LineConfig {
    /// One-way delay (half the round trip).
    pub one_way: Duration,
    /// Bandwidth each way, bits per second (`None`: unlimited).
    pub bits_per_second: Option<f64>,
    /// How each side runs its blocks.
    pub side: SideConfig,
}

/// Every block's outcome on both sides, in the order the blocks were given.
#[derive(Debug)]
pub struct LineRun {
    /// `(block ID, Alice's result, Bob's result)`.
    pub blocks: Vec<(String, BlockResult, BlockResult)>,
    /// Alice's counters.
    pub alice: SideStats,
    /// Bob's counters.
    pub bob: SideStats,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// [`run_side`] sending over `line`, collecting every block's result; the line is drained and
/// closed when the side is done.
fn run_collecting(
    role: Role<'_>,
    incoming: &Receiver<Vec<u8>>,
    mut line: DelayLine,
    cfg: SideConfig,
) -> std::io::Result<(SideStats, HashMap<String, BlockResult>)> {
    let mut results = HashMap::new();
    let stats = run_side(role, incoming, &mut |m| line.send(m), cfg, &mut |id, r| {
        results.insert(id.to_owned(), r);
    })?;
    line.finish()?;
    Ok((stats, results))
}

/// Runs Alice and Bob on their own threads over a [`DelayLine`] each way: `blocks` are
/// `(ID, Alice's raw, Bob's raw)`.
pub fn run_latency_line(
    alice_link: Arc<Link>,
    bob_link: Arc<Link>,
    blocks: Vec<(String, BitBlock, BitBlock)>,
    cfg: LineConfig,
) -> std::io::Result<LineRun> {
    let t0 = Instant::now();
    let ids: Vec<String> = blocks.iter().map(|b| b.0.clone()).collect();
    let mut bob_raw: HashMap<String, BitBlock> = HashMap::new();
    let mut alice_blocks = Vec::with_capacity(blocks.len());
    for (id, a, b) in blocks {
        bob_raw.insert(id.clone(), b);
        alice_blocks.push((id, a));
    }
    let (to_bob_tx, to_bob_rx) = mpsc::channel::<Vec<u8>>();
    let (to_alice_tx, to_alice_rx) = mpsc::channel::<Vec<u8>>();
    let deliver = |tx: Sender<Vec<u8>>| {
        move |m: Vec<u8>| {
            tx.send(m)
                .map_err(|_| std::io::Error::other("the receiving side has gone"))
        }
    };
    let bob = std::thread::spawn(move || {
        let line = DelayLine::new(deliver(to_alice_tx), cfg.one_way, cfg.bits_per_second);
        let mut raw_for = |id: &str| bob_raw.remove(id);
        let role = Role::Bob {
            link: bob_link,
            raw_for: &mut raw_for,
        };
        run_collecting(role, &to_bob_rx, line, cfg.side)
    });
    let line = DelayLine::new(deliver(to_bob_tx), cfg.one_way, cfg.bits_per_second);
    let mut iter = alice_blocks.into_iter();
    let role = Role::Alice {
        link: alice_link,
        blocks: &mut iter,
    };
    // Closing Alice's line (once her blocks are done) ends Bob's loop once he has read it all.
    let alice = run_collecting(role, &to_alice_rx, line, cfg.side);
    let bob = bob
        .join()
        .map_err(|_| std::io::Error::other("Bob's thread panicked"))?;
    let (bob_stats, mut bob_results) = bob?;
    let (alice_stats, mut alice_results) = alice?;
    let missing = || Err(transport_error("the block never ended"));
    let blocks = ids
        .into_iter()
        .map(|id| {
            let a = alice_results.remove(&id).unwrap_or_else(missing);
            let b = bob_results.remove(&id).unwrap_or_else(missing);
            (id, a, b)
        })
        .collect();
    Ok(LineRun {
        blocks,
        alice: alice_stats,
        bob: bob_stats,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Largest message [`read_frame`] accepts (a 2^28-bit block's Toeplitz seed fits).
pub const MAX_FRAME_BYTES: usize = 1 << 26;

/// Writes one message on a byte stream: its length (4 bytes, little-endian), then its bytes.
pub fn write_frame(w: &mut impl std::io::Write, message: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(message.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "a {}-byte message exceeds {MAX_FRAME_BYTES} bytes",
                    message.len()
                ),
            )
        })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(message)
}

/// Reads one message written by [`write_frame`]; `None` at a clean end of the stream.
pub fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}
