//! VP8 temporal layers, for publishers that send one encoding: a
//! subscriber whose link does not carry the whole stream is sent its
//! lower temporal layers only (fewer frames per second, the same
//! picture), as Janus VideoRoom and mediasoup do for VP8 without
//! simulcast. A frame of temporal layer n refers only to frames of layers
//! up to n, so layers 0..=n decode on their own; the packets and picture
//! ids of the frames left out are skipped by the subscriber's numbering
//! (`rewrite`), so its receiver sees an unbroken stream.
//!
//! - Down at the next frame: a frame is kept or left out whole.
//! - Up at the next layer-0 frame (or key frame), which every layer's
//!   next frames may refer to.

use super::adapt::LayerView;
use super::packet::Media;
use super::rate::RateMeter;
use crate::limits::{
    LAYER_IDLE, LOSS_BACKOFF, LOSS_BACKOFF_MAX, LOSS_HIGH, LOSS_SETTLE, MAX_TEMPORAL_LAYERS,
    REMB_CEILING_PCT, STEP_UP_GRACE,
};
use std::time::Duration;
use std::time::Instant;

/// What each temporal layer of one encoding costs.
#[derive(Debug, Default)]
pub struct TemporalRates {
    meters: [RateMeter; MAX_TEMPORAL_LAYERS],
}

impl TemporalRates {
    pub fn observe(&mut self, now: Instant, m: &Media) {
        if let Some(t) = m.temporal {
            self.meters[(t.tid as usize).min(MAX_TEMPORAL_LAYERS - 1)].add(now, m.payload.len());
        }
    }

    /// The choices a subscriber has, as the allocator sees them: layers
    /// 0..=n for each layer n sent lately, each with the cost of all it
    /// includes. Fewer than two: nothing to choose (no temporal layers).
    pub fn views(&self, now: Instant) -> Vec<LayerView> {
        let sent = |m: &RateMeter| {
            m.last()
                .is_some_and(|l| now.saturating_duration_since(l) < LAYER_IDLE)
        };
        let Some(top) = self.meters.iter().rposition(sent) else {
            return Vec::new();
        };
        let mut total = 0;
        self.meters[..=top]
            .iter()
            .map(|m| {
                total += m.bps();
                LayerView {
                    bps: if m.bps() == 0 { 0 } else { total },
                    active: sent(m),
                }
            })
            .collect()
    }
}

/// The budget a REMB gives one subscriber track whose layer `at` among
/// `views` it receives now (`cost`: what that costs). A receiver's REMB
/// never reads much over 1.5 times what reaches it (libwebrtc caps its
/// estimate so), so a link with room to spare shows at most that ceiling:
/// a REMB near it (`REMB_CEILING_PCT` of the cost) vouches for the next
/// layer up, whatever it costs. After such a step up the REMB needs a
/// while to grow with what now arrives: for `STEP_UP_GRACE` at most, until
/// it has, the new layer is kept unless the REMB falls below what the old
/// one cost (congestion).
pub fn remb_budget(
    now: Instant,
    remb: u64,
    views: &[LayerView],
    at: usize,
    step_up: &mut Option<StepUp>,
) -> u64 {
    let cost = |i: usize| views.get(i).map_or(0, |v| v.bps);
    if let Some(s) = *step_up {
        let catching_up = now < s.until && remb < cost(at);
        if catching_up && remb >= s.before {
            return cost(at);
        }
        // Proven (the REMB caught up), congested, or out of time.
        *step_up = None;
    }
    if remb * 100 >= cost(at) * REMB_CEILING_PCT {
        return remb.max(cost(at + 1));
    }
    remb
}

/// A step up taken on a REMB at its ceiling: until when it holds, and
/// what the layer before it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUp {
    pub until: Instant,
    pub before: u64,
}

impl StepUp {
    pub fn new(now: Instant, before: u64) -> StepUp {
        StepUp {
            until: now + STEP_UP_GRACE,
            before,
        }
    }
}

/// Keeps a subscriber without an estimator off the temporal layers it
/// lost packets at: its REMB sees a queue that grows, not a link that
/// drops (a short router queue, a radio), so its receiver reports' loss
/// decides too. Over `LOSS_HIGH` lost in two reports in a row, the layers it was sent from the
/// highest are barred for `LOSS_BACKOFF`, doubled each time it loses at
/// the same layer again; for `LOSS_SETTLE` after that, loss is not held
/// against the layers left.
#[derive(Debug, Default)]
pub struct LossGuard {
    /// The lowest layer barred, until when, and for how long.
    barred: Option<(usize, Instant, Duration)>,
    /// Reports in a row over `LOSS_HIGH`: one is not enough (5 % random
    /// loss reads over 10 % in one report of a hundred packets now and
    /// then; a Firefox subscriber behind it was cut to 7.5 fps in a CI run).
    high: u8,
}

impl LossGuard {
    /// A report of `loss` (a fraction) while the track was sent layers
    /// 0..=`at`.
    pub fn report(&mut self, now: Instant, loss: f32, at: usize) {
        if loss <= LOSS_HIGH {
            self.high = 0;
            return;
        }
        self.high = self.high.saturating_add(1);
        if self.high < 2 || at == 0 {
            return;
        }
        // The reports just after a step down still count what was lost
        // before it (and the queue it left to drain).
        if self
            .barred
            .is_some_and(|(_, until, b)| now < until - b + LOSS_SETTLE)
        {
            return;
        }
        let backoff = match self.barred {
            Some((layer, until, b)) if layer == at && now < until + LOSS_BACKOFF_MAX => {
                (b * 2).min(LOSS_BACKOFF_MAX)
            }
            _ => LOSS_BACKOFF,
        };
        self.barred = Some((at, now + backoff, backoff));
    }

    /// The highest of layers 0..=`top` it may be sent now.
    pub fn allowed(&self, now: Instant, top: usize) -> usize {
        match self.barred {
            Some((layer, until, _)) if now < until => (layer - 1).min(top),
            _ => top,
        }
    }
}

/// Which frames one subscriber track is sent.
#[derive(Debug, Default)]
pub struct TemporalFilter {
    /// The highest layer it should receive (None: all).
    pub target: Option<u8>,
    /// A step up on a REMB at its ceiling, while it is being proven.
    pub step_up: Option<StepUp>,
    pub loss: LossGuard,
    /// The highest layer it receives now (None: all): `target` once a
    /// frame allowed the switch.
    applied: Option<u8>,
    /// The latest pictures decided, to treat their every packet (late
    /// ones, retransmissions) alike: (picture id, kept).
    recent: [Option<(u16, bool)>; 8],
    next: usize,
}

impl TemporalFilter {
    /// Whether packet `m` of the track's current layer is sent.
    pub fn keeps(&mut self, m: &Media) -> bool {
        let Some(t) = m.temporal else {
            return true;
        };
        let pid = m.vp8.and_then(|d| d.picture_id());
        if let Some(p) = pid {
            if let Some((_, kept)) = self.recent.iter().flatten().find(|(q, _)| *q == p) {
                return *kept;
            }
        }
        // A picture not seen yet: the place to switch.
        let up = self
            .target
            .is_none_or(|t| self.applied.is_some_and(|a| t > a));
        if !up || t.tid == 0 || m.key {
            self.applied = self.target;
        }
        let kept = self.applied.is_none_or(|a| t.tid <= a);
        if let Some(p) = pid {
            self.recent[self.next] = Some((p, kept));
            self.next = (self.next + 1) % self.recent.len();
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::packet::vp8_media;
    use std::sync::Arc;
    use std::time::Duration;

    /// A one-packet VP8 frame: picture `pid`, temporal layer `tid`.
    fn frame(pid: u16, tid: u8, key: bool) -> Media {
        let payload = vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            0,
            tid << 6,
            if key { 0x00 } else { 0x01 },
            0,
        ];
        vp8_media(pid as u64, 0, key, payload)
    }

    /// The L1T3 pattern: 0 2 1 2, 0 2 1 2...
    const PATTERN: [u8; 4] = [0, 2, 1, 2];

    fn kept(f: &mut TemporalFilter, pids: std::ops::Range<u16>) -> Vec<u8> {
        pids.map(|p| (p, PATTERN[p as usize % 4]))
            .filter(|&(p, tid)| f.keeps(&frame(p, tid, false)))
            .map(|(_, tid)| tid)
            .collect()
    }

    #[test]
    fn down_at_the_next_frame_up_at_the_next_base_frame() {
        let mut f = TemporalFilter::default();
        assert_eq!(kept(&mut f, 0..4), [0, 2, 1, 2], "all by default");
        f.target = Some(0);
        assert_eq!(kept(&mut f, 4..8), [0]);
        f.target = Some(1);
        // Layer 1 starts at the next layer-0 picture (12), not before.
        assert!(kept(&mut f, 9..12).is_empty());
        assert_eq!(kept(&mut f, 12..16), [0, 1]);
        f.target = None;
        assert_eq!(kept(&mut f, 17..20), [1]);
        assert_eq!(kept(&mut f, 20..24), [0, 2, 1, 2]);
        // A key frame starts the switch up too.
        f.target = Some(0);
        kept(&mut f, 24..28);
        f.target = None;
        assert!(f.keeps(&frame(29, 2, true)));
    }

    #[test]
    fn every_packet_of_a_picture_gets_its_first_packets_verdict() {
        let mut f = TemporalFilter {
            target: Some(1),
            ..Default::default()
        };
        assert!(!f.keeps(&frame(6, 2, false)));
        assert!(f.keeps(&frame(7, 1, false)));
        // The target moves; a late packet of picture 6 is still dropped,
        // one of 7 still sent.
        f.target = None;
        assert!(!f.keeps(&frame(6, 2, false)));
        assert!(f.keeps(&frame(7, 1, false)));
    }

    #[test]
    fn a_remb_at_its_ceiling_vouches_for_the_next_layer_up_for_a_while() {
        let t0 = Instant::now();
        let views: Vec<LayerView> = [120_000, 180_000, 300_000]
            .iter()
            .map(|&bps| LayerView { bps, active: true })
            .collect();
        let mut step = None;
        // Well under the ceiling over layer 1: what it says.
        assert_eq!(remb_budget(t0, 200_000, &views, 1, &mut step), 200_000);
        // At 1.5 times layer 1: the top, though it costs more.
        assert_eq!(remb_budget(t0, 280_000, &views, 1, &mut step), 300_000);
        // Stepped up: the top is kept while the REMB grows...
        step = Some(StepUp::new(t0, 180_000));
        let soon = t0 + STEP_UP_GRACE / 2;
        assert_eq!(remb_budget(soon, 250_000, &views, 2, &mut step), 300_000);
        // ...until it has caught up...
        assert_eq!(remb_budget(soon, 310_000, &views, 2, &mut step), 310_000);
        assert_eq!(step, None);
        // ...unless it falls below what layer 1 cost: congestion.
        assert_eq!(remb_budget(soon, 170_000, &views, 2, &mut step), 170_000);
        assert_eq!(step, None);
        // After the grace the REMB speaks for itself.
        step = Some(StepUp::new(t0, 180_000));
        let late = t0 + STEP_UP_GRACE;
        assert_eq!(remb_budget(late, 250_000, &views, 2, &mut step), 250_000);
        assert_eq!(step, None);
    }

    #[test]
    fn loss_bars_the_layers_it_came_at_for_longer_each_time() {
        let t0 = Instant::now();
        let mut g = LossGuard::default();
        g.report(t0, 0.05, 2);
        assert_eq!(g.allowed(t0, 2), 2, "5 % is not congestion");
        g.report(t0, 0.2, 2);
        assert_eq!(g.allowed(t0, 2), 2, "one report alone is not either");
        g.report(t0, 0.05, 2);
        g.report(t0, 0.2, 2);
        assert_eq!(g.allowed(t0, 2), 2);
        g.report(t0, 0.2, 2);
        assert_eq!(g.allowed(t0, 2), 1, "two in a row are");
        assert_eq!(g.allowed(t0 + LOSS_BACKOFF, 2), 2, "tried again");
        // Lost again there: barred twice as long.
        let t1 = t0 + LOSS_BACKOFF;
        g.report(t1, 0.2, 2);
        assert_eq!(g.allowed(t1 + LOSS_BACKOFF, 2), 1);
        assert_eq!(g.allowed(t1 + 2 * LOSS_BACKOFF, 2), 2);
        // What is lost just after a step down is not held against the
        // layers left; later, layer 1 is barred too; nothing below 0.
        g.report(t1, 0.3, 1);
        assert_eq!(g.allowed(t1, 2), 1);
        let t2 = t1 + LOSS_SETTLE;
        g.report(t2, 0.3, 1);
        assert_eq!(g.allowed(t2, 2), 0);
        g.report(t2 + LOSS_SETTLE, 0.3, 0);
        assert_eq!(g.allowed(t2 + LOSS_SETTLE, 2), 0);
    }

    #[test]
    fn each_choice_costs_its_layers_and_those_below() {
        let t0 = Instant::now();
        let mut r = TemporalRates::default();
        assert!(r.views(t0).is_empty());
        // 100 pictures a second in the 0 2 1 2 pattern, 1000 bytes each
        // on layer 0, 500 on 1 and 250 on 2.
        for i in 0..200u16 {
            let tid = PATTERN[i as usize % 4];
            let mut m = frame(i, tid, false);
            m.payload = Arc::from(vec![0u8; [1000, 500, 250][tid as usize]]);
            r.observe(t0 + Duration::from_millis(10 * i as u64), &m);
        }
        let bps: Vec<u64> = r
            .views(t0 + Duration::from_secs(2))
            .iter()
            .map(|v| v.bps)
            .collect();
        assert_eq!(bps.len(), 3);
        let within = |v: u64, want: u64| v.abs_diff(want) * 10 < want;
        assert!(within(bps[0], 200_000), "{bps:?}");
        assert!(within(bps[1], 300_000), "{bps:?}");
        assert!(within(bps[2], 400_000), "{bps:?}");
        assert!(r.views(t0 + Duration::from_secs(10)).is_empty(), "stopped");
    }
}
