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
            vp8: (params.spec().codec == Codec::Vp8)
                .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
                .flatten(),
        }
    }

    pub fn clock_rate(&self) -> u32 {
        self.params.spec().clock_rate.get()
    }
}
