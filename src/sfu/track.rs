//! Up-tracks and down-tracks: a publisher's media lines, which receive,
//! and a subscriber's, which send (Galène's `UpTrack`/`DownTrack`).
//!
//! A subscriber's n-th audio (video) track carries the publisher's n-th
//! audio (video) track: tracks are matched by [`Slot`], never by mid,
//! since both sides number their m-lines independently.

use super::adapt::{Ceiling, Choice, LayerView};
use super::codec::subscriber_pt;
use super::layer::Layer;
pub use super::packet::Media;
use super::rewrite::{PtMap, Rewriter, Vp8Ids};
use super::temporal::TemporalFilter;
use crate::limits::{MAX_LAYERS, VIDEO_START_PATIENCE};
use std::time::Instant;
use str0m::media::{MediaKind, Mid as TrackMid, Rid};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Rtc;

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

/// One media line a publisher sends on: one layer per simulcast encoding
/// it offered, or one.
#[derive(Debug)]
pub struct UpTrack {
    pub mid: TrackMid,
    pub slot: Slot,
    pub layers: Vec<Layer>,
}

impl UpTrack {
    /// A track added after `tracks`, receiving the encodings `rids`
    /// (empty: not simulcast).
    pub fn new(tracks: &[UpTrack], mid: TrackMid, kind: MediaKind, rids: &[Rid]) -> UpTrack {
        let layers = if rids.is_empty() {
            vec![Layer::new(None)]
        } else {
            rids.iter()
                .take(MAX_LAYERS)
                .map(|r| Layer::new(Some(*r)))
                .collect()
        };
        UpTrack {
            mid,
            slot: Slot::next(tracks.iter().map(|t| t.slot), kind),
            layers,
        }
    }

    /// Whether subscribers choose among several layers.
    pub fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The layers as the allocator sees them.
    pub fn views(&self, now: Instant) -> Vec<LayerView> {
        let latest = self.layers.iter().filter_map(|l| l.last_packet()).max();
        self.layers
            .iter()
            .map(|l| LayerView {
                bps: l.rate.bps(),
                active: l.active(now, latest),
            })
            .collect()
    }
}

/// One media line a subscriber receives on: one layer of the publisher's
/// track at a time.
#[derive(Debug)]
pub struct DownTrack {
    pub mid: TrackMid,
    pub slot: Slot,
    rewriter: Rewriter,
    vp8: Vp8Ids,
    pts: PtMap,
    /// The layer forwarded now; None before the first packet (video waits
    /// for a key frame: a decoder can do nothing with what comes before).
    pub current: Option<usize>,
    /// The layer it should receive: it becomes `current` at that layer's
    /// next key frame (the first layer until the allocator chooses; None:
    /// no layer is being sent).
    pub target: Option<usize>,
    pub choice: Choice,
    /// The client's wish (the pin-layer request), if any.
    pub ceiling: Option<Ceiling>,
    /// The VP8 temporal layers it is sent (a single-layer publisher).
    pub temporal: TemporalFilter,
    /// Since when it has waited for a key frame of `target` to start; past
    /// `VIDEO_START_PATIENCE` any packet of it will do (a codec whose key
    /// frames we do not recognise still gets through).
    waiting_since: Option<Instant>,
}

impl DownTrack {
    pub fn new(tracks: &[DownTrack], mid: TrackMid, kind: MediaKind) -> DownTrack {
        DownTrack {
            mid,
            slot: Slot::next(tracks.iter().map(|t| t.slot), kind),
            rewriter: Rewriter::default(),
            vp8: Vp8Ids::default(),
            pts: PtMap::default(),
            // Audio has one layer and needs no key frame.
            current: (kind == MediaKind::Audio).then_some(0),
            target: Some(0),
            choice: Choice::default(),
            ceiling: None,
            temporal: TemporalFilter::default(),
            waiting_since: None,
        }
    }

    /// The layer whose key frame this track waits for (to start, or to
    /// switch to it), if it waits for one.
    pub fn awaited_keyframe(&self) -> Option<usize> {
        self.target.filter(|&t| self.current != Some(t))
    }

    /// The layer whose key frames this track needs now: the target while
    /// a switch (or the start) waits for one, else the current one.
    pub fn keyframe_layer(&self) -> usize {
        self.target.or(self.current).unwrap_or(0)
    }

    /// Whether packet `m` of layer `layer` goes to this track: a packet of
    /// the current layer, or the first key frame of the target layer,
    /// which makes it current.
    pub fn accepts(&mut self, now: Instant, layer: usize, m: &Media) -> bool {
        if self.current == Some(layer) {
            return true;
        }
        if self.target != Some(layer) {
            return false;
        }
        let patient = self.current.is_none() && {
            let since = *self.waiting_since.get_or_insert(now);
            now.saturating_duration_since(since) >= VIDEO_START_PATIENCE
        };
        if m.key || patient {
            self.current = Some(layer);
            self.waiting_since = None;
            return true;
        }
        false
    }

    /// Whether a packet this track accepted is sent, by the temporal
    /// layers it receives. One left out is skipped in the numbering (its
    /// sequence number, its picture id), so the subscriber sees no gap.
    pub fn keeps(&mut self, m: &Media) -> bool {
        if self.temporal.keeps(m) {
            return true;
        }
        self.rewriter.skip(m.source, m.seq);
        if let Some(p) = m.vp8.and_then(|d| d.picture_id()) {
            self.vp8.skip(m.source, p);
        }
        false
    }

    /// Writes one publisher packet to the subscriber's session `rtc`.
    /// Returns whether anything was written (not: a codec the subscriber
    /// cannot receive, or a packet too old for its numbering).
    pub fn write(&mut self, rtc: &mut Rtc, now: Instant, m: &Media) -> bool {
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
        let patch = m.vp8.and_then(|d| {
            let ids = self.vp8.rewrite(m.source, d.picture_id(), d.tl0_pic_idx());
            if !ids.changed {
                return None;
            }
            let build = |pid: Option<u16>| {
                let mut p = d.patch();
                if let Some(pid) = pid {
                    p = p.picture_id(pid);
                }
                if let Some(t) = ids.tl0_pic_idx {
                    p = p.tl0_pic_idx(t);
                }
                p.build()
            };
            // A 7-bit picture id keeps its width (it wraps at 128).
            build(ids.picture_id)
                .or_else(|_| build(ids.picture_id.map(|p| p & 0x7f)))
                .ok()
        });
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let mut write = RtpWrite::new(
            pt,
            SeqNo::from(out.seq),
            out.timestamp,
            m.arrived,
            m.payload.clone(),
        )
        .marker(m.marker)
        .ext_vals(m.ext.clone())
        .nackable(self.slot.kind == MediaKind::Video);
        if let Some(p) = patch {
            write = write.vp8_patch(p);
        }
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
            let t = UpTrack::new(&tracks, mid, kind, &[]);
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
