//! The dataplane daemon: attaches to the shared-memory region as the dataplane side and
//! serves the control process's command ring.
//!
//! Owns: opening or creating the region, the dataplane side claim, the side heartbeat and the
//! per-worker statistics blocks (a housekeeping thread), consuming commands with the
//! exactly-once rule of docs/shm-abi.md (act, then commit; skip sequence numbers already
//! applied), the latest table snapshot (re-read when the table generation changes), and one
//! sending transfer per job on its own worker slot ([`crate::runner::send_file_observed`]),
//! or, for disk and memory jobs, the source side of a pre-copy migration (`dwcp-migrate`
//! rounds moved by [`crate::mover::RunnerMover`]), reporting `JobProgress` / `JobFinished`
//! events. With keys configured ([`DaemonConfig::security`]) every job's frames are SEALED,
//! both directions (a migration's manifest too), and a peer that cannot authenticate fails
//! the job with [`error_code::AUTH`].
//!
//! Does not: receive objects or migrations (receivers run as `dwcp recv` / `dwcp migrate
//! recv`), resume jobs across a daemon restart (the control process
//! marks them failed when it sees the epoch change), or decide policy (the table says which
//! flows use v3). Signal handling belongs to the binary: it sets the `stop` flag.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dwcp_proto::DropReason;
use dwcp_shm::{
    AckStatus, Command, Event, Geometry, JobOutcome, JobSpec, Producer, Region, ShmError, Stat,
    StatsWriter, TableReader, TableSnapshot, TransferMode,
};
use dwcp_transfer::error_chain;
use dwcp_transfer::wire::SecurityFactory;
use dwcp_transfer::{LinkMode, SenderConfig, SenderStats};

use crate::io::IoConfig;
use crate::runner::{RunError, RunOptions, send_file_observed};
use crate::worker::WorkerSnapshot;

/// `JobFinished` error codes (the event carries a number; the text goes to the log).
pub mod error_code {
    /// The object file is missing or unreadable.
    pub const FILE: u32 = 1;
    /// The transfer engine refused to start.
    pub const SETUP: u32 = 2;
    /// The worker (port, backend) could not start.
    pub const WORKER: u32 = 3;
    /// The transfer failed (peer gone, protocol error).
    pub const FAILED: u32 = 4;
    /// The transfer did not finish within the job timeout.
    pub const TIMEOUT: u32 = 5;
    /// Neither the job nor the daemon names a peer, or no port is configured.
    pub const NO_PEER: u32 = 6;
    /// Finishing the object failed.
    pub const FINISH: u32 = 7;
    /// The daemon is shutting down.
    pub const SHUTDOWN: u32 = 8;
    /// Peer authentication failed: the peer's key is not the one configured (or ours is not
    /// on its allow-list), the PSKs differ, or one side requires SEALED and the other has
    /// no keys. Nothing was written at the destination.
    pub const AUTH: u32 = 9;
}

/// True when a transfer failure (its error chain as text) is a SEALED-handshake refusal:
/// our check of the peer's handshake failed, the peer refused ours (CLOSE code 5,
/// AUTH_FAILURE), or the two sides disagree on SEALED (CLOSE code 3 / our negotiation).
/// True when an error, or any error in its source chain, is an authentication or
/// sealing-policy failure of a transfer (typed: a [`RunError::Authentication`], a
/// [`dwcp_transfer::TransferError`] that says so, or a stream segment that failed so).
fn is_auth_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if matches!(
            x.downcast_ref::<RunError>(),
            Some(RunError::Authentication(_))
        ) || x
            .downcast_ref::<dwcp_transfer::TransferError>()
            .is_some_and(dwcp_transfer::TransferError::is_authentication)
            || matches!(
                x.downcast_ref::<crate::stream::StreamError>(),
                Some(crate::stream::StreamError::Segment {
                    authentication: true,
                    ..
                })
            )
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The region could not be opened, created or claimed.
    #[error("shared-memory region {path}")]
    Region {
        /// Region path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ShmError,
    },
    /// A thread could not be started.
    #[error("starting thread {name}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Daemon configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Region path (default `/dev/shm/dwcp`).
    pub shm: PathBuf,
    /// Geometry used when the daemon creates the region (must match the control process's).
    pub geometry: Geometry,
    /// Worker slots = concurrent jobs (at most the region's `workers`).
    pub workers: u32,
    /// Port template for jobs: interface, local address, default peer, backend. Worker `i`
    /// uses local port `local.port() + i`. `None`: jobs fail with [`error_code::NO_PEER`].
    pub io: Option<IoConfig>,
    /// Directory holding job objects: job object `N` is the file `<objects>/<N>` (decimal).
    pub objects: PathBuf,
    /// First core for worker pinning; worker `i` uses `core_base + i` modulo the core count.
    pub core_base: usize,
    /// A job gives up after this long.
    pub job_timeout: Duration,
    /// Housekeeping (heartbeat) period.
    pub heartbeat: Duration,
    /// Command ring poll period when idle.
    pub poll: Duration,
    /// Most streams per job.
    pub max_streams: u16,
    /// Link MTU, sizes chunks (None: the engine default).
    pub mtu: Option<usize>,
    /// SEALED keys and policy for every job, both directions (`dwcp daemon --key ...`);
    /// `None`: plain frames (CRC32C only).
    pub security: Option<SecurityFactory>,
}

impl DaemonConfig {
    /// Defaults for a region path.
    pub fn new(shm: PathBuf) -> Self {
        Self {
            shm,
            geometry: Geometry::default(),
            workers: 1,
            io: None,
            objects: PathBuf::from("."),
            core_base: 0,
            job_timeout: Duration::from_secs(3600),
            heartbeat: Duration::from_millis(100),
            poll: Duration::from_millis(5),
            max_streams: 8,
            mtu: None,
            security: None,
        }
    }
}

/// What the daemon did, returned on clean shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSummary {
    /// Dataplane epoch of this instance.
    pub epoch: u64,
    /// Commands acted on.
    pub commands: u64,
    /// Jobs started.
    pub jobs_started: u64,
    /// Jobs still running at shutdown (cancelled).
    pub jobs_cancelled_at_shutdown: u64,
    /// Jobs that completed with SEALED frames.
    pub jobs_sealed: u64,
    /// Jobs that failed peer authentication ([`error_code::AUTH`]).
    pub jobs_auth_failed: u64,
}

/// Outcome counters the job threads add to (copied into [`DaemonSummary`] at shutdown).
#[derive(Debug, Default)]
struct JobCounters {
    sealed: AtomicU64,
    auth_failed: AtomicU64,
}

type Events = Arc<Mutex<Producer<Event>>>;

/// Pushes an event, retrying for up to a second while the ring is full.
fn emit(events: &Events, ev: Event) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = events.lock().unwrap_or_else(|p| p.into_inner()).push(&ev);
        match r {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => {
                tracing::warn!(?ev, "event ring full for 1 s; event dropped");
                return;
            }
        }
    }
}

fn link_mode(m: LinkMode) -> TransferMode {
    match m {
        LinkMode::Datacenter => TransferMode::Datacenter,
        LinkMode::Internet => TransferMode::Internet,
        LinkMode::Hybrid => TransferMode::Hybrid,
    }
}

/// One worker slot: its statistics block and whether a job holds it.
struct Slot {
    stats: StatsWriter,
    busy: AtomicBool,
}

struct RunningJob {
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The latest table snapshot, refreshed when the generation moves.
struct TableView {
    reader: TableReader,
    snap: RwLock<TableSnapshot>,
}

impl TableView {
    fn refresh(&self) -> u64 {
        let g = self.reader.generation();
        let have = self
            .snap
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation;
        if g != have {
            match self.reader.read() {
                Ok(s) => {
                    // `observed_mono_ns` (CLOCK_MONOTONIC, comparable across processes) is
                    // when this process first saw the generation; the control-to-dataplane
                    // latency benchmark (docs/perf-control.md) reads it from this line.
                    tracing::info!(
                        generation = s.generation,
                        observed_mono_ns = dwcp_shm::monotonic_ns(),
                        rollout = ?s.content.rollout,
                        flags = s.content.flags.len(),
                        "table updated"
                    );
                    *self.snap.write().unwrap_or_else(|p| p.into_inner()) = s;
                }
                Err(e) => tracing::warn!(error = %e, "table read failed; keeping the last copy"),
            }
        }
        self.snap
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    fn get(&self) -> TableSnapshot {
        self.snap.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the daemon until `stop` becomes true. Running jobs are cancelled on the way out.
pub fn run(cfg: &DaemonConfig, stop: Arc<AtomicBool>) -> Result<DaemonSummary, DaemonError> {
    let region_err = |source| DaemonError::Region {
        path: cfg.shm.clone(),
        source,
    };
    // An existing region keeps the geometry its creator chose (the control process may be
    // configured with other sizes); a missing one is created with ours.
    let region = match Region::create_or_open(&cfg.shm, cfg.geometry) {
        Err(ShmError::GeometryMismatch { found, .. }) => {
            tracing::info!(?found, "region exists with another geometry; using it");
            Region::open(&cfg.shm)
        }
        r => r,
    }
    .map_err(region_err)?;
    let mut side = region.attach_dataplane().map_err(region_err)?;
    let epoch = side.heartbeat.epoch();
    let nworkers = cfg.workers.clamp(1, region.geometry().workers);
    let slots: Arc<Vec<Slot>> = Arc::new(
        (0..nworkers)
            .filter_map(|i| side.take_stats_writer(i))
            .map(|stats| Slot {
                stats,
                busy: AtomicBool::new(false),
            })
            .collect(),
    );
    let (cmd_head, cmd_tail) = region.command_positions();
    tracing::info!(
        path = %cfg.shm.display(),
        epoch,
        workers = slots.len(),
        cmd_tail,
        cmd_pending = cmd_head.saturating_sub(cmd_tail),
        "dataplane attached"
    );

    let table = Arc::new(TableView {
        reader: side.table,
        snap: RwLock::new(TableSnapshot::default()),
    });
    table.refresh();
    let events: Events = Arc::new(Mutex::new(side.events));
    let mut commands = side.commands;
    let heartbeat = side.heartbeat;
    heartbeat.beat();

    // Housekeeping: side and worker heartbeats.
    let hk_stop = Arc::new(AtomicBool::new(false));
    let housekeeping = {
        let hk_stop = hk_stop.clone();
        let slots = slots.clone();
        let period = cfg.heartbeat;
        std::thread::Builder::new()
            .name("dwcp-housekeeping".into())
            .spawn(move || {
                while !hk_stop.load(Ordering::Relaxed) {
                    heartbeat.beat();
                    for s in slots.iter() {
                        s.stats.heartbeat();
                    }
                    std::thread::sleep(period);
                }
            })
            .map_err(|source| DaemonError::Thread {
                name: "housekeeping",
                source,
            })?
    };

    let mut summary = DaemonSummary {
        epoch,
        ..DaemonSummary::default()
    };
    let counters = Arc::new(JobCounters::default());
    let mut jobs: HashMap<u64, RunningJob> = HashMap::new();
    let mut seen_jobs: HashSet<u64> = HashSet::new();
    let mut last_applied: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        table.refresh();
        jobs.retain(|_, j| !j.thread.is_finished());
        let Some(r) = commands.next() else {
            // Sleeps until the control process pushes a command (futex doorbell on the ring
            // head) or `poll` passes; a table change always comes with a command.
            commands.wait(cfg.poll);
            continue;
        };
        if last_applied.is_some_and(|l| r.seq <= l) {
            tracing::debug!(seq = r.seq, "command already applied; skipped");
            commands.commit();
            continue;
        }
        let seq = r.seq;
        match r.msg {
            Err(e) => {
                tracing::warn!(seq, error = %e, "undecodable command");
                emit(
                    &events,
                    Event::Ack {
                        cmd_seq: seq,
                        status: AckStatus::Unsupported,
                        detail: 0,
                    },
                );
            }
            Ok(cmd) => {
                tracing::debug!(seq, ?cmd, "command");
                match cmd {
                    Command::Ping { nonce } => emit(&events, Event::Pong { nonce }),
                    Command::SetFlag { generation, .. }
                    | Command::RolloutStage { generation, .. } => {
                        let have = table.refresh();
                        let status = if have >= generation {
                            AckStatus::Ok
                        } else {
                            tracing::warn!(seq, generation, have, "command ahead of the table");
                            AckStatus::Rejected
                        };
                        emit(
                            &events,
                            Event::Ack {
                                cmd_seq: seq,
                                status,
                                detail: u32::try_from(have).unwrap_or(u32::MAX),
                            },
                        );
                    }
                    Command::CancelJob { job_id } => {
                        let status = match jobs.get(&job_id) {
                            Some(j) if !j.thread.is_finished() => {
                                j.cancel.store(true, Ordering::Relaxed);
                                tracing::info!(job_id, "job cancel requested");
                                AckStatus::Ok
                            }
                            _ => AckStatus::Rejected,
                        };
                        emit(
                            &events,
                            Event::Ack {
                                cmd_seq: seq,
                                status,
                                detail: 0,
                            },
                        );
                    }
                    Command::CreateJob(spec) => {
                        let (status, detail) = if !seen_jobs.insert(spec.job_id) {
                            tracing::warn!(job_id = spec.job_id, "duplicate job id; refused");
                            (AckStatus::Rejected, 0)
                        } else {
                            match start_job(cfg, spec, &slots, &table, &events, &counters) {
                                Some((version, job)) => {
                                    summary.jobs_started += 1;
                                    jobs.insert(spec.job_id, job);
                                    (AckStatus::Ok, u32::from(version))
                                }
                                None => (AckStatus::Rejected, 0),
                            }
                        };
                        emit(
                            &events,
                            Event::Ack {
                                cmd_seq: seq,
                                status,
                                detail,
                            },
                        );
                    }
                }
            }
        }
        last_applied = Some(seq);
        summary.commands += 1;
        commands.commit();
    }

    tracing::info!(running = jobs.len(), "shutting down");
    for j in jobs.values() {
        if !j.thread.is_finished() {
            summary.jobs_cancelled_at_shutdown += 1;
        }
        j.cancel.store(true, Ordering::Relaxed);
    }
    for (_, j) in jobs.drain() {
        let _ = j.thread.join();
    }
    hk_stop.store(true, Ordering::Relaxed);
    let _ = housekeeping.join();
    summary.jobs_sealed = counters.sealed.load(Ordering::Relaxed);
    summary.jobs_auth_failed = counters.auth_failed.load(Ordering::Relaxed);
    Ok(summary)
}

/// Starts one job on a free worker slot. Returns the protocol version it offers, or `None`
/// (after a `JobFinished(failed)` event) when it cannot start.
fn start_job(
    cfg: &DaemonConfig,
    spec: JobSpec,
    slots: &Arc<Vec<Slot>>,
    table: &Arc<TableView>,
    events: &Events,
    counters: &Arc<JobCounters>,
) -> Option<(u8, RunningJob)> {
    let fail = |code: u32, why: &str| {
        tracing::warn!(job_id = spec.job_id, code, why, "job refused");
        emit(
            events,
            Event::JobFinished {
                job_id: spec.job_id,
                outcome: JobOutcome::Failed,
                bytes_done: 0,
                error_code: code,
            },
        );
        None
    };
    let Some(base) = cfg.io.clone() else {
        return fail(error_code::NO_PEER, "no port configured (--iface/--local)");
    };
    let Some(index) = slots.iter().position(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) else {
        tracing::warn!(job_id = spec.job_id, "all worker slots busy; refused");
        return None;
    };
    let mut io = base;
    if spec.peer_ipv4 != 0 && spec.peer_port != 0 {
        io.peer = SocketAddrV4::new(Ipv4Addr::from(spec.peer_ipv4), spec.peer_port);
    }
    if io.peer.port() == 0 || io.peer.ip().is_unspecified() {
        slots[index].busy.store(false, Ordering::Release);
        return fail(
            error_code::NO_PEER,
            "the job names no peer and --peer is not set",
        );
    }
    io.local
        .set_port(io.local.port().wrapping_add(index as u16));
    // Connection ids are the flow ids of the rollout; never 0.
    let conn_id = (spec.job_id as u32).max(1);
    let rollout = table.get().content.rollout;
    // SEALED frames exist only in version 3: a daemon whose keys make SEALED mandatory
    // offers version 3 whatever the rollout says (a v1 flow could only fail the handshake).
    let must_seal = cfg
        .security
        .as_ref()
        .is_some_and(|f| f.make().require_sealed());
    let version = if must_seal || rollout.uses_v3(u64::from(conn_id)) {
        3
    } else {
        1
    };
    let stats = &slots[index].stats;
    stats.add(
        if version == 3 {
            Stat::FlowsV3
        } else {
            Stat::FlowsV1
        },
        1,
    );
    tracing::info!(
        job_id = spec.job_id,
        object_id = spec.object_id,
        worker = index,
        conn_id,
        version,
        rollout_pct_bp = rollout.pct_bp,
        peer = %io.peer,
        local = %io.local,
        keys = cfg.security.is_some(),
        must_seal,
        "job starting"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = RunOptions {
        io,
        core: (cfg.core_base + index) % cores,
        timeout: cfg.job_timeout,
        idle_yield: true,
    };
    let sender = SenderConfig {
        conn_id,
        object_id: spec.object_id,
        max_version: version,
        max_streams: cfg.max_streams,
        mtu: cfg.mtu,
        security: cfg.security.clone(),
        ..SenderConfig::default()
    };
    let path = cfg.objects.join(spec.object_id.to_string());
    let cancel = Arc::new(AtomicBool::new(false));
    let thread = {
        let cancel = cancel.clone();
        let slots = slots.clone();
        let events = events.clone();
        let counters = counters.clone();
        std::thread::Builder::new()
            .name(format!("dwcp-job-{}", spec.job_id))
            .spawn(move || {
                if matches!(
                    spec.kind,
                    dwcp_shm::JobKind::Disk | dwcp_shm::JobKind::Memory
                ) {
                    run_migration_job(
                        spec,
                        &path,
                        sender,
                        &opts,
                        &cancel,
                        &slots[index],
                        &events,
                        &counters,
                    );
                } else {
                    run_job(
                        spec,
                        &path,
                        sender,
                        &opts,
                        &cancel,
                        &slots[index],
                        &events,
                        &counters,
                    );
                }
                slots[index].busy.store(false, Ordering::Release);
            })
    };
    match thread {
        Ok(thread) => Some((version, RunningJob { cancel, thread })),
        Err(e) => {
            slots[index].busy.store(false, Ordering::Release);
            fail(error_code::WORKER, &e.to_string())
        }
    }
}

/// Counters already written to the stats block for the running job (to add deltas).
#[derive(Default)]
struct Written {
    tx_frames: u64,
    rx_frames: u64,
    tx_bytes: u64,
    retransmits: u64,
    dropped: u64,
    mode: TransferMode,
    cpu_ns: u64,
    /// (worker CPU ns, wall time) at the last CPU-share update.
    cpu_mark: Option<(u64, Instant)>,
}

impl Written {
    /// Adds the counter deltas; returns the new mode when it changed.
    fn update(&mut self, w: &StatsWriter, s: &SenderStats) -> Option<TransferMode> {
        let step = |stat: Stat, have: &mut u64, now: u64| {
            if now > *have {
                w.add(stat, now - *have);
                *have = now;
            }
        };
        step(Stat::TxFrames, &mut self.tx_frames, s.frames_sent);
        step(Stat::RxFrames, &mut self.rx_frames, s.frames_received);
        step(Stat::TxBytes, &mut self.tx_bytes, s.bytes_sent);
        step(
            Stat::Retransmits,
            &mut self.retransmits,
            s.data_frames_retransmitted,
        );
        step(Stat::DropOther, &mut self.dropped, s.frames_dropped);
        let mode = link_mode(s.mode);
        w.set(Stat::Mode, mode as u64);
        (mode != self.mode).then(|| {
            self.mode = mode;
            mode
        })
    }

    /// Adds the worker's CPU time since the last update, and sets the CPU share (over at
    /// least 1 s) and the CPU per acknowledged object byte.
    fn update_cpu(&mut self, w: &StatsWriter, cpu_ns: u64, bytes_acked: u64) {
        if cpu_ns > self.cpu_ns {
            w.add(Stat::CpuNs, cpu_ns - self.cpu_ns);
            self.cpu_ns = cpu_ns;
        }
        if let Some(ps) = cpu_ns.saturating_mul(1000).checked_div(bytes_acked) {
            w.set(Stat::CpuPsPerByte, ps);
        }
        let now = Instant::now();
        match self.cpu_mark {
            Some((c0, t0)) if now.duration_since(t0) >= Duration::from_secs(1) => {
                let wall = now.duration_since(t0).as_nanos().max(1) as u64;
                w.set(
                    Stat::CpuPermille,
                    (cpu_ns.saturating_sub(c0).saturating_mul(1000) / wall).min(1000),
                );
                self.cpu_mark = Some((cpu_ns, now));
            }
            Some(_) => {}
            None => self.cpu_mark = Some((cpu_ns, now)),
        }
    }
}

/// Adds the worker's validation drops (counted below the transfer engine) by reason.
fn add_worker_drops(w: &StatsWriter, snap: &WorkerSnapshot) {
    for r in DropReason::ALL {
        let n = snap.dropped(*r);
        if n == 0 {
            continue;
        }
        let stat = match r {
            DropReason::ChecksumMismatch | DropReason::AuthFailed | DropReason::Unauthenticated => {
                Stat::DropChecksum
            }
            DropReason::Replay => Stat::DropReplay,
            DropReason::LocalError => Stat::DropOther,
            _ => Stat::DropMalformed,
        };
        w.add(stat, n);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    spec: JobSpec,
    path: &Path,
    sender: SenderConfig,
    opts: &RunOptions,
    cancel: &AtomicBool,
    slot: &Slot,
    events: &Events,
    counters: &JobCounters,
) {
    let start = Instant::now();
    let mut written = Written::default();
    let mut last_event: Option<Instant> = None;
    let mut last_acked = 0u64;
    let total = std::fs::metadata(path)
        .map(|m| m.len())
        .unwrap_or(spec.total_bytes);
    let codec = crate::codec::CodecChoice::Auto;
    let res = send_file_observed(path, sender, opts, codec, Some(cancel), &mut |snap| {
        written.update_cpu(&slot.stats, snap.cpu_ns, snap.stats.bytes_acked);
        let s = &snap.stats;
        if let Some(mode) = written.update(&slot.stats, s) {
            emit(
                events,
                Event::WorkerMode {
                    worker: slot.stats.worker(),
                    mode,
                },
            );
        }
        last_acked = s.bytes_acked;
        if last_event.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            last_event = Some(Instant::now());
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            emit(
                events,
                Event::JobProgress {
                    job_id: spec.job_id,
                    bytes_done: s.bytes_acked,
                    bytes_total: total,
                    rate_bps: (s.bytes_acked as f64 / secs) as u64,
                    round: 1,
                    mode: link_mode(s.mode),
                    dirty_bytes: 0,
                },
            );
        }
    });
    let (outcome, bytes_done, code) = match &res {
        Ok(r) => {
            written.update_cpu(&slot.stats, r.worker.cpu_ns, r.stats.bytes_acked);
            if let Some(mode) = written.update(&slot.stats, &r.stats) {
                emit(
                    events,
                    Event::WorkerMode {
                        worker: slot.stats.worker(),
                        mode,
                    },
                );
            }
            add_worker_drops(&slot.stats, &r.worker);
            if r.stats.sealed.is_some() {
                counters.sealed.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(
                job_id = spec.job_id,
                bytes = r.object_len,
                secs = r.elapsed.as_secs_f64(),
                version = r.stats.version,
                mode = %r.stats.mode,
                sealed = r.stats.sealed.unwrap_or("no"),
                "job completed"
            );
            emit(
                events,
                Event::JobProgress {
                    job_id: spec.job_id,
                    bytes_done: r.object_len,
                    bytes_total: r.object_len,
                    rate_bps: (r.object_len as f64 / r.elapsed.as_secs_f64().max(1e-3)) as u64,
                    round: 1,
                    mode: link_mode(r.stats.mode),
                    dirty_bytes: 0,
                },
            );
            (JobOutcome::Completed, r.object_len, 0)
        }
        Err(e) => {
            let code = match e {
                RunError::File { .. } => error_code::FILE,
                RunError::Setup(_) => error_code::SETUP,
                RunError::Worker(_) => error_code::WORKER,
                RunError::Authentication(_) => {
                    counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                    error_code::AUTH
                }
                RunError::Failed(_) => error_code::FAILED,
                RunError::Timeout(_) => error_code::TIMEOUT,
                RunError::Cancelled => 0,
                RunError::Finish { .. } => error_code::FINISH,
                RunError::PartsNeedUdp => error_code::SETUP,
            };
            if !matches!(e, RunError::Cancelled) {
                slot.stats.add(Stat::Errors, 1);
            }
            tracing::warn!(job_id = spec.job_id, code, error = %error_chain(e), "job ended");
            let outcome = if matches!(e, RunError::Cancelled) {
                JobOutcome::Cancelled
            } else {
                JobOutcome::Failed
            };
            (outcome, last_acked, code)
        }
    };
    emit(
        events,
        Event::JobFinished {
            job_id: spec.job_id,
            outcome,
            bytes_done,
            error_code: code,
        },
    );
}

/// A disk or memory job: pre-copy rounds of `DIR/<object_id>` to a `dwcp migrate recv`
/// destination (control connection over TCP to the job's peer address and port, patches
/// over DWCP on this slot's port); see docs/migration.md. `max_rounds` 1 sends one round;
/// 0 means the default (30). Progress: `bytes_done` = image bytes delivered (current round
/// pro rata), `round`, `dirty_bytes` = the current round's dirty data; wire bytes go to the
/// slot's tx bytes counter.
#[allow(clippy::too_many_arguments)]
fn run_migration_job(
    spec: JobSpec,
    path: &Path,
    sender: SenderConfig,
    opts: &RunOptions,
    cancel: &AtomicBool,
    slot: &Slot,
    events: &Events,
    counters: &JobCounters,
) {
    struct Hooks<'a> {
        job_id: u64,
        slot: &'a Slot,
        events: &'a Events,
        wire: u64,
        last: Option<Instant>,
    }
    impl dwcp_migrate::SourceHooks for Hooks<'_> {
        fn progress(&mut self, p: &dwcp_migrate::Progress) {
            if p.wire_bytes > self.wire {
                self.slot.stats.add(Stat::TxBytes, p.wire_bytes - self.wire);
                self.wire = p.wire_bytes;
            }
            let tick = self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200));
            if tick && p.phase == dwcp_migrate::Phase::Sending {
                return;
            }
            self.last = Some(Instant::now());
            emit(
                self.events,
                Event::JobProgress {
                    job_id: self.job_id,
                    bytes_done: p.data_bytes_done,
                    bytes_total: p.image_bytes,
                    rate_bps: p.rate_bps,
                    round: p.round,
                    mode: TransferMode::Unknown,
                    dirty_bytes: p.round_data_bytes,
                },
            );
        }
    }
    let mut cfg = dwcp_migrate::SourceConfig::new(path, spec.job_id);
    cfg.live = spec.max_rounds != 1;
    if spec.max_rounds > 0 {
        cfg.max_rounds = u32::from(spec.max_rounds);
    }
    cfg.scratch = cfg.scratch.join(".dwcp-migrate");
    let mut mover = crate::mover::RunnerMover {
        opts: opts.clone(),
        sender,
        linger: Duration::from_millis(100),
        tally: crate::mover::MoveTally::default(),
    };
    let mut hooks = Hooks {
        job_id: spec.job_id,
        slot,
        events,
        wire: 0,
        last: None,
    };
    let peer = std::net::SocketAddr::V4(opts.io.peer);
    let t_connect = std::time::Instant::now();
    let res = std::net::TcpStream::connect_timeout(&peer, Duration::from_secs(10))
        .inspect(|_| cfg.policy = dwcp_migrate::patch::policy_for_link(Some(t_connect.elapsed())))
        .map_err(|e| {
            (
                error_code::FAILED,
                format!("control connection to {peer}: {e}"),
            )
        })
        .and_then(|ctl| {
            dwcp_migrate::run_source(&cfg, ctl, &mut mover, &mut hooks, cancel).map_err(|e| {
                let chain = error_chain(&e);
                let code = match &e {
                    dwcp_migrate::MigrateError::Cancelled => 0,
                    dwcp_migrate::MigrateError::Image(_) => error_code::FILE,
                    _ if is_auth_failure(&e) => {
                        counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                        error_code::AUTH
                    }
                    _ => error_code::FAILED,
                };
                (code, chain)
            })
        });
    let (outcome, bytes_done, code) = match res {
        Ok(r) => {
            tracing::info!(
                job_id = spec.job_id,
                rounds = r.rounds.len(),
                data = r.data_bytes,
                wire = r.wire_bytes,
                secs = r.elapsed.as_secs_f64(),
                moves = mover.tally.moves,
                unsealed_moves = mover.tally.unsealed,
                "migration job completed"
            );
            if mover.tally.moves > 0 && mover.tally.unsealed == 0 {
                counters.sealed.fetch_add(1, Ordering::Relaxed);
            }
            (JobOutcome::Completed, r.image_len, 0)
        }
        Err((0, why)) => {
            tracing::warn!(job_id = spec.job_id, why, "migration job cancelled");
            (JobOutcome::Cancelled, hooks.wire, 0)
        }
        Err((code, why)) => {
            slot.stats.add(Stat::Errors, 1);
            tracing::warn!(job_id = spec.job_id, code, why, "migration job failed");
            (JobOutcome::Failed, hooks.wire, code)
        }
    };
    emit(
        events,
        Event::JobFinished {
            job_id: spec.job_id,
            outcome,
            bytes_done,
            error_code: code,
        },
    );
}
