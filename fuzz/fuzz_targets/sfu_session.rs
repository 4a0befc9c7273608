//! An established call at the SFU, then whatever the input says: a real
//! str0m publisher and subscriber (ICE, DTLS, SRTP done) wired to a fresh
//! `Sfu` in memory, and the input read as operations on that call — RTP
//! packets of any payload type, sequence number, timestamp, marker,
//! payload (VP8/VP9/H.264/Opus-looking headers) and header extensions
//! written through the publisher's real SRTP; raw and mutated datagrams
//! from the peers' own addresses (so the SFU maps them to their sessions)
//! and from a stranger's; key-frame requests from the subscriber; loss,
//! reordering and duplication on a link; the clock advanced or jumped;
//! unsubscribe and unpublish. After each operation everything runs to
//! quiescence. Nothing may panic.
//!
//! Every input builds its own call from nothing on a fake clock that
//! starts at the same `Instant` and moves only as the input says, and
//! str0m's non-cryptographic randomness (SSRCs, ICE credentials) is
//! seeded the same each time, so a finding reproduces from the input
//! alone (`cargo fuzz run sfu_session ARTIFACT`). What no caller can seed
//! still differs between runs: the cryptographic randomness (DTLS keys,
//! so the ciphertext and the handshake's lengths) and the iteration order
//! of str0m's and the SFU's hash maps (std seeds them per process), which
//! can change which stream str0m polls first and so the order of two
//! datagrams in one step. Measured over 300 corpus inputs run twice: 4
//! ran differently. A finding that does not crash at once may need
//! `-runs=10` on its artifact.
//!
//! `SFU_SESSION_VERBOSE=1` prints what each input reached (sessions left,
//! packets forwarded and received, simulated time), to check the target
//! still gets media through.
//!
//! The in-memory network mirrors `src/sfu/sim.rs` (test-only, so not
//! reachable from here; to share once test support is a crate of its
//! own), without its delays and rates: a datagram is delivered within the
//! same step unless a fault says otherwise.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};
use wren::limits::Limits;
use str0m::change::SdpAnswer;
use str0m::config::DtlsCert;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid as TrackMid, Pt, Rid,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{AbsCaptureTime, ExtensionValues, RtpWrite, SeqNo, VideoOrientation};
use str0m::{Candidate, Event, Input, Output, Rtc};
use wren::ids::{Mid, Sid};
use wren::sfu::engine::Sfu;

const SFU_ADDR: &str = "10.0.0.1:4000";
const PUBLISHER: &str = "10.0.1.1:5000";
const SUBSCRIBER: &str = "10.0.1.2:5000";
const STRANGER: &str = "10.0.1.9:5000";
/// One tick of the fake clock.
const STEP: Duration = Duration::from_millis(5);
/// Ticks the call may take to connect (1.5 s of simulated time).
const CONNECT_TICKS: usize = 300;
/// Operations read from one input at most.
const MAX_OPS: usize = 256;
/// Ticks one input may spend advancing the clock, all operations together.
const MAX_TICKS: usize = 2000;
/// Exchange rounds to quiescence after one operation at most.
const MAX_ROUNDS: usize = 64;
/// Datagrams kept for replay and mutation.
const HEARD: usize = 16;
/// Indexes of `Peer::seq` and `Peer::ts`.
const AUDIO: usize = 0;
const VIDEO: usize = 1;

/// The peers' one DTLS certificate, made once (the SFU makes its own per
/// input: `Sfu::new`).
fn peer_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate")
    })
    .clone()
}

/// Where every input's clock starts.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One direction of a path, with the faults asked for on it.
#[derive(Default)]
struct Link {
    queue: VecDeque<Vec<u8>>,
    /// Datagrams still to drop.
    drop: u8,
    /// Hold the next datagram back behind the one after it.
    reorder: bool,
    held: Option<Vec<u8>>,
    /// Deliver the next datagram twice.
    duplicate: bool,
}

impl Link {
    fn pop(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(d) = self.queue.pop_front() else {
                // Nothing came after a held datagram: it goes now.
                return self.held.take();
            };
            if self.drop > 0 {
                self.drop -= 1;
                continue;
            }
            if self.reorder && self.held.is_none() {
                self.reorder = false;
                self.held = Some(d);
                continue;
            }
            if let Some(h) = self.held.take() {
                self.queue.push_front(h);
            }
            if std::mem::take(&mut self.duplicate) {
                self.queue.push_front(d.clone());
            }
            return Some(d);
        }
    }
}

/// A str0m peer (full ICE agent, RTP mode) on a simulated address.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    tracks: Vec<(TrackMid, MediaKind)>,
    /// Towards the SFU and from it.
    up: Link,
    down: Link,
    connected: bool,
    /// RTP packets received (the subscriber's media).
    received: usize,
    /// The last extended sequence number and timestamp written per kind:
    /// [audio, video].
    seq: [u64; 2],
    ts: [u32; 2],
}

impl Peer {
    fn new(
        now: Instant,
        at: &str,
        dir: Direction,
    ) -> (Peer, String, str0m::change::SdpPendingOffer) {
        let addr = addr(at);
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_dtls_cert(peer_cert())
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let tracks = vec![
            (
                api.add_media(MediaKind::Audio, dir, None, None, None),
                MediaKind::Audio,
            ),
            (
                api.add_media(MediaKind::Video, dir, None, None, None),
                MediaKind::Video,
            ),
        ];
        let (offer, pending) = api.apply().unwrap();
        let peer = Peer {
            rtc,
            addr,
            tracks,
            up: Link::default(),
            down: Link::default(),
            connected: false,
            received: 0,
            seq: [1000, 2000],
            ts: [0, 0],
        };
        (peer, offer.to_sdp_string(), pending)
    }

    /// Polls str0m until it wants time: datagrams onto the uplink.
    fn drain(&mut self, heard: &mut VecDeque<Vec<u8>>) {
        while let Ok(out) = self.rtc.poll_output() {
            match out {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    remember(heard, &t.contents);
                    self.up.queue.push_back(t.contents.to_vec());
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::RtpPacket(_)) => self.received += 1,
                Output::Event(_) => {}
            }
        }
    }

    fn receive(&mut self, now: Instant, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, addr(SFU_ADDR), self.addr, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
        }
    }

    fn mid(&self, kind: MediaKind) -> TrackMid {
        self.tracks.iter().find(|t| t.1 == kind).unwrap().0
    }
}

fn remember(heard: &mut VecDeque<Vec<u8>>, d: &[u8]) {
    if heard.len() == HEARD {
        heard.pop_front();
    }
    heard.push_back(d.to_vec());
}

/// The SFU with one publisher and one subscriber of its stream.
struct Call {
    now: Instant,
    sfu: Sfu,
    /// [publisher, subscriber].
    peers: [Peer; 2],
    /// Recent datagrams, both ways, to replay and mutate.
    heard: VecDeque<Vec<u8>>,
    ticks: usize,
}

impl Call {
    fn connected(now: Instant) -> Call {
        let mut sfu = Sfu::new(
            addr(SFU_ADDR),
            &Limits {
                sfu_sessions: 8,
                sfu_connect_timeout_ms: 10_000,
                rtx_cache_packets: 64,
                ..Limits::default()
            },
        ).unwrap();
        let mid = Mid::parse("pub#000001").unwrap();
        let (mut publisher, offer, pending) = Peer::new(now, PUBLISHER, Direction::SendOnly);
        let answer = sfu.publish(now, mid.clone(), &offer).unwrap();
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap();
        let (mut subscriber, offer, pending) = Peer::new(now, SUBSCRIBER, Direction::RecvOnly);
        let sid = Sid::parse("sub#000001").unwrap();
        let answer = sfu.subscribe(now, sid, &mid, &offer).unwrap();
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        subscriber
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap();
        let mut call = Call {
            now,
            sfu,
            peers: [publisher, subscriber],
            heard: VecDeque::new(),
            ticks: 0,
        };
        call.settle();
        let mut after = None;
        for i in 0..CONNECT_TICKS {
            call.tick(STEP);
            if call.peers.iter().all(|p| p.connected) {
                // A few more ticks: the SFU's side finishes its handshake
                // and starts the subscriber.
                let a = *after.get_or_insert(i);
                if i >= a + 10 {
                    break;
                }
            }
        }
        assert!(
            call.peers.iter().all(|p| p.connected),
            "setup: the call did not connect (not a finding about the input)"
        );
        call.heard.clear();
        call.ticks = 0;
        call
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        self.ticks += 1;
        for p in self.peers.iter_mut() {
            let _ = p.rtc.handle_input(Input::Timeout(self.now));
        }
        self.settle();
    }

    /// Moves datagrams and runs the SFU until nothing moves (bounded).
    fn settle(&mut self) {
        let now = self.now;
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for p in self.peers.iter_mut() {
                p.drain(&mut self.heard);
                while let Some(d) = p.up.pop() {
                    self.sfu.handle_datagram(now, p.addr, &d);
                    moved = true;
                }
            }
            if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
            }
            while let Some(t) = self.sfu.poll_transmit() {
                remember(&mut self.heard, &t.contents);
                if let Some(p) = self.peers.iter_mut().find(|p| p.addr == t.destination) {
                    p.down.queue.push_back(t.contents.to_vec());
                }
            }
            while self.sfu.poll_event().is_some() {}
            for p in self.peers.iter_mut() {
                while let Some(d) = p.down.pop() {
                    p.receive(now, &d);
                    // Polled after each datagram: in RTP mode str0m holds
                    // one received packet until it is polled.
                    p.drain(&mut self.heard);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn op(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.arbitrary::<u8>()? {
            0..=89 => {
                let w = self.rtp(u)?;
                self.write(w.0, w.1);
            }
            90..=129 => self.raw(u)?,
            130..=149 => {
                let kind = if u.arbitrary()? {
                    KeyframeRequestKind::Fir
                } else {
                    KeyframeRequestKind::Pli
                };
                let audio = u.ratio(1, 8)?;
                let sub = &mut self.peers[1];
                let mid = sub.mid(if audio {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                });
                if let Some(rx) = sub.rtc.direct_api().stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(kind);
                }
            }
            150..=179 => {
                let ms = u.int_in_range(1..=1000u64)?;
                let mut left = Duration::from_millis(ms);
                while !left.is_zero() && self.ticks < MAX_TICKS {
                    let d = left.min(STEP);
                    left -= d;
                    self.tick(d);
                }
            }
            180..=184 => {
                // A jump: consent and connect timeouts, stale caches.
                let ms = u.int_in_range(1..=60_000u64)?;
                self.tick(Duration::from_millis(ms));
            }
            185..=219 => {
                let (p, down) = (u.int_in_range(0..=1usize)?, u.arbitrary::<bool>()?);
                let peer = &mut self.peers[p];
                let link = if down { &mut peer.down } else { &mut peer.up };
                match u.int_in_range(0..=2u8)? {
                    0 => link.drop = link.drop.saturating_add(u.int_in_range(1..=8)?),
                    1 => link.reorder = true,
                    _ => link.duplicate = true,
                }
            }
            220..=249 => {
                // A frame of consecutive packets: a key frame or not.
                let n = u.int_in_range(1..=160usize)?;
                let key = u.arbitrary::<bool>()?;
                let size = u.int_in_range(1..=1100usize)?;
                let v = VIDEO;
                let pt = self.pts(MediaKind::Video).first().copied();
                let Some(pt) = pt else { return Ok(()) };
                self.peers[0].ts[v] = self.peers[0].ts[v].wrapping_add(3000);
                for i in 0..n {
                    let mut payload = vec![i as u8; size.max(2)];
                    payload[0] = if i == 0 { 0x10 } else { 0x00 };
                    payload[1] = !key as u8;
                    self.peers[0].seq[v] += 1;
                    let w = RtpWrite::new(
                        pt,
                        SeqNo::from(self.peers[0].seq[v]),
                        self.peers[0].ts[v],
                        self.now,
                        payload,
                    )
                    .marker(i + 1 == n)
                    .nackable(true);
                    self.write(MediaKind::Video, w);
                }
            }
            _ => match u.int_in_range(0..=2u8)? {
                0 => self.sfu.unsubscribe(&Sid::parse("sub#000001").unwrap()),
                1 => self.sfu.unpublish(&Mid::parse("pub#000001").unwrap()),
                _ => self.sfu.clear(),
            },
        }
        self.settle();
        Ok(())
    }

    /// The payload types the SFU accepted on the publisher's m-line.
    fn pts(&self, kind: MediaKind) -> Vec<Pt> {
        let p = &self.peers[0];
        p.rtc
            .media(p.mid(kind))
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default()
    }

    fn write(&mut self, kind: MediaKind, w: RtpWrite) {
        let p = &mut self.peers[0];
        let mid = p.mid(kind);
        if let Some(tx) = p.rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.write_rtp(w);
        }
    }

    /// One RTP packet of the input's choosing.
    fn rtp(&mut self, u: &mut Unstructured) -> Result<(MediaKind, RtpWrite)> {
        let kind = if u.ratio(1, 4)? {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let k = if kind == MediaKind::Video {
            VIDEO
        } else {
            AUDIO
        };
        let pts = self.pts(kind);
        let pt = if pts.is_empty() || u.ratio(1, 8)? {
            Pt::new_with_value(u.int_in_range(0..=127)?)
        } else {
            pts[u.choose_index(pts.len())?]
        };
        let now = self.now;
        let p = &mut self.peers[0];
        p.seq[k] = match u.int_in_range(0..=7u8)? {
            0..=4 => p.seq[k] + 1,
            5 => p.seq[k].saturating_add_signed(u.arbitrary::<i8>()? as i64),
            6 => u.arbitrary::<u16>()? as u64,
            // The SRTP index is 48 bits: leave room to count on.
            _ => u.int_in_range(0..=1u64 << 47)?,
        };
        p.ts[k] = match u.int_in_range(0..=7u8)? {
            0..=4 => p.ts[k].wrapping_add(u.arbitrary::<u16>()? as u32),
            5 => u.arbitrary()?,
            _ => p.ts[k],
        };
        let payload = payload(u)?;
        let ext = ext_vals(u, now)?;
        let w = RtpWrite::new(pt, SeqNo::from(p.seq[k]), p.ts[k], now, payload)
            .marker(u.arbitrary()?)
            .nackable(u.arbitrary()?)
            .ext_vals(ext);
        Ok((kind, w))
    }

    /// A raw datagram at the SFU: mutated, replayed or made up.
    fn raw(&mut self, u: &mut Unstructured) -> Result<()> {
        let from = match u.int_in_range(0..=3u8)? {
            0 | 1 => self.peers[0].addr,
            2 => self.peers[1].addr,
            _ => addr(STRANGER),
        };
        let mut d = match u.int_in_range(0..=6u8)? {
            // A recent real datagram, replayed or mutated.
            0..=2 if !self.heard.is_empty() => {
                let mut d = self.heard[u.choose_index(self.heard.len())?].clone();
                for _ in 0..u.int_in_range(0..=4u8)? {
                    if d.is_empty() {
                        break;
                    }
                    let i = u.choose_index(d.len())?;
                    match u.int_in_range(0..=3u8)? {
                        0 => d[i] ^= 1 << u.int_in_range(0..=7u8)?,
                        1 => d[i] = u.arbitrary()?,
                        2 => d.truncate(i),
                        _ => {
                            let n = u.int_in_range(0..=16)?;
                            d.extend_from_slice(u.bytes(n)?);
                        }
                    }
                }
                d
            }
            // STUN: a binding message with the magic cookie.
            3 => {
                let mut d = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
                d[0] = u.int_in_range(0..=3)?;
                d[1] = u.arbitrary()?;
                d
            }
            // A DTLS record header (any content type, DTLS 1.2, epoch).
            4 => {
                let mut d = vec![u.int_in_range(20..=63)?, 0xfe, 0xfd];
                d.extend_from_slice(&u.arbitrary::<[u8; 8]>()?);
                d
            }
            // An RTP or RTCP header with a real SSRC of this call.
            5 => {
                let rtcp = u.arbitrary::<bool>()?;
                let b1 = if rtcp {
                    u.int_in_range(192..=207)?
                } else {
                    u.arbitrary()?
                };
                let mut d = vec![0x80 | u.int_in_range(0..=0x3f)?, b1];
                d.extend_from_slice(&u.arbitrary::<[u8; 6]>()?);
                let ssrc = self.real_ssrc(u)?;
                d.extend_from_slice(&ssrc.to_be_bytes());
                d
            }
            _ => Vec::new(),
        };
        let n = u.int_in_range(0..=200usize)?;
        d.extend_from_slice(u.bytes(n.min(u.len()))?);
        self.sfu.handle_datagram(self.now, from, &d);
        Ok(())
    }

    /// The SSRC of one of the call's streams (or any number).
    fn real_ssrc(&mut self, u: &mut Unstructured) -> Result<u32> {
        let p = u.int_in_range(0..=1usize)?;
        let kind = if u.arbitrary()? {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let peer = &mut self.peers[p];
        let mid = peer.mid(kind);
        let mut api = peer.rtc.direct_api();
        let ssrc = if p == 0 {
            api.stream_tx_by_mid(mid, None).map(|s| *s.ssrc())
        } else {
            api.stream_rx_by_mid(mid, None).map(|s| *s.ssrc())
        };
        match ssrc {
            Some(s) => Ok(s),
            None => u.arbitrary(),
        }
    }
}

/// An RTP payload: a VP8, VP9, H.264 or Opus-looking header (key frame
/// or not, well formed or not), input bytes, and filler.
fn payload(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut p: Vec<u8> = match u.int_in_range(0..=7u8)? {
        // VP8 descriptor: X, S, partition; the extension's I/L/T/K and a
        // picture id; then the payload header's P bit.
        0 => {
            let b0 = u.arbitrary::<u8>()? | 0x10;
            let mut p = vec![b0];
            if b0 & 0x80 != 0 {
                p.push(u.arbitrary()?);
                p.extend_from_slice(&u.arbitrary::<[u8; 3]>()?);
            }
            p.push(u.int_in_range(0..=1)?);
            p
        }
        // VP9 descriptor: I, P, L, F, B, E, V, Z, a picture id, layers.
        1 => vec![
            u.arbitrary::<u8>()? | 0x08,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
        ],
        // H.264 single NAL unit: IDR, SPS, PPS, SEI or a slice.
        2 => vec![0x60 | [5, 7, 8, 6, 1][u.choose_index(5)?]],
        // STAP-A of NAL units whose lengths may lie.
        3 => {
            let mut p = vec![0x78];
            for _ in 0..u.int_in_range(0..=3)? {
                p.extend_from_slice(&u.int_in_range(0..=40u16)?.to_be_bytes());
                p.push(0x60 | u.int_in_range(0..=31u8)?);
                let n = u.int_in_range(0..=8)?;
                p.extend_from_slice(u.bytes(n)?);
            }
            p
        }
        // FU-A: start/end bits and the fragment's NAL type.
        4 => vec![0x7c, u.arbitrary()?],
        // Opus TOC byte.
        5 => vec![u.arbitrary()?],
        // Nothing at all (padding-like).
        6 => Vec::new(),
        _ => Vec::new(),
    };
    let n = u.int_in_range(0..=64usize)?;
    p.extend_from_slice(u.bytes(n.min(u.len()))?);
    let filler = u.int_in_range(0..=1200usize)?;
    p.extend((0..filler).map(|i| i as u8));
    Ok(p)
}

/// Header extension values, mostly none.
fn ext_vals(u: &mut Unstructured, now: Instant) -> Result<ExtensionValues> {
    let mut e = ExtensionValues::default();
    if !u.ratio(1, 3)? {
        return Ok(e);
    }
    let set = u.arbitrary::<u16>()?;
    let bit = |n: u32| set & (1 << n) != 0;
    if bit(0) {
        e.audio_level = Some(u.arbitrary()?);
    }
    if bit(1) {
        e.voice_activity = Some(u.arbitrary()?);
    }
    if bit(2) {
        e.video_orientation = Some(VideoOrientation::from(u.arbitrary::<u8>()?));
    }
    if bit(3) {
        e.video_content_type = Some(u.arbitrary()?);
    }
    if bit(4) {
        e.tx_time_offs = Some(u.arbitrary()?);
    }
    if bit(5) {
        e.abs_send_time = now.checked_sub(Duration::from_millis(u.arbitrary::<u16>()? as u64));
    }
    if bit(6) {
        e.abs_capture_time = Some(AbsCaptureTime {
            capture_time: SystemTime::UNIX_EPOCH
                + Duration::from_millis(u.arbitrary::<u32>()? as u64),
            clock_offset: u.arbitrary()?,
        });
    }
    if bit(7) {
        e.transport_cc = Some(u.arbitrary()?);
    }
    if bit(8) {
        e.play_delay_min = Some(MediaTime::new(
            u.arbitrary::<u16>()? as u64,
            Frequency::HUNDREDTHS,
        ));
        e.play_delay_max = Some(MediaTime::new(
            u.arbitrary::<u16>()? as u64,
            Frequency::HUNDREDTHS,
        ));
    }
    if bit(9) {
        e.frame_mark = Some(u.arbitrary()?);
    }
    if bit(10) {
        e.mid = Some(TrackMid::from(["0", "1", "2", "x"][u.choose_index(4)?]));
    }
    if bit(11) {
        e.rid = Some(Rid::from(["h", "m", "l", "q"][u.choose_index(4)?]));
    }
    Ok(e)
}

fuzz_target!(|data: &[u8]| {
    // The same non-cryptographic randomness for every input (str0m draws
    // SSRCs and ICE credentials from fastrand).
    fastrand::seed(0x5eed);
    let t0 = Instant::now();
    let mut call = Call::connected(base());
    let setup = (t0.elapsed(), call.now - base());
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_OPS {
        if u.is_empty() || call.op(&mut u).is_err() {
            break;
        }
    }
    // Let what the input set going finish: retransmissions, reports.
    for _ in 0..20 {
        call.tick(Duration::from_millis(50));
    }
    if std::env::var_os("SFU_SESSION_VERBOSE").is_some() {
        // What the input reached, to check the target works at all.
        let stats = call.sfu.stats();
        eprintln!(
            "setup {setup:?} sessions {} forwarded {} received {} ticks {} elapsed {:?}",
            call.sfu.sessions(),
            stats.forwarded_packets,
            call.peers[1].received,
            call.ticks,
            call.now - base(),
        );
    }
});
