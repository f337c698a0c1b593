//! The UDP fallback backend: one connected kernel UDP socket per worker, batched with
//! `recvmmsg`/`sendmmsg`, UDP GSO on send and GRO on receive when the kernel offers them.
//!
//! Owns: the socket (bound to the local address, connected to the peer, non-blocking,
//! `SO_REUSEPORT` so every worker can bind the same port), its batch buffers
//! (`dwcp_xsk::mmsg`), and the counters. A full socket buffer (`EAGAIN`) loses nothing: the
//! datagrams the kernel did not take stay staged and go first on the next commit, the port
//! reports itself write-blocked ([`Backend::tx_blocked`]) and [`Backend::wait`] sleeps on
//! `POLLOUT`. Does not: parse DWCP.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::Duration;

use dwcp_xsk::mmsg::{self, MmsgRx, MmsgTx};

use super::{
    Backend, BackendKind, IoConfig, IoError, IoStats, RxBatch, RxInner, Selection, TxBatch, TxInner,
};

/// A UDP port.
#[derive(Debug)]
pub struct UdpBackend {
    sock: UdpSocket,
    rx: MmsgRx,
    tx: MmsgTx,
    max_datagram: usize,
    rx_stats: IoStats,
    tx_stats: IoStats,
}

impl UdpBackend {
    /// Binds `cfg.local`, connects to `cfg.peer`, probes GSO/GRO.
    pub fn open(cfg: &IoConfig) -> Result<(Self, Selection), IoError> {
        let err = |source| IoError::UdpSocket {
            addr: cfg.local,
            source,
        };
        let sock = bind_reuseport(cfg).map_err(err)?;
        sock.connect(cfg.peer).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        let (rcv, snd) = set_buffers(&sock, SOCKET_BUFFER);
        let gso = cfg.udp_gso && mmsg::gso_supported(sock.as_fd());
        let gro = cfg.udp_gro && mmsg::enable_gro(sock.as_fd());
        let slot = if gro { 65536 } else { cfg.max_datagram.max(1) };
        let sel = Selection {
            kind: BackendKind::Udp,
            fallback_reason: None,
            detail: format!(
                "UDP socket {} -> {}, recvmmsg/sendmmsg batch {}, GSO {gso}, GRO {gro}, buffers rcv {rcv} snd {snd}",
                cfg.local, cfg.peer, cfg.batch
            ),
        };
        Ok((
            Self {
                sock,
                // A GRO message holds up to 64 KiB: 8 of them (~44 frames each) are a
                // receive batch, so the receiver answers every ~0.5 MB rather than after a
                // whole batch of 64 (4 MB, milliseconds of work: the sender's RTT samples
                // and loss detection would see that delay).
                rx: MmsgRx::new(
                    if gro {
                        cfg.batch.min(GRO_BATCH)
                    } else {
                        cfg.batch
                    },
                    slot,
                ),
                tx: MmsgTx::new(cfg.batch, gso),
                max_datagram: cfg.max_datagram,
                rx_stats: IoStats::default(),
                tx_stats: IoStats::default(),
            },
            sel,
        ))
    }
}

/// GRO messages per receive batch.
const GRO_BATCH: usize = 8;

/// Socket buffer size asked for: bursts of a batch of 64 KiB GSO sends must fit.
const SOCKET_BUFFER: usize = 8 << 20;

/// Raises both socket buffers (forcing past `rmem_max`/`wmem_max` when privileged);
/// returns what the kernel granted.
fn set_buffers(sock: &UdpSocket, size: usize) -> (usize, usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &size);
    }
    if setsockopt(sock, sockopt::SndBufForce, &size).is_err() {
        let _ = setsockopt(sock, sockopt::SndBuf, &size);
    }
    (
        getsockopt(sock, sockopt::RcvBuf).unwrap_or(0),
        getsockopt(sock, sockopt::SndBuf).unwrap_or(0),
    )
}

fn bind_reuseport(cfg: &IoConfig) -> std::io::Result<UdpSocket> {
    mmsg::bind_udp_reuseport(cfg.local)
}

impl Backend for UdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Udp
    }

    fn batches(&mut self, _max: usize) -> (RxBatch<'_>, TxBatch<'_>) {
        let n = match self.rx.recv(self.sock.as_fd()) {
            Ok(n) => n,
            Err(e) => {
                self.rx_stats.rx_errors += 1;
                tracing::debug!(error = %super::error_chain(&e), "recvmmsg");
                0
            }
        };
        let rx = UdpRx {
            rx: &self.rx,
            n,
            stats: &mut self.rx_stats,
        };
        let tx = UdpTx {
            tx: &mut self.tx,
            sock: &self.sock,
            max_datagram: self.max_datagram,
            stats: &mut self.tx_stats,
        };
        (RxBatch(RxInner::Udp(rx)), TxBatch(TxInner::Udp(tx)))
    }

    fn tx_batch(&mut self) -> TxBatch<'_> {
        TxBatch(TxInner::Udp(UdpTx {
            tx: &mut self.tx,
            sock: &self.sock,
            max_datagram: self.max_datagram,
            stats: &mut self.tx_stats,
        }))
    }

    fn poll(&mut self) {}

    fn stats(&self) -> IoStats {
        let (r, t) = (&self.rx_stats, &self.tx_stats);
        IoStats {
            rx_packets: r.rx_packets,
            rx_bytes: r.rx_bytes,
            rx_errors: r.rx_errors,
            rx_oversize: r.rx_oversize,
            ..*t
        }
    }

    fn tx_blocked(&self) -> bool {
        self.tx.blocked()
    }

    fn wait(&mut self, timeout: Duration, want_write: bool) {
        super::wait_fd(self.sock.as_fd(), timeout, want_write);
    }
}

pub(crate) struct UdpRx<'a> {
    rx: &'a MmsgRx,
    n: usize,
    stats: &'a mut IoStats,
}

impl UdpRx<'_> {
    #[inline]
    pub(crate) fn for_each(&mut self, mut f: impl FnMut(&[u8])) {
        for i in 0..self.n {
            let (msg, seg) = self.rx.message(i);
            for d in mmsg::segments(msg, seg) {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += d.len() as u64;
                f(d);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }
}

pub(crate) struct UdpTx<'a> {
    tx: &'a mut MmsgTx,
    sock: &'a UdpSocket,
    pub(crate) max_datagram: usize,
    stats: &'a mut IoStats,
}

impl UdpTx<'_> {
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
        self.tx.try_push_with(max_len, write)
    }

    pub(crate) fn staged(&self) -> usize {
        self.tx.staged()
    }

    pub(crate) fn commit(self) -> usize {
        let out = self.tx.send(self.sock.as_fd());
        if let Some(e) = &out.error {
            tracing::debug!(error = %super::error_chain(e), dropped = out.dropped, "sendmmsg");
        }
        self.stats.tx_packets += out.sent as u64;
        self.stats.tx_bytes += out.sent_bytes as u64;
        self.stats.tx_deferred += out.kept as u64;
        self.stats.tx_dropped += out.dropped as u64;
        out.sent
    }
}

impl Drop for UdpTx<'_> {
    fn drop(&mut self) {
        // Pushed but not committed: discarded. What a commit kept stays staged (after a
        // commit nothing else is left, so this is a no-op then).
        self.tx.discard_unsent_pushes();
    }
}
