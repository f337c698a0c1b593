//! Per-worker statistics blocks: one writer (the worker thread), any number of readers.
//!
//! Each block is 32 words (4 cache lines, 256 bytes) of plain `AtomicU64`s. The single writer
//! updates a counter with a Relaxed load + Relaxed store (no read-modify-write needed with one
//! writer); readers load Relaxed. Counters are monotonic, so a reader that sees a mix of old and
//! new values across fields still sees each field's value at some instant — no seqlock is used,
//! the block is not a consistent snapshot across fields. Does not aggregate or rate anything.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::layout::STATS_WORDS;
use crate::mapping::Mapping;
use crate::region::RoleGuard;

/// A field of a worker statistics block; the discriminant is the word index in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stat {
    /// CLOCK_MONOTONIC ns of the worker's last loop iteration (gauge).
    HeartbeatNs = 0,
    /// Frames received (counter).
    RxFrames = 1,
    /// Frames sent (counter).
    TxFrames = 2,
    /// Payload bytes received (counter).
    RxBytes = 3,
    /// Payload bytes sent (counter).
    TxBytes = 4,
    /// Frames retransmitted (counter).
    Retransmits = 5,
    /// Transfer errors (counter): failed sends, sink errors, protocol violations by the peer.
    Errors = 6,
    /// Frames dropped: CRC32C or AEAD tag mismatch (counter).
    DropChecksum = 7,
    /// Frames dropped: malformed header or length (counter).
    DropMalformed = 8,
    /// Frames dropped: replayed or duplicate sequence (counter).
    DropReplay = 9,
    /// Frames dropped: no free frame buffer (counter).
    DropNoBuffer = 10,
    /// Frames dropped: an internal queue was full (counter).
    DropQueueFull = 11,
    /// Frames dropped: any other reason (counter).
    DropOther = 12,
    /// Current [`crate::TransferMode`] code (gauge).
    Mode = 13,
    /// p99 frame-to-ack latency over the worker's last window, microseconds (gauge).
    LatencyP99Us = 14,
    /// CPU busy share of the worker's core over its last window, per mille (gauge).
    CpuPermille = 15,
    /// Flows handled with protocol v1 (counter).
    FlowsV1 = 16,
    /// Flows handled with protocol v3 (counter).
    FlowsV3 = 17,
    /// CPU time of the worker threads that ran this slot's transfers, ns (counter).
    CpuNs = 18,
    /// CPU per object byte of the slot's current (or last) transfer, picoseconds (gauge):
    /// worker CPU time over the object bytes acknowledged so far.
    CpuPsPerByte = 19,
}

/// Every field, in word order.
pub const ALL_STATS: [Stat; 20] = [
    Stat::HeartbeatNs,
    Stat::RxFrames,
    Stat::TxFrames,
    Stat::RxBytes,
    Stat::TxBytes,
    Stat::Retransmits,
    Stat::Errors,
    Stat::DropChecksum,
    Stat::DropMalformed,
    Stat::DropReplay,
    Stat::DropNoBuffer,
    Stat::DropQueueFull,
    Stat::DropOther,
    Stat::Mode,
    Stat::LatencyP99Us,
    Stat::CpuPermille,
    Stat::FlowsV1,
    Stat::FlowsV3,
    Stat::CpuNs,
    Stat::CpuPsPerByte,
];

/// Drop reasons with their label names, for exporters.
pub const DROP_REASONS: [(Stat, &str); 6] = [
    (Stat::DropChecksum, "checksum"),
    (Stat::DropMalformed, "malformed"),
    (Stat::DropReplay, "replay"),
    (Stat::DropNoBuffer, "no_buffer"),
    (Stat::DropQueueFull, "queue_full"),
    (Stat::DropOther, "other"),
];

/// The writer of one worker's block. One per worker, handed out once by
/// [`crate::DataplaneSide::take_stats_writer`].
#[derive(Debug)]
pub struct StatsWriter {
    map: Arc<Mapping>,
    base: usize,
    worker: u32,
    _guard: Arc<RoleGuard>,
}

impl StatsWriter {
    pub(crate) fn new(map: Arc<Mapping>, base: usize, worker: u32, guard: Arc<RoleGuard>) -> Self {
        Self {
            map,
            base,
            worker,
            _guard: guard,
        }
    }

    /// Worker index of this block.
    pub fn worker(&self) -> u32 {
        self.worker
    }

    /// Adds to a counter.
    #[inline]
    pub fn add(&self, stat: Stat, n: u64) {
        let w = &self.map.words()[self.base + stat as usize];
        w.store(w.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge.
    #[inline]
    pub fn set(&self, stat: Stat, v: u64) {
        self.map.words()[self.base + stat as usize].store(v, Relaxed);
    }

    /// Stamps the worker heartbeat with CLOCK_MONOTONIC now.
    pub fn heartbeat(&self) {
        self.set(Stat::HeartbeatNs, crate::sys::monotonic_ns());
    }
}

/// A copy of one worker's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: u32,
    /// Raw words, indexed by [`Stat`].
    pub words: [u64; STATS_WORDS],
}

impl WorkerStats {
    /// One field.
    pub fn get(&self, stat: Stat) -> u64 {
        self.words[stat as usize]
    }

    /// Sum of all drop reasons.
    pub fn drops(&self) -> u64 {
        DROP_REASONS.iter().map(|(s, _)| self.get(*s)).sum()
    }
}

/// Reads any worker's block. Needs no role.
#[derive(Debug, Clone)]
pub struct StatsReader {
    pub(crate) map: Arc<Mapping>,
    pub(crate) base: usize,
    pub(crate) workers: u32,
}

impl StatsReader {
    /// Number of blocks.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Copies one block; `None` if `worker` is out of range.
    pub fn snapshot(&self, worker: u32) -> Option<WorkerStats> {
        if worker >= self.workers {
            return None;
        }
        let b = self.base + worker as usize * STATS_WORDS;
        let mut out = WorkerStats {
            worker,
            words: [0; STATS_WORDS],
        };
        for (d, w) in out
            .words
            .iter_mut()
            .zip(&self.map.words()[b..b + STATS_WORDS])
        {
            *d = w.load(Relaxed);
        }
        Some(out)
    }

    /// Copies every block.
    pub fn all(&self) -> Vec<WorkerStats> {
        (0..self.workers).filter_map(|i| self.snapshot(i)).collect()
    }
}
