//! Pinned per-core dataplane workers.
//!
//! Owns: one thread per configured core, pinned with `core_affinity`, each opening its own
//! port ([`crate::io::open_port`], AF_XDP socket on queue = worker index, or UDP) *after*
//! pinning so its UMEM and pools are first touched on the worker's NUMA node; the
//! polling loop (receive a batch, let the [`Handler`] answer it, let it send more, commit,
//! housekeeping), which busy-polls while traffic flows and, once idle for a short streak,
//! sleeps on the port (`ppoll`) until a datagram arrives or the handler's next timer
//! ([`Handler::next_wakeup`]) is due, and waits for `POLLOUT` when the port's send buffer is
//! full instead of spinning; DWCP validation of every received datagram with `dwcp_proto` (failures
//! counted per [`DropReason`]); per-worker counters published to shared atomics once per
//! batch, with the thread's CPU time; clean shutdown (stop flag, join, sockets closed and unregistered, XDP program
//! detached when the last port is gone).
//! Does not: implement the transfer protocol (the transfer engine implements [`Handler`]),
//! or balance load between workers (the NIC's RSS / the XDP program's queue mapping does).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dwcp_proto::{DropReason, Frame, UnverifiedFrame, parse_frame, parse_frame_unverified};

use crate::io::{self, Backend, IoConfig, IoStats, RxBatch, Selection, SharedProgram, TxBatch};

/// A received, structurally valid DWCP frame.
#[derive(Debug, Clone, Copy)]
pub enum RxFrame<'a> {
    /// Unsealed frame whose CRC32C checked out.
    Checked(Frame<'a>),
    /// SEALED frame: structure valid, AEAD tag still to be verified by the transfer layer.
    Sealed(UnverifiedFrame<'a>),
}

/// The frames of one received batch, validated as they are visited.
#[derive(Debug)]
pub struct RxFrames<'r, 'a> {
    batch: &'r mut RxBatch<'a>,
    local: &'r mut Local,
}

impl RxFrames<'_, '_> {
    /// Calls `f` with every valid frame; invalid datagrams are counted by reason and skipped.
    #[inline]
    pub fn for_each(self, mut f: impl FnMut(RxFrame<'_>)) {
        let local = self.local;
        self.batch.for_each(|d| match parse_frame(d) {
            Ok(fr) => {
                local.frames_ok += 1;
                f(RxFrame::Checked(fr));
            }
            Err(e) if e.reason() == DropReason::Unauthenticated => {
                match parse_frame_unverified(d) {
                    Ok(u) => {
                        local.frames_ok += 1;
                        f(RxFrame::Sealed(u));
                    }
                    Err(e) => local.drops[e.reason().index()] += 1,
                }
            }
            Err(e) => local.drops[e.reason().index()] += 1,
        });
    }

    /// Calls `f` with every raw UDP payload, without DWCP validation (for measurements).
    pub fn for_each_raw(self, f: impl FnMut(&[u8])) {
        self.batch.for_each(f);
    }
}

/// Per-batch work of a worker; the transfer engine implements it.
pub trait Handler: Send + 'static {
    /// A batch arrived; answer through `tx` if needed.
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, tx: &mut TxBatch<'_>);
    /// Called every loop iteration (also when nothing arrived) to send more.
    fn poll_tx(&mut self, _tx: &mut TxBatch<'_>) {}
    /// When the handler next has work that no received datagram brings (a timer, the
    /// pacer's next send): an idle worker sleeps on its port until then (at most
    /// [`MAX_SLEEP`], so it still sees the stop flag), or until a datagram arrives. A time
    /// not in the future keeps the worker polling. `None` means unknown (work may come from
    /// elsewhere, such as another thread): the worker then sleeps no longer than [`NAP`].
    fn next_wakeup(&mut self) -> Option<Instant> {
        None
    }
}

/// Worker pool configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// One worker per entry, pinned to that core id; worker i uses NIC queue i.
    pub cores: Vec<usize>,
    /// Port configuration (shared by all workers).
    pub io: IoConfig,
    /// The worker shares its core (streams, daemon jobs, tests): `yield_now` when an
    /// iteration found nothing to do, and sleep on the port once nothing happened for
    /// [`NAP_AFTER`]. Off (a dedicated core), the worker busy-polls for [`DEDICATED_BUSY`]
    /// before it sleeps.
    pub idle_yield: bool,
}

/// A worker that shares its core (`idle_yield`) sleeps once it found nothing to do for this
/// long: about 300-1000 empty polls, well under any RTT the pacer or the acks wait for.
pub const NAP_AFTER: Duration = Duration::from_micros(50);
/// The idle streak before a worker on a dedicated core sleeps.
pub const DEDICATED_BUSY: Duration = Duration::from_micros(200);
/// The sleep when the handler cannot say when it next has work: a datagram that arrives
/// meanwhile ends it early (the wait is a `ppoll` on the port).
pub const NAP: Duration = Duration::from_micros(20);
/// The longest sleep, so the stop flag is seen within it.
pub const MAX_SLEEP: Duration = Duration::from_millis(5);
/// The longest wait for room when a commit was cut short by a full socket buffer or ring
/// (`POLLOUT` usually ends it much sooner).
const BLOCKED_WAIT: Duration = Duration::from_millis(1);
/// Timer slack of a worker thread (ns): short sleeps end when asked, not up to the
/// default 50 us later.
const TIMER_SLACK_NS: u64 = 1000;
/// A busy worker reads its CPU clock (a system call) once per this many published batches;
/// an idle one at most once per [`IDLE_PUBLISH`].
const CPU_EVERY: u32 = 64;
/// How often an idle worker publishes its counters.
const IDLE_PUBLISH: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Local {
    frames_ok: u64,
    drops: [u64; DropReason::COUNT],
}

/// Counters of one worker, readable from any thread.
#[derive(Debug, Default)]
pub struct WorkerStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_not_ours: AtomicU64,
    rx_oversize: AtomicU64,
    rx_errors: AtomicU64,
    tx_dropped: AtomicU64,
    tx_deferred: AtomicU64,
    tx_oversize: AtomicU64,
    wakeups: AtomicU64,
    cpu_ns: AtomicU64,
    frames_ok: AtomicU64,
    dwcp_drops: [AtomicU64; DropReason::COUNT],
    selection: Mutex<Option<Selection>>,
    pinned: AtomicBool,
}

/// A copy of a worker's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Worker index (= queue).
    pub index: usize,
    /// Core it was asked to run on.
    pub core: usize,
    /// Pinning succeeded.
    pub pinned: bool,
    /// Backend and why.
    pub selection: Option<Selection>,
    /// I/O counters.
    pub io: IoStats,
    /// CPU time of the worker thread since its port opened, ns (read when counters are
    /// published, not per frame; final once the worker stopped).
    pub cpu_ns: u64,
    /// Valid DWCP frames delivered to the handler.
    pub frames_ok: u64,
    /// Datagrams dropped by DWCP validation, per reason (index with [`DropReason::index`]).
    pub dwcp_drops: [u64; DropReason::COUNT],
}

impl WorkerSnapshot {
    /// All DWCP validation drops.
    pub fn dwcp_dropped(&self) -> u64 {
        self.dwcp_drops.iter().sum()
    }

    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dwcp_drops[r.index()]
    }
}

impl WorkerStats {
    fn publish(&self, io: &IoStats, local: &Local, cpu_ns: u64) {
        let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        st(&self.rx_packets, io.rx_packets);
        st(&self.rx_bytes, io.rx_bytes);
        st(&self.tx_packets, io.tx_packets);
        st(&self.tx_bytes, io.tx_bytes);
        st(&self.rx_not_ours, io.rx_not_ours);
        st(&self.rx_oversize, io.rx_oversize);
        st(&self.rx_errors, io.rx_errors);
        st(&self.tx_dropped, io.tx_dropped);
        st(&self.tx_deferred, io.tx_deferred);
        st(&self.tx_oversize, io.tx_oversize);
        st(&self.wakeups, io.wakeups);
        st(&self.cpu_ns, cpu_ns);
        st(&self.frames_ok, local.frames_ok);
        for (a, v) in self.dwcp_drops.iter().zip(local.drops) {
            st(a, v);
        }
    }

    fn snapshot(&self, index: usize, core: usize) -> WorkerSnapshot {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerSnapshot {
            index,
            core,
            pinned: self.pinned.load(Ordering::Relaxed),
            selection: self
                .selection
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            io: IoStats {
                rx_packets: ld(&self.rx_packets),
                rx_bytes: ld(&self.rx_bytes),
                tx_packets: ld(&self.tx_packets),
                tx_bytes: ld(&self.tx_bytes),
                rx_not_ours: ld(&self.rx_not_ours),
                rx_oversize: ld(&self.rx_oversize),
                rx_errors: ld(&self.rx_errors),
                tx_dropped: ld(&self.tx_dropped),
                tx_deferred: ld(&self.tx_deferred),
                tx_oversize: ld(&self.tx_oversize),
                wakeups: ld(&self.wakeups),
            },
            cpu_ns: ld(&self.cpu_ns),
            frames_ok: ld(&self.frames_ok),
            dwcp_drops: std::array::from_fn(|i| ld(&self.dwcp_drops[i])),
        }
    }
}

/// Worker errors.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No core configured.
    #[error("no worker cores configured")]
    NoCores,
    /// A worker could not open its port.
    #[error("worker {index} (core {core}) could not open its port")]
    Port {
        /// Worker index.
        index: usize,
        /// Core.
        core: usize,
        /// Cause.
        #[source]
        source: io::IoError,
    },
    /// Spawning a thread failed.
    #[error("spawning worker {index}")]
    Spawn {
        /// Worker index.
        index: usize,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A worker panicked.
    #[error("worker {index} panicked")]
    Panicked {
        /// Worker index.
        index: usize,
    },
}

/// Running workers. [`Workers::stop`] shuts them down and returns their handlers.
#[derive(Debug)]
pub struct Workers<H> {
    stop: Arc<AtomicBool>,
    threads: Vec<(usize, JoinHandle<H>)>,
    stats: Vec<Arc<WorkerStats>>,
    cores: Vec<usize>,
    program: SharedProgram,
}

impl<H: Handler> Workers<H> {
    /// Starts a single pinned worker on the first configured core, running `handler` (the
    /// one-transfer case: `dwcp send`/`recv`, the stream carrier).
    pub fn spawn_one(cfg: &WorkerConfig, handler: H) -> Result<Self, WorkerError> {
        let one = WorkerConfig {
            cores: cfg.cores.first().copied().into_iter().collect(),
            ..cfg.clone()
        };
        let slot = std::cell::RefCell::new(Some(handler));
        Self::spawn(&one, |_| {
            slot.borrow_mut()
                .take()
                .expect("one core, so the handler is taken once")
        })
    }

    /// Starts one pinned worker per core; returns once every worker has opened its port
    /// (or with the first error, after stopping the others).
    pub fn spawn(
        cfg: &WorkerConfig,
        make_handler: impl Fn(usize) -> H,
    ) -> Result<Self, WorkerError> {
        if cfg.cores.is_empty() {
            return Err(WorkerError::NoCores);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let program = SharedProgram::new();
        let mut w = Workers {
            stop: stop.clone(),
            threads: Vec::new(),
            stats: Vec::new(),
            cores: cfg.cores.clone(),
            program: program.clone(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (index, &core) in cfg.cores.iter().enumerate() {
            let stats = Arc::new(WorkerStats::default());
            let handler = make_handler(index);
            let (stop, stats2, program, io_cfg, ready) = (
                stop.clone(),
                stats.clone(),
                program.clone(),
                cfg.io.clone(),
                ready_tx.clone(),
            );
            let idle_yield = cfg.idle_yield;
            let h = std::thread::Builder::new()
                .name(format!("dwcp-worker-{index}"))
                .spawn(move || {
                    run(RunArgs {
                        index,
                        core,
                        io_cfg,
                        program,
                        stop,
                        stats: stats2,
                        handler,
                        ready,
                        idle_yield,
                    })
                })
                .map_err(|source| WorkerError::Spawn { index, source })?;
            w.threads.push((index, h));
            w.stats.push(stats);
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..cfg.cores.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_err {
            let _ = w.stop_inner();
            return Err(e);
        }
        Ok(w)
    }

    /// Counters of every worker.
    pub fn stats(&self) -> Vec<WorkerSnapshot> {
        self.stats
            .iter()
            .zip(&self.threads)
            .map(|(s, (i, _))| s.snapshot(*i, self.cores[*i]))
            .collect()
    }

    /// The XDP program's counters (if AF_XDP is in use).
    pub fn program_counters(&self) -> Option<dwcp_ebpf::Counters> {
        self.program.counters()
    }

    /// Stops, joins (ports close and unregister on their threads) and detaches the
    /// program. Returns the handlers and the final counters.
    pub fn stop(mut self) -> Result<Vec<(H, WorkerSnapshot)>, WorkerError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<Vec<(H, WorkerSnapshot)>, WorkerError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        let mut err = None;
        for ((index, h), st) in self.threads.drain(..).zip(self.stats.drain(..)) {
            match h.join() {
                Ok(handler) => out.push((handler, st.snapshot(index, self.cores[index]))),
                Err(_) => {
                    err.get_or_insert(WorkerError::Panicked { index });
                }
            }
        }
        self.program.detach();
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl<H> Drop for Workers<H> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, h) in self.threads.drain(..) {
            let _ = h.join();
        }
        self.program.detach();
    }
}

struct RunArgs<H> {
    index: usize,
    core: usize,
    io_cfg: IoConfig,
    program: SharedProgram,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkerStats>,
    handler: H,
    ready: std::sync::mpsc::Sender<Result<(), WorkerError>>,
    idle_yield: bool,
}

fn run<H: Handler>(a: RunArgs<H>) -> H {
    let RunArgs {
        index,
        core,
        io_cfg,
        program,
        stop,
        stats,
        mut handler,
        ready,
        idle_yield,
    } = a;
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !pinned {
        tracing::warn!(worker = index, core, "could not pin worker thread");
    }
    stats.pinned.store(pinned, Ordering::Relaxed);
    let (mut port, sel) = match io::open_port(&io_cfg, index as u32, &program) {
        Ok(p) => p,
        Err(source) => {
            let _ = ready.send(Err(WorkerError::Port {
                index,
                core,
                source,
            }));
            return handler;
        }
    };
    tracing::info!(worker = index, core, backend = %sel.kind, detail = %sel.detail, "worker started");
    *stats.selection.lock().unwrap_or_else(|p| p.into_inner()) = Some(sel);
    let _ = ready.send(Ok(()));
    drop(ready);

    if let Err(e) = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS as _) {
        tracing::debug!(worker = index, error = %e, "could not lower the timer slack");
    }
    let cpu0 = thread_cpu_ns();
    let cpu = || thread_cpu_ns().saturating_sub(cpu0);
    let batch = io_cfg.batch;
    let busy_for = if idle_yield {
        NAP_AFTER
    } else {
        DEDICATED_BUSY
    };
    let mut local = Local::default();
    let mut cpu_ns = 0;
    let mut busy: u32 = 0;
    let mut idle_since: Option<Instant> = None;
    let mut next_idle_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (mut rx, mut tx) = port.batches(batch);
        let got = !rx.is_empty();
        if got {
            handler.on_rx(
                RxFrames {
                    batch: &mut rx,
                    local: &mut local,
                },
                &mut tx,
            );
        }
        rx.release();
        handler.poll_tx(&mut tx);
        let sent = tx.staged() > 0;
        tx.commit();
        port.poll();
        if got || sent {
            busy = busy.wrapping_add(1);
            if busy.is_multiple_of(CPU_EVERY) {
                cpu_ns = cpu();
            }
            stats.publish(&port.stats(), &local, cpu_ns);
            idle_since = None;
            if !got && port.tx_blocked() {
                // The socket buffer or tx ring is full and what it kept waits: sleep until
                // there is room (or a datagram arrives) instead of retrying at once.
                port.wait(BLOCKED_WAIT, true);
            }
            continue;
        }
        let now = Instant::now();
        if now >= next_idle_publish {
            cpu_ns = cpu();
            stats.publish(&port.stats(), &local, cpu_ns);
            next_idle_publish = now + IDLE_PUBLISH;
        }
        let since = *idle_since.get_or_insert(now);
        if now - since < busy_for {
            if idle_yield {
                // A yield alone still leaves the core busy: a thread that shares it (the
                // migration's encoder or applier, the other appliance of a lab) gets only its
                // fair share. After a short idle streak the worker sleeps instead.
                std::thread::yield_now();
            }
            continue;
        }
        let timeout = match handler.next_wakeup() {
            Some(t) => t.saturating_duration_since(now).min(MAX_SLEEP),
            None => NAP,
        };
        if !timeout.is_zero() {
            port.wait(timeout, false);
        } else if idle_yield {
            std::thread::yield_now();
        }
    }
    // Let what is in flight leave before the socket closes: completions, and datagrams a
    // full socket buffer or ring kept.
    for _ in 0..100 {
        let tx = port.tx_batch();
        let left = tx.staged();
        tx.commit();
        port.poll();
        if left > 0 && port.tx_blocked() {
            port.wait(Duration::from_micros(100), true);
        }
    }
    stats.publish(&port.stats(), &local, cpu());
    drop(port);
    handler
}

/// CPU time of the calling thread, ns (0 if the clock cannot be read).
pub(crate) fn thread_cpu_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
