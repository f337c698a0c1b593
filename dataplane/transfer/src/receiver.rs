//! The receiving endpoint: answers the handshake (version and capability negotiation, resume
//! ranges from the journal), accepts data frames in any order and any number of times, writes
//! chunks into the [`Sink`], acknowledges per stream (cumulative + SACK ranges, every
//! `ack_every` frames, after `max_ack_delay`, and at once on a gap or a duplicate), batches
//! durability (`Sink::flush_durable` then `Journal::record_durable`), and reports the object
//! complete only after every chunk is held and the XXH3-128 of the sink content, read back in
//! offset order, equals the sender's hash.
//!
//! Frames failing the CRC32C check or malformed are counted and dropped, never written.
//!
//! Does not: read clocks, hold sockets, or time out on a silent sender (the owner decides how
//! long to keep an idle receiver; [`Receiver::last_activity`] helps, and [`CloseLinger`] says
//! how long a completed receiver must stay to answer a sender that missed its CLOSE).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use crate::codec::{BasicCodec, CODEC_RAW, ChunkDecoder};
use crate::io::{Journal, Sink};
use crate::rangeset::RangeSet;
use crate::stats::ReceiverStats;
use crate::wire::{self, Ack, Close, CloseCode, Frame, HelloAck};
use crate::{TransferError, VERSION_3};
use dwcp_proto::Capabilities;

/// Received-range entries kept per stream beyond the cumulative point; older ones are
/// forgotten (they were acknowledged many times already).
const MAX_TRACKED_RANGES: usize = 256;

/// Spacing of the repeated completion CLOSE.
const CLOSE_REPEAT: Duration = Duration::from_millis(10);

/// The object hash is advanced over the held prefix whenever this much of it is not hashed
/// yet, so that completion only reads back the last few round trips of data.
const HASH_STEP: u64 = 1 << 20;

/// Receiver configuration.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Highest version to accept (1 or 3).
    pub max_version: u8,
    /// Most streams to allow.
    pub max_streams: u16,
    /// Largest chunk accepted.
    pub max_chunk_size: u32,
    /// Flow-control window in chunks beyond the first missing chunk. The default, 2^18,
    /// is 372 MB at MTU 1500 (1420-byte chunks): more than a 500 Mbit/s path with 500 ms
    /// of RTT holds (31 MB), with room for the holes random loss leaves behind the first
    /// missing chunk (16 384 capped such a path at 0.38 of its rate in the simulator).
    pub window_chunks: u32,
    /// Ack after this many data frames on a stream.
    pub ack_every: u32,
    /// Ack at the latest this long after an unacknowledged frame.
    pub max_ack_delay: Duration,
    /// Flush for durability once this many bytes are pending.
    pub durable_batch_bytes: u64,
    /// ... or once the oldest pending write is this old.
    pub durable_interval: Duration,
    /// Keys and policy for SEALED sessions (`dwcp-secure`); `None` = unsealed only.
    pub security: Option<wire::SecurityFactory>,
    /// Take LATE_DIGEST (docs/protocol.md 8.3): HELLO names the object by the source's
    /// identity and the digest arrives at the end.
    pub late_digest: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_version: VERSION_3,
            max_streams: 64,
            max_chunk_size: wire::MAX_PAYLOAD as u32,
            window_chunks: 262_144,
            ack_every: 2,
            max_ack_delay: Duration::from_millis(1),
            durable_batch_bytes: 4 << 20,
            durable_interval: Duration::from_millis(50),
            security: None,
            late_digest: true,
        }
    }
}

/// Receiver life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverState {
    /// No HELLO yet.
    Listening,
    /// Receiving chunks.
    Receiving,
    /// Every chunk held, durable, and the hash verified.
    Complete,
    /// Failed; see [`Receiver::error`].
    Failed,
}

#[derive(Debug, Clone, Default)]
struct StreamRx {
    largest: Option<u64>,
    bytes: u64,
    first_data: Option<Instant>,
    last_ns: u64,
    cum: u64,
    above: RangeSet,
    since_ack: u32,
    ack_due: Option<Instant>,
    immediate: bool,
    last_data: Option<Instant>,
}

/// A streaming XXH3-128 state (which has no `Debug` of its own).
#[derive(Clone, Default)]
pub(crate) struct HashState(pub(crate) Xxh3);

impl std::fmt::Debug for HashState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Xxh3(..)")
    }
}

/// The receiving endpoint.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    sink: Box<dyn Sink>,
    journal: Box<dyn Journal>,
    decoder: Box<dyn ChunkDecoder>,
    state: ReceiverState,
    error: Option<TransferError>,
    conn_id: Option<u32>,
    version: u8,
    object_id: u64,
    object_len: u64,
    /// HELLO's object hash: the object's XXH3-128, or (LATE_DIGEST) the source's identity,
    /// which keys the journal.
    object_hash: u128,
    /// The session negotiated LATE_DIGEST.
    late: bool,
    /// LATE_DIGEST: the sender's digest of the object, once its KEEPALIVE arrived.
    digest: Option<u128>,
    /// XXH3-128 of the received object, once every byte is durable and hashed.
    computed: Option<u128>,
    chunk_size: u64,
    n_chunks: u64,
    codecs: u32,
    /// Chunk indices held (a range set: memory follows the holes, not the object size).
    held: RangeSet,
    held_count: u64,
    first_missing: u64,
    durable_chunks: u64,
    pending: RangeSet,
    pending_bytes: u64,
    flush_due: Option<Instant>,
    streams: Vec<StreamRx>,
    hello_ack: Option<HelloAck>,
    control: VecDeque<Frame>,
    last_activity: Option<Instant>,
    ctrl_seq: u64,
    close_repeats: VecDeque<Instant>,
    /// XXH3-128 state over the sink content `[0, hashed)`, read back in offset order.
    hash: HashState,
    hashed: u64,
    dec: Vec<u8>,
    /// Decrypted payload of a SEALED frame (reused).
    plain: Vec<u8>,
    st: ReceiverStats,
    sec: wire::SecState,
    /// Unsealed CLOSEs answering refused HELLOs, with their connection ids (the current
    /// connection, if any, is not disturbed).
    rejects: VecDeque<(u32, Frame)>,
}

impl Receiver {
    /// New receiver with the built-in codec.
    pub fn new(cfg: ReceiverConfig, sink: Box<dyn Sink>, journal: Box<dyn Journal>) -> Self {
        Self::with_decoder(cfg, sink, journal, Box::new(BasicCodec))
    }

    /// New receiver with a chunk decoder.
    pub fn with_decoder(
        cfg: ReceiverConfig,
        sink: Box<dyn Sink>,
        journal: Box<dyn Journal>,
        decoder: Box<dyn ChunkDecoder>,
    ) -> Self {
        let mut sec = wire::SecState::default();
        if let Some(f) = &cfg.security {
            sec.set(f.make());
        }
        Self {
            cfg,
            sink,
            journal,
            decoder,
            state: ReceiverState::Listening,
            error: None,
            conn_id: None,
            version: 0,
            object_id: 0,
            object_len: 0,
            object_hash: 0,
            late: false,
            digest: None,
            computed: None,
            chunk_size: 0,
            n_chunks: 0,
            codecs: 1 << CODEC_RAW,
            held: RangeSet::default(),
            held_count: 0,
            first_missing: 0,
            durable_chunks: 0,
            pending: RangeSet::default(),
            pending_bytes: 0,
            flush_due: None,
            streams: Vec::new(),
            hello_ack: None,
            control: VecDeque::new(),
            last_activity: None,
            ctrl_seq: 0,
            close_repeats: VecDeque::new(),
            hash: HashState::default(),
            hashed: 0,
            dec: Vec::new(),
            plain: Vec::new(),
            st: ReceiverStats::default(),
            sec,
            rejects: VecDeque::new(),
        }
    }

    /// Offer SEALED frames, authenticating initiators with `security` (call before the first
    /// frame). With [`wire::Security::require_sealed`] unsealed HELLOs are refused (CLOSE
    /// code 3); a HELLO whose key exchange fails gets CLOSE code 5 and changes nothing.
    pub fn set_security(&mut self, security: Box<dyn wire::Security>) {
        self.sec.set(security);
    }

    /// Object id named by the HELLO (0 before it).
    pub fn object_id(&self) -> u64 {
        self.object_id
    }
    /// Length of the object being received (0 before the HELLO).
    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    /// Life-cycle state.
    pub fn state(&self) -> ReceiverState {
        self.state
    }
    /// True once the object is held, durable and verified.
    pub fn is_complete(&self) -> bool {
        self.state == ReceiverState::Complete
    }
    /// Why it failed.
    pub fn error(&self) -> Option<&TransferError> {
        self.error.as_ref()
    }
    /// Time of the last accepted frame.
    pub fn last_activity(&self) -> Option<Instant> {
        self.last_activity
    }
    /// Statistics snapshot.
    pub fn stats(&self) -> ReceiverStats {
        let mut s = self.st.clone();
        s.version = self.version;
        s.chunks_held = self.held_count;
        s.chunks_durable = self.durable_chunks;
        s.sealed = self.sec.suite();
        s.drops = self.sec.drops;
        s
    }

    fn fail(&mut self, e: TransferError) {
        self.state = ReceiverState::Failed;
        let message = e.to_string();
        self.error = Some(e);
        self.control.push_back(Frame::Close(Close {
            code: CloseCode::APPLICATION_ERROR,
            message: message.chars().take(200).collect(),
        }));
    }

    fn chunk_len(&self, idx: u64) -> u64 {
        self.chunk_size.min(self.object_len - idx * self.chunk_size)
    }

    /// Handle one received datagram.
    pub fn handle_frame(&mut self, now: Instant, datagram: &[u8]) {
        self.st.frames_received += 1;
        let mut plain = std::mem::take(&mut self.plain);
        let decoded = self.sec.decode_ref(datagram, &mut plain);
        let env = match decoded {
            // the hot path: the header was parsed once, the payload is borrowed
            Ok(wire::Received::Data {
                version,
                conn_id,
                data,
            }) => {
                if self.conn_id != Some(conn_id) {
                    self.st.frames_foreign += 1;
                    self.sec
                        .drops
                        .add(dwcp_proto::DropReason::UnknownConnection);
                } else if version != self.version {
                    self.st.frames_malformed += 1;
                    self.sec.drops.add(dwcp_proto::DropReason::NotNegotiated);
                } else {
                    self.last_activity = Some(now);
                    self.on_data(now, data);
                }
                self.plain = plain;
                return;
            }
            Ok(wire::Received::Other(e)) => {
                self.plain = plain;
                e
            }
            Err(e) if e.is_corruption() => {
                self.st.frames_corrupt += 1;
                return;
            }
            Err(wire::WireError::Session { .. }) => return, // counted by reason in `drops`
            Err(_) => {
                self.st.frames_malformed += 1;
                return;
            }
        };
        match env.frame {
            Frame::Hello(h) => {
                self.last_activity = Some(now);
                self.on_hello(now, env.conn_id, h, &env.transcript)
            }
            _ if self.conn_id != Some(env.conn_id) => {
                self.st.frames_foreign += 1;
                self.sec
                    .drops
                    .add(dwcp_proto::DropReason::UnknownConnection);
            }
            Frame::Data(_) => {
                // DATA takes the borrowed path above
                self.st.frames_malformed += 1;
            }
            Frame::Keepalive(digest) => {
                self.last_activity = Some(now);
                if let Some(d) = digest {
                    if !self.late || d.object_id != self.object_id {
                        // a digest this session did not negotiate, or of another object
                        self.st.frames_malformed += 1;
                        return;
                    }
                    if self.digest.is_none() {
                        self.digest = Some(d.xxh3_128);
                        if self.state == ReceiverState::Receiving && self.computed.is_some() {
                            self.conclude(now);
                            return;
                        }
                    }
                }
                match self.state {
                    ReceiverState::Complete => self.queue_close(),
                    ReceiverState::Receiving => {
                        for s in &mut self.streams {
                            s.immediate = true;
                        }
                    }
                    _ => {}
                }
            }
            Frame::Close(c) => {
                if self.state == ReceiverState::Receiving {
                    self.state = ReceiverState::Failed;
                    self.error = Some(TransferError::PeerClosed {
                        code: c.code.0,
                        message: c.message,
                    });
                }
            }
            Frame::Ack(_) | Frame::HelloAck(_) => {
                self.st.frames_malformed += 1;
                self.sec.drops.add(dwcp_proto::DropReason::MalformedPayload);
            }
        }
    }

    fn reject(&mut self, conn_id: u32, code: CloseCode, message: &str) {
        self.rejects.push_back((
            conn_id,
            Frame::Close(Close {
                code,
                message: message.chars().take(200).collect(),
            }),
        ));
    }

    fn queue_close(&mut self) {
        if !self.control.iter().any(|f| matches!(f, Frame::Close(_))) {
            self.control.push_back(Frame::Close(Close {
                code: CloseCode::NORMAL,
                message: format!(
                    "verified xxh3-128 {:032x}",
                    self.computed.unwrap_or(self.object_hash)
                ),
            }));
        }
    }

    fn on_hello(&mut self, now: Instant, conn_id: u32, h: wire::Hello, transcript: &[u8]) {
        if self.conn_id == Some(conn_id) {
            // duplicate HELLO: our HELLO_ACK was lost
            if let Some(a) = self.hello_ack.clone() {
                self.control.push_back(Frame::HelloAck(a));
            }
            if self.state == ReceiverState::Complete {
                self.queue_close();
            }
            return;
        }
        let mut local = crate::sender::receiver_caps(
            self.cfg.max_version,
            self.decoder.codecs(),
            self.cfg.max_streams,
            self.cfg.max_chunk_size.clamp(1, wire::MAX_PAYLOAD as u32),
        );
        if self.sec.offers_sealed() {
            local.capabilities.insert(Capabilities::SEALED);
        }
        if self.cfg.late_digest {
            local.capabilities.insert(Capabilities::LATE_DIGEST);
        }
        let session = match dwcp_proto::negotiate(&local, &h.caps) {
            Ok(s) => s,
            Err(e) => {
                // answered on the HELLO's connection id; the current connection is kept
                self.reject(conn_id, CloseCode::NO_COMMON_VERSION, &e.to_string());
                return;
            }
        };
        // Authenticate before anything changes: a refused HELLO leaves the current
        // connection as it is.
        let sealed = if session.capabilities.contains(Capabilities::SEALED) {
            match self.sec.accept(conn_id, transcript, &h.caps.key_exchange) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.reject(conn_id, CloseCode::AUTH_FAILURE, &e.to_string());
                    return;
                }
            }
        } else if self.sec.require_sealed() {
            self.sec.drops.add(dwcp_proto::DropReason::NotNegotiated);
            self.reject(
                conn_id,
                CloseCode::CAPABILITY_REQUIRED,
                "SEALED frames are required",
            );
            return;
        } else {
            None
        };
        let version = session.version.as_u8();
        let chunk_size = u64::from(session.chunk_size);
        let late = session.capabilities.contains(Capabilities::LATE_DIGEST);
        let same_object = self.state != ReceiverState::Listening
            && self.object_id == h.object_id
            && self.object_len == h.object_len
            && self.object_hash == h.object_hash
            && self.late == late
            && self.chunk_size == chunk_size;
        self.conn_id = Some(conn_id);
        self.version = version;
        self.streams = vec![StreamRx::default(); usize::from(session.max_streams.max(1))];
        self.codecs =
            crate::sender::codec_mask(&session) & (self.decoder.codecs() | (1 << CODEC_RAW));
        if !same_object {
            if self.flush(now).is_err() {
                return;
            }
            self.object_id = h.object_id;
            self.object_len = h.object_len;
            self.object_hash = h.object_hash;
            self.late = late;
            self.digest = None;
            self.computed = None;
            self.chunk_size = chunk_size;
            self.n_chunks = h.object_len.div_ceil(chunk_size);
            self.held = RangeSet::default();
            self.held_count = 0;
            self.durable_chunks = 0;
            self.hash = HashState::default();
            self.hashed = 0;
            if let Err(e) = self.sink.begin_object(h.object_id, h.object_len) {
                self.fail(TransferError::Sink {
                    op: "open",
                    offset: 0,
                    source: e,
                });
                return;
            }
            let durable = match self.journal.begin(h.object_id, h.object_len, h.object_hash) {
                Ok(d) => d,
                Err(e) => {
                    let id = h.object_id;
                    self.fail(TransferError::Journal {
                        object_id: id,
                        source: e,
                    });
                    return;
                }
            };
            let mut set = RangeSet::default();
            for r in durable {
                set.insert(r);
            }
            // chunks fully inside one merged durable range
            for r in set.iter() {
                let lo = r.start.div_ceil(chunk_size);
                let hi = if r.end >= self.object_len {
                    self.n_chunks
                } else {
                    r.end / chunk_size
                };
                if lo < hi {
                    self.held_count += self.held.insert(lo..hi);
                }
            }
            self.durable_chunks = self.held_count;
            self.st.chunks_resumed = self.held_count;
            self.first_missing = 0;
            self.advance_first_missing();
        }
        let held: Vec<_> = self.held.iter().take(wire::MAX_HELLO_RANGES).collect();
        let mut ack = HelloAck {
            caps: local,
            window_chunks: self.cfg.window_chunks,
            held,
        };
        match sealed {
            Some(p) => {
                let frame = Frame::HelloAck(ack.clone());
                match self
                    .sec
                    .complete(conn_id, p, &frame, session.max_streams.max(1))
                {
                    Ok(kex) => ack.caps.key_exchange = kex,
                    Err(e) => {
                        self.fail(TransferError::Authentication(e));
                        return;
                    }
                }
            }
            None => self.sec.set_unsealed(),
        }
        self.hello_ack = Some(ack.clone());
        self.control.push_back(Frame::HelloAck(ack));
        self.state = ReceiverState::Receiving;
        if self.held_count == self.n_chunks {
            self.finish(now);
        }
    }

    fn advance_first_missing(&mut self) {
        self.first_missing = match self.held.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        };
    }

    fn on_data(&mut self, now: Instant, d: wire::DataRef<'_>) {
        match self.state {
            ReceiverState::Complete => {
                self.st.duplicate_chunks += 1;
                self.queue_close();
                return;
            }
            ReceiverState::Receiving => {}
            _ => {
                self.st.frames_foreign += 1;
                return;
            }
        }
        if d.object_id != self.object_id {
            self.st.frames_foreign += 1;
            return;
        }
        let s = usize::from(d.stream);
        if s >= self.streams.len()
            || d.seq == u64::MAX
            || !d.offset.is_multiple_of(self.chunk_size)
            || d.offset >= self.object_len.max(1)
            || self.codecs & (1u32 << (d.codec & 31)) == 0
            || d.codec > 31
        {
            self.st.frames_malformed += 1;
            return;
        }
        let idx = d.offset / self.chunk_size;
        if idx >= self.n_chunks {
            self.st.frames_malformed += 1;
            return;
        }
        let len = self.chunk_len(idx) as usize;
        let mut dec = std::mem::take(&mut self.dec);
        let already = self.held.contains(idx);
        let decoded = if already {
            Ok(())
        } else {
            self.decoder
                .decode(d.codec, d.offset, len, d.payload, &mut dec)
        };
        if decoded.is_err() {
            self.dec = dec;
            self.st.frames_malformed += 1;
            return;
        }
        // sequence bookkeeping for acks
        let st = &mut self.streams[s];
        let in_order = st.largest.is_none_or(|l| d.seq == l + 1);
        let dup_seq;
        if d.seq == st.cum && st.above.is_empty() {
            // in order with no gap below: only the watermark moves (no range-set work)
            dup_seq = false;
            st.cum += 1;
            st.largest = Some(d.seq);
        } else if d.seq < st.cum || st.above.contains(d.seq) {
            dup_seq = true;
        } else {
            dup_seq = false;
            st.above.insert(d.seq..d.seq + 1);
            if let Some(first) = st.above.first()
                && first.start <= st.cum
            {
                st.cum = st.cum.max(first.end);
                st.above.remove_below(st.cum);
            }
            if st.above.len() > MAX_TRACKED_RANGES {
                let keep = st.above.iter().rev().nth(MAX_TRACKED_RANGES - 1);
                if let Some(keep) = keep {
                    st.above.remove_below(keep.start);
                }
            }
            st.largest = Some(st.largest.map_or(d.seq, |l| l.max(d.seq)));
        }
        st.last_data = Some(now);
        st.first_data.get_or_insert(now);
        st.bytes += d.payload.len() as u64;
        st.since_ack += 1;
        if dup_seq || !in_order || st.since_ack >= self.cfg.ack_every {
            st.immediate = true;
        } else if st.ack_due.is_none() {
            st.ack_due = Some(now + self.cfg.max_ack_delay);
        }
        self.st.data_frames += 1;
        if already {
            self.st.duplicate_chunks += 1;
            self.dec = dec;
            return;
        }
        // A decoder leaves `dec` empty for a raw chunk: the payload itself is the chunk (no
        // copy; the decoder checked its length).
        let data: &[u8] = if dec.is_empty() { d.payload } else { &dec };
        if data.len() != len {
            self.dec = dec;
            self.st.frames_malformed += 1;
            return;
        }
        if let Err(e) = self.sink.write_at(d.offset, data) {
            self.dec = dec;
            let off = d.offset;
            self.fail(TransferError::Sink {
                op: "write",
                offset: off,
                source: e,
            });
            return;
        }
        // the object hash advances over the bytes just written while they are in memory
        // whenever they extend the hashed prefix (always, on an in-order path)
        if d.offset == self.hashed {
            self.hash.0.update(data);
            self.hashed += len as u64;
            self.st.bytes_hashed_in_memory += len as u64;
        }
        self.dec = dec;
        self.st.bytes_written += len as u64;
        self.held_count += self.held.insert(idx..idx + 1);
        self.advance_first_missing();
        self.pending.insert(d.offset..d.offset + len as u64);
        self.pending_bytes += len as u64;
        if self.flush_due.is_none() {
            self.flush_due = Some(now + self.cfg.durable_interval);
        }
        if self.held_count == self.n_chunks {
            self.finish(now);
            return;
        }
        if self.pending_bytes >= self.cfg.durable_batch_bytes && self.flush(now).is_err() {
            return;
        }
        let prefix = (self.first_missing * self.chunk_size).min(self.object_len);
        if prefix >= self.hashed + HASH_STEP {
            let _ = self.hash_to(prefix);
        }
    }

    /// Make pending writes durable and journal them.
    fn flush(&mut self, _now: Instant) -> Result<(), ()> {
        self.flush_due = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.sink.flush_durable() {
            self.fail(TransferError::Sink {
                op: "flush",
                offset: 0,
                source: e,
            });
            return Err(());
        }
        self.st.flushes += 1;
        let ranges: Vec<_> = self.pending.iter().collect();
        for r in ranges {
            if let Err(e) = self.journal.record_durable(self.object_id, r.clone()) {
                let id = self.object_id;
                self.fail(TransferError::Journal {
                    object_id: id,
                    source: e,
                });
                return Err(());
            }
            self.durable_chunks += (r.end - r.start).div_ceil(self.chunk_size.max(1));
        }
        self.pending = RangeSet::default();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Advances the object hash over the sink content up to byte `end` (held chunks only),
    /// reading it back in offset order. Spread over the transfer, so that completion does not
    /// stop the receiver (and its final ACK) for a read of the whole object.
    fn hash_to(&mut self, end: u64) -> Result<(), ()> {
        let mut buf = vec![0u8; (end.saturating_sub(self.hashed) as usize).min(1 << 20)];
        while self.hashed < end {
            let want = ((end - self.hashed) as usize).min(buf.len());
            match self.sink.read_at(self.hashed, &mut buf[..want]) {
                Ok(n) if n > 0 => {
                    self.hash.0.update(&buf[..n]);
                    self.hashed += n as u64;
                    self.st.bytes_read_back += n as u64;
                }
                Ok(_) => {
                    let off = self.hashed;
                    self.fail(TransferError::Sink {
                        op: "read",
                        offset: off,
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "sink shorter than the object",
                        ),
                    });
                    return Err(());
                }
                Err(e) => {
                    let off = self.hashed;
                    self.fail(TransferError::Sink {
                        op: "read",
                        offset: off,
                        source: e,
                    });
                    return Err(());
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, now: Instant) {
        for s in &mut self.streams {
            s.immediate = true;
        }
        if self.flush(now).is_err() {
            return;
        }
        self.durable_chunks = self.n_chunks;
        if self.hash_to(self.object_len).is_err() {
            return;
        }
        self.computed = Some(self.hash.0.digest128());
        self.conclude(now);
    }

    /// Compares the received object's hash with the sender's: HELLO's, or (LATE_DIGEST) the
    /// digest, which may not have arrived yet (then the digest's KEEPALIVE concludes).
    fn conclude(&mut self, now: Instant) {
        let Some(actual) = self.computed else {
            return;
        };
        let expected = if self.late {
            match self.digest {
                Some(d) => d,
                None => return,
            }
        } else {
            self.object_hash
        };
        if actual == expected {
            self.state = ReceiverState::Complete;
            self.queue_close();
            // CLOSE is not acknowledged: send it 3 times, 10 ms apart (docs/protocol.md 12)
            self.close_repeats = [now + CLOSE_REPEAT, now + CLOSE_REPEAT * 2].into();
        } else {
            let id = self.object_id;
            if self.late {
                // The source changed under an unchanged identity (or the sink lost bytes):
                // nothing received may be resumed from.
                if let Err(e) = self.journal.forget(id) {
                    self.fail(TransferError::Journal {
                        object_id: id,
                        source: e,
                    });
                    return;
                }
            }
            self.fail(TransferError::HashMismatch {
                object_id: id,
                expected,
                actual,
            });
        }
    }

    /// [`Receiver::poll_transmit`] into a caller's buffer (a receiver sends only small
    /// control frames: ACKs, HELLO_ACK, CLOSE); returns the length. A frame larger than
    /// `buf` is dropped and counted in `frames_unsent` (the next ACK repeats what it said).
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        loop {
            let f = self.poll_transmit(now)?;
            match buf.get_mut(..f.len()) {
                Some(dst) => {
                    dst.copy_from_slice(&f);
                    return Some(f.len());
                }
                None => self.st.frames_unsent += 1,
            }
        }
    }

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some((c, f)) = self.rejects.pop_front() {
            self.st.frames_sent += 1;
            return wire::encode(crate::VERSION_1, c, 0, &f).ok();
        }
        let conn = self.conn_id?;
        let version = if self.version == 0 {
            crate::VERSION_1
        } else {
            self.version
        };
        if let Some(f) = self.control.pop_front() {
            self.st.frames_sent += 1;
            self.ctrl_seq += 1;
            return self.sec.encode(version, conn, self.ctrl_seq - 1, &f).ok();
        }
        if self.state != ReceiverState::Receiving && self.state != ReceiverState::Complete {
            return None;
        }
        let i = self
            .streams
            .iter()
            .position(|s| s.immediate || s.ack_due.is_some_and(|t| now >= t))?;
        // One ACK goes out now: every stream with unacknowledged frames answers in the same
        // round. A sender's loss detection (RACK) compares send times across streams, so a
        // stream whose ACK waited for max_ack_delay while another's went out at once would
        // have its frames declared lost (spuriously) by the other's ACK.
        for s in &mut self.streams[i..] {
            if s.since_ack > 0 {
                s.immediate = true;
            }
        }
        let st = &mut self.streams[i];
        st.immediate = false;
        st.ack_due = None;
        st.since_ack = 0;
        let delay = st
            .last_data
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let mut ranges: Vec<_> = st.above.iter().rev().take(wire::MAX_SACK_RANGES).collect();
        ranges.reverse();
        let (recv_ns, rate) = match (st.first_data, st.last_data) {
            (Some(f), Some(l)) => {
                let span = l.saturating_duration_since(f).as_secs_f64();
                let ns = l
                    .saturating_duration_since(f)
                    .as_nanos()
                    .min(u128::from(u64::MAX));
                let rate = if span > 0.0 {
                    st.bytes as f64 / span
                } else {
                    0.0
                };
                (ns as u64, rate as u64)
            }
            _ => (0, 0),
        };
        st.last_ns = recv_ns;
        let ack = Ack {
            stream: i as u16,
            cumulative: st.cum,
            ranges,
            ack_delay_us: delay.as_micros().min(u128::from(u32::MAX)) as u32,
            recv_timestamp_ns: recv_ns,
            receive_rate: rate,
        };
        self.st.acks_sent += 1;
        self.st.frames_sent += 1;
        self.ctrl_seq += 1;
        self.sec
            .encode(version, conn, self.ctrl_seq - 1, &Frame::Ack(ack))
            .ok()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.flush_due;
        if let Some(&c) = self.close_repeats.front() {
            t = Some(t.map_or(c, |x| x.min(c)));
        }
        for s in &self.streams {
            if let Some(d) = s.ack_due {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        }
        t
    }

    /// Process timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.close_repeats.front().is_some_and(|t| now >= *t) {
            self.close_repeats.pop_front();
            self.queue_close();
        }
        if self.flush_due.is_some_and(|t| now >= t) {
            let _ = self.flush(now);
        }
        for s in &mut self.streams {
            if s.ack_due.is_some_and(|t| now >= t) {
                s.immediate = true;
                s.ack_due = None;
            }
        }
    }
}

/// How long the owner of a completed receiver keeps it running so that a sender which missed
/// every copy of the final CLOSE still gets one (CLOSE is not acknowledged, docs/protocol.md
/// 12). A fixed linger fails whenever the sender's next frame comes later than the linger:
/// its keepalives in `AwaitClose` (and its retransmissions) are spaced by its RTO, which
/// grows with path RTT, with RTT variance on a loaded host, and doubles after three tries.
/// The rule here adapts to what the sender actually does: the receiver stays at least `min`
/// after completion, and leaves only once the peer has been silent for `min` plus twice the
/// longest silence seen since completion (so the next keepalive of a backing-off sender,
/// which at most doubles the spacing, still finds it, with `min` to spare for timing
/// noise); never longer than `cap`. A
/// sender that received the CLOSE falls silent at once, so in the normal case the cost is
/// `min`, as with a fixed linger.
///
/// Pure and clock-free: the owner feeds it the receiver's `frames_received` counter
/// ([`ReceiverStats::frames_received`]) with the time it read it.
#[derive(Debug, Clone)]
pub struct CloseLinger {
    min: Duration,
    cap: Duration,
    completed: Instant,
    last_frame: Instant,
    frames: u64,
    longest_gap: Duration,
}

impl CloseLinger {
    /// Starts lingering at `now` (completion), with the receiver's `frames_received` then.
    pub fn new(now: Instant, frames_received: u64, min: Duration, cap: Duration) -> Self {
        Self {
            min,
            cap: cap.max(min),
            completed: now,
            last_frame: now,
            frames: frames_received,
            longest_gap: Duration::ZERO,
        }
    }

    /// Records the receiver's `frames_received` as read at `now`.
    pub fn observe(&mut self, now: Instant, frames_received: u64) {
        if frames_received != self.frames {
            self.frames = frames_received;
            self.longest_gap = self
                .longest_gap
                .max(now.saturating_duration_since(self.last_frame));
            self.last_frame = now;
        }
    }

    /// When lingering started (completion).
    pub fn started(&self) -> Instant {
        self.completed
    }

    /// The required silence before leaving, as of now.
    pub fn quiet_needed(&self) -> Duration {
        self.min + self.longest_gap * 2
    }

    /// True once the receiver may stop answering.
    pub fn done(&self, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.completed);
        if since >= self.cap {
            return true;
        }
        since >= self.min && now.saturating_duration_since(self.last_frame) >= self.quiet_needed()
    }
}
