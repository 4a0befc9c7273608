//! A real WebRTC peer: str0m (not ICE-lite) on its own UDP socket, for
//! the tests and the load tool. A publisher sends synthetic media: Opus and
//! VP8 frames (str0m packetizes), or, for load, RTP packets of a given size
//! at a given bitrate. A subscriber counts what it receives.

use crate::video::VideoPacket;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use wren::sfu::keyframe::starts_keyframe;

/// A simulcast publisher's layers: rid and bytes per 20 ms frame (low,
/// middle, top: ~150 kbit/s, ~500 kbit/s, ~1.2 Mbit/s). Each frame's bytes
/// after the first are [`fill`], so a subscriber can tell which layer it
/// receives.
pub const LAYERS: [(&str, usize); 3] = [("q", 375), ("h", 1250), ("f", 3000)];

/// The fill byte of a test publisher's video: `0x10 + layer`, with bit 5
/// set in every packet of a key frame. (Only a key frame's first packet
/// says so in its VP8 header: the fill tells a subscriber that a packet it
/// starts with continues a key frame whose first packet was lost.)
pub fn fill(layer: usize, key_frame: bool) -> u8 {
    0x10 | layer as u8 | (key_frame as u8) << 5
}

/// What a received packet's last byte (a [`fill`]) tells: its layer and
/// whether it belongs to a key frame.
pub fn read_fill(b: u8) -> (u8, bool) {
    (b & 0x0f, b & 0x20 != 0)
}

/// How many of a subscriber's first video packets [`Peer::video_head`]
/// keeps.
const VIDEO_HEAD: usize = 8;

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
enum Sending {
    Nothing,
    /// A 3 KB VP8 frame (or one per simulcast layer) and a 60 B Opus
    /// frame every `every` (20 ms: a camera at 50 frames a second).
    Frames {
        every: Duration,
        simulcast: bool,
    },
    /// RTP packets of `size` payload bytes at `bps` on the video track:
    /// evenly spaced (`fps` 0), or as `fps` frames a second, each a burst
    /// of packets with one timestamp, as a camera sends them.
    Load {
        bps: u64,
        size: usize,
        fps: u32,
    },
}

/// One WebRTC endpoint, publisher or subscriber, driven by polling (see
/// [`run_until`]).
pub struct Peer {
    /// Its str0m session (for what the fields here do not show).
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    offer: String,
    /// When it connected (ICE and DTLS done).
    pub connected_at: Option<Instant>,
    tracks: Vec<(Mid, MediaKind)>,
    /// RTP packets received per kind: [audio, video].
    pub received: [usize; 2],
    /// RTP payload bytes received.
    pub received_bytes: u64,
    /// The distinct payload types of the RTP packets received, per kind:
    /// [audio, video].
    pub received_pts: [Vec<u8>; 2],
    /// RTP packets sent (load and RTP-mode publishers).
    pub sent: u64,
    /// Key-frame requests (PLI/FIR) received.
    pub keyframe_requests: usize,
    /// When the first of them arrived.
    pub first_keyframe_request: Option<Instant>,
    /// When the first video packet arrived (time to first frame).
    pub first_video_packet: Option<Instant>,
    /// Whether the subscriber's video starts at a key frame: the earliest
    /// video packet in sequence order (a decoder's view; a packet lost on
    /// the way and repaired by RTX arrives after later ones) is a key
    /// frame's first.
    pub first_video_key: Option<bool>,
    /// That earliest packet's (extended) sequence number.
    first_video_seq: Option<u64>,
    /// The first video packets in order of arrival (a failing test shows
    /// them).
    pub video_head: Vec<VideoPacket>,
    /// Every video packet received, when recording (see
    /// [`Peer::recording_subscriber_at`]).
    pub video_log: Option<Vec<VideoPacket>>,
    /// Frames publisher: the next frame is a key frame (the first, and one
    /// asked for). Like Chrome, a request less than 300 ms after the last
    /// key frame is ignored.
    keyframe_wanted: [bool; LAYERS.len()],
    last_keyframe: [Option<Instant>; LAYERS.len()],
    sending: Sending,
    next_send: Option<Instant>,
    start: Instant,
    buf: Vec<u8>,
}

fn kind_index(k: MediaKind) -> usize {
    (k == MediaKind::Video) as usize
}

impl Peer {
    /// A publisher: sendonly audio + video, frame mode (str0m packetizes).
    pub fn publisher() -> Peer {
        Peer::publisher_every(Duration::from_millis(20))
    }

    /// A publisher that sends a frame of each kind every `every`: a
    /// lighter load, for many publishers under an emulator.
    pub fn publisher_every(every: Duration) -> Peer {
        let sending = Sending::Frames {
            every,
            simulcast: false,
        };
        Peer::new(false, Direction::SendOnly, sending)
    }

    /// A publisher like [`Peer::publisher`] on `ip` (to reach a server
    /// that is not on loopback).
    pub fn publisher_at(ip: IpAddr) -> Peer {
        let sending = Sending::Frames {
            every: Duration::from_millis(20),
            simulcast: false,
        };
        Peer::build(Rtc::builder(), ip, Direction::SendOnly, sending)
    }

    /// A subscriber like [`Peer::subscriber`] on `ip`.
    pub fn subscriber_at(ip: IpAddr) -> Peer {
        let config = Rtc::builder().set_rtp_mode(true);
        Peer::build(config, ip, Direction::RecvOnly, Sending::Nothing)
    }

    /// A publisher of three simulcast layers ([`LAYERS`]) on `ip`, as
    /// Chrome sends them with three `sendEncodings`.
    pub fn simulcast_publisher_at(ip: IpAddr) -> Peer {
        let sending = Sending::Frames {
            every: Duration::from_millis(20),
            simulcast: true,
        };
        let config = Rtc::builder().set_rtp_mode(false);
        Peer::build(config, ip, Direction::SendOnly, sending)
    }

    /// A subscriber on `ip` that records every video packet.
    pub fn recording_subscriber_at(ip: IpAddr) -> Peer {
        let config = Rtc::builder().set_rtp_mode(true);
        let mut p = Peer::build(config, ip, Direction::RecvOnly, Sending::Nothing);
        p.video_log = Some(Vec::new());
        p
    }

    /// A publisher of load: `size`-byte RTP payloads at `bps` bits/s,
    /// evenly spaced (`fps` 0) or in `fps` bursts a second.
    pub fn load_publisher(bps: u64, size: usize, fps: u32) -> Peer {
        Peer::new(true, Direction::SendOnly, Sending::Load { bps, size, fps })
    }

    /// A publisher in RTP mode that sends nothing by itself: what it sends
    /// is written with [`Peer::write_rtp`] (the hostile tests).
    pub fn rtp_publisher() -> Peer {
        Peer::new(true, Direction::SendOnly, Sending::Nothing)
    }

    /// A subscriber: recvonly audio + video, RTP mode (we count packets).
    pub fn subscriber() -> Peer {
        Peer::subscriber_at(Ipv4Addr::LOCALHOST.into())
    }

    /// A subscriber whose codec table has only Opus and VP8 (with RTX), at
    /// these payload types instead of str0m's (111; 96 and 97), so that the
    /// SFU must map the publisher's payload types to its own.
    pub fn subscriber_with_pts(opus: u8, vp8: u8, vp8_rtx: u8) -> Peer {
        let mut config = Rtc::builder().set_rtp_mode(true).clear_codecs();
        let codecs = config.codec_config();
        codecs.add_config(
            Pt::new_with_value(opus),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                ..Default::default()
            },
        );
        codecs.add_config(
            Pt::new_with_value(vp8),
            Some(Pt::new_with_value(vp8_rtx)),
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            FormatParams::default(),
        );
        Peer::with_config(config, Direction::RecvOnly, Sending::Nothing)
    }

    fn new(rtp_mode: bool, dir: Direction, sending: Sending) -> Peer {
        Peer::with_config(Rtc::builder().set_rtp_mode(rtp_mode), dir, sending)
    }

    fn with_config(config: RtcConfig, dir: Direction, sending: Sending) -> Peer {
        Peer::build(config, Ipv4Addr::LOCALHOST.into(), dir, sending)
    }

    /// A peer whose socket is bound on `ip` (in the network namespace of
    /// the calling thread).
    fn build(config: RtcConfig, ip: IpAddr, dir: Direction, sending: Sending) -> Peer {
        let socket = UdpSocket::bind((ip, 0)).expect("UDP socket");
        socket.set_nonblocking(true).expect("non-blocking");
        let local = socket.local_addr().expect("bound");
        let now = Instant::now();
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
        let mut api = rtc.sdp_api();
        // Our own m-lines: str0m reports MediaAdded only for remote ones.
        let simulcast = matches!(
            sending,
            Sending::Frames {
                simulcast: true,
                ..
            }
        )
        .then(|| {
            let mut s = Simulcast::new();
            for (rid, _) in LAYERS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let tracks = vec![
            (
                api.add_media(MediaKind::Audio, dir, None, None, None),
                MediaKind::Audio,
            ),
            (
                api.add_media(MediaKind::Video, dir, None, None, simulcast),
                MediaKind::Video,
            ),
        ];
        let (offer, pending) = api.apply().expect("an offer");
        let mut p = Peer {
            rtc,
            socket,
            local,
            pending: Some(pending),
            offer: offer.to_sdp_string(),
            connected_at: None,
            tracks,
            received: [0, 0],
            received_bytes: 0,
            received_pts: [Vec::new(), Vec::new()],
            sent: 0,
            keyframe_requests: 0,
            first_keyframe_request: None,
            first_video_packet: None,
            first_video_key: None,
            first_video_seq: None,
            video_head: Vec::new(),
            video_log: None,
            keyframe_wanted: [true; LAYERS.len()],
            last_keyframe: [None; LAYERS.len()],
            sending,
            next_send: None,
            start: now,
            buf: vec![0; 2048],
        };
        p.drain(now);
        p
    }

    /// The SDP offer to send in publish/subscribe.
    pub fn offer(&self) -> String {
        self.offer.clone()
    }

    /// Applies the SDP answer from the publish/subscribe response; the
    /// peer then starts ICE towards the SFU.
    pub fn accept_answer(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).expect("a parsable answer");
        let pending = self.pending.take().expect("offer pending");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        self.drain(Instant::now());
    }

    /// The payload types the answer accepted on this peer's track of
    /// `kind` (empty before the answer).
    pub fn remote_pts(&self, kind: MediaKind) -> Vec<Pt> {
        self.tracks
            .iter()
            .find(|t| t.1 == kind)
            .and_then(|t| self.rtc.media(t.0))
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default()
    }

    /// Writes one RTP packet, whatever its payload type, numbers, marker,
    /// payload and header extensions, on this peer's track of `kind`
    /// through its session (so it leaves SRTP-protected), and sends it.
    /// RTP mode only. Returns whether the track's send stream took it.
    pub fn write_rtp(&mut self, kind: MediaKind, write: RtpWrite) -> bool {
        let Some(&(mid, _)) = self.tracks.iter().find(|t| t.1 == kind) else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        tx.write_rtp(write);
        self.sent += 1;
        self.drain(Instant::now());
        true
    }

    /// Sends raw bytes from this peer's own socket, outside its session.
    pub fn send_raw(&self, to: SocketAddr, data: &[u8]) {
        let _ = self.socket.send_to(data, to);
    }

    /// One round of I/O: every datagram waiting, the timeout, what is due
    /// to be sent. Returns whether a datagram came in.
    pub fn poll(&mut self) -> bool {
        let mut busy = false;
        loop {
            let now = Instant::now();
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    busy = true;
                    if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &self.buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(now, r));
                    }
                    self.drain(now);
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.send_due(now);
        self.drain(now);
        busy
    }

    /// Runs this peer alone for a while.
    pub fn run_for(&mut self, d: Duration) {
        run_all(&mut [self], d);
    }

    fn send_due(&mut self, now: Instant) {
        if !self.connected() {
            return;
        }
        let interval = match self.sending {
            Sending::Nothing => return,
            Sending::Frames { every, .. } => every,
            Sending::Load { bps, size, fps } => match fps {
                0 => Duration::from_nanos((size as u64 * 8 * 1_000_000_000) / bps.max(1)),
                fps => Duration::from_nanos(1_000_000_000 / fps as u64),
            },
        };
        let mut due = *self.next_send.get_or_insert(now);
        // Catch up at most a few intervals: a stalled loop must not burst.
        let mut budget = 8;
        while due <= now && budget > 0 {
            due += interval;
            budget -= 1;
            match self.sending {
                Sending::Frames { simulcast, .. } => self.write_frames(now, simulcast),
                Sending::Load { bps, size, fps } => {
                    // One packet, or a frame's worth with one timestamp.
                    let n = match fps {
                        0 => 1,
                        _ => (bps / 8 / fps as u64).div_ceil(size as u64).max(1),
                    };
                    let ts = ((now - self.start).as_micros() as u64 * 90 / 1000) as u32;
                    // Its first packet starts a key frame when one is due
                    // (the first, and one asked for), as a camera's would.
                    let key = std::mem::take(&mut self.keyframe_wanted[0]);
                    if key {
                        self.last_keyframe[0] = Some(now);
                    }
                    for i in 0..n {
                        self.write_load(now, size, ts, key, i == 0, i + 1 == n);
                    }
                }
                Sending::Nothing => {}
            }
        }
        self.next_send = Some(if due <= now { now + interval } else { due });
    }

    fn write_frames(&mut self, now: Instant, simulcast: bool) {
        self.sent += 1;
        let n = self.sent;
        let elapsed = now - self.start;
        let layers: Vec<(Option<Rid>, usize)> = if simulcast {
            LAYERS
                .iter()
                .map(|(r, n)| (Some(Rid::from(*r)), *n))
                .collect()
        } else {
            vec![(None, 3000)]
        };
        for (mid, kind) in self.tracks.clone() {
            let encodings = match kind {
                MediaKind::Audio => vec![(None, 60)],
                MediaKind::Video => layers.clone(),
            };
            for (i, (rid, size)) in encodings.into_iter().enumerate() {
                let Some(mut writer) = self.rtc.writer(mid) else {
                    continue;
                };
                let (codec, freq, data) = match kind {
                    MediaKind::Audio => {
                        (Codec::Opus, Frequency::FORTY_EIGHT_KHZ, vec![0xf8u8; size])
                    }
                    // A "frame" of several RTP packets. The VP8 payload
                    // header's first bit is 0 on a key frame; the fill
                    // tells the layer.
                    MediaKind::Video => {
                        let key = std::mem::take(&mut self.keyframe_wanted[i]);
                        if key {
                            self.last_keyframe[i] = Some(now);
                        }
                        let mut d = vec![fill(i, key); size];
                        d[0] = !key as u8;
                        d[1] = n as u8;
                        (Codec::Vp8, Frequency::NINETY_KHZ, d)
                    }
                };
                let Some(pt) = writer
                    .payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
                else {
                    continue;
                };
                if let Some(rid) = rid {
                    writer = writer.rid(rid);
                }
                let ticks = elapsed.as_micros() as u64 * freq.get() as u64 / 1_000_000;
                let _ = writer.write(pt, now, MediaTime::new(ticks, freq), data);
            }
        }
    }

    /// One packet of a load frame: the frame's `first`, or its `last`
    /// (marked), of a `key_frame` or not.
    fn write_load(
        &mut self,
        now: Instant,
        size: usize,
        ts: u32,
        key_frame: bool,
        first: bool,
        last: bool,
    ) {
        let Some(&(mid, _)) = self.tracks.iter().find(|t| t.1 == MediaKind::Video) else {
            return;
        };
        let Some(pt) = self.rtc.media(mid).and_then(|m| {
            let pts = m.remote_pts();
            self.rtc
                .codec_config()
                .iter()
                .find(|p| p.spec().codec == Codec::Vp8 && pts.contains(&p.pt()))
                .map(|p| p.pt())
        }) else {
            return;
        };
        let mut payload = vec![fill(0, key_frame); size.max(2)];
        payload[0] = 0x10; // VP8 descriptor: start of a partition.
        payload[1] = !(key_frame && first) as u8; // the VP8 header's P bit: 0 on a key frame
        let seq = SeqNo::from(self.sent + 1);
        let mut api = self.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.write_rtp(RtpWrite::new(pt, seq, ts, now, payload).marker(last));
            self.sent += 1;
        }
    }

    /// ICE and DTLS are up.
    pub fn connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// How the subscriber's video began, for a failing test to show: how
    /// long after connecting the first packet came, and the first packets
    /// in order of arrival (sequence number, RTP timestamp, "K" starts a
    /// key frame, "k" continues one, "d" is a delta frame's).
    pub fn video_start(&self) -> String {
        let after = self
            .first_video_packet
            .zip(self.connected_at)
            .map(|(f, c)| f.saturating_duration_since(c));
        let head: Vec<String> = self
            .video_head
            .iter()
            .map(|v| {
                let kind = match (v.key, v.in_key) {
                    (true, _) => "K",
                    (false, true) => "k",
                    (false, false) => "d",
                };
                format!("{} {} {kind}", v.seq, v.timestamp)
            })
            .collect();
        format!(
            "first video {after:?} after connecting: {}",
            head.join(", ")
        )
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => return,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        self.connected_at.get_or_insert(now);
                    }
                    Event::RtpPacket(p) => {
                        let kind = self
                            .rtc
                            .direct_api()
                            .stream_rx(&p.header.ssrc)
                            .map(|s| s.mid())
                            .and_then(|mid| self.tracks.iter().find(|t| t.0 == mid))
                            .map(|t| t.1);
                        if let Some(kind) = kind {
                            self.received[kind_index(kind)] += 1;
                            let pts = &mut self.received_pts[kind_index(kind)];
                            let pt: u8 = *p.header.payload_type;
                            if !pts.contains(&pt) {
                                pts.push(pt);
                            }
                            self.received_bytes += p.payload.len() as u64;
                            if kind == MediaKind::Video {
                                let (layer, in_key) =
                                    read_fill(p.payload.last().copied().unwrap_or(0));
                                let v = VideoPacket {
                                    seq: *p.seq_no,
                                    timestamp: p.header.timestamp,
                                    key: starts_keyframe(Codec::Vp8, &p.payload),
                                    in_key,
                                    layer,
                                    bytes: p.payload.len(),
                                    at: now,
                                };
                                if let Some(log) = &mut self.video_log {
                                    log.push(v);
                                }
                                if self.video_head.len() < VIDEO_HEAD {
                                    self.video_head.push(v);
                                }
                                self.first_video_packet.get_or_insert(now);
                                let seq = *p.seq_no;
                                if self.first_video_seq.is_none_or(|first| seq < first) {
                                    self.first_video_seq = Some(seq);
                                    self.first_video_key =
                                        Some(starts_keyframe(Codec::Vp8, &p.payload));
                                }
                            }
                        }
                    }
                    Event::KeyframeRequest(r) => {
                        self.keyframe_requests += 1;
                        self.first_keyframe_request.get_or_insert(now);
                        let quiet = Duration::from_millis(300);
                        // A request names its simulcast layer by rid.
                        let i = r
                            .rid
                            .and_then(|rid| LAYERS.iter().position(|(x, _)| Rid::from(*x) == rid))
                            .unwrap_or(0);
                        if self.last_keyframe[i].is_none_or(|k| now - k >= quiet) {
                            self.keyframe_wanted[i] = true;
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}

/// Runs peers side by side for a while; sleeps only when none is busy.
pub fn run_all(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let mut busy = false;
        for p in peers.iter_mut() {
            busy |= p.poll();
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Runs peers until `done` holds or `limit` passes; returns whether it held.
pub fn run_until(
    peers: &mut [&mut Peer],
    limit: Duration,
    done: impl Fn(&[&mut Peer]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done(peers) {
            return true;
        }
        run_all(peers, Duration::from_millis(20));
    }
    done(peers)
}
