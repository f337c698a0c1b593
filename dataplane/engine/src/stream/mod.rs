//! The stream carrier: an unbounded byte stream (a QEMU live-migration stream, or the parts
//! of a pipelined image-migration round through `mover::RunnerMover::send_stream`) moved
//! over DWCP as an ordered sequence of verified objects ("segments").
//!
//! ```text
//! source QEMU --tcp/exec--> [reader] --pieces--> [worker: segmenter + N Senders] ==DWCP==>
//!     [worker: N Receivers + reorder] --verified segments in order--> [writer] --tcp--> dest QEMU
//! ```
//!
//! Owns: cutting the input into segments (flushed at `segment_bytes` or after `idle_flush`
//! without new input, so a slow or bursty stream is not held back), moving up to `in_flight`
//! segments that still have new data (plus as many in their tail of acks, retransmissions and
//! close) at once on one long-lived pinned worker (each segment is one dwcp-transfer object
//! with its own connection id `seq + 1` and whole-object XXH3-128 check; a new segment starts
//! with the window and HELLO timer the last verified one measured; optional SEALED segments
//! with the `dwcp-secure` keys of `dwcp send`/`recv`), reassembling them in
//! order on the receiving side, and propagating the end of the stream and failures: a segment
//! is handed to the output only after its hash was verified, and a failed carry closes both
//! TCP sides so the migration fails instead of continuing on corrupted bytes.
//!
//! Segment layout (the object carried): `stream/segment.rs` ([`segment_prefix`]). Received datagrams reach their segment's
//! transfer through the worker's connection table ([`crate::conns`]). The command-line glue
//! (`dwcp stream-send|stream-recv`: clap options, TCP ends, JSON) is `stream/cli.rs`.
//!
//! Does not: resume a stream after either appliance restarts (the segments live in memory), run
//! several streams on one port at once, compress by itself (the engine's chunk codec, `auto` by
//! default, applies per chunk as for any object), or understand the QEMU migration format: the
//! bytes are opaque.
//!
//! Memory: the sender holds at most `2 * in_flight` segments plus a few reader pieces; the
//! receiver holds at most `4 * in_flight` segments in transfer plus those waiting for an
//! earlier one, and the writer's queue (bounded by what the sender lets out).
//!
//! Timeline: with `RUST_LOG=dwcp_engine::stream=debug` each segment logs its launch (why:
//! full, idle, eof, end, abort; segments active; initial window) and, once verified, the
//! milliseconds from launch to handshake, first ack, all acked and verified, its losses and
//! bandwidth estimate; the receiving side logs HELLO-to-verified and each output write.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver as Rx, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_transfer::wire::SecurityFactory;
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig,
};

use crate::codec::CodecChoice;
use crate::conns::{ConnTable, Dispatch};
use crate::io::{Selection, TxBatch};
use crate::runner::RunOptions;
use crate::worker::{Handler, RxFrames, WorkerError, Workers};

mod cli;
mod segment;

pub use cli::{
    RecvArgs, SendArgs, TuningArgs, cli_recv, cli_send, connect_retry, recv_report_json,
    send_report_json,
};
use segment::seq_conn;
pub use segment::{FLAG_ABORT, FLAG_END, PREFIX_LEN, SEGMENT_MAGIC, parse_segment, segment_prefix};

const READ_PIECE: usize = 256 << 10;
/// Reader pieces queued ahead of the segmenter.
const INPUT_PIECES: usize = 2;
/// Receive buffer of an accepted source connection (fixed: no autotuning to megabytes).
pub const INPUT_RCVBUF: usize = 256 << 10;

/// Errors of a stream carry.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Opening or using the local input/output (TCP, stdin, stdout) failed.
    #[error("{what}")]
    Local {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The worker could not start.
    #[error("dataplane worker")]
    Worker(#[from] WorkerError),
    /// A segment transfer failed.
    #[error("segment {seq} failed: {reason}")]
    Segment {
        /// Segment sequence number.
        seq: u64,
        /// What the transfer engine reported.
        reason: String,
        /// An authentication or sealing-policy failure
        /// ([`dwcp_transfer::TransferError::is_authentication`]).
        authentication: bool,
    },
    /// A verified segment did not carry a valid prefix.
    #[error("segment {seq} malformed: {reason}")]
    Malformed {
        /// Segment sequence number (from the connection id).
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The sending side reported that its input failed.
    #[error("the sending side aborted the stream: {0}")]
    Aborted(String),
    /// Nothing arrived from the peer for too long.
    #[error("peer silent for {0:?}")]
    Idle(Duration),
    /// The carry did not finish in time.
    #[error("stream did not finish within {0:?}")]
    Timeout(Duration),
    /// Cancelled through the cancel flag.
    #[error("stream cancelled")]
    Cancelled,
    /// The key flags could not be used.
    #[error("keys")]
    Keys(#[from] dwcp_secure::cli::CliError),
}

/// Stream carrier settings (both sides).
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// A segment is sent once it holds this many stream bytes.
    pub segment_bytes: usize,
    /// ... or once no input arrived for this long (and it is not empty).
    pub idle_flush: Duration,
    /// Segments being sent at once (sender): a segment whose every chunk went out at least
    /// once (only acks, retransmissions and the close are left) no longer holds one of these
    /// slots, so the next segment's handshake overlaps the previous one's tail. At most
    /// `2 * in_flight` segments are in transfer in all; the receiver accepts up to 4x
    /// `in_flight`.
    pub in_flight: usize,
    /// Highest protocol version to offer (1 or 3).
    pub max_version: u8,
    /// Most DWCP streams per segment transfer.
    pub max_streams: u16,
    /// Link MTU (sizes chunks).
    pub mtu: Option<usize>,
    /// Receiving side: fail when no datagram arrived for this long once the stream began.
    pub idle_timeout: Duration,
    /// Receiving side: keep answering for this long after the end (late CLOSE repeats).
    pub linger: Duration,
    /// Keys and policy for SEALED segments (`dwcp-secure`), applied to every segment's
    /// sender or receiver; `None` = unsealed.
    pub security: Option<SecurityFactory>,
    /// Chunk codec of the sending side (the receiving side decodes every codec).
    pub codec: CodecChoice,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 768 << 10,
            idle_flush: Duration::from_millis(5),
            in_flight: 8,
            max_version: 3,
            max_streams: 8,
            mtu: Some(1500),
            idle_timeout: Duration::from_secs(20),
            linger: Duration::from_millis(500),
            security: None,
            codec: CodecChoice::Auto,
        }
    }
}

/// What a finished stream send reports.
#[derive(Debug, Clone, Default)]
pub struct StreamSendReport {
    /// Stream bytes carried.
    pub bytes: u64,
    /// Segments sent (including the final one).
    pub segments: u64,
    /// From start until the last segment was verified.
    pub elapsed: Duration,
    /// Datagram bytes on the wire (all segment transfers).
    pub bytes_on_wire: u64,
    /// Bytes retransmitted.
    pub bytes_retransmitted: u64,
    /// Most segments in transfer at the same time.
    pub max_in_flight: usize,
    /// AEAD suite of the SEALED segments (`None`: unsealed).
    pub sealed: Option<&'static str>,
    /// Backend in use.
    pub selection: Option<Selection>,
}

/// What a finished stream receive reports.
#[derive(Debug, Clone, Default)]
pub struct StreamRecvReport {
    /// Stream bytes delivered to the output.
    pub bytes: u64,
    /// Segments received.
    pub segments: u64,
    /// From the first segment to the end of the stream.
    pub elapsed: Duration,
    /// Datagrams that failed the CRC (all segments).
    pub frames_corrupt: u64,
    /// Duplicate chunks (all segments).
    pub duplicate_chunks: u64,
    /// Datagrams no segment transfer took: not routable DWCP frames, or frames for a
    /// connection that is not (or no longer) here ([`crate::conns::Drops`]).
    pub frames_unroutable: u64,
    /// AEAD suite of the SEALED segments (`None`: unsealed).
    pub sealed: Option<&'static str>,
    /// Backend in use.
    pub selection: Option<Selection>,
}

#[derive(Debug, Default)]
struct Shared {
    bytes: AtomicU64,
    segments: AtomicU64,
    wire: AtomicU64,
    retx: AtomicU64,
    corrupt: AtomicU64,
    dups: AtomicU64,
    unroutable: AtomicU64,
    max_in_flight: AtomicU64,
    sealed: Mutex<Option<&'static str>>,
    last_rx: Mutex<Option<Instant>>,
    first_rx: Mutex<Option<Instant>>,
    done: AtomicBool,
    failure: Mutex<Option<StreamError>>,
}

impl Shared {
    fn fail(&self, e: StreamError) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::warn!(error = %crate::io::error_chain(&e), "stream carry failed");
            *f = Some(e);
        }
    }
    fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
    fn take_failure(&self) -> Option<StreamError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

// ---------------------------------------------------------------------------------------
// sending side

enum Piece {
    Data(Vec<u8>),
    Eof,
    Error(String),
}

struct Active {
    seq: u64,
    sender: Sender,
    /// Milestones of this segment's transfer (for the debug timeline).
    t: Timeline,
}

/// When a segment's transfer passed each step (sending side).
#[derive(Debug, Clone, Copy)]
struct Timeline {
    launched: Instant,
    body: usize,
    why: &'static str,
    handshake: Option<Instant>,
    first_ack: Option<Instant>,
    all_acked: Option<Instant>,
}

impl Timeline {
    fn observe(&mut self, now: Instant, s: &Sender) {
        use dwcp_transfer::SenderState as S;
        let st = s.state();
        if self.handshake.is_none() && st != S::Handshake {
            self.handshake = Some(now);
        }
        if self.first_ack.is_none() && st != S::Handshake && s.stats().bytes_acked > 0 {
            self.first_ack = Some(now);
        }
        if self.all_acked.is_none() && matches!(st, S::AwaitClose | S::Complete) {
            self.all_acked = Some(now);
        }
    }
}

fn ms_since(from: Instant, t: Option<Instant>) -> f64 {
    t.map_or(f64::NAN, |t| {
        t.saturating_duration_since(from).as_secs_f64() * 1e3
    })
}

struct SendHandler {
    cfg: StreamConfig,
    batch: usize,
    pieces: Rx<Piece>,
    buf: Vec<u8>,
    /// Input read but not yet in a segment (a piece that did not fit).
    rest: Vec<u8>,
    starved_since: Option<Instant>,
    next_seq: u64,
    input_end: Option<Option<String>>,
    final_launched: bool,
    /// Segment transfers by connection id, oldest first.
    active: ConnTable<Active>,
    warm_cwnd: u64,
    /// Smoothed RTT of the last verified segment: the next HELLO's retransmission timer.
    path_srtt: Option<Duration>,
    shared: Arc<Shared>,
}

/// True once every chunk of the segment was sent at least once: only its tail (acks,
/// retransmissions, the verified close) is left.
fn draining(s: &Sender) -> bool {
    use dwcp_transfer::SenderState as S;
    match s.state() {
        S::Handshake => false,
        S::AwaitClose | S::Complete | S::Failed => true,
        S::Transfer => {
            let st = s.stats();
            st.data_frames_sent - st.data_frames_retransmitted
                >= st.chunks_remaining + st.bytes_acked.div_ceil(s.chunk_size().max(1))
        }
    }
}

impl SendHandler {
    fn new(cfg: StreamConfig, batch: usize, pieces: Rx<Piece>, shared: Arc<Shared>) -> Self {
        let mut buf = Vec::with_capacity(cfg.segment_bytes + PREFIX_LEN);
        buf.extend_from_slice(&[0u8; PREFIX_LEN]);
        Self {
            cfg,
            batch,
            pieces,
            buf,
            rest: Vec::new(),
            starved_since: None,
            next_seq: 0,
            input_end: None,
            final_launched: false,
            active: ConnTable::new(Duration::ZERO),
            warm_cwnd: 10,
            path_srtt: None,
            shared,
        }
    }

    fn launch(&mut self, now: Instant, flags: u32, why: &'static str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut seg = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.cfg.segment_bytes + PREFIX_LEN),
        );
        self.buf.extend_from_slice(&[0u8; PREFIX_LEN]);
        seg[..PREFIX_LEN].copy_from_slice(&segment_prefix(flags, seq));
        let body = (seg.len() - PREFIX_LEN) as u64;
        let per = self.cfg.in_flight.max(1) as u64;
        let scfg = SenderConfig {
            conn_id: seq_conn(seq),
            object_id: seq,
            max_version: self.cfg.max_version,
            mtu: self.cfg.mtu,
            max_streams: self.cfg.max_streams,
            // A segment cannot be resumed by a new connection: the receiver keys on conn ids.
            reconnect_after_rtos: 0,
            initial_cwnd_frames: self.warm_cwnd,
            // A lost HELLO would otherwise stall this segment, and every later one behind it
            // in delivery order, for the 1 s initial RTO: once the path's RTT is known, retry
            // after 3 RTTs (at least 100 ms).
            initial_rto: self
                .path_srtt
                .map_or(SenderConfig::default().initial_rto, |r| {
                    (r * 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
                }),
            // The worker moves a batch at a time; two batches in flight over all segments.
            min_cwnd_frames: (2 * self.batch as u64 / per).max(4),
            security: self.cfg.security.clone(),
            ..SenderConfig::default()
        };
        let sender = crate::codec::sender_codec(self.cfg.codec)
            .map_err(|e| crate::io::error_chain(&e))
            .and_then(|(enc, _)| {
                Sender::with_encoder(scfg, Box::new(MemSource::new(seg)), enc, now)
                    .map_err(|e| crate::io::error_chain(&e))
            });
        match sender {
            Ok(sender) => {
                tracing::debug!(
                    seq,
                    bytes = body,
                    flags,
                    why,
                    active = self.active.live_len(),
                    cwnd0 = self.warm_cwnd,
                    "segment launched"
                );
                let t = Timeline {
                    launched: now,
                    body: body as usize,
                    why,
                    handshake: None,
                    first_ack: None,
                    all_acked: None,
                };
                self.active.insert(seq_conn(seq), Active { seq, sender, t });
                let n = self.active.live_len() as u64;
                self.shared.max_in_flight.fetch_max(n, Ordering::Relaxed);
            }
            Err(reason) => self.shared.fail(StreamError::Segment {
                seq,
                reason,
                authentication: false,
            }),
        }
    }

    fn take_input(&mut self, now: Instant) {
        // Fill the current segment while there is input, whether or not a slot is free (so
        // the source is never stalled by a pipe that is merely busy).
        // Segments hold exactly `segment_bytes` (the rest of a piece starts the next one), so
        // what the carrier holds is what the settings say.
        while self.input_end.is_none() && self.buf.len() - PREFIX_LEN < self.cfg.segment_bytes {
            let room = self.cfg.segment_bytes - (self.buf.len() - PREFIX_LEN);
            if !self.rest.is_empty() {
                let n = room.min(self.rest.len());
                self.buf.extend(self.rest.drain(..n));
                continue;
            }
            match self.pieces.try_recv() {
                Ok(Piece::Data(d)) => {
                    self.starved_since = None;
                    self.shared
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    if d.len() <= room {
                        self.buf.extend_from_slice(&d);
                    } else {
                        self.buf.extend_from_slice(&d[..room]);
                        self.rest = d;
                        self.rest.drain(..room);
                    }
                }
                Ok(Piece::Eof) => {
                    tracing::debug!(buffered = self.buf.len() - PREFIX_LEN, "input ended");
                    self.input_end = Some(None)
                }
                Ok(Piece::Error(e)) => self.input_end = Some(Some(e)),
                Err(TryRecvError::Empty) => {
                    self.starved_since.get_or_insert(now);
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    self.input_end = Some(Some("input reader stopped".into()))
                }
            }
        }
        let sending = self
            .active
            .live()
            .filter(|(_, a)| !draining(&a.sender))
            .count();
        if sending >= self.cfg.in_flight || self.active.live_len() >= 2 * self.cfg.in_flight {
            return;
        }
        let body = self.buf.len() - PREFIX_LEN;
        match &self.input_end {
            Some(err) if !self.final_launched => {
                // An error: send what is buffered first, then the ABORT segment. The end of
                // the input: the buffered rest is the final segment.
                if let Some(e) = err {
                    if body > 0 {
                        self.launch(now, 0, "eof");
                        return;
                    }
                    let e = e.clone();
                    self.buf.extend_from_slice(e.as_bytes());
                    self.final_launched = true;
                    self.launch(now, FLAG_ABORT, "abort");
                } else {
                    self.final_launched = true;
                    self.launch(now, FLAG_END, "end");
                }
            }
            Some(_) => {}
            None => {
                // A partial segment goes once the source has had nothing to say for
                // `idle_flush` (time we spent not reading does not count) and at most one
                // segment is still in transfer: while the pipe is busy, small segments would
                // only add per-segment round trips (handshake, close) on a long path.
                let starved = sending < 2
                    && self
                        .starved_since
                        .is_some_and(|t| now - t >= self.cfg.idle_flush);
                if body >= self.cfg.segment_bytes {
                    self.launch(now, 0, "full");
                } else if body > 0 && starved {
                    self.launch(now, 0, "idle");
                }
            }
        }
    }

    fn reap(&mut self) {
        let finished: Vec<u32> = self
            .active
            .live()
            .filter(|(_, a)| a.sender.is_complete() || a.sender.error().is_some())
            .map(|(c, _)| c)
            .collect();
        for conn in finished {
            let Some(a) = self.active.remove(conn) else {
                continue;
            };
            if a.sender.is_complete() {
                let st = a.sender.stats();
                self.shared.wire.fetch_add(st.bytes_sent, Ordering::Relaxed);
                self.shared
                    .retx
                    .fetch_add(st.bytes_retransmitted, Ordering::Relaxed);
                self.shared.segments.fetch_add(1, Ordering::Relaxed);
                *self.shared.sealed.lock().unwrap_or_else(|p| p.into_inner()) = st.sealed;
                if st.srtt.is_some() {
                    self.path_srtt = st.srtt;
                }
                if let (Some(rtt), true) = (st.min_rtt, st.btlbw > 0.0) {
                    // The next segments start with the window this one measured: its bandwidth
                    // estimate is already its share of the path (it shared the path with the
                    // others in transfer), so its BDP is what a new segment may put in flight.
                    let mss = (a.sender.chunk_size() + 64) as f64;
                    let bdp_frames = st.btlbw * rtt.as_secs_f64() / mss;
                    self.warm_cwnd = (bdp_frames as u64).clamp(10, 4096);
                }
                let t = a.t;
                tracing::debug!(
                    seq = a.seq,
                    bytes = t.body,
                    why = t.why,
                    handshake_ms = ms_since(t.launched, t.handshake),
                    first_ack_ms = ms_since(t.launched, t.first_ack),
                    all_acked_ms = ms_since(t.launched, t.all_acked),
                    done_ms = ms_since(t.launched, Some(Instant::now())),
                    losses = st.losses,
                    rto = st.rto_count,
                    tlp = st.tail_probes,
                    btlbw_mbit = st.btlbw * 8e-6,
                    warm = ?a.sender.warm_outcome(),
                    "segment verified"
                );
            } else if let Some(e) = a.sender.error() {
                self.shared.fail(StreamError::Segment {
                    seq: a.seq,
                    reason: crate::io::error_chain(e),
                    authentication: e.is_authentication(),
                });
                return;
            }
        }
        if self.final_launched && self.active.live_len() == 0 {
            if let Some(Some(e)) = &self.input_end {
                self.shared.fail(StreamError::Aborted(e.clone()));
            }
            self.shared.done.store(true, Ordering::Release);
        }
    }
}

impl Handler for SendHandler {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        let now = Instant::now();
        let active = &mut self.active;
        frames.for_each_raw(|d| {
            if let Dispatch::Live(_, a) = active.dispatch(d) {
                a.sender.handle_frame(now, d);
                a.t.observe(now, &a.sender);
            }
        });
    }

    fn poll_tx(&mut self, tx: &mut TxBatch<'_>) {
        if self.shared.failed() || self.shared.done.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        self.reap();
        self.take_input(now);
        let max = tx.max_datagram();
        // Oldest segment first: the receiver delivers in order. Each datagram is written
        // straight into the batch; when it has no room the sender is not asked, so it keeps
        // what it would have sent.
        for (_, a) in self.active.live_mut() {
            if a.sender.poll_timeout().is_some_and(|t| t <= now) {
                a.sender.handle_timeout(now);
                a.t.observe(now, &a.sender);
            }
            loop {
                match tx.try_push_with(max, |b| a.sender.poll_transmit_into(now, b)) {
                    Some(true) => {}
                    Some(false) => break,
                    None => return,
                }
            }
        }
    }
}

/// Where the stream comes from.
pub enum StreamInput {
    /// Accept one connection here (QEMU `migrate tcp:`) once the worker runs; the
    /// connection is shut down if the carry fails.
    Listen(TcpListener),
    /// An accepted TCP connection; shut down on failure.
    Tcp(TcpStream),
    /// Any reader (stdin for QEMU `migrate exec:`).
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for StreamInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Listen(l) => f.debug_tuple("Listen").field(l).finish(),
            Self::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Self::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// Where the reader thread puts the accepted connection, so a failed carry can shut it.
type ConnSlot = Arc<Mutex<Option<TcpStream>>>;

fn open_input(input: StreamInput, slot: &ConnSlot) -> Result<Box<dyn Read + Send>, String> {
    let keep = |s: &TcpStream| {
        if let Ok(c) = s.try_clone() {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        }
    };
    match input {
        StreamInput::Listen(l) => {
            let (s, from) = l
                .accept()
                .map_err(|e| format!("accepting the source: {e}"))?;
            tracing::info!(%from, "stream source connected");
            keep(&s);
            Ok(Box::new(s))
        }
        StreamInput::Tcp(s) => {
            keep(&s);
            Ok(Box::new(s))
        }
        StreamInput::Reader(r) => Ok(r),
    }
}

fn spawn_reader(input: StreamInput, slot: ConnSlot, tx: SyncSender<Piece>) {
    let spawned = std::thread::Builder::new()
        .name("dwcp-stream-in".into())
        .spawn(move || {
            let mut r = match open_input(input, &slot) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Piece::Error(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; READ_PIECE];
                match r.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Piece::Eof);
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Piece::Data(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Piece::Error(format!("reading the input: {e}")));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the input reader: {e}");
    }
}

fn wait_shared(
    shared: &Shared,
    start: Instant,
    timeout: Duration,
    idle: Option<Duration>,
    cancel: Option<&AtomicBool>,
    extra_done: &mut dyn FnMut() -> bool,
    tick: &mut dyn FnMut(),
) -> Result<(), StreamError> {
    loop {
        tick();
        if let Some(e) = shared.take_failure() {
            return Err(e);
        }
        if shared.done.load(Ordering::Acquire) && extra_done() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(StreamError::Timeout(timeout));
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StreamError::Cancelled);
        }
        if let Some(idle) = idle {
            let last = *shared.last_rx.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() > idle) && !shared.done.load(Ordering::Acquire) {
                return Err(StreamError::Idle(idle));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Carries `input` to the peer appliance in `opts.io` until its end, in ordered, verified
/// segments. Returns once every segment (the final one included) was verified by the peer.
pub fn send_stream(
    input: StreamInput,
    cfg: &StreamConfig,
    opts: &RunOptions,
    cancel: Option<&AtomicBool>,
) -> Result<StreamSendReport, StreamError> {
    send_stream_with(input, cfg, opts, cancel, &mut |_, _| {})
}

/// [`send_stream`] that calls `progress(stream bytes taken from the input, wire bytes of
/// the segments verified so far)` every few milliseconds, on the calling thread.
pub fn send_stream_with(
    input: StreamInput,
    cfg: &StreamConfig,
    opts: &RunOptions,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<StreamSendReport, StreamError> {
    let shared = Arc::new(Shared::default());
    // Little buffering before the segmenter: what the carrier holds is data the source
    // believes sent, and it all must cross before the destination can resume.
    let depth = INPUT_PIECES;
    let (ptx, prx) = mpsc::sync_channel(depth);
    let conn: ConnSlot = Arc::new(Mutex::new(None));
    let handler = SendHandler::new(cfg.clone(), opts.io.batch, prx, shared.clone());
    let start = Instant::now();
    let workers = Workers::spawn_one(&crate::runner::worker_cfg(opts), handler)?;
    // The worker runs before the input is opened, so a source connecting finds the carrier
    // ready.
    spawn_reader(input, conn.clone(), ptx);
    let res = wait_shared(
        &shared,
        start,
        opts.timeout,
        None,
        cancel,
        &mut || true,
        &mut || {
            progress(
                shared.bytes.load(Ordering::Relaxed),
                shared.wire.load(Ordering::Relaxed),
            )
        },
    );
    let elapsed = start.elapsed();
    let stopped = workers.stop();
    if res.is_err()
        && let Some(t) = conn.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
    {
        // The source must see the carry fail (its migration fails; the VM keeps running).
        let _ = t.shutdown(Shutdown::Both);
    }
    let mut stopped = stopped?;
    res?;
    let (_, w) = stopped.remove(0);
    Ok(StreamSendReport {
        bytes: shared.bytes.load(Ordering::Relaxed),
        segments: shared.segments.load(Ordering::Relaxed),
        elapsed,
        bytes_on_wire: shared.wire.load(Ordering::Relaxed),
        bytes_retransmitted: shared.retx.load(Ordering::Relaxed),
        max_in_flight: shared.max_in_flight.load(Ordering::Relaxed) as usize,
        sealed: *shared.sealed.lock().unwrap_or_else(|p| p.into_inner()),
        selection: w.selection,
    })
}

// ---------------------------------------------------------------------------------------
// receiving side

enum Delivery {
    /// A verified segment whole; the writer writes its body (after the prefix).
    Data(Vec<u8>),
    End,
}

struct Incoming {
    seq: u64,
    rx: Receiver,
    sink: MemSink,
    /// When its HELLO arrived (for the debug timeline).
    hello_at: Instant,
}

struct RecvHandler {
    max_active: usize,
    security: Option<SecurityFactory>,
    /// Segment transfers by connection id; verified ones linger to answer late CLOSEs.
    conns: ConnTable<Incoming>,
    next_deliver: u64,
    reorder: BTreeMap<u64, Vec<u8>>,
    out: mpsc::Sender<Delivery>,
    ended: bool,
    shared: Arc<Shared>,
}

impl RecvHandler {
    fn complete(&mut self, conn: u32) {
        let now = Instant::now();
        let Some(inc) = self.conns.get_mut(conn) else {
            return;
        };
        let st = inc.rx.stats();
        self.shared
            .corrupt
            .fetch_add(st.frames_corrupt, Ordering::Relaxed);
        self.shared
            .dups
            .fetch_add(st.duplicate_chunks, Ordering::Relaxed);
        *self.shared.sealed.lock().unwrap_or_else(|p| p.into_inner()) = st.sealed;
        tracing::debug!(
            seq = inc.seq,
            hello_to_verified_ms = ms_since(inc.hello_at, Some(now)),
            waiting_for = self.next_deliver,
            "segment verified"
        );
        self.reorder.insert(inc.seq, inc.sink.take_contents());
        self.conns.close(now, conn);
        self.deliver();
    }

    fn deliver(&mut self) {
        while !self.ended
            && let Some(seg) = self.reorder.remove(&self.next_deliver)
        {
            let seq = self.next_deliver;
            self.next_deliver += 1;
            let (flags, body) = match parse_segment(seq, &seg) {
                Ok(v) => v,
                Err(e) => return self.shared.fail(e),
            };
            if flags & FLAG_ABORT != 0 {
                self.ended = true;
                let why = String::from_utf8_lossy(body).into_owned();
                return self.shared.fail(StreamError::Aborted(why));
            }
            self.shared.segments.fetch_add(1, Ordering::Relaxed);
            let body_len = body.len();
            if body_len > 0 {
                self.shared
                    .bytes
                    .fetch_add(body_len as u64, Ordering::Relaxed);
                // The segment moves to the writer as it is (no copy of its body).
                let _ = self.out.send(Delivery::Data(seg));
            }
            if flags & FLAG_END != 0 {
                self.ended = true;
                let _ = self.out.send(Delivery::End);
                self.shared.done.store(true, Ordering::Release);
            }
        }
    }
}

/// Whether a HELLO on `conn` may start a new segment receiver.
fn accepts(h: &RecvHandler, conn: u32) -> bool {
    let seq = u64::from(conn.wrapping_sub(1));
    !h.ended
        && conn != 0
        && seq >= h.next_deliver
        && !h.reorder.contains_key(&seq)
        && h.conns.live_len() < h.max_active
        && seq < h.next_deliver + 4 * h.max_active as u64
}

impl Handler for RecvHandler {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        let now = Instant::now();
        let mut touched: Vec<u32> = Vec::new();
        let mut any = false;
        frames.for_each_raw(|d| match self.conns.dispatch(d) {
            Dispatch::Live(conn, inc) => {
                inc.rx.handle_frame(now, d);
                any = true;
                if !touched.contains(&conn) {
                    touched.push(conn);
                }
            }
            Dispatch::Closing(_, inc) => inc.rx.handle_frame(now, d),
            Dispatch::Hello(conn) => {
                if !accepts(self, conn) {
                    return self.conns.refuse();
                }
                let sink = MemSink::new();
                let cfg = ReceiverConfig {
                    security: self.security.clone(),
                    ..ReceiverConfig::default()
                };
                let (sk, jn) = (Box::new(sink.clone()), Box::new(MemJournal::new()));
                let mut rx = match crate::codec::receiver_codec() {
                    Ok((dec, _)) => Receiver::with_decoder(cfg, sk, jn, dec),
                    Err(e) => {
                        tracing::warn!("chunk decoder: {e}; raw and zero chunks only");
                        Receiver::new(cfg, sk, jn)
                    }
                };
                rx.handle_frame(now, d);
                any = true;
                let seq = u64::from(conn.wrapping_sub(1));
                self.conns.insert(
                    conn,
                    Incoming {
                        seq,
                        rx,
                        sink,
                        hello_at: now,
                    },
                );
                touched.push(conn);
            }
            Dispatch::Dropped => {}
        });
        let drops = self.conns.drops();
        self.shared
            .unroutable
            .store(drops.malformed + drops.unknown, Ordering::Relaxed);
        if any {
            *self
                .shared
                .last_rx
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(now);
            self.shared
                .first_rx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(now);
        }
        for conn in touched {
            let Some(inc) = self.conns.get_mut(conn) else {
                continue;
            };
            if inc.rx.is_complete() {
                self.complete(conn);
            } else if let Some(e) = inc.rx.error() {
                let seq = inc.seq;
                let reason = crate::io::error_chain(e);
                let authentication = e.is_authentication();
                self.shared.fail(StreamError::Segment {
                    seq,
                    reason,
                    authentication,
                });
            }
        }
    }

    fn poll_tx(&mut self, tx: &mut TxBatch<'_>) {
        let now = Instant::now();
        self.conns.expire(now);
        for rx in self.conns.all_mut().map(|i| &mut i.rx) {
            if rx.poll_timeout().is_some_and(|t| t <= now) {
                rx.handle_timeout(now);
            }
            // Receiver frames are small (acks, closes), written straight into the batch; when
            // it has no room the receiver is not asked, so what it would send waits for the
            // next iteration (a frame taken and then refused would be lost).
            let max = tx.max_datagram();
            while tx.staged() < 60
                && tx.try_push_with(max, |b| rx.poll_transmit_into(now, b)) == Some(true)
            {
            }
        }
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        // Work comes from received frames (they end the worker's sleep) and from these
        // timers only: the receivers' ack and close timers and the end of each linger.
        let timers = self
            .conns
            .all()
            .filter_map(|i| i.rx.poll_timeout())
            .chain(self.conns.next_expiry());
        Some(
            timers
                .min()
                .unwrap_or_else(|| Instant::now() + crate::worker::MAX_SLEEP),
        )
    }
}

/// Opens the output once the first bytes are ready (QEMU's `-incoming` may start late).
pub type OutputOpener = Box<dyn FnOnce() -> std::io::Result<Box<dyn Write + Send>> + Send>;

/// Receives one stream from the peer in `opts.io` and writes it, in order and only verified
/// segments, to the output `open` returns (called when the first segment is ready).
pub fn recv_stream(
    open: OutputOpener,
    cfg: &StreamConfig,
    opts: &RunOptions,
    cancel: Option<&AtomicBool>,
) -> Result<StreamRecvReport, StreamError> {
    recv_stream_with(open, cfg, opts, cancel, None, &mut || {})
}

/// [`recv_stream`] that calls `ready` once the worker polls the port (the peer may start),
/// and whose linger after the end (`cfg.linger`, answering late CLOSE repeats) also ends
/// as soon as `linger_end` is set: the caller sets it when the peer said it heard every
/// close.
pub fn recv_stream_with(
    open: OutputOpener,
    cfg: &StreamConfig,
    opts: &RunOptions,
    cancel: Option<&AtomicBool>,
    linger_end: Option<&AtomicBool>,
    ready: &mut dyn FnMut(),
) -> Result<StreamRecvReport, StreamError> {
    let shared = Arc::new(Shared::default());
    let (otx, orx) = mpsc::channel::<Delivery>();
    let writer = std::thread::Builder::new()
        .name("dwcp-stream-out".into())
        .spawn(move || -> Result<(), StreamError> {
            let mut out: Option<Box<dyn Write + Send>> = None;
            let local = |what: &str| {
                let what = what.to_string();
                move |source| StreamError::Local { what, source }
            };
            let mut open = Some(open);
            for d in orx {
                match d {
                    Delivery::Data(b) => {
                        if out.is_none()
                            && let Some(o) = open.take()
                        {
                            out = Some(o().map_err(local("opening the output"))?);
                        }
                        if let Some(o) = out.as_mut() {
                            let t = Instant::now();
                            let body = b.get(PREFIX_LEN..).unwrap_or_default();
                            o.write_all(body).map_err(local("writing the output"))?;
                            tracing::debug!(
                                bytes = body.len(),
                                write_ms = ms_since(t, Some(Instant::now())),
                                "output written"
                            );
                        }
                    }
                    Delivery::End => {
                        if let Some(mut o) = out.take() {
                            o.flush().map_err(local("flushing the output"))?;
                        }
                        return Ok(());
                    }
                }
            }
            Err(StreamError::Local {
                what: "stream ended without its final segment".into(),
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            })
        })
        .map_err(|source| StreamError::Local {
            what: "starting the output writer".into(),
            source,
        })?;
    let max_active = cfg.in_flight.max(1) * 4;
    let handler = RecvHandler {
        max_active,
        security: cfg.security.clone(),
        conns: ConnTable::new(Duration::from_secs(2)),
        next_deliver: 0,
        reorder: BTreeMap::new(),
        out: otx,
        ended: false,
        shared: shared.clone(),
    };
    let start = Instant::now();
    let workers = Workers::spawn_one(&crate::runner::worker_cfg(opts), handler)?;
    ready();
    let mut writer = Some(writer);
    let mut wres: Option<Result<(), StreamError>> = None;
    let res = wait_shared(
        &shared,
        start,
        opts.timeout,
        Some(cfg.idle_timeout),
        cancel,
        &mut || {
            if writer.as_ref().is_some_and(|w| w.is_finished()) {
                wres = writer.take().map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(StreamError::Local {
                            what: "output writer panicked".into(),
                            source: std::io::Error::other("panic"),
                        })
                    })
                });
            }
            wres.is_some()
        },
        &mut || {},
    );
    let end = Instant::now();
    if res.is_ok() {
        while end.elapsed() < cfg.linger && !linger_end.is_some_and(|f| f.load(Ordering::Relaxed)) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut stopped = workers.stop()?;
    // Dropping the handler closes the writer's channel: on failure the output is closed
    // without the final segment, so the consumer sees an incomplete stream.
    let (_, w) = stopped.remove(0);
    drop(stopped);
    res?;
    if let Some(Err(e)) = wres {
        return Err(e);
    }
    let first = (*shared.first_rx.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or(start);
    Ok(StreamRecvReport {
        bytes: shared.bytes.load(Ordering::Relaxed),
        segments: shared.segments.load(Ordering::Relaxed),
        elapsed: end.saturating_duration_since(first),
        frames_corrupt: shared.corrupt.load(Ordering::Relaxed),
        duplicate_chunks: shared.dups.load(Ordering::Relaxed),
        frames_unroutable: shared.unroutable.load(Ordering::Relaxed),
        sealed: *shared.sealed.lock().unwrap_or_else(|p| p.into_inner()),
        selection: w.selection,
    })
}
