//! One object over several workers: [`send_file_parts`] and [`recv_file_parts`].
//!
//! Owns the split of one file into `n` contiguous parts (whole MiB, the last one shorter,
//! possibly empty: [`part_ranges`]), each moved as its own transfer on its own pinned worker
//! and port: part `k` goes from local port `P + k` to peer port `Q + k`, its object id is the
//! part's byte offset in the file, and the sender reads it through a [`RangeSource`] (the
//! file's identity, offset and length name it, so LATE_DIGEST and resume work per part). The
//! receiver writes every part into the one part file through a [`PartSink`] (placed by the
//! object id its HELLO names), keeps one journal per part (`<dest>.dwcp-journal.<k>`), and
//! renames the part file onto the destination only once every part verified.
//!
//! Each part has its own connection, congestion controller and digest, so the object is
//! verified part by part (XXH3-128 of each part; the report lists them). Both sides must
//! use the same number of workers: a sender always opens all `n` connections, empty parts
//! included, so a receiver waiting for `n` is never left waiting.
//!
//! Does not: spread parts over AF_XDP queues (the parts use separate ports, which one XDP
//! program per interface does not steer yet, so the UDP backend carries them), balance
//! parts between workers while they run, or move a failed part to another worker (a failed
//! part fails the transfer with its error; a rerun resumes every part from its journal).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use dwcp_transfer::{
    Receiver, ReceiverConfig, ReceiverStats, Sender, SenderConfig, SenderStats, Sink, Source,
};

use crate::codec::{CodecChoice, CodecStats};
use crate::files::{FileJournal, FileSink, FileSource};
use crate::io::{BackendChoice, Selection};
use crate::runner::{RecvReport, RunError, RunOptions, SendReport};
use crate::session::{EndpointHandler, Progress, Snapshot};
use crate::worker::{WorkerSnapshot, Workers};

/// Parts are whole multiples of this (1 MiB), so each starts on a page and block boundary.
pub const PART_ALIGN: u64 = 1 << 20;

/// The `n` byte ranges of an object of `len` bytes: equal whole-MiB parts, the last shorter,
/// trailing ones empty when the object is small.
pub fn part_ranges(len: u64, n: usize) -> Vec<Range<u64>> {
    let n = n.max(1) as u64;
    let size = len.div_ceil(n).div_ceil(PART_ALIGN).max(1) * PART_ALIGN;
    (0..n)
        .map(|k| (k * size).min(len)..((k + 1) * size).min(len))
        .collect()
}

/// A byte range of a file, read as an object of its own.
#[derive(Debug)]
pub struct RangeSource {
    inner: FileSource,
    base: u64,
    len: u64,
}

impl RangeSource {
    /// `range` of the file read by `inner`.
    pub fn new(inner: FileSource, range: Range<u64>) -> Self {
        Self {
            inner,
            base: range.start,
            len: range.end - range.start,
        }
    }
}

impl Source for RangeSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.len.saturating_sub(offset) as usize);
        self.inner.read_at(self.base + offset, &mut buf[..want])
    }

    fn identity(&self) -> Option<u128> {
        let file = self.inner.identity()?;
        let mut b = Vec::with_capacity(48);
        b.extend_from_slice(&file.to_le_bytes());
        b.extend_from_slice(&self.base.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        Some(xxhash_rust::xxh3::xxh3_128(&b))
    }
}

/// The part file of a destination, written at the offset the HELLO's object id names.
#[derive(Debug)]
pub struct PartSink {
    inner: FileSink,
    base: u64,
}

impl PartSink {
    /// A sink on `inner`'s part file; its base is set by the HELLO.
    pub fn new(inner: FileSink) -> Self {
        Self { inner, base: 0 }
    }
}

impl Sink for PartSink {
    fn begin_object(&mut self, object_id: u64, len: u64) -> std::io::Result<()> {
        object_id.checked_add(len).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "part offset + length overflows",
            )
        })?;
        self.base = object_id;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(self.base + offset, data)
    }

    fn flush_durable(&mut self) -> std::io::Result<()> {
        self.inner.flush_durable()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(self.base + offset, buf)
    }
}

/// Options of part `k` of `n`: the base ports plus `k`, the `k`-th core after the first
/// (wrapping around the machine's cores),
/// UDP sockets when there are several parts (one XDP program per interface steers one
/// port; an explicit AF_XDP choice is refused).
fn part_opts(opts: &RunOptions, k: usize, n: usize) -> Result<RunOptions, RunError> {
    let mut o = opts.clone();
    if n > 1 {
        match o.io.choice {
            BackendChoice::AfXdp => return Err(RunError::PartsNeedUdp),
            BackendChoice::Auto | BackendChoice::Udp => o.io.choice = BackendChoice::Udp,
        }
    }
    let k16 = k as u16;
    o.io.local.set_port(opts.io.local.port().wrapping_add(k16));
    o.io.peer.set_port(opts.io.peer.port().wrapping_add(k16));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    o.core = (opts.core + k) % cores;
    Ok(o)
}

/// What one part reports.
#[derive(Debug, Clone)]
pub struct PartReport<S> {
    /// Byte range of the part in the object.
    pub range: Range<u64>,
    /// The endpoint's final stats.
    pub stats: S,
    /// Its worker's counters (CPU time, I/O).
    pub worker: WorkerSnapshot,
    /// Backend and why.
    pub selection: Option<Selection>,
}

/// What a transfer over several workers reports.
#[derive(Debug, Clone)]
pub struct PartsReport<S> {
    /// Wall time from start to the last part's verification.
    pub elapsed: Duration,
    /// Object length.
    pub object_len: u64,
    /// The destination (receiving side).
    pub path: Option<PathBuf>,
    /// Every part.
    pub parts: Vec<PartReport<S>>,
    /// The parts' chunk codec counters, added up.
    pub codec: CodecStats,
}

impl<S> PartsReport<S> {
    /// CPU time of all the workers, ns.
    pub fn cpu_ns(&self) -> u64 {
        self.parts.iter().map(|p| p.worker.cpu_ns).sum()
    }

    /// The parts' worker counters added up (part 0's index, core and backend).
    fn workers_total(&self) -> WorkerSnapshot {
        let mut w = self.parts[0].worker.clone();
        for p in &self.parts[1..] {
            let (a, b) = (&mut w.io, &p.worker.io);
            a.rx_packets += b.rx_packets;
            a.rx_bytes += b.rx_bytes;
            a.tx_packets += b.tx_packets;
            a.tx_bytes += b.tx_bytes;
            a.rx_not_ours += b.rx_not_ours;
            a.rx_oversize += b.rx_oversize;
            a.rx_errors += b.rx_errors;
            a.tx_dropped += b.tx_dropped;
            a.tx_deferred += b.tx_deferred;
            a.tx_oversize += b.tx_oversize;
            a.wakeups += b.wakeups;
            w.cpu_ns += p.worker.cpu_ns;
            w.frames_ok += p.worker.frames_ok;
            for (x, y) in w.dwcp_drops.iter_mut().zip(p.worker.dwcp_drops) {
                *x += y;
            }
        }
        w
    }
}

impl PartsReport<SenderStats> {
    /// One [`SendReport`] for the whole object: counters added over the parts; the path
    /// estimate, mode and timeline are part 0's.
    pub fn into_send_report(self) -> SendReport {
        let worker = self.workers_total();
        let mut st = self.parts[0].stats.clone();
        for p in &self.parts[1..] {
            let b = &p.stats;
            st.bytes_sent += b.bytes_sent;
            st.bytes_acked += b.bytes_acked;
            st.bytes_retransmitted += b.bytes_retransmitted;
            st.data_frames_sent += b.data_frames_sent;
            st.data_frames_retransmitted += b.data_frames_retransmitted;
            st.frames_sent += b.frames_sent;
            st.frames_received += b.frames_received;
            st.frames_dropped += b.frames_dropped;
            st.losses += b.losses;
            st.rto_count += b.rto_count;
            st.chunks_skipped += b.chunks_skipped;
            st.spurious_losses += b.spurious_losses;
            st.tail_probes += b.tail_probes;
            st.reconnects += b.reconnects;
            st.waits_pacing += b.waits_pacing;
            st.waits_cwnd += b.waits_cwnd;
            st.waits_data += b.waits_data;
            st.congestion_events += b.congestion_events;
            st.btlbw += b.btlbw;
            st.pacing_rate += b.pacing_rate;
        }
        SendReport {
            elapsed: self.elapsed,
            object_len: self.object_len,
            stats: st,
            codec: self.codec.clone(),
            codec_reason: format!("{} parts on {} workers", self.parts.len(), self.parts.len()),
            selection: worker.selection.clone(),
            worker,
            xdp: None,
        }
    }
}

impl PartsReport<ReceiverStats> {
    /// One [`RecvReport`] for the whole object: counters added over the parts.
    pub fn into_recv_report(self) -> RecvReport {
        let worker = self.workers_total();
        let mut st = self.parts[0].stats.clone();
        for p in &self.parts[1..] {
            let b = &p.stats;
            st.frames_received += b.frames_received;
            st.frames_corrupt += b.frames_corrupt;
            st.frames_malformed += b.frames_malformed;
            st.frames_foreign += b.frames_foreign;
            st.data_frames += b.data_frames;
            st.duplicate_chunks += b.duplicate_chunks;
            st.bytes_written += b.bytes_written;
            st.acks_sent += b.acks_sent;
            st.frames_sent += b.frames_sent;
            st.chunks_held += b.chunks_held;
            st.chunks_durable += b.chunks_durable;
            st.chunks_resumed += b.chunks_resumed;
            st.flushes += b.flushes;
            st.bytes_hashed_in_memory += b.bytes_hashed_in_memory;
            st.frames_unsent += b.frames_unsent;
            st.bytes_read_back += b.bytes_read_back;
        }
        RecvReport {
            elapsed: self.elapsed,
            path: self.path.clone().unwrap_or_default(),
            object_len: self.object_len,
            stats: st,
            codec: self.codec.clone(),
            selection: worker.selection.clone(),
            worker,
            xdp: None,
        }
    }
}

/// The codec counters of all parts.
fn sum_codec(controls: &[Arc<crate::codec::CodecControl>]) -> CodecStats {
    let mut t = CodecStats::default();
    for c in controls {
        let s = c.stats();
        for (a, b) in t.chunks.iter_mut().zip(s.chunks) {
            *a += b;
        }
        for (a, b) in t.blocks.iter_mut().zip(s.blocks) {
            *a += b;
        }
        t.data_bytes += s.data_bytes;
        t.payload_bytes += s.payload_bytes;
        t.container_fallbacks += s.container_fallbacks;
        t.decode_errors += s.decode_errors;
        t.policy = s.policy;
        t.datacenter_compress |= s.datacenter_compress;
    }
    t
}

/// Waits for every part; the first failure ends the wait.
fn wait_all<S: Clone + std::fmt::Debug>(
    progress: &[Arc<Progress<S>>],
    start: Instant,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<Snapshot<S>>, RunError> {
    loop {
        let snaps: Vec<_> = progress.iter().map(|p| p.get()).collect();
        if let Some(f) = snaps.iter().flatten().find_map(|s| s.failure.as_ref()) {
            return Err(RunError::of_failure(f));
        }
        if snaps.iter().all(|s| s.as_ref().is_some_and(|s| s.finished)) {
            return Ok(snaps.into_iter().flatten().collect());
        }
        if start.elapsed() > timeout {
            return Err(RunError::Timeout(timeout));
        }
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(RunError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends the file at `path` as `n` parts on `n` workers (see the module docs).
pub fn send_file_parts(
    path: &Path,
    cfg: SenderConfig,
    opts: &RunOptions,
    codec: CodecChoice,
    n: usize,
    cancel: Option<&AtomicBool>,
) -> Result<PartsReport<SenderStats>, RunError> {
    let file_err = |source| RunError::File {
        what: "source",
        path: path.to_path_buf(),
        source,
    };
    let len = Source::len(&FileSource::open(path).map_err(file_err)?);
    let ranges = part_ranges(len, n);
    let start = Instant::now();
    let mut pools = Vec::new();
    let mut progress = Vec::new();
    let mut controls = Vec::new();
    for (k, r) in ranges.iter().enumerate() {
        let o = part_opts(opts, k, n)?;
        let mut c = cfg.clone();
        c.object_id = r.start;
        c.conn_id = cfg.conn_id.wrapping_add(k as u32).max(1);
        c.min_cwnd_frames = c.min_cwnd_frames.max(2 * o.io.batch as u64);
        c.max_burst_frames = crate::runner::burst_frames(&o.io);
        // frames fit the port's datagrams unless the caller sized them itself
        c.mtu.get_or_insert(o.io.max_datagram + 28);
        let source = RangeSource::new(FileSource::open(path).map_err(file_err)?, r.clone());
        let (encoder, control) = crate::codec::sender_codec(codec).map_err(|e| {
            RunError::Failed(format!("chunk codec: {}", crate::io::error_chain(&e)))
        })?;
        let sender =
            Sender::with_encoder(c, Box::new(source), encoder, start).map_err(RunError::Setup)?;
        let (handler, p) = EndpointHandler::new(sender);
        pools.push(Workers::spawn_one(&crate::runner::worker_cfg(&o), handler)?);
        progress.push(p);
        controls.push(control);
    }
    let res = wait_all(&progress, start, opts.timeout, cancel);
    let elapsed = start.elapsed();
    let mut parts = Vec::new();
    for (pool, r) in pools.into_iter().zip(&ranges) {
        let (_, worker) = pool.stop()?.remove(0);
        parts.push((r.clone(), worker));
    }
    let snaps = res?;
    Ok(PartsReport {
        elapsed,
        object_len: len,
        path: None,
        codec: sum_codec(&controls),
        parts: parts
            .into_iter()
            .zip(snaps)
            .map(|((range, worker), s)| PartReport {
                range,
                stats: s.stats,
                selection: worker.selection.clone(),
                worker,
            })
            .collect(),
    })
}

/// Receives one object sent by [`send_file_parts`] with the same `n` into `dest`. The object
/// appears under `dest` only once every part is complete and verified; an interrupted
/// receive resumes each part from its journal.
pub fn recv_file_parts(
    dest: &Path,
    cfg: ReceiverConfig,
    opts: &RunOptions,
    n: usize,
    linger: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<PartsReport<ReceiverStats>, RunError> {
    let file_err = |source| RunError::File {
        what: "destination",
        path: dest.to_path_buf(),
        source,
    };
    let keep = FileSink::open(dest).map_err(file_err)?;
    let start = Instant::now();
    let mut pools = Vec::new();
    let mut progress = Vec::new();
    let mut controls = Vec::new();
    for k in 0..n.max(1) {
        let o = part_opts(opts, k, n)?;
        let sink = PartSink::new(keep.try_clone().map_err(file_err)?);
        let (decoder, control) = crate::codec::receiver_codec().map_err(|e| {
            RunError::Failed(format!("chunk codec: {}", crate::io::error_chain(&e)))
        })?;
        let receiver = Receiver::with_decoder(
            cfg.clone(),
            Box::new(sink),
            Box::new(FileJournal::open_part(dest, k)),
            decoder,
        );
        let (handler, p) = EndpointHandler::new(receiver);
        pools.push(Workers::spawn_one(&crate::runner::worker_cfg(&o), handler)?);
        progress.push(p);
        controls.push(control);
    }
    let res = wait_all(&progress, start, opts.timeout, cancel);
    let elapsed = start.elapsed();
    if res.is_ok() {
        // each part's worker keeps answering a sender that missed its final CLOSE
        for p in &progress {
            let frames = p.get().map_or(0, |s| s.stats.frames_received);
            crate::runner::linger_after_completion(p, frames, linger, cancel, None);
        }
    }
    let mut parts = Vec::new();
    let mut object_len = 0;
    for pool in pools {
        let (handler, worker) = pool.stop()?.remove(0);
        let (base, len) = handler
            .into_endpoint()
            .map(|r| (r.object_id(), r.object_len()))
            .unwrap_or_default();
        object_len = object_len.max(base + len);
        parts.push((base..base + len, worker));
    }
    let snaps = res?;
    let path = keep.finish(object_len).map_err(|source| RunError::Finish {
        path: dest.to_path_buf(),
        source,
    })?;
    for k in 0..n.max(1) {
        FileJournal::open_part(dest, k)
            .remove()
            .map_err(|source| RunError::Finish {
                path: dest.to_path_buf(),
                source,
            })?;
    }
    Ok(PartsReport {
        elapsed,
        object_len,
        path: Some(path),
        codec: sum_codec(&controls),
        parts: parts
            .into_iter()
            .zip(snaps)
            .map(|((range, worker), s)| PartReport {
                range,
                stats: s.stats,
                selection: worker.selection.clone(),
                worker,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_in_whole_mib() {
        assert_eq!(part_ranges(0, 3), vec![0..0, 0..0, 0..0]);
        assert_eq!(part_ranges(10, 2), vec![0..10, 10..10]);
        let mib = PART_ALIGN;
        assert_eq!(
            part_ranges(5 * mib + 7, 2),
            vec![0..3 * mib, 3 * mib..5 * mib + 7]
        );
        for (len, n) in [(1u64, 1usize), (mib, 4), (100 * mib + 1, 3), (7 * mib, 7)] {
            let r = part_ranges(len, n);
            assert_eq!(r.len(), n);
            assert_eq!(r[0].start, 0);
            assert_eq!(r[n - 1].end, len);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert!(r.iter().all(|p| p.start % mib == 0 || p.is_empty()));
        }
    }
}
