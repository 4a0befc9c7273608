//! A publisher's cap: the most it is told to send (REMB), from what its
//! best-served subscriber takes now and what it wants (a better layer its
//! estimate carries). I/O-free: the engine measures, this decides.
//!
//! - What a subscriber receives is covered at once (a raise goes out
//!   at once).
//! - A better layer is paid for only once it has been wanted for a while
//!   (an estimate wobbling over a layer's cost must not lift the cap and
//!   drop it again): such a raise is a *trial*, since the layer may be off
//!   at the publisher.
//! - A lower cap goes out only once it has held for `CAP_LOWER_HOLD` (a
//!   subscriber's estimate dips), except that a trial nobody took is
//!   withdrawn at once, and the next trial waits twice as long.

use crate::limits::{
    CAP_EVERY, CAP_LOWER_HOLD, CAP_MARGIN_PCT, CAP_TRIAL_HOLD_MAX, CAP_TRIAL_MIN, UPGRADE_HOLD,
};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Cap {
    /// Bits per second last sent, and when.
    sent: Option<(u64, Instant)>,
    /// Since when a lower cap than the one sent has held.
    lower_since: Option<Instant>,
    /// Since when a subscriber has wanted a better layer than it receives.
    wanted_since: Option<Instant>,
    /// A raise for a wanted layer nobody receives yet: when, and what the
    /// subscribers then wanted (bits per second).
    trial: Option<(Instant, u64)>,
    /// How long a want must hold before a trial (`UPGRADE_HOLD` when
    /// zero); doubled by each trial withdrawn untaken.
    trial_hold: Duration,
    /// Each layer's bitrate (per track) from before a lowered cap went out:
    /// under the cap the browser throttles its upper layers, and a layer
    /// measured at a throttled rate must not look cheap enough to choose
    /// (which would raise the cap again, and so on). Cleared when the cap
    /// is raised over all of them.
    pub costs: Vec<Vec<u64>>,
}

/// A cap to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb {
    /// Bits per second.
    pub value: u64,
    /// Lower than the last one sent (or the first): the layers' costs are
    /// to be remembered before it throttles them.
    pub lowered: bool,
    /// A trial nobody took, withdrawn.
    pub withdrawn: bool,
}

impl Cap {
    /// How long a want must hold before a trial, now.
    fn want_hold(&self) -> Duration {
        self.trial_hold.max(UPGRADE_HOLD)
    }

    /// The cap to send now, given what the best-served subscriber takes
    /// (`take_now`) and wants (`take_wanted`), bits per second; None:
    /// nothing to send (held back, or repeated less often than
    /// `CAP_EVERY`). What it returns is taken as sent.
    pub fn next(&mut self, now: Instant, take_now: u64, take_wanted: u64) -> Option<Remb> {
        let hold = self.want_hold();
        // A trial ends taken once a subscriber receives about what was
        // wanted (costs count every cheaper layer, now and wanted alike);
        // withdrawn once nobody wants it any more, though not before the
        // browser could resume the layer and a subscriber move up to it.
        let mut withdrawn = false;
        if let Some((at, wanted)) = self.trial {
            if take_now * 10 >= wanted * 9 {
                self.trial = None;
                self.trial_hold = UPGRADE_HOLD;
            } else if take_wanted * 10 < wanted * 9
                && now.saturating_duration_since(at) >= CAP_TRIAL_MIN
            {
                self.trial = None;
                self.trial_hold = (hold * 2).min(CAP_TRIAL_HOLD_MAX);
                self.wanted_since = None;
                withdrawn = true;
            }
        }
        let trying = !withdrawn && take_wanted > take_now && {
            let since = *self.wanted_since.get_or_insert(now);
            now.saturating_duration_since(since) >= self.want_hold()
        };
        if take_wanted <= take_now {
            self.wanted_since = None;
        }
        let take = if trying { take_wanted } else { take_now };
        let cap = take * (100 + CAP_MARGIN_PCT) / 100;
        // No cap yet counts as an infinite one: the first must hold too
        // (every subscriber's estimate starts low and climbs).
        let send = match self.sent {
            Some((sent, _)) if cap >= sent => {
                self.lower_since = None;
                // Raised over what every layer cost: nothing is throttled
                // any more, measurements are true again. (A small raise
                // is not enough: it would let a throttled layer, measured
                // cheap, be chosen.)
                let all: u64 = self.costs.iter().flatten().sum();
                if cap >= all {
                    self.costs.clear();
                }
                true
            }
            _ if withdrawn => true,
            _ => {
                let since = *self.lower_since.get_or_insert(now);
                now.saturating_duration_since(since) >= CAP_LOWER_HOLD
            }
        };
        let (value, due) = match self.sent {
            None if !send => return None,
            Some((sent, at)) if !send => (sent, at + CAP_EVERY <= now),
            Some((sent, at)) if sent == cap => (cap, at + CAP_EVERY <= now),
            _ => (cap, true),
        };
        if !due {
            return None;
        }
        let lowered = self.sent.is_none_or(|(sent, _)| value < sent);
        let raised = self.sent.is_some_and(|(sent, _)| value > sent);
        if raised && trying && self.trial.is_none() {
            self.trial = Some((now, take_wanted));
        }
        self.sent = Some((value, now));
        if value == cap {
            self.lower_since = None;
        }
        Some(Remb {
            value,
            lowered,
            withdrawn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cap stepped once a second (the engine allocates more often; the
    /// repeats are what `CAP_EVERY` lets through): each value sent, kbit/s,
    /// with the second it went out, and the seconds a trial was withdrawn.
    struct Run {
        cap: Cap,
        start: Instant,
        sent: Vec<(u64, u64)>,
        withdrawn: Vec<u64>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                cap: Cap::default(),
                start: Instant::now(),
                sent: Vec::new(),
                withdrawn: Vec::new(),
            }
        }

        /// Seconds `from..to` with the same takes (kbit/s).
        fn run(&mut self, from: u64, to: u64, take_now: u64, take_wanted: u64) {
            for s in from..to {
                let now = self.start + Duration::from_secs(s);
                if let Some(r) = self.cap.next(now, take_now * 1000, take_wanted * 1000) {
                    self.sent.push((s, r.value / 1000));
                    if r.withdrawn {
                        self.withdrawn.push(s);
                    }
                }
            }
        }

        /// The cap in force at second `s`.
        fn at(&self, s: u64) -> Option<u64> {
            self.sent.iter().rev().find(|(t, _)| *t <= s).map(|x| x.1)
        }
    }

    #[test]
    fn a_lower_take_is_capped_only_once_it_has_held() {
        let mut r = Run::new();
        r.run(0, 30, 200, 200);
        assert_eq!(r.sent.first(), Some(&(10, 250)), "{:?}", r.sent);
        // Repeated every second from then on.
        assert_eq!(r.sent.len(), 20);
        // A raise goes at once.
        r.run(30, 32, 400, 400);
        assert_eq!(r.at(30), Some(500));
        // A lower take after it waits again.
        r.run(32, 50, 200, 200);
        assert_eq!(r.at(41), Some(500));
        assert_eq!(r.at(42), Some(250));
    }

    #[test]
    fn a_wanted_layer_is_paid_for_only_after_the_upgrade_hold() {
        let mut r = Run::new();
        r.run(0, 12, 200, 200);
        assert_eq!(r.at(11), Some(250));
        r.run(12, 30, 200, 800);
        assert_eq!(r.at(14), Some(250), "{:?}", r.sent);
        assert_eq!(r.at(15), Some(1000), "{:?}", r.sent);
        // Taken: no trial left, and a later dip waits the lower hold.
        r.run(30, 40, 800, 800);
        r.run(40, 60, 200, 200);
        assert!(r.withdrawn.is_empty());
        assert_eq!(r.at(49), Some(1000), "{:?}", r.sent);
        assert_eq!(r.at(50), Some(250), "{:?}", r.sent);
    }

    /// The browser lab's case 5: a probe through a bursty link reads a
    /// subscriber at 400 kbit/s as about 1 Mbit/s for a few seconds, long
    /// enough to want the middle layer for the upgrade hold, but the layer
    /// never reaches it.
    #[test]
    fn a_trial_nobody_takes_is_withdrawn_at_once_and_the_next_waits_longer() {
        let mut r = Run::new();
        r.run(0, 12, 200, 200);
        // Wanted for 4 s: raised after 3.
        r.run(12, 16, 200, 800);
        assert_eq!(r.at(15), Some(1000), "{:?}", r.sent);
        // The want is gone: lowered 3 s after the raise, not 10.
        r.run(16, 30, 200, 200);
        assert_eq!(r.withdrawn, vec![18], "{:?}", r.sent);
        assert_eq!(r.at(18), Some(250), "{:?}", r.sent);
        // The next want waits 6 s, the one after 12 s.
        r.run(30, 40, 200, 800);
        assert_eq!(r.at(35), Some(250), "{:?}", r.sent);
        assert_eq!(r.at(36), Some(1000), "{:?}", r.sent);
        r.run(40, 50, 200, 200);
        assert_eq!(r.withdrawn, vec![18, 40], "{:?}", r.sent);
        r.run(50, 63, 200, 800);
        assert_eq!(r.at(61), Some(250), "{:?}", r.sent);
        assert_eq!(r.at(62), Some(1000), "{:?}", r.sent);
        // A trial taken puts the hold back to the upgrade hold.
        r.run(63, 70, 800, 800);
        r.run(70, 90, 200, 200);
        assert_eq!(r.at(80), Some(250), "{:?}", r.sent);
        r.run(90, 100, 200, 800);
        assert_eq!(r.at(93), Some(1000), "{:?}", r.sent);
    }

    #[test]
    fn the_hold_between_trials_stops_doubling_at_its_maximum() {
        let mut r = Run::new();
        r.run(0, 12, 200, 200);
        let mut s = 12;
        let mut holds = Vec::new();
        for _ in 0..6 {
            let before = r.sent.len();
            r.run(s, s + 60, 200, 800);
            let raised = r.sent[before..]
                .iter()
                .find(|x| x.1 == 1000)
                .expect("a trial");
            holds.push(raised.0 - s);
            s += 60;
            r.run(s, s + 5, 200, 200);
            s += 5;
        }
        assert_eq!(holds, vec![3, 6, 12, 24, 48, 48]);
    }

    #[test]
    fn a_trial_still_wanted_is_kept() {
        let mut r = Run::new();
        r.run(0, 12, 200, 200);
        // The browser is slow to resume the layer; the subscriber still
        // wants it: the cap stays up.
        r.run(12, 40, 200, 800);
        assert!(r.withdrawn.is_empty());
        assert_eq!(r.at(39), Some(1000), "{:?}", r.sent);
    }
}
