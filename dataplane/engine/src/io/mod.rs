//! Datagram I/O for one worker: the [`Backend`] trait, its AF_XDP and UDP implementations,
//! and the automatic choice between them.
//!
//! Owns: per-worker ports that receive a batch of UDP payloads into caller-visible buffers
//! and send a batch of UDP payloads to one peer; batching (`recvmmsg`/`sendmmsg`, AF_XDP
//! rings), UDP GSO/GRO, Ethernet/IPv4/UDP headers on the AF_XDP path, and the fallback
//! decision: AF_XDP is tried first (XDP program attach, zero-copy socket bind, XSKMAP
//! registration, peer MAC); on any failure, or when the driver binds in copy mode only
//! ([`AutoDecline`]: UDP with GSO/GRO is faster there), the port uses UDP sockets, logs one
//! line with the reason, and reports backend and reason in [`Selection`].
//! Does not: parse DWCP (the worker does, see `crate::worker`), pin threads, or route
//! (one port talks to one peer on the same link).

pub mod afxdp;
pub mod net;
pub mod udp;

use std::net::SocketAddrV4;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use afxdp::AfXdpBackend;
use dwcp_ebpf::{AttachMode, ProgramConfig, XdpProgram};
use dwcp_xsk::BindMode;
pub use udp::UdpBackend;

/// Which backend a port uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// AF_XDP socket on a NIC queue.
    AfXdp,
    /// Kernel UDP socket.
    Udp,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::AfXdp => "af_xdp",
            BackendKind::Udp => "udp",
        })
    }
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// AF_XDP when it works, else UDP.
    Auto,
    /// AF_XDP or an error.
    AfXdp,
    /// UDP only.
    Udp,
}

/// Configuration of the ports of one interface.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Backend choice.
    pub choice: BackendChoice,
    /// Interface carrying DWCP.
    pub ifname: String,
    /// XDP attach mode.
    pub attach: AttachMode,
    /// Local address and DWCP port (the XDP program steers this port).
    pub local: SocketAddrV4,
    /// Peer address and port.
    pub peer: SocketAddrV4,
    /// UMEM frames per AF_XDP socket.
    pub frames: u32,
    /// AF_XDP ring size.
    pub ring_size: u32,
    /// Datagrams per batch.
    pub batch: usize,
    /// Try AF_XDP zero-copy first.
    pub zero_copy: bool,
    /// AF_XDP multi-buffer (jumbo frames over several UMEM frames).
    pub multi_buffer: bool,
    /// Hugepage UMEM.
    pub hugepages: bool,
    /// Largest UDP payload this port sends or accepts.
    pub max_datagram: usize,
    /// UDP GSO on send.
    pub udp_gso: bool,
    /// UDP GRO on receive.
    pub udp_gro: bool,
}

impl IoConfig {
    /// Defaults for `ifname`, `local -> peer`.
    pub fn new(ifname: &str, local: SocketAddrV4, peer: SocketAddrV4) -> Self {
        Self {
            choice: BackendChoice::Auto,
            ifname: ifname.into(),
            attach: AttachMode::Native,
            local,
            peer,
            frames: 4096,
            ring_size: 2048,
            batch: 64,
            zero_copy: false,
            multi_buffer: false,
            hugepages: true,
            max_datagram: 1472,
            udp_gso: true,
            udp_gro: true,
        }
    }
}

/// Which backend a port got, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The backend in use.
    pub kind: BackendKind,
    /// Why AF_XDP is not in use (None when it is, or when UDP was asked for).
    pub fallback_reason: Option<String>,
    /// Details: bind mode, attach mode, UMEM placement, GSO/GRO.
    pub detail: String,
}

/// I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// XDP program attach or XSKMAP registration failed.
    #[error("XDP program on {ifname}")]
    Xdp {
        /// Interface.
        ifname: String,
        /// Cause (boxed: aya's errors are large).
        #[source]
        source: Box<dwcp_ebpf::LoadError>,
    },
    /// A previous attach attempt on this interface failed.
    #[error("XDP program on {ifname} unavailable: {reason}")]
    XdpUnavailable {
        /// Interface.
        ifname: String,
        /// The first failure.
        reason: String,
    },
    /// AF_XDP socket set-up failed.
    #[error("AF_XDP socket")]
    Xsk(#[from] dwcp_xsk::XskError),
    /// Finding MAC addresses failed.
    #[error("link-layer addresses")]
    Net(#[from] net::NetError),
    /// UDP socket set-up failed.
    #[error("UDP socket {addr}")]
    UdpSocket {
        /// Local address.
        addr: SocketAddrV4,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one port (owned by its worker thread).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams received.
    pub rx_packets: u64,
    /// UDP payload bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// UDP payload bytes sent.
    pub tx_bytes: u64,
    /// Received frames that were not IPv4/UDP to our port (AF_XDP only).
    pub rx_not_ours: u64,
    /// Received datagrams larger than the reassembly buffer (multi-buffer) or truncated.
    pub rx_oversize: u64,
    /// Receive system-call errors.
    pub rx_errors: u64,
    /// Datagrams not sent because the kernel refused them with an error (not a full
    /// buffer). A full socket buffer or tx ring drops nothing: see `tx_deferred`.
    pub tx_dropped: u64,
    /// Times a datagram had to wait for a later commit because the socket buffer or the tx
    /// ring was full (a datagram waiting through three commits counts three).
    pub tx_deferred: u64,
    /// Datagrams refused because they exceed `max_datagram` or a frame without multi-buffer.
    pub tx_oversize: u64,
    /// Kernel wakeups issued (AF_XDP need_wakeup).
    pub wakeups: u64,
}

/// A received batch: UDP payloads, valid until the batch is dropped.
#[must_use = "received frames are recycled when the batch is released"]
pub struct RxBatch<'a>(pub(crate) RxInner<'a>);

pub(crate) enum RxInner<'a> {
    Xdp(afxdp::XdpRx<'a>),
    Udp(udp::UdpRx<'a>),
}

impl std::fmt::Debug for RxBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RxBatch")
    }
}

impl RxBatch<'_> {
    /// Calls `f` with every received UDP payload.
    #[inline]
    pub fn for_each(&mut self, f: impl FnMut(&[u8])) {
        match &mut self.0 {
            RxInner::Xdp(x) => x.for_each(f),
            RxInner::Udp(u) => u.for_each(f),
        }
    }

    /// Nothing was received.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            RxInner::Xdp(x) => x.is_empty(),
            RxInner::Udp(u) => u.is_empty(),
        }
    }

    /// Releases the buffers (frames go back to the fill ring). Dropping does the same.
    pub fn release(self) {}
}

/// Datagrams being written for sending; sent on [`TxBatch::commit`]. What the kernel had no
/// room for (full socket buffer or tx ring) stays staged and goes first on the next commit,
/// so a full port holds a burst and never loses it; datagrams pushed but never committed
/// are discarded when the batch is dropped.
#[must_use = "datagrams are sent only on commit()"]
pub struct TxBatch<'a>(pub(crate) TxInner<'a>);

pub(crate) enum TxInner<'a> {
    Xdp(afxdp::XdpTx<'a>),
    Udp(udp::UdpTx<'a>),
}

impl std::fmt::Debug for TxBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxBatch")
    }
}

impl TxBatch<'_> {
    /// Writes one UDP payload of at most `max_len` bytes in place: `write` fills the buffer
    /// and returns the length. `false` when the batch is full (also when it is still full
    /// of datagrams an earlier commit kept), no buffer is free, or `max_len` is above the
    /// port's limit; then `write` is not called and the caller keeps its datagram.
    #[inline]
    pub fn push_with(&mut self, max_len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.try_push_with(max_len, |b| Some(write(b))) == Some(true)
    }

    /// Like [`TxBatch::push_with`], but `write` may have nothing to write:
    /// * `None`: no room (batch full, no free buffer, or `max_len` above the port's limit);
    ///   `write` was not called;
    /// * `Some(true)`: `write` returned `Some(len)`, a datagram of `len` bytes is staged;
    /// * `Some(false)`: `write` returned `None`; nothing is staged and the buffer goes back
    ///   (no empty datagram is sent).
    ///
    /// So a producer can write straight into the port's buffers:
    /// `tx.try_push_with(mtu, |buf| endpoint.poll_transmit_into(now, buf))`.
    #[inline]
    pub fn try_push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        match &mut self.0 {
            TxInner::Xdp(x) => x.try_push_with(max_len, write),
            TxInner::Udp(u) => u.try_push_with(max_len, write),
        }
    }

    /// Largest UDP payload this port sends (its `max_datagram`).
    pub fn max_datagram(&self) -> usize {
        match &self.0 {
            TxInner::Xdp(x) => x.max_datagram,
            TxInner::Udp(u) => u.max_datagram,
        }
    }

    /// Copies one UDP payload.
    pub fn push(&mut self, payload: &[u8]) -> bool {
        self.push_with(payload.len(), |b| {
            b[..payload.len()].copy_from_slice(payload);
            payload.len()
        })
    }

    /// Datagrams staged (including those an earlier commit kept).
    pub fn staged(&self) -> usize {
        match &self.0 {
            TxInner::Xdp(x) => x.staged(),
            TxInner::Udp(u) => u.staged(),
        }
    }

    /// Sends the staged datagrams; returns how many the kernel took. The rest stay staged
    /// for the next batch (see [`Backend::tx_blocked`]).
    pub fn commit(self) -> usize {
        match self.0 {
            TxInner::Xdp(x) => x.commit(),
            TxInner::Udp(u) => u.commit(),
        }
    }
}

/// A per-worker datagram port.
pub trait Backend {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Receives up to `max` datagrams and opens a tx batch (to answer them).
    fn batches(&mut self, max: usize) -> (RxBatch<'_>, TxBatch<'_>);
    /// Opens a tx batch only.
    fn tx_batch(&mut self) -> TxBatch<'_>;
    /// Housekeeping between batches (completions, fill ring, wakeups).
    fn poll(&mut self);
    /// Counters.
    fn stats(&self) -> IoStats;
    /// The last commit was cut short by a full socket buffer (`EAGAIN`) or tx ring: what it
    /// kept waits in the batch. Wait with `want_write` instead of retrying at once.
    fn tx_blocked(&self) -> bool;
    /// Sleeps until a datagram can be received (or, with `want_write`, the port has room to
    /// send) or `timeout` passed (microsecond precision; a signal also ends it).
    fn wait(&mut self, timeout: Duration, want_write: bool);
}

/// `ppoll` on one descriptor for `POLLIN` (and `POLLOUT` with `want_write`), at most
/// `timeout`. Errors (EINTR) just end the wait: the caller polls the port anyway.
pub(crate) fn wait_fd(fd: BorrowedFd<'_>, timeout: Duration, want_write: bool) {
    use nix::poll::{PollFd, PollFlags, ppoll};
    let mut ev = PollFlags::POLLIN;
    if want_write {
        ev |= PollFlags::POLLOUT;
    }
    let mut fds = [PollFd::new(fd, ev)];
    let _ = ppoll(
        &mut fds,
        Some(nix::sys::time::TimeSpec::from_duration(timeout)),
        None,
    );
}

/// Either backend, chosen at run time.
#[derive(Debug)]
pub enum Port {
    /// AF_XDP.
    AfXdp(Box<AfXdpBackend>),
    /// UDP.
    Udp(Box<UdpBackend>),
}

impl Backend for Port {
    fn kind(&self) -> BackendKind {
        match self {
            Port::AfXdp(b) => b.kind(),
            Port::Udp(b) => b.kind(),
        }
    }
    #[inline]
    fn batches(&mut self, max: usize) -> (RxBatch<'_>, TxBatch<'_>) {
        match self {
            Port::AfXdp(b) => b.batches(max),
            Port::Udp(b) => b.batches(max),
        }
    }
    #[inline]
    fn tx_batch(&mut self) -> TxBatch<'_> {
        match self {
            Port::AfXdp(b) => b.tx_batch(),
            Port::Udp(b) => b.tx_batch(),
        }
    }
    #[inline]
    fn poll(&mut self) {
        match self {
            Port::AfXdp(b) => b.poll(),
            Port::Udp(b) => b.poll(),
        }
    }
    fn stats(&self) -> IoStats {
        match self {
            Port::AfXdp(b) => b.stats(),
            Port::Udp(b) => b.stats(),
        }
    }
    #[inline]
    fn tx_blocked(&self) -> bool {
        match self {
            Port::AfXdp(b) => b.tx_blocked(),
            Port::Udp(b) => b.tx_blocked(),
        }
    }
    fn wait(&mut self, timeout: Duration, want_write: bool) {
        match self {
            Port::AfXdp(b) => b.wait(timeout, want_write),
            Port::Udp(b) => b.wait(timeout, want_write),
        }
    }
}

/// The XDP program of one interface, attached on first use and shared by its ports.
/// Dropping the last clone detaches the program.
#[derive(Debug, Clone)]
pub struct SharedProgram {
    inner: Arc<Mutex<ProgramState>>,
}

#[derive(Debug)]
enum ProgramState {
    NotTried,
    Attached(XdpProgram),
    Failed(String),
}

impl Default for SharedProgram {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedProgram {
    /// Nothing attached yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(ProgramState::NotTried)),
        }
    }

    /// Attaches (once) and runs `f` with the program.
    pub(crate) fn with<T>(
        &self,
        cfg: &IoConfig,
        f: impl FnOnce(&mut XdpProgram) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let ProgramState::NotTried = *st {
            let pcfg = ProgramConfig {
                dwcp_ports: vec![cfg.local.port()],
                relay_ifindex: None,
            };
            *st = match XdpProgram::attach(&cfg.ifname, cfg.attach, &pcfg) {
                Ok(p) => ProgramState::Attached(p),
                Err(e) => ProgramState::Failed(error_chain(&e)),
            };
        }
        match &mut *st {
            ProgramState::Attached(p) => f(p),
            ProgramState::Failed(reason) => Err(IoError::XdpUnavailable {
                ifname: cfg.ifname.clone(),
                reason: reason.clone(),
            }),
            ProgramState::NotTried => unreachable!("attach was just tried"),
        }
    }

    /// The program's counters, if attached.
    pub fn counters(&self) -> Option<dwcp_ebpf::Counters> {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            ProgramState::Attached(p) => p.counters().ok(),
            _ => None,
        }
    }

    /// Removes `queue`'s socket from the XSKMAP, if the program is attached.
    pub(crate) fn unregister(&self, queue: u32) {
        if let ProgramState::Attached(p) =
            &mut *self.inner.lock().unwrap_or_else(|p| p.into_inner())
        {
            let _ = p.unregister_socket(queue);
        }
    }

    /// Detaches the program now (ports that registered sockets must be gone).
    pub fn detach(&self) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *st = ProgramState::NotTried;
    }
}

pub use dwcp_transfer::error_chain;

static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Why [`BackendChoice::Auto`] turned down an AF_XDP socket that did open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoDecline {
    /// The driver binds AF_XDP in copy mode only (veth, most virtual NICs): every frame is
    /// copied between the kernel's buffers and the UMEM, and the kernel's UDP path with
    /// GSO/GRO moves more bytes per core.
    #[error("AF_XDP on {ifname} binds in copy mode only (the driver has no zero-copy)")]
    CopyModeOnly {
        /// Interface.
        ifname: String,
    },
}

/// The measured reason behind [`AutoDecline::CopyModeOnly`] (docs/perf.md, section 2c).
pub const COPY_MODE_REASON: &str = "UDP with GSO/GRO moves about 3x the bytes per core of \
    copy-mode AF_XDP on a veth pair (6.0 vs 2.0 Gbit/s, docs/perf.md 2c); \
    --backend afxdp uses AF_XDP anyway";

/// Opens the port for `queue`: AF_XDP if configured and working, else UDP (see module
/// docs). Call it on the worker thread after pinning, so the UMEM is allocated there.
pub fn open_port(
    cfg: &IoConfig,
    queue: u32,
    program: &SharedProgram,
) -> Result<(Port, Selection), IoError> {
    let reason = match cfg.choice {
        BackendChoice::Udp => None,
        BackendChoice::AfXdp => {
            let (b, sel) = AfXdpBackend::open(cfg, queue, program)?;
            return Ok((Port::AfXdp(Box::new(b)), sel));
        }
        BackendChoice::Auto => match AfXdpBackend::probe_bind_mode(cfg, queue) {
            Ok(BindMode::ZeroCopy) => {
                let zc = IoConfig {
                    zero_copy: true,
                    ..cfg.clone()
                };
                match AfXdpBackend::open(&zc, queue, program) {
                    Ok((b, sel)) => return Ok((Port::AfXdp(Box::new(b)), sel)),
                    Err(e) => Some((error_chain(&e), false)),
                }
            }
            Ok(BindMode::Copy) => {
                let decline = AutoDecline::CopyModeOnly {
                    ifname: cfg.ifname.clone(),
                };
                Some((format!("{decline}: {COPY_MODE_REASON}"), true))
            }
            Err(e) => Some((error_chain(&e), false)),
        },
    };
    let (b, mut sel) = UdpBackend::open(cfg)?;
    if let Some((r, chosen)) = &reason {
        if *chosen {
            tracing::info!(ifname = %cfg.ifname, queue, reason = %r, "using UDP sockets");
        } else if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(ifname = %cfg.ifname, queue, reason = %r, "AF_XDP unavailable, using UDP sockets");
        } else {
            tracing::debug!(ifname = %cfg.ifname, queue, reason = %r, "AF_XDP unavailable, using UDP sockets");
        }
    }
    sel.fallback_reason = reason.map(|(r, _)| r);
    Ok((Port::Udp(Box::new(b)), sel))
}
