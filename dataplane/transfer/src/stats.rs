//! Counters and estimates exposed by the endpoints (read-only snapshots).
//!
//! Owns the field definitions only; exporting them (Prometheus, shared memory) is done elsewhere.

use std::time::Duration;

use crate::cc::BbrState;
use crate::mode::{LinkMode, ModeReason};
use crate::wire::DropCounts;

/// Sender snapshot.
#[derive(Debug, Clone)]
pub struct SenderStats {
    /// Negotiated version (0 before the handshake).
    pub version: u8,
    /// Datagram bytes sent (all frames).
    pub bytes_sent: u64,
    /// Raw object bytes acknowledged (each chunk counted once).
    pub bytes_acked: u64,
    /// Datagram bytes of retransmitted data frames.
    pub bytes_retransmitted: u64,
    /// Data frames sent (including retransmissions).
    pub data_frames_sent: u64,
    /// Data frames that were retransmissions.
    pub data_frames_retransmitted: u64,
    /// All frames sent.
    pub frames_sent: u64,
    /// Frames received and accepted.
    pub frames_received: u64,
    /// Frames dropped (corrupt, malformed, foreign connection).
    pub frames_dropped: u64,
    /// Data frames declared lost.
    pub losses: u64,
    /// Retransmission timeouts.
    pub rto_count: u64,
    /// Chunks skipped because the receiver already held them (resume).
    pub chunks_skipped: u64,
    /// Packets declared lost that were acknowledged later.
    pub spurious_losses: u64,
    /// Tail loss probes sent.
    pub tail_probes: u64,
    /// New connections started for this object (receiver restart or path loss).
    pub reconnects: u64,
    /// Times `poll_transmit` had data to send but waited for the pacer (the next burst).
    pub waits_pacing: u64,
    /// Times it had data to send but the congestion window was full.
    pub waits_cwnd: u64,
    /// Times it had nothing to send (all sent, or the receive window was full).
    pub waits_data: u64,
    /// Current connection id.
    pub conn_id: u32,
    /// Smoothed RTT.
    pub srtt: Option<Duration>,
    /// Minimum RTT.
    pub min_rtt: Option<Duration>,
    /// RTT variance.
    pub rttvar: Duration,
    /// Bottleneck bandwidth estimate, bytes/s.
    pub btlbw: f64,
    /// Pacing rate, bytes/s.
    pub pacing_rate: f64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Congestion controller state.
    pub cc_state: BbrState,
    /// Rounds the controller counted as congested.
    pub congestion_events: u64,
    /// Loss rate estimate (fraction).
    pub loss_rate: f64,
    /// Current link mode.
    pub mode: LinkMode,
    /// Why.
    pub mode_reason: ModeReason,
    /// Streams in use.
    pub streams: u16,
    /// Stream limit from negotiation.
    pub max_streams: u16,
    /// Raw bytes acked per stream.
    pub per_stream_acked: Vec<u64>,
    /// Chunks still to be acknowledged.
    pub chunks_remaining: u64,
    /// AEAD suite when the connection is SEALED, else `None`.
    pub sealed: Option<&'static str>,
    /// Received frames dropped, by reason (auth_failed, replay, unauthenticated, ...).
    pub drops: DropCounts,
    /// When the milestones of the transfer happened.
    pub timeline: SenderTimeline,
}

/// When a sender's milestones happened, as time since the instant given to
/// [`crate::Sender::new`] (the start of the send, before the source is hashed). Each is the
/// first occurrence (a reconnect does not move them); `None` = not reached. Recorded on state
/// transitions only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderTimeline {
    /// The whole source was hashed (XXH3-128) before a HELLO: the first one, or (a receiver
    /// without LATE_DIGEST) the second. None with a late digest.
    pub source_hashed: Option<Duration>,
    /// Late digest: the last byte of the object was hashed on its way out (the digest
    /// KEEPALIVE is queued then).
    pub digest_known: Option<Duration>,
    /// The first HELLO_ACK was accepted (handshake done).
    pub handshake_done: Option<Duration>,
    /// The congestion controller first left Startup (or a warm start) for Drain or ProbeBw.
    pub startup_exit: Option<Duration>,
    /// The congestion controller first entered ProbeBw.
    pub probe_bw: Option<Duration>,
    /// The last chunk not sent before was sent for the first time (only retransmissions and
    /// probes follow).
    pub last_new_chunk_sent: Option<Duration>,
    /// Every chunk was acknowledged.
    pub all_acked: Option<Duration>,
    /// The receiver's verified CLOSE arrived.
    pub verified_close: Option<Duration>,
    /// HELLOs sent (all connections).
    pub hellos_sent: u64,
    /// HELLOs that were retransmissions (no HELLO_ACK in time).
    pub hello_retransmissions: u64,
    /// Longest time between two accepted frames from the receiver (a stall of either host,
    /// or of the path), across reconnects; zero before the second frame.
    pub longest_silence: Duration,
    /// When that silence ended.
    pub longest_silence_end: Option<Duration>,
}

/// Receiver snapshot.
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    /// Negotiated version.
    pub version: u8,
    /// Datagrams handed to the receiver.
    pub frames_received: u64,
    /// Dropped: checksum mismatch.
    pub frames_corrupt: u64,
    /// Dropped: malformed or unexpected.
    pub frames_malformed: u64,
    /// Dropped: other connection or object.
    pub frames_foreign: u64,
    /// Data frames accepted.
    pub data_frames: u64,
    /// Data frames for chunks already held.
    pub duplicate_chunks: u64,
    /// Raw bytes written to the sink.
    pub bytes_written: u64,
    /// Acks sent.
    pub acks_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Chunks held (received this session or durable from before).
    pub chunks_held: u64,
    /// Chunks known durable.
    pub chunks_durable: u64,
    /// Chunks found durable in the journal at the start.
    pub chunks_resumed: u64,
    /// Durability flushes.
    pub flushes: u64,
    /// Object bytes hashed from memory as they were written (they extended the hashed
    /// prefix: every byte on an in-order path).
    pub bytes_hashed_in_memory: u64,
    /// Frames not sent because the transmit buffer was smaller than the frame.
    pub frames_unsent: u64,
    /// Object bytes read back from the sink to be hashed (chunks that arrived ahead of a
    /// gap, or were held from before a restart).
    pub bytes_read_back: u64,
    /// AEAD suite when the connection is SEALED, else `None`.
    pub sealed: Option<&'static str>,
    /// Received frames dropped, by reason (auth_failed, replay, unauthenticated, ...).
    pub drops: DropCounts,
}
