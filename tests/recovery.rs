//! When media or an SFU goes away: streams are removed as on unpublish,
//! the node keeps serving, answers publish with 503 while no SFU is there,
//! and picks the SFU up again when it is back.

use serde_json::json;
use std::time::{Duration, Instant};
use wren_testkit::peer::{run_until, Peer};
use wren_testkit::{socket_path, Client, Server, SfuProcess, WAIT};

#[test]
fn a_publisher_whose_media_closes_is_removed_like_unpublish() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let mut peer = Peer::publisher();
    let answer = alice.ok("publish", wren_testkit::publish_data("r", &peer));
    peer.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    assert!(run_until(&mut [&mut peer], Duration::from_secs(10), |p| p
        [0]
    .connected()));
    let mid = answer["mid"].clone();
    assert_eq!(bob.note_named("stream-add")["mid"], mid);

    // The browser closes its RTCPeerConnection (DTLS close_notify).
    peer.rtc.close().expect("close");
    peer.run_for(Duration::from_millis(200));
    let removed = bob.note_named("stream-remove");
    assert_eq!(removed, json!({"rid": "r", "uid": "alice", "mid": mid}));
    assert_eq!(
        alice.note_named("stream-remove")["mid"],
        mid,
        "the owner learns its stream is gone too"
    );
}

#[test]
fn an_sfu_that_dies_takes_its_streams_and_the_node_reconnects_when_it_is_back() {
    let socket = socket_path("sfu");
    let mut sfu = SfuProcess::start(&socket, "sfu-a");
    let server = Server::start_signal(&socket);
    assert!(server.wait_health(200), "the node connects to the SFU");

    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let answer = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    );
    assert_eq!(answer["sfuid"], "sfu-a");
    let mid = answer["mid"].clone();
    assert_eq!(bob.note_named("stream-add")["mid"], mid);

    sfu.kill();
    assert_eq!(
        bob.note_named("stream-remove"),
        json!({"rid": "r", "uid": "alice", "mid": mid})
    );
    assert!(server.wait_health(503));
    assert_eq!(
        alice.err(
            "publish",
            wren_testkit::publish_data("r", &Peer::publisher())
        ),
        503
    );
    // Signaling itself still works.
    assert_eq!(
        alice.ok("broadcast", json!({"rid": "r", "data": 1})),
        json!({})
    );
    assert_eq!(bob.note_named("broadcast")["data"], 1);

    let _sfu = SfuProcess::start(&socket, "sfu-a");
    assert!(server.wait_health(200), "the node reconnects");
    let again = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    );
    assert_eq!(bob.note_named("stream-add")["mid"], again["mid"]);
}

#[test]
fn the_supervisor_restarts_a_killed_sfu_child_and_calls_resume() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let mid = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    )["mid"]
        .clone();
    assert_eq!(bob.note_named("stream-add")["mid"], mid);

    let children = wren_testkit::procfs::children(server.child.id());
    assert_eq!(children.len(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &children[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(bob.note_named("stream-remove")["mid"], mid);
    assert!(server.wait_health(200), "a new SFU child is up");
    let new_children = wren_testkit::procfs::children(server.child.id());
    assert_eq!(new_children.len(), 1);
    assert_ne!(new_children, children);

    // The publisher republishes, the subscriber sees it and media flows.
    let (_p, _s, answer) = wren_testkit::media_call(&mut alice, &mut bob, "r");
    assert_eq!(bob.note_named("stream-add")["mid"], answer["mid"]);
}

/// Calls under way when their SFU dies are answered 503 at once (not left
/// to the call timeout), the node keeps serving, and a new SFU on the same
/// socket carries calls again.
#[test]
fn calls_in_flight_when_the_sfu_dies_are_answered_503() {
    let socket = socket_path("dies");
    let cfg = socket_path("dies-cfg").with_extension("toml");
    // A call timeout far beyond the test: only the SFU's death may answer.
    std::fs::write(&cfg, "[limits]\nsfu-call-timeout-ms = 600000\n").unwrap();
    let mut sfu = SfuProcess::start(&socket, "sfu-d");
    let server = Server::start_signal_with(&socket, &["--config", cfg.to_str().unwrap()]);
    assert!(server.wait_health(200), "the node connects to the SFU");

    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let mid = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    )["mid"]
        .clone();
    assert_eq!(bob.note_named("stream-add")["mid"], mid);

    // The SFU hangs: a publish and a subscribe stay pending.
    let (publish, subscribe) = (
        wren_testkit::publish_data("r", &Peer::publisher()),
        wren_testkit::subscribe_data("r", &mid, &Peer::subscriber()),
    );
    sfu.signal("STOP");
    let request = |id: u64, method: &str, data: &serde_json::Value| {
        json!({"request": true, "id": id, "method": method, "data": data}).to_string()
    };
    alice.send_text(&request(1, "publish", &publish));
    bob.send_text(&request(2, "subscribe", &subscribe));
    let deadline = Instant::now() + WAIT;
    while wren_testkit::metric(server.http, "wren_sfu_calls_pending") != Some(2) {
        assert!(Instant::now() < deadline, "the two calls never got pending");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Then it dies.
    sfu.kill();
    for (client, id) in [(&mut alice, 1), (&mut bob, 2)] {
        let r = client.response(id);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["errorCode"], 503, "{r}");
        assert_eq!(r["errorReason"], "no SFU available", "{r}");
    }
    assert_eq!(
        wren_testkit::metric(server.http, "wren_sfu_calls_pending"),
        Some(0)
    );
    // Its stream went with it, for everyone.
    let removed = json!({"rid": "r", "uid": "alice", "mid": mid});
    assert_eq!(alice.note_named("stream-remove"), removed);
    assert_eq!(bob.note_named("stream-remove"), removed);
    assert!(server.wait_health(503));
    // The node keeps serving.
    assert_eq!(
        alice.ok("broadcast", json!({"rid": "r", "data": 1})),
        json!({})
    );
    assert_eq!(bob.note_named("broadcast")["data"], 1);

    // A new SFU on the same socket path carries calls, media included.
    let _sfu = SfuProcess::start(&socket, "sfu-d");
    assert!(server.wait_health(200), "the node reconnects");
    let (_p, _s, answer) = wren_testkit::media_call(&mut alice, &mut bob, "r");
    assert_eq!(answer["sfuid"], "sfu-d");
}

/// Whether the SFU's own count of sessions (its last report) equals the
/// node's streams and subscriptions on it: no orphan, nothing missing.
fn sfu_matches_the_node(server: &Server) -> bool {
    let m = |series: &str| wren_testkit::metric(server.http, series);
    let up = m("wren_sfu_up{slot=\"1\"");
    let sessions = m("wren_sfu_sessions{slot=\"1\"");
    let streams = m("wren_sfu_streams{slot=\"1\"");
    let subs = m("wren_sfu_subscriptions{slot=\"1\"");
    let pending = m("wren_sfu_calls_pending");
    match (up, sessions, streams, subs, pending) {
        (Some(1), Some(sessions), Some(streams), Some(subs), Some(0)) => sessions == streams + subs,
        _ => false,
    }
}

/// Waits (generously: a stuck SFU has a backlog to work through) until
/// the SFU's sessions match the node's tables, twice in a row, a stats
/// report apart.
fn wait_sfu_matches_the_node(server: &Server) -> bool {
    let deadline = Instant::now() + 3 * WAIT;
    let mut in_a_row = 0;
    while Instant::now() < deadline {
        in_a_row = if sfu_matches_the_node(server) {
            in_a_row + 1
        } else {
            0
        };
        if in_a_row == 2 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    false
}

/// The node's queue towards a stuck SFU fills up: a control message that
/// finds it full must not be lost in a way that leaves a session alive in
/// the SFU that the node has forgotten (a dropped unsubscribe or unpublish
/// would keep a connected client's session, and its media, forever; here
/// the SFU's connect timeout is set long so that unconnected sessions
/// stand for connected ones). Afterwards the SFU's sessions match the
/// node's tables and calls work again.
#[test]
fn a_control_message_that_finds_the_queue_full_leaves_no_orphan_session() {
    let socket = socket_path("stuck");
    let cfg = socket_path("stuck-cfg").with_extension("toml");
    std::fs::write(
        &cfg,
        "[limits]\nliveness-timeout-secs = 600\n\
         sfu-call-timeout-ms = 3000\nsfu-connect-timeout-ms = 600000\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let sfu = SfuProcess::start_with(&socket, "sfu-q", &["--config", cfg]);
    let server = Server::start_signal_with(&socket, &["--config", cfg]);
    assert!(server.wait_health(200), "the node connects to the SFU");

    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let mid = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    )["mid"]
        .clone();
    let sub = bob.ok(
        "subscribe",
        wren_testkit::subscribe_data("r", &mid, &Peer::subscriber()),
    );
    let sid = sub["sid"].clone();
    assert!(
        wait_sfu_matches_the_node(&server),
        "2 sessions to begin with"
    );

    // Loaders in rooms of their own (streams per room: 16), with offers
    // padded to ~8 KiB so that the control socket's buffer fills fast.
    let mut loaders: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::connect(&server, &format!("load{i}"));
            c.ok("join", json!({"rid": format!("l{i}")}));
            c
        })
        .collect();
    let mut offer = Peer::publisher().offer();
    offer.push_str(&"a=x-padding:0123456789abcdef0123456789abcdef\r\n".repeat(180));

    // The SFU hangs. Each round, 64 publishes (every pending slot) go out
    // and time out, and each timeout sends an unpublish: after a few
    // rounds the socket's buffer and the node's queue are full.
    sfu.signal("STOP");
    for round in 0..3u64 {
        for (i, l) in loaders.iter_mut().enumerate() {
            for k in 0..16 {
                let data = json!({"rid": format!("l{i}"), "jsep": {"type": "offer", "sdp": offer},
                                  "minfo": wren_testkit::minfo()});
                let id = round * 100 + k;
                l.send_text(
                    &json!({"request": true, "id": id, "method": "publish", "data": data})
                        .to_string(),
                );
            }
        }
        let ids: Vec<u64> = (0..16).map(|k| round * 100 + k).collect();
        for l in loaders.iter_mut() {
            for r in l.responses(&ids) {
                // 504: timed out; 503: no SFU.
                let code = r["errorCode"].as_u64();
                assert!(matches!(code, Some(503 | 504)), "{r}");
            }
        }
    }
    // bob unsubscribes while the queue is full: the node forgets the
    // subscription (or has already dropped everything on that SFU).
    let r = bob.request("unsubscribe", json!({"rid": "r", "mid": mid, "sid": sid}));
    assert!(r["ok"] == true || r["errorCode"] == 404, "unsubscribe: {r}");
    sfu.signal("CONT");

    // No session outlives the node's tables.
    assert!(
        wait_sfu_matches_the_node(&server),
        "orphan sessions in the SFU:\n{}",
        wren_testkit::http_get(server.http, "/metrics").map_or(String::new(), |(_, b)| b)
    );
    // And calls work again.
    let mid = alice.ok(
        "publish",
        wren_testkit::publish_data("r", &Peer::publisher()),
    )["mid"]
        .clone();
    bob.ok(
        "subscribe",
        wren_testkit::subscribe_data("r", &mid, &Peer::subscriber()),
    );
    assert!(wait_sfu_matches_the_node(&server));
}
