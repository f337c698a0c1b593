//! Frame pools: a fixed-capacity LIFO free list of UMEM frame addresses ([`FramePool`]), and
//! the transmit pool that hands frames out singly or in runs of contiguous frames
//! ([`RunPool`]).
//!
//! Owns: which frames user space holds and may hand out. `pop`/`push` are a bounds check and
//! an array access: no lock, no heap allocation after construction (the array is sized once
//! to the number of frames it manages). LIFO keeps recently used (cache-warm) frames in use.
//! A [`RunPool`] with runs of `k > 1` frames lets a packet longer than one frame be written
//! in place into `k` frames that are contiguous in the UMEM mapping; it counts, per run, the
//! frames handed to the kernel and takes the run back when the last of them returns, in
//! whatever order the completions come.
//! Does not: touch frame contents or know about rings; one pool belongs to one worker, so it
//! is deliberately not `Sync`-shared.

/// A free list of frame base addresses (offsets into the UMEM).
#[derive(Debug)]
pub struct FramePool {
    stack: Box<[u64]>,
    top: usize,
}

impl FramePool {
    /// A pool holding `addrs`; its capacity is their count.
    pub fn new(addrs: impl IntoIterator<Item = u64>) -> Self {
        let stack: Box<[u64]> = addrs.into_iter().collect();
        let top = stack.len();
        Self { stack, top }
    }

    /// A pool of the frames `first..first+count` of a UMEM with `frame_size`-byte frames.
    pub fn range(first: u32, count: u32, frame_size: u32) -> Self {
        Self::new((first..first + count).map(|i| u64::from(i) * u64::from(frame_size)))
    }

    /// Takes a free frame.
    #[inline]
    pub fn pop(&mut self) -> Option<u64> {
        self.top = self.top.checked_sub(1)?;
        Some(self.stack[self.top])
    }

    /// Returns a frame. Returns `false` (and drops nothing into the pool) when the pool is
    /// already full, which means a frame was returned twice: a bug the caller should count.
    #[inline]
    #[must_use]
    pub fn push(&mut self, addr: u64) -> bool {
        match self.stack.get_mut(self.top) {
            Some(slot) => {
                *slot = addr;
                self.top += 1;
                true
            }
            None => false,
        }
    }

    /// Free frames.
    pub fn len(&self) -> usize {
        self.top
    }

    /// No free frame.
    pub fn is_empty(&self) -> bool {
        self.top == 0
    }

    /// Number of frames this pool manages.
    pub fn capacity(&self) -> usize {
        self.stack.len()
    }

    /// The free frames, most recently returned last.
    pub fn as_slice(&self) -> &[u64] {
        &self.stack[..self.top]
    }

    /// Offers up to `max` of the most recently returned frames to `take` (e.g. a fill ring),
    /// which returns how many of them (a prefix of the slice) it accepted; those leave the
    /// pool. Returns that count.
    pub fn give(&mut self, max: usize, take: impl FnOnce(&[u64]) -> usize) -> usize {
        let n = max.min(self.top);
        let start = self.top - n;
        let took = take(&self.stack[start..self.top]).min(n);
        // The accepted prefix leaves; close the gap with the rest (usually nothing to move).
        self.stack.copy_within(start + took..self.top, start);
        self.top -= took;
        took
    }
}

/// The transmit frames of a port: single frames (`run_frames() == 1`, a plain
/// [`FramePool`]), or runs of `k` contiguous frames for packets longer than one frame.
///
/// A run is taken whole ([`RunPool::pop`]), and the frames of it that carry a packet are
/// recorded ([`RunPool::hand_out`]); each of them comes back one by one
/// ([`RunPool::give_back`], from the completion ring or from an unsent batch), and the run
/// returns to the free list with the last one, its unused frames with it. A run popped but
/// not used goes back with [`RunPool::unpop`].
#[derive(Debug)]
pub struct RunPool {
    /// Base addresses of the free runs.
    free: FramePool,
    /// Frames per run (1: single frames).
    run: u32,
    /// Address of the first run's first frame.
    first: u64,
    /// Bytes per run.
    run_bytes: u64,
    /// Per run (`run > 1` only): frames handed out and not given back yet.
    out: Box<[u32]>,
}

impl RunPool {
    /// The frames `first..first+count` of a UMEM with `frame_size`-byte frames (a power of
    /// two), in runs of `run` frames (0 counts as 1). The `count % run` frames at the end
    /// that make no whole run are left unused.
    pub fn new(first: u32, count: u32, frame_size: u32, run: u32) -> Self {
        debug_assert!(frame_size.is_power_of_two());
        let run = run.max(1);
        let runs = count / run;
        let run_bytes = u64::from(run) * u64::from(frame_size);
        let first = u64::from(first) * u64::from(frame_size);
        Self {
            free: FramePool::new((0..u64::from(runs)).map(|i| first + i * run_bytes)),
            run,
            first,
            run_bytes,
            out: if run > 1 {
                vec![0; runs as usize].into_boxed_slice()
            } else {
                Box::default()
            },
        }
    }

    /// Frames per run (1: single frames).
    #[inline]
    pub fn run_frames(&self) -> u32 {
        self.run
    }

    /// Bytes per run.
    #[inline]
    pub fn run_bytes(&self) -> usize {
        self.run_bytes as usize
    }

    /// Takes a free run: the address of its first frame; the other `run_frames() - 1`
    /// follow it contiguously.
    #[inline]
    pub fn pop(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns a run taken with [`RunPool::pop`] none of whose frames was handed out.
    /// `false` means the free list was full: a double return, a bug the caller should count.
    #[inline]
    #[must_use]
    pub fn unpop(&mut self, base: u64) -> bool {
        debug_assert!(self.run == 1 || self.out[self.index(base).unwrap_or(0)] == 0);
        self.free.push(base)
    }

    /// Records that the first `frames` (`1..=run_frames()`) frames of the run at `base`,
    /// just taken with [`RunPool::pop`], now carry a packet: the run comes back when all of
    /// them are given back. Nothing to record for single frames.
    #[inline]
    pub fn hand_out(&mut self, base: u64, frames: u32) {
        if self.run > 1 {
            debug_assert!((1..=self.run).contains(&frames));
            if let Some(i) = self.index(base) {
                debug_assert_eq!(self.out[i], 0, "run {base:#x} handed out twice");
                self.out[i] = frames;
            }
        }
    }

    /// One handed-out frame (any address inside it) came back. The run returns to the free
    /// list with its last frame. `false` means the frame was not handed out (outside the
    /// pool, returned twice, or a full free list): a bug the caller should count.
    #[inline]
    #[must_use]
    pub fn give_back(&mut self, addr: u64) -> bool {
        if self.run == 1 {
            return self.free.push(addr & !(self.run_bytes - 1));
        }
        let Some(i) = self.index(addr) else {
            return false;
        };
        match self.out[i] {
            0 => false,
            1 => {
                self.out[i] = 0;
                self.free.push(self.first + i as u64 * self.run_bytes)
            }
            _ => {
                self.out[i] -= 1;
                true
            }
        }
    }

    /// The run holding `addr`, if it is one of this pool's.
    #[inline]
    fn index(&self, addr: u64) -> Option<usize> {
        let i = usize::try_from(addr.checked_sub(self.first)? / self.run_bytes).ok()?;
        (i < self.out.len()).then_some(i)
    }

    /// Free runs.
    #[inline]
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// No free run.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Number of runs this pool manages.
    pub fn capacity(&self) -> usize {
        self.free.capacity()
    }

    /// Frames in the free runs.
    pub fn free_frames(&self) -> usize {
        self.free.len() * self.run as usize
    }

    /// Frames in the runs that are not free (handed out, or taken and not yet used).
    pub fn busy_frames(&self) -> usize {
        (self.free.capacity() - self.free.len()) * self.run as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifo_and_capacity() {
        let mut p = FramePool::range(2, 3, 4096);
        assert_eq!(p.capacity(), 3);
        assert_eq!(p.pop(), Some(4 * 4096));
        assert_eq!(p.pop(), Some(3 * 4096));
        assert!(p.push(99));
        assert_eq!(p.pop(), Some(99));
        assert_eq!(p.pop(), Some(2 * 4096));
        assert_eq!(p.pop(), None);
        assert!(p.is_empty());
        for a in [1, 2, 3] {
            assert!(p.push(a));
        }
        assert!(
            !p.push(4),
            "a fourth frame in a 3-frame pool is a double free"
        );
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn give_removes_only_the_accepted_prefix() {
        let mut p = FramePool::range(0, 10, 1);
        let mut seen = Vec::new();
        let took = p.give(4, |s| {
            seen.extend_from_slice(s);
            3
        });
        assert_eq!(seen, vec![6, 7, 8, 9]);
        assert_eq!(took, 3);
        assert_eq!(p.len(), 7);
        // 9 was offered but not taken: it is still free, 6..=8 are gone.
        assert_eq!(p.pop(), Some(9));
        assert_eq!(p.pop(), Some(5));
        assert_eq!(p.give(100, |s| s.len()), 5);
        assert!(p.is_empty());
        assert_eq!(p.give(3, |_| 0), 0);
    }

    #[test]
    fn every_frame_once_after_churn() {
        let mut p = FramePool::range(0, 64, 4096);
        let mut held = Vec::new();
        for round in 0..1000u32 {
            if round % 3 == 0 {
                while let Some(a) = p.pop() {
                    held.push(a);
                    if held.len() % 7 == 0 {
                        break;
                    }
                }
            } else if let Some(a) = held.pop() {
                assert!(p.push(a));
            }
        }
        p.give(64, |s| {
            held.extend_from_slice(s);
            s.len()
        });
        held.sort_unstable();
        let want: Vec<u64> = (0..64).map(|i| i * 4096).collect();
        assert_eq!(held, want);
    }

    #[test]
    fn single_frame_run_pool_is_a_frame_pool() {
        let mut p = RunPool::new(2, 3, 4096, 1);
        assert_eq!((p.run_frames(), p.capacity(), p.free_frames()), (1, 3, 3));
        let a = p.pop().unwrap();
        assert_eq!(a, 4 * 4096);
        p.hand_out(a, 1);
        // Any address inside the frame gives it back (rx-style offsets are masked).
        assert!(p.give_back(a + 100));
        assert_eq!(p.pop(), Some(a));
        assert!(p.unpop(a));
        assert_eq!(p.len(), 3);
        assert!(
            !p.give_back(0),
            "a fourth frame in a 3-frame pool is a double free"
        );
    }

    #[test]
    fn runs_are_contiguous_and_the_tail_is_left_out() {
        // 11 frames from frame 8 in runs of 3: three runs, frames 17 and 18 unused.
        let mut p = RunPool::new(8, 11, 4096, 3);
        assert_eq!(
            (p.run_frames(), p.run_bytes(), p.capacity()),
            (3, 3 * 4096, 3)
        );
        assert_eq!(p.free_frames(), 9);
        let mut bases = Vec::new();
        while let Some(b) = p.pop() {
            bases.push(b);
        }
        bases.sort_unstable();
        assert_eq!(bases, vec![8 * 4096, 11 * 4096, 14 * 4096]);
        assert_eq!((p.free_frames(), p.busy_frames()), (0, 9));
        assert_eq!(p.pop(), None, "exhausted: no run");
        assert!(p.is_empty());
        for b in bases {
            assert!(p.unpop(b));
        }
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_run_comes_back_once_with_its_last_frame_in_any_order() {
        let fs = 4096u64;
        let mut p = RunPool::new(0, 9, 4096, 3);
        let a = p.pop().unwrap();
        let b = p.pop().unwrap();
        p.hand_out(a, 3);
        p.hand_out(b, 3);
        assert_eq!(p.len(), 1);
        // Completions of the two packets interleaved and out of order.
        assert!(p.give_back(a + 2 * fs));
        assert!(p.give_back(b));
        assert!(p.give_back(a));
        assert_eq!(p.len(), 1, "no run back before its last frame");
        assert!(p.give_back(b + 2 * fs));
        assert!(p.give_back(a + fs));
        assert_eq!(p.len(), 2, "run a recomposed");
        assert_eq!(
            p.pop(),
            Some(a),
            "LIFO: the run just returned comes out first"
        );
        assert!(p.unpop(a));
        assert!(p.give_back(b + fs));
        assert_eq!(p.len(), 3);
        // Nothing is out any more: every further return is a bug, counted by the caller.
        assert!(!p.give_back(a));
        assert!(!p.give_back(b + fs));
        assert!(!p.give_back(9 * fs), "the unused tail is not the pool's");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_shorter_packet_returns_its_whole_run() {
        let fs = 4096u64;
        let mut p = RunPool::new(4, 6, 4096, 3);
        // One frame of three used (e.g. an ACK in a jumbo run), then two of three.
        let a = p.pop().unwrap();
        p.hand_out(a, 1);
        let b = p.pop().unwrap();
        p.hand_out(b, 2);
        assert_eq!(p.pop(), None);
        assert!(p.give_back(a));
        assert_eq!(p.free_frames(), 3, "all three frames of the run are back");
        assert!(p.give_back(b + fs));
        assert!(p.give_back(b));
        assert_eq!((p.len(), p.free_frames(), p.busy_frames()), (2, 6, 0));
    }

    #[test]
    fn every_run_once_after_churn() {
        let fs = 4096u64;
        let mut p = RunPool::new(64, 200, 4096, 3);
        assert_eq!(p.capacity(), 66);
        // (base, frames used, frames given back so far)
        let mut held: Vec<(u64, u64, u64)> = Vec::new();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if x >> 63 == 0 && !held.is_empty() {
                // Give back one frame of some held run.
                let i = (x >> 8) as usize % held.len();
                let (base, used, back) = &mut held[i];
                assert!(p.give_back(*base + *back * fs));
                *back += 1;
                if back == used {
                    held.swap_remove(i);
                }
            } else if let Some(base) = p.pop() {
                let used = 1 + (x >> 20) % 3;
                p.hand_out(base, used as u32);
                held.push((base, used, 0));
            } else {
                assert!(held.len() == 66, "empty only when every run is held");
            }
        }
        for (base, used, back) in held.drain(..) {
            for f in back..used {
                assert!(p.give_back(base + f * fs));
            }
        }
        let mut all = Vec::new();
        while let Some(b) = p.pop() {
            all.push(b);
        }
        all.sort_unstable();
        let want: Vec<u64> = (0..66).map(|i| (64 + 3 * i) * fs).collect();
        assert_eq!(all, want);
    }
}
