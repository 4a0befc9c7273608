//! When each session next needs time, kept so that a wake costs the due
//! sessions only, not a scan of all of them.
//!
//! A binary heap of (deadline, key) entries with lazy deletion: setting a
//! key's deadline pushes a new entry and records it as the key's current
//! one; entries that are no longer current are skipped when they reach the
//! top. Stale entries are swept when they outnumber the live ones, so the
//! heap stays within a small multiple of the number of keys and, once
//! grown, allocates nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    current: HashMap<K, Instant>,
}

impl<K: Copy + Eq + Hash + Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> Deadlines<K> {
    /// Sets `key`'s deadline (replacing any earlier one).
    pub fn set(&mut self, key: K, at: Instant) {
        if self.current.insert(key, at) == Some(at) {
            return; // Already there: nothing changes.
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * self.current.len() + 16 {
            self.sweep();
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: K) {
        self.current.remove(&key);
    }

    /// The earliest deadline of any key.
    pub fn next(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A key whose deadline is at or before `now`, forgotten as it is
    /// returned (whoever handles it sets its next one).
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.drop_stale();
        let Reverse((at, key)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.current.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len()
    }

    fn is_current(&self, at: Instant, key: K) -> bool {
        self.current.get(&key) == Some(&at)
    }

    fn drop_stale(&mut self) {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.is_current(at, key) {
                return;
            }
            self.heap.pop();
        }
    }

    fn sweep(&mut self) {
        let current = &self.current;
        self.heap
            .retain(|Reverse((at, key))| current.get(key) == Some(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_keys_come_out_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set(1u32, ms(30));
        d.set(2, ms(10));
        d.set(3, ms(20));
        assert_eq!(d.next(), Some(ms(10)));
        assert_eq!(d.pop_due(ms(5)), None);
        assert_eq!(d.pop_due(ms(25)), Some(2));
        assert_eq!(d.pop_due(ms(25)), Some(3));
        assert_eq!(d.pop_due(ms(25)), None);
        assert_eq!(d.next(), Some(ms(30)));
    }

    #[test]
    fn a_moved_or_removed_deadline_does_not_fire() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set(1u32, ms(10));
        d.set(1, ms(50));
        d.set(2, ms(20));
        d.remove(2);
        assert_eq!(d.next(), Some(ms(50)));
        assert_eq!(d.pop_due(ms(40)), None);
        assert_eq!(d.pop_due(ms(50)), Some(1));
        assert_eq!(d.next(), None);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn the_heap_stays_small_however_often_deadlines_move() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for i in 0..10_000u64 {
            d.set(i % 8, t0 + Duration::from_micros(i));
        }
        assert_eq!(d.len(), 8);
        assert!(d.heap.len() <= 2 * 8 + 16 + 1, "{}", d.heap.len());
        // The last deadline of each key survived the sweeps.
        let mut due = Vec::new();
        while let Some(k) = d.pop_due(t0 + Duration::from_secs(1)) {
            due.push(k);
        }
        due.sort();
        assert_eq!(due, (0..8).collect::<Vec<_>>());
    }
}
