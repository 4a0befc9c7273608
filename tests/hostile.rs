//! Hostile input against the running server over real sockets: thousands
//! of random and mutated frames at the WebSocket, random and mutated
//! datagrams at the SFU's UDP port. Afterwards the server must be alive,
//! nobody else disturbed, and a clean join/publish/subscribe with media
//! must still work, and neither process may have panicked: a panic in a
//! connection's task would otherwise be swallowed by the executor in a
//! debug build (release builds abort), so both processes log to a file
//! that is read at the end.

mod common;

use common::{Client, Server};
use serde_json::json;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A server whose log (signaling node and SFU child) goes to a file, and
/// the pid of its SFU child.
fn logged_server(name: &str) -> (Server, PathBuf, u32) {
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}.log", std::process::id()));
    let server = Server::start_logged(&["--log-level", "info"], &log);
    let sfus = wren::bench::procfs::children(server.child.id());
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
        wren::bench::procfs::children(server.child.id()),
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

/// Join, publish real media, subscribe, and see packets arrive.
fn clean_call_works(server: &Server) {
    let mut alice = Client::connect(server, "alice");
    let mut bob = Client::connect(server, "bob");
    alice.ok("join", json!({"rid": "after"}));
    bob.ok("join", json!({"rid": "after"}));
    common::media_call(&mut alice, &mut bob, "after");
}
