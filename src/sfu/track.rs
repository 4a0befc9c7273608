//! Up-tracks and down-tracks: a publisher's media lines, which receive,
//! and a subscriber's, which send (Galène's `UpTrack`/`DownTrack`).
//!
//! A subscriber's n-th audio (video) track carries the publisher's n-th
//! audio (video) track: tracks are matched by [`Slot`], never by mid,
//! since both sides number their m-lines independently.

use super::codec::{forwardable_extensions, subscriber_pt};
use super::keyframe::{starts_keyframe, KeyframeCache, KeyframeRequests};
use super::rewrite::{PtMap, Rewriter};
use crate::limits::VIDEO_START_PATIENCE;
use std::sync::Arc;
use std::time::Instant;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid as TrackMid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::Rtc;

/// One publisher packet as it is relayed: what every subscriber's copy is
/// made of (the payload is shared, never copied).
#[derive(Debug, Clone)]
pub struct Media {
    pub source: Ssrc,
    /// Extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The publisher's payload type and codec.
    pub params: PayloadParams,
    pub payload: Arc<[u8]>,
    /// The header extensions worth relaying.
    pub ext: ExtensionValues,
    pub arrived: Instant,
    /// It starts a key frame.
    pub key: bool,
}

impl Media {
    pub fn new(pkt: &RtpPacket, params: PayloadParams) -> Media {
        Media {
            source: pkt.header.ssrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            params,
            payload: pkt.payload.clone(),
            ext: forwardable_extensions(&pkt.header.ext_vals),
            arrived: pkt.timestamp,
            key: starts_keyframe(params.spec().codec, &pkt.payload),
        }
    }

    fn clock_rate(&self) -> u32 {
        self.params.spec().clock_rate.get()
    }
}

/// A track's place among its session's tracks: the n-th of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub kind: MediaKind,
    pub n: usize,
}

impl Slot {
    /// The slot of a track added after `tracks`.
    fn next(tracks: impl Iterator<Item = Slot>, kind: MediaKind) -> Slot {
        Slot {
            kind,
            n: tracks.filter(|s| s.kind == kind).count(),
        }
    }
}

/// One media line a publisher sends on.
#[derive(Debug)]
pub struct UpTrack {
    pub mid: TrackMid,
    pub slot: Slot,
    /// The SSRC its media comes from now (a restarted encoder brings a
    /// new one; packets of an older one are no longer forwarded).
    pub source: Option<Ssrc>,
    pub keyframes: KeyframeRequests,
    /// The latest key frame and what followed it (video).
    pub cache: KeyframeCache<Media>,
}

impl UpTrack {
    pub fn new(tracks: &[UpTrack], mid: TrackMid, kind: MediaKind) -> UpTrack {
        UpTrack {
            mid,
            slot: Slot::next(tracks.iter().map(|t| t.slot), kind),
            source: None,
            keyframes: KeyframeRequests::default(),
            cache: KeyframeCache::default(),
        }
    }

    /// Notes a packet on its way through: key frames seen, the cache.
    pub fn observe(&mut self, now: Instant, m: &Media) {
        if self.slot.kind != MediaKind::Video {
            return;
        }
        if self.cache.observe(now, m.key, m.timestamp, || m.clone()) {
            self.keyframes.on_keyframe(now);
        }
    }
}

/// One media line a subscriber receives on.
#[derive(Debug)]
pub struct DownTrack {
    pub mid: TrackMid,
    pub slot: Slot,
    rewriter: Rewriter,
    pts: PtMap,
    /// Video: nothing is forwarded before a key frame starts (a decoder
    /// can do nothing with what comes before it), or, should none be told
    /// apart by then, before this (a codec whose key frames we do not
    /// recognise still gets through).
    start: Start,
}

/// Where a down-track stands before its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Waiting for a key frame since the first packet it was offered.
    Waiting(Option<Instant>),
    Started,
}

impl DownTrack {
    pub fn new(tracks: &[DownTrack], mid: TrackMid, kind: MediaKind) -> DownTrack {
        DownTrack {
            mid,
            slot: Slot::next(tracks.iter().map(|t| t.slot), kind),
            rewriter: Rewriter::default(),
            pts: PtMap::default(),
            start: match kind {
                MediaKind::Video => Start::Waiting(None),
                MediaKind::Audio => Start::Started,
            },
        }
    }

    /// Writes one publisher packet to the subscriber's session `rtc`.
    /// Returns whether anything was written (not: a video packet before
    /// the first key frame, a codec the subscriber cannot receive, or a
    /// packet too old for its numbering).
    pub fn write(&mut self, rtc: &mut Rtc, now: Instant, m: &Media) -> bool {
        if let Start::Waiting(since) = self.start {
            let since = since.unwrap_or(now);
            if !m.key && now.saturating_duration_since(since) < VIDEO_START_PATIENCE {
                self.start = Start::Waiting(Some(since));
                return false;
            }
            self.start = Start::Started;
        }
        let mid = self.mid;
        let pt = self.pts.get(m.params.pt(), || {
            let pt = subscriber_pt(rtc, mid, &m.params);
            if pt.is_none() {
                log::info!(
                    "subscriber cannot receive codec {:?}",
                    m.params.spec().codec
                );
            }
            pt
        });
        let Some(pt) = pt else {
            return false;
        };
        let Some(out) = self
            .rewriter
            .rewrite(m.source, m.seq, m.timestamp, now, m.clock_rate())
        else {
            return false;
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let write = RtpWrite::new(
            pt,
            SeqNo::from(out.seq),
            out.timestamp,
            m.arrived,
            m.payload.clone(),
        )
        .marker(m.marker)
        .ext_vals(m.ext.clone())
        .nackable(self.slot.kind == MediaKind::Video);
        tx.write_rtp(write);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_tracks_per_kind_in_order() {
        let mut tracks: Vec<UpTrack> = Vec::new();
        let kinds = [
            MediaKind::Audio,
            MediaKind::Video,
            MediaKind::Video,
            MediaKind::Audio,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mid = TrackMid::from(i.to_string().as_str());
            let t = UpTrack::new(&tracks, mid, kind);
            tracks.push(t);
        }
        let slots: Vec<(MediaKind, usize)> =
            tracks.iter().map(|t| (t.slot.kind, t.slot.n)).collect();
        assert_eq!(
            slots,
            [
                (MediaKind::Audio, 0),
                (MediaKind::Video, 0),
                (MediaKind::Video, 1),
                (MediaKind::Audio, 1)
            ]
        );
    }
}
