//! A fake kernel: the four rings as plain memory, driven by a test instead of the kernel.
//!
//! Owns: a single-producer single-consumer ring with the kernel's index arithmetic (free
//! running `u32` producer/consumer, power-of-two size, `mask` indexing, wrap-around) and a
//! [`FakeKernel`] that plays the kernel's side: takes fill addresses and writes "received"
//! packets into those frames (splitting large ones into multi-buffer fragments), consumes the
//! tx ring and returns addresses on the completion ring, and sets the `need_wakeup` flags.
//! The user side of the tx ring reserves slots like `xdpilone` does, from a cached copy of the
//! consumer's index that is refreshed only when it shows no free slot, so the port's tx path
//! meets the same stale reservations it meets on a real socket.
//! With it, [`crate::port::XskPort`] is tested without privileges, like `xdpilone`'s and
//! `s2n-quic-xdp`'s own ring tests.
//!
//! Does not: emulate timing, zero-copy, or the XDP program.

use std::cell::RefCell;
use std::rc::Rc;

use xdpilone::xdp::XdpDesc;

use crate::port::XskPort;
use crate::rings::{DescProducer, RxRings, TxRings, transmit_whole};
use crate::umem::{UmemArea, UmemOptions};
use crate::{FRAME_SIZE, XDP_PKT_CONTD, XskError};

/// A single-producer single-consumer ring in plain memory, with the kernel's index rules.
#[derive(Debug)]
pub struct FakeRing<T> {
    slots: Box<[T]>,
    producer: u32,
    consumer: u32,
    mask: u32,
    /// The `XDP_RING_NEED_WAKEUP` flag.
    pub need_wakeup: bool,
    /// How many wakeups the user side issued.
    pub wakeups: u32,
}

impl<T: Copy + Default> FakeRing<T> {
    /// A ring of `size` (a power of two) entries whose indices start at `start` (use a value
    /// near `u32::MAX` to exercise wrap-around).
    pub fn new(size: u32, start: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        Self {
            slots: vec![T::default(); size as usize].into_boxed_slice(),
            producer: start,
            consumer: start,
            mask: size - 1,
            need_wakeup: false,
            wakeups: 0,
        }
    }

    /// Entries waiting for the consumer.
    pub fn len(&self) -> u32 {
        self.producer.wrapping_sub(self.consumer)
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free entries for the producer.
    pub fn free(&self) -> u32 {
        self.mask + 1 - self.len()
    }

    /// Produces a prefix of `items` (as many as fit); returns the count.
    pub fn produce(&mut self, items: &[T]) -> usize {
        let n = (self.free() as usize).min(items.len());
        for (i, it) in items[..n].iter().enumerate() {
            let idx = self.producer.wrapping_add(i as u32) & self.mask;
            self.slots[idx as usize] = *it;
        }
        self.producer = self.producer.wrapping_add(n as u32);
        n
    }

    /// Consumes up to `out.len()` entries; returns the count.
    pub fn consume(&mut self, out: &mut [T]) -> usize {
        let n = (self.len() as usize).min(out.len());
        for (i, o) in out[..n].iter_mut().enumerate() {
            let idx = self.consumer.wrapping_add(i as u32) & self.mask;
            *o = self.slots[idx as usize];
        }
        self.consumer = self.consumer.wrapping_add(n as u32);
        n
    }
}

type Shared<T> = Rc<RefCell<FakeRing<T>>>;

/// The user side of fake fill + rx rings.
#[derive(Debug)]
pub struct FakeRx {
    fill: Shared<u64>,
    rx: Shared<XdpDesc>,
}

/// The user side of fake tx + completion rings.
#[derive(Debug)]
pub struct FakeTx {
    tx: Shared<XdpDesc>,
    comp: Shared<u64>,
    /// Cached consumer index plus the ring size: reservations end here, like `xdpilone`'s
    /// (and libxdp's) producer cache, refreshed only when it leaves no free slot.
    cached_end: u32,
}

impl RxRings for FakeRx {
    fn fill(&mut self, addrs: &[u64]) -> usize {
        self.fill.borrow_mut().produce(addrs)
    }
    fn receive(&mut self, out: &mut [XdpDesc]) -> usize {
        self.rx.borrow_mut().consume(out)
    }
    fn needs_wakeup(&self) -> bool {
        self.fill.borrow().need_wakeup
    }
    fn wake(&mut self) {
        self.fill.borrow_mut().wakeups += 1;
    }
}

impl DescProducer for FakeTx {
    fn put(&mut self, descs: &[XdpDesc], take: impl FnOnce(usize) -> usize) -> usize {
        let mut ring = self.tx.borrow_mut();
        let mut free = self.cached_end.wrapping_sub(ring.producer);
        if free == 0 {
            self.cached_end = ring.consumer.wrapping_add(ring.mask + 1);
            free = self.cached_end.wrapping_sub(ring.producer);
        }
        let cap = (free as usize).min(descs.len());
        let k = take(cap).min(cap);
        ring.produce(&descs[..k])
    }

    fn free_now(&self) -> usize {
        self.tx.borrow().free() as usize
    }
}

impl TxRings for FakeTx {
    fn transmit(&mut self, descs: &[XdpDesc]) -> usize {
        transmit_whole(self, descs)
    }
    fn complete(&mut self, out: &mut [u64]) -> usize {
        self.comp.borrow_mut().consume(out)
    }
    fn needs_wakeup(&self) -> bool {
        self.tx.borrow().need_wakeup
    }
    fn wake(&mut self) {
        self.tx.borrow_mut().wakeups += 1;
    }
}

/// The kernel's side of the four fake rings.
#[derive(Debug, Clone)]
pub struct FakeKernel {
    /// Fill ring (kernel consumes).
    pub fill: Shared<u64>,
    /// Rx ring (kernel produces).
    pub rx: Shared<XdpDesc>,
    /// Tx ring (kernel consumes).
    pub tx: Shared<XdpDesc>,
    /// Completion ring (kernel produces).
    pub comp: Shared<u64>,
    /// Offset the kernel leaves before packet data in a frame (like `XDP_PACKET_HEADROOM`).
    pub headroom: u64,
}

/// A port on fake rings.
pub type FakePort = XskPort<FakeRx, FakeTx>;

/// Ring sizes and start index of a fake port.
#[derive(Debug, Clone, Copy)]
pub struct FakeConfig {
    /// UMEM frames (half rx, half tx).
    pub frames: u32,
    /// Size of each ring.
    pub ring_size: u32,
    /// Starting index of every ring.
    pub start: u32,
    /// Batch size.
    pub batch: usize,
    /// Longest packet for [`crate::TxBatch::try_push_with_run`] (tx runs, see
    /// [`crate::XskConfig::tx_max_len`]); 0: single tx frames.
    pub tx_max_len: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            frames: 64,
            ring_size: 32,
            start: 0,
            batch: 16,
            tx_max_len: 0,
        }
    }
}

impl FakeKernel {
    /// A port on fake rings, and the kernel side that drives them.
    pub fn port(cfg: FakeConfig) -> Result<(FakePort, FakeKernel), XskError> {
        let area = UmemArea::new(&UmemOptions {
            frames: cfg.frames,
            hugepages: false,
            ..Default::default()
        })?;
        let k = FakeKernel {
            fill: Rc::new(RefCell::new(FakeRing::new(cfg.ring_size, cfg.start))),
            rx: Rc::new(RefCell::new(FakeRing::new(cfg.ring_size, cfg.start))),
            tx: Rc::new(RefCell::new(FakeRing::new(cfg.ring_size, cfg.start))),
            comp: Rc::new(RefCell::new(FakeRing::new(cfg.ring_size, cfg.start))),
            headroom: 256,
        };
        let rx = FakeRx {
            fill: k.fill.clone(),
            rx: k.rx.clone(),
        };
        let tx = FakeTx {
            tx: k.tx.clone(),
            comp: k.comp.clone(),
            cached_end: cfg.start,
        };
        let run = crate::socket::tx_run_frames(cfg.tx_max_len);
        let port = XskPort::assemble(area, rx, tx, cfg.frames / 2, run, cfg.batch, None);
        Ok((port, k))
    }

    /// "Receives" `pkt`: takes fill frames, writes the bytes after `headroom` (fragments of
    /// at most `frame - headroom` bytes) and posts rx descriptors. Returns `false` (a drop,
    /// like the kernel's `rx_fill_ring_empty_descs`) when the fill or rx ring is short.
    pub fn deliver(&self, area: &UmemArea, pkt: &[u8]) -> bool {
        let room = FRAME_SIZE as usize - self.headroom as usize;
        let frags = pkt.len().div_ceil(room).max(1);
        let mut fill = self.fill.borrow_mut();
        let mut rx = self.rx.borrow_mut();
        if (fill.len() as usize) < frags || (rx.free() as usize) < frags {
            fill.need_wakeup = true;
            return false;
        }
        for (i, chunk) in pkt
            .chunks(room)
            .chain((pkt.is_empty()).then_some(&[][..]))
            .enumerate()
        {
            let mut addr = [0u64];
            fill.consume(&mut addr);
            let at = addr[0] + self.headroom;
            // SAFETY: the frame came off the fill ring, so user space gave it to the
            // (fake) kernel and holds no reference to it until it is posted on the rx ring.
            unsafe { area.frame_mut(at, chunk.len()) }.copy_from_slice(chunk);
            let d = XdpDesc {
                addr: at,
                len: chunk.len() as u32,
                options: if i + 1 < frags { XDP_PKT_CONTD } else { 0 },
            };
            rx.produce(&[d]);
        }
        true
    }

    /// "Transmits" everything on the tx ring: returns the packets (fragments joined) and
    /// posts their frames on the completion ring.
    pub fn drain_tx(&self, area: &UmemArea) -> Vec<Vec<u8>> {
        let mut tx = self.tx.borrow_mut();
        let mut comp = self.comp.borrow_mut();
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut d = [XdpDesc::default()];
        while comp.free() > 0 && tx.consume(&mut d) == 1 {
            // SAFETY: the frame is on the tx ring: user space handed it over and will not
            // touch it until it comes back on the completion ring below.
            cur.extend_from_slice(unsafe { area.frame(d[0].addr, d[0].len as usize) });
            comp.produce(&[d[0].addr]);
            if d[0].options & XDP_PKT_CONTD == 0 {
                out.push(std::mem::take(&mut cur));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_index_wraps_around_u32() {
        let mut r: FakeRing<u32> = FakeRing::new(8, u32::MAX - 3);
        let mut out = [0u32; 8];
        let mut next = 0u32;
        let mut expect = 0u32;
        for _ in 0..100 {
            let items: Vec<u32> = (next..next + 5).collect();
            let n = r.produce(&items);
            next += n as u32;
            assert!(r.len() <= 8);
            let m = r.consume(&mut out[..3]);
            for &v in &out[..m] {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        assert!(next > 200, "the ring kept moving across the wrap");
        assert_eq!(r.free() + r.len(), 8);
    }

    #[test]
    fn produce_is_bounded_by_free_space() {
        let mut r: FakeRing<u64> = FakeRing::new(4, 0);
        assert_eq!(r.produce(&[1, 2, 3, 4, 5, 6]), 4);
        assert_eq!(r.produce(&[7]), 0);
        let mut o = [0u64; 2];
        assert_eq!(r.consume(&mut o), 2);
        assert_eq!(o, [1, 2]);
        assert_eq!(r.produce(&[7, 8, 9]), 2);
        let mut o = [0u64; 8];
        assert_eq!(r.consume(&mut o), 4);
        assert_eq!(&o[..4], &[3, 4, 7, 8]);
    }
}
