//! Key frames: telling them apart in the publisher's packets, asking the
//! publisher for them, and keeping the latest one for late subscribers.
//!
//! A subscriber's decoder can start only at a key frame. Every subscriber
//! that connects, and every PLI/FIR a subscriber sends, asks for one. An
//! encoder honours at most one request per window (Chrome ignores a PLI
//! that comes within 300 ms of its last key frame), so:
//!
//! - a request while one is on its way (asked, no key frame seen since) is
//!   served by the one coming;
//! - a request soon after a key frame went by is not dropped but sent once
//!   when the publisher will honour it again, for everyone who asked;
//! - a subscriber that connects in that window does not wait for it: the
//!   SFU keeps the packets of the latest key frame and what followed it
//!   (for one window), and gives them to the new subscriber at once.

use std::time::Instant;
use str0m::format::Codec;

pub(crate) use crate::limits::{KEYFRAME_CACHE_PACKETS, KEYFRAME_PATIENCE, KEYFRAME_WINDOW};

/// Whether an RTP payload of `codec` starts a key frame (its first packet,
/// or, for H.264, one carrying the sequence parameter set or the start of
/// an IDR picture).
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        _ => false,
    }
}

/// RFC 7741: the payload descriptor, then the VP8 payload header, whose
/// first bit (P) is 0 on a key frame. Only the first packet of a frame
/// (S set, partition 0) carries that header.
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (extended, start, partition) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            // Picture id: 15 bits with M set, else 7.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// draft-ietf-payload-vp9: P (inter-picture predicted) clear and B
/// (beginning of a frame) set, on the base spatial layer.
fn vp9_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (has_pid, predicted, layers, begins) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x08 != 0,
    );
    if predicted || !begins {
        return false;
    }
    if !layers {
        return true;
    }
    let mut i = 1;
    if has_pid {
        let Some(&pid) = p.get(1) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // TID(3) U(1) SID(3) D(1)
    p.get(i).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// RFC 6184: a single NAL unit, an aggregate (STAP-A) holding one, or the
/// first fragment (FU-A) of one, that is an SPS (7) or an IDR slice (5).
fn h264_starts_keyframe(p: &[u8]) -> bool {
    let key = |nal_type: u8| matches!(nal_type, 5 | 7);
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        24 => {
            let mut i = 1;
            while let (Some(&hi), Some(&lo)) = (p.get(i), p.get(i + 1)) {
                let len = u16::from_be_bytes([hi, lo]) as usize;
                if p.get(i + 2).is_some_and(|n| key(n & 0x1f)) {
                    return true;
                }
                i += 2 + len;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && key(fu & 0x1f)),
        t => key(t),
    }
}

/// What to do about one request for a key frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Send a PLI now.
    Now,
    /// One is on its way: it will serve this request too.
    Coming,
    /// A key frame just went by and the publisher would ignore a PLI: one
    /// is sent when `poll_timeout` says (the latest key frame is in the
    /// publisher's cache for a subscriber that only needs to start).
    Later,
}

/// The request state of one publisher track.
#[derive(Debug, Default)]
pub(crate) struct KeyframeRequests {
    /// When the latest key frame began to arrive.
    last_keyframe: Option<Instant>,
    /// When we last sent a PLI.
    asked: Option<Instant>,
    /// Someone asked while a PLI would have been ignored.
    pending: bool,
}

impl KeyframeRequests {
    /// A key frame began to arrive.
    pub fn on_keyframe(&mut self, now: Instant) {
        self.last_keyframe = Some(now);
    }

    /// Someone wants a key frame.
    pub fn request(&mut self, now: Instant) -> Ask {
        if self.coming(now) {
            return Ask::Coming;
        }
        if self.would_be_honoured(now) {
            self.asked = Some(now);
            self.pending = false;
            return Ask::Now;
        }
        self.pending = true;
        Ask::Later
    }

    /// When a waiting request is due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        self.last_keyframe.map(|k| k + KEYFRAME_WINDOW)
    }

    /// Returns whether a waiting request is due now (and counts it sent).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if !self.pending || !self.would_be_honoured(now) {
            return false;
        }
        self.pending = false;
        if self.coming(now) {
            return false;
        }
        self.asked = Some(now);
        true
    }

    /// Asked, no key frame since, and not so long ago that it was lost.
    fn coming(&self, now: Instant) -> bool {
        let Some(asked) = self.asked else {
            return false;
        };
        let answered = self.last_keyframe.is_some_and(|k| k >= asked);
        !answered && now.saturating_duration_since(asked) < KEYFRAME_PATIENCE
    }

    fn would_be_honoured(&self, now: Instant) -> bool {
        self.last_keyframe
            .is_none_or(|k| now.saturating_duration_since(k) >= KEYFRAME_WINDOW)
    }

    /// Whether a key frame began to arrive within the window before `now`.
    pub fn recent_keyframe(&self, now: Instant) -> bool {
        !self.would_be_honoured(now)
    }
}

/// The latest key frame's packets and those that followed it, for one
/// window after it began: what a subscriber that connects in that window
/// needs to start decoding at once.
#[derive(Debug)]
pub(crate) struct KeyframeCache<T> {
    /// The RTP timestamp of the cached key frame (H.264 may start one over
    /// several packets that each look like a start).
    timestamp: Option<u32>,
    started: Option<Instant>,
    packets: Vec<T>,
    /// More than `KEYFRAME_CACHE_PACKETS` followed the key frame.
    overflowed: bool,
}

impl<T> Default for KeyframeCache<T> {
    fn default() -> Self {
        KeyframeCache {
            timestamp: None,
            started: None,
            packets: Vec::new(),
            overflowed: false,
        }
    }
}

impl<T> KeyframeCache<T> {
    /// One packet of the track, with whether it starts a key frame and its
    /// RTP timestamp. Returns whether it began a new key frame.
    pub fn observe(
        &mut self,
        now: Instant,
        starts_keyframe: bool,
        timestamp: u32,
        packet: impl FnOnce() -> T,
    ) -> bool {
        let new = starts_keyframe && self.timestamp != Some(timestamp);
        if new {
            self.timestamp = Some(timestamp);
            self.started = Some(now);
            self.packets.clear();
            self.overflowed = false;
        }
        if !self.fresh(now) {
            // Past its window: nobody will be given it any more.
            self.packets.clear();
        } else if self.packets.len() < KEYFRAME_CACHE_PACKETS {
            self.packets.push(packet());
        } else {
            self.overflowed = true;
        }
        new
    }

    /// The key frame and what followed, if it began within the window and
    /// is whole.
    pub fn replay(&self, now: Instant) -> Option<&[T]> {
        let whole = !self.overflowed && !self.packets.is_empty();
        (whole && self.fresh(now)).then_some(&self.packets[..])
    }

    fn fresh(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|s| now.saturating_duration_since(s) < KEYFRAME_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn key_frames_are_told_apart_in_each_codec() {
        // VP8: descriptor S=1 PID=0, then P=0 (key) or 1 (delta).
        assert!(starts_keyframe(Codec::Vp8, &[0x10, 0x00]));
        assert!(!starts_keyframe(Codec::Vp8, &[0x10, 0x01]));
        assert!(
            !starts_keyframe(Codec::Vp8, &[0x00, 0x00]),
            "not a frame's start"
        );
        // Extended: I with a 15-bit picture id, L, T/K: header at 6.
        assert!(starts_keyframe(
            Codec::Vp8,
            &[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x9c]
        ));
        assert!(!starts_keyframe(
            Codec::Vp8,
            &[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x9d]
        ));
        assert!(!starts_keyframe(Codec::Vp8, &[0x90, 0xe0]), "truncated");
        // VP9: I=1 (7-bit pid), P=0, B=1; with L, only spatial layer 0.
        assert!(starts_keyframe(Codec::Vp9, &[0x88, 0x05]));
        assert!(
            !starts_keyframe(Codec::Vp9, &[0xc8, 0x05]),
            "inter-predicted"
        );
        assert!(
            !starts_keyframe(Codec::Vp9, &[0x80, 0x05]),
            "not a frame's start"
        );
        assert!(starts_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x00]));
        assert!(
            !starts_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x02]),
            "spatial layer 1"
        );
        // H.264: IDR, SPS, STAP-A with SPS, FU-A start of an IDR.
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]), "a P slice");
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x09, 0xf0, 0x00, 0x02, 0x67, 0x42]
        ));
        assert!(!starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x09, 0xf0]
        ));
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85]));
        assert!(
            !starts_keyframe(Codec::H264, &[0x7c, 0x05]),
            "not the first fragment"
        );
        assert!(!starts_keyframe(Codec::H264, &[]));
        assert!(!starts_keyframe(Codec::Opus, &[0x10, 0x00]));
    }

    #[test]
    fn the_first_request_goes_at_once_and_later_ones_wait_for_its_key_frame() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert_eq!(k.request(t0), Ask::Now);
        assert_eq!(k.request(ms(t0, 20)), Ask::Coming);
        k.on_keyframe(ms(t0, 60));
        assert_eq!(k.poll_timeout(), None, "nothing waits");
    }

    #[test]
    fn requests_soon_after_a_key_frame_go_once_when_it_would_be_honoured() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        k.request(t0);
        k.on_keyframe(ms(t0, 50));
        for n in [60, 100, 300, 399] {
            assert_eq!(k.request(ms(t0, n)), Ask::Later);
        }
        assert!(k.recent_keyframe(ms(t0, 399)));
        assert_eq!(k.poll_timeout(), Some(ms(t0, 400)));
        assert!(!k.handle_timeout(ms(t0, 399)), "not before the window ends");
        assert!(k.handle_timeout(ms(t0, 400)));
        assert!(!k.handle_timeout(ms(t0, 401)), "once for everyone");
        assert_eq!(k.request(ms(t0, 420)), Ask::Coming);
    }

    #[test]
    fn an_unanswered_request_is_asked_again_after_a_while() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert_eq!(k.request(t0), Ask::Now);
        assert_eq!(k.request(ms(t0, 999)), Ask::Coming);
        assert_eq!(k.request(ms(t0, 1000)), Ask::Now);
    }

    #[test]
    fn a_request_long_after_the_last_key_frame_goes_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        k.request(t0);
        k.on_keyframe(ms(t0, 40));
        assert!(!k.recent_keyframe(ms(t0, 390)));
        assert_eq!(k.request(ms(t0, 390)), Ask::Now);
        assert!(!k.handle_timeout(ms(t0, 5000)), "nothing was waiting");
    }

    #[test]
    fn the_cache_holds_the_latest_key_frame_and_what_followed_for_one_window() {
        let t0 = Instant::now();
        let mut c = KeyframeCache::default();
        assert!(!c.observe(t0, false, 1, || 1));
        assert_eq!(c.replay(t0), None, "no key frame yet");
        assert!(c.observe(ms(t0, 10), true, 2, || 2));
        // A second start of the same picture (H.264: SPS, then the IDR).
        assert!(!c.observe(ms(t0, 10), true, 2, || 3));
        c.observe(ms(t0, 40), false, 3, || 4);
        assert_eq!(c.replay(ms(t0, 50)), Some(&[2, 3, 4][..]));
        assert_eq!(c.replay(ms(t0, 360)), None, "past the window");
        c.observe(ms(t0, 400), false, 4, || 5);
        assert!(c.packets.is_empty(), "freed once past the window");
        assert!(c.observe(ms(t0, 500), true, 9, || 6));
        assert_eq!(c.replay(ms(t0, 500)), Some(&[6][..]));
    }

    #[test]
    fn a_key_frame_followed_by_too_much_is_not_replayed() {
        let t0 = Instant::now();
        let mut c = KeyframeCache::default();
        c.observe(t0, true, 1, || 0);
        for i in 1..=KEYFRAME_CACHE_PACKETS {
            c.observe(t0, false, 2, || i);
        }
        assert_eq!(c.replay(t0), None);
        c.observe(ms(t0, 1), true, 3, || 0);
        assert!(c.replay(ms(t0, 1)).is_some());
    }
}
