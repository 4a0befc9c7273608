//! Codec negotiation: what a session's str0m configuration offers back,
//! and which payload type a subscriber uses for a publisher's codec.

use crate::limits::{BWE_INITIAL_BPS, STATS_EVERY};
use str0m::bwe::Bitrate;
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{Mid as TrackMid, Pt};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues};
use str0m::{Rtc, RtcConfig};

/// The str0m configuration of a session: ICE-lite, RTP mode, Opus and
/// the video codecs browsers and Pi encoders send, in the offerer's order
/// of preference, so that the answer keeps its choice (str0m answers in
/// the order of its own configuration).
///
/// Publishers negotiate transport-wide congestion control: the browser's
/// own bandwidth estimate runs on the feedback we send. A subscriber does
/// only where its bandwidth matters (`Link::Estimated`: a simulcast
/// publisher's layers to choose from): str0m's estimator then runs on its
/// session, at a cost measured in the README (a 1000-packet send register,
/// ~45 KiB, and a pacer), which a subscriber with nothing to switch does
/// not pay.
pub fn rtc_config(offer: &str, link: Link, cert: &DtlsCert, rtx_cache_packets: usize) -> RtcConfig {
    let mut config = Rtc::builder()
        // A relay calls another board's SFU, which is ICE-lite: it must
        // run full ICE itself (and so be the controlling side).
        .set_ice_lite(link != Link::Relay)
        .set_rtp_mode(true)
        .set_send_buffer_video(rtx_cache_packets)
        .clear_codecs()
        .enable_opus(true, false)
        .set_dtls_cert(cert.clone());
    if link == Link::Estimated {
        config = config.enable_bwe(Some(Bitrate::bps(BWE_INITIAL_BPS)));
    }
    if link == Link::Plain {
        // Its receiver reports' loss, once a second: what guards the
        // temporal layers it is sent.
        config = config.set_stats_interval(Some(STATS_EVERY));
        let mut exts = ExtensionMap::empty();
        for (id, ext) in ExtensionMap::standard().iter() {
            if *ext != Extension::TransportSequenceNumber {
                exts.set(id, ext.clone());
            }
        }
        config = config.set_extension_map(exts);
    }
    for codec in video_preference(offer) {
        config = match codec {
            Codec::Vp8 => config.enable_vp8(true),
            Codec::Vp9 => config.enable_vp9(true),
            _ => config.enable_h264(true),
        };
    }
    config
}

/// What a session's link needs from str0m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A publisher's: transport-wide feedback for its sender's estimate.
    Publisher,
    /// A subscriber's whose bandwidth is estimated (TWCC, probing).
    Estimated,
    /// A subscriber's with no estimate: no transport-wide numbering.
    Plain,
    /// A relay's (this SFU receives another board's stream as a client of
    /// that board's SFU): a publisher's, with full ICE.
    Relay,
}

/// The video codecs we forward (VP8, VP9, H.264), in the order the offer's
/// first video m-line lists them; those it does not list follow.
pub fn video_preference(offer: &str) -> Vec<Codec> {
    let mut order = Vec::with_capacity(3);
    let lines = || offer.lines().map(str::trim_end);
    let pts = lines()
        .find_map(|l| l.strip_prefix("m=video "))
        .map(|m| m.split(' ').skip(2).collect::<Vec<_>>())
        .unwrap_or_default();
    for pt in pts {
        let prefix = format!("a=rtpmap:{pt} ");
        let Some(name) = lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
            continue;
        };
        let codec = match name
            .split('/')
            .next()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("VP8") => Codec::Vp8,
            Some("VP9") => Codec::Vp9,
            Some("H264") => Codec::H264,
            _ => continue,
        };
        if !order.contains(&codec) {
            order.push(codec);
        }
    }
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264] {
        if !order.contains(&codec) {
            order.push(codec);
        }
    }
    order
}

/// The subscriber's payload type for the publisher's codec on one m-line
/// (None: the subscriber did not negotiate that codec there).
pub fn subscriber_pt(sub: &Rtc, track: TrackMid, params: &PayloadParams) -> Option<Pt> {
    let media = sub.media(track)?;
    let negotiated: Vec<PayloadParams> = sub
        .codec_config()
        .params()
        .iter()
        .filter(|p| media.remote_pts().contains(&p.pt()))
        .copied()
        .collect();
    let config = CodecConfig::new_from_payload_params(negotiated);
    let m = config.match_params(*params)?;
    // match_params returns the best score, which may still be a mismatch.
    (m.spec().codec == params.spec().codec).then(|| m.pt())
}

/// Header extensions worth relaying. str0m writes its own mid/rid,
/// transport-cc and abs-send-time; the publisher's must not leak through.
pub fn forwardable_extensions(e: &ExtensionValues) -> ExtensionValues {
    let mut x = e.clone();
    x.mid = None;
    x.rid = None;
    x.rid_repair = None;
    x.transport_cc = None;
    x.abs_send_time = None;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_preference_follows_the_offer() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 103 98 96\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:98 VP9/90000\r\na=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n";
        assert_eq!(
            video_preference(offer),
            vec![Codec::H264, Codec::Vp9, Codec::Vp8]
        );
        assert_eq!(
            video_preference("v=0\r\n"),
            vec![Codec::Vp8, Codec::Vp9, Codec::H264]
        );
    }
}
