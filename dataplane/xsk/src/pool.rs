//! Frame pool: a fixed-capacity LIFO free list of UMEM frame addresses.
//!
//! Owns: which frames user space holds and may hand out. `pop`/`push` are a bounds check and
//! an array access: no lock, no heap allocation after construction (the array is sized once
//! to the number of frames it manages). LIFO keeps recently used (cache-warm) frames in use.
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
}
