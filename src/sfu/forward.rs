//! The SFU's core: str0m sessions of publishers and subscribers and the
//! RTP forwarding between them. No I/O: datagrams and `now` go in;
//! datagrams to send and control events come out (`poll_transmit`,
//! `poll_event`), and `poll_timeout` says when to call again.
//!
//! str0m runs in RTP mode: packets are relayed, never depacketized. Each
//! subscriber track gets its own sequence-number base (so its SRTP rollover
//! counter starts at 0), the subscriber's payload type for the same codec,
//! and str0m's own NACK/RTX and RTCP on both legs; TWCC feedback goes to
//! publishers only (see `rtc_config`).

use crate::ids::{Mid, Sid};
use crate::ipc::{FromSfu, SfuError, SfuStats};
use crate::limits::MAX_SFU_SESSIONS;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid as TrackMid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Key-frame requests towards one publisher track, at most one per this.
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(300);

/// Identifies a session inside this SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionId(u64);

/// One media line of a session, in m-line order.
#[derive(Debug)]
struct Track {
    mid: TrackMid,
    kind: MediaKind,
    /// Publisher: when we last asked for a key frame on it.
    last_keyframe_request: Option<Instant>,
    /// Subscriber: publisher PT → our PT (None: we cannot send that codec).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// Subscriber: subtracted from the publisher's extended sequence number.
    seq_base: Option<u64>,
}

impl Track {
    fn new(mid: TrackMid, kind: MediaKind) -> Track {
        Track {
            mid,
            kind,
            last_keyframe_request: None,
            pt_map: Vec::new(),
            seq_base: None,
        }
    }
}

#[derive(Debug)]
enum Role {
    Publisher {
        mid: Mid,
        subscribers: Vec<SessionId>,
        /// SSRC → index into `tracks`, learned from the first packets.
        ssrcs: Vec<(Ssrc, usize)>,
    },
    Subscriber {
        sid: Sid,
        publisher: SessionId,
    },
}

struct Session {
    rtc: Rtc,
    role: Role,
    tracks: Vec<Track>,
    created: Instant,
    connected: bool,
    /// When str0m next wants `Input::Timeout`.
    timeout: Instant,
}

/// What draining one session produced that concerns other sessions.
// Packets stay inline: the Vec of happenings is reused, so boxing them
// would only add an allocation per forwarded packet.
#[allow(clippy::large_enum_variant)]
enum Happening {
    Packet(RtpPacket),
    KeyframeRequest(TrackMid),
    Connected,
}

/// All sessions of one SFU process.
pub struct Sfu {
    max_sessions: usize,
    connect_timeout: Duration,
    rtx_cache_packets: usize,
    /// One DTLS certificate for every session (making one is slow).
    cert: DtlsCert,
    candidate: Candidate,
    local: SocketAddr,
    /// Boxed: a str0m `Rtc` is ~12 KiB, and a table of inline sessions
    /// would keep that much for every empty slot it grows.
    sessions: HashMap<SessionId, Box<Session>>,
    by_addr: HashMap<SocketAddr, SessionId>,
    publishers: HashMap<Mid, SessionId>,
    subscribers: HashMap<Sid, SessionId>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<FromSfu>,
    happenings: Vec<Happening>,
    forwarded_packets: u64,
    forwarded_bytes: u64,
}

impl Sfu {
    /// An SFU whose one UDP socket is reachable at `local` (the address
    /// put in every answer's host candidate).
    /// Sessions past `max_sessions` are refused; a session whose peer has
    /// not connected after `connect_timeout` is given up.
    pub fn new(
        local: SocketAddr,
        max_sessions: usize,
        connect_timeout: Duration,
        rtx_cache_packets: usize,
    ) -> Result<Sfu, String> {
        let candidate =
            Candidate::host(local, "udp").map_err(|e| format!("bad media address {local}: {e}"))?;
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or("cannot generate a DTLS certificate")?;
        Ok(Sfu {
            max_sessions: max_sessions.min(MAX_SFU_SESSIONS),
            connect_timeout,
            rtx_cache_packets,
            cert,
            candidate,
            local,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            publishers: HashMap::new(),
            subscribers: HashMap::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            happenings: Vec::new(),
            forwarded_packets: 0,
            forwarded_bytes: 0,
        })
    }

    /// The str0m configuration of a session: ICE-lite, RTP mode, Opus and
    /// the video codecs browsers and Pi encoders send, in the offerer's
    /// order of preference, so that the answer keeps its choice (str0m
    /// answers in the order of its own configuration).
    ///
    /// Subscriber sessions do not negotiate transport-wide congestion
    /// control: nothing here estimates their bandwidth (no simulcast to
    /// switch), and str0m keeps a 1000-packet send register per session
    /// for it (~45 KiB each). Publishers keep it: the browser's own
    /// bandwidth estimate runs on the feedback we send.
    fn rtc_config(&self, offer: &str, subscriber: bool) -> RtcConfig {
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_send_buffer_video(self.rtx_cache_packets)
            .clear_codecs()
            .enable_opus(true, false)
            .set_dtls_cert(self.cert.clone());
        if subscriber {
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

    /// Load and counters, for the signaling node's metrics.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            publishers: self.publishers.len() as u32,
            subscribers: self.subscribers.len() as u32,
            forwarded_packets: self.forwarded_packets,
            forwarded_bytes: self.forwarded_bytes,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<FromSfu> {
        self.events.pop_front()
    }

    /// The earliest time any session needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .map(|s| {
                if s.connected {
                    s.timeout
                } else {
                    s.timeout.min(s.created + self.connect_timeout)
                }
            })
            .min()
    }

    // ----- control -----

    /// Answers a publisher's offer.
    pub fn publish(&mut self, now: Instant, mid: Mid, offer: &str) -> Result<String, SfuError> {
        if self.publishers.contains_key(&mid) {
            return Err(SfuError::Duplicate);
        }
        let (id, answer) = self.new_session(
            now,
            offer,
            Role::Publisher {
                mid: mid.clone(),
                subscribers: Vec::new(),
                ssrcs: Vec::new(),
            },
        )?;
        self.publishers.insert(mid, id);
        Ok(answer)
    }

    /// Answers a subscriber's offer with the tracks of stream `mid`.
    pub fn subscribe(
        &mut self,
        now: Instant,
        sid: Sid,
        mid: &Mid,
        offer: &str,
    ) -> Result<String, SfuError> {
        if self.subscribers.contains_key(&sid) {
            return Err(SfuError::Duplicate);
        }
        let publisher = *self.publishers.get(mid).ok_or(SfuError::NoSuchStream)?;
        let (id, answer) = self.new_session(
            now,
            offer,
            Role::Subscriber {
                sid: sid.clone(),
                publisher,
            },
        )?;
        if let Some(Role::Publisher { subscribers, .. }) =
            self.sessions.get_mut(&publisher).map(|p| &mut p.role)
        {
            subscribers.push(id);
        }
        self.subscribers.insert(sid, id);
        Ok(answer)
    }

    /// Stops a stream and every subscription to it.
    pub fn unpublish(&mut self, mid: &Mid) {
        if let Some(id) = self.publishers.get(mid).copied() {
            self.remove(id, false);
        }
    }

    /// Stops one subscription.
    pub fn unsubscribe(&mut self, sid: &Sid) {
        if let Some(id) = self.subscribers.get(sid).copied() {
            self.remove(id, false);
        }
    }

    /// Drops every session (the control connection that owned them is gone).
    pub fn clear(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id, false);
        }
        self.events.clear();
    }

    fn new_session(
        &mut self,
        now: Instant,
        offer: &str,
        role: Role,
    ) -> Result<(SessionId, String), SfuError> {
        if self.sessions.len() >= self.max_sessions {
            return Err(SfuError::Full);
        }
        let parsed = SdpOffer::from_sdp_string(offer)
            .map_err(|e| SfuError::BadOffer(format!("unparsable SDP: {e}")))?;
        let subscriber = matches!(role, Role::Subscriber { .. });
        let mut rtc = self.rtc_config(offer, subscriber).build(now);
        rtc.add_local_candidate(self.candidate.clone());
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let session = Box::new(Session {
            rtc,
            role,
            tracks: Vec::new(),
            created: now,
            connected: false,
            timeout: now,
        });
        self.sessions.insert(id, session);
        self.drive(now, id);
        if !self.sessions.contains_key(&id) {
            return Err(SfuError::Internal("session failed at start".into()));
        }
        Ok((id, answer.to_sdp_string()))
    }

    // ----- network and time -----

    /// A datagram arrived on the media socket from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(input) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return; // Not STUN, DTLS, RTP or RTCP: a stranger's noise.
        };
        let input = Input::Receive(now, input);
        let id = match self.by_addr.get(&source) {
            Some(id) if self.sessions.get(id).is_some_and(|s| s.rtc.accepts(&input)) => *id,
            _ => {
                let Some(id) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    log::trace!("no session accepts a datagram from {source}");
                    return;
                };
                self.by_addr.insert(source, id);
                id
            }
        };
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Err(e) = s.rtc.handle_input(input) {
                log::debug!("session {id:?}: input rejected: {e}");
                s.rtc.disconnect();
            }
        }
        self.drive(now, id);
    }

    /// Gives every session whose deadline has passed its timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let connect_timeout = self.connect_timeout;
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.timeout <= now || (!s.connected && s.created + connect_timeout <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if !s.connected && s.created + connect_timeout <= now {
                log::info!("session {id:?}: no connection within {connect_timeout:?}");
                s.rtc.disconnect();
            } else if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                log::debug!("session {id:?}: timeout handling failed: {e}");
                s.rtc.disconnect();
            }
            self.drive(now, id);
        }
    }

    /// Drains one session's output, then acts on what it produced:
    /// forwards packets, relays key-frame requests, removes it if dead.
    fn drive(&mut self, now: Instant, id: SessionId) {
        let mut happenings = std::mem::take(&mut self.happenings);
        let alive = match self.sessions.get_mut(&id) {
            Some(s) => drain(s, &mut self.transmits, &mut happenings),
            None => return,
        };
        for h in happenings.drain(..) {
            match h {
                Happening::Packet(pkt) => self.forward(now, id, pkt),
                Happening::KeyframeRequest(track) => self.relay_keyframe_request(now, id, track),
                Happening::Connected => self.on_connected(now, id),
            }
        }
        self.happenings = happenings;
        if !alive {
            self.remove(id, true);
        }
    }

    fn on_connected(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        log::debug!("session {id:?} connected");
        if let Role::Subscriber { publisher, .. } = s.role {
            // Video must start at once: ask the publisher for a key frame
            // now that the subscriber can receive it.
            self.request_keyframes(now, publisher, None, true);
        }
    }

    /// Relays a subscriber's PLI/FIR to the publisher's matching track.
    fn relay_keyframe_request(&mut self, now: Instant, id: SessionId, track: TrackMid) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let Role::Subscriber { publisher, .. } = s.role else {
            return;
        };
        let Some(ordinal) = ordinal_of(&s.tracks, track) else {
            return;
        };
        self.request_keyframes(now, publisher, Some(ordinal), false);
    }

    /// Asks a publisher for a key frame on one video track (by kind
    /// ordinal) or all of them, throttled per track unless `force`.
    fn request_keyframes(
        &mut self,
        now: Instant,
        publisher: SessionId,
        only: Option<(MediaKind, usize)>,
        force: bool,
    ) {
        let Some(p) = self.sessions.get_mut(&publisher) else {
            return;
        };
        let mut asked = false;
        let mut seen = [0usize; 2];
        for t in p.tracks.iter_mut() {
            let n = &mut seen[(t.kind == MediaKind::Video) as usize];
            let ordinal = *n;
            *n += 1;
            if t.kind != MediaKind::Video || only.is_some_and(|o| o != (t.kind, ordinal)) {
                continue;
            }
            let recent = t
                .last_keyframe_request
                .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_THROTTLE);
            if recent && !force {
                continue;
            }
            if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(t.mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                t.last_keyframe_request = Some(now);
                asked = true;
            }
        }
        if asked {
            if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                log::debug!("session {publisher:?}: {e}");
                p.rtc.disconnect();
            }
            self.drive(now, publisher);
        }
    }

    /// Relays one publisher packet to each of its subscribers.
    fn forward(&mut self, now: Instant, from: SessionId, pkt: RtpPacket) {
        if pkt.payload.is_empty() {
            return; // Padding (bandwidth probing): not ours to relay.
        }
        let Some(p) = self.sessions.get_mut(&from) else {
            return;
        };
        let Some(ti) = track_of_ssrc(p, pkt.header.ssrc) else {
            log::debug!(
                "session {from:?}: packet of unknown SSRC {}",
                pkt.header.ssrc
            );
            return;
        };
        let Some(ordinal) = ordinal_of(&p.tracks, p.tracks[ti].mid) else {
            return;
        };
        let params = p
            .rtc
            .codec_config()
            .find(|c| c.pt() == pkt.header.payload_type)
            .copied();
        let Some(params) = params else {
            log::debug!(
                "session {from:?}: packet of unknown PT {}",
                pkt.header.payload_type
            );
            return;
        };
        let ext = forwardable_extensions(&pkt.header.ext_vals);
        // By index, not by a copy of the list: no allocation per packet.
        // Driving a subscriber may remove it and shift the list: then one
        // other subscriber misses this one packet, which RTX repairs.
        let mut i = 0;
        loop {
            let Some(Role::Publisher { subscribers, .. }) =
                self.sessions.get(&from).map(|s| &s.role)
            else {
                return;
            };
            let Some(&sub_id) = subscribers.get(i) else {
                return;
            };
            i += 1;
            let Some(sub) = self.sessions.get_mut(&sub_id) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            if write_to_subscriber(sub, ordinal, &params, &pkt, &ext) {
                self.forwarded_packets += 1;
                self.forwarded_bytes += pkt.payload.len() as u64;
                if let Err(e) = sub.rtc.handle_input(Input::Timeout(now)) {
                    log::debug!("session {sub_id:?}: {e}");
                    sub.rtc.disconnect();
                }
                self.drive(now, sub_id);
            }
        }
    }

    /// Removes a session (and, for a publisher, its subscribers). `report`
    /// says whether the signaling node must be told (it did not ask).
    fn remove(&mut self, id: SessionId, report: bool) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        s.rtc.disconnect();
        self.by_addr.retain(|_, v| *v != id);
        match s.role {
            Role::Publisher {
                mid, subscribers, ..
            } => {
                log::info!("stream {mid} closed");
                self.publishers.remove(&mid);
                for sub in subscribers {
                    // The signaling node removes subscriptions of a closed
                    // stream itself: no report per subscriber.
                    self.remove(sub, false);
                }
                if report {
                    self.events.push_back(FromSfu::StreamClosed { mid });
                }
            }
            Role::Subscriber { sid, publisher } => {
                log::debug!("subscription {sid} closed");
                self.subscribers.remove(&sid);
                if let Some(Role::Publisher { subscribers, .. }) =
                    self.sessions.get_mut(&publisher).map(|p| &mut p.role)
                {
                    subscribers.retain(|s| *s != id);
                }
                if report {
                    self.events.push_back(FromSfu::SubscriptionClosed { sid });
                }
            }
        }
    }
}

/// Polls a session until str0m wants a timeout. Returns false if the
/// session is dead and must be removed.
fn drain(s: &mut Session, transmits: &mut VecDeque<Transmit>, out: &mut Vec<Happening>) -> bool {
    loop {
        if !s.rtc.is_alive() {
            return false;
        }
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.timeout = t;
                return true;
            }
            Ok(Output::Transmit(t)) => transmits.push_back(t),
            Ok(Output::Event(e)) => match e {
                Event::Connected => {
                    s.connected = true;
                    out.push(Happening::Connected);
                }
                // A connected peer that went silent is gone. One that never
                // connected is given up by our own connect timeout, not by
                // ICE's (which is shorter than a slow client may need).
                Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                    if s.connected =>
                {
                    s.rtc.disconnect();
                }
                Event::MediaAdded(m) => s.tracks.push(Track::new(m.mid, m.kind)),
                Event::RtpPacket(p) => out.push(Happening::Packet(p)),
                Event::KeyframeRequest(r) => out.push(Happening::KeyframeRequest(r.mid)),
                Event::Closed => s.rtc.disconnect(),
                _ => {}
            },
            Err(e) => {
                log::debug!("session output failed: {e}");
                s.rtc.disconnect();
                return false;
            }
        }
    }
}

/// The video codecs we forward (VP8, VP9, H.264), in the order the offer's
/// first video m-line lists them; those it does not list follow.
fn video_preference(offer: &str) -> Vec<Codec> {
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

/// (kind, n): the track is the n-th track of its kind in m-line order.
/// A subscriber's n-th video track carries the publisher's n-th video.
fn ordinal_of(tracks: &[Track], mid: TrackMid) -> Option<(MediaKind, usize)> {
    let t = tracks.iter().find(|t| t.mid == mid)?;
    let n = tracks
        .iter()
        .take_while(|x| x.mid != mid)
        .filter(|x| x.kind == t.kind)
        .count();
    Some((t.kind, n))
}

/// The publisher track an SSRC belongs to, learned once per SSRC.
fn track_of_ssrc(p: &mut Session, ssrc: Ssrc) -> Option<usize> {
    let Role::Publisher { ssrcs, .. } = &mut p.role else {
        return None;
    };
    if let Some((_, i)) = ssrcs.iter().find(|(s, _)| *s == ssrc) {
        return Some(*i);
    }
    let mid = p.rtc.direct_api().stream_rx(&ssrc)?.mid();
    let i = p.tracks.iter().position(|t| t.mid == mid)?;
    ssrcs.push((ssrc, i));
    Some(i)
}

/// Header extensions worth relaying. str0m writes its own mid/rid,
/// transport-cc and abs-send-time; the publisher's must not leak through.
fn forwardable_extensions(e: &ExtensionValues) -> ExtensionValues {
    let mut x = e.clone();
    x.mid = None;
    x.rid = None;
    x.rid_repair = None;
    x.transport_cc = None;
    x.abs_send_time = None;
    x
}

/// Writes one packet to the subscriber's track matching `ordinal`.
/// Returns whether anything was written.
fn write_to_subscriber(
    sub: &mut Session,
    ordinal: (MediaKind, usize),
    params: &PayloadParams,
    pkt: &RtpPacket,
    ext: &ExtensionValues,
) -> bool {
    let mut n = 0;
    let Some(track) = sub.tracks.iter_mut().find(|t| {
        if t.kind != ordinal.0 {
            return false;
        }
        n += 1;
        n - 1 == ordinal.1
    }) else {
        return false;
    };
    let pt = match track.pt_map.iter().find(|(p, _)| *p == params.pt()) {
        Some((_, pt)) => *pt,
        None => {
            let pt = subscriber_pt(&sub.rtc, track.mid, params);
            if pt.is_none() {
                log::info!("subscriber cannot receive codec {:?}", params.spec().codec);
            }
            track.pt_map.push((params.pt(), pt));
            pt
        }
    };
    let Some(pt) = pt else {
        return false;
    };
    let seq_in: u64 = *pkt.seq_no;
    // The first packet fixes the base so the subscriber's rollover counter
    // starts at 0; older (repaired) packets from before it are skipped.
    let base = *track.seq_base.get_or_insert((seq_in >> 16) << 16);
    let Some(seq_out) = seq_in.checked_sub(base) else {
        return false;
    };
    let mid = track.mid;
    let nackable = track.kind == MediaKind::Video;
    let mut api = sub.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return false;
    };
    let write = RtpWrite::new(
        pt,
        SeqNo::from(seq_out),
        pkt.header.timestamp,
        pkt.timestamp,
        pkt.payload.clone(),
    )
    .marker(pkt.header.marker)
    .ext_vals(ext.clone())
    .nackable(nackable);
    tx.write_rtp(write);
    true
}

/// The subscriber's payload type for the publisher's codec on one m-line.
fn subscriber_pt(sub: &Rtc, track: TrackMid, params: &PayloadParams) -> Option<Pt> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerId;
    use str0m::media::Direction;

    /// An audio + video offer as a str0m peer makes it.
    fn offer(now: Instant, dir: Direction) -> String {
        let mut rtc = Rtc::builder().build(now);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        offer.to_sdp_string()
    }

    #[test]
    fn only_publisher_sessions_negotiate_transport_cc() {
        const TWCC: &str = "transport-wide-cc";
        let now = Instant::now();
        let local = "127.0.0.1:40000".parse().unwrap();
        let mut sfu = Sfu::new(local, 8, Duration::from_secs(5), 128).unwrap();
        let uid = PeerId::parse("alice").unwrap();
        let mid = Mid::random(&uid);

        let publisher = offer(now, Direction::SendOnly);
        assert!(publisher.contains(TWCC), "the offer proposes it");
        let answer = sfu.publish(now, mid.clone(), &publisher).unwrap();
        assert!(answer.contains(TWCC), "{answer}");

        let subscriber = offer(now, Direction::RecvOnly);
        assert!(subscriber.contains(TWCC), "the offer proposes it");
        let answer = sfu
            .subscribe(now, Sid::random(&uid), &mid, &subscriber)
            .unwrap();
        assert!(!answer.contains(TWCC), "{answer}");
        // Everything else of the standard map is still offered back.
        assert!(
            answer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
            "{answer}"
        );
    }

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
