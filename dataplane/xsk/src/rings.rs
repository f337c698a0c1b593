//! The four AF_XDP rings as two small traits, and their kernel implementation on `xdpilone`.
//!
//! Owns: copying descriptors in and out of the rings in batches (one acquire/release per
//! batch, not per descriptor) and the `need_wakeup` queries and kicks. The rx side is the
//! fill ring plus the rx ring; the tx side is the tx ring plus the completion ring, so a
//! worker can read received frames and write frames to send at the same time.
//! Does not: own frames (see [`crate::port`]) or map rings (`xdpilone` does, and keeps the
//! mappings alive with the socket). [`crate::fake`] implements the same traits over plain
//! memory for unprivileged tests.

use xdpilone::xdp::XdpDesc;
use xdpilone::{CompletionQueue, FillQueue, RingRx, RingTx};

/// Fill + rx rings of one socket.
pub trait RxRings {
    /// Puts frame addresses into the fill ring; returns how many (a prefix) it took.
    fn fill(&mut self, addrs: &[u64]) -> usize;
    /// Moves up to `out.len()` received descriptors out of the rx ring.
    fn receive(&mut self, out: &mut [XdpDesc]) -> usize;
    /// The kernel asked to be woken (flag on the fill ring).
    fn needs_wakeup(&self) -> bool;
    /// Wakes the kernel's rx processing (`poll`).
    fn wake(&mut self);
}

/// Tx + completion rings of one socket.
pub trait TxRings {
    /// Puts descriptors into the tx ring; returns how many (a prefix ending on a packet
    /// boundary, see [`whole_packets`]) it took.
    fn transmit(&mut self, descs: &[XdpDesc]) -> usize;
    /// Moves up to `out.len()` completed frame addresses out of the completion ring.
    fn complete(&mut self, out: &mut [u64]) -> usize;
    /// The kernel asked to be woken (flag on the tx ring).
    fn needs_wakeup(&self) -> bool;
    /// Wakes the kernel's tx processing (`sendto` with `MSG_DONTWAIT`).
    fn wake(&mut self);
}

/// Kernel fill + rx rings.
pub struct KernelRx {
    pub(crate) fill: FillQueue,
    pub(crate) rx: RingRx,
}

/// Kernel tx + completion rings.
pub struct KernelTx {
    pub(crate) tx: RingTx,
    pub(crate) comp: CompletionQueue,
}

impl std::fmt::Debug for KernelRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelRx").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KernelTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelTx").finish_non_exhaustive()
    }
}

/// The longest prefix of `descs` within `room` slots that ends on a packet boundary, so a
/// multi-buffer packet is never handed to the kernel in part.
pub fn whole_packets(descs: &[XdpDesc], room: usize) -> usize {
    if room >= descs.len() {
        return descs.len();
    }
    descs[..room]
        .iter()
        .rposition(|d| d.options & crate::XDP_PKT_CONTD == 0)
        .map_or(0, |i| i + 1)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RxRings for KernelRx {
    #[inline]
    fn fill(&mut self, addrs: &[u64]) -> usize {
        // xdpilone refreshes its cached view of the kernel's consumer only when the cache
        // shows no room at all, so a short reservation may be stale: go round again.
        let mut done = 0;
        while done < addrs.len() {
            let mut w = self.fill.fill(to_u32(addrs.len() - done));
            if w.capacity() == 0 {
                break;
            }
            let n = w.insert(addrs[done..].iter().copied());
            w.commit();
            done += n as usize;
        }
        done
    }

    #[inline]
    fn receive(&mut self, out: &mut [XdpDesc]) -> usize {
        let mut r = self.rx.receive(to_u32(out.len()));
        let mut n = 0;
        while let Some(d) = r.read() {
            out[n] = d;
            n += 1;
        }
        r.release();
        n
    }

    #[inline]
    fn needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    fn wake(&mut self) {
        self.fill.wake();
    }
}

impl TxRings for KernelTx {
    #[inline]
    fn transmit(&mut self, descs: &[XdpDesc]) -> usize {
        // See `fill`: a short reservation may come from a stale cache; retry until the
        // ring really is full.
        let mut done = 0;
        while done < descs.len() {
            let rest = &descs[done..];
            let mut w = self.tx.transmit(to_u32(rest.len()));
            let k = whole_packets(rest, w.capacity() as usize);
            if k == 0 {
                break;
            }
            let n = w.insert(rest[..k].iter().copied());
            w.commit();
            done += n as usize;
        }
        done
    }

    #[inline]
    fn complete(&mut self, out: &mut [u64]) -> usize {
        let mut r = self.comp.complete(to_u32(out.len()));
        let mut n = 0;
        while let Some(a) = r.read() {
            out[n] = a;
            n += 1;
        }
        r.release();
        n
    }

    #[inline]
    fn needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    fn wake(&mut self) {
        self.tx.wake();
    }
}
