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
//! - Packets the subscriber is not sent (frames of a temporal layer its
//!   link does not carry) are skipped: the numbers after them close the
//!   gap, so its receiver neither asks for them nor waits for them.

use crate::limits::MAX_SKIP_RUNS;
use std::collections::VecDeque;
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
    /// The source's first sequence number still mapped (its first
    /// forwarded one, or past the oldest skip forgotten).
    floor: u64,
    /// The source's newest sequence number seen (forwarded or skipped).
    newest: u64,
    skips: Skips,
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
                s.floor = seq;
                s.newest = seq;
                s.skips = Skips::default();
                s
            }
            None => {
                let first = seq & 0xffff;
                self.state.insert(State {
                    source,
                    seq_offset: first.wrapping_sub(seq),
                    ts_offset: 0,
                    floor: seq,
                    newest: seq,
                    skips: Skips::default(),
                    highest: first,
                    highest_ts: ts,
                    highest_at: now,
                })
            }
        };
        if seq < s.floor {
            return None;
        }
        s.newest = s.newest.max(seq);
        let out = seq.wrapping_add(s.skips.offset(seq, s.seq_offset));
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

    /// Leaves packet `seq` of `source` out: the packets after it are
    /// numbered as if it had never been. (One that is not the newest of
    /// its source was overtaken by a later one already numbered: its gap
    /// stays, as for a packet lost on the way.)
    pub fn skip(&mut self, source: Ssrc, seq: u64) {
        let Some(s) = self.state.as_mut().filter(|s| s.source == source) else {
            return; // Nothing numbered from this source yet.
        };
        if seq <= s.newest {
            return;
        }
        s.newest = seq;
        s.seq_offset = s.seq_offset.wrapping_sub(1);
        if let Some(floor) = s.skips.push(seq) {
            s.floor = s.floor.max(floor);
        }
    }
}

/// The runs of numbers left out of one source's stream: each lowers the
/// offset of every number after it by its length, and a late packet from
/// before a run keeps the offset it had. Runs are few (one per dropped
/// frame, its packets being consecutive); the oldest are forgotten.
#[derive(Debug, Default)]
struct Skips {
    /// (first skipped, last skipped), oldest first.
    runs: VecDeque<(u64, u64)>,
}

impl Skips {
    /// The offset for source number `n`, given the offset for numbers
    /// after every run: one more for each run at or after `n`.
    fn offset(&self, n: u64, after_all: u64) -> u64 {
        let later: u64 = self
            .runs
            .iter()
            .rev()
            .take_while(|r| r.0 > n)
            .map(|r| r.1 - r.0 + 1)
            .sum();
        after_all.wrapping_add(later)
    }

    /// Records that `n`, the newest number, is skipped. Returns the first
    /// number still mapped when the oldest run had to be forgotten.
    fn push(&mut self, n: u64) -> Option<u64> {
        match self.runs.back_mut() {
            Some(run) if run.1 + 1 == n => run.1 = n,
            _ => self.runs.push_back((n, n)),
        }
        if self.runs.len() > MAX_SKIP_RUNS {
            return self.runs.pop_front().map(|r| r.1 + 1);
        }
        None
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
    /// Added to the source's picture id (15 bits; after every skipped
    /// picture) and TL0PICIDX.
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: u16,
    last_tl0: u8,
    /// The source's newest picture id seen, unwrapped.
    newest: u64,
    /// Pictures left out (a temporal layer not sent), unwrapped.
    skips: Skips,
}

/// Where a 15-bit picture id falls relative to `near` (unwrapped):
/// within 2^14 either way.
fn unwrap_pid(near: u64, pid: u16) -> u64 {
    let ahead = pid.wrapping_sub(near as u16) & PID_MASK;
    if ahead < 0x4000 {
        near + ahead as u64
    } else {
        near.saturating_sub((0x8000 - ahead) as u64)
    }
}

/// Unwrapped picture ids start here, far from 0 either way.
const PID_BASE: u64 = 1 << 32;

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
                s.newest = PID_BASE + picture_id.unwrap_or(0) as u64;
                s.skips = Skips::default();
                s
            }
            None => self.state.insert(Vp8State {
                source,
                pid_offset: 0,
                tl0_offset: 0,
                last_pid: picture_id.unwrap_or(0),
                last_tl0: tl0.unwrap_or(0),
                newest: PID_BASE + picture_id.unwrap_or(0) as u64,
                skips: Skips::default(),
            }),
        };
        let pid = picture_id.map(|p| {
            let n = unwrap_pid(s.newest, p);
            s.newest = s.newest.max(n);
            let offset = s.skips.offset(n, s.pid_offset as u64) as u16;
            p.wrapping_add(offset) & PID_MASK
        });
        let changed = s.pid_offset != 0 || s.tl0_offset != 0 || !s.skips.runs.is_empty();
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
            changed,
        }
    }

    /// Leaves picture `picture_id` of `source` out: the pictures after it
    /// are numbered as if it had never been (a receiver waits for a
    /// picture id it has not seen before it decodes what follows). Each
    /// picture counts once, however many packets it has.
    pub fn skip(&mut self, source: Ssrc, picture_id: u16) {
        let Some(s) = self.state.as_mut().filter(|s| s.source == source) else {
            return;
        };
        let n = unwrap_pid(s.newest, picture_id);
        if n <= s.newest {
            return;
        }
        s.newest = n;
        s.pid_offset = s.pid_offset.wrapping_sub(1) & PID_MASK;
        s.skips.push(n);
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
    fn skipped_packets_leave_no_gap_and_late_ones_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let a = Ssrc::from(1);
        let seq = |r: &mut Rewriter, n: u64| r.rewrite(a, n, 0, t0, VIDEO).map(|o| o.seq);
        assert_eq!(seq(&mut r, 100), Some(100));
        // 101 and 102 (one frame) are left out, 103 arrives late.
        r.skip(a, 101);
        r.skip(a, 102);
        assert_eq!(seq(&mut r, 104), Some(102), "after the skipped run");
        assert_eq!(seq(&mut r, 103), Some(101), "late, after the run too");
        r.skip(a, 105);
        assert_eq!(seq(&mut r, 106), Some(103));
        // A skip that was overtaken changes nothing: its gap stays.
        r.skip(a, 99);
        assert_eq!(seq(&mut r, 107), Some(104));
        // A new source starts without the old one's skips.
        let b = Ssrc::from(2);
        assert_eq!(r.rewrite(b, 9, 0, t0, VIDEO).map(|o| o.seq), Some(105));
        r.skip(a, 108);
        assert_eq!(r.rewrite(b, 10, 0, t0, VIDEO).map(|o| o.seq), Some(106));
    }

    #[test]
    fn a_packet_from_before_the_skips_remembered_is_not_forwarded() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let a = Ssrc::from(1);
        r.rewrite(a, 1000, 0, t0, VIDEO).unwrap();
        // Every other packet skipped: one run each.
        let mut n = 1000;
        for _ in 0..=MAX_SKIP_RUNS {
            n += 2;
            r.skip(a, n - 1);
            r.rewrite(a, n, 0, t0, VIDEO).unwrap();
        }
        assert_eq!(r.rewrite(a, 1000, 0, t0, VIDEO), None, "its offset is lost");
        let newest = r.rewrite(a, n, 0, t0, VIDEO).unwrap().seq;
        assert_eq!(newest, 1000 + MAX_SKIP_RUNS as u64 + 1);
        assert_eq!(r.rewrite(a, n - 2, 0, t0, VIDEO).unwrap().seq, newest - 1);
    }

    #[test]
    fn skipped_vp8_pictures_leave_no_gap_across_the_wrap() {
        let mut v = Vp8Ids::default();
        let a = Ssrc::from(1);
        let pid = |v: &mut Vp8Ids, p: u16| v.rewrite(a, Some(p), Some(3)).picture_id;
        assert_eq!(pid(&mut v, 32_766), Some(32_766));
        v.skip(a, 32_767);
        v.skip(a, 32_767); // its second packet: counted once
        let out = v.rewrite(a, Some(0), Some(3));
        assert_eq!((out.picture_id, out.changed), (Some(32_767), true));
        assert_eq!(pid(&mut v, 1), Some(0));
        v.skip(a, 2);
        assert_eq!(pid(&mut v, 3), Some(1));
        // A retransmission of picture 0 keeps its number.
        assert_eq!(pid(&mut v, 0), Some(32_767));
        assert_eq!(pid(&mut v, 32_766), Some(32_766));
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
