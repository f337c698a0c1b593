//! One-shot file transfers on a pinned worker: [`send_file`] and [`recv_file`].
//!
//! Owns: opening the file storage, starting a one-worker [`Workers`] pool with an
//! [`EndpointHandler`], waiting for the endpoint to finish while reporting progress, the
//! receiver's linger (it keeps answering for a moment so a sender that missed the final CLOSE
//! hears it again; [`CloseLinger`] extends it while that sender keeps asking), stopping the worker (which detaches the XDP program), and, on the
//! receiving side, moving the verified part file onto its final name.
//!
//! Does not: implement the protocol (dwcp-transfer), talk to the control process, or run
//! several objects at once (a daemon mode with the command ring does that).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dwcp_transfer::receiver::CloseLinger;
use dwcp_transfer::{Receiver, ReceiverConfig, ReceiverStats, Sender, SenderConfig, SenderStats};

use crate::codec::{CodecChoice, CodecStats, LinkBoundMonitor};
use crate::files::{FileJournal, FileSink, FileSource};
use crate::io::{IoConfig, Selection};
use crate::session::{EndpointHandler, Snapshot};
use crate::worker::{WorkerConfig, WorkerError, WorkerSnapshot, Workers};

/// Errors of a one-shot transfer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The file to send or the destination could not be opened.
    #[error("{what} {path}")]
    File {
        /// What was being opened.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The transfer engine refused to start.
    #[error("transfer set-up")]
    Setup(#[source] dwcp_transfer::TransferError),
    /// The worker could not start.
    #[error("dataplane worker")]
    Worker(#[from] WorkerError),
    /// The transfer failed.
    #[error("transfer failed: {0}")]
    Failed(String),
    /// The transfer failed on authentication or the sealing policy (wrong or unknown key,
    /// a peer that refuses or does not offer SEALED frames).
    #[error("transfer failed: {0}")]
    Authentication(String),
    /// The transfer did not finish in time.
    #[error("transfer did not finish within {0:?}")]
    Timeout(Duration),
    /// The transfer was cancelled through its cancel flag.
    #[error("transfer cancelled")]
    Cancelled,
    /// An object over several workers asked for AF_XDP: its parts use one port each, and
    /// the XDP program steers one port per interface.
    #[error(
        "a transfer over several workers uses UDP sockets (one port per part); AF_XDP was asked for"
    )]
    PartsNeedUdp,
    /// Moving the verified object onto its name failed.
    #[error("finishing {path}")]
    Finish {
        /// Destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// The error of a failed endpoint.
    pub fn of_failure(f: &crate::session::Failure) -> Self {
        if f.authentication {
            Self::Authentication(f.chain.clone())
        } else {
            Self::Failed(f.chain.clone())
        }
    }
}

/// Common options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Port configuration (interface, addresses, backend choice).
    pub io: IoConfig,
    /// Core to pin the worker to.
    pub core: usize,
    /// Give up after this long.
    pub timeout: Duration,
    /// Yield the CPU when idle (share a core; off for a dedicated core).
    pub idle_yield: bool,
}

/// What a finished send reports.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// Wall time from start to verified completion.
    pub elapsed: Duration,
    /// Object length.
    pub object_len: u64,
    /// Final sender stats.
    pub stats: SenderStats,
    /// Chunk codec counters (data vs payload bytes, chunks per codec).
    pub codec: CodecStats,
    /// The datacenter compression decision and the measurement behind it.
    pub codec_reason: String,
    /// Backend in use and why.
    pub selection: Option<Selection>,
    /// Worker counters.
    pub worker: WorkerSnapshot,
    /// XDP program counters, when AF_XDP was in use.
    pub xdp: Option<dwcp_ebpf::Counters>,
}

/// What a finished receive reports.
#[derive(Debug, Clone)]
pub struct RecvReport {
    /// Wall time from the first poll to verified completion.
    pub elapsed: Duration,
    /// Where the verified object now is.
    pub path: PathBuf,
    /// Object length.
    pub object_len: u64,
    /// Final receiver stats.
    pub stats: ReceiverStats,
    /// Chunk decoder counters.
    pub codec: CodecStats,
    /// Backend in use and why.
    pub selection: Option<Selection>,
    /// Worker counters.
    pub worker: WorkerSnapshot,
    /// XDP program counters, when AF_XDP was in use.
    pub xdp: Option<dwcp_ebpf::Counters>,
}

fn wait<S: Clone + std::fmt::Debug>(
    progress: &crate::session::Progress<S>,
    start: Instant,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Snapshot<S>),
) -> Result<Snapshot<S>, RunError> {
    let mut last_log = Instant::now();
    let mut last_progress: Option<Instant> = None;
    loop {
        if let Some(s) = progress.get() {
            // the end is seen within 2 ms (it counts in the elapsed time); progress goes to
            // the caller every 20 ms as before
            if s.finished || last_progress.is_none_or(|t| t.elapsed() >= Duration::from_millis(20))
            {
                last_progress = Some(Instant::now());
                on_progress(&s);
            }
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                tracing::debug!(stats = ?s.stats, "progress");
            }
            if s.finished {
                return match &s.failure {
                    Some(f) => Err(RunError::of_failure(f)),
                    None => Ok(s),
                };
            }
        }
        if start.elapsed() > timeout {
            return Err(RunError::Timeout(timeout));
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(RunError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(crate) fn worker_cfg(opts: &RunOptions) -> WorkerConfig {
    WorkerConfig {
        cores: vec![opts.core],
        io: opts.io.clone(),
        idle_yield: opts.idle_yield,
    }
}

/// Sends the file at `path` to the peer in `opts.io`.
pub fn send_file(
    path: &Path,
    cfg: SenderConfig,
    opts: &RunOptions,
    on_progress: &mut dyn FnMut(&SenderStats),
) -> Result<SendReport, RunError> {
    send_file_cancellable(path, cfg, opts, None, on_progress)
}

/// [`send_file`] that also stops (with [`RunError::Cancelled`]) once `cancel` becomes true.
pub fn send_file_cancellable(
    path: &Path,
    cfg: SenderConfig,
    opts: &RunOptions,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&SenderStats),
) -> Result<SendReport, RunError> {
    send_file_with_codec(path, cfg, opts, CodecChoice::Auto, cancel, on_progress)
}

/// [`send_file_cancellable`] with a chunk codec choice (`Auto`: by link mode; a version-1
/// session sends raw whatever the choice). While the transfer runs, a
/// [`LinkBoundMonitor`] decides whether a datacenter-mode transfer may compress.
pub fn send_file_with_codec(
    path: &Path,
    cfg: SenderConfig,
    opts: &RunOptions,
    codec: CodecChoice,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&SenderStats),
) -> Result<SendReport, RunError> {
    send_file_observed(path, cfg, opts, codec, cancel, &mut |s| {
        on_progress(&s.stats)
    })
}

/// [`send_file_with_codec`] whose progress callback also gets the sending worker's CPU
/// time ([`Snapshot::cpu_ns`]); the daemon publishes it to `/metrics`.
pub fn send_file_observed(
    path: &Path,
    mut cfg: SenderConfig,
    opts: &RunOptions,
    codec: CodecChoice,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Snapshot<SenderStats>),
) -> Result<SendReport, RunError> {
    let source = FileSource::open(path).map_err(|source| RunError::File {
        what: "source",
        path: path.to_path_buf(),
        source,
    })?;
    let object_len = dwcp_transfer::Source::len(&source);
    // The worker moves frames a batch at a time: keep two batches in flight at least.
    cfg.min_cwnd_frames = cfg.min_cwnd_frames.max(2 * opts.io.batch as u64);
    // A pacing burst is what one GSO send carries (64 KiB), within the port's batch.
    cfg.max_burst_frames = burst_frames(&opts.io);
    // frames fit the port's datagrams unless the caller sized them itself
    cfg.mtu.get_or_insert(opts.io.max_datagram + 28);
    let (encoder, control) = crate::codec::sender_codec(codec)
        .map_err(|e| RunError::Failed(format!("chunk codec: {}", crate::io::error_chain(&e))))?;
    let mut monitor = LinkBoundMonitor::new(control.clone());
    let on_progress = &mut |s: &Snapshot<SenderStats>| {
        monitor.observe(Instant::now(), (&s.stats).into());
        on_progress(s)
    };
    let start = Instant::now();
    let sender =
        Sender::with_encoder(cfg, Box::new(source), encoder, start).map_err(RunError::Setup)?;
    let (handler, progress) = EndpointHandler::new(sender);
    let workers = Workers::spawn_one(&worker_cfg(opts), handler)?;
    let res = wait(&progress, start, opts.timeout, cancel, on_progress);
    let elapsed = start.elapsed();
    let xdp = workers.program_counters();
    let mut stopped = workers.stop()?;
    let (_, worker) = stopped.remove(0);
    let snap = res?;
    Ok(SendReport {
        elapsed,
        object_len,
        stats: snap.stats,
        codec: control.stats(),
        codec_reason: monitor.reason(),
        selection: worker.selection.clone(),
        worker,
        xdp,
    })
}

/// Data frames one pacing burst may hold on this port: one 64 KiB GSO send's worth (44
/// frames at MTU 1500), at least 8 and at most the port's batch.
pub(crate) fn burst_frames(io: &IoConfig) -> u32 {
    let per_gso = dwcp_xsk::mmsg::MAX_UDP / io.max_datagram.max(1);
    per_gso.clamp(8, io.batch.max(8)) as u32
}

/// Most a completed receiver lingers for a sender that keeps asking for its CLOSE (the
/// sender's default idle timeout: by then it has given up anyway).
const LINGER_CAP: Duration = Duration::from_secs(10);

/// Keeps the (completed) receiver's worker answering as [`CloseLinger`] says: at least
/// `linger`, longer while the sender is still sending (it missed the final CLOSE).
pub(crate) fn linger_after_completion(
    progress: &crate::session::Progress<ReceiverStats>,
    frames: u64,
    linger: Duration,
    cancel: Option<&AtomicBool>,
    next: Option<&AtomicBool>,
) {
    let mut l = CloseLinger::new(Instant::now(), frames, linger, LINGER_CAP);
    loop {
        let now = Instant::now();
        if let Some(s) = progress.get() {
            l.observe(now, s.stats.frames_received);
        }
        let stop = cancel.is_some_and(|c| c.load(Ordering::Relaxed))
            || next.is_some_and(|n| n.load(Ordering::Relaxed));
        if l.done(now) || stop {
            if now.duration_since(l.started()) > linger + Duration::from_millis(50) {
                tracing::debug!(
                    lingered = ?now.duration_since(l.started()),
                    "receiver lingered for a sender that missed the final CLOSE"
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Receives one object into `dest` from the peer in `opts.io`. The object appears under
/// `dest` only once complete and verified; an interrupted receive resumes from the journal.
pub fn recv_file(
    dest: &Path,
    cfg: ReceiverConfig,
    opts: &RunOptions,
    linger: Duration,
    on_progress: &mut dyn FnMut(&ReceiverStats),
) -> Result<RecvReport, RunError> {
    recv_file_cancellable(dest, cfg, opts, linger, None, on_progress)
}

/// [`recv_file`] that also stops (with [`RunError::Cancelled`]) once `cancel` becomes true.
pub fn recv_file_cancellable(
    dest: &Path,
    cfg: ReceiverConfig,
    opts: &RunOptions,
    linger: Duration,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&ReceiverStats),
) -> Result<RecvReport, RunError> {
    recv_file_with(dest, cfg, opts, linger, cancel, None, on_progress)
}

/// [`recv_file_cancellable`] whose linger after completion also ends once `next` is set (the
/// peer announced its next object, so its send of this one verified and it needs no more
/// CLOSE).
pub(crate) fn recv_file_with(
    dest: &Path,
    cfg: ReceiverConfig,
    opts: &RunOptions,
    linger: Duration,
    cancel: Option<&AtomicBool>,
    next: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&ReceiverStats),
) -> Result<RecvReport, RunError> {
    let file_err = |source| RunError::File {
        what: "destination",
        path: dest.to_path_buf(),
        source,
    };
    let sink = FileSink::open(dest).map_err(file_err)?;
    let keep = sink.try_clone().map_err(file_err)?;
    let (decoder, control) = crate::codec::receiver_codec()
        .map_err(|e| RunError::Failed(format!("chunk codec: {}", crate::io::error_chain(&e))))?;
    let receiver = Receiver::with_decoder(
        cfg,
        Box::new(sink),
        Box::new(FileJournal::open(dest)),
        decoder,
    );
    let (handler, progress) = EndpointHandler::new(receiver);
    let start = Instant::now();
    let workers = Workers::spawn_one(&worker_cfg(opts), handler)?;
    let res = wait(&progress, start, opts.timeout, cancel, &mut |s| {
        on_progress(&s.stats)
    });
    let elapsed = start.elapsed();
    if let Ok(done) = &res {
        linger_after_completion(&progress, done.stats.frames_received, linger, cancel, next);
    }
    let xdp = workers.program_counters();
    let mut stopped = workers.stop()?;
    let (handler, worker) = stopped.remove(0);
    let snap = res?;
    let object_len = handler
        .into_endpoint()
        .map(|r| r.object_len())
        .unwrap_or_default();
    let path = keep.finish(object_len).map_err(|source| RunError::Finish {
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(RecvReport {
        elapsed,
        path,
        object_len,
        stats: snap.stats,
        codec: control.stats(),
        selection: worker.selection.clone(),
        worker,
        xdp,
    })
}
