//! Every bound is reachable and answers with a clear error, and nothing
//! else changes. Limits are lowered through the config file's `[limits]`
//! table so that each is reached with a handful of real clients.

use serde_json::{json, Value};
use std::time::Duration;
use wren_testkit::peer::Peer;
use wren_testkit::{socket_path, Client, Server, SfuProcess};

fn publish_data(rid: &str) -> Value {
    wren_testkit::publish_data(rid, &Peer::publisher())
}

fn subscribe_data(rid: &str, mid: &Value) -> Value {
    wren_testkit::subscribe_data(rid, mid, &Peer::subscriber())
}

/// Expects a 503 whose reason names exactly this bound.
fn full(c: &mut Client, method: &str, data: Value, bound: &str) {
    let r = c.request(method, data);
    wren_testkit::assert_full(&r, bound);
}

#[test]
fn the_connection_table_refuses_a_new_socket_with_1013() {
    let server = Server::start_with_config("[limits]\nconnections = 2\n");
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    a.ok("join", json!({"rid": "r"}));
    b.ok("join", json!({"rid": "r"}));
    a.note_named("peer-join");
    let mut c = Client::connect(&server, "c");
    assert_eq!(
        c.wait_close_frame(),
        Some((1013, "capacity full: connections".to_string()))
    );
    a.assert_quiet();
    // Replacing a connected uid needs no new slot.
    let mut b2 = Client::connect(&server, "b");
    assert_eq!(b.wait_close(), Some(4000));
    b2.ok("join", json!({"rid": "r"}));
}

#[test]
fn rooms_peers_per_room_and_rooms_per_peer() {
    let server =
        Server::start_with_config("[limits]\nrooms = 2\npeers-per-room = 2\nrooms-per-peer = 1\n");
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    let mut c = Client::connect(&server, "c");
    a.ok("join", json!({"rid": "r1"}));
    full(&mut a, "join", json!({"rid": "r2"}), "rooms per peer");
    b.ok("join", json!({"rid": "r1"}));
    a.note_named("peer-join");
    full(&mut c, "join", json!({"rid": "r1"}), "peers per room");
    a.assert_quiet();
    c.ok("join", json!({"rid": "r2"}));
    let mut d = Client::connect(&server, "d");
    full(&mut d, "join", json!({"rid": "r3"}), "rooms");
    // The refused joins left nothing behind: r1 still has exactly a and b.
    b.ok("leave", json!({"rid": "r1"}));
    d.ok("join", json!({"rid": "r1"}));
}

#[test]
fn streams_and_subscriptions() {
    let server = Server::start_with_config(
        "[limits]\nstreams-per-room = 1\nstreams = 2\nsubs-per-stream = 1\nsubs = 1\n",
    );
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    let mut c = Client::connect(&server, "c");
    a.ok("join", json!({"rid": "r1"}));
    b.ok("join", json!({"rid": "r1"}));
    a.note_named("peer-join");
    c.ok("join", json!({"rid": "r2"}));
    let mid = a.ok("publish", publish_data("r1"))["mid"].clone();
    b.note_named("stream-add");
    full(&mut b, "publish", publish_data("r1"), "streams per room");
    a.assert_quiet();
    let mid_c = c.ok("publish", publish_data("r2"))["mid"].clone();
    let mut d = Client::connect(&server, "d");
    d.ok("join", json!({"rid": "r3"}));
    full(&mut d, "publish", publish_data("r3"), "streams");

    b.ok("subscribe", subscribe_data("r1", &mid));
    full(
        &mut a,
        "subscribe",
        subscribe_data("r1", &mid),
        "subscriptions per stream",
    );
    a.ok("join", json!({"rid": "r2"}));
    full(
        &mut a,
        "subscribe",
        subscribe_data("r2", &mid_c),
        "subscriptions",
    );
}

#[test]
fn sfu_sessions_are_bounded_in_the_sfu() {
    let server = Server::start_with_config("[limits]\nsfu-sessions = 1\n");
    let mut a = Client::connect(&server, "a");
    a.ok("join", json!({"rid": "r"}));
    a.ok("publish", publish_data("r"));
    full(&mut a, "publish", publish_data("r"), "SFU sessions");
}

#[test]
fn too_many_requests_get_429() {
    let server = Server::start_with_config("[limits]\nrequests-per-sec = 1\nrequest-burst = 3\n");
    let mut a = Client::connect(&server, "a");
    a.ok("join", json!({"rid": "r"}));
    a.ok("keepalive", json!({"rid": "r"}));
    a.ok("keepalive", json!({"rid": "r"}));
    assert_eq!(a.err("keepalive", json!({"rid": "r"})), 429);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(a.ok("keepalive", json!({"rid": "r"})), json!({}));
}

#[test]
fn an_sfu_that_does_not_answer_gives_504_and_pending_calls_are_bounded() {
    let socket = socket_path("stopped");
    let sfu = SfuProcess::start(&socket, "sfu-s");
    let cfg = socket_path("cfg").with_extension("toml");
    std::fs::write(
        &cfg,
        "[limits]\nsfu-call-timeout-ms = 4000\npending-sfu-calls = 1\n",
    )
    .unwrap();
    let server = Server::start_signal_with(&socket, &["--config", cfg.to_str().unwrap()]);
    assert!(server.wait_health(200));
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    a.ok("join", json!({"rid": "r"}));
    b.ok("join", json!({"rid": "r"}));
    // Offers made beforehand: under QEMU making one takes a while.
    let (first, second) = (publish_data("r"), publish_data("r"));
    sfu.signal("STOP");
    a.send_text(&json!({"request": true, "id": 1, "method": "publish", "data": first}).to_string());
    full(&mut b, "publish", second, "pending SFU calls");
    assert_eq!(a.response(1)["errorCode"], 504);
    sfu.signal("CONT");
    // The late session was cancelled; publishing works again.
    a.ok("publish", publish_data("r"));
    assert_eq!(b.note_named("stream-add")["uid"], "a");
}

#[test]
fn a_silent_peer_is_removed_after_the_liveness_timeout() {
    let server = Server::start_with_config("[limits]\nliveness-timeout-secs = 1\n");
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    a.ok("join", json!({"rid": "r"}));
    b.ok("join", json!({"rid": "r"}));
    a.note_named("peer-join");
    // b keeps talking, a says nothing.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        b.ok("keepalive", json!({"rid": "r"}));
    }
    assert_eq!(b.note_named("peer-leave"), json!({"rid": "r", "uid": "a"}));
    assert_eq!(a.wait_close(), Some(4408));
    assert_eq!(b.ok("keepalive", json!({"rid": "r"})), json!({}));
}

/// A client that never sends a request and only answers the server's
/// pings stays connected in a busy room: the pings keep their schedule
/// however much else is sent to it. (The issue's case scaled down five
/// times: liveness 30 s, pings every 10 s, a broadcast every 3 s, 45 s.)
#[test]
fn a_peer_that_only_answers_pings_stays_in_a_busy_room() {
    let server = Server::start_with_config("[limits]\nliveness-timeout-secs = 6\n");
    let mut a = Client::connect(&server, "a");
    let mut b = Client::connect(&server, "b");
    a.ok("join", json!({"rid": "r"}));
    b.ok("join", json!({"rid": "r"}));
    a.note_named("peer-join");
    // 9 s: one and a half liveness timeouts. a only reads, and the client
    // library answers each ping it reads with a pong.
    for i in 0..15 {
        b.ok("broadcast", json!({"rid": "r", "data": i}));
        let note = a.note_named("broadcast");
        assert_eq!(note["data"], i, "{note}");
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(a.closed.is_none(), "a was closed: {:?}", a.closed);
    b.assert_quiet();
    assert_eq!(a.ok("keepalive", json!({"rid": "r"})), json!({}));
}

/// A client that stops reading is disconnected once
/// `MAX_QUEUED_PER_CONNECTION` messages wait for it: it leaves its rooms at
/// once (the others see peer-leave), and nobody else is disturbed. The
/// socket buffers between the node and the client absorb some megabytes
/// first, so talkers in four rooms send it large broadcasts.
#[test]
fn a_client_that_stops_reading_is_disconnected_and_leaves_its_rooms() {
    let server = Server::start();
    let mut slow = Client::connect(&server, "slow");
    let mut fast = Client::connect(&server, "fast");
    let mut talkers: Vec<Client> = (0..4)
        .map(|k| Client::connect(&server, &format!("talker{k}")))
        .collect();
    for (k, t) in talkers.iter_mut().enumerate() {
        t.ok("join", json!({"rid": format!("r{k}")}));
        slow.ok("join", json!({"rid": format!("r{k}")}));
    }
    fast.ok("join", json!({"rid": "r0"}));
    for t in talkers.iter_mut() {
        assert_eq!(t.note_named("peer-join")["uid"], "slow");
    }
    assert_eq!(talkers[0].note_named("peer-join")["uid"], "fast");
    // From here on, slow never reads its socket again.
    let blob = "x".repeat(60 * 1024);
    let mut left = vec![false; talkers.len()];
    let mut fast_saw_leave = false;
    let mut sent = 0;
    for i in 0..100 {
        for (k, t) in talkers.iter_mut().enumerate() {
            let rid = format!("r{k}");
            let data = json!({"n": i, "blob": blob});
            // Rate limit: past the burst, wait for the bucket.
            let mut r = json!(null);
            for _ in 0..100 {
                r = t.request("broadcast", json!({"rid": rid, "data": data}));
                if r["errorCode"] != 429 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(r["ok"], true, "{r}");
            sent += 1;
            if k == 0 {
                // fast reads everything, in order.
                let (mut method, mut note) = fast.note();
                if method == "peer-leave" {
                    assert_eq!(note, json!({"rid": "r0", "uid": "slow"}));
                    fast_saw_leave = true;
                    (method, note) = fast.note();
                }
                assert_eq!(method, "broadcast", "{note}");
                assert_eq!(
                    (&note["uid"], &note["data"]["n"]),
                    (&json!("talker0"), &json!(i))
                );
            }
            while let Some((method, note)) = t.try_note(Duration::ZERO) {
                assert_eq!(method, "peer-leave", "{note}");
                assert_eq!(note, json!({"rid": rid, "uid": "slow"}));
                left[k] = true;
            }
        }
        if left.iter().all(|l| *l) {
            break;
        }
    }
    println!("{sent} broadcasts of 60 KiB sent");
    for (k, t) in talkers.iter_mut().enumerate() {
        if !left[k] {
            assert_eq!(
                t.note_named("peer-leave"),
                json!({"rid": format!("r{k}"), "uid": "slow"}),
                "{sent} broadcasts did not remove slow from r{k}"
            );
        }
        assert_eq!(
            t.ok("keepalive", json!({"rid": format!("r{k}")})),
            json!({})
        );
    }
    if !fast_saw_leave {
        assert_eq!(
            fast.note_named("peer-leave"),
            json!({"rid": "r0", "uid": "slow"})
        );
    }
    fast.assert_quiet();
    assert_eq!(fast.ok("keepalive", json!({"rid": "r0"})), json!({}));
    assert_eq!(
        wren_testkit::metric(server.http, "wren_peers"),
        Some(5),
        "slow is gone"
    );
}
