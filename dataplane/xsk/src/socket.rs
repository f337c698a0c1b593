//! Opening a real AF_XDP socket on `(interface, queue)` with its own UMEM.
//!
//! Owns: the set-up sequence on `xdpilone` (UMEM registration, fill/completion and rx/tx
//! ring sizes, bind with need_wakeup; zero-copy tried first only when configured, then copy
//! mode; `XDP_USE_SG` for multi-buffer when configured; the size of the tx frame runs for
//! packets longer than one frame, `tx_max_len`) and the socket fd that goes into
//! the XDP program's XSKMAP. The result is an [`XskPort`] whose field order drops rings and
//! socket before the UMEM mapping, so `xdpilone::Umem::new`'s "keep the area alive"
//! contract holds by construction.
//! Does not: attach XDP programs or fill the XSKMAP (`dwcp-ebpf`), or pin the thread (call
//! [`XskSocket::open`] on the pinned worker thread so the UMEM is first touched there).

use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};

use xdpilone::{IfInfo, Socket, SocketConfig, Umem, UmemConfig};

use crate::FRAME_SIZE;
use crate::error::{XskError, errno_io};
use crate::numa::NumaPolicy;
use crate::port::XskPort;
use crate::rings::{KernelRx, KernelTx};
use crate::umem::{UmemArea, UmemOptions};

/// `sockaddr_xdp.flags` bit for multi-buffer (`XDP_USE_SG`).
const XDP_USE_SG: u16 = 1 << 4;

/// Configuration of one AF_XDP socket.
#[derive(Debug, Clone)]
pub struct XskConfig {
    /// Interface name.
    pub ifname: String,
    /// NIC queue id.
    pub queue: u32,
    /// UMEM frames in total (half receive, half transmit).
    pub frames: u32,
    /// Entries in each of the four rings (power of two).
    pub ring_size: u32,
    /// Descriptors per batch.
    pub batch: usize,
    /// Try zero-copy first (falls back to copy mode if the driver refuses).
    pub zero_copy: bool,
    /// Bind with `XDP_USE_SG` so packets larger than a frame use several (jumbo frames).
    pub multi_buffer: bool,
    /// Longest packet to be written in place with [`crate::TxBatch::try_push_with_run`]:
    /// above [`FRAME_SIZE`], the tx frames are handed out in runs of
    /// `ceil(tx_max_len / FRAME_SIZE)` contiguous frames (every packet then takes one run).
    /// 0 (or at most one frame): single frames.
    pub tx_max_len: usize,
    /// Try hugepages for the UMEM.
    pub hugepages: bool,
    /// NUMA node for the UMEM; `None`: the node of the current CPU.
    pub numa_node: Option<u32>,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            ifname: String::new(),
            queue: 0,
            frames: 4096,
            ring_size: 2048,
            batch: 64,
            zero_copy: false,
            multi_buffer: false,
            tx_max_len: 0,
            hugepages: true,
            numa_node: None,
        }
    }
}

/// Which bind mode the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Driver zero-copy.
    ZeroCopy,
    /// Copy mode (generic path, e.g. veth).
    Copy,
}

/// Facts about an open socket.
#[derive(Debug, Clone, Copy)]
pub struct SocketInfo {
    /// Bind mode the kernel accepted.
    pub mode: BindMode,
    /// Socket fd (for the XSKMAP).
    pub fd: RawFd,
    /// Whether the UMEM got hugepages.
    pub hugepages: bool,
    /// NUMA node of the UMEM.
    pub node: Option<u32>,
    /// Multi-buffer enabled.
    pub multi_buffer: bool,
}

/// Frames per tx run for packets of up to `tx_max_len` bytes (1: single frames).
pub(crate) fn tx_run_frames(tx_max_len: usize) -> u32 {
    u32::try_from(tx_max_len.div_ceil(FRAME_SIZE as usize).max(1)).unwrap_or(u32::MAX)
}

/// A real AF_XDP socket with its UMEM.
pub type XskSocket = XskPort<KernelRx, KernelTx>;

struct Keep {
    _umem: Umem,
}

impl XskPort<KernelRx, KernelTx> {
    /// Opens and binds a socket; see the module docs. Returns the port and facts about it.
    /// With `zero_copy` a zero-copy bind is tried first; when it fails (the driver has no
    /// zero-copy support) the whole socket is set up again in copy mode, since a socket's
    /// rings cannot be created twice.
    pub fn open(cfg: &XskConfig) -> Result<(Self, SocketInfo), XskError> {
        if cfg.zero_copy {
            match Self::open_in(cfg, BindMode::ZeroCopy) {
                Ok(r) => return Ok(r),
                Err(e) => tracing::info!(
                    ifname = %cfg.ifname, queue = cfg.queue, error = %e,
                    "AF_XDP zero-copy bind refused, using copy mode"
                ),
            }
        }
        Self::open_in(cfg, BindMode::Copy)
    }

    /// The best bind mode `cfg`'s interface and queue accept, found with a small socket
    /// (256 frames of ordinary pages, opened and closed again; zero-copy tried first). A few
    /// milliseconds, against the ~100 ms of a full port with its program attached. An error
    /// means AF_XDP is not usable there at all.
    pub fn probe_bind_mode(cfg: &XskConfig) -> Result<BindMode, XskError> {
        let small = XskConfig {
            frames: 256,
            ring_size: 128,
            batch: cfg.batch.min(64),
            hugepages: false,
            ..cfg.clone()
        };
        if Self::open_in(&small, BindMode::ZeroCopy).is_ok() {
            return Ok(BindMode::ZeroCopy);
        }
        Self::open_in(&small, BindMode::Copy).map(|_| BindMode::Copy)
    }

    fn open_in(cfg: &XskConfig, mode: BindMode) -> Result<(Self, SocketInfo), XskError> {
        let step = |step: &'static str| {
            let ifname = cfg.ifname.clone();
            let queue = cfg.queue;
            move |e: xdpilone::Errno| XskError::Socket {
                step,
                ifname,
                queue,
                source: errno_io(e),
            }
        };
        let tx_run = tx_run_frames(cfg.tx_max_len);
        if tx_run > cfg.frames - cfg.frames / 2 {
            return Err(XskError::Config {
                what: format!(
                    "tx packets of {} bytes need runs of {tx_run} frames; the tx half of {} \
                     UMEM frames holds none",
                    cfg.tx_max_len, cfg.frames
                ),
            });
        }
        if !cfg.ring_size.is_power_of_two() {
            return Err(XskError::Config {
                what: format!("ring size {} is not a power of two", cfg.ring_size),
            });
        }
        let name = CString::new(cfg.ifname.as_str()).map_err(|_| XskError::Config {
            what: format!("interface name {:?} contains NUL", cfg.ifname),
        })?;
        let mut info = IfInfo::invalid();
        info.from_name(&name).map_err(|e| XskError::NoInterface {
            ifname: cfg.ifname.clone(),
            source: errno_io(e),
        })?;
        info.set_queue(cfg.queue);

        let area = UmemArea::new(&UmemOptions {
            frames: cfg.frames,
            hugepages: cfg.hugepages,
            node: cfg.numa_node,
            policy: NumaPolicy::Preferred,
        })?;
        let ucfg = UmemConfig {
            fill_size: cfg.ring_size,
            complete_size: cfg.ring_size,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a page-aligned mapping of exactly `frames * FRAME_SIZE` bytes.
        // It is moved into the returned port after the `Umem` (held in `Keep`) and the rings,
        // so it is unmapped only after they (and with them the socket fd) are dropped.
        let umem = unsafe { Umem::new(ucfg, area.as_raw()) }.map_err(step("UMEM registration"))?;
        let sock = Socket::with_shared(&info, &umem).map_err(step("socket"))?;
        let device = umem
            .fq_cq(&sock)
            .map_err(step("fill/completion ring set-up"))?;
        let ring = NonZeroU32::new(cfg.ring_size);
        let mut flags = SocketConfig::XDP_BIND_NEED_WAKEUP;
        if cfg.multi_buffer {
            flags |= XDP_USE_SG;
        }
        let scfg = SocketConfig {
            rx_size: ring,
            tx_size: ring,
            bind_flags: flags
                | match mode {
                    BindMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
                    BindMode::Copy => SocketConfig::XDP_BIND_COPY,
                },
        };
        let user = umem
            .rx_tx(&sock, &scfg)
            .map_err(step("rx/tx ring set-up"))?;
        umem.bind(&user).map_err(step("bind"))?;
        let rx = user.map_rx().map_err(step("rx ring mmap"))?;
        let tx = user.map_tx().map_err(step("tx ring mmap"))?;
        let (fill, comp) = device.into_parts();
        let fd = user.as_raw_fd();
        let si = SocketInfo {
            mode,
            fd,
            hugepages: area.hugepages(),
            node: area.node(),
            multi_buffer: cfg.multi_buffer,
        };
        let rx_frames = cfg.frames / 2;
        let port = XskPort::assemble(
            area,
            KernelRx { fill, rx },
            KernelTx {
                tx,
                comp,
                tx_size: cfg.ring_size,
            },
            rx_frames,
            tx_run,
            cfg.batch,
            Some(Box::new(Keep { _umem: umem })),
        );
        Ok((port, si))
    }

    fn raw_fd(&self) -> RawFd {
        self.rx_rings().rx.as_raw_fd()
    }

    /// The socket fd, borrowed for as long as the port lives (for the XSKMAP).
    pub fn fd(&self) -> BorrowedFd<'_> {
        let fd = self.raw_fd();
        // SAFETY: the fd belongs to the socket this port owns (kept open by its rings) and
        // the borrow is tied to `&self`, so it stays open for the borrow's lifetime.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_run_sizes_and_a_run_larger_than_the_tx_half_is_refused() {
        assert_eq!(tx_run_frames(0), 1);
        assert_eq!(tx_run_frames(4096), 1);
        assert_eq!(tx_run_frames(4097), 2);
        assert_eq!(tx_run_frames(9000 + 14), 3);
        // 4 frames: 2 for tx, fewer than one run of 3. Refused before any socket exists (no
        // privileges needed, the interface is not even looked up).
        let cfg = XskConfig {
            ifname: "dwcp-nosuch0".into(),
            frames: 4,
            tx_max_len: 9014,
            hugepages: false,
            ..Default::default()
        };
        match XskSocket::open(&cfg) {
            Err(XskError::Config { what }) => assert!(what.contains("runs of 3"), "{what}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
