//! A set of `u64` kept as disjoint inclusive ranges: the acknowledged seqs. Acks arrive mostly in seq
//! order, so the set stays a handful of ranges even for millions of seqs.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end (inclusive); ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn contains(&self, v: u64) -> bool {
        self.ranges.range(..=v).next_back().is_some_and(|(_, e)| *e >= v)
    }

    /// Inserts `v`; false if it was there already.
    pub fn insert(&mut self, v: u64) -> bool {
        if self.contains(v) {
            return false;
        }
        let mut start = v;
        let mut end = v;
        if let Some((s, e)) = self.ranges.range(..v).next_back().map(|(s, e)| (*s, *e)) {
            if e.checked_add(1) == Some(v) {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(next) = v.checked_add(1) {
            if let Some(e) = self.ranges.remove(&next) {
                end = e;
            }
        }
        self.ranges.insert(start, end);
        true
    }

    /// Forgets everything below `v`.
    pub fn prune_below(&mut self, v: u64) {
        let mut keep = self.ranges.split_off(&v);
        // A range that starts below `v` and reaches past it keeps its upper part.
        if let Some(e) = self.ranges.values().next_back().copied().filter(|e| *e >= v) {
            keep.insert(v, e);
        }
        self.ranges = keep;
    }

    #[cfg(test)]
    pub fn len_ranges(&self) -> usize {
        self.ranges.len()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    pub fn insert_range(&mut self, s: u64, e: u64) {
        // Ranges in the log are short and few; inserting element-wise would be slow for big ones, so
        // merge as ranges.
        if s > e {
            return;
        }
        let mut start = s;
        let mut end = e;
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..=e.saturating_add(1))
            .rev()
            .take_while(|(_, re)| re.saturating_add(1) >= s)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in overlapping {
            self.ranges.remove(&a);
            start = start.min(a);
            end = end.max(b);
        }
        self.ranges.insert(start, end);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.ranges.len() * 16);
        for (s, e) in &self.ranges {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&e.to_le_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> RangeSet {
        let mut r = RangeSet::default();
        for c in bytes.chunks_exact(16) {
            let (Ok(s), Ok(e)) = (<[u8; 8]>::try_from(&c[..8]), <[u8; 8]>::try_from(&c[8..])) else { continue };
            r.insert_range(u64::from_le_bytes(s), u64::from_le_bytes(e));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_prunes() {
        let mut r = RangeSet::default();
        for v in [5, 7, 6, 1, 2, 10] {
            assert!(r.insert(v));
        }
        assert!(!r.insert(6));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 2), (5, 7), (10, 10)]);
        r.insert_range(3, 4);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 7), (10, 10)]);
        r.prune_below(6);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(6, 7), (10, 10)]);
        assert!(r.contains(7) && !r.contains(5) && !r.contains(8));
        assert_eq!(RangeSet::decode(&r.encode()), r);
        r.insert_range(8, 9);
        assert_eq!(r.len_ranges(), 1);
    }
}
