//! Hostile input against the running server over real sockets: thousands
//! of random and mutated frames at the WebSocket, random and mutated
//! datagrams at the SFU's UDP port, and a storm through an established
//! session: mutated RTP written through a real publisher's SRTP (so DTLS,
//! SRTP, key-frame detection and forwarding see it) and garbage from the
//! established peers' own addresses. Afterwards the server must be alive,
//! nobody else disturbed, and a clean join/publish/subscribe with media
//! must still work, and neither process may have panicked: a panic in a
//! connection's task would otherwise be swallowed by the executor in a
//! debug build (release builds abort), so both processes log to a file
//! that is read at the end.

use serde_json::json;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use str0m::media::{Frequency, MediaKind, MediaTime, Mid as TrackMid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, VideoOrientation};
use wren_testkit::peer::{run_all, run_until, Peer};
use wren_testkit::{Client, Server};

/// A server whose log (signaling node and SFU child) goes to a file, and
/// the pid of its SFU child.
fn logged_server(name: &str) -> (Server, PathBuf, u32) {
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}.log", std::process::id()));
    let server = Server::start_logged(&["--log-level", "info"], &log);
    let sfus = wren_testkit::procfs::children(server.child.id());
    assert_eq!(sfus.len(), 1, "one SFU child: {sfus:?}");
    (server, log, sfus[0])
}

/// Both processes are alive, the SFU child is the one that started (the
/// supervisor would have restarted a dead one), and nothing panicked.
fn assert_nothing_crashed(server: &mut Server, log: &Path, sfu: u32) {
    assert!(server.alive(), "the signaling node survived");
    let stat = std::fs::read_to_string(format!("/proc/{sfu}/stat")).unwrap_or_default();
    assert!(
        !stat.is_empty() && !stat.contains(") Z "),
        "the SFU child {sfu} survived: {stat:?}"
    );
    assert_eq!(
        wren_testkit::procfs::children(server.child.id()),
        vec![sfu],
        "the SFU child was never replaced"
    );
    let text = std::fs::read_to_string(log).expect("the server's log");
    assert!(!text.contains("panicked"), "a panic in the log:\n{text}");
    assert!(
        !text.contains("SFU child exited"),
        "the SFU child died:\n{text}"
    );
    assert_eq!(
        text.matches("SFU child started").count(),
        1,
        "the SFU child was started once:\n{text}"
    );
}

/// Valid requests to mutate (in a room of the attacker's own).
const TEMPLATES: &[&str] = &[
    r#"{"request":true,"id":1,"method":"join","data":{"rid":"zoo"}}"#,
    r#"{"request":true,"id":2,"method":"leave","data":{"rid":"zoo"}}"#,
    r#"{"request":true,"id":3,"method":"keepalive","data":{"rid":"zoo"}}"#,
    r#"{"request":true,"id":4,"method":"broadcast","data":{"rid":"zoo","data":{"a":[1,2,{"b":null}]}}}"#,
    r#"{"request":true,"id":5,"method":"publish","data":{"rid":"zoo","jsep":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"},"minfo":{"audio":true,"video":false,"audiotype":0,"videotype":0}}}"#,
    r#"{"request":true,"id":6,"method":"unpublish","data":{"rid":"zoo","mid":"x#123456","sfuid":"sfu-1"}}"#,
    r#"{"request":true,"id":7,"method":"subscribe","data":{"rid":"zoo","mid":"x#123456","jsep":{"type":"offer","sdp":"v=0"}}}"#,
    r#"{"request":true,"id":8,"method":"unsubscribe","data":{"rid":"zoo","mid":"x#1","sid":"y#2"}}"#,
];

/// Replacement fragments: wrong types, huge numbers, odd unicode.
const ODDITIES: &[&str] = &[
    "null",
    "true",
    "-1",
    "1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"🦀\u{202e}\u{feff}\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "\"ok\"",
];

fn mutate(rng: &mut fastrand::Rng) -> String {
    let base = TEMPLATES[rng.usize(..TEMPLATES.len())];
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..rng.usize(1..4) {
        match rng.u8(..6) {
            // Flip a character to a random printable one.
            0 if !s.is_empty() => {
                let i = rng.usize(..s.len());
                s[i] = rng.char(' '..='~');
            }
            // Truncate.
            1 if !s.is_empty() => s.truncate(rng.usize(..s.len())),
            // Splice an oddity in place of a value-ish span.
            2 => {
                let text: String = s.iter().collect();
                if let Some(colon) = text.match_indices(':').nth(rng.usize(..6)) {
                    let odd = ODDITIES[rng.usize(..ODDITIES.len())];
                    let rest = &text[colon.0 + 1..];
                    let end = rest.find([',', '}']).unwrap_or(rest.len());
                    let out = format!("{}{}{}", &text[..colon.0 + 1], odd, &rest[end..]);
                    s = out.chars().collect();
                }
            }
            // Duplicate a span.
            3 if s.len() > 2 => {
                let a = rng.usize(..s.len() - 1);
                let b = rng.usize(a..s.len());
                let span: Vec<char> = s[a..b].to_vec();
                s.splice(b..b, span);
            }
            // Random unicode noise.
            4 => {
                for _ in 0..rng.usize(1..20) {
                    s.insert(rng.usize(..=s.len()), rng.char(..));
                }
            }
            _ => {}
        }
    }
    s.into_iter().collect()
}

#[test]
fn thousands_of_mutated_frames_disturb_nobody() {
    let (mut server, log, sfu) = logged_server("frames");
    let mut calm = Client::connect(&server, "calm");
    calm.ok("join", json!({"rid": "calm"}));

    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut sent = 0;
    let mut reconnects = 0;
    let mut attacker = Client::connect(&server, "attacker");
    while sent < 5000 {
        if attacker.closed.is_some() {
            attacker = Client::connect(&server, "attacker");
            reconnects += 1;
        }
        match rng.u8(..10) {
            0 => attacker.send_binary((0..rng.usize(..300)).map(|_| rng.u8(..)).collect()),
            1 => {
                let noise: String = (0..rng.usize(..300)).map(|_| rng.char(..)).collect();
                attacker.send_text(&noise);
            }
            _ => attacker.send_text(&mutate(&mut rng)),
        }
        sent += 1;
        // Read what came back now and then, so the socket never backs up.
        if sent % 50 == 0 {
            attacker.drain(Duration::from_millis(5));
        }
    }
    println!(
        "sent {sent} hostile frames over {} connections",
        reconnects + 1
    );
    assert!(server.alive(), "the server survived");
    calm.assert_quiet();
    assert_eq!(calm.ok("keepalive", json!({"rid": "calm"})), json!({}));
    clean_call_works(&server);
    assert_nothing_crashed(&mut server, &log, sfu);
}

#[test]
fn random_datagrams_at_the_sfu_port_break_nothing() {
    let (mut server, log, sfu) = logged_server("datagrams");
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}", server.media_port);
    let mut rng = fastrand::Rng::with_seed(0xd06);
    for _ in 0..20_000 {
        let len = rng.usize(..1500);
        let mut d: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if let Some(first) = d.first_mut() {
            // Aim at each demultiplexing range: STUN, DTLS, RTP/RTCP.
            *first = match rng.u8(..4) {
                0 => rng.u8(0..4),
                1 => rng.u8(20..64),
                2 => rng.u8(128..192),
                _ => *first,
            };
        }
        let _ = stranger.send_to(&d, &target);
    }
    assert!(server.alive());
    clean_call_works(&server);
    assert_nothing_crashed(&mut server, &log, sfu);
}

/// An RTP payload for the storm: VP8, VP9 or H.264 headers that look like
/// key frames or not (well formed or not), Opus, or nothing, then noise.
fn storm_payload(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut p: Vec<u8> = match rng.u8(..7) {
        // VP8: S set, partition 0 or not, X with a picture id; P bit.
        0 => {
            let b0 = rng.u8(..) | 0x10;
            let mut p = vec![b0];
            if b0 & 0x80 != 0 {
                p.extend([rng.u8(..), rng.u8(..), rng.u8(..), rng.u8(..)]);
            }
            p.push(rng.u8(0..2));
            p
        }
        // VP9: B set, P and L as they come, a picture id and layers.
        1 => vec![rng.u8(..) | 0x08, rng.u8(..), rng.u8(..), rng.u8(..)],
        // H.264: an IDR, SPS, PPS or slice NAL unit.
        2 => vec![0x60 | [5, 7, 8, 1][rng.usize(..4)]],
        // STAP-A whose NAL lengths may lie.
        3 => {
            let mut p = vec![0x78];
            for _ in 0..rng.usize(..4) {
                p.extend(rng.u16(..64).to_be_bytes());
                p.push(0x60 | rng.u8(..32));
            }
            p
        }
        // FU-A: start/end bits, the NAL type.
        4 => vec![0x7c, rng.u8(..)],
        5 => Vec::new(),
        _ => vec![rng.u8(..)],
    };
    let noise = if rng.u8(..4) == 0 {
        rng.usize(..1200)
    } else {
        rng.usize(..200)
    };
    p.extend((0..noise).map(|_| rng.u8(..)));
    p
}

/// Header extension values for the storm: mostly none, else any subset.
fn storm_extensions(rng: &mut fastrand::Rng) -> ExtensionValues {
    let mut e = ExtensionValues::default();
    if rng.u8(..3) != 0 {
        return e;
    }
    let set = rng.u16(..);
    let bit = |n: u32| set & (1 << n) != 0;
    if bit(0) {
        e.audio_level = Some(rng.i8(..));
    }
    if bit(1) {
        e.voice_activity = Some(rng.bool());
    }
    if bit(2) {
        e.video_orientation = Some(VideoOrientation::from(rng.u8(..)));
    }
    if bit(3) {
        e.video_content_type = Some(rng.u8(..));
    }
    if bit(4) {
        e.tx_time_offs = Some(rng.u32(..));
    }
    if bit(5) {
        e.transport_cc = Some(rng.u16(..));
    }
    if bit(6) {
        e.play_delay_min = Some(MediaTime::new(rng.u64(..4096), Frequency::HUNDREDTHS));
        e.play_delay_max = Some(MediaTime::new(rng.u64(..4096), Frequency::HUNDREDTHS));
    }
    if bit(7) {
        e.frame_mark = Some(rng.u32(..));
    }
    if bit(8) {
        e.mid = Some(TrackMid::from(["0", "1", "x"][rng.usize(..3)]));
    }
    if bit(9) {
        e.rid = Some(Rid::from(["h", "l"][rng.usize(..2)]));
    }
    e
}

/// Raw bytes aimed at each demultiplexing range (STUN, DTLS, RTP/RTCP),
/// RTP and RTCP ones with a well-formed first byte.
fn garbage(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut d: Vec<u8> = (0..rng.usize(1..1300)).map(|_| rng.u8(..)).collect();
    match rng.u8(..5) {
        0 => {
            d[0] = rng.u8(0..4);
            if d.len() >= 8 {
                d[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            }
        }
        1 => {
            d[0] = rng.u8(20..64);
            if d.len() >= 3 {
                d[1..3].copy_from_slice(&[0xfe, 0xfd]);
            }
        }
        2 => {
            d[0] = 0x80 | rng.u8(..0x40);
            if d.len() >= 2 {
                d[1] = rng.u8(192..208); // RTCP
            }
        }
        3 => d[0] = 0x80 | rng.u8(..0x40),
        _ => {}
    }
    d
}

#[test]
fn a_storm_through_an_established_session_disturbs_nobody() {
    let (mut server, log, sfu) = logged_server("session");
    let media: SocketAddr = format!("127.0.0.1:{}", server.media_port).parse().unwrap();

    // A bystander call on the same SFU, media flowing before the storm.
    let mut carol = Client::connect(&server, "carol");
    let mut dave = Client::connect(&server, "dave");
    carol.ok("join", json!({"rid": "calm"}));
    dave.ok("join", json!({"rid": "calm"}));
    let (mut calm_pub, mut calm_sub, _) = wren_testkit::media_call(&mut carol, &mut dave, "calm");

    // The attacker publishes in RTP mode: whatever it writes goes through
    // its real session (DTLS-SRTP keys and all); a witness subscribes.
    let mut mallory = Client::connect(&server, "mallory");
    let mut witness = Client::connect(&server, "witness");
    mallory.ok("join", json!({"rid": "storm"}));
    witness.ok("join", json!({"rid": "storm"}));
    let mut attacker = Peer::rtp_publisher();
    let answer = mallory.ok("publish", wren_testkit::publish_data("storm", &attacker));
    attacker.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    let mut watcher = Peer::subscriber();
    let sub = witness.ok(
        "subscribe",
        wren_testkit::subscribe_data("storm", &answer["mid"], &watcher),
    );
    watcher.accept_answer(sub["jsep"]["sdp"].as_str().unwrap());
    let connected = run_until(
        &mut [&mut attacker, &mut watcher, &mut calm_pub, &mut calm_sub],
        wren_testkit::WAIT,
        |p| p[0].connected() && p[1].connected(),
    );
    assert!(
        connected,
        "the attacker's and the witness's sessions connect"
    );
    let (audio_pts, video_pts) = (
        attacker.remote_pts(MediaKind::Audio),
        attacker.remote_pts(MediaKind::Video),
    );
    assert!(!audio_pts.is_empty() && !video_pts.is_empty());
    // Give the witness's session a moment to be started by the SFU.
    run_all(
        &mut [&mut attacker, &mut watcher, &mut calm_pub, &mut calm_sub],
        Duration::from_millis(500),
    );

    let mut rng = fastrand::Rng::with_seed(0x5e55);
    let (mut seq, mut ts) = ([1000u64, 5000u64], [0u32, 0u32]);
    let calm_before = calm_sub.received;
    let (mut written, mut raw) = (0, 0);
    let start = Instant::now();
    for i in 0..6000 {
        if i % 3 == 2 {
            // Garbage from the established peers' own addresses: the SFU
            // hands it to their sessions, whose str0m must reject it.
            let from = if rng.bool() { &attacker } else { &watcher };
            from.send_raw(media, &garbage(&mut rng));
            raw += 1;
        } else {
            let video = rng.u8(..4) != 0;
            let (kind, k, pts) = if video {
                (MediaKind::Video, 1, &video_pts)
            } else {
                (MediaKind::Audio, 0, &audio_pts)
            };
            // Mostly the preferred codec (the one the witness receives),
            // else any negotiated payload type (RTX ones included) or any.
            let pt = match rng.u8(..8) {
                0 => Pt::new_with_value(rng.u8(..128)),
                1..=3 => pts[rng.usize(..pts.len())],
                _ => pts[0],
            };
            seq[k] = match rng.u8(..40) {
                0 | 1 => seq[k].saturating_add_signed(rng.i64(-100..100)),
                // Far ahead, but within SRTP's window (the receiver
                // guesses the rollover count from the distance: RFC 3711,
                // 3.3.1); rollovers come with it.
                2 => seq[k] + rng.u64(..30_000),
                // Anywhere in this 16-bit cycle, near the end: the SFU may
                // then count another rollover and reject what follows.
                3 if i > 5500 => (seq[k] & !0xffff) | rng.u64(..0x10000),
                _ => seq[k] + 1,
            };
            ts[k] = match rng.u8(..6) {
                0 => rng.u32(..),
                1 => ts[k],
                _ => ts[k].wrapping_add(rng.u32(..6000)),
            };
            let write = RtpWrite::new(
                pt,
                SeqNo::from(seq[k]),
                ts[k],
                Instant::now(),
                storm_payload(&mut rng),
            )
            .marker(rng.bool())
            .nackable(rng.bool())
            .ext_vals(storm_extensions(&mut rng));
            if attacker.write_rtp(kind, write) {
                written += 1;
            }
        }
        // Let everyone read and answer now and then (the bystanders'
        // media keeps flowing meanwhile).
        if i % 10 == 9 {
            run_all(
                &mut [&mut attacker, &mut watcher, &mut calm_pub, &mut calm_sub],
                Duration::from_millis(2),
            );
        }
    }
    run_all(
        &mut [&mut attacker, &mut watcher, &mut calm_pub, &mut calm_sub],
        Duration::from_millis(500),
    );
    println!(
        "wrote {written} mutated RTP packets through the session and sent {raw} raw \
         datagrams from the peers' addresses in {:?}; the witness received {:?}",
        start.elapsed(),
        watcher.received
    );
    assert_eq!(written, 4000, "the attacker's session took every packet");
    // The storm reached forwarding: the witness's session decrypted what
    // the SFU relayed of it (~3000 packets here; fewer if a slow machine's
    // socket overflowed).
    assert!(
        watcher.received[0] >= 100 && watcher.received[1] >= 300,
        "mutated media reached the witness: {:?}",
        watcher.received
    );

    // The bystanders were not disturbed: their media flowed through the
    // storm and still flows.
    assert!(server.alive(), "the server survived");
    let during = calm_sub.received;
    assert!(
        during[0] > calm_before[0] + 10 && during[1] > calm_before[1] + 10,
        "the bystander's media flowed during the storm: {calm_before:?} -> {during:?}"
    );
    let flowing = run_until(
        &mut [&mut calm_pub, &mut calm_sub],
        wren_testkit::WAIT,
        |p| p[1].received[0] > during[0] + 10 && p[1].received[1] > during[1] + 10,
    );
    assert!(
        flowing,
        "the bystander's media still flows: {during:?} -> {:?}",
        calm_sub.received
    );
    for c in [&mut carol, &mut dave] {
        assert_no_stream_removed(c);
    }
    // Not even the attacker's own sessions were ended by the garbage from
    // their addresses.
    assert_no_stream_removed(&mut witness);
    clean_call_works(&server);
    assert_nothing_crashed(&mut server, &log, sfu);
}

/// Reads what came for a client: no stream of its room was removed (the
/// SFU would report a session it dropped).
fn assert_no_stream_removed(c: &mut Client) {
    while let Some((method, data)) = c.try_note(Duration::from_millis(100)) {
        assert_ne!(method, "stream-remove", "{}: {data}", c.uid);
    }
}

/// Join, publish real media, subscribe, and see packets arrive.
fn clean_call_works(server: &Server) {
    let mut alice = Client::connect(server, "alice");
    let mut bob = Client::connect(server, "bob");
    alice.ok("join", json!({"rid": "after"}));
    bob.ok("join", json!({"rid": "after"}));
    wren_testkit::media_call(&mut alice, &mut bob, "after");
}
