//! Drops the copies of one frame that arrive through several rxpk entries, gateways or sources.
//!
//! The key is the whole PHYPayload (at most ~255 bytes), not a hash, so two different frames can never be
//! merged. Memory is bounded by `max_entries` frames; when full, the oldest entry is forgotten early.
//! Time is passed in by the caller (milliseconds, monotonic), so the type stays pure and testable.

use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub struct Dedup {
    window_ms: u64,
    max_entries: usize,
    seen: HashMap<Vec<u8>, u64>,
    /// Insertion order for expiry: (first seen, frame).
    order: VecDeque<(u64, Vec<u8>)>,
}

impl Dedup {
    pub fn new(window_ms: u64, max_entries: usize) -> Self {
        Dedup { window_ms, max_entries, seen: HashMap::new(), order: VecDeque::new() }
    }

    /// True when the same PHYPayload was already seen less than `window_ms` ago (measured from its first
    /// sighting; copies do not extend the window).
    pub fn is_duplicate(&mut self, now_ms: u64, phy: &[u8]) -> bool {
        self.expire(now_ms);
        if self.seen.contains_key(phy) {
            return true;
        }
        if self.max_entries == 0 {
            return false;
        }
        while self.order.len() >= self.max_entries {
            self.pop_oldest();
        }
        self.seen.insert(phy.to_vec(), now_ms);
        self.order.push_back((now_ms, phy.to_vec()));
        false
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now_ms: u64) {
        // saturating_sub: a clock that steps back must not make entries immortal or panic.
        while self.order.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) >= self.window_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, frame)) = self.order.pop_front() {
            self.seen.remove(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut d = Dedup::new(1000, 16);
        assert!(!d.is_duplicate(0, b"a"));
        assert!(d.is_duplicate(10, b"a"));
        assert!(!d.is_duplicate(10, b"b"));
        assert!(d.is_duplicate(999, b"a"));
        // Copies do not extend the window: at 1000 ms after the first sighting it is new again.
        assert!(!d.is_duplicate(1000, b"a"));
        assert!(d.is_duplicate(1500, b"a"));
        assert!(!d.is_duplicate(2500, b"b"));
        // A clock stepping back does not panic.
        assert!(!d.is_duplicate(5, b"c"));
    }

    #[test]
    fn bounded() {
        let mut d = Dedup::new(60_000, 100);
        for i in 0u32..10_000 {
            assert!(!d.is_duplicate(u64::from(i), &i.to_le_bytes()));
            assert!(d.len() <= 100);
            assert_eq!(d.order.len(), d.seen.len());
        }
        // The newest are still remembered, the oldest were dropped.
        assert!(d.is_duplicate(10_000, &9_999u32.to_le_bytes()));
        assert!(!d.is_duplicate(10_000, &0u32.to_le_bytes()));
        let mut none = Dedup::new(1000, 0);
        assert!(!none.is_duplicate(0, b"a"));
        assert!(!none.is_duplicate(0, b"a"));
        assert!(none.is_empty());
    }
}
