//! Which simulcast layer a subscriber's video track receives: the best one
//! its link carries. Pure decisions, no str0m: the SFU feeds in the
//! layers' measured bitrates, the subscriber's bandwidth estimate (str0m's
//! TWCC estimator on its session) and an optional ceiling the client
//! pinned, and switches the track when the answer changes.
//!
//! - Down at once: the layer being sent no longer fits the estimate.
//! - Up with hysteresis: a better layer must fit with headroom for
//!   `UPGRADE_HOLD` before it is taken, so an estimate that wobbles
//!   around a layer's rate does not flip the picture back and forth.
//! - Only layers the publisher is sending are chosen (a browser drops its
//!   upper layers when its own uplink is short).
//! - Layers are ranked by measured bitrate; before any is measured, by the
//!   publisher's order (browsers list them low to high).

use crate::limits::{PROBE_MARGIN_PCT, UPGRADE_HEADROOM_PCT, UPGRADE_HOLD};
use std::time::Instant;

/// One layer as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    /// Measured bitrate, 0 if not measured yet.
    pub bps: u64,
    /// The publisher sends it now.
    pub active: bool,
}

/// The highest layer a client wants on one subscription, whatever its
/// link carries (a thumbnail needs only the lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ceiling {
    Low,
    Mid,
    High,
}

impl Ceiling {
    /// The highest rank it allows among `n` ranked layers.
    fn rank(self, n: usize) -> usize {
        let top = n.saturating_sub(1);
        match self {
            Ceiling::Low => 0,
            Ceiling::Mid => top.min(1),
            Ceiling::High => top,
        }
    }
}

/// The choice state of one subscriber track.
#[derive(Debug, Default)]
pub struct Choice {
    /// Since when a better layer than the target has fitted with headroom.
    better_since: Option<Instant>,
}

impl Choice {
    /// The layer (index into `layers`) the track should receive, given the
    /// one it is set to now (`target`), the bits per second its link
    /// carries for it (None: unknown, no limit) and the client's ceiling.
    /// None: no layer is being sent.
    pub fn choose(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        target: Option<usize>,
        budget: Option<u64>,
        ceiling: Option<Ceiling>,
    ) -> Option<usize> {
        self.choose_with(now, layers, target, budget, ceiling, UPGRADE_HEADROOM_PCT)
    }

    /// `choose`, with the headroom (percent of the budget) a better layer
    /// must leave.
    pub fn choose_with(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        target: Option<usize>,
        budget: Option<u64>,
        ceiling: Option<Ceiling>,
        headroom_pct: u64,
    ) -> Option<usize> {
        let ranked = rank(layers);
        if ranked.is_empty() {
            self.better_since = None;
            return target;
        }
        if ranked.iter().all(|&i| layers[i].bps == 0) {
            // Costs unknown (the first half second): the publisher's first.
            return target.or(Some(ranked[0]));
        }
        let top = ceiling.map_or(ranked.len() - 1, |c| c.rank(ranked.len()));
        let ranked = &ranked[..=top];
        let bps = |i: usize| layers[i].bps;
        let fits = |i: usize| fits(bps(i), budget);
        let fits_well = |i: usize| fits_with(bps(i), budget, headroom_pct);
        // The best layer that fits, or the lowest if none does.
        let best_fitting = ranked.iter().rposition(|&i| fits(i)).unwrap_or(0);
        let Some(current) = target.and_then(|t| ranked.iter().position(|&i| i == t)) else {
            // Not set yet, stopped, or above the ceiling: at once.
            self.better_since = None;
            return Some(ranked[best_fitting]);
        };
        if !fits(ranked[current]) && current > 0 {
            self.better_since = None;
            return Some(ranked[best_fitting.min(current - 1)]);
        }
        let better = ranked.iter().rposition(|&i| fits_well(i));
        match better {
            Some(b) if b > current => {
                let since = *self.better_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= UPGRADE_HOLD {
                    self.better_since = None;
                    return Some(ranked[b]);
                }
            }
            _ => self.better_since = None,
        }
        Some(ranked[current])
    }
}

/// What a track costs the publisher for one subscriber, now and wanted:
/// the layer that subscriber receives (`target`) while its link carries
/// it; and a better one its link carries with the upgrade headroom (sent
/// now or not: a layer the publisher paused under its cap must be able to
/// come back). Each with every cheaper layer (a browser sends its layers
/// from the lowest up). None while a layer is not measured.
pub fn layer_costs(
    layers: &[LayerView],
    target: Option<usize>,
    budget: Option<u64>,
    ceiling: Option<Ceiling>,
) -> Option<(u64, u64)> {
    if layers.iter().any(|l| l.bps == 0) {
        return None;
    }
    let mut rates: Vec<u64> = layers.iter().map(|l| l.bps).collect();
    rates.sort_unstable();
    let top = ceiling.map_or(rates.len() - 1, |c| c.rank(rates.len()));
    let rates = &rates[..=top];
    let current = target
        .and_then(|t| layers.get(t))
        .and_then(|l| rates.iter().rposition(|&r| r == l.bps))
        .filter(|&n| fits(rates[n], budget))
        .unwrap_or(0);
    let better = rates
        .iter()
        .rposition(|&r| fits_well(r, budget))
        .unwrap_or(0);
    let cost = |n: usize| rates[..=n].iter().sum();
    Some((cost(current), cost(current.max(better))))
}

/// Whether `target` is below the best layer the client allows among those
/// sent: a better one is wanted if the link carries it.
pub fn below_top(layers: &[LayerView], target: Option<usize>, ceiling: Option<Ceiling>) -> bool {
    let ranked = rank(layers);
    let Some(at) = target.and_then(|t| ranked.iter().position(|&i| i == t)) else {
        return false;
    };
    at < ceiling.map_or(ranked.len().saturating_sub(1), |c| c.rank(ranked.len()))
}

/// What a subscriber's estimator should sustain (padding fills what media
/// does not) and probe for, receiving `target`: the budget on which the
/// layer ranked just above it fits with the upgrade headroom; at the top,
/// its own rate.
///
/// Padding to no more than the next layer's own rate was not enough: a
/// subscriber padded to 2 Mbit/s stuck below the 2.35 Mbit/s that a
/// 2 Mbit/s top layer needs in 4 of 24 simulated runs, until str0m's
/// probe for a stagnant estimate 15 s later. Padding to exactly 2.35
/// still stuck in 1 of 3 runs of ten: str0m reports an estimate only once
/// it moved by 5 %, so one creeping up to the threshold is not seen
/// (`PROBE_MARGIN_PCT`; 60 of 60 climbed in 6.3-7.6 s with it).
pub fn probe_for(layers: &[LayerView], target: usize) -> u64 {
    let ranked = rank(layers);
    let at = ranked.iter().position(|&i| i == target);
    match at.and_then(|a| ranked.get(a + 1)) {
        Some(&next) => {
            layers[next].bps * 100 / (100 - UPGRADE_HEADROOM_PCT) * (100 + PROBE_MARGIN_PCT) / 100
        }
        None => layers.get(target).map_or(0, |l| l.bps),
    }
}

/// Whether `bps` fits a link that carries `budget` (None: no limit).
fn fits(bps: u64, budget: Option<u64>) -> bool {
    budget.is_none_or(|b| bps <= b)
}

/// Whether it fits with the headroom an upgrade needs.
fn fits_well(bps: u64, budget: Option<u64>) -> bool {
    fits_with(bps, budget, UPGRADE_HEADROOM_PCT)
}

/// Whether it fits, leaving `headroom_pct` of the budget.
fn fits_with(bps: u64, budget: Option<u64>, headroom_pct: u64) -> bool {
    budget.is_none_or(|b| bps * 100 <= b * (100 - headroom_pct))
}

/// The layers being sent, lowest first: by measured bitrate, or by the
/// publisher's order while none is measured.
fn rank(layers: &[LayerView]) -> Vec<usize> {
    let mut active: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].active).collect();
    if active.iter().any(|&i| layers[i].bps > 0) {
        active.retain(|&i| layers[i].bps > 0);
        active.sort_by_key(|&i| layers[i].bps);
    }
    active
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn layers(bps: &[u64]) -> Vec<LayerView> {
        bps.iter()
            .map(|&bps| LayerView { bps, active: true })
            .collect()
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_choice_is_the_best_layer_that_fits() {
        let t0 = Instant::now();
        // Listed high to low: ranked by bitrate, not by position.
        let l = layers(&[1_200_000, 500_000, 150_000]);
        let mut c = Choice::default();
        assert_eq!(c.choose(t0, &l, None, Some(700_000), None), Some(1));
        assert_eq!(c.choose(t0, &l, None, Some(100_000), None), Some(2));
        assert_eq!(c.choose(t0, &l, None, None, None), Some(0));
        assert_eq!(
            c.choose(t0, &l, None, None, Some(Ceiling::Low)),
            Some(2),
            "a ceiling caps an unlimited link"
        );
        assert_eq!(c.choose(t0, &l, None, None, Some(Ceiling::Mid)), Some(1));
    }

    #[test]
    fn before_any_layer_is_measured_the_publishers_first_is_taken() {
        let t0 = Instant::now();
        let mut c = Choice::default();
        assert_eq!(
            c.choose(t0, &layers(&[0, 0, 0]), None, Some(100_000), None),
            Some(0)
        );
        assert_eq!(c.choose(t0, &[], Some(1), None, None), Some(1));
    }

    #[test]
    fn down_at_once_up_only_after_the_hold() {
        let t0 = Instant::now();
        let l = layers(&[150_000, 500_000, 1_200_000]);
        let mut c = Choice::default();
        assert_eq!(c.choose(t0, &l, Some(2), Some(400_000), None), Some(0));
        // The estimate recovers: the top fits with headroom, but only
        // after the hold is it taken, in one step.
        let mut t = 0;
        let mut target = Some(0);
        while t < UPGRADE_HOLD.as_millis() as u64 {
            target = c.choose(at(t0, t), &l, target, Some(2_000_000), None);
            assert_eq!(target, Some(0), "at {t} ms");
            t += 100;
        }
        assert_eq!(
            c.choose(at(t0, t), &l, target, Some(2_000_000), None),
            Some(2)
        );
    }

    #[test]
    fn a_wobbling_estimate_does_not_flip_the_layer() {
        let t0 = Instant::now();
        let l = layers(&[150_000, 500_000, 1_200_000]);
        let mut c = Choice::default();
        let mut target = Some(1);
        for i in 0..100 {
            // Around the top layer's rate: above it without headroom.
            let budget = if i % 2 == 0 { 1_250_000 } else { 1_300_000 };
            target = c.choose(at(t0, i * 100), &l, target, Some(budget), None);
            assert_eq!(target, Some(1), "step {i}");
        }
        // A dip below the middle layer's rate resets the hold.
        c.choose(at(t0, 20_000), &l, target, Some(2_000_000), None);
        let t = c.choose(at(t0, 20_500), &l, target, Some(450_000), None);
        assert_eq!(t, Some(0));
    }

    /// The wanted cost (the one that can lift a cap).
    fn want(l: &[LayerView], t: Option<usize>, b: Option<u64>, c: Option<Ceiling>) -> Option<u64> {
        layer_costs(l, t, b, c).map(|c| c.1)
    }

    #[test]
    fn a_subscriber_costs_its_layer_and_every_cheaper_one() {
        let mut l = layers(&[500_000, 150_000, 1_200_000]);
        assert_eq!(want(&l, None, Some(800_000), None), Some(650_000));
        assert_eq!(want(&l, None, None, None), Some(1_850_000));
        assert_eq!(want(&l, None, None, Some(Ceiling::Low)), Some(150_000));
        assert_eq!(want(&l, None, Some(10), None), Some(150_000));
        // The layer received counts while it fits; a better one only with
        // the headroom (500k needs 589k).
        assert_eq!(want(&l, Some(0), Some(550_000), None), Some(650_000));
        assert_eq!(want(&l, Some(1), Some(550_000), None), Some(150_000));
        assert_eq!(
            layer_costs(&l, Some(1), Some(600_000), None),
            Some((150_000, 650_000)),
            "now the layer received, wanted the better one"
        );
        assert_eq!(want(&l, Some(1), Some(600_000), None), Some(650_000));
        // A paused layer still counts (it must be able to come back)...
        l[2].active = false;
        assert_eq!(want(&l, None, None, None), Some(1_850_000));
        // ...but an unmeasured one makes the cost unknown.
        l[0].bps = 0;
        assert_eq!(want(&l, None, None, None), None);
    }

    #[test]
    fn the_estimator_probes_for_what_the_next_layer_up_needs() {
        let l = layers(&[500_000, 150_000, 1_200_000]);
        // 85 % of the budget (the upgrade headroom), and 10 % more.
        assert_eq!(probe_for(&l, 1), 647_058);
        assert_eq!(probe_for(&l, 0), 1_552_940);
        assert_eq!(probe_for(&l, 2), 1_200_000, "the top probes for itself");
    }

    #[test]
    fn a_stopped_layer_is_left_at_once_for_the_best_one_sent() {
        let t0 = Instant::now();
        let mut l = layers(&[150_000, 500_000, 1_200_000]);
        l[2].active = false;
        let mut c = Choice::default();
        assert_eq!(c.choose(t0, &l, Some(2), None, None), Some(1));
        l.iter_mut().for_each(|l| l.active = false);
        assert_eq!(c.choose(t0, &l, Some(1), None, None), Some(1), "kept");
    }
}
