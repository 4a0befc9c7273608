//! What one subscriber track changes in each forwarded packet: the
//! sequence number, the RTP timestamp and the payload type. (The SSRC is
//! the subscriber's own: str0m's send stream writes it.) Pure arithmetic,
//! no str0m session: the rules are tested here one by one.
//!
//! - The first packet fixes the offset so the subscriber's sequence
//!   numbers start in its first 16-bit cycle (its SRTP rollover counter
//!   starts at 0, as every receiver expects).
//! - When the source changes (the publisher restarted its encoder with a
//!   new SSRC; later, a simulcast layer switch), numbering and timestamps
//!   go on from where they were, so the subscriber's decoder and jitter
//!   buffer see one continuous stream.
//! - Packets older than the current source's first forwarded one (late
//!   retransmissions of what came before) are not forwarded: their numbers
//!   would collide with numbers already used.

use std::time::Instant;
use str0m::media::Pt;
use str0m::rtp::Ssrc;

/// The sequence-number and timestamp rewrite of one subscriber track.
#[derive(Debug, Default)]
pub struct Rewriter {
    state: Option<State>,
}

#[derive(Debug)]
struct State {
    source: Ssrc,
    /// Added to the source's extended sequence number (wrapping).
    seq_offset: u64,
    /// Added to the source's RTP timestamp (wrapping).
    ts_offset: u32,
    /// The first sequence number forwarded from the current source.
    floor: u64,
    /// The highest sequence number forwarded so far, its timestamp, and
    /// when it was forwarded.
    highest: u64,
    highest_ts: u32,
    highest_at: Instant,
}

/// Where a packet goes in the subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
}

impl Rewriter {
    /// Rewrites one packet of `source` (extended sequence number `seq`,
    /// RTP timestamp `ts`, received at `now`, media clock `clock_rate` Hz).
    /// A packet of another source than the last one's switches to it.
    /// None: the packet is too old to forward.
    pub fn rewrite(
        &mut self,
        source: Ssrc,
        seq: u64,
        ts: u32,
        now: Instant,
        clock_rate: u32,
    ) -> Option<Rewritten> {
        let s = match &mut self.state {
            Some(s) if s.source == source => s,
            Some(s) => {
                // Go on one past the highest number sent, and as much
                // later in media time as has passed on the wall clock
                // (at least one tick: timestamps must not stand still).
                let elapsed = now.saturating_duration_since(s.highest_at);
                let ticks = (elapsed.as_micros() as u64 * clock_rate as u64 / 1_000_000).max(1);
                let first = s.highest + 1;
                s.source = source;
                s.seq_offset = first.wrapping_sub(seq);
                s.ts_offset = s.highest_ts.wrapping_add(ticks as u32).wrapping_sub(ts);
                s.floor = first;
                s
            }
            None => {
                let first = seq & 0xffff;
                self.state.insert(State {
                    source,
                    seq_offset: first.wrapping_sub(seq),
                    ts_offset: 0,
                    floor: first,
                    highest: first,
                    highest_ts: ts,
                    highest_at: now,
                })
            }
        };
        let out = seq.wrapping_add(s.seq_offset);
        // Below the floor, or so far above the highest that it can only be
        // the wrapped result of a packet from before the floor.
        if out < s.floor || out > s.floor + (1 << 62) {
            return None;
        }
        let timestamp = ts.wrapping_add(s.ts_offset);
        if out >= s.highest {
            s.highest = out;
            s.highest_ts = timestamp;
            s.highest_at = now;
        }
        Some(Rewritten {
            seq: out,
            timestamp,
        })
    }
}

/// VP8's own numbering, continued across a change of source like the RTP
/// numbers: the picture id and TL0PICIDX of a new layer's first key frame
/// follow the last ones sent. A receiver's frame buffer drops a frame
/// whose picture id is not ahead of the last decoded one, so a layer
/// switch without this would freeze half the time.
#[derive(Debug, Default)]
pub struct Vp8Ids {
    state: Option<Vp8State>,
}

#[derive(Debug)]
struct Vp8State {
    source: Ssrc,
    /// Added to the source's picture id (15 bits) and TL0PICIDX.
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: u16,
    last_tl0: u8,
}

const PID_MASK: u16 = 0x7fff;

/// A VP8 packet's picture id and TL0PICIDX after the rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Out {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    /// Whether they differ from the packet's own (a patch is needed).
    pub changed: bool,
}

impl Vp8Ids {
    /// Rewrites one packet of `source` whose descriptor carries
    /// `picture_id` (15-bit space) and `tl0`.
    pub fn rewrite(&mut self, source: Ssrc, picture_id: Option<u16>, tl0: Option<u8>) -> Vp8Out {
        let s = match &mut self.state {
            Some(s) if s.source == source => s,
            Some(s) => {
                // Continue one past the last sent.
                s.source = source;
                s.pid_offset =
                    picture_id.map_or(0, |p| s.last_pid.wrapping_add(1).wrapping_sub(p) & PID_MASK);
                s.tl0_offset = tl0.map_or(0, |t| s.last_tl0.wrapping_add(1).wrapping_sub(t));
                s
            }
            None => self.state.insert(Vp8State {
                source,
                pid_offset: 0,
                tl0_offset: 0,
                last_pid: picture_id.unwrap_or(0),
                last_tl0: tl0.unwrap_or(0),
            }),
        };
        let pid = picture_id.map(|p| p.wrapping_add(s.pid_offset) & PID_MASK);
        let tl0 = tl0.map(|t| t.wrapping_add(s.tl0_offset));
        if let Some(p) = pid {
            // Newer (in 15-bit serial arithmetic) than the last: it is the
            // last now; a late retransmission is not.
            if p.wrapping_sub(s.last_pid) & PID_MASK < 0x4000 {
                s.last_pid = p;
                if let Some(t) = tl0 {
                    s.last_tl0 = t;
                }
            }
        }
        Vp8Out {
            picture_id: pid,
            tl0_pic_idx: tl0,
            changed: s.pid_offset != 0 || s.tl0_offset != 0,
        }
    }
}

/// Publisher payload type → the subscriber's payload type for the same
/// codec on one track, resolved once per publisher payload type.
#[derive(Debug, Default)]
pub struct PtMap {
    /// None: the subscriber cannot receive that codec.
    map: Vec<(Pt, Option<Pt>)>,
}

impl PtMap {
    /// The subscriber's payload type for the publisher's `pt`; `resolve`
    /// finds it the first time.
    pub fn get(&mut self, pt: Pt, resolve: impl FnOnce() -> Option<Pt>) -> Option<Pt> {
        if let Some((_, out)) = self.map.iter().find(|(p, _)| *p == pt) {
            return *out;
        }
        let out = resolve();
        self.map.push((pt, out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VIDEO: u32 = 90_000;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_packet_starts_the_first_cycle_and_the_rest_follow() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let a = Ssrc::from(1);
        // A publisher already in its third cycle, near a 16-bit wrap.
        let start = 2 * 65536 + 65534;
        let out = r.rewrite(a, start, 1000, t0, VIDEO).unwrap();
        assert_eq!(out.seq, 65534);
        assert_eq!(out.timestamp, 1000);
        // Across the 16-bit wrap, numbering stays continuous.
        for i in 1..4 {
            let out = r.rewrite(a, start + i, 1000 + 3000 * i as u32, t0, VIDEO);
            assert_eq!(out.map(|o| o.seq), Some(65534 + i));
        }
        assert_eq!(
            r.rewrite(a, start + 3, 10_000, t0, VIDEO).unwrap().seq,
            65537
        );
    }

    #[test]
    fn timestamps_pass_through_and_wrap_with_the_source() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let a = Ssrc::from(1);
        r.rewrite(a, 10, u32::MAX - 100, t0, VIDEO).unwrap();
        let out = r.rewrite(a, 11, 200, t0, VIDEO).unwrap();
        assert_eq!(out.timestamp, 200, "a wrapped timestamp stays wrapped");
    }

    #[test]
    fn a_retransmission_before_the_first_packet_is_not_forwarded() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let a = Ssrc::from(1);
        r.rewrite(a, 500, 0, t0, VIDEO).unwrap();
        assert_eq!(r.rewrite(a, 499, 0, t0, VIDEO), None);
        // A late one after the first is forwarded at its own place.
        r.rewrite(a, 503, 0, t0, VIDEO).unwrap();
        assert_eq!(r.rewrite(a, 501, 0, t0, VIDEO).unwrap().seq, 501);
        assert_eq!(r.rewrite(a, 504, 0, t0, VIDEO).unwrap().seq, 504);
    }

    #[test]
    fn a_publisher_restart_continues_numbering_and_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let (a, b) = (Ssrc::from(1), Ssrc::from(2));
        r.rewrite(a, 1000, 50_000, t0, VIDEO).unwrap();
        r.rewrite(a, 1001, 53_000, at(t0, 33), VIDEO).unwrap();
        // The encoder restarts: new SSRC, numbers and time from scratch,
        // 100 ms after the last packet of the old one.
        let out = r.rewrite(b, 7, 123, at(t0, 133), VIDEO).unwrap();
        assert_eq!(out.seq, 1002, "one past the highest sent");
        assert_eq!(out.timestamp, 53_000 + 9000, "100 ms later at 90 kHz");
        let next = r.rewrite(b, 8, 123 + 3000, at(t0, 166), VIDEO).unwrap();
        assert_eq!(next.seq, 1003);
        assert_eq!(next.timestamp, 62_000 + 3000);
        // A late retransmission of the new source from before its first
        // forwarded packet would reuse 1001: not forwarded.
        assert_eq!(r.rewrite(b, 6, 0, at(t0, 170), VIDEO), None);
    }

    #[test]
    fn a_restart_within_the_same_instant_still_moves_time_forward() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let (a, b) = (Ssrc::from(1), Ssrc::from(2));
        r.rewrite(a, 1, 7, t0, VIDEO).unwrap();
        let out = r.rewrite(b, 1, 999, t0, VIDEO).unwrap();
        assert_eq!(out.timestamp, 8);
    }

    #[test]
    fn switching_back_and_forth_never_reuses_a_number() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let (a, b) = (Ssrc::from(1), Ssrc::from(2));
        let mut seen = std::collections::HashSet::new();
        let mut t = 0;
        for round in 0..4u64 {
            let (src, base) = if round % 2 == 0 {
                (a, 100)
            } else {
                (b, 40_000)
            };
            for i in 0..10 {
                t += 10;
                let out = r
                    .rewrite(src, base + round * 10 + i, 0, at(t0, t), VIDEO)
                    .unwrap();
                assert!(seen.insert(out.seq), "{} reused", out.seq);
            }
        }
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_switch() {
        let mut v = Vp8Ids::default();
        let (a, b) = (Ssrc::from(1), Ssrc::from(2));
        let out = v.rewrite(a, Some(32_766), Some(250));
        assert_eq!(
            (out.picture_id, out.tl0_pic_idx, out.changed),
            (Some(32_766), Some(250), false)
        );
        v.rewrite(a, Some(32_767), Some(251));
        // Switch to a layer whose numbers are elsewhere: they go on from
        // the last sent, across the 15-bit and 8-bit wraps.
        let out = v.rewrite(b, Some(100), Some(7));
        assert_eq!(
            (out.picture_id, out.tl0_pic_idx, out.changed),
            (Some(0), Some(252), true)
        );
        let out = v.rewrite(b, Some(101), Some(10));
        assert_eq!((out.picture_id, out.tl0_pic_idx), (Some(1), Some(255)));
        let out = v.rewrite(b, Some(102), Some(11));
        assert_eq!(out.tl0_pic_idx, Some(0));
        // A late packet of the new source does not move "last" back.
        v.rewrite(b, Some(99), Some(6));
        let out = v.rewrite(a, Some(5), None);
        assert_eq!(out.picture_id, Some(3), "one past 2, not past 32_767");
    }

    #[test]
    fn payload_types_are_resolved_once_each() {
        let mut m = PtMap::default();
        let mut calls = 0;
        let mut get = |m: &mut PtMap, pt: u8, out: Option<u8>| {
            m.get(Pt::from(pt), || {
                calls += 1;
                out.map(Pt::from)
            })
        };
        assert_eq!(get(&mut m, 96, Some(120)), Some(Pt::from(120)));
        assert_eq!(get(&mut m, 96, Some(1)), Some(Pt::from(120)));
        assert_eq!(get(&mut m, 98, None), None);
        assert_eq!(get(&mut m, 98, Some(1)), None, "a miss is remembered");
        assert_eq!(calls, 2);
    }
}
