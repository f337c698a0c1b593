//! A set of disjoint half-open `u64` ranges (sequence numbers, chunk indices, byte ranges).
//!
//! Owns merge-on-insert bookkeeping only; no allocation policy beyond a `BTreeMap`.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Insert `r`, merging with overlapping or adjacent ranges. Returns how many values were new.
    ///
    /// No allocation: the common case (extending the range that ends at `r.start`, i.e.
    /// in-order arrival) is one tree lookup and an in-place update.
    pub fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.start >= r.end {
            return 0;
        }
        // Fast path: `r` extends (or lies inside) the range before it, and no range starts
        // within `(r.start, r.end]`.
        if let Some((&s, e)) = self.map.range_mut(..=r.start).next_back()
            && *e >= r.start
        {
            let old_end = *e;
            if r.end <= old_end {
                return 0;
            }
            let next_start = self
                .map
                .range(s + 1..)
                .next()
                .map(|(&ns, _)| ns)
                .unwrap_or(u64::MAX);
            if next_start > r.end {
                // re-borrow: the lookup above ended the first borrow
                if let Some(e) = self.map.get_mut(&s) {
                    *e = r.end;
                }
                return r.end - old_end;
            }
        }
        let (mut start, mut end) = (r.start, r.end);
        let mut overlap = 0u64;
        // the range before `r.start` that touches it, then every range starting in [start, end]
        if let Some((&s, &e)) = self.map.range(..r.start).next_back()
            && e >= r.start
        {
            overlap += e.min(r.end).saturating_sub(s.max(r.start));
            start = start.min(s);
            end = end.max(e);
            self.map.remove(&s);
        }
        while let Some((&s, &e)) = self.map.range(r.start..=r.end).next() {
            overlap += e.min(r.end).saturating_sub(s.max(r.start));
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
        (r.end - r.start) - overlap
    }
    /// True if `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        self.map
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &e)| v < e)
    }
    /// True if all of `r` is in the set.
    pub fn contains_range(&self, r: &Range<u64>) -> bool {
        r.start >= r.end
            || self
                .map
                .range(..=r.start)
                .next_back()
                .is_some_and(|(_, &e)| r.end <= e)
    }
    /// Remove everything below `v`.
    pub fn remove_below(&mut self, v: u64) {
        while let Some((&s, &e)) = self.map.first_key_value() {
            if s >= v {
                break;
            }
            self.map.pop_first();
            if e > v {
                self.map.insert(v, e);
                break;
            }
        }
    }
    /// Ranges in increasing order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }
    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// First range, if any.
    pub fn first(&self) -> Option<Range<u64>> {
        self.map.iter().next().map(|(&s, &e)| s..e)
    }
    /// Total number of values covered.
    pub fn total(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_counts_new() {
        let mut s = RangeSet::default();
        assert_eq!(s.insert(0..5), 5);
        assert_eq!(s.insert(10..15), 5);
        assert_eq!(s.insert(3..12), 5);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..15]);
        assert_eq!(s.insert(15..16), 1);
        assert_eq!(s.insert(2..4), 0);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..16]);
        assert!(s.contains(15) && !s.contains(16));
        s.insert(20..30);
        s.remove_below(25);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![25..30]);
        assert!(s.contains_range(&(26..30)));
        assert!(!s.contains_range(&(24..30)));
    }

    #[test]
    fn insert_counts_against_brute_force() {
        let mut s = RangeSet::default();
        let mut bits = [false; 200];
        let mut x: u64 = 12345;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = x % 190;
            let b = a + (x >> 20) % 10 + 1;
            let expect = (a..b).filter(|&i| !bits[i as usize]).count() as u64;
            for i in a..b {
                bits[i as usize] = true;
            }
            assert_eq!(s.insert(a..b), expect);
        }
        let total = bits.iter().filter(|b| **b).count() as u64;
        assert_eq!(s.total(), total);
    }
}
