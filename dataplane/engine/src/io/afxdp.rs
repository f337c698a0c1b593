//! The AF_XDP backend: one `dwcp-xsk` socket on one NIC queue, registered in the XDP
//! program's XSKMAP, sending and receiving whole Ethernet frames.
//!
//! Owns: opening the socket (on the calling, pinned thread), registering and unregistering
//! it with the shared XDP program, stripping Ethernet/IPv4/UDP on receive (multi-buffer
//! packets are gathered into one reassembly buffer), and writing those headers from a
//! template on send, directly into UMEM frames. Jumbo datagrams (longer than one 4096-byte
//! frame, e.g. MTU 9000) are written in place too: the port's tx frames then come in runs of
//! contiguous frames (`XskConfig::tx_max_len`), the writer gets one slice across a run, and
//! the port stages one multi-buffer descriptor per frame used (`TxBatch::try_push_with_run`),
//! so a datagram is written once and never copied in user space. A full tx ring loses
//! nothing: the port keeps what the ring did not take for the next commit (see
//! `dwcp_xsk::port`), and a push that finds no free frame, run or slot returns `false`
//! before writing, so the caller keeps its datagram.
//! Does not: attach the program itself (see [`super::SharedProgram`]), fragment IP, or
//! parse DWCP.

use std::time::Duration;

use dwcp_xsk::rings::{KernelRx, KernelTx};
use dwcp_xsk::{BindMode, FRAME_SIZE, XskConfig, XskSocket};

use super::net::{self, HDR_LEN, HeaderTemplate};
use super::{
    Backend, BackendKind, IoConfig, IoError, IoStats, RxBatch, RxInner, Selection, SharedProgram,
    TxBatch, TxInner,
};

/// An AF_XDP port. Dropping it unregisters the socket from the XSKMAP, then closes it.
pub struct AfXdpBackend {
    sock: XskSocket,
    tmpl: HeaderTemplate,
    port: u16,
    max_datagram: usize,
    multi_buffer: bool,
    rx_scratch: Box<[u8]>,
    rx_stats: IoStats,
    tx_stats: IoStats,
    program: SharedProgram,
    queue: u32,
}

impl std::fmt::Debug for AfXdpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpBackend")
            .field("queue", &self.queue)
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl AfXdpBackend {
    /// Attaches the program (once per interface), resolves the peer's MAC, opens and binds
    /// the socket on `queue` and registers it in the XSKMAP.
    pub fn open(
        cfg: &IoConfig,
        queue: u32,
        program: &SharedProgram,
    ) -> Result<(Self, Selection), IoError> {
        // A datagram that does not fit one UMEM frame needs multi-buffer (xdp.frags): on
        // by itself for a jumbo MTU, so an MTU 9000 link works without a separate switch.
        let jumbo = cfg.max_datagram + HDR_LEN > FRAME_SIZE as usize;
        let cfg = &IoConfig {
            multi_buffer: cfg.multi_buffer || jumbo,
            ..cfg.clone()
        };
        let attach = program.with(cfg, |p| Ok(p.mode()))?;
        let src = net::own_mac(&cfg.ifname)?;
        let dst = net::resolve_peer_mac(&cfg.ifname, cfg.peer, Duration::from_secs(2))?;
        let (sock, info) = XskSocket::open(&XskConfig {
            ifname: cfg.ifname.clone(),
            queue,
            frames: cfg.frames,
            ring_size: cfg.ring_size,
            batch: cfg.batch,
            zero_copy: cfg.zero_copy,
            multi_buffer: cfg.multi_buffer,
            // Runs of contiguous tx frames for datagrams longer than one frame.
            tx_max_len: cfg.max_datagram + HDR_LEN,
            hugepages: cfg.hugepages,
            numa_node: None,
        })?;
        program.with(cfg, |p| {
            p.register_socket(queue, sock.fd())
                .map_err(|source| IoError::Xdp {
                    ifname: cfg.ifname.clone(),
                    source: Box::new(source),
                })
        })?;
        let buf = cfg.max_datagram + HDR_LEN;
        let sel = Selection {
            kind: BackendKind::AfXdp,
            fallback_reason: None,
            detail: format!(
                "{:?} bind on {} queue {queue}, XDP {attach}, UMEM {} frames node {:?} hugepages {}, multi-buffer {}",
                info.mode, cfg.ifname, cfg.frames, info.node, info.hugepages, info.multi_buffer
            ),
        };
        Ok((
            Self {
                sock,
                tmpl: HeaderTemplate::new(src, dst, cfg.local, cfg.peer),
                port: cfg.local.port(),
                max_datagram: cfg.max_datagram,
                multi_buffer: cfg.multi_buffer,
                rx_scratch: vec![0; buf].into_boxed_slice(),
                rx_stats: IoStats::default(),
                tx_stats: IoStats::default(),
                program: program.clone(),
                queue,
            },
            sel,
        ))
    }

    /// The best AF_XDP bind mode `cfg.ifname` queue `queue` accepts (a small probe socket,
    /// no XDP program attached); an error when AF_XDP is not usable there.
    pub fn probe_bind_mode(cfg: &IoConfig, queue: u32) -> Result<BindMode, IoError> {
        Ok(XskSocket::probe_bind_mode(&XskConfig {
            ifname: cfg.ifname.clone(),
            queue,
            frames: cfg.frames,
            ring_size: cfg.ring_size,
            batch: cfg.batch,
            zero_copy: true,
            multi_buffer: cfg.multi_buffer || cfg.max_datagram + HDR_LEN > FRAME_SIZE as usize,
            tx_max_len: cfg.max_datagram + HDR_LEN,
            hugepages: false,
            numa_node: None,
        })?)
    }

    fn split(&mut self, max: usize) -> (XdpRx<'_>, XdpTx<'_>) {
        let (rx, tx) = self.sock.batches(max);
        (
            XdpRx {
                batch: rx,
                scratch: &mut self.rx_scratch,
                port: self.port,
                stats: &mut self.rx_stats,
            },
            XdpTx {
                batch: tx,
                tmpl: &self.tmpl,
                max_datagram: self.max_datagram,
                multi_buffer: self.multi_buffer,
                stats: &mut self.tx_stats,
                pushed: 0,
            },
        )
    }
}

impl Drop for AfXdpBackend {
    fn drop(&mut self) {
        self.program.unregister(self.queue);
    }
}

impl Backend for AfXdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfXdp
    }

    #[inline]
    fn batches(&mut self, max: usize) -> (RxBatch<'_>, TxBatch<'_>) {
        let (rx, tx) = self.split(max);
        (RxBatch(RxInner::Xdp(rx)), TxBatch(TxInner::Xdp(tx)))
    }

    #[inline]
    fn tx_batch(&mut self) -> TxBatch<'_> {
        TxBatch(TxInner::Xdp(XdpTx {
            batch: self.sock.tx_batch(),
            tmpl: &self.tmpl,
            max_datagram: self.max_datagram,
            multi_buffer: self.multi_buffer,
            stats: &mut self.tx_stats,
            pushed: 0,
        }))
    }

    #[inline]
    fn poll(&mut self) {
        self.sock.poll();
    }

    fn stats(&self) -> IoStats {
        let (r, t) = (&self.rx_stats, &self.tx_stats);
        let s = self.sock.stats();
        IoStats {
            rx_packets: r.rx_packets,
            rx_bytes: r.rx_bytes,
            rx_not_ours: r.rx_not_ours,
            rx_oversize: r.rx_oversize,
            rx_errors: r.rx_errors,
            // The port counts what the ring took, headers included (one set per packet).
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes - s.tx_packets * HDR_LEN as u64,
            tx_dropped: t.tx_dropped,
            tx_deferred: s.tx_ring_full,
            tx_oversize: t.tx_oversize,
            wakeups: s.rx_wakeups + s.tx_wakeups,
        }
    }

    fn tx_blocked(&self) -> bool {
        self.sock.tx_kept() > 0
    }

    fn wait(&mut self, timeout: Duration, want_write: bool) {
        // `poll` on the socket also kicks the kernel when a ring asked for a wakeup
        // (need_wakeup), so a sleeping worker still drives rx and tx. POLLOUT means "tx ring
        // at most half full", which a busy zero-copy driver may not signal promptly: waits
        // for room are kept short.
        let timeout = if want_write {
            timeout.min(MAX_WRITE_WAIT)
        } else {
            timeout
        };
        super::wait_fd(self.sock.fd(), timeout, want_write);
    }
}

/// Longest wait for tx ring room (then the worker commits again).
const MAX_WRITE_WAIT: Duration = Duration::from_micros(100);

pub(crate) struct XdpRx<'a> {
    batch: dwcp_xsk::RxBatch<'a, KernelRx>,
    scratch: &'a mut [u8],
    port: u16,
    stats: &'a mut IoStats,
}

impl XdpRx<'_> {
    #[inline]
    pub(crate) fn for_each(&mut self, mut f: impl FnMut(&[u8])) {
        for p in self.batch.packets() {
            let frame = if p.fragments() == 1 {
                p.first()
            } else {
                match p.copy_to(self.scratch) {
                    Some(n) if !p.truncated() => &self.scratch[..n],
                    _ => {
                        self.stats.rx_oversize += 1;
                        continue;
                    }
                }
            };
            match net::udp_payload(frame, self.port) {
                Ok(payload) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += payload.len() as u64;
                    f(payload);
                }
                Err(_) => self.stats.rx_not_ours += 1,
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

pub(crate) struct XdpTx<'a> {
    batch: dwcp_xsk::TxBatch<'a, KernelTx>,
    tmpl: &'a HeaderTemplate,
    pub(crate) max_datagram: usize,
    multi_buffer: bool,
    stats: &'a mut IoStats,
    /// Datagrams pushed into this batch (the port's kept ones come on top).
    pushed: usize,
}

impl XdpTx<'_> {
    #[inline]
    pub(crate) fn try_push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        if max_len > self.max_datagram {
            self.stats.tx_oversize += 1;
            return None;
        }
        let tmpl = self.tmpl;
        let frame = FRAME_SIZE as usize;
        let done = if HDR_LEN + max_len <= frame {
            self.batch.try_push_with(HDR_LEN + max_len, |buf| {
                let n = write(&mut buf[HDR_LEN..])?.min(max_len);
                tmpl.write(buf, n);
                Some(HDR_LEN + n)
            })?
        } else if self.multi_buffer {
            // In place across a run of contiguous frames (the port's tx runs are sized for
            // `max_datagram`); `None` before `write` when no run or not enough descriptor
            // slots for the longest datagram are free, so a written datagram always fits.
            self.batch.try_push_with_run(HDR_LEN + max_len, |buf| {
                let n = write(&mut buf[HDR_LEN..])?.min(max_len);
                tmpl.write(buf, n);
                Some(HDR_LEN + n)
            })?
        } else {
            self.stats.tx_oversize += 1;
            return None;
        };
        if done {
            self.pushed += 1;
        }
        Some(done)
    }

    pub(crate) fn staged(&self) -> usize {
        self.batch.kept() + self.pushed
    }

    pub(crate) fn commit(self) -> usize {
        self.batch.commit()
    }
}
