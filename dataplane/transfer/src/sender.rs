//! The sending endpoint: handshake, chunking, per-stream sequencing, loss detection,
//! retransmission, flow control, pacing and congestion control for one object.
//!
//! Owns the sender's protocol state. Driven from outside: `handle_frame(now, datagram)` for every
//! datagram received, `handle_timeout(now)` once `poll_timeout()` has passed, and
//! `poll_transmit(now)` until it returns `None` after each of those. No clock is read and no I/O
//! is done besides `Source::read_at`.
//!
//! Loss detection: every transmission takes a fresh (stream, sequence) — sequence numbers are
//! never reused, as the wire format requires (they feed the AEAD nonce) — so every ack is
//! unambiguous and every acked packet gives an RTT sample. A packet is declared lost RACK-style,
//! when a packet sent after it was acknowledged and `latest_rtt + reorder_window` has passed since
//! it was sent (reorder window = min_rtt / 4, at least 500 us), or when the retransmission timeout
//! (RFC 6298-like, with backoff) expires. Its chunk is then queued for retransmission (on the next
//! stream in turn, with the RETRANSMIT flag). A late ack for a packet declared lost still marks
//! its chunk delivered, so a spurious loss costs at most one extra copy.
//!
//! Does not: encode chunks itself (see [`crate::codec`]), hold sockets, or retry a failed object.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use crate::cc::{Bbr, CcConfig, PathHint, SendSnapshot, WarmOutcome};
use dwcp_proto::{Capabilities, Codec, VersionSet};

use crate::codec::{BasicCodec, CODEC_RAW, ChunkEncoder};
use crate::io::Source;
use crate::mode::{LinkMode, ModeDetector, ModeThresholds};
use crate::stats::{SenderStats, SenderTimeline};
use crate::streams::{MIN_INTERVAL_ROUNDS, StreamAdapter};
use crate::wire::{self, Caps, CloseCode, Frame, Hello, Session};
use crate::{TransferError, VERSION_1, VERSION_3};

/// Frames a late-polling driver may send back-to-back to catch up with the pacing rate.
pub const PACING_BURST_FRAMES: u32 = 4;

/// Least silence (no datagram from the receiver) before consecutive RTOs start a new
/// connection. On a short path 4 RTOs take ~150 ms, which a descheduled receiver on a busy
/// host exceeds; a new connection then throws the congestion state away for nothing.
pub const RECONNECT_MIN_SILENCE: Duration = Duration::from_secs(1);

/// HELLOs sent before giving up (docs/protocol.md 9.2).
pub const MAX_HELLOS: u32 = 5;

/// Reconnections in a row after which no more of the object was acknowledged than before
/// the first of them: the transfer fails ([`TransferError::Stalled`]). A path that carries
/// the small handshake frames but not the data frames (a queue or MTU that drops every
/// frame of that size) would otherwise reconnect for ever, each HELLO_ACK resetting the
/// idle timer.
pub const MAX_FRUITLESS_RECONNECTS: u32 = 8;

/// First HELLO retransmission while the path's RTT is unknown (`initial_rto` of 1 s or
/// more): a HELLO is one small datagram, so retrying it early is cheap, while waiting the
/// whole initial RTO for a lost HELLO or HELLO_ACK (1 % loss each way: about 2 % of
/// connections) costs a second. Later retries follow `initial_rto` with backoff. A path
/// slower than this sees one duplicate HELLO (answered with the same HELLO_ACK) and loses
/// the handshake RTT sample.
pub const HELLO_FIRST_RETRY: Duration = Duration::from_millis(250);

/// IPv4 + UDP header bytes, used to fit a chunk to an MTU.
pub const IP_UDP_OVERHEAD: usize = 28;

/// Sender configuration.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Connection id (chosen by the sender, echoed by the receiver).
    pub conn_id: u32,
    /// Object id.
    pub object_id: u64,
    /// Highest version to offer (1 or 3).
    pub max_version: u8,
    /// Proposed raw chunk size.
    pub chunk_size: u32,
    /// If set, chunks are shrunk so a raw data frame fits this IP MTU.
    pub mtu: Option<usize>,
    /// Most streams to use.
    pub max_streams: u16,
    /// Streams to start with.
    pub initial_streams: u16,
    /// Adapt the stream count to measured goodput.
    pub adapt_streams: bool,
    /// RTO before any RTT sample; also the HELLO retransmission interval (the first retry
    /// comes after [`HELLO_FIRST_RETRY`] when this is 1 s or more, i.e. the RTT is unknown).
    pub initial_rto: Duration,
    /// Lower RTO bound.
    pub min_rto: Duration,
    /// Upper RTO bound.
    pub max_rto: Duration,
    /// Give up when nothing was received for this long.
    pub idle_timeout: Duration,
    /// The peer's maximum ack delay (added to the RTO).
    pub max_ack_delay: Duration,
    /// Initial congestion window in frames.
    pub initial_cwnd_frames: u64,
    /// Smallest congestion window in frames (see [`crate::cc::CcConfig::min_cwnd_frames`]).
    pub min_cwnd_frames: u64,
    /// Start a new connection (next connection id) after this many consecutive RTOs without
    /// any ACK, e.g. because the receiver restarted; 0 = never.
    pub reconnect_after_rtos: u32,
    /// Mode detection thresholds.
    pub mode: ModeThresholds,
    /// Keys and policy for SEALED sessions (`dwcp-secure`); `None` = unsealed only.
    pub security: Option<wire::SecurityFactory>,
    /// Most data frames pacing admits back to back (see [`Sender::burst_quantum`]); the
    /// dataplane sets it to what one backend batch carries (a GSO send holds at most 64
    /// segments of 64 KiB in all).
    pub max_burst_frames: u32,
    /// Path estimate from an earlier connection to the same peer
    /// ([`Sender::path_estimate`]): the connection checks it with one short paced train and
    /// then skips Startup (see [`Bbr::set_path_hint`]). `None` = cold start.
    pub path_hint: Option<PathHint>,
    /// Offer LATE_DIGEST (docs/protocol.md 8.3) when the source has an identity
    /// ([`Source::identity`]): the object is hashed while it is sent and its digest goes at
    /// the end, instead of a whole read of the source before HELLO. A receiver that does not
    /// take it gets a second HELLO with the digest computed first.
    pub late_digest: bool,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            conn_id: 1,
            object_id: 1,
            max_version: VERSION_3,
            chunk_size: 8000,
            mtu: None,
            max_streams: 8,
            initial_streams: 2,
            adapt_streams: true,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(10),
            max_rto: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_ack_delay: Duration::from_millis(1),
            initial_cwnd_frames: 10,
            min_cwnd_frames: 4,
            reconnect_after_rtos: 4,
            mode: ModeThresholds::default(),
            security: None,
            path_hint: None,
            late_digest: true,
            max_burst_frames: 16,
        }
    }
}

/// Sender life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderState {
    /// Waiting for HELLO_ACK.
    Handshake,
    /// Sending chunks.
    Transfer,
    /// Everything acked; waiting for the receiver's verified CLOSE.
    AwaitClose,
    /// The receiver verified the object hash.
    Complete,
    /// Failed; see [`Sender::error`].
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkSt {
    Pending,
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone)]
struct Packet {
    chunk: u64,
    tx_index: u64,
    snap: SendSnapshot,
    bytes: u64,
}

/// One stream's send state. Packets in flight live in a ring indexed by sequence number
/// (`ring[seq - base]`; sequence numbers are assigned in order and never reused), so a send,
/// an ack and a loss are O(1) without a tree node or an allocation per frame. A packet
/// declared lost leaves the ring for the small `lost` map, where a late ack can still find
/// it (a spurious loss), until it is forgotten; so `base` is always the oldest packet in
/// flight and an ack's ranges only walk packets that are still in flight.
#[derive(Debug, Clone, Default)]
struct StreamTx {
    next_seq: u64,
    base: u64,
    ring: VecDeque<Option<Packet>>,
    lost: BTreeMap<u64, Packet>,
    acked_raw: u64,
}

impl StreamTx {
    fn push(&mut self, seq: u64, p: Packet) {
        debug_assert_eq!(seq, self.base + self.ring.len() as u64);
        if self.ring.is_empty() {
            self.base = seq;
        }
        self.ring.push_back(Some(p));
    }

    fn slot(&self, seq: u64) -> Option<usize> {
        let i = seq.checked_sub(self.base)?;
        (i < self.ring.len() as u64).then_some(i as usize)
    }

    fn in_flight(&self, seq: u64) -> Option<&Packet> {
        self.slot(seq).and_then(|i| self.ring[i].as_ref())
    }

    /// Takes the packet out of the ring (acked or declared lost).
    fn take(&mut self, seq: u64) -> Option<Packet> {
        let i = self.slot(seq)?;
        let p = self.ring[i].take();
        while matches!(self.ring.front(), Some(None)) {
            self.ring.pop_front();
            self.base += 1;
        }
        if self.ring.is_empty() {
            self.base = self.next_seq;
        }
        p
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Retransmit(u64),
    New(u64),
    Probe(u64),
}

/// The sending endpoint.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    conn_id: u32,
    cc_cfg: CcConfig,
    source: Box<dyn Source>,
    encoder: Box<dyn ChunkEncoder>,
    state: SenderState,
    error: Option<TransferError>,
    object_len: u64,
    /// XXH3-128 of the object: computed before HELLO, or (late digest) once every byte
    /// was hashed on its way out.
    object_hash: Option<u128>,
    /// LATE_DIGEST offered and not (yet) refused: HELLO carries `resume_key`.
    late: bool,
    /// What identifies this version of the source ([`Source::identity`]).
    resume_key: u128,
    /// Late digest: XXH3-128 state over `[0, hashed_to)`, fed from the chunks as they are
    /// read for their first transmission (in offset order).
    hasher: Box<crate::receiver::HashState>,
    hashed_to: u64,
    version: u8,
    chunk_size: u64,
    n_chunks: u64,
    codecs_allowed: u32,
    session: Option<Session>,
    window_chunks: u64,
    first_unacked: u64,
    lost_fifo: VecDeque<(Instant, u16, u64)>,
    last_send: Instant,
    tlp_count: u32,
    probe: Option<u64>,
    reo_mult: u32,
    reo_decay_round: u64,
    hello_due: Instant,
    hello_count: u32,
    hello_sent: Option<Instant>,
    chunks: Vec<ChunkSt>,
    next_new: u64,
    retx: VecDeque<u64>,
    streams: Vec<StreamTx>,
    rr: usize,
    /// (tx index, stream, seq) of every transmission, oldest first; entries whose packet
    /// is no longer in flight are skipped and dropped from the front.
    send_order: VecDeque<(u64, u16, u64)>,
    tx_counter: u64,
    bytes_in_flight: u64,
    rtt: crate::rtt::RttEstimator,
    cc: Bbr,
    warm_hint: Option<PathHint>,
    mode: ModeDetector,
    adapter: StreamAdapter,
    next_send: Instant,
    rack_xmit: Option<Instant>,
    loss_timer: Option<Instant>,
    rto_backoff: u32,
    keepalive_due: Option<Instant>,
    keepalive_count: u32,
    pacing_credit: bool,
    /// ACKs arrived since the last loss detection (run before the next send or timer).
    loss_check: bool,
    /// [`Sender::pacing_catch_up`] of the current burst.
    catch_up: Duration,
    /// Latest RTT sample without the ack-delay correction (RACK's time threshold).
    rack_rtt: Duration,
    /// Bytes of the current pacing burst still admitted back to back (0: wait for
    /// `next_send`).
    burst_left: u64,
    ctrl_seq: u64,
    max_cum: Vec<u64>,
    chunks_acked: u64,
    control: VecDeque<Frame>,
    last_recv: Instant,
    interval_round: u64,
    interval_bytes: u64,
    /// Chunks acknowledged when the last counted reconnection started.
    acked_at_reconnect: u64,
    /// Counted reconnections in a row that saw no chunk acknowledged.
    fruitless_reconnects: u32,
    interval_start: Instant,
    interval_limited: bool,
    enc: Vec<u8>,
    acked_scratch: Vec<(SendSnapshot, u64)>,
    st: Counters,
    sec: wire::SecState,
    created: Instant,
    timeline: SenderTimeline,
    /// Last accepted frame, kept across reconnects (unlike `last_recv`).
    last_heard: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct Counters {
    bytes_sent: u64,
    bytes_acked: u64,
    bytes_retransmitted: u64,
    data_frames_sent: u64,
    data_frames_retransmitted: u64,
    frames_sent: u64,
    frames_received: u64,
    frames_dropped: u64,
    losses: u64,
    rto_count: u64,
    chunks_skipped: u64,
    spurious_losses: u64,
    tail_probes: u64,
    reconnects: u64,
    waits_pacing: u64,
    waits_cwnd: u64,
    waits_data: u64,
}

/// XXH3-128 of a whole source, read in offset order.
pub fn hash_source(source: &mut dyn Source) -> Result<u128, TransferError> {
    let mut h = Xxh3::new();
    let len = source.len();
    hash_range(source, &mut h, 0, len)?;
    Ok(h.digest128())
}

/// Feeds the source's bytes `[from, to)` to `h`, read in 1 MiB pieces.
fn hash_range(
    source: &mut dyn Source,
    h: &mut Xxh3,
    from: u64,
    to: u64,
) -> Result<(), TransferError> {
    let mut buf = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
    let mut off = from;
    while off < to {
        let want = ((to - off) as usize).min(buf.len());
        let n = source
            .read_at(off, &mut buf[..want])
            .map_err(|e| TransferError::Source {
                offset: off,
                source: e,
            })?;
        if n == 0 {
            return Err(TransferError::Source {
                offset: off,
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "source too short"),
            });
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(())
}

impl Sender {
    /// New sender for `source` with the built-in codec. Hashes the whole source first.
    pub fn new(
        cfg: SenderConfig,
        source: Box<dyn Source>,
        now: Instant,
    ) -> Result<Self, TransferError> {
        Self::with_encoder(cfg, source, Box::new(BasicCodec), now)
    }

    /// New sender with a chunk encoder.
    pub fn with_encoder(
        cfg: SenderConfig,
        mut source: Box<dyn Source>,
        encoder: Box<dyn ChunkEncoder>,
        now: Instant,
    ) -> Result<Self, TransferError> {
        // LATE_DIGEST is a capability of version 3: a sender that offers version 1 only
        // names the object by its hash, as a version-1 receiver expects.
        let identity = source
            .identity()
            .filter(|_| cfg.late_digest && cfg.max_version >= crate::VERSION_3);
        let (object_hash, timeline) = match identity {
            Some(_) => (None, SenderTimeline::default()),
            None => {
                let h = hash_source(source.as_mut())?;
                let timeline = SenderTimeline {
                    source_hashed: Some(Instant::now().saturating_duration_since(now)),
                    ..SenderTimeline::default()
                };
                (Some(h), timeline)
            }
        };
        let object_len = source.len();
        let chunk = fit_chunk(&cfg, cfg.security.is_some());
        let mss = frame_len(chunk, cfg.security.is_some());
        let rtt = crate::rtt::RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto);
        let cc_cfg = CcConfig {
            mss,
            initial_cwnd_frames: cfg.initial_cwnd_frames,
            min_cwnd_frames: cfg.min_cwnd_frames,
            cycle_offset: (cfg.conn_id as usize).wrapping_mul(5) % 8,
        };
        let cc = Bbr::new(cc_cfg, now);
        let max_streams = cfg.max_streams.max(1);
        let initial = cfg.initial_streams;
        let mode = ModeDetector::new(cfg.mode);
        let mut sec = wire::SecState::default();
        if let Some(f) = &cfg.security {
            sec.set(f.make());
        }
        Ok(Self {
            warm_hint: cfg.path_hint,
            conn_id: cfg.conn_id,
            cc_cfg,
            cfg,
            source,
            encoder,
            state: SenderState::Handshake,
            error: None,
            object_len,
            object_hash,
            late: identity.is_some(),
            resume_key: identity.unwrap_or(0),
            hasher: Box::default(),
            hashed_to: 0,
            version: 0,
            chunk_size: chunk,
            n_chunks: 0,
            codecs_allowed: 1 << CODEC_RAW,
            session: None,
            window_chunks: 1,
            first_unacked: 0,
            lost_fifo: VecDeque::new(),
            last_send: now,
            tlp_count: 0,
            probe: None,
            reo_mult: 1,
            reo_decay_round: 0,
            hello_due: now,
            hello_count: 0,
            hello_sent: None,
            chunks: Vec::new(),
            next_new: 0,
            retx: VecDeque::new(),
            streams: Vec::new(),
            rr: 0,
            send_order: VecDeque::new(),
            tx_counter: 0,
            bytes_in_flight: 0,
            rtt,
            cc,
            mode,
            adapter: StreamAdapter::new(initial, max_streams),
            next_send: now,
            rack_xmit: None,
            loss_timer: None,
            rto_backoff: 0,
            keepalive_due: None,
            keepalive_count: 0,
            pacing_credit: false,
            loss_check: false,
            catch_up: Duration::ZERO,
            rack_rtt: Duration::ZERO,
            burst_left: 0,
            ctrl_seq: 0,
            max_cum: Vec::new(),
            chunks_acked: 0,
            control: VecDeque::new(),
            last_recv: now,
            interval_round: 0,
            interval_bytes: 0,
            acked_at_reconnect: 0,
            fruitless_reconnects: 0,
            interval_start: now,
            interval_limited: true,
            enc: Vec::new(),
            acked_scratch: Vec::new(),
            st: Counters::default(),
            sec,
            created: now,
            timeline,
            last_heard: None,
        })
    }

    /// Offer SEALED frames, authenticating the peer with `security` (call before the first
    /// `poll_transmit`). With [`wire::Security::require_sealed`] an unsealed session fails.
    pub fn set_security(&mut self, security: Box<dyn wire::Security>) {
        self.sec.set(security);
        // a sealed frame's trailer is 16 bytes, not 4: refit the chunk to the MTU
        if self.session.is_none() {
            self.chunk_size = self.chunk_size.min(fit_chunk(&self.cfg, true));
        }
    }

    /// Life-cycle state.
    pub fn state(&self) -> SenderState {
        self.state
    }
    /// Why the transfer failed, if it did.
    pub fn error(&self) -> Option<&TransferError> {
        self.error.as_ref()
    }
    /// True once the receiver confirmed the verified object.
    pub fn is_complete(&self) -> bool {
        self.state == SenderState::Complete
    }
    /// Streams currently used for new chunks.
    pub fn current_streams(&self) -> u16 {
        self.adapter.current()
    }
    /// Current link mode.
    pub fn mode(&self) -> LinkMode {
        self.mode.mode()
    }
    /// XXH3-128 of the object.
    pub fn object_hash(&self) -> Option<u128> {
        self.object_hash
    }
    /// Chunk size in use (after negotiation).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }
    /// The congestion controller's current path estimate (bottleneck bandwidth in datagram
    /// bytes per second and min RTT), `None` until it has both. Pass it as
    /// [`SenderConfig::path_hint`] to the next connection to the same peer.
    pub fn path_estimate(&self) -> Option<PathHint> {
        self.cc.path_estimate()
    }
    /// What became of [`SenderConfig::path_hint`] (`None`: no hint, or not decided yet).
    pub fn warm_outcome(&self) -> Option<WarmOutcome> {
        self.cc.warm_outcome()
    }

    fn fail(&mut self, e: TransferError) {
        if !matches!(self.state, SenderState::Complete | SenderState::Failed) {
            self.state = SenderState::Failed;
            self.error = Some(e);
            self.control.push_back(Frame::Close(wire::Close {
                code: CloseCode::APPLICATION_ERROR,
                message: "sender aborted".into(),
            }));
        }
    }

    fn mss(&self) -> u64 {
        frame_len(self.chunk_size, self.sec.offers_sealed())
    }

    fn rto(&self) -> Duration {
        self.rtt
            .rto_backoff(self.cfg.max_ack_delay, self.rto_backoff)
    }

    fn emit(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        let v = if self.version == 0 {
            self.cfg.max_version
        } else {
            self.version
        };
        let seq = if matches!(frame, Frame::Data(_)) {
            0
        } else {
            self.ctrl_seq += 1;
            self.ctrl_seq - 1
        };
        match self.sec.encode(v, self.conn_id, seq, frame) {
            Ok(b) => {
                self.st.frames_sent += 1;
                self.st.bytes_sent += b.len() as u64;
                Some(b)
            }
            Err(source) => {
                let was_failed = self.state == SenderState::Failed;
                self.state = SenderState::Failed;
                if !was_failed {
                    self.error = Some(TransferError::Encode {
                        what: "outgoing",
                        source,
                    });
                }
                None
            }
        }
    }

    /// The capabilities this sender offers.
    fn local_caps(&self) -> Caps {
        let max_payload = match self.cfg.mtu {
            Some(mtu) => mtu.saturating_sub(
                IP_UDP_OVERHEAD + wire::HEADER_LEN + trailer_len(self.sec.offers_sealed()),
            ),
            None => wire::MAX_PAYLOAD,
        }
        .clamp(self.chunk_size as usize, wire::MAX_PAYLOAD) as u32;
        let mut caps = Caps::new(
            self.cfg.max_streams.max(1),
            max_payload,
            self.chunk_size as u32,
        );
        caps.versions = if self.cfg.max_version >= VERSION_3 {
            VersionSet::V1.union(VersionSet::V3)
        } else {
            VersionSet::V1
        };
        caps.capabilities = codec_capabilities(self.encoder.codecs());
        if self.cfg.max_streams > 1 {
            caps.capabilities.insert(Capabilities::MULTISTREAM);
        }
        if self.sec.offers_sealed() {
            caps.capabilities.insert(Capabilities::SEALED);
        }
        if self.late {
            caps.capabilities.insert(Capabilities::LATE_DIGEST);
        }
        caps
    }

    /// Feeds the raw chunk `data` at `offset` to the late digest, first reading any part of
    /// the source before it that was not sent (chunks a resumed receiver already held). A
    /// chunk hashed before (a retransmission, a resend after a reconnect) is skipped. Once
    /// the whole object is hashed, the digest goes out in a KEEPALIVE.
    fn hash_chunk(&mut self, now: Instant, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        if !self.late || self.object_hash.is_some() {
            return Ok(());
        }
        if offset > self.hashed_to {
            self.hash_source_to(offset)?;
        }
        let end = offset + data.len() as u64;
        if end > self.hashed_to {
            let skip = (self.hashed_to - offset) as usize;
            self.hasher.0.update(&data[skip..]);
            self.hashed_to = end;
        }
        if self.hashed_to >= self.object_len {
            self.conclude_digest(now);
        }
        Ok(())
    }

    /// Reads and hashes the source from `hashed_to` up to `end`.
    fn hash_source_to(&mut self, end: u64) -> Result<(), TransferError> {
        hash_range(
            self.source.as_mut(),
            &mut self.hasher.0,
            self.hashed_to,
            end,
        )?;
        self.hashed_to = self.hashed_to.max(end);
        Ok(())
    }

    /// The late digest is complete: keep it and send it.
    fn conclude_digest(&mut self, now: Instant) {
        let h = self.hasher.0.digest128();
        self.object_hash = Some(h);
        let t = self.since_created(now);
        self.timeline.digest_known.get_or_insert(t);
        self.control
            .push_back(Frame::Keepalive(self.digest_frame()));
    }

    /// The late digest for a KEEPALIVE (None without LATE_DIGEST or before it is known).
    fn digest_frame(&self) -> Option<dwcp_proto::ObjectDigest> {
        match (self.late, self.object_hash) {
            (true, Some(h)) => Some(dwcp_proto::ObjectDigest {
                object_id: self.cfg.object_id,
                xxh3_128: h,
            }),
            _ => None,
        }
    }

    /// Late digest with every chunk acknowledged but not all of them sent by this sender
    /// (a resumed receiver held the rest): hashes what is left of the source.
    fn finish_digest(&mut self, now: Instant) {
        if !self.late || self.object_hash.is_some() {
            return;
        }
        match self.hash_source_to(self.object_len) {
            Ok(()) => self.conclude_digest(now),
            Err(e) => self.fail(e),
        }
    }

    /// Handle one received datagram.
    pub fn handle_frame(&mut self, now: Instant, datagram: &[u8]) {
        let env = match self.sec.decode(datagram) {
            Ok(e) => e,
            Err(_) => {
                self.st.frames_dropped += 1;
                return;
            }
        };
        if env.conn_id != self.conn_id {
            self.st.frames_dropped += 1;
            self.sec
                .drops
                .add(dwcp_proto::DropReason::UnknownConnection);
            return;
        }
        self.st.frames_received += 1;
        // the longest silence between accepted frames (a stall of either host or the path)
        if let Some(t) = self.last_heard {
            let gap = now.saturating_duration_since(t);
            if gap > self.timeline.longest_silence {
                self.timeline.longest_silence = gap;
                self.timeline.longest_silence_end = Some(self.since_created(now));
            }
        }
        self.last_heard = Some(now);
        self.last_recv = now;
        match env.frame {
            Frame::HelloAck(a) if self.state == SenderState::Handshake => {
                self.on_hello_ack(now, a, &env.transcript)
            }
            Frame::Ack(a)
                if matches!(self.state, SenderState::Transfer | SenderState::AwaitClose) =>
            {
                if env.version != self.version {
                    // after the handshake every frame carries the negotiated version
                    self.st.frames_dropped += 1;
                    return;
                }
                self.on_ack(now, a)
            }
            Frame::Close(c) => {
                if matches!(self.state, SenderState::Complete | SenderState::Failed) {
                    return;
                }
                // A receiver that already held the whole object may close verified before
                // this side has the late digest (or before its HELLO_ACK arrived): the
                // digest is computed from the source to judge that CLOSE.
                if c.code == CloseCode::NORMAL && self.object_hash.is_none() {
                    self.finish_digest(now);
                    if self.state == SenderState::Failed {
                        return;
                    }
                }
                let verified = self
                    .object_hash
                    .map(|h| format!("verified xxh3-128 {h:032x}"));
                if c.code == CloseCode::NO_COMMON_VERSION {
                    self.state = SenderState::Failed;
                    self.error = Some(TransferError::Negotiation {
                        reason: "peer has no common version",
                    });
                } else if c.code == CloseCode::NORMAL
                    && verified.as_deref() == Some(c.message.as_str())
                {
                    self.state = SenderState::Complete;
                    // The receiver verified the whole object: chunks whose ACK was lost (the
                    // CLOSE said it for them) count as acknowledged.
                    self.st.bytes_acked = self.object_len;
                    self.chunks_acked = self.n_chunks;
                    let t = self.since_created(now);
                    self.timeline.verified_close.get_or_insert(t);
                } else {
                    self.state = SenderState::Failed;
                    self.error = Some(TransferError::PeerClosed {
                        code: c.code.0,
                        message: c.message,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_hello_ack(&mut self, now: Instant, a: wire::HelloAck, transcript: &[u8]) {
        let session = match dwcp_proto::negotiate(&self.local_caps(), &a.caps) {
            Ok(s) => s,
            Err(_) => {
                self.fail(TransferError::Negotiation {
                    reason: "HELLO_ACK has no common version or is invalid",
                });
                return;
            }
        };
        if self.late && !session.capabilities.contains(Capabilities::LATE_DIGEST) {
            // The receiver takes HELLO's hash as the object's (a version-1 session, or a
            // receiver without LATE_DIGEST): hash the source now and say HELLO again, on a
            // new connection, with the hash in it.
            match hash_source(self.source.as_mut()) {
                Ok(h) => self.object_hash = Some(h),
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
            self.late = false;
            let t = self.since_created(now);
            self.timeline.source_hashed = Some(t);
            let id = self.next_conn_id();
            self.reset_connection(now, id);
            return;
        }
        if session.capabilities.contains(Capabilities::SEALED) {
            let max = session.max_streams.clamp(1, self.cfg.max_streams.max(1));
            let kex = &a.caps.key_exchange;
            match self
                .sec
                .initiator_finish(self.conn_id, transcript, kex, max)
            {
                Ok(()) => {}
                Err(Some(e)) => {
                    // the responder's key exchange does not verify: wrong key or PSK
                    self.fail(TransferError::Authentication(e));
                    return;
                }
                Err(None) => {
                    // counted; a rewritten HELLO_ACK does not end the handshake
                    self.st.frames_dropped += 1;
                    return;
                }
            }
        } else if self.sec.require_sealed() {
            self.fail(TransferError::SealedRequired);
            return;
        }
        self.version = session.version.as_u8();
        self.chunk_size = u64::from(session.chunk_size).min(self.chunk_size);
        self.n_chunks = self.object_len.div_ceil(self.chunk_size);
        let max_streams = session.max_streams.clamp(1, self.cfg.max_streams.max(1));
        self.codecs_allowed = codec_mask(&session) & (self.encoder.codecs() | (1 << CODEC_RAW));
        self.session = Some(session);
        let initial = if self.cfg.adapt_streams {
            self.cfg.initial_streams
        } else {
            self.cfg.initial_streams.max(max_streams)
        };
        self.adapter = StreamAdapter::new(initial.min(max_streams), max_streams);
        self.streams = vec![StreamTx::default(); usize::from(max_streams)];
        self.max_cum = vec![0; usize::from(max_streams)];
        // The HELLO_ACK is authoritative: after a reconnect, chunks the previous receiver
        // acknowledged but did not make durable are sent again.
        self.chunks = vec![ChunkSt::Pending; self.n_chunks as usize];
        self.chunks_acked = 0;
        self.first_unacked = 0;
        // What the receiver holds is acknowledged: `bytes_acked` counts each chunk of the
        // object once, whatever connection acknowledged it (it never exceeds the object).
        self.st.bytes_acked = 0;
        for r in &a.held {
            for i in r.start..r.end.min(self.n_chunks) {
                if self.chunks[i as usize] != ChunkSt::Acked {
                    self.chunks[i as usize] = ChunkSt::Acked;
                    self.chunks_acked += 1;
                    self.st.chunks_skipped += 1;
                    self.st.bytes_acked += self.chunk_len(i);
                }
            }
        }
        self.interval_bytes = self.st.bytes_acked;
        self.window_chunks = u64::from(a.window_chunks.max(1));
        self.advance_first_unacked();
        self.next_new = self.first_unacked;
        let mut hs_rtt = None;
        if self.hello_count == 1
            && let Some(t) = self.hello_sent
        {
            let sample = now.saturating_duration_since(t);
            self.rtt.update(sample);
            self.cc.set_initial_rtt(sample);
            hs_rtt = Some(sample);
        }
        if let Some(h) = self.warm_hint {
            self.cc.set_path_hint(h, hs_rtt);
        }
        self.state = SenderState::Transfer;
        self.next_send = now;
        self.interval_start = now;
        let t = self.since_created(now);
        self.timeline.handshake_done.get_or_insert(t);
        self.note_cc_state(now);
        self.check_all_acked(now);
    }

    /// Start a new connection with id `conn_id` for the same object (e.g. the receiver
    /// restarted). Connection state (streams, sequence spaces, congestion state, timers) starts
    /// over; the new HELLO_ACK decides which chunks are still needed.
    pub fn reconnect(&mut self, now: Instant, conn_id: u32) {
        if self.chunks_acked > self.acked_at_reconnect {
            self.fruitless_reconnects = 0;
        } else {
            self.fruitless_reconnects += 1;
        }
        self.acked_at_reconnect = self.chunks_acked;
        if self.fruitless_reconnects >= MAX_FRUITLESS_RECONNECTS {
            self.fail(TransferError::Stalled {
                reconnects: self.fruitless_reconnects,
            });
            return;
        }
        self.reset_connection(now, conn_id);
        self.st.reconnects += 1;
    }

    /// [`Sender::reconnect`] without counting it (a second HELLO after a refused
    /// LATE_DIGEST is not a reconnect).
    fn reset_connection(&mut self, now: Instant, conn_id: u32) {
        self.conn_id = conn_id;
        self.state = SenderState::Handshake;
        self.error = None;
        self.version = 0;
        self.session = None;
        self.hello_due = now;
        self.hello_count = 0;
        self.hello_sent = None;
        self.streams.clear();
        self.max_cum.clear();
        self.send_order.clear();
        self.retx.clear();
        self.lost_fifo.clear();
        self.bytes_in_flight = 0;
        self.rack_xmit = None;
        self.loss_timer = None;
        self.rto_backoff = 0;
        self.tlp_count = 0;
        self.probe = None;
        self.burst_left = 0;
        self.loss_check = false;
        self.keepalive_due = None;
        self.keepalive_count = 0;
        self.control.clear();
        self.ctrl_seq = 0;
        self.last_recv = now;
        // the same peer: what this connection learnt is the next one's hint
        self.warm_hint = self.cc.path_estimate().or(self.warm_hint);
        self.cc = Bbr::new(self.cc_cfg, now);
        self.sec.reset();
    }

    fn next_conn_id(&self) -> u32 {
        match self.conn_id.wrapping_add(1) {
            0 => 1,
            c => c,
        }
    }

    fn advance_first_unacked(&mut self) {
        while self.first_unacked < self.n_chunks
            && self.chunks[self.first_unacked as usize] == ChunkSt::Acked
        {
            self.first_unacked += 1;
        }
    }

    fn check_all_acked(&mut self, now: Instant) {
        if self.state == SenderState::Transfer && self.chunks_acked == self.n_chunks {
            self.state = SenderState::AwaitClose;
            let t = self.since_created(now);
            self.timeline.all_acked.get_or_insert(t);
            self.rto_backoff = 0;
            self.keepalive_due = Some(now + self.rto());
            self.finish_digest(now);
        }
    }

    fn on_ack(&mut self, now: Instant, a: wire::Ack) {
        let s = usize::from(a.stream);
        if s >= self.streams.len() {
            self.st.frames_dropped += 1;
            return;
        }
        // a reordered ACK older than one already processed brings nothing new
        if a.cumulative < self.max_cum[s] {
            return;
        }
        self.max_cum[s] = a.cumulative;
        let mut acked = std::mem::take(&mut self.acked_scratch);
        acked.clear();
        let mut largest: Option<(u64, Instant)> = None;
        let mut any = false;
        // every sequence number below `cumulative`, then each SACK range: only packets still
        // in flight (the ring, from `base`) or declared lost (the `lost` map) are visited
        let cum = 0..a.cumulative;
        for r in std::iter::once(&cum).chain(a.ranges.iter()) {
            let st = &self.streams[s];
            let lo = r.start.max(st.base);
            let hi = r.end.min(st.next_seq);
            for seq in lo..hi {
                let Some(p) = self.streams[s].take(seq) else {
                    continue;
                };
                self.bytes_in_flight -= p.bytes;
                acked.push((p.snap, p.bytes));
                self.on_delivered(s, seq, &p, &mut largest);
                any = true;
            }
            // a packet declared lost left the ring: look for it in the (small) lost map
            if !self.streams[s].lost.is_empty() {
                while let Some((&seq, _)) = self.streams[s].lost.range(r.clone()).next() {
                    let Some(p) = self.streams[s].lost.remove(&seq) else {
                        break;
                    };
                    // declared lost, yet delivered: the reordering window was too small (or
                    // the RTO fired during a stall of either host); the loss no longer counts
                    self.st.spurious_losses += 1;
                    self.cc.on_spurious_loss(p.bytes);
                    self.reo_mult = (self.reo_mult + 1).min(4);
                    self.reo_decay_round = self.cc.rounds() + 16;
                    self.on_delivered(s, seq, &p, &mut largest);
                    any = true;
                }
            }
        }
        if !any {
            self.acked_scratch = acked;
            return;
        }
        self.rto_backoff = 0;
        self.tlp_count = 0;
        let mut rtt_sample = None;
        let min_rtt = self.rtt.min().unwrap_or(Duration::ZERO);
        if let Some((_, sent)) = largest {
            let mut r = now.saturating_duration_since(sent);
            // RACK's time threshold uses the RTT as seen, ack delay included (as QUIC's
            // loss detection does): a receiver that holds its ACKs while it works through a
            // large receive batch must not make other streams' frames look overdue
            self.rack_rtt = r;
            let delay =
                Duration::from_micros(u64::from(a.ack_delay_us)).min(self.cfg.max_ack_delay);
            if r >= min_rtt + delay {
                r -= delay;
            }
            self.rtt.update(r);
            rtt_sample = Some(r);
        }
        self.advance_first_unacked();
        let round = self
            .cc
            .on_ack(now, &acked, rtt_sample, self.bytes_in_flight);
        self.acked_scratch = acked;
        self.note_cc_state(now);
        if round {
            self.on_round(now);
        }
        // Loss detection waits until the driver has handed over every frame of its receive
        // batch (it runs at the next poll_transmit / handle_timeout): the receiver answers
        // for all its streams at once, and judging other streams' frames by the first of
        // those ACKs would declare them lost before their own ACK, a few frames later in the
        // same batch, is read.
        self.loss_check = true;
        self.check_all_acked(now);
    }

    /// Bookkeeping for one acknowledged packet (in flight or declared lost before).
    fn on_delivered(
        &mut self,
        s: usize,
        seq: u64,
        p: &Packet,
        largest: &mut Option<(u64, Instant)>,
    ) {
        let idx = p.chunk as usize;
        if self.chunks[idx] != ChunkSt::Acked {
            self.chunks[idx] = ChunkSt::Acked;
            self.chunks_acked += 1;
            let raw = self.chunk_len(p.chunk);
            self.st.bytes_acked += raw;
            self.streams[s].acked_raw += raw;
        }
        // RACK: send time of the most recently sent packet known delivered.
        self.rack_xmit = Some(self.rack_xmit.map_or(p.snap.sent, |t| t.max(p.snap.sent)));
        if largest.is_none_or(|(l, _)| seq > l) {
            *largest = Some((seq, p.snap.sent));
        }
    }

    fn chunk_len(&self, idx: u64) -> u64 {
        let off = idx * self.chunk_size;
        self.chunk_size.min(self.object_len - off)
    }

    fn on_round(&mut self, now: Instant) {
        // forget packets declared lost long ago (their late acks can no longer come)
        let keep = (self.rtt.srtt().unwrap_or(Duration::ZERO) * 4).max(Duration::from_millis(200));
        while let Some(&(t, s, seq)) = self.lost_fifo.front() {
            if now.saturating_duration_since(t) < keep {
                break;
            }
            self.lost_fifo.pop_front();
            self.streams[usize::from(s)].lost.remove(&seq);
        }
        if let (Some(min_rtt), Some(srtt)) = (self.cc.min_rtt(), self.rtt.srtt()) {
            self.mode
                .evaluate(min_rtt, srtt, self.cc.btlbw(), self.cc.loss_rate());
        }
        if self.cc.state() == crate::cc::BbrState::Startup {
            self.interval_limited = true;
        }
        if self.reo_mult > 1 && self.cc.rounds() >= self.reo_decay_round {
            self.reo_mult -= 1;
            self.reo_decay_round = self.cc.rounds() + 16;
        }
        if self.cc.rounds() >= self.interval_round + MIN_INTERVAL_ROUNDS {
            let dt = now
                .saturating_duration_since(self.interval_start)
                .as_secs_f64();
            if dt > 0.0 && self.cfg.adapt_streams {
                let goodput = (self.st.bytes_acked - self.interval_bytes) as f64 / dt;
                self.adapter.on_interval(goodput, self.interval_limited);
            }
            self.interval_round = self.cc.rounds();
            self.interval_bytes = self.st.bytes_acked;
            self.interval_start = now;
            self.interval_limited = false;
        }
    }

    /// RACK reordering window: min_rtt / 4, widened (up to 4x, at most srtt) after spurious
    /// loss declarations, at least 500 us.
    fn reorder_window(&self) -> Duration {
        let w = self.rtt.min().unwrap_or(Duration::ZERO) / 4 * self.reo_mult;
        w.min(self.rtt.srtt().unwrap_or(w))
            .max(Duration::from_micros(500))
    }

    /// Tail loss probe deadline: with nothing new to send and packets in flight, probe after
    /// `2 * srtt + max_ack_delay` of silence so a lost tail is found without waiting for the RTO.
    fn tlp_deadline(&mut self) -> Option<Instant> {
        if self.tlp_count >= 2 || self.bytes_in_flight == 0 || self.probe.is_some() {
            return None;
        }
        if self.peek_job().is_some() && self.cwnd_room() {
            return None;
        }
        let srtt = self.rtt.srtt()?;
        Some(self.last_send + srtt * 2 + self.cfg.max_ack_delay)
    }

    fn newest_in_flight_chunk(&self) -> Option<u64> {
        self.send_order.iter().rev().find_map(|&(tx, s, seq)| {
            self.streams[usize::from(s)]
                .in_flight(seq)
                .filter(|p| p.tx_index == tx)
                .map(|p| p.chunk)
        })
    }

    fn declare_lost(&mut self, now: Instant, s: u16, seq: u64) {
        let st = &mut self.streams[usize::from(s)];
        let Some(p) = st.take(seq) else {
            return;
        };
        let (bytes, chunk) = (p.bytes, p.chunk);
        st.lost.insert(seq, p);
        self.bytes_in_flight -= bytes;
        self.cc.on_loss(bytes);
        self.st.losses += 1;
        self.lost_fifo.push_back((now, s, seq));
        if self.chunks[chunk as usize] == ChunkSt::InFlight {
            self.chunks[chunk as usize] = ChunkSt::Lost;
            self.retx.push_back(chunk);
        }
    }

    /// Oldest packet still in flight, pruning stale entries.
    fn oldest_in_flight(&mut self) -> Option<(u64, u16, u64, Instant)> {
        while let Some(&(tx, s, seq)) = self.send_order.front() {
            match self.streams[usize::from(s)].in_flight(seq) {
                Some(p) if p.tx_index == tx => {
                    return Some((tx, s, seq, p.snap.sent));
                }
                _ => {
                    self.send_order.pop_front();
                }
            }
        }
        None
    }

    fn detect_losses(&mut self, now: Instant) {
        self.loss_timer = None;
        let Some(rack) = self.rack_xmit else { return };
        let wait = self.rack_rtt + self.reorder_window();
        while let Some((tx, s, seq, sent)) = self.oldest_in_flight() {
            if sent >= rack {
                break;
            }
            if now >= sent + wait {
                debug_assert_eq!(self.send_order.front().map(|e| e.0), Some(tx));
                self.send_order.pop_front();
                self.declare_lost(now, s, seq);
            } else {
                self.loss_timer = Some(sent + wait);
                break;
            }
        }
    }

    fn rto_deadline(&mut self) -> Option<Instant> {
        let rto = self.rto();
        self.oldest_in_flight().map(|(_, _, _, sent)| sent + rto)
    }

    fn on_rto(&mut self, now: Instant) {
        let rto = self.rto();
        self.st.rto_count += 1;
        self.cc.on_rto();
        self.note_cc_state(now);
        while let Some((tx, s, seq, sent)) = self.oldest_in_flight() {
            if sent + rto > now {
                break;
            }
            debug_assert_eq!(self.send_order.front().map(|e| e.0), Some(tx));
            self.send_order.pop_front();
            self.declare_lost(now, s, seq);
        }
        self.rto_backoff += 1;
    }

    /// Next data job, pruning stale retransmissions.
    fn peek_job(&mut self) -> Option<Job> {
        while let Some(&c) = self.retx.front() {
            if self.chunks[c as usize] == ChunkSt::Lost {
                return Some(Job::Retransmit(c));
            }
            self.retx.pop_front();
        }
        while self.next_new < self.n_chunks && self.chunks[self.next_new as usize] == ChunkSt::Acked
        {
            self.next_new += 1;
        }
        if self.next_new < self.n_chunks && self.next_new < self.first_unacked + self.window_chunks
        {
            return Some(Job::New(self.next_new));
        }
        None
    }

    fn cwnd_room(&self) -> bool {
        self.bytes_in_flight + self.mss() <= self.cc.cwnd()
    }

    /// Next datagram to send now, if any, as a fresh buffer (tests and the simulator; the
    /// dataplane uses [`Sender::poll_transmit_into`]).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; wire::HEADER_LEN + wire::MAX_PAYLOAD + dwcp_proto::TAG_LEN];
        let n = self.poll_transmit_into(now, &mut buf)?;
        buf.truncate(n);
        Some(buf)
    }

    /// Writes the next datagram to send now, if any, straight into `buf` (a slot of the
    /// backend's GSO buffer or a UMEM frame) and returns its length. A data chunk is read
    /// from the source into its place in the frame and checksummed or sealed there: no
    /// intermediate buffer, no allocation. Call it until it returns `None`: pacing admits a
    /// whole burst ([`Sender::burst_quantum`]) at a time, then `poll_timeout` says when the
    /// next burst is due. A `buf` too small for the negotiated frame size fails the transfer
    /// ([`TransferError::Encode`]).
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(f) = self.control.pop_front() {
            let b = self.emit(&f)?;
            return self.put(&b, buf);
        }
        match self.state {
            SenderState::Handshake if now >= self.hello_due && self.hello_count >= MAX_HELLOS => {
                self.state = SenderState::Failed;
                self.error = Some(match self.sec.last_auth_error.take() {
                    Some(e) => TransferError::Authentication(e),
                    None => TransferError::Negotiation {
                        reason: "no HELLO_ACK after 5 HELLOs",
                    },
                });
                None
            }
            SenderState::Handshake if now >= self.hello_due => {
                let mut hello = Hello {
                    caps: self.local_caps(),
                    initial_streams: self.cfg.initial_streams.max(1),
                    object_id: self.cfg.object_id,
                    object_len: self.object_len,
                    object_hash: if self.late {
                        self.resume_key
                    } else {
                        self.object_hash.unwrap_or_default()
                    },
                };
                match self
                    .sec
                    .initiator_kex(self.conn_id, &Frame::Hello(hello.clone()))
                {
                    Ok(kex) => hello.caps.key_exchange = kex,
                    Err(e) => {
                        self.state = SenderState::Failed;
                        self.error = Some(TransferError::Authentication(e));
                        return None;
                    }
                }
                let hello = Frame::Hello(hello);
                self.hello_count += 1;
                self.timeline.hellos_sent += 1;
                if self.hello_count > 1 {
                    self.timeline.hello_retransmissions += 1;
                }
                self.hello_sent = Some(now);
                self.hello_due = now + self.hello_interval();
                let b = self.emit(&hello)?;
                self.put(&b, buf)
            }
            SenderState::Transfer => {
                if std::mem::take(&mut self.loss_check) {
                    self.detect_losses(now);
                }
                if let Some(c) = self.probe.take()
                    && self.chunks[c as usize] == ChunkSt::InFlight
                {
                    self.st.tail_probes += 1;
                    return self.send_or_fail(now, Job::Probe(c), buf);
                }
                if self.burst_left == 0 && now < self.next_send {
                    self.st.waits_pacing += 1;
                    return None;
                }
                if !self.cwnd_room() {
                    self.st.waits_cwnd += 1;
                    self.pacing_credit = false;
                    self.burst_left = 0;
                    return None;
                }
                let Some(job) = self.peek_job() else {
                    self.st.waits_data += 1;
                    self.pacing_credit = false;
                    self.burst_left = 0;
                    self.cc.on_app_limited(self.bytes_in_flight);
                    self.interval_limited = true;
                    return None;
                };
                if self.burst_left == 0 {
                    self.burst_left = self.burst_quantum();
                    self.catch_up = self.pacing_catch_up();
                }
                self.send_or_fail(now, job, buf)
            }
            _ => None,
        }
    }

    /// Bytes pacing admits back to back once a burst is due: about 1 ms at the pacing rate
    /// (as Linux's TSO autosizing does), at least two frames and at most
    /// [`SenderConfig::max_burst_frames`]. The average rate is unchanged (each frame still
    /// moves the next send time by its own gap); what changes is that a burst goes to the
    /// backend as one batch (one GSO send, one ring kick) and the worker can sleep between
    /// bursts on a slow link.
    pub fn burst_quantum(&self) -> u64 {
        let mss = self.mss();
        if self.cc.state() == crate::cc::BbrState::WarmStart {
            // the warm-start train measures the path by its spacing: frame by frame
            return mss;
        }
        let max = mss * u64::from(self.cfg.max_burst_frames.max(1));
        let per_ms = (self.cc.pacing_rate() / 1000.0) as u64;
        per_ms.clamp((2 * mss).min(max), max)
    }

    fn put(&mut self, bytes: &[u8], buf: &mut [u8]) -> Option<usize> {
        match buf.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Some(bytes.len())
            }
            None => {
                let got = buf.len();
                self.fail_local(TransferError::Encode {
                    what: "transmit buffer",
                    source: dwcp_proto::FrameError::BufferTooSmall {
                        need: bytes.len(),
                        got,
                    },
                });
                None
            }
        }
    }

    /// Fails without queueing a CLOSE that could not be written either.
    fn fail_local(&mut self, e: TransferError) {
        if !matches!(self.state, SenderState::Complete | SenderState::Failed) {
            self.state = SenderState::Failed;
            self.error = Some(e);
        }
    }

    fn send_or_fail(&mut self, now: Instant, job: Job, buf: &mut [u8]) -> Option<usize> {
        match self.send_job(now, job, buf) {
            Ok(n) => n,
            Err(e) => {
                self.fail(e);
                let f = self.control.pop_front()?;
                let b = self.emit(&f)?;
                self.put(&b, buf)
            }
        }
    }

    fn send_job(
        &mut self,
        now: Instant,
        job: Job,
        buf: &mut [u8],
    ) -> Result<Option<usize>, TransferError> {
        let (chunk, retransmit) = match job {
            Job::Retransmit(c) => (c, true),
            Job::New(c) => (c, false),
            Job::Probe(c) => (c, true),
        };
        let offset = chunk * self.chunk_size;
        let len = self.chunk_len(chunk) as usize;
        let trailer = self.sec.trailer_len(self.conn_id);
        let need = wire::HEADER_LEN + len + trailer;
        let got = buf.len();
        let Some(frame) = buf.get_mut(..need) else {
            return Err(TransferError::Encode {
                what: "data frame (transmit buffer smaller than the chunk's frame)",
                source: dwcp_proto::FrameError::BufferTooSmall { need, got },
            });
        };
        // the chunk is read straight into its place in the frame
        let payload = &mut frame[wire::HEADER_LEN..wire::HEADER_LEN + len];
        let mut done = 0;
        while done < len {
            let n = self
                .source
                .read_at(offset + done as u64, &mut payload[done..])
                .map_err(|e| TransferError::Source {
                    offset: offset + done as u64,
                    source: e,
                })?;
            if n == 0 {
                return Err(TransferError::Source {
                    offset: offset + done as u64,
                    source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "source shrank"),
                });
            }
            done += n;
        }
        self.hash_chunk(now, offset, payload)?;
        let mut codec = CODEC_RAW;
        let mut plen = len;
        if self.version != VERSION_1 {
            let mut enc = std::mem::take(&mut self.enc);
            codec = self.encoder.encode(
                self.mode.mode(),
                self.codecs_allowed,
                offset,
                payload,
                &mut enc,
            );
            // CODEC_RAW: the chunk stays where it was read (an encoder need not copy it).
            // The chunk was fit to the MTU: an encoding longer than the raw chunk would not
            // fit (nor is it worth sending), so the raw bytes go instead.
            if codec != CODEC_RAW {
                if enc.len() > len {
                    codec = CODEC_RAW;
                } else {
                    payload[..enc.len()].copy_from_slice(&enc);
                    plen = enc.len();
                }
            }
            self.enc = enc;
        }
        // the job is committed from here on
        match job {
            Job::Retransmit(_) => {
                self.retx.pop_front();
            }
            Job::New(c) => {
                self.next_new = c + 1;
                if self.next_new == self.n_chunks {
                    let t = self.since_created(now);
                    self.timeline.last_new_chunk_sent.get_or_insert(t);
                }
            }
            Job::Probe(_) => {}
        }
        self.chunks[chunk as usize] = ChunkSt::InFlight;
        let stream = (self.rr % usize::from(self.adapter.current().max(1))) as u16;
        self.rr = self.rr.wrapping_add(1);
        let st = &mut self.streams[usize::from(stream)];
        let seq = st.next_seq;
        st.next_seq += 1;
        let hdr = wire::DataRef {
            stream,
            seq,
            object_id: self.cfg.object_id,
            offset,
            codec,
            last: chunk + 1 == self.n_chunks,
            retransmit,
            payload: &[],
        };
        let built = wire::data_header(self.version, self.conn_id, &hdr)
            .and_then(|h| self.sec.finish_in_place(&h, plen, frame));
        let wire_len = match built {
            Ok(n) => n as u64,
            Err(source) => {
                return Err(TransferError::Encode {
                    what: "data frame",
                    source,
                });
            }
        };
        self.st.frames_sent += 1;
        self.st.bytes_sent += wire_len;
        // Polled later than the pacer can make up for (a descheduled driver on a busy host):
        // the rate this sender reaches now says nothing about the path, so, like running out
        // of data, its delivery-rate samples may raise the bandwidth estimate but not lower
        // it. Without this, a CPU-starved sender paces at what it measured, measures less
        // than it paced, and spirals down to a few Mbit/s.
        if self.pacing_credit {
            // a stall is ms-scale; a sender that is merely CPU-bound at Gbit/s (late by a few
            // us per frame) is what the path gives and keeps lowering the estimate
            let stall = self.catch_up.max(Duration::from_millis(1));
            if now.saturating_duration_since(self.next_send) > stall {
                self.cc.on_app_limited(self.bytes_in_flight + wire_len);
            }
        }
        let snap = self.cc.on_send(now, self.bytes_in_flight);
        let tx = self.tx_counter;
        self.tx_counter += 1;
        self.streams[usize::from(stream)].push(
            seq,
            Packet {
                chunk,
                tx_index: tx,
                snap,
                bytes: wire_len,
            },
        );
        self.send_order.push_back((tx, stream, seq));
        self.bytes_in_flight += wire_len;
        self.st.data_frames_sent += 1;
        if retransmit {
            self.st.data_frames_retransmitted += 1;
            self.st.bytes_retransmitted += wire_len;
        }
        let rate = self.cc.pacing_rate().max(1.0);
        let gap = Duration::from_nanos((wire_len as f64 * 1e9 / rate) as u64);
        // A driver that polls late during a paced run may catch up by at most
        // PACING_BURST_FRAMES back-to-back frames; after a stall on cwnd, flow control or data
        // there is no credit, and an exact driver (the simulator) sends one burst quantum at
        // a time.
        let floor = if self.pacing_credit {
            now.checked_sub(self.catch_up).unwrap_or(now)
        } else {
            now
        };
        self.next_send = self.next_send.max(floor) + gap;
        self.last_send = now;
        self.burst_left = self.burst_left.saturating_sub(wire_len);
        // credit only while the next frame is limited by pacing alone
        self.pacing_credit = self.cwnd_room() && self.peek_job().is_some();
        Ok(Some(wire_len as usize))
    }

    /// How far behind schedule a late-polled, pacing-limited sender may catch up:
    /// [`PACING_BURST_FRAMES`] frames, one burst quantum, or an eighth of min_rtt, whichever
    /// is most. A driver descheduled for a few ms on a busy host, or one that slept between
    /// bursts and woke a scheduler latency late, would otherwise lose the time for good, its
    /// delivery-rate samples would fall with it and the bandwidth estimate would spiral
    /// down; a burst of min_rtt/8 or one quantum adds at most that much queueing delay at
    /// the bottleneck.
    /// Computed once per burst (it is read for every frame).
    fn pacing_catch_up(&self) -> Duration {
        let rate = self.cc.pacing_rate().max(1.0);
        let quantum = self.burst_quantum();
        let frames = self.mss() * u64::from(PACING_BURST_FRAMES);
        Duration::from_nanos((quantum.max(frames) as f64 / rate * 1e9) as u64)
            .max(self.cc.min_rtt().unwrap_or(Duration::ZERO) / 8)
    }

    /// When `handle_timeout` (then `poll_transmit`) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let idle = self.last_recv + self.cfg.idle_timeout;
        let t = match self.state {
            SenderState::Handshake => Some(self.hello_due),
            SenderState::Transfer => {
                let mut t = self.loss_timer;
                if let Some(r) = self.rto_deadline() {
                    t = Some(t.map_or(r, |x| x.min(r)));
                }
                if self.cwnd_room() && self.peek_job().is_some() {
                    // inside a burst the next frame is due at once
                    let n = if self.burst_left > 0 {
                        self.last_send
                    } else {
                        self.next_send
                    };
                    t = Some(t.map_or(n, |x| x.min(n)));
                }
                if let Some(p) = self.tlp_deadline() {
                    t = Some(t.map_or(p, |x| x.min(p)));
                }
                if self.probe.is_some() {
                    t = Some(self.last_recv.min(self.next_send));
                }
                if self.loss_check {
                    // ACKs wait for loss detection: due at once
                    t = Some(self.last_recv);
                }
                t
            }
            SenderState::AwaitClose => self.keepalive_due,
            SenderState::Complete | SenderState::Failed => return None,
        };
        Some(t.map_or(idle, |x| x.min(idle)))
    }

    /// Process timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, SenderState::Complete | SenderState::Failed) {
            return;
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            self.fail(TransferError::IdleTimeout);
            return;
        }
        match self.state {
            SenderState::Transfer => {
                if std::mem::take(&mut self.loss_check) || self.loss_timer.is_some_and(|t| now >= t)
                {
                    self.detect_losses(now);
                }
                if self.rto_deadline().is_some_and(|t| now >= t) {
                    self.on_rto(now);
                    let n = self.cfg.reconnect_after_rtos;
                    if n > 0
                        && self.rto_backoff >= n
                        && now.saturating_duration_since(self.last_recv) >= RECONNECT_MIN_SILENCE
                    {
                        let id = self.next_conn_id();
                        self.reconnect(now, id);
                    }
                } else if self.tlp_deadline().is_some_and(|t| now >= t) {
                    self.tlp_count += 1;
                    self.probe = self.newest_in_flight_chunk();
                }
            }
            SenderState::AwaitClose if self.keepalive_due.is_some_and(|t| now >= t) => {
                // Ask for the verified CLOSE again: every RTO for three tries, then backing off.
                self.finish_digest(now);
                self.control
                    .push_back(Frame::Keepalive(self.digest_frame()));
                self.keepalive_count += 1;
                if self.keepalive_count > 3 {
                    self.rto_backoff += 1;
                }
                self.keepalive_due = Some(now + self.rto());
                let n = self.cfg.reconnect_after_rtos;
                if n > 0 && self.keepalive_count > 3 + n {
                    let id = self.next_conn_id();
                    self.reconnect(now, id);
                }
            }
            _ => {}
        }
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> SenderStats {
        SenderStats {
            version: self.version,
            bytes_sent: self.st.bytes_sent,
            bytes_acked: self.st.bytes_acked,
            bytes_retransmitted: self.st.bytes_retransmitted,
            data_frames_sent: self.st.data_frames_sent,
            data_frames_retransmitted: self.st.data_frames_retransmitted,
            frames_sent: self.st.frames_sent,
            frames_received: self.st.frames_received,
            frames_dropped: self.st.frames_dropped,
            losses: self.st.losses,
            rto_count: self.st.rto_count,
            chunks_skipped: self.st.chunks_skipped,
            spurious_losses: self.st.spurious_losses,
            tail_probes: self.st.tail_probes,
            reconnects: self.st.reconnects,
            waits_pacing: self.st.waits_pacing,
            waits_cwnd: self.st.waits_cwnd,
            waits_data: self.st.waits_data,
            conn_id: self.conn_id,
            srtt: self.rtt.srtt(),
            min_rtt: self.cc.min_rtt(),
            rttvar: self.rtt.rttvar(),
            btlbw: self.cc.btlbw(),
            pacing_rate: self.cc.pacing_rate(),
            cwnd: self.cc.cwnd(),
            bytes_in_flight: self.bytes_in_flight,
            cc_state: self.cc.state(),
            congestion_events: self.cc.congestion_events(),
            loss_rate: self.cc.loss_rate(),
            mode: self.mode.mode(),
            mode_reason: self.mode.reason(),
            streams: self.adapter.current(),
            max_streams: self.adapter.max(),
            per_stream_acked: self.streams.iter().map(|s| s.acked_raw).collect(),
            chunks_remaining: self.n_chunks - self.chunks_acked,
            sealed: self.sec.suite(),
            drops: self.sec.drops,
            timeline: self.timeline,
        }
    }

    /// Wait after the `hello_count`-th HELLO: [`HELLO_FIRST_RETRY`] after the first when the
    /// RTT is unknown, then the initial RTO with exponential backoff.
    fn hello_interval(&self) -> Duration {
        let cold = self.cfg.initial_rto >= Duration::from_secs(1);
        match (cold, self.hello_count) {
            (true, 1) => HELLO_FIRST_RETRY.min(self.cfg.initial_rto),
            (true, n) => self.rtt.rto_backoff(Duration::ZERO, n - 2),
            (false, n) => self.rtt.rto_backoff(Duration::ZERO, n - 1),
        }
    }

    /// Time since the sender was created.
    fn since_created(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Records the first Startup exit and the first ProbeBw (cheap: two comparisons).
    fn note_cc_state(&mut self, now: Instant) {
        use crate::cc::BbrState;
        let st = self.cc.state();
        if self.timeline.startup_exit.is_none()
            && !matches!(st, BbrState::Startup | BbrState::WarmStart)
        {
            self.timeline.startup_exit = Some(self.since_created(now));
        }
        if self.timeline.probe_bw.is_none() && st == BbrState::ProbeBw {
            self.timeline.probe_bw = Some(self.since_created(now));
        }
    }
}

/// Trailer bytes of a data frame: the 16-byte AEAD tag when the connection can be sealed (the
/// sender offers SEALED), else the 4-byte CRC32C. An unsealed connection never carries a tag,
/// so reserving one would waste 12 bytes of every frame.
fn trailer_len(sealable: bool) -> usize {
    if sealable {
        dwcp_proto::TAG_LEN
    } else {
        wire::TRAILER_LEN
    }
}

/// Bytes of a data frame (UDP payload) carrying `chunk` payload bytes.
fn frame_len(chunk: u64, sealable: bool) -> u64 {
    (wire::HEADER_LEN + chunk as usize + trailer_len(sealable)) as u64
}

/// Chunk size for `cfg`: the configured size, shrunk so that a data frame fits the IP MTU
/// (`mtu - 28 - 48 - trailer`, at least 64) when [`SenderConfig::mtu`] is set. With
/// `sealable` the trailer is the AEAD tag (a sealed connection never exceeds the MTU),
/// otherwise the CRC32C (1420-byte chunks at MTU 1500 instead of 1408).
fn fit_chunk(cfg: &SenderConfig, sealable: bool) -> u64 {
    let mut chunk = cfg.chunk_size.max(1) as usize;
    if let Some(mtu) = cfg.mtu {
        chunk = chunk.min(
            mtu.saturating_sub(IP_UDP_OVERHEAD + wire::HEADER_LEN + trailer_len(sealable))
                .max(64),
        );
    }
    chunk.min(wire::MAX_PAYLOAD) as u64
}

/// Codec ids (bitmask) a session allows.
pub(crate) fn codec_mask(session: &Session) -> u32 {
    Codec::ALL
        .iter()
        .filter(|c| session.codec_allowed(**c))
        .fold(0, |m, c| m | (1 << c.as_u8()))
}

/// Capabilities needed for a codec that may emit the codecs in `mask`.
fn codec_capabilities(mask: u32) -> Capabilities {
    let mut caps = Capabilities::EMPTY;
    let delta = [
        Codec::Zero,
        Codec::Dup,
        Codec::XorDeltaZeroRun,
        Codec::HdeContainer,
    ];
    if delta.iter().any(|c| mask & (1 << c.as_u8()) != 0) {
        caps.insert(Capabilities::DELTA);
    }
    if mask & (1 << Codec::Zstd.as_u8()) != 0 {
        caps.insert(Capabilities::ZSTD);
    }
    caps
}

/// Capabilities a receiver with `decoder_mask` and `max_streams` offers.
pub(crate) fn receiver_caps(
    max_version: u8,
    decoder_mask: u32,
    max_streams: u16,
    chunk_size: u32,
) -> Caps {
    let mut caps = Caps::new(max_streams.max(1), wire::MAX_PAYLOAD as u32, chunk_size);
    caps.versions = if max_version >= VERSION_3 {
        VersionSet::V1.union(VersionSet::V3)
    } else {
        VersionSet::V1
    };
    caps.capabilities = codec_capabilities(decoder_mask);
    if max_streams > 1 {
        caps.capabilities.insert(Capabilities::MULTISTREAM);
    }
    caps
}
