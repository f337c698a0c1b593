//! One AF_XDP port: a UMEM, its frame pools, its rings, and the rx/tx batch types.
//!
//! Owns: frame ownership. A frame is at any time in exactly one place: the rx spare pool,
//! the fill ring, an open [`RxBatch`], the tx pool, the tx staging area (an open
//! [`TxBatch`], or frames a commit kept because the tx ring was full; they go first on the
//! next commit), or the tx ring (until it comes back on the completion ring). The first half of the UMEM circulates on
//! the receive path (spare pool -> fill ring -> rx ring -> batch -> spare pool), the second
//! half on the transmit path (tx pool -> batch -> tx ring -> completion ring -> tx pool), so
//! a worker can hold received frames and fill frames to send at the same time without
//! sharing a pool. Because every access to frame bytes goes through a batch that holds the
//! frame, the `unsafe` frame accessors of [`UmemArea`] are called only under that invariant.
//! `need_wakeup` is honoured: `poll`/`sendto` are issued only when the kernel set the flag.
//!
//! Jumbo packets on tx: a port opened with a `tx_max_len` above one frame hands its tx
//! frames out in runs of `ceil(tx_max_len / 4096)` frames that are contiguous in the UMEM
//! mapping (see [`crate::pool::RunPool`]). [`TxBatch::try_push_with_run`] gives the writer
//! one `&mut [u8]` across a whole run, so a packet longer than a frame is written once, in
//! place, and staged as one descriptor per frame it uses (`XDP_PKT_CONTD` on all but the
//! last). Every packet then takes a run (a short one uses its first frame); the run comes
//! back when the last of its handed-out frames has completed, its unused frames with it.
//!
//! Does not: build headers, know about the XDP program, or block. The generic parameters
//! are the ring implementations: the kernel's ([`crate::socket::XskSocket`]) or the plain
//! memory fake kernel ([`crate::fake`]).

use xdpilone::xdp::XdpDesc;

use crate::pool::{FramePool, RunPool};
use crate::rings::{RxRings, TxRings};
use crate::umem::UmemArea;
use crate::{FRAME_SIZE, XDP_PKT_CONTD};

/// Counters of one port, updated by its owning thread only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received (a multi-buffer packet counts once).
    pub rx_packets: u64,
    /// Bytes received (frame bytes, headers included).
    pub rx_bytes: u64,
    /// Packets handed to the tx ring.
    pub tx_packets: u64,
    /// Bytes handed to the tx ring.
    pub tx_bytes: u64,
    /// Packets a commit could not hand over because the tx ring was full: they stay staged
    /// and go first on the next commit (counted once per commit they wait through).
    pub tx_ring_full: u64,
    /// `push` calls refused because no tx frame was free (back-pressure, not a drop).
    pub tx_no_frame: u64,
    /// `poll` calls made because the fill ring asked for a wakeup.
    pub rx_wakeups: u64,
    /// `sendto` calls made because the tx ring asked for a wakeup.
    pub tx_wakeups: u64,
    /// Frames returned twice or outside the UMEM (must stay 0; a bug if not).
    pub bad_frames: u64,
}

pub(crate) struct RxHalf<R> {
    rings: R,
    spare: FramePool,
    /// `batch + MAX_FRAGS` slots: `descs[..carry]` is the start of a multi-buffer packet
    /// whose last fragment had not arrived when the previous batch ended.
    descs: Box<[XdpDesc]>,
    carry: usize,
    batch: usize,
    stats: PortStats,
}

/// Most fragments of one packet carried across a batch boundary (the kernel's
/// `MAX_SKB_FRAGS + 1` is 18).
const MAX_FRAGS: usize = 32;

pub(crate) struct TxHalf<T> {
    rings: T,
    pool: RunPool,
    /// `staged[..kept_descs]`: descriptors a commit could not hand over (tx ring full), with
    /// `kept_packets` packets among them; they open the next batch.
    staged: Box<[XdpDesc]>,
    kept_descs: usize,
    kept_packets: usize,
    comp: Box<[u64]>,
    stats: PortStats,
}

/// An AF_XDP port (socket + UMEM + pools). See the module docs for the frame life cycle.
pub struct XskPort<R, T> {
    rx: RxHalf<R>,
    tx: TxHalf<T>,
    // Kept alive until after the rings; dropped before `area` (field order is drop order).
    _keep: Option<Box<dyn std::any::Any>>,
    area: UmemArea,
}

impl<R, T> std::fmt::Debug for XskPort<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("area", &self.area)
            .field("rx_spare", &self.rx.spare.len())
            .field("tx_free", &self.tx.pool.free_frames())
            .finish_non_exhaustive()
    }
}

#[inline]
fn frame_base(addr: u64) -> u64 {
    addr & !u64::from(FRAME_SIZE - 1)
}

impl<R: RxRings, T: TxRings> XskPort<R, T> {
    /// Assembles a port: frames `0..rx_frames` go to the receive path (and straight into
    /// the fill ring), the rest to the tx pool, in runs of `tx_run` contiguous frames (1:
    /// single frames). `batch` bounds descriptors per batch.
    pub(crate) fn assemble(
        area: UmemArea,
        rx_rings: R,
        tx_rings: T,
        rx_frames: u32,
        tx_run: u32,
        batch: usize,
        keep: Option<Box<dyn std::any::Any>>,
    ) -> Self {
        let total = area.frames();
        let rx_frames = rx_frames.min(total);
        let batch = batch.max(1);
        let mut port = Self {
            rx: RxHalf {
                rings: rx_rings,
                spare: FramePool::range(0, rx_frames, FRAME_SIZE),
                descs: vec![XdpDesc::default(); batch + MAX_FRAGS].into_boxed_slice(),
                carry: 0,
                batch,
                stats: PortStats::default(),
            },
            tx: TxHalf {
                rings: tx_rings,
                pool: RunPool::new(rx_frames, total - rx_frames, FRAME_SIZE, tx_run),
                staged: vec![XdpDesc::default(); batch].into_boxed_slice(),
                kept_descs: 0,
                kept_packets: 0,
                comp: vec![0u64; batch].into_boxed_slice(),
                stats: PortStats::default(),
            },
            _keep: keep,
            area,
        };
        port.rx.refill();
        port
    }

    /// The UMEM area.
    pub fn area(&self) -> &UmemArea {
        &self.area
    }

    /// Largest batch.
    pub fn batch_size(&self) -> usize {
        self.rx.batch
    }

    /// Counters of both directions.
    pub fn stats(&self) -> PortStats {
        let (r, t) = (&self.rx.stats, &self.tx.stats);
        PortStats {
            rx_packets: r.rx_packets,
            rx_bytes: r.rx_bytes,
            rx_wakeups: r.rx_wakeups,
            bad_frames: r.bad_frames + t.bad_frames,
            ..*t
        }
    }

    pub(crate) fn rx_rings(&self) -> &R {
        &self.rx.rings
    }

    /// Free tx frames (not staged, not in the kernel). With runs (see the module docs),
    /// the frames of the free runs.
    pub fn tx_free(&self) -> usize {
        self.tx.pool.free_frames()
    }

    /// Tx frames not in the pool: in the kernel (tx ring or not yet completed) or kept
    /// staged by a commit that found the tx ring full. With runs, whole runs count (a short
    /// packet holds its run's unused frames too).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.pool.busy_frames()
    }

    /// Contiguous frames per tx run: 1 for single frames; more when the port was opened
    /// for packets longer than one frame ([`TxBatch::try_push_with_run`]).
    pub fn tx_run_frames(&self) -> u32 {
        self.tx.pool.run_frames()
    }

    /// Packets the last commit kept because the tx ring was full (sent first by the next).
    pub fn tx_kept(&self) -> usize {
        self.tx.kept_packets
    }

    /// Receives up to `max` descriptors (bounded by the batch size).
    pub fn rx_batch(&mut self, max: usize) -> RxBatch<'_, R> {
        self.rx.receive(&self.area, max)
    }

    /// Reaps completions and opens a tx batch.
    pub fn tx_batch(&mut self) -> TxBatch<'_, T> {
        self.tx.open(&self.area)
    }

    /// Receives up to `max` descriptors and opens a tx batch at once, for handlers that
    /// answer received frames (the two borrow disjoint halves of the port).
    pub fn batches(&mut self, max: usize) -> (RxBatch<'_, R>, TxBatch<'_, T>) {
        let rx = self.rx.receive(&self.area, max);
        let tx = self.tx.open(&self.area);
        (rx, tx)
    }

    /// Housekeeping between batches: reaps completions, refills the fill ring, and kicks
    /// the kernel's tx if frames are waiting and it asked for a wakeup.
    pub fn poll(&mut self) {
        self.tx.reap();
        if self.tx.pool.len() < self.tx.pool.capacity() && self.tx.rings.needs_wakeup() {
            self.tx.stats.tx_wakeups += 1;
            self.tx.rings.wake();
        }
        self.rx.refill();
    }
}

impl<R: RxRings> RxHalf<R> {
    fn refill(&mut self) {
        let n = self.spare.len();
        if n > 0 {
            let rings = &mut self.rings;
            self.spare.give(n, |addrs| rings.fill(addrs));
        }
    }

    fn receive<'a>(&'a mut self, area: &'a UmemArea, max: usize) -> RxBatch<'a, R> {
        let carry = self.carry;
        let max = max.min(self.batch).min(self.descs.len() - carry);
        let n = if max == 0 {
            0
        } else {
            self.rings.receive(&mut self.descs[carry..carry + max])
        };
        if n == 0 && max > 0 && self.rings.needs_wakeup() {
            self.stats.rx_wakeups += 1;
            self.rings.wake();
        }
        let total = carry + n;
        // Only whole packets are handed out; a trailing partial chain waits for the rest.
        let complete = self.descs[..total]
            .iter()
            .rposition(|d| d.options & XDP_PKT_CONTD == 0)
            .map_or(0, |i| i + 1);
        let complete = if total - complete >= MAX_FRAGS {
            // A chain this long cannot be a real packet: hand it out (it is reported as
            // truncated) rather than stall the ring.
            total
        } else {
            complete
        };
        let mut packets = 0;
        let mut bytes = 0;
        for d in &self.descs[carry..total] {
            if d.options & XDP_PKT_CONTD == 0 {
                packets += 1;
            }
            bytes += u64::from(d.len);
        }
        self.stats.rx_packets += packets;
        self.stats.rx_bytes += bytes;
        RxBatch {
            half: self,
            area,
            n: complete,
            total,
        }
    }
}

/// Received frames, held by user space until [`RxBatch::release`] gives them back to the
/// fill ring (dropping the batch does the same, so frames never leak).
#[must_use = "received frames return to the fill ring only on release()"]
pub struct RxBatch<'a, R: RxRings> {
    half: &'a mut RxHalf<R>,
    area: &'a UmemArea,
    /// Descriptors of whole packets (handed out).
    n: usize,
    /// All descriptors read; `n..total` is carried to the next batch.
    total: usize,
}

impl<R: RxRings> std::fmt::Debug for RxBatch<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxBatch").field("descs", &self.n).finish()
    }
}

impl<'a, R: RxRings> RxBatch<'a, R> {
    /// Number of descriptors (fragments) in the batch.
    pub fn descriptors(&self) -> usize {
        self.n
    }

    /// No descriptor received.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The packets, each one or more fragments (multi-buffer).
    pub fn packets(&self) -> Packets<'_> {
        Packets {
            descs: &self.half.descs[..self.n],
            area: self.area,
        }
    }

    /// Returns the frames to the fill ring (kicking the kernel if it asked).
    pub fn release(self) {
        // Drop does the work.
    }

    fn recycle(&mut self) {
        let half = &mut *self.half;
        for d in &half.descs[..self.n] {
            if !half.spare.push(frame_base(d.addr)) {
                half.stats.bad_frames += 1;
            }
        }
        half.descs.copy_within(self.n..self.total, 0);
        half.carry = self.total - self.n;
        self.n = 0;
        self.total = 0;
        half.refill();
    }
}

impl<R: RxRings> Drop for RxBatch<'_, R> {
    fn drop(&mut self) {
        self.recycle();
    }
}

/// Iterator over the packets of an [`RxBatch`].
#[derive(Debug)]
pub struct Packets<'b> {
    descs: &'b [XdpDesc],
    area: &'b UmemArea,
}

impl<'b> Iterator for Packets<'b> {
    type Item = RxPacket<'b>;

    #[inline]
    fn next(&mut self) -> Option<RxPacket<'b>> {
        if self.descs.is_empty() {
            return None;
        }
        let mut k = 1;
        while self.descs[k - 1].options & XDP_PKT_CONTD != 0 && k < self.descs.len() {
            k += 1;
        }
        let (segs, rest) = self.descs.split_at(k);
        self.descs = rest;
        Some(RxPacket {
            segs,
            area: self.area,
        })
    }
}

/// One received packet: one fragment, or several for a multi-buffer (jumbo) packet.
#[derive(Debug, Clone, Copy)]
pub struct RxPacket<'b> {
    segs: &'b [XdpDesc],
    area: &'b UmemArea,
}

impl<'b> RxPacket<'b> {
    /// Total length over all fragments.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|d| d.len as usize).sum()
    }

    /// Zero length.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of fragments.
    pub fn fragments(&self) -> usize {
        self.segs.len()
    }

    /// The last fragment still announced more (the batch ended mid-packet, or the kernel
    /// produced an inconsistent chain): the packet is incomplete.
    pub fn truncated(&self) -> bool {
        self.segs
            .last()
            .is_some_and(|d| d.options & XDP_PKT_CONTD != 0)
    }

    /// Bytes of fragment `i`.
    #[inline]
    pub fn fragment(&self, i: usize) -> &'b [u8] {
        let d = self.segs[i];
        // SAFETY: the descriptor came from the rx ring and its frame belongs to the open
        // RxBatch this packet borrows from; the kernel does not write it until release.
        unsafe { self.area.frame(d.addr, d.len as usize) }
    }

    /// Bytes of the first (for a normal packet: the only) fragment.
    #[inline]
    pub fn first(&self) -> &'b [u8] {
        self.fragment(0)
    }

    /// Copies the whole packet into `out`; returns the length, or `None` if it does not fit.
    pub fn copy_to(&self, out: &mut [u8]) -> Option<usize> {
        let total = self.len();
        if total > out.len() {
            return None;
        }
        let mut at = 0;
        for i in 0..self.segs.len() {
            let f = self.fragment(i);
            out[at..at + f.len()].copy_from_slice(f);
            at += f.len();
        }
        Some(total)
    }
}

impl<T: TxRings> TxHalf<T> {
    fn reap(&mut self) {
        loop {
            let n = self.rings.complete(&mut self.comp);
            for &a in &self.comp[..n] {
                if !self.pool.give_back(a) {
                    self.stats.bad_frames += 1;
                }
            }
            if n < self.comp.len() {
                break;
            }
        }
    }

    fn open<'a>(&'a mut self, area: &'a UmemArea) -> TxBatch<'a, T> {
        self.reap();
        TxBatch {
            n: self.kept_descs,
            half: self,
            area,
        }
    }
}

/// Frames being written for transmission. [`TxBatch::commit`] puts them on the tx ring
/// (what the ring has no room for stays staged for the next batch); dropping the batch
/// without committing returns the frames pushed into it to the pool unsent (frames an
/// earlier commit kept stay staged).
#[must_use = "staged frames are sent only on commit()"]
pub struct TxBatch<'a, T: TxRings> {
    half: &'a mut TxHalf<T>,
    area: &'a UmemArea,
    n: usize,
}

impl<T: TxRings> std::fmt::Debug for TxBatch<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxBatch").field("staged", &self.n).finish()
    }
}

impl<'a, T: TxRings> TxBatch<'a, T> {
    /// Descriptors staged so far (those an earlier commit kept included).
    pub fn staged(&self) -> usize {
        self.n
    }

    /// Packets an earlier commit kept (tx ring full); they open this batch.
    pub fn kept(&self) -> usize {
        self.half.kept_packets
    }

    /// Descriptor slots left in this batch, bounded by the free tx frames. With runs
    /// every packet takes a whole run, so fewer packets may fit: see
    /// [`TxBatch::try_push_with_run`].
    pub fn room(&self) -> usize {
        (self.half.staged.len() - self.n).min(self.half.pool.free_frames())
    }

    /// Writes one packet of at most `max_len <= 4096` bytes directly into a UMEM frame (with
    /// runs: the first frame of a run): `write` gets the frame and returns the packet
    /// length. Returns `false` (and does not call `write`) when no frame or batch slot is
    /// free or `max_len` is too large.
    #[inline]
    pub fn push_with(&mut self, max_len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.try_push_with(max_len, |b| Some(write(b))) == Some(true)
    }

    /// Like [`TxBatch::push_with`], but `write` may decline: `None` when no frame or slot is
    /// free or `max_len` is too large (`write` not called), `Some(true)` when `write`
    /// returned a length (staged), `Some(false)` when it returned `None` (the frame goes
    /// back to the pool, nothing is staged).
    #[inline]
    pub fn try_push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        if max_len > FRAME_SIZE as usize || self.n == self.half.staged.len() {
            return None;
        }
        let Some(addr) = self.half.pool.pop() else {
            self.half.stats.tx_no_frame += 1;
            return None;
        };
        // SAFETY: `addr` was just taken from the tx pool, so no ring and no other batch holds
        // this frame (or, with runs, its whole run); the slice does not outlive this call.
        let buf = unsafe { self.area.frame_mut(addr, max_len) };
        let Some(len) = write(buf) else {
            if !self.half.pool.unpop(addr) {
                self.half.stats.bad_frames += 1;
            }
            return Some(false);
        };
        self.half.pool.hand_out(addr, 1);
        self.half.staged[self.n] = XdpDesc {
            addr,
            len: len.min(max_len) as u32,
            options: 0,
        };
        self.n += 1;
        Some(true)
    }

    /// Writes one packet of at most `max_len` bytes directly into a run of contiguous UMEM
    /// frames: `write` gets `max_len` bytes spanning `ceil(max_len / 4096)` frames and
    /// returns the packet length (or `None` to decline: the run goes back, nothing is
    /// staged). The packet is staged as one descriptor per frame it uses, all but the last
    /// with `XDP_PKT_CONTD` (more than one needs a socket bound with multi-buffer support);
    /// no byte is copied. `max_len <= 4096` is [`TxBatch::try_push_with`].
    ///
    /// Returns `None` without calling `write` when no run is free, the batch has fewer than
    /// `ceil(max_len / 4096)` descriptor slots left, or `max_len` exceeds one run (a port
    /// opened without `tx_max_len` has runs of one frame). `Some(true)`: staged;
    /// `Some(false)`: `write` declined.
    #[inline]
    pub fn try_push_with_run(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        let fs = FRAME_SIZE as usize;
        if max_len <= fs {
            return self.try_push_with(max_len, write);
        }
        if max_len > self.half.pool.run_bytes()
            || max_len.div_ceil(fs) > self.half.staged.len() - self.n
        {
            return None;
        }
        let Some(base) = self.half.pool.pop() else {
            self.half.stats.tx_no_frame += 1;
            return None;
        };
        // SAFETY: `base` is a run just taken from the tx pool: its `run_frames()` frames,
        // `[base, base + run_bytes())`, are in no ring and no other batch (a run is handed out
        // whole and comes back only when every frame of it that was staged has completed or
        // was returned unsent). They are contiguous because the UMEM is one mapping and a run
        // is consecutive frame indices; `max_len <= run_bytes()` keeps the slice inside the
        // run (and `frame_mut` bounds-checks it against the area). The slice does not outlive
        // this call.
        let buf = unsafe { self.area.frame_mut(base, max_len) };
        let Some(len) = write(buf) else {
            if !self.half.pool.unpop(base) {
                self.half.stats.bad_frames += 1;
            }
            return Some(false);
        };
        let len = len.min(max_len);
        let used = len.div_ceil(fs).max(1);
        let mut at = 0;
        for k in 0..used {
            let chunk = (len - at).min(fs);
            self.half.staged[self.n] = XdpDesc {
                addr: base + at as u64,
                len: chunk as u32,
                options: if k + 1 < used { XDP_PKT_CONTD } else { 0 },
            };
            self.n += 1;
            at += fs;
        }
        self.half.pool.hand_out(base, used as u32);
        Some(true)
    }

    /// Copies the concatenation of `parts` into as many frames as it needs (fragments after
    /// the first carry on with `XDP_PKT_CONTD`; more than one frame needs a socket bound with
    /// multi-buffer support). With runs, the frames come from as many runs as needed. All or
    /// nothing: returns `false` if the frames or slots do not suffice.
    pub fn push_gather(&mut self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let fs = FRAME_SIZE as usize;
        let need = total.div_ceil(fs).max(1);
        let run = self.half.pool.run_frames() as usize;
        if need > self.half.staged.len() - self.n || need.div_ceil(run) > self.half.pool.len() {
            self.half.stats.tx_no_frame += 1;
            return false;
        }
        let (mut part, mut in_part) = (0usize, 0usize);
        let mut left = total;
        let mut base = 0;
        for k in 0..need {
            if k % run == 0 {
                base = self.half.pool.pop().expect("checked above");
                self.half.pool.hand_out(base, (need - k).min(run) as u32);
            }
            let addr = base + ((k % run) * fs) as u64;
            let chunk = left.min(fs);
            // SAFETY: `addr` is a frame of the run (or the single frame) just taken from the
            // tx pool; no ring and no other batch holds it.
            let buf = unsafe { self.area.frame_mut(addr, chunk) };
            let mut at = 0;
            while at < chunk {
                let src = &parts[part][in_part..];
                let m = src.len().min(chunk - at);
                buf[at..at + m].copy_from_slice(&src[..m]);
                at += m;
                in_part += m;
                if in_part == parts[part].len() {
                    part += 1;
                    in_part = 0;
                }
            }
            left -= chunk;
            self.half.staged[self.n] = XdpDesc {
                addr,
                len: chunk as u32,
                options: if k + 1 < need { XDP_PKT_CONTD } else { 0 },
            };
            self.n += 1;
        }
        true
    }

    /// Puts the staged frames on the tx ring and wakes the kernel if it asked. Whole
    /// packets the ring had no room for stay staged, moved to the front, and open the next
    /// batch (counted in `tx_ring_full`). Returns the number of packets handed over.
    pub fn commit(mut self) -> usize {
        let n = self.n;
        let half = &mut *self.half;
        if n == 0 {
            return 0;
        }
        let sent = half.rings.transmit(&half.staged[..n]);
        let mut packets = 0;
        for d in &half.staged[..sent] {
            half.stats.tx_bytes += u64::from(d.len);
            if d.options & XDP_PKT_CONTD == 0 {
                packets += 1;
            }
        }
        half.stats.tx_packets += packets;
        let kept_packets = half.staged[sent..n]
            .iter()
            .filter(|d| d.options & XDP_PKT_CONTD == 0)
            .count();
        half.stats.tx_ring_full += kept_packets as u64;
        half.staged.copy_within(sent..n, 0);
        half.kept_descs = n - sent;
        half.kept_packets = kept_packets;
        // Drop leaves the kept frames alone: they are `staged[..kept_descs]` now.
        self.n = half.kept_descs;
        if half.rings.needs_wakeup() {
            half.stats.tx_wakeups += 1;
            half.rings.wake();
        }
        packets as usize
    }
}

impl<T: TxRings> Drop for TxBatch<'_, T> {
    fn drop(&mut self) {
        // Not committed: the frames pushed into this batch go back (a run with its last
        // frame); kept ones stay.
        let half = &mut *self.half;
        for d in &half.staged[half.kept_descs..self.n] {
            if !half.pool.give_back(d.addr) {
                half.stats.bad_frames += 1;
            }
        }
        self.n = half.kept_descs;
    }
}
