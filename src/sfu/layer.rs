//! A publisher track's layers: one per simulcast encoding (`rid`), or a
//! single one for a publisher that sends one encoding. Each layer is its
//! own RTP stream with its own key frames, so each has its own key-frame
//! requests and cache, and a measured bitrate by which the layers are
//! ranked (never by their rid names, which are the client's choice).

use super::keyframe::{KeyframeCache, KeyframeRequests};
use super::packet::Media;
use super::rate::RateMeter;
use super::temporal::TemporalRates;
use crate::limits::{LAYER_IDLE, LAYER_QUIET, RECENT_PACKETS};
use std::collections::VecDeque;
use std::time::Instant;
use str0m::media::Rid;
use str0m::rtp::Ssrc;

/// One encoding of a publisher's track.
#[derive(Debug)]
pub struct Layer {
    /// None: the track is not simulcast.
    pub rid: Option<Rid>,
    /// The SSRC its media comes from now (a restarted encoder brings a
    /// new one; packets of an older one are no longer forwarded).
    pub source: Option<Ssrc>,
    pub keyframes: KeyframeRequests,
    /// The latest key frame and what followed it (video).
    pub cache: KeyframeCache<Media>,
    pub rate: RateMeter,
    /// VP8 temporal layers, if the encoding has them.
    pub temporal: TemporalRates,
    /// The latest packets (video): what overtook a key frame's first
    /// packet (lost, then repaired) is found here when that packet comes.
    recent: VecDeque<Media>,
}

impl Layer {
    pub fn new(rid: Option<Rid>) -> Layer {
        Layer {
            rid,
            source: None,
            keyframes: KeyframeRequests::default(),
            cache: KeyframeCache::default(),
            rate: RateMeter::default(),
            temporal: TemporalRates::default(),
            recent: VecDeque::new(),
        }
    }

    /// Notes a packet on its way through: its bytes, key frames seen, the
    /// cache (video). Returns, in order, what of the key frame it starts
    /// and of the frames after it came before it (its first packet was
    /// lost and has just been repaired): a subscriber that switches to this
    /// layer at it needs them too, and so does the cache. Usually none.
    pub fn observe(&mut self, now: Instant, m: &Media, video: bool) -> Vec<Media> {
        self.rate.add(now, m.payload.len());
        self.temporal.observe(now, m);
        if !video {
            return Vec::new();
        }
        let mut ahead: Vec<Media> = Vec::new();
        if m.key {
            ahead.extend(
                self.recent
                    .iter()
                    .filter(|p| p.source == m.source && p.seq > m.seq)
                    .cloned(),
            );
            ahead.sort_by_key(|p| p.seq);
        }
        if self.recent.len() == RECENT_PACKETS {
            self.recent.pop_front();
        }
        self.recent.push_back(m.clone());
        if self.cache.observe(now, m.key, m.timestamp, || m.clone()) {
            self.keyframes.on_keyframe(now);
        }
        for p in &ahead {
            self.cache.observe(now, false, p.timestamp, || p.clone());
        }
        ahead
    }

    /// Whether the publisher sends it now (a browser stops its upper
    /// layers when its own uplink or our cap is short), given when the
    /// track's latest packet of any layer came (`latest`). Silent for
    /// `LAYER_IDLE`, or for `LAYER_QUIET` while another layer of the track
    /// went on: the layers of one camera send their frames together, so a
    /// subscriber on a stopped layer is moved within a fraction of a second
    /// (a screen share that sends nothing when nothing changes is not).
    pub fn active(&self, now: Instant, latest: Option<Instant>) -> bool {
        let Some(last) = self.rate.last() else {
            return false;
        };
        let silent = now.saturating_duration_since(last);
        let others_went_on =
            latest.is_some_and(|l| l.saturating_duration_since(last) >= LAYER_QUIET);
        silent < LAYER_IDLE && !(silent >= LAYER_QUIET && others_went_on)
    }

    /// When its latest packet came.
    pub fn last_packet(&self) -> Option<Instant> {
        self.rate.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A VP8 packet: `seq`, frame `ts`, a key frame's first packet or not.
    fn packet(seq: u64, ts: u32, key: bool) -> Media {
        crate::sfu::packet::vp8_media(seq, ts, key, vec![0u8; 100])
    }

    #[test]
    fn a_key_frame_whose_first_packet_came_late_is_whole_for_who_switches_at_it() {
        let now = Instant::now();
        let mut l = Layer::new(None);
        let seqs = |ms: &[Media]| ms.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert!(l.observe(now, &packet(9, 100, false), true).is_empty());
        // The key frame at 200: 10 is lost, 12 and 11 arrive, then 10
        // repaired.
        l.observe(now, &packet(12, 200, false), true);
        l.observe(now, &packet(11, 200, false), true);
        let ahead = l.observe(now, &packet(10, 200, true), true);
        assert_eq!(seqs(&ahead), [11, 12]);
        assert_eq!(seqs(l.cache.replay(now).unwrap()), [10, 11, 12]);
        l.observe(now, &packet(13, 300, false), true);
        assert_eq!(seqs(l.cache.replay(now).unwrap()), [10, 11, 12, 13]);
        // The next frame came before the repair too: it follows.
        l.observe(now, &packet(21, 500, false), true);
        let ahead = l.observe(now, &packet(20, 500, true), true);
        assert_eq!(seqs(&ahead), [21]);
        // A key frame whose first packet comes first has nothing ahead.
        l.observe(now, &packet(14, 400, true), true);
        assert!(l.observe(now, &packet(15, 400, false), true).is_empty());
    }

    #[test]
    fn the_rate_is_measured_per_window_and_kept_when_the_layer_stops() {
        let t0 = Instant::now();
        let mut r = RateMeter::default();
        // 1250 bytes every 10 ms: 1 Mbit/s.
        for i in 0..=100 {
            r.add(t0 + Duration::from_millis(10 * i), 1250);
        }
        let bps = r.bps();
        assert!((950_000..=1_100_000).contains(&bps), "{bps}");
        // It stops: the figure stays, the layer is idle.
        let mut l = Layer::new(None);
        l.rate = r;
        let later = t0 + Duration::from_secs(1) + LAYER_IDLE;
        assert!(!l.active(later, None));
        assert_eq!(l.rate.bps(), bps);
        let soon = t0 + Duration::from_millis(1000) + LAYER_QUIET;
        assert!(l.active(soon, None), "alone and quiet: still on");
        assert!(
            !l.active(soon, Some(soon)),
            "quiet while another layer went on: stopped"
        );
    }
}
