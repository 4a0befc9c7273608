//! When each session next needs time, kept so that a wake costs the due
//! sessions only, not a scan of all of them.
//!
//! A binary heap of (deadline, key) entries with lazy deletion. Each key's
//! owner keeps its current deadline itself (a session, in its own struct)
//! and pushes a new entry only when that changes; entries that no longer
//! match their owner's current deadline are skipped when they reach the
//! top, and swept when they outnumber the live keys, so the heap stays
//! within a small multiple of the number of keys and, once grown,
//! allocates nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Copy + Ord> Deadlines<K> {
    /// Records `key`'s new deadline (its owner now holds `at` as current).
    /// `live` is the number of keys; `current` gives a key's current
    /// deadline (None: the key is gone), for the sweep.
    pub fn push(
        &mut self,
        key: K,
        at: Instant,
        live: usize,
        current: impl Fn(K) -> Option<Instant>,
    ) {
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * live + 16 {
            self.heap
                .retain(|&Reverse((at, key))| current(key) == Some(at));
        }
    }

    /// The earliest current deadline of any key.
    pub fn next(&mut self, current: impl Fn(K) -> Option<Instant>) -> Option<Instant> {
        self.drop_stale(&current);
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A key whose current deadline is at or before `now`. Its owner must
    /// forget that deadline (and push its next one once it is known).
    pub fn pop_due(&mut self, now: Instant, current: impl Fn(K) -> Option<Instant>) -> Option<K> {
        self.drop_stale(&current);
        let &Reverse((at, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some(key)
    }

    fn drop_stale(&mut self, current: &impl Fn(K) -> Option<Instant>) {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if current(key) == Some(at) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    /// Owners' current deadlines, as the SFU keeps them in its sessions.
    #[derive(Default)]
    struct Owners {
        current: HashMap<u32, Instant>,
        d: Deadlines<u32>,
    }

    impl Owners {
        fn set(&mut self, k: u32, at: Instant) {
            if self.current.insert(k, at) != Some(at) {
                let current = &self.current;
                self.d
                    .push(k, at, current.len(), |k| current.get(&k).copied());
            }
        }
        fn pop(&mut self, now: Instant) -> Option<u32> {
            let current = &self.current;
            let k = self.d.pop_due(now, |k| current.get(&k).copied())?;
            self.current.remove(&k);
            Some(k)
        }
        fn next(&mut self) -> Option<Instant> {
            let current = &self.current;
            self.d.next(|k| current.get(&k).copied())
        }
    }

    #[test]
    fn due_keys_come_out_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut o = Owners::default();
        o.set(1, ms(30));
        o.set(2, ms(10));
        o.set(3, ms(20));
        assert_eq!(o.next(), Some(ms(10)));
        assert_eq!(o.pop(ms(5)), None);
        assert_eq!(o.pop(ms(25)), Some(2));
        assert_eq!(o.pop(ms(25)), Some(3));
        assert_eq!(o.pop(ms(25)), None);
        assert_eq!(o.next(), Some(ms(30)));
    }

    #[test]
    fn a_moved_or_removed_deadline_does_not_fire() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut o = Owners::default();
        o.set(1, ms(10));
        o.set(1, ms(50));
        o.set(2, ms(20));
        o.current.remove(&2);
        assert_eq!(o.next(), Some(ms(50)));
        assert_eq!(o.pop(ms(40)), None);
        assert_eq!(o.pop(ms(50)), Some(1));
        assert_eq!(o.next(), None);
    }

    #[test]
    fn the_heap_stays_small_however_often_deadlines_move() {
        let t0 = Instant::now();
        let mut o = Owners::default();
        for i in 0..10_000u64 {
            o.set((i % 8) as u32, t0 + Duration::from_micros(i));
        }
        assert!(o.d.heap.len() <= 2 * 8 + 16 + 1, "{}", o.d.heap.len());
        // The last deadline of each key survived the sweeps.
        let mut due = Vec::new();
        while let Some(k) = o.pop(t0 + Duration::from_secs(1)) {
            due.push(k);
        }
        due.sort();
        assert_eq!(due, (0..8).collect::<Vec<_>>());
    }
}
