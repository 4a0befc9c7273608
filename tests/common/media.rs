//! A real WebRTC peer for tests: str0m (not ICE-lite) on its own loopback
//! UDP socket. A publisher sends synthetic Opus and VP8 frames; a
//! subscriber counts the RTP packets it receives.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    offer: String,
    pub connected: bool,
    pub tracks: Vec<(Mid, MediaKind)>,
    /// RTP packets received per kind: [audio, video].
    pub received: [usize; 2],
    /// Key-frame requests (PLI/FIR) received.
    pub keyframe_requests: usize,
    pub first_keyframe_request: Option<Instant>,
    pub first_video_packet: Option<Instant>,
    /// A publisher (sends frames) rather than a subscriber.
    sends: bool,
    frames_sent: u64,
    next_frame: Option<Instant>,
    start: Instant,
}

fn kind_index(k: MediaKind) -> usize {
    (k == MediaKind::Video) as usize
}

impl Peer {
    /// A publisher: sendonly audio + video, frame mode (str0m packetizes).
    pub fn publisher() -> Peer {
        Peer::new(false, Direction::SendOnly)
    }

    /// A subscriber: recvonly audio + video, RTP mode (we count packets).
    pub fn subscriber() -> Peer {
        Peer::new(true, Direction::RecvOnly)
    }

    fn new(rtp_mode: bool, dir: Direction) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
        socket.set_nonblocking(true).expect("non-blocking");
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(rtp_mode).build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        // Our own m-lines: str0m reports MediaAdded only for remote ones.
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
        let (offer, pending) = api.apply().expect("an offer");
        let mut p = Peer {
            offer: offer.to_sdp_string(),
            rtc,
            socket,
            local,
            pending: Some(pending),
            connected: false,
            tracks,
            received: [0, 0],
            keyframe_requests: 0,
            first_keyframe_request: None,
            first_video_packet: None,
            sends: dir == Direction::SendOnly,
            frames_sent: 0,
            next_frame: None,
            start: now,
        };
        p.drain(now);
        p
    }

    /// The SDP offer to send in publish/subscribe.
    pub fn offer(&self) -> String {
        self.offer.clone()
    }

    pub fn accept_answer(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).expect("a parsable answer");
        let pending = self.pending.take().expect("offer pending");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        self.drain(Instant::now());
    }

    /// Runs the peer's I/O for a while: receive, time out, and (for a
    /// connected publisher) send a frame of each kind every 20 ms.
    pub fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < end {
            let now = Instant::now();
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(now, r));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => {}
            }
            let now = Instant::now();
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.send_frames(now);
            self.drain(now);
        }
    }

    fn send_frames(&mut self, now: Instant) {
        if !self.connected || !self.sends {
            return;
        }
        let due = self.next_frame.get_or_insert(now);
        if *due > now {
            return;
        }
        *due += Duration::from_millis(20);
        self.frames_sent += 1;
        let n = self.frames_sent;
        let elapsed = now - self.start;
        for (mid, kind) in self.tracks.clone() {
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            let (codec, freq, data) = match kind {
                MediaKind::Audio => (Codec::Opus, Frequency::FORTY_EIGHT_KHZ, vec![0xf8u8; 60]),
                // A 3 KB "frame": several RTP packets, key-frame bit varies.
                MediaKind::Video => {
                    let mut d = vec![(n % 30 != 1) as u8; 3000];
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
            let ts = MediaTime::new(
                elapsed.as_micros() as u64 * freq.get() as u64 / 1_000_000,
                freq,
            );
            let _ = writer.write(pt, now, ts, data);
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => return,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
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
                            if kind == MediaKind::Video && self.first_video_packet.is_none() {
                                self.first_video_packet = Some(now);
                            }
                        }
                    }
                    Event::KeyframeRequest(_) => {
                        self.keyframe_requests += 1;
                        self.first_keyframe_request.get_or_insert(now);
                    }
                    _ => {}
                },
            }
        }
    }
}

/// Runs several peers side by side for a while (each step is short).
pub fn run_all(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.run_for(Duration::from_millis(2));
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
