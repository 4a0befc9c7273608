//! The SFU core in memory and in simulated time: real str0m peers (ICE,
//! DTLS, SRTP, RTCP, NACK/RTX all run) wired to [`Sfu`] through simulated
//! links with delay, loss and a rate cap, stepped by a fake clock. No
//! socket, no sleep: seconds of calls run in milliseconds, the same under
//! QEMU as natively, and every run is the same run.

use super::engine::Sfu;
use super::keyframe::starts_keyframe;
use super::packet::Temporal;
use crate::ids::{Mid, PeerId, Sid};
use crate::ipc::{FromSfu, LayerPin};
use crate::limits::Limits;
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid as TrackMid, Rid,
    Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Vp8Descriptor};
use str0m::{Candidate, Event, Input, Output, Rtc};

const STEP: Duration = Duration::from_millis(1);
const SFU_ADDR: &str = "10.0.0.1:4000";

/// Says which datagrams a link drops.
type Filter = Box<dyn FnMut(&[u8]) -> bool>;

/// One direction of a simulated network path.
struct Link {
    delay: Duration,
    /// Percent of datagrams lost at random.
    loss: u32,
    /// Bits per second (0: unlimited); a datagram waiting longer than
    /// `MAX_QUEUE` for the link is dropped, as a router's queue would.
    rate: u64,
    /// Bytes a rate-limited link lets through at once after a quiet
    /// spell, as `tc tbf`'s burst does (the lab's is 10 000).
    burst: u64,
    free_at: Instant,
    rng: fastrand::Rng,
    /// Drops the datagrams it returns true for (a chosen loss).
    filter: Option<Filter>,
    queue: VecDeque<(Instant, Vec<u8>)>,
    dropped: usize,
}

const MAX_QUEUE: Duration = Duration::from_millis(300);

impl Link {
    fn new(now: Instant, seed: u64) -> Link {
        Link {
            delay: Duration::from_millis(10),
            loss: 0,
            rate: 0,
            burst: 0,
            free_at: now,
            rng: fastrand::Rng::with_seed(seed),
            filter: None,
            queue: VecDeque::new(),
            dropped: 0,
        }
    }

    fn send(&mut self, now: Instant, data: Vec<u8>) {
        let filtered = self.filter.as_mut().is_some_and(|f| f(&data));
        if filtered || self.rng.u32(0..100) < self.loss {
            self.dropped += 1;
            return;
        }
        let mut at = now;
        if let Some(ns) = (data.len() as u64 * 8 * 1_000_000_000).checked_div(self.rate) {
            // The burst is credit: what leaves at once before the rate
            // holds it back.
            let credit = Duration::from_nanos(self.burst * 8 * 1_000_000_000 / self.rate);
            let start = self.free_at.max(now);
            if start - now > MAX_QUEUE + credit {
                self.dropped += 1;
                return;
            }
            self.free_at = start + Duration::from_nanos(ns);
            at = self.free_at.checked_sub(credit).unwrap_or(now).max(now);
        }
        self.queue.push_back((at + self.delay, data));
    }

    fn due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.front().is_some_and(|(at, _)| *at <= now) {
            return self.queue.pop_front().map(|(_, d)| d);
        }
        None
    }
}

/// An RTP packet as a subscriber received it.
#[derive(Debug, Clone)]
struct Received {
    kind: MediaKind,
    seq: u64,
    pt: u8,
    /// The first packet of a key frame.
    key: bool,
    at: Instant,
    /// Video: the simulcast layer it came from (its frames' fill byte).
    layer: u8,
    /// RTP timestamp: one per frame.
    ts: u32,
    /// VP8: the temporal layer and picture id, if it has them.
    tid: Option<u8>,
    pid: Option<u16>,
}

/// A temporal-layer publisher's frames: the layer of each in turn, and
/// its packets of 1200 bytes. Shared as libwebrtc shares a VP8 stream of
/// three layers (40, 20 and 40 %): 480 kbit/s, 720 with layer 1, 1.2
/// Mbit/s with all.
const TEMPORAL: [(u8, usize); 4] = [(0, 4), (2, 2), (1, 2), (2, 2)];

/// A simulcast publisher's layers: rid and bytes per 20 ms frame (low,
/// middle, top: ~150 kbit/s, ~500 kbit/s, ~1.2 Mbit/s).
const LAYERS: [(&str, usize); 3] = [("q", 375), ("h", 1250), ("f", 3000)];

/// A str0m peer (full ICE agent) on a simulated address.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    offer: String,
    tracks: Vec<(TrackMid, MediaKind)>,
    connected: bool,
    /// Publisher: sends a VP8 frame (3 KB, several packets) and an Opus
    /// frame every 20 ms once connected. Like Chrome, it answers a
    /// key-frame request with a key frame unless it sent one less than
    /// 300 ms before.
    sends: bool,
    /// Simulcast: one encoding per entry of `LAYERS`, else one of 3 KB.
    simulcast: bool,
    /// One encoding with VP8 temporal layers (`TEMPORAL`), written as RTP
    /// (str0m's packetizer writes no layer ids).
    temporal: bool,
    /// Its next sequence number per track, as RTP (`temporal`).
    next_seq: [u64; 2],
    /// Simulcast publisher: the first packet of the first key frame asked
    /// for on this layer is to be lost on its uplink; the SSRC to drop the
    /// next packet of is put in the cell when that key frame is written.
    keyframe_loss: Option<(usize, Rc<Cell<Option<u32>>>)>,
    frames: u64,
    /// Per layer (one without simulcast).
    keyframe_wanted: Vec<bool>,
    keyframes_sent: Vec<Instant>,
    last_keyframe: Vec<Option<Instant>>,
    /// The rid of each key-frame request (None without simulcast).
    keyframe_rids: Vec<Option<Rid>>,
    /// The caps (REMB) the SFU sent, bits per second.
    caps: Vec<u64>,
    /// Simulcast publisher: layers it stopped sending (a browser drops its
    /// top layer when its uplink is short).
    stopped: Vec<usize>,
    /// Simulcast publisher: bytes per frame of each layer under the cap
    /// (REMB) it was sent, as Chrome was seen to share a cap out: from the
    /// lowest layer up, whole while they fit; the first that does not fit
    /// kept at a quarter of its rate (its minimum, over the cap), the
    /// rest stopped. None: uncapped.
    capped_sizes: Option<Vec<usize>>,
    /// Subscriber: the REMB it sends every 500 ms, as a browser's
    /// receive-side estimator does.
    remb: Option<u64>,
    next_remb: Option<Instant>,
    /// Subscriber: the REMB follows what arrives, as libwebrtc's
    /// receive-side estimator does on a link of this capacity (bits per
    /// second): none for its first 5 s, then what arrived; after that (cut
    /// to the capacity if that is less: an overuse) up
    /// 4 % a report (8 % a second) while it stays under 1.5 times what
    /// arrived plus 10 kbit/s; never over the capacity.
    remb_capacity: Option<u64>,
    /// Bytes received since the last REMB (24 per packet for its header).
    bytes_in: u64,
    /// Bytes per 20 ms frame of each simulcast layer (`LAYERS` unless a
    /// test says otherwise).
    sizes: [usize; 3],
    first_media: Option<Instant>,
    next_frame: Option<Instant>,
    received: Vec<Received>,
    keyframe_requests: Vec<Instant>,
    /// Publisher: how many of the next key-frame requests it ignores (as
    /// if lost on the way).
    ignore_keyframe_requests: usize,
    up: Link,
    down: Link,
}

impl Peer {
    fn new(now: Instant, n: u8, dir: Direction) -> Peer {
        Peer::with_layers(now, n, dir, false)
    }

    fn with_layers(now: Instant, n: u8, dir: Direction, simulcast: bool) -> Peer {
        Peer::build(now, n, dir, simulcast, false)
    }

    fn build(now: Instant, n: u8, dir: Direction, simulcast: bool, temporal: bool) -> Peer {
        let addr: SocketAddr = format!("10.0.1.{n}:5000").parse().unwrap();
        // Publishers in frame mode (str0m packetizes), subscribers in RTP
        // mode (we see every packet's header).
        let mut rtc = Rtc::builder()
            .set_rtp_mode(dir == Direction::RecvOnly || temporal)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let tracks = vec![
            (
                api.add_media(MediaKind::Audio, dir, None, None, None),
                MediaKind::Audio,
            ),
            (
                api.add_media(
                    MediaKind::Video,
                    dir,
                    None,
                    None,
                    simulcast.then(|| {
                        let mut s = Simulcast::new();
                        for (rid, _) in LAYERS {
                            s.add_send_layer(SimulcastLayer::new(rid));
                        }
                        s
                    }),
                ),
                MediaKind::Video,
            ),
        ];
        let (offer, pending) = api.apply().unwrap();
        Peer {
            rtc,
            addr,
            pending: Some(pending),
            offer: offer.to_sdp_string(),
            tracks,
            connected: false,
            sends: dir == Direction::SendOnly,
            simulcast,
            temporal,
            next_seq: [1, 1],
            keyframe_loss: None,
            frames: 0,
            keyframe_wanted: vec![true; if simulcast { LAYERS.len() } else { 1 }],
            keyframes_sent: Vec::new(),
            last_keyframe: vec![None; if simulcast { LAYERS.len() } else { 1 }],
            keyframe_rids: Vec::new(),
            caps: Vec::new(),
            stopped: Vec::new(),
            capped_sizes: None,
            remb: None,
            next_remb: None,
            remb_capacity: None,
            bytes_in: 0,
            sizes: LAYERS.map(|(_, n)| n),
            first_media: None,
            next_frame: None,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            ignore_keyframe_requests: 0,
            up: Link::new(now, n as u64 * 2),
            down: Link::new(now, n as u64 * 2 + 1),
        }
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    fn video_mid(&self) -> TrackMid {
        self.tracks[1].0
    }

    fn videos(&self) -> impl Iterator<Item = &Received> {
        self.received.iter().filter(|r| r.kind == MediaKind::Video)
    }

    /// Runs the peer up to `now`: its timeout, frames due, its output.
    fn step(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        if self.sends && self.connected {
            let due = *self.next_frame.get_or_insert(now);
            if due <= now {
                self.next_frame = Some(due + Duration::from_millis(20));
                if self.temporal {
                    self.write_temporal_frame(now);
                } else {
                    self.write_frame(now);
                }
            }
        }
        if let Some(capacity) = self.remb_capacity {
            let settled = self
                .first_media
                .is_some_and(|t| now - t >= Duration::from_secs(5));
            if settled && self.next_remb.is_none_or(|t| t <= now) {
                let arrived = std::mem::take(&mut self.bytes_in) * 8 * 2;
                let remb = match self.remb {
                    None => arrived,
                    Some(r) => (r * 104 / 100).min((arrived * 3 / 2 + 10_000).max(r)),
                };
                // The first reads what arrived; the link pushes back after.
                self.remb = Some(if self.remb.is_some() {
                    remb.min(capacity)
                } else {
                    remb
                });
            }
        }
        if let Some(bps) = self.remb.filter(|_| self.connected) {
            if self.next_remb.is_none_or(|t| t <= now) {
                self.next_remb = Some(now + Duration::from_millis(500));
                let mid = self.video_mid();
                if let Some(rx) = self.rtc.direct_api().stream_rx_by_mid(mid, None) {
                    rx.request_remb(Bitrate::bps(bps));
                }
            }
        }
        self.drain(now);
    }

    /// One 20 ms frame of each track, as RTP: VP8 with a payload
    /// descriptor that carries the picture id, TL0PICIDX and temporal
    /// layer (the L1T3 pattern 0 2 1 2, a key frame on layer 0).
    fn write_temporal_frame(&mut self, now: Instant) {
        let frame = self.frames;
        self.frames += 1;
        let key = std::mem::take(&mut self.keyframe_wanted[0]);
        if key {
            self.keyframes_sent.push(now);
            self.last_keyframe[0] = Some(now);
        }
        let (tid, packets) = TEMPORAL[if key { 0 } else { frame as usize % 4 }];
        let pid = (frame & 0x7fff) as u16;
        let tl0 = (frame / 4) as u8;
        // Each packet: the descriptor (S on the first), then 1200 bytes.
        let video = (0..packets).map(|n| {
            let mut p = vec![
                if n == 0 { 0x90 } else { 0x80 },
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                tl0,
                tid << 6,
                !key as u8,
            ];
            p.resize(1200, 0x10);
            p
        });
        let audio = std::iter::once(vec![0xf8u8; 60]);
        for (i, (mid, kind)) in self.tracks.clone().into_iter().enumerate() {
            let (codec, rate, payloads): (_, _, Vec<Vec<u8>>) = match kind {
                MediaKind::Audio => (Codec::Opus, 48_000, audio.clone().collect()),
                MediaKind::Video => (Codec::Vp8, 90_000, video.clone().collect()),
            };
            let Some(pt) = self
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let time = (frame * 20 * rate / 1000) as u32;
            let last = payloads.len() - 1;
            for (n, payload) in payloads.into_iter().enumerate() {
                let seq = self.next_seq[i];
                self.next_seq[i] += 1;
                let mut api = self.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), time, now, payload)
                            .marker(n == last)
                            .nackable(kind == MediaKind::Video),
                    );
                }
            }
        }
    }

    /// A key frame of layer `i` is about to be written: if it is the one
    /// `keyframe_loss` waits for (asked for by the SFU), its first packet
    /// is lost.
    fn arm_keyframe_loss(&mut self, mid: TrackMid, i: usize, rid: Option<Rid>) {
        let Some((layer, cell)) = self.keyframe_loss.clone() else {
            return;
        };
        if layer != i || !self.keyframe_rids.contains(&rid) {
            return;
        }
        if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, rid) {
            cell.set(Some(*tx.ssrc()));
            self.keyframe_loss = None;
        }
    }

    fn write_frame(&mut self, now: Instant) {
        self.frames += 1;
        let ms = self.frames * 20;
        let layers: Vec<(Option<Rid>, usize)> = if self.simulcast {
            LAYERS
                .iter()
                .enumerate()
                .map(|(i, (r, _))| {
                    let n = self.capped_sizes.as_ref().map_or(self.sizes[i], |c| c[i]);
                    (Some(Rid::from(*r)), n)
                })
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
                if kind == MediaKind::Video && (self.stopped.contains(&i) || size == 0) {
                    continue;
                }
                let (codec, freq, data) = match kind {
                    MediaKind::Audio => {
                        (Codec::Opus, Frequency::FORTY_EIGHT_KHZ, vec![0xf8u8; size])
                    }
                    MediaKind::Video => {
                        // The VP8 payload header's first bit: 0 on a key
                        // frame; the rest tells the layer apart.
                        let key = std::mem::take(&mut self.keyframe_wanted[i]);
                        if key {
                            self.keyframes_sent.push(now);
                            self.last_keyframe[i] = Some(now);
                            self.arm_keyframe_loss(mid, i, rid);
                        }
                        let mut data = vec![0x10 + i as u8; size];
                        data[0] = !key as u8;
                        (Codec::Vp8, Frequency::NINETY_KHZ, data)
                    }
                };
                let Some(mut writer) = self.rtc.writer(mid) else {
                    continue;
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
                let time = MediaTime::new(ms * freq.get() as u64 / 1000, freq);
                let _ = writer.write(pt, now, time, data);
            }
        }
    }

    fn receive(&mut self, now: Instant, data: &[u8]) {
        let sfu: SocketAddr = SFU_ADDR.parse().unwrap();
        if let Ok(r) = Receive::new(Protocol::Udp, sfu, self.addr, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
        }
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => return,
                Ok(Output::Transmit(t)) => self.up.send(now, t.contents.to_vec()),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::RtpPacket(p) => {
                        let mid = self
                            .rtc
                            .direct_api()
                            .stream_rx(&p.header.ssrc)
                            .map(|s| s.mid());
                        if let Some(&(_, kind)) = self.tracks.iter().find(|t| Some(t.0) == mid) {
                            self.bytes_in += p.payload.len() as u64 + 24;
                            self.first_media.get_or_insert(now);
                            self.received.push(Received {
                                kind,
                                seq: *p.seq_no,
                                pt: *p.header.payload_type,
                                key: kind == MediaKind::Video
                                    && starts_keyframe(Codec::Vp8, &p.payload),
                                at: now,
                                layer: p.payload.last().map_or(0, |b| b.wrapping_sub(0x10)),
                                ts: p.header.timestamp,
                                tid: Temporal::of_vp8(&p.payload).map(|t| t.tid),
                                pid: Vp8Descriptor::parse(&p.payload)
                                    .ok()
                                    .and_then(|d| d.picture_id()),
                            });
                        }
                    }
                    Event::KeyframeRequest(r) => {
                        self.keyframe_requests.push(now);
                        self.keyframe_rids.push(r.rid);
                        let i = r
                            .rid
                            .and_then(|rid| LAYERS.iter().position(|(x, _)| Rid::from(*x) == rid))
                            .unwrap_or(0);
                        let last = self.last_keyframe[i];
                        if self.ignore_keyframe_requests > 0 {
                            self.ignore_keyframe_requests -= 1;
                        } else if last.is_none_or(|k| now - k >= Duration::from_millis(300)) {
                            self.keyframe_wanted[i] = true;
                        }
                    }
                    Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                        self.caps.push(estimate.as_u64());
                        if self.simulcast {
                            // Bytes per 20 ms frame left for video after
                            // audio's ~24 kbit/s.
                            let mut left =
                                estimate.as_u64().saturating_sub(24_000) as usize / 8 / 50;
                            let sizes = self
                                .sizes
                                .iter()
                                .map(|n| {
                                    if left >= *n {
                                        left -= n;
                                        *n
                                    } else if left > 0 {
                                        // Kept at its minimum, over the cap.
                                        left = 0;
                                        n / 4
                                    } else {
                                        0
                                    }
                                })
                                .collect();
                            self.capped_sizes = Some(sizes);
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}

/// The SFU and its peers on one simulated network.
struct Net {
    now: Instant,
    sfu: Sfu,
    peers: Vec<Peer>,
    events: Vec<FromSfu>,
}

impl Net {
    fn new() -> Net {
        Net::with_connect_timeout(Duration::from_secs(20))
    }

    fn with_connect_timeout(connect_timeout: Duration) -> Net {
        let now = Instant::now();
        let sfu = Sfu::new(
            SFU_ADDR.parse().unwrap(),
            &Limits {
                sfu_sessions: 64,
                sfu_connect_timeout_ms: connect_timeout.as_millis() as u64,
                rtx_cache_packets: 128,
                ..Limits::default()
            },
        )
        .unwrap();
        Net {
            now,
            sfu,
            peers: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A publisher, answered by the SFU; its index.
    fn publish(&mut self, mid: &Mid) -> usize {
        let mut p = Peer::new(self.now, self.peers.len() as u8 + 1, Direction::SendOnly);
        let answer = self.sfu.publish(self.now, mid.clone(), &p.offer).unwrap();
        p.accept(&answer);
        self.peers.push(p);
        self.peers.len() - 1
    }

    /// A publisher sending three simulcast layers; its index.
    fn publish_simulcast(&mut self, mid: &Mid) -> usize {
        let n = self.peers.len() as u8 + 1;
        let mut p = Peer::with_layers(self.now, n, Direction::SendOnly, true);
        let answer = self.sfu.publish(self.now, mid.clone(), &p.offer).unwrap();
        p.accept(&answer);
        self.peers.push(p);
        self.peers.len() - 1
    }

    /// A publisher sending one VP8 encoding with three temporal layers;
    /// its index.
    fn publish_temporal(&mut self, mid: &Mid) -> usize {
        let n = self.peers.len() as u8 + 1;
        let mut p = Peer::build(self.now, n, Direction::SendOnly, false, true);
        let answer = self.sfu.publish(self.now, mid.clone(), &p.offer).unwrap();
        p.accept(&answer);
        self.peers.push(p);
        self.peers.len() - 1
    }

    /// `n` subscribers of `mid` (s0, s1, ...); their indices.
    fn subscribers(&mut self, n: usize, mid: &Mid) -> Vec<usize> {
        (0..n)
            .map(|i| self.subscribe(&ids(&format!("s{i}")).1, mid))
            .collect()
    }

    /// A subscriber of `mid`, answered by the SFU; its index.
    fn subscribe(&mut self, sid: &Sid, mid: &Mid) -> usize {
        let mut p = Peer::new(self.now, self.peers.len() as u8 + 1, Direction::RecvOnly);
        let answer = self
            .sfu
            .subscribe(self.now, sid.clone(), mid, &p.offer)
            .unwrap();
        p.accept(&answer);
        self.peers.push(p);
        self.peers.len() - 1
    }

    /// Runs everything for `d` of simulated time, a millisecond a step.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            self.step();
        }
    }

    /// Runs until `done` holds, for `limit` of simulated time at most.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.now += STEP;
            self.step();
        }
        done(self)
    }

    fn step(&mut self) {
        let now = self.now;
        for p in self.peers.iter_mut() {
            while let Some(d) = p.up.due(now) {
                self.sfu.handle_datagram(now, p.addr, &d);
            }
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        while let Some(t) = self.sfu.poll_transmit() {
            if let Some(p) = self.peers.iter_mut().find(|p| p.addr == t.destination) {
                p.down.send(now, t.contents.to_vec());
            }
        }
        while let Some(e) = self.sfu.poll_event() {
            self.events.push(e);
        }
        for p in self.peers.iter_mut() {
            while let Some(d) = p.down.due(now) {
                p.receive(now, &d);
            }
            p.step(now);
        }
    }
}

fn ids(uid: &str) -> (Mid, Sid) {
    let uid = PeerId::parse(uid).unwrap();
    (Mid::random(&uid), Sid::random(&uid))
}

/// Whether a datagram is an SRTP packet of the video track (RTP headers
/// travel in the clear: version 2, a dynamic payload type that is not
/// RTCP's, and more than an audio frame's size).
fn is_video_rtp(d: &[u8]) -> bool {
    d.len() > 400 && d[0] >> 6 == 2 && (96..=127).contains(&(d[1] & 0x7f))
}

fn seq_of(d: &[u8]) -> u16 {
    u16::from_be_bytes([d[2], d[3]])
}

#[test]
fn media_flows_with_numbering_from_the_first_cycle_and_the_subscribers_payload_types() {
    let mut net = Net::new();
    let (mid, sid) = ids("alice");
    let p = net.publish(&mid);
    let s = net.subscribe(&sid, &mid);
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.peers[s].videos().count()
            >= 100)
    );
    net.run(Duration::from_millis(500));

    let sub = &net.peers[s];
    assert!(
        sub.videos().next().unwrap().key,
        "video starts at a key frame"
    );
    let videos: Vec<u64> = sub.videos().map(|r| r.seq).collect();
    // The first packet seen starts in the first 16-bit cycle, and the rest
    // follow one by one: nothing lost or duplicated on a clean link.
    assert!(videos[0] < 65536, "{}", videos[0]);
    for w in videos.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or reorder in {videos:?}");
    }
    let audio = sub
        .received
        .iter()
        .filter(|r| r.kind == MediaKind::Audio)
        .count();
    assert!(audio >= 20, "{audio} audio packets");
    // Every packet carries a payload type the subscriber negotiated for
    // the codec (VP8 on video, Opus on audio).
    let vp8 = sub
        .rtc
        .codec_config()
        .iter()
        .find(|c| c.spec().codec == Codec::Vp8)
        .unwrap()
        .pt();
    assert!(sub.videos().all(|r| r.pt == *vp8));
    assert!(
        !net.peers[p].keyframe_requests.is_empty(),
        "the subscriber's connection asked for a key frame"
    );
    let stats = net.sfu.stats();
    assert_eq!((stats.publishers, stats.subscribers), (1, 1));
    assert!(stats.forwarded_packets as usize >= net.peers[s].received.len());
}

#[test]
fn a_packet_lost_towards_a_subscriber_is_repaired_by_rtx() {
    let mut net = Net::new();
    let (mid, sid) = ids("alice");
    net.publish(&mid);
    let s = net.subscribe(&sid, &mid);
    // Drop the 30th, 31st and 60th video packets on the way to the subscriber
    // (first sendings only: the repairs travel on the RTX stream, whose
    // numbers are its own).
    let mut n = 0;
    let mut lost = Vec::new();
    let lost_log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = lost_log.clone();
    net.peers[s].down.filter = Some(Box::new(move |d| {
        if !is_video_rtp(d) {
            return false;
        }
        n += 1;
        let drop = matches!(n, 30 | 31 | 60);
        if drop {
            log.borrow_mut().push(seq_of(d));
        }
        drop
    }));
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.peers[s].videos().count()
            >= 150)
    );
    net.run(Duration::from_millis(500));
    lost.extend(lost_log.borrow().iter().copied());
    assert_eq!(lost.len(), 3, "the filter saw the packets");
    assert_eq!(net.peers[s].down.dropped, 3);

    let mut seqs: Vec<u64> = net.peers[s].videos().map(|r| r.seq).collect();
    seqs.sort();
    seqs.dedup();
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    assert_eq!(
        seqs.len() as u64,
        last - first + 1,
        "a hole remains: {seqs:?}"
    );
    for l in lost {
        assert!(seqs.contains(&(l as u64)), "{l} was not repaired");
    }
}

#[test]
fn key_frame_requests_are_coalesced_so_the_publisher_honours_each() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let subs: Vec<usize> = net.subscribers(3, &mid);
    assert!(net.run_until(Duration::from_secs(5), |n| subs
        .iter()
        .all(|&s| n.peers[s].videos().count() > 10)));
    net.run(Duration::from_secs(1));
    let (asked, keys) = (
        net.peers[p].keyframe_requests.len(),
        net.peers[p].keyframes_sent.len(),
    );
    let start = net.now;
    // For 1.5 s every subscriber asks for a key frame every 50 ms.
    for _ in 0..30 {
        for &s in &subs {
            let mid = net.peers[s].video_mid();
            if let Some(rx) = net.peers[s].rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
        net.run(Duration::from_millis(50));
    }
    net.run(Duration::from_millis(500));
    let seen = requests_since(&net.peers[p], asked, start);
    // Never within the 300 ms the publisher would ignore, never dropped:
    // each request reaching it makes a key frame.
    assert!((3..=6).contains(&seen.len()), "{seen:?}");
    for w in seen.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(300), "{seen:?}");
    }
    assert_eq!(
        net.peers[p].keyframes_sent.len() - keys,
        seen.len(),
        "{seen:?}"
    );
    // The requests of the last window were not dropped.
    assert!(
        *seen.last().unwrap() >= Duration::from_millis(1400),
        "{seen:?}"
    );
}

#[test]
fn a_subscriber_that_connects_just_after_a_key_frame_starts_from_the_cached_one() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    assert!(net.run_until(Duration::from_secs(5), |n| n.peers[a].videos().count() > 0));
    assert!(
        net.peers[a].videos().next().unwrap().key,
        "a starts at a key frame"
    );
    let (asked, keys) = (
        net.peers[p].keyframe_requests.len(),
        net.peers[p].keyframes_sent.len(),
    );
    // b subscribes at once: it connects while the publisher would still
    // ignore a request.
    let b = net.subscribe(&ids("b").1, &mid);
    let subscribed = net.now;
    assert!(net.run_until(Duration::from_secs(2), |n| n.peers[b].videos().count() > 0));
    let first = net.peers[b].videos().next().unwrap().clone();
    assert!(first.key, "b's first packet starts a key frame");
    assert!(
        first.at - subscribed < Duration::from_millis(150),
        "{:?}",
        first.at - subscribed
    );
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.peers[p].keyframe_requests.len(),
        asked,
        "nobody asked the publisher"
    );
    assert_eq!(net.peers[p].keyframes_sent.len(), keys);
    let (complete, n) = complete_video(&net.peers[b]);
    assert!(complete && n > 100, "b decodes on from it: {n}");
}

/// A publisher whose subscriber a has watched for a second (its key frame
/// long gone by): the network, the stream and the publisher's index.
fn a_call_a_second_in() -> (Net, Mid, usize) {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    assert!(net.run_until(Duration::from_secs(5), |n| n.peers[a].videos().count() > 0));
    net.run(Duration::from_secs(1));
    (net, mid, p)
}

#[test]
fn a_subscriber_that_connects_long_after_a_key_frame_gets_a_new_one() {
    let (mut net, mid, p) = a_call_a_second_in();
    let keys = net.peers[p].keyframes_sent.len();
    let b = net.subscribe(&ids("b").1, &mid);
    assert!(net.run_until(Duration::from_secs(2), |n| n.peers[b]
        .videos()
        .any(|r| r.key)));
    assert_eq!(net.peers[p].keyframes_sent.len(), keys + 1);
    // The delta frames sent while that key frame was on its way were not
    // forwarded to b: it could not have decoded them.
    assert!(net.peers[b].videos().next().unwrap().key);
}

#[test]
fn a_subscriber_whose_key_frame_request_goes_unanswered_asks_again() {
    let (mut net, mid, p) = a_call_a_second_in();
    let asked = net.peers[p].keyframe_requests.len();
    // The request b's start makes is lost (or ignored, as a browser
    // ignores one too soon after its last key frame).
    net.peers[p].ignore_keyframe_requests = 1;
    let b = net.subscribe(&ids("b").1, &mid);
    let subscribed = net.now;
    assert!(net.run_until(Duration::from_secs(5), |n| n.peers[b]
        .videos()
        .next()
        .is_some()));
    let first = net.peers[b].videos().next().unwrap().clone();
    let seen = requests_since(&net.peers[p], asked, subscribed);
    // Not a delta frame after VIDEO_START_PATIENCE: the key frame asked
    // for again once the first request went KEYFRAME_PATIENCE unanswered.
    assert!(first.key, "b's first packet starts a key frame: {seen:?}");
    assert!(
        first.at - subscribed < crate::limits::VIDEO_START_PATIENCE,
        "{:?}",
        first.at - subscribed
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1] - seen[0] >= crate::limits::KEYFRAME_PATIENCE,
        "{seen:?}"
    );
    net.run(Duration::from_secs(1));
    let (complete, n) = complete_video(&net.peers[b]);
    assert!(complete && n > 100, "b decodes on from it: {n}");
}

#[test]
fn a_session_that_never_connects_is_given_up_and_reported() {
    let mut net = Net::with_connect_timeout(Duration::from_secs(3));
    let (mid, sid) = ids("alice");
    net.publish(&mid);
    let s = net.subscribe(&sid, &mid);
    // The subscriber's path is cut both ways: ICE never completes.
    net.peers[s].up.loss = 100;
    net.peers[s].down.loss = 100;
    net.run(Duration::from_millis(2900));
    assert_eq!(net.sfu.sessions(), 2);
    net.run(Duration::from_millis(200));
    assert_eq!(
        net.sfu.sessions(),
        1,
        "the subscriber is gone, the publisher is not"
    );
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, FromSfu::SubscriptionClosed { sid: x } if *x == sid)));
    assert!(!net
        .events
        .iter()
        .any(|e| matches!(e, FromSfu::StreamClosed { .. })));
}

#[test]
fn a_publisher_that_goes_away_takes_its_subscribers_and_is_reported() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let subs: Vec<usize> = net.subscribers(2, &mid);
    assert!(net.run_until(Duration::from_secs(5), |n| subs
        .iter()
        .all(|&s| n.peers[s].videos().count() > 0)));
    assert_eq!(net.sfu.sessions(), 3);
    // The publisher's network goes dark: no media, no consent checks.
    net.peers[p].up.loss = 100;
    assert!(net.run_until(Duration::from_secs(60), |n| n.sfu.sessions() == 0));
    let closed: Vec<&FromSfu> = net.events.iter().collect();
    assert!(
        matches!(closed.as_slice(), [FromSfu::StreamClosed { mid: m }] if *m == mid),
        "one report for the stream, none per subscriber: {closed:?}"
    );
    assert_eq!(net.sfu.stats().subscribers, 0);
}

/// The key-frame requests publisher `p` received after its first `from`,
/// each as the time since `t0`.
fn requests_since(p: &Peer, from: usize, t0: Instant) -> Vec<Duration> {
    p.keyframe_requests[from..]
        .iter()
        .map(|t| *t - t0)
        .collect()
}

/// Whether a subscriber received every video packet between its first and
/// its last (repairs included), and how many that is.
fn complete_video(p: &Peer) -> (bool, usize) {
    let mut seqs: Vec<u64> = p.videos().map(|r| r.seq).collect();
    seqs.sort();
    seqs.dedup();
    let span = seqs.last().map_or(0, |l| l - seqs[0] + 1);
    (seqs.len() as u64 == span, seqs.len())
}

#[test]
fn loss_on_the_publishers_uplink_and_a_subscribers_downlink_is_repaired() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    let b = net.subscribe(&ids("b").1, &mid);
    assert!(
        net.run_until(Duration::from_secs(5), |n| [a, b].iter().all(|&s| n.peers
            [s]
            .videos()
            .count()
            > 0))
    );
    // 5 % loss both ways on the publisher's path and on b's downlink.
    net.peers[p].up.loss = 5;
    net.peers[p].down.loss = 5;
    net.peers[b].down.loss = 5;
    net.run(Duration::from_secs(4));
    // Lossless again for the last repairs to land.
    net.peers[p].up.loss = 0;
    net.peers[b].down.loss = 0;
    net.run(Duration::from_millis(500));
    assert!(net.peers[p].up.dropped > 10 && net.peers[b].down.dropped > 10);
    for s in [a, b] {
        let (complete, n) = complete_video(&net.peers[s]);
        assert!(
            complete,
            "subscriber {s}: a hole after repairs ({n} packets)"
        );
        assert!(n > 500, "subscriber {s}: {n} packets");
    }
}

#[test]
fn a_subscriber_behind_a_narrow_link_disturbs_neither_the_others_nor_the_publisher() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    let b = net.subscribe(&ids("b").1, &mid);
    // The stream is ~1.3 Mbit/s; b's link carries 400 kbit/s.
    net.peers[b].down.rate = 400_000;
    assert!(net.run_until(Duration::from_secs(5), |n| n.peers[a].videos().count() > 0));
    let start = net.now;
    let asked = net.peers[p].keyframe_requests.len();
    net.run(Duration::from_secs(3));
    assert!(net.peers[b].down.dropped > 50, "b's link overflowed");
    let (complete, n) = complete_video(&net.peers[a]);
    assert!(complete && n > 400, "a lost packets: {n}");
    // However often b's decoder asks, the publisher hears it at most once
    // per window.
    let requests = net.peers[p].keyframe_requests.len() - asked;
    let windows = (net.now - start).as_millis() / 300 + 1;
    assert!(
        requests as u128 <= windows,
        "{requests} requests in {windows} windows"
    );
}

/// The layers a subscriber's video came from at or after `since`.
fn layers_since(p: &Peer, since: Instant) -> Vec<u8> {
    let mut l: Vec<u8> = p
        .videos()
        .filter(|r| r.at >= since)
        .map(|r| r.layer)
        .collect();
    l.dedup();
    l
}

/// Where a subscriber's video changed layer: the packet that changed it
/// (each must start a key frame for its decoder to go on).
fn switches(p: &Peer) -> Vec<Received> {
    let v: Vec<&Received> = p.videos().collect();
    v.windows(2)
        .filter(|w| w[1].layer != w[0].layer)
        .map(|w| w[1].clone())
        .collect()
}

/// Frames a subscriber could decode and the longest gap between two (a
/// freeze), from `since` on: a frame counts from its first packet, once
/// every packet since the last key frame or decoded frame has come.
fn frames_since(p: &Peer, since: Instant) -> (usize, Duration) {
    let mut seqs: Vec<&Received> = p.videos().collect();
    seqs.sort_by_key(|r| r.seq);
    seqs.dedup_by_key(|r| r.seq);
    let mut frames = 0;
    let mut last = since;
    let mut longest = Duration::ZERO;
    let mut whole = false;
    let mut prev: Option<u64> = None;
    let mut prev_ts = None;
    for r in seqs {
        let contiguous = prev.is_some_and(|s| r.seq == s + 1);
        whole = r.key || (whole && contiguous);
        prev = Some(r.seq);
        if whole && Some(r.ts) != prev_ts {
            prev_ts = Some(r.ts);
            if r.at >= since {
                frames += 1;
                longest = longest.max(r.at.saturating_duration_since(last));
                last = r.at;
            }
        }
    }
    (frames, longest)
}

/// A simulcast publisher and subscribers a and b, b's link carrying 400
/// kbit/s (the top layer is ~1.2 Mbit/s, the middle ~500 kbit/s): the
/// network and the indices of the publisher, a and b.
fn simulcast_call_with_b_limited() -> (Net, usize, usize, usize) {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    let b = net.subscribe(&ids("b").1, &mid);
    net.peers[b].down.rate = 400_000;
    (net, p, a, b)
}

/// Lifts subscriber `b`'s rate limit and runs until it receives the top
/// layer, for 15 s at most: whether it did, and how long it took.
fn lift_and_climb(net: &mut Net, b: usize) -> (bool, Duration) {
    let lifted = net.now;
    net.peers[b].down.rate = 0;
    let top = |n: &Net| {
        n.peers[b]
            .videos()
            .last()
            .is_some_and(|r| r.layer == 2 && r.at > lifted)
    };
    let climbed = net.run_until(Duration::from_secs(15), top);
    (climbed, net.now - lifted)
}

#[test]
fn each_subscriber_gets_the_simulcast_layer_its_link_carries() {
    let (mut net, p, a, b) = simulcast_call_with_b_limited();
    net.run(Duration::from_secs(15));
    let settled = net.now - Duration::from_secs(4);
    println!(
        "a: {:?} switches {}; b: {:?} switches {}, frames/longest gap {:?}; caps {:?}",
        layers_since(&net.peers[a], settled),
        switches(&net.peers[a]).len(),
        layers_since(&net.peers[b], settled),
        switches(&net.peers[b]).len(),
        frames_since(&net.peers[b], settled),
        net.peers[p].caps.iter().rev().take(3).collect::<Vec<_>>()
    );
    assert_eq!(layers_since(&net.peers[a], settled), [2], "a: the top");
    assert_eq!(layers_since(&net.peers[b], settled), [0], "b: the lowest");
    // a was never disturbed: every packet since its first, on a clean link.
    let (complete, n) = complete_video(&net.peers[a]);
    assert!(complete && n > 1000, "a: {n} packets, complete {complete}");
    // b decodes on: 50 frames a second, no freeze.
    let (frames, longest) = frames_since(&net.peers[b], settled);
    assert!(frames >= 180, "b decoded {frames} frames in 4 s");
    assert!(longest < Duration::from_millis(200), "b froze {longest:?}");
    // Every switch landed on a key frame, and numbering ran on through it.
    for s in [a, b] {
        for sw in switches(&net.peers[s]) {
            assert!(sw.key, "subscriber {s}: a switch at a delta frame");
        }
        let v: Vec<u64> = net.peers[s].videos().map(|r| r.seq).collect();
        assert!(v.windows(2).all(|w| w[1] != w[0]), "a number reused");
    }
    // Key frames were asked for per layer, never for "any layer".
    assert!(net.peers[p].keyframe_rids.iter().all(|r| r.is_some()));
}

#[test]
fn a_subscriber_whose_limit_is_lifted_climbs_back_to_the_top_layer() {
    let (mut net, p, a, b) = simulcast_call_with_b_limited();
    net.run(Duration::from_secs(10));
    assert_eq!(
        layers_since(&net.peers[b], net.now - Duration::from_secs(2)),
        [0]
    );
    // Only a is well served: the publisher is never capped below what a
    // takes (checked at the end).
    let (climbed, took) = lift_and_climb(&mut net, b);
    assert!(climbed, "b stayed low");
    println!("b back on the top layer after {took:?}");
    net.run(Duration::from_secs(2));
    assert_eq!(
        layers_since(&net.peers[b], net.now - Duration::from_secs(1)),
        [2]
    );
    let (complete, _) = complete_video(&net.peers[a]);
    assert!(complete, "a lost packets");
    assert!(
        net.peers[p].caps.iter().all(|&c| c >= 1_200_000),
        "capped below a's layer: {:?}",
        net.peers[p].caps
    );
}

#[test]
fn a_layer_switch_whose_key_frame_request_goes_unanswered_asks_again() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let sid = ids("a").1;
    let a = net.subscribe(&sid, &mid);
    let on_top = |n: &Net| n.peers[a].videos().last().is_some_and(|r| r.layer == 2);
    assert!(net.run_until(Duration::from_secs(15), on_top));
    net.run(Duration::from_secs(1));
    let asked = net.peers[p].keyframe_requests.len();
    // The request for the move down to the lowest layer is lost: a stays
    // on the top layer until a key frame of the lowest comes.
    net.peers[p].ignore_keyframe_requests = 1;
    net.sfu.pin_layer(net.now, &sid, Some(LayerPin::Low));
    let pinned = net.now;
    let low = |n: &Net| n.peers[a].videos().last().is_some_and(|r| r.layer == 0);
    let moved = net.run_until(Duration::from_secs(5), low);
    let seen = requests_since(&net.peers[p], asked, pinned);
    assert!(moved, "a stayed on the top layer: requests {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1] - seen[0] >= crate::limits::KEYFRAME_PATIENCE,
        "{seen:?}"
    );
    let took = net.now - pinned;
    assert!(took < Duration::from_secs(2), "{took:?}");
    let last = switches(&net.peers[a]).pop().unwrap();
    assert!(last.key && last.layer == 0, "{last:?}");
}

#[test]
fn a_publisher_whose_subscribers_are_all_weak_is_capped_to_what_they_take() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let subs: Vec<usize> = net.subscribers(2, &mid);
    for &s in &subs {
        net.peers[s].down.rate = 400_000;
        // The lab's tbf: 10 kB pass at once after a quiet spell. (There a
        // probe through it could read as a much faster link; str0m's
        // probes here have not: `cap::tests` replays that.)
        net.peers[s].down.burst = 10_000;
    }
    // Long enough for every estimator restart a held-back subscriber gets
    // (after 4, 8, 16 and 32 s of a still estimate).
    net.run(Duration::from_secs(70));
    let caps = &net.peers[p].caps;
    println!("caps {caps:?}");
    let last = *caps.last().expect("the publisher was capped");
    // The lowest layer and audio (~175 kbit/s) with the margin; well under
    // the ~1.85 Mbit/s of all three layers.
    assert!((150_000..=400_000).contains(&last), "cap {last}");
    // Once down, it stays down: nobody's link carries the middle layer.
    let low = caps.iter().position(|&c| c <= 400_000).unwrap();
    assert!(
        caps[low..].iter().all(|&c| c <= 400_000),
        "the cap went up again: {caps:?}"
    );
}

#[test]
fn a_pinned_layer_is_a_ceiling_the_subscriber_can_lift() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    net.publish_simulcast(&mid);
    let (a, sid) = {
        let sid = ids("a").1;
        (net.subscribe(&sid, &mid), sid)
    };
    let on_top = |n: &Net| n.peers[a].videos().last().is_some_and(|r| r.layer == 2);
    assert!(
        net.run_until(Duration::from_secs(15), on_top),
        "a never got the top"
    );
    // A thumbnail: the lowest layer at once, whatever the link carries.
    net.sfu.pin_layer(net.now, &sid, Some(LayerPin::Low));
    let pinned = net.now;
    net.run(Duration::from_secs(3));
    assert_eq!(
        layers_since(&net.peers[a], pinned + Duration::from_secs(1)),
        [0]
    );
    let first_low = switches(&net.peers[a])
        .into_iter()
        .rfind(|r| r.layer == 0)
        .unwrap();
    assert!(
        first_low.at - pinned < Duration::from_millis(500),
        "{:?}",
        first_low.at - pinned
    );
    // Unpinned: back to the top (after the upgrade hold).
    net.sfu.pin_layer(net.now, &sid, None);
    assert!(
        net.run_until(Duration::from_secs(15), on_top),
        "a stayed low"
    );
    net.run(Duration::from_secs(2));
    assert_eq!(
        layers_since(&net.peers[a], net.now - Duration::from_secs(1)),
        [2]
    );
    let (complete, _) = complete_video(&net.peers[a]);
    assert!(complete, "numbering ran on through every switch");
}

#[test]
fn a_single_layer_publisher_is_capped_at_its_subscribers_best_remb() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let subs: Vec<usize> = net.subscribers(2, &mid);
    net.peers[subs[0]].remb = Some(300_000);
    net.peers[subs[1]].remb = Some(200_000);
    net.run(Duration::from_secs(8));
    assert!(net.peers[p].caps.is_empty(), "a lower cap waits 10 s");
    net.run(Duration::from_secs(5));
    assert_eq!(
        net.peers[p].caps.last(),
        Some(&375_000),
        "the best subscriber's REMB with 25 %"
    );
    // One subscriber's link recovers: the cap goes up at once.
    let sent = net.peers[p].caps.len();
    net.peers[subs[1]].remb = Some(4_000_000);
    net.run(Duration::from_secs(1));
    assert_eq!(net.peers[p].caps[sent..].last(), Some(&5_000_000));
}

#[test]
fn a_subscriber_without_remb_leaves_its_publisher_uncapped() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    net.subscribe(&ids("b").1, &mid);
    net.peers[a].remb = Some(300_000);
    net.run(Duration::from_secs(15));
    assert!(net.peers[p].caps.is_empty(), "{:?}", net.peers[p].caps);
}

#[test]
fn a_pin_sent_before_the_subscriber_connects_holds() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    net.publish_simulcast(&mid);
    let sid = ids("a").1;
    let a = net.subscribe(&sid, &mid);
    // At once, before its session has a track (a client asking as soon as
    // its subscribe is answered).
    net.sfu.pin_layer(net.now, &sid, Some(LayerPin::Low));
    net.run(Duration::from_secs(12));
    assert_eq!(
        layers_since(&net.peers[a], net.now - Duration::from_secs(12)),
        [0]
    );
}

#[test]
fn a_subscriber_whose_layer_stops_is_moved_to_one_still_sent() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    let on_top = |n: &Net| n.peers[a].videos().last().is_some_and(|r| r.layer == 2);
    assert!(net.run_until(Duration::from_secs(15), on_top));
    net.run(Duration::from_secs(1));
    // The publisher drops its top layer (its uplink fell short).
    net.peers[p].stopped.push(2);
    let stopped = net.now;
    let moved = |n: &Net| n.peers[a].videos().last().is_some_and(|r| r.layer == 1);
    assert!(
        net.run_until(Duration::from_secs(3), moved),
        "a stayed on the stopped layer"
    );
    let took = net.now - stopped;
    net.run(Duration::from_secs(2));
    let (frames, longest) = frames_since(&net.peers[a], stopped - Duration::from_millis(100));
    println!("moved after {took:?}; longest gap {longest:?}, {frames} frames");
    // Quiet for LAYER_QUIET, seen at the next allocation (every
    // ALLOCATE_EVERY), then the lower layer's key frame: 0.5–0.9 s here.
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert!(longest < Duration::from_millis(1200), "froze {longest:?}");
}

#[test]
fn a_layer_throttled_by_the_cap_does_not_look_cheap_enough_to_raise_it() {
    // Both subscribers behind 320 kbit/s; the publisher shares its cap out
    // as Chrome does, throttling the layer that does not fit whole. At the
    // ~220 kbit/s cap the middle layer (500 kbit/s whole) is throttled to
    // ~50 kbit/s, under both estimates: measured alone, it would be chosen,
    // raising the cap so that it goes back to 500 kbit/s, and so on.
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let subs: Vec<usize> = net.subscribers(2, &mid);
    for &s in &subs {
        net.peers[s].down.rate = 320_000;
    }
    net.run(Duration::from_secs(14));
    let first = net.peers[p].caps.len();
    assert!(first > 0, "capped after 10 s of weak subscribers");
    let capped_at = net.now;
    net.run(Duration::from_secs(16));
    let caps = &net.peers[p].caps[first - 1..];
    println!("caps {caps:?}");
    assert!(
        caps.iter().all(|&c| c <= 320_000),
        "the cap went back up: {caps:?}"
    );
    for &s in &subs {
        let layers = layers_since(&net.peers[s], capped_at + Duration::from_secs(1));
        assert_eq!(layers, [0], "subscriber {s} moved to a throttled layer");
    }
}

/// The temporal layers each packet received since `since` came from, and
/// whether its sequence numbers and picture ids ran without a gap.
fn temporal_since(p: &Peer, since: Instant) -> (Vec<u8>, bool, bool) {
    let got: Vec<&Received> = p.videos().filter(|r| r.at >= since).collect();
    let mut tids: Vec<u8> = got.iter().filter_map(|r| r.tid).collect();
    tids.sort_unstable();
    tids.dedup();
    let mut seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let seq_gapless = seqs.windows(2).all(|w| w[1] == w[0] + 1);
    let mut pids: Vec<u16> = got.iter().filter_map(|r| r.pid).collect();
    pids.dedup();
    let pid_gapless = pids.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff);
    (tids, seq_gapless, pid_gapless)
}

/// A publisher of one L1T3 encoding and subscribers a and b: the network
/// and the indices of the publisher, a and b.
fn temporal_call() -> (Net, usize, usize, usize) {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_temporal(&mid);
    let subs = net.subscribers(2, &mid);
    (net, p, subs[0], subs[1])
}

#[test]
fn a_subscriber_on_a_weak_link_is_sent_fewer_temporal_layers_without_a_gap() {
    let (mut net, p, a, b) = temporal_call();
    // Audio 24k; the video's layers 480k, 720k with layer 1, 1.2M all.
    net.peers[a].remb_capacity = Some(5_000_000);
    net.peers[b].remb_capacity = Some(850_000);
    // The first REMBs come 5 s after the media.
    net.run(Duration::from_secs(8));
    let since = net.now;
    let keyframes = net.peers[p].keyframes_sent.len();
    net.run(Duration::from_secs(4));
    let (tids, seqs, pids) = temporal_since(&net.peers[a], since);
    assert_eq!((tids, seqs, pids), (vec![0, 1, 2], true, true), "A: all");
    let (tids, seqs, pids) = temporal_since(&net.peers[b], since);
    assert_eq!(
        (tids, seqs, pids),
        (vec![0, 1], true, true),
        "B: layers 0 and 1, numbered without a gap"
    );
    // B's link narrows further: layer 0 only, at once.
    net.peers[b].remb_capacity = Some(560_000);
    net.run(Duration::from_secs(2));
    let since = net.now;
    net.run(Duration::from_secs(3));
    let (tids, seqs, pids) = temporal_since(&net.peers[b], since);
    assert_eq!((tids, seqs, pids), (vec![0], true, true), "B: layer 0");
    // Its limit is lifted. Its REMB only ever reads 1.5 times what it
    // receives, less than all layers cost, yet it climbs back to them.
    net.peers[b].remb_capacity = Some(5_000_000);
    let lifted = net.now;
    let climbed = net.run_until(Duration::from_secs(15), |n| {
        n.peers[b]
            .videos()
            .any(|r| r.at > lifted && r.tid == Some(2))
    });
    assert!(climbed, "B back on all layers within 15 s");
    println!("B climbed back in {:?}", net.now - lifted);
    let since = net.now;
    net.run(Duration::from_secs(4));
    let (tids, seqs, pids) = temporal_since(&net.peers[b], since);
    assert_eq!((tids, seqs, pids), (vec![0, 1, 2], true, true), "B: all");
    assert_eq!(
        net.peers[p].keyframes_sent.len(),
        keyframes,
        "no switch needed a key frame"
    );
    let (tids, _, _) = temporal_since(&net.peers[a], since);
    assert_eq!(tids, [0, 1, 2], "A undisturbed");
}

#[test]
fn a_subscriber_losing_packets_its_remb_does_not_see_is_sent_fewer_temporal_layers() {
    let (mut net, p, a, b) = temporal_call();
    // B's link carries 1 Mbit/s and drops the rest; its REMB reads as if
    // it carried 5 (a receive-side estimator sees delay, not drops).
    for s in [a, b] {
        net.peers[s].remb_capacity = Some(5_000_000);
    }
    net.peers[b].down.rate = 1_000_000;
    net.run(Duration::from_secs(10));
    let since = net.now;
    let dropped = net.peers[b].down.dropped;
    net.run(Duration::from_secs(5));
    let (tids, seqs, pids) = temporal_since(&net.peers[b], since);
    assert_eq!(
        (tids, seqs, pids),
        (vec![0, 1], true, true),
        "B: layers 0, 1"
    );
    assert_eq!(
        net.peers[b].down.dropped, dropped,
        "B's link no longer drops"
    );
    let (tids, _, _) = temporal_since(&net.peers[a], since);
    assert_eq!(tids, [0, 1, 2], "A: all");
    // Every picture of layers 0 and 1 (25 a second) arrived: no gap.
    let mut pictures: Vec<u32> = net.peers[b]
        .videos()
        .filter(|r| r.at >= since)
        .map(|r| r.ts)
        .collect();
    pictures.dedup();
    assert!(pictures.len() >= 120, "{} pictures in 5 s", pictures.len());
    assert!(net.peers[p].caps.iter().all(|&c| c > 1_000_000));
}

#[test]
fn a_switch_at_a_key_frame_whose_first_packet_came_late_decodes_at_once() {
    let mut net = Net::new();
    let (mid, _) = ids("alice");
    let p = net.publish_simulcast(&mid);
    let a = net.subscribe(&ids("a").1, &mid);
    // The first packet of the key frame the SFU asks for on the top layer
    // is lost on the publisher's uplink: repaired, it comes after the
    // rest of its key frame.
    let lose: Rc<Cell<Option<u32>>> = Rc::new(Cell::new(None));
    net.peers[p].keyframe_loss = Some((2, lose.clone()));
    let cell = lose.clone();
    net.peers[p].up.filter = Some(Box::new(move |d| {
        let rtp = d.len() > 12 && d[0] >> 6 == 2 && (96..=127).contains(&(d[1] & 0x7f));
        let hit = rtp && cell.get() == Some(u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
        if hit {
            cell.set(None);
        }
        hit
    }));
    let on_top = net.run_until(Duration::from_secs(15), |n| {
        n.peers[a].videos().any(|r| r.layer == 2)
    });
    assert!(on_top, "a climbs to the top layer");
    assert!(
        net.peers[p].keyframe_loss.is_none() && lose.get().is_none(),
        "the key frame's first packet was lost"
    );
    assert_eq!(net.peers[p].up.dropped, 1);
    let since = net.peers[a].videos().find(|r| r.layer == 2).unwrap().at;
    net.run(Duration::from_secs(2));
    let (frames, gap) = frames_since(&net.peers[a], since);
    assert!(
        frames >= 95 && gap < Duration::from_millis(100),
        "{frames} frames, longest gap {gap:?}"
    );
}

/// Chrome's top layer at 1280x720 is about 2 Mbit/s: a subscriber on the
/// middle layer needs an estimate of 2.35 Mbit/s for it (the upgrade
/// headroom), more than its estimator grants by itself when only the top
/// layer's own 2 Mbit/s is padded for. Run at several link delays and
/// moments of lifting, as timing decided whether it got stuck.
#[test]
fn a_lifted_limit_is_found_again_under_a_two_megabit_top_layer() {
    let mut took = Vec::new();
    for k in 0..10u64 {
        let (mut net, p, a, b) = simulcast_call_with_b_limited();
        net.peers[p].sizes[2] = 5000;
        for n in [p, a, b] {
            let delay = Duration::from_millis(2 + (k % 4) * 7);
            (net.peers[n].up.delay, net.peers[n].down.delay) = (delay, delay);
        }
        net.run(Duration::from_millis(10_000 + k * 173));
        assert_eq!(
            layers_since(&net.peers[b], net.now - Duration::from_secs(2)),
            [0],
            "run {k}: b on the lowest layer while limited"
        );
        let (climbed, after) = lift_and_climb(&mut net, b);
        took.push(after.as_millis());
        assert!(
            climbed,
            "run {k}: b stayed below the top layer; runs so far (ms): {took:?}"
        );
    }
    println!("b back on the top layer after (ms): {took:?}");
}
