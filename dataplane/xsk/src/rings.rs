//! The four AF_XDP rings as two small traits, and their kernel implementation on `xdpilone`.
//!
//! Owns: copying descriptors in and out of the rings in batches (one acquire/release per
//! batch, not per descriptor) and the `need_wakeup` queries and kicks. The rx side is the
//! fill ring plus the rx ring; the tx side is the tx ring plus the completion ring, so a
//! worker can read received frames and write frames to send at the same time. Multi-buffer
//! packets go on the tx ring whole ([`transmit_whole`]), through `xdpilone`'s cached view of
//! the kernel's consumer: a reservation smaller than the next packet may be stale, and is
//! then used up so the next one sees the ring's real room.
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
    /// Entries in the tx ring.
    pub(crate) tx_size: u32,
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

/// A descriptor ring the user side produces into, seen as `xdpilone` sees it: reservations
/// are served from a cached copy of the consumer's index, refreshed only when the cache shows
/// no free slot at all (libxdp's rule). A reservation can therefore be smaller than the
/// ring's real room, and stays that small until it is used up.
pub trait DescProducer {
    /// Reserves up to `descs.len()` slots, writes `descs[..take(capacity)]` into them and
    /// hands those to the consumer (the rest of the reservation is given back). Returns how
    /// many were written.
    fn put(&mut self, descs: &[XdpDesc], take: impl FnOnce(usize) -> usize) -> usize;
    /// Free slots by the consumer's current index (not the cache); may only grow until the
    /// next `put`.
    fn free_now(&self) -> usize;
}

/// Puts the longest prefix of `descs` that ends on a packet boundary and fits the ring on
/// it; returns its length. A reservation too small for the next (multi-buffer) packet is
/// not taken as "ring full" when the ring really has room for that packet: the stale
/// reservation is filled with the packet's first fragments, which empties the cache, and the
/// next reservation (refreshed, so at least the rest of the packet) completes it. Without
/// that, a cache left with one or two slots below a three-fragment packet would never be
/// refreshed again and the ring would look full forever.
pub fn transmit_whole<P: DescProducer>(ring: &mut P, descs: &[XdpDesc]) -> usize {
    let mut done = 0;
    while done < descs.len() {
        let rest = &descs[done..];
        // Fragments of the next packet.
        let first = rest
            .iter()
            .position(|d| d.options & crate::XDP_PKT_CONTD == 0)
            .map_or(rest.len(), |i| i + 1);
        let room = ring.free_now();
        let n = ring.put(rest, |cap| {
            let k = whole_packets(rest, cap);
            if k == 0 && cap > 0 && room >= first {
                // Stale cache: the first `cap < first` fragments now, the rest in the next
                // round, from a refreshed reservation with room for them.
                cap
            } else {
                k
            }
        });
        if n == 0 {
            break;
        }
        done += n;
    }
    // A packet started above always had the ring's real room behind it, so it was
    // finished: the count ends on a packet boundary.
    debug_assert_eq!(whole_packets(descs, done), done, "a packet was put in part");
    done
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

impl DescProducer for KernelTx {
    #[inline]
    fn put(&mut self, descs: &[XdpDesc], take: impl FnOnce(usize) -> usize) -> usize {
        let mut w = self.tx.transmit(to_u32(descs.len()));
        let k = take(w.capacity() as usize).min(w.capacity() as usize);
        if k == 0 {
            return 0;
        }
        let n = w.insert(descs[..k].iter().copied());
        w.commit();
        n as usize
    }

    #[inline]
    fn free_now(&self) -> usize {
        self.tx_size.saturating_sub(self.tx.pending()) as usize
    }
}

impl TxRings for KernelTx {
    #[inline]
    fn transmit(&mut self, descs: &[XdpDesc]) -> usize {
        // xdpilone serves reservations from a cached consumer index (see `fill`):
        // `transmit_whole` retries short reservations and drains a stale one that is too
        // small for a multi-buffer packet.
        transmit_whole(self, descs)
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
