//! One publisher packet as the SFU relays it: parsed once when it
//! arrives, then written to each subscriber that takes it.

use super::codec::forwardable_extensions;
use super::keyframe::starts_keyframe;
use std::sync::Arc;
use std::time::Instant;
use str0m::format::{Codec, PayloadParams};
use str0m::rtp::{ExtensionValues, RtpPacket, Ssrc, Vp8Descriptor};

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
    /// VP8: its payload descriptor (picture ids are rewritten per
    /// subscriber on a layer switch).
    pub vp8: Option<Vp8Descriptor>,
    /// VP8 with temporal layers: the frame's layer.
    pub temporal: Option<Temporal>,
}

/// A frame's temporal layer, from the VP8 payload descriptor (RFC 7741
/// 4.2: the T bit, then TID and Y). A frame of layer n refers only to
/// frames of layers up to n, so a subscriber can be sent layers 0..=n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub tid: u8,
    /// Y: it refers only to layer-0 frames (a switch up may start here).
    pub sync: bool,
}

impl Temporal {
    /// The temporal layer of a VP8 payload, if its descriptor has one.
    pub fn of_vp8(payload: &[u8]) -> Option<Temporal> {
        let first = *payload.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        let ext = *payload.get(1)?;
        if ext & 0x20 == 0 {
            return None;
        }
        let mut at = 2;
        if ext & 0x80 != 0 {
            // PictureID: one byte, two when its M bit is set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        let t = *payload.get(at)?;
        Some(Temporal {
            tid: t >> 6,
            sync: t & 0x20 != 0,
        })
    }
}

impl Media {
    pub fn new(pkt: &RtpPacket, params: PayloadParams) -> Media {
        let vp8 = (params.spec().codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
            .flatten();
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
            vp8,
            temporal: vp8.and_then(|_| Temporal::of_vp8(&pkt.payload)),
        }
    }

    pub fn clock_rate(&self) -> u32 {
        self.params.spec().clock_rate.get()
    }
}

/// A VP8 packet for unit tests: `seq` of source 1, frame `ts`, whether it
/// starts a key frame, and its payload (descriptor first).
#[cfg(test)]
pub fn vp8_media(seq: u64, ts: u32, key: bool, payload: Vec<u8>) -> Media {
    use str0m::format::{CodecSpec, FormatParams};
    use str0m::media::{Frequency, Pt};
    let spec = CodecSpec {
        codec: Codec::Vp8,
        clock_rate: Frequency::NINETY_KHZ,
        channels: None,
        format: FormatParams::default(),
    };
    let payload: Arc<[u8]> = Arc::from(payload);
    Media {
        source: Ssrc::from(1),
        seq,
        timestamp: ts,
        marker: true,
        params: PayloadParams::new(Pt::from(96), None, spec),
        vp8: Vp8Descriptor::parse(&payload).ok(),
        temporal: Temporal::of_vp8(&payload),
        payload,
        ext: ExtensionValues::default(),
        arrived: Instant::now(),
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporal_layer_is_read_past_the_optional_fields() {
        // X, I with a 15-bit picture id, L, T: TID 2, Y.
        let full = [0x90, 0xe0, 0x81, 0x23, 0x07, 0b1010_0000, 0x9d];
        assert_eq!(
            Temporal::of_vp8(&full),
            Some(Temporal { tid: 2, sync: true })
        );
        // X, T only: TID 1.
        assert_eq!(
            Temporal::of_vp8(&[0x80, 0x20, 0b0100_0000, 0]),
            Some(Temporal {
                tid: 1,
                sync: false
            })
        );
        // A 7-bit picture id, then T: TID 0.
        assert_eq!(
            Temporal::of_vp8(&[0x80, 0xa0, 0x05, 0x00, 0]).map(|t| t.tid),
            Some(0)
        );
        // No X, or X without T: no layer; cut short: none either.
        assert_eq!(Temporal::of_vp8(&[0x10, 0x9d]), None);
        assert_eq!(Temporal::of_vp8(&[0x80, 0x80, 0x05, 0]), None);
        assert_eq!(Temporal::of_vp8(&[0x80, 0xe0, 0x81]), None);
        assert_eq!(Temporal::of_vp8(&[]), None);
    }
}
