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
    pub fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.start >= r.end {
            return 0;
        }
        let (mut start, mut end) = (r.start, r.end);
        let mut touching: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &e)) = self.map.range(..r.start).next_back()
            && e >= r.start
        {
            touching.push((s, e));
        }
        touching.extend(self.map.range(r.start..=r.end).map(|(&s, &e)| (s, e)));
        let mut overlap = 0u64;
        for (s, e) in touching {
            overlap += e.min(r.end).saturating_sub(s.max(r.start));
            start = start.min(s);
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
        let below: Vec<(u64, u64)> = self.map.range(..v).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.map.remove(&s);
            if e > v {
                self.map.insert(v, e);
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
