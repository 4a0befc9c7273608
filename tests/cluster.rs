//! The cluster: several real wren nodes sharing a real `redis-server` on
//! loopback. Nodes find each other, notice one that dies (SIGKILL) or
//! stops, survive Redis going away and coming back, and authenticate;
//! rooms span nodes (join lists, every notification, bounds), a dead
//! node's peers leave everywhere, and an outage reconciles.

use serde_json::{json, Value};
use std::cell::Cell;
use std::time::{Duration, Instant};
use wren_testkit::calls::assert_media_stops;
use wren_testkit::peer::run_until;
use wren_testkit::peer::Peer;
use wren_testkit::redis::{tls_files, Redis};
use wren_testkit::server::wait_until;
use wren_testkit::swarm::Swarm;
use wren_testkit::{
    assert_full, http_get, media_call, metric, publish, runner, socket_path, subscribe,
    subscribe_data, Client, Server, WAIT,
};

/// A node of the cluster at `url`, named `bizid`.
fn node(url: &str, bizid: &str) -> Server {
    Server::start_with(&["--cluster", url, "--bizid", bizid])
}

/// The other nodes `s` counts as alive.
fn peers_of(s: &Server) -> Option<u64> {
    metric(s.http, "wren_cluster_nodes")
}

fn link_up(s: &Server) -> bool {
    metric(s.http, "wren_cluster_up") == Some(1)
}

fn healthz(s: &Server) -> String {
    http_get(s.http, "/healthz").map_or(String::new(), |(_, body)| body)
}

/// Waits until every node of `nodes` counts `n` others.
fn wait_peers(nodes: &[&Server], n: u64) -> bool {
    wait_until(WAIT, || nodes.iter().all(|s| peers_of(s) == Some(n)))
}

#[test]
fn nodes_find_each_other_and_notice_one_killed() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "hall-a");
    let b = node(&url, "hall-b");
    let mut c = node(&url, "hall-c");
    assert!(wait_peers(&[&a, &b, &c], 2), "the three nodes never met");
    assert!(healthz(&a).contains("cluster: up"), "{}", healthz(&a));
    // Each node's heartbeat is a key in Redis, expiring unless renewed.
    let mut keys = redis.keys("wren:node:*");
    keys.sort();
    assert_eq!(
        keys,
        ["wren:node:hall-a", "wren:node:hall-b", "wren:node:hall-c"]
    );
    let rtt = http_get(a.http, "/metrics").unwrap().1;
    assert!(
        rtt.lines()
            .any(|l| l.starts_with("wren_redis_rtt_seconds ") && !l.ends_with("NaN")),
        "no Redis round trip in /metrics"
    );

    let killed = Instant::now();
    let _ = c.child.kill();
    let _ = c.child.wait();
    assert!(
        wait_peers(&[&a, &b], 1),
        "the killed node was never noticed"
    );
    let noticed = killed.elapsed();
    println!("a node killed with SIGKILL was noticed after {noticed:?}");
    // The promise: within 10 s (heartbeats every 2 s, dead after 6 s of
    // silence). Under QEMU the emulator's pace is not the design's.
    if runner().is_empty() {
        assert!(
            noticed < Duration::from_secs(10),
            "noticed after {noticed:?}"
        );
    }
    // Its key expired with it.
    assert!(
        wait_until(WAIT, || redis.keys("wren:node:hall-c").is_empty()),
        "the dead node's heartbeat key stayed"
    );
}

#[test]
fn a_node_that_stops_says_goodbye() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "shop-a");
    let b = node(&url, "shop-b");
    assert!(wait_peers(&[&a, &b], 1), "the nodes never met");
    let stopped = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    assert!(wait_peers(&[&a], 0), "the stopped node was never forgotten");
    println!("a stopped node was forgotten after {:?}", stopped.elapsed());
    // It deleted its key rather than letting it expire.
    assert!(redis.keys("wren:node:shop-b").is_empty());
}

#[test]
fn nodes_carry_on_without_redis_and_meet_again_when_it_returns() {
    let mut redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "bus-a");
    let b = node(&url, "bus-b");
    assert!(wait_peers(&[&a, &b], 1), "the nodes never met");

    redis.stop();
    assert!(
        wait_until(WAIT, || !link_up(&a) && !link_up(&b)),
        "the nodes never noticed Redis was gone"
    );
    // Still healthy (local calls go on), and saying why the cluster is not.
    let (status, body) = http_get(a.http, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cluster: down"), "{body}");
    // Nobody is taken for dead while nobody can be heard.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(peers_of(&a), Some(1));

    redis.restart();
    assert!(
        wait_until(WAIT, || link_up(&a) && link_up(&b)),
        "the nodes never made their link again"
    );
    assert!(wait_peers(&[&a, &b], 1), "the nodes lost each other");
    assert!(healthz(&b).contains("cluster: up"), "{}", healthz(&b));
}

#[test]
fn redis_needs_the_password_and_tls_works() {
    let redis = Redis::start_with_password("s3cret-pass");
    let good = node(&redis.url(), "lab-a");
    let bad_url = redis.url().replace("s3cret-pass", "wrong");
    let bad = node(&bad_url, "lab-b");
    assert!(
        wait_until(WAIT, || link_up(&good)),
        "the right password was refused"
    );
    // The wrong one is refused, and said so.
    assert!(
        wait_until(WAIT, || healthz(&bad).contains("cluster: down")
            && !healthz(&bad).contains("not connected yet")),
        "{}",
        healthz(&bad)
    );
    assert!(!link_up(&bad));
    let body = healthz(&bad);
    assert!(
        body.to_lowercase().contains("auth") || body.contains("WRONGPASS"),
        "{body}"
    );
    // The password never shows.
    assert!(!body.contains("wrong@"), "{body}");

    let tls = tls_files();
    let secure = Redis::start_tls(tls.clone());
    let config = wren_testkit::socket_path("cluster-tls").with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "bizid = \"tls-a\"\ncluster = \"{}\"\ncluster-ca-file = \"{}\"\n",
            secure.url(),
            tls.ca.display()
        ),
    )
    .unwrap();
    let a = Server::start_with(&["--config", config.to_str().unwrap()]);
    assert!(wait_until(WAIT, || link_up(&a)), "{}", healthz(&a));
    // Trusting only the system's CAs, the test's certificate is refused.
    let b = node(&secure.url(), "tls-b");
    assert!(
        wait_until(WAIT, || healthz(&b).contains("TLS")),
        "{}",
        healthz(&b)
    );
}

/// A client named `uid` on node `s` that has joined `rid`; the join's
/// answer data.
fn joined(s: &Server, uid: &str, rid: &str) -> (Client, Value) {
    let mut c = Client::connect(s, uid);
    let data = c.ok("join", json!({"rid": rid}));
    (c, data)
}

/// `(uid, bizid)` of a join answer's `users`, in order.
fn users(data: &Value) -> Vec<(String, String)> {
    data["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["uid"].as_str().unwrap().into(),
                u["bizid"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn pair(uid: &str, bizid: &str) -> (String, String) {
    (uid.to_string(), bizid.to_string())
}

#[test]
fn a_room_spans_nodes_and_every_notification_crosses() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "room-a");
    let b = node(&url, "room-b");
    assert!(wait_peers(&[&a, &b], 1));

    let (mut alice, data) = joined(&a, "alice", "r1");
    assert_eq!(users(&data), []);
    let (mut bob, data) = joined(&b, "bob", "r1");
    assert_eq!(users(&data), [pair("alice", "room-a")]);
    let note = alice.note_named("peer-join");
    assert_eq!(
        (note["uid"].as_str(), note["bizid"].as_str()),
        (Some("bob"), Some("room-b"))
    );

    // A stream on a reaches b's members, with a's SFU as its sfuid.
    let (publisher, answer) = publish(&mut alice, "r1", Peer::publisher());
    assert_eq!(answer["sfuid"], "room-a-sfu-1");
    let note = bob.note_named("stream-add");
    assert_eq!(note["mid"], answer["mid"]);
    assert_eq!(note["sfuid"], "room-a-sfu-1");
    assert_eq!(note["uid"], "alice");

    // A late joiner on b sees the whole room, in the order of joining.
    let (mut carol, data) = joined(&b, "carol", "r1");
    assert_eq!(
        users(&data),
        [pair("alice", "room-a"), pair("bob", "room-b")]
    );
    let pubs = data["pubs"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{data}");
    assert_eq!(
        (&pubs[0]["mid"], &pubs[0]["sfuid"]),
        (&answer["mid"], &json!("room-a-sfu-1"))
    );
    assert_eq!(alice.note_named("peer-join")["uid"], "carol");
    assert_eq!(metric(b.http, "wren_cluster_remote_members"), Some(1));
    assert_eq!(metric(b.http, "wren_cluster_remote_streams"), Some(1));
    assert_eq!(metric(a.http, "wren_cluster_remote_members"), Some(2));

    // Broadcasts cross both ways; the sender hears nothing back.
    bob.ok(
        "broadcast",
        json!({"rid": "r1", "data": {"text": "hi from b"}}),
    );
    let note = alice.note_named("broadcast");
    assert_eq!(
        (note["uid"].as_str(), &note["data"]),
        (Some("bob"), &json!({"text": "hi from b"}))
    );
    assert_eq!(carol.note_named("broadcast")["uid"], "bob");
    alice.ok("broadcast", json!({"rid": "r1", "data": 7}));
    assert_eq!(bob.note_named("broadcast")["data"], 7);
    assert_eq!(carol.note_named("broadcast")["data"], 7);
    bob.assert_quiet();

    // Unpublish and leave cross too.
    alice.ok("unpublish", json!({"rid": "r1", "mid": answer["mid"]}));
    drop(publisher);
    assert_eq!(carol.note_named("stream-remove")["mid"], answer["mid"]);
    assert_eq!(bob.note_named("stream-remove")["mid"], answer["mid"]);
    bob.ok("leave", json!({"rid": "r1"}));
    assert_eq!(alice.note_named("peer-leave")["uid"], "bob");
    assert_eq!(carol.note_named("peer-leave")["uid"], "bob");
    // A socket closing is a leave as well.
    carol.close();
    assert_eq!(alice.note_named("peer-leave")["uid"], "carol");
    let (_dave, data) = joined(&b, "dave", "r1");
    assert_eq!(users(&data), [pair("alice", "room-a")]);
}

#[test]
fn a_room_is_bounded_across_nodes_and_a_uid_joins_once() {
    let redis = Redis::start();
    let url = redis.url();
    let file = wren_testkit::socket_path("cluster-cap").with_extension("toml");
    std::fs::write(&file, "[limits]\npeers-per-room = 3\n").unwrap();
    let start = |bizid: &str| {
        Server::start_with(&[
            "--cluster",
            &url,
            "--bizid",
            bizid,
            "--config",
            file.to_str().unwrap(),
        ])
    };
    let (a, b) = (start("cap-a"), start("cap-b"));
    assert!(wait_peers(&[&a, &b], 1));
    let _one = joined(&a, "one", "small");
    let _two = joined(&b, "two", "small");
    let _three = joined(&a, "three", "small");
    let mut four = Client::connect(&b, "four");
    let refused = four.request("join", json!({"rid": "small"}));
    assert_full(&refused, "peers per room");
    // The same uid through the other node.
    let mut again = Client::connect(&b, "one");
    let refused = again.request("join", json!({"rid": "other"}));
    assert_eq!(refused["ok"], true, "another room is fine: {refused}");
    let refused = again.request("join", json!({"rid": "small"}));
    assert_eq!(refused["errorCode"], 409, "{refused}");
    assert!(
        refused["errorReason"].as_str().unwrap().contains("cap-a"),
        "{refused}"
    );
}

#[test]
fn a_killed_node_s_peers_and_streams_leave_everywhere() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "kill-a");
    let mut b = node(&url, "kill-b");
    assert!(wait_peers(&[&a, &b], 1));
    let (mut alice, _) = joined(&a, "alice", "r");
    let (mut bob, _) = joined(&b, "bob", "r");
    let (_publisher, answer) = publish(&mut bob, "r", Peer::publisher());
    assert_eq!(alice.note_named("peer-join")["uid"], "bob");
    assert_eq!(alice.note_named("stream-add")["mid"], answer["mid"]);

    let killed = Instant::now();
    let _ = b.child.kill();
    let _ = b.child.wait();
    assert_eq!(alice.note_named("stream-remove")["mid"], answer["mid"]);
    assert_eq!(alice.note_named("peer-leave")["uid"], "bob");
    let took = killed.elapsed();
    println!("a killed node's peer left the room elsewhere after {took:?}");
    if runner().is_empty() {
        assert!(took < Duration::from_secs(10), "after {took:?}");
    }
    // Redis forgot it too: a newcomer sees alice alone.
    let (_carol, data) = joined(&a, "carol", "r");
    assert_eq!(users(&data), [pair("alice", "kill-a")]);
    assert_eq!(data["pubs"], json!([]));
    drop(bob);
}

#[test]
fn a_redis_outage_keeps_local_calls_and_reconciles_the_rooms() {
    let mut redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "out-a");
    let b = node(&url, "out-b");
    assert!(wait_peers(&[&a, &b], 1));
    let (mut alice, _) = joined(&a, "alice", "r");
    let (mut ann, _) = joined(&a, "ann", "r");
    let (mut bob, _) = joined(&b, "bob", "r");
    assert_eq!(alice.note_named("peer-join")["uid"], "ann");
    assert_eq!(alice.note_named("peer-join")["uid"], "bob");
    assert_eq!(ann.note_named("peer-join")["uid"], "bob");

    redis.stop();
    assert!(wait_until(WAIT, || !link_up(&a) && !link_up(&b)));
    // A call between two peers of one node goes on.
    let (mut publisher, mut subscriber, _) = media_call(&mut alice, &mut ann, "r");
    // Bob leaves while nobody can tell a; a newcomer on a joins.
    bob.ok("leave", json!({"rid": "r"}));
    let (mut amy, data) = joined(&a, "amy", "r");
    assert_eq!(
        users(&data).len(),
        3,
        "a still shows bob until it can know: {data}"
    );

    redis.restart();
    assert!(wait_until(WAIT, || link_up(&a) && link_up(&b)));
    // a hears that bob is gone; b's room has amy now.
    assert_eq!(alice.note_named("peer-leave")["uid"], "bob");
    assert_eq!(amy.note_named("peer-leave")["uid"], "bob");
    let (_ben, data) = joined(&b, "ben", "r");
    let mut names: Vec<String> = users(&data).into_iter().map(|(u, _)| u).collect();
    names.sort();
    assert_eq!(names, ["alice", "amy", "ann"]);
    // The call never stopped.
    let before = subscriber.received;
    wren_testkit::peer::run_all(
        &mut [&mut publisher, &mut subscriber],
        Duration::from_millis(500),
    );
    assert!(
        subscriber.received[1] > before[1],
        "video stopped: {before:?}"
    );
}

/// What `s`'s first SFU has forwarded so far, in packets.
fn forwarded(s: &Server) -> u64 {
    metric(s.http, "wren_forwarded_packets_total").unwrap_or(0)
}

#[test]
fn a_stream_of_another_board_is_relayed_once_to_all_its_subscribers() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "sub-a");
    let b = node(&url, "sub-b");
    assert!(wait_peers(&[&a, &b], 1));
    let (mut alice, _) = joined(&a, "alice", "r");
    let (mut bob, _) = joined(&b, "bob", "r");
    let (mut carol, _) = joined(&b, "carol", "r");
    let (mut dan, _) = joined(&b, "dan", "r");
    let (mut publisher, answer) = publish(&mut alice, "r", Peer::publisher());
    let mid = &answer["mid"];
    assert_eq!(bob.note_named("stream-add")["mid"], *mid);
    let unknown = bob.request(
        "subscribe",
        subscribe_data("r", &json!("nobody#000001"), &Peer::subscriber()),
    );
    assert_eq!(unknown["errorCode"], 404, "{unknown}");

    // Three subscribers on b, each answered by b's own SFU: b pulls the
    // stream from a once and serves all three.
    let mut subs = Vec::new();
    let mut sids = Vec::new();
    for client in [&mut bob, &mut carol, &mut dan] {
        let mut peer = Peer::subscriber();
        let sub = client.ok("subscribe", subscribe_data("r", mid, &peer));
        peer.accept_answer(sub["jsep"]["sdp"].as_str().unwrap());
        sids.push(sub["sid"].clone());
        subs.push(peer);
    }
    let [s0, s1, s2] = &mut subs[..] else {
        unreachable!()
    };
    let flowing = run_until(&mut [&mut publisher, s0, s1, s2], WAIT, |p| {
        p[1..]
            .iter()
            .all(|s| s.received[0] > 10 && s.received[1] > 10)
    });
    assert!(
        flowing,
        "no media through the relay: {:?} {:?} {:?}",
        s0.received, s1.received, s2.received
    );
    // a's SFU sends the stream once: one subscription (b's relay) and two
    // sessions (the publisher and the relay's).
    assert_eq!(metric(a.http, "wren_subscriptions"), Some(1));
    assert_eq!(metric(a.http, "wren_cluster_served_subscriptions"), Some(1));
    // (The SFU reports its sessions once a second.)
    let sessions = || metric(a.http, "wren_sfu_sessions");
    assert!(
        wait_until(WAIT, || sessions() == Some(2)),
        "{:?}",
        sessions()
    );
    assert_eq!(metric(b.http, "wren_cluster_relays"), Some(1));
    assert_eq!(metric(b.http, "wren_subscriptions"), Some(3));
    // What each board's SFU forwards, over the same second: b three times
    // what a does (printed; the counts above are what is asserted).
    let (fa, fb) = (forwarded(&a), forwarded(&b));
    run_until(
        &mut [&mut publisher, s0, s1, s2],
        Duration::from_secs(2),
        |_| false,
    );
    println!(
        "forwarded over 2 s: a {} packets, b {}",
        forwarded(&a) - fa,
        forwarded(&b) - fb
    );

    // The sids are b's: `layer` and `unsubscribe` work there; a knows
    // nothing of them.
    let ids = |i: usize| json!({"rid": "r", "mid": mid, "sid": sids[i]});
    let mut pin = ids(0);
    pin["layer"] = json!("low");
    bob.ok("layer", pin);
    assert_eq!(alice.err("unsubscribe", ids(0)), 404);
    bob.ok("unsubscribe", ids(0));
    assert_media_stops(&mut publisher, s0, "unsubscribed");
    // The relay stays while carol and dan watch.
    let before = (s1.received[1], s2.received[1]);
    assert!(run_until(&mut [&mut publisher, s1, s2], WAIT, |p| {
        p[1].received[1] > before.0 + 10 && p[2].received[1] > before.1 + 10
    }));
    assert_eq!(metric(b.http, "wren_cluster_relays"), Some(1));

    // When the last subscriber here goes (one unsubscribes, one leaves the
    // room), the relay ends on both boards.
    carol.ok("unsubscribe", ids(1));
    dan.ok("leave", json!({"rid": "r"}));
    assert_media_stops(&mut publisher, s2, "the last subscriber left");
    assert!(wait_until(WAIT, || {
        metric(b.http, "wren_cluster_relays") == Some(0)
            && metric(a.http, "wren_cluster_served_subscriptions") == Some(0)
            && metric(a.http, "wren_subscriptions") == Some(0)
    }));

    // A new subscriber makes a new relay; when the publisher leaves, the
    // stream's end reaches b and takes the relay along.
    let mut again = subscribe(&mut carol, "r", mid);
    assert!(run_until(&mut [&mut publisher, &mut again], WAIT, |p| p[1]
        .received[1]
        > 10));
    assert_eq!(metric(b.http, "wren_cluster_relays"), Some(1));
    alice.ok("leave", json!({"rid": "r"}));
    assert_eq!(carol.note_named("stream-remove")["mid"], *mid);
    assert!(wait_until(WAIT, || {
        metric(b.http, "wren_cluster_relays") == Some(0)
            && metric(b.http, "wren_subscriptions") == Some(0)
    }));
}

#[test]
fn a_call_across_nodes_outlives_a_redis_restart() {
    let mut redis = Redis::start();
    let url = redis.url();
    let a = node(&url, "keep-a");
    let b = node(&url, "keep-b");
    assert!(wait_peers(&[&a, &b], 1));
    let (mut alice, _) = joined(&a, "alice", "r");
    let (mut bob, _) = joined(&b, "bob", "r");
    let (mut publisher, answer) = publish(&mut alice, "r", Peer::publisher());
    let mid = &answer["mid"];
    assert_eq!(bob.note_named("stream-add")["mid"], *mid);
    let mut watching = subscribe(&mut bob, "r", mid);
    assert!(run_until(&mut [&mut publisher, &mut watching], WAIT, |p| p
        [1]
    .received[1]
        > 10));

    // Redis restarts empty (no persistence): each node writes its state
    // again when its link is back, at its own moment. Until the other has,
    // neither takes the other's peers and streams for gone. The media runs
    // on its own thread meanwhile, as a browser's would: peers left
    // unanswered while the test waits for the links would be dropped by
    // the SFUs' ICE, however well the cluster does.
    let swarm = Swarm::start();
    swarm.add(publisher);
    swarm.add(watching);
    redis.stop();
    assert!(wait_until(WAIT, || !link_up(&a) && !link_up(&b)));
    redis.restart();
    assert!(wait_until(WAIT, || link_up(&a) && link_up(&b)));
    let before = Cell::new(None);
    let (flowing, _) = swarm.run_until(WAIT, move |p| {
        let now = p[1].received[1];
        let from = before.get().unwrap_or(now);
        before.set(Some(from));
        now > from + 50
    });
    assert!(flowing, "the relayed media stopped");
    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        while let Some((method, data)) = c.try_note(Duration::from_millis(200)) {
            assert!(
                !matches!(method.as_str(), "peer-leave" | "stream-remove"),
                "{who} was told {method} {data}"
            );
        }
    }
    assert_eq!(metric(b.http, "wren_cluster_relays"), Some(1));
    // And the room is whole in Redis again: a newcomer sees both.
    let (_, carol) = joined(&b, "carol", "r");
    let users = users(&carol);
    assert!(
        users.contains(&pair("alice", "keep-a")) && users.contains(&pair("bob", "keep-b")),
        "{users:?}"
    );
    assert_eq!(carol["pubs"][0]["mid"], *mid);
}

/// A node of the cluster at `url` whose stream table holds `streams`.
fn node_with_streams(url: &str, bizid: &str, streams: usize) -> Server {
    let config = socket_path(bizid).with_extension("toml");
    std::fs::write(&config, format!("[limits]\nstreams = {streams}\n")).unwrap();
    let config = config.to_string_lossy().to_string();
    Server::start_with(&["--cluster", url, "--bizid", bizid, "--config", &config])
}

#[test]
fn a_full_board_places_a_publish_on_the_least_loaded_one() {
    let redis = Redis::start();
    let url = redis.url();
    let a = node_with_streams(&url, "place-a", 1);
    let b = node(&url, "place-b");
    let c = node_with_streams(&url, "place-c", 2);
    assert!(wait_peers(&[&a, &b, &c], 2));
    let (mut alice, _) = joined(&a, "alice", "r");
    let (mut bob, _) = joined(&b, "bob", "r");
    let (mut carol, _) = joined(&c, "carol", "r");
    let (mut dave, _) = joined(&a, "dave", "r");

    // a carries one stream; the second goes to b, which has the most room
    // (c has two). Alice's answer names b's SFU: her media goes there.
    let (mut first, one) = publish(&mut alice, "r", Peer::publisher());
    assert_eq!(one["sfuid"], "place-a-sfu-1");
    let (mut second, two) = publish(&mut alice, "r", Peer::publisher());
    assert_eq!(two["sfuid"], "place-b-sfu-1", "{two}");
    let mid = &two["mid"];
    for c in [&mut bob, &mut carol, &mut dave] {
        c.note_named("stream-add");
        let add = c.note_named("stream-add");
        assert_eq!((&add["mid"], &add["sfuid"]), (mid, &two["sfuid"]));
    }
    assert_eq!(metric(a.http, "wren_cluster_placed_streams"), Some(1));
    assert_eq!(metric(b.http, "wren_cluster_hosted_streams"), Some(1));
    // A newcomer anywhere lists it once, with b's SFU.
    let (_, joiner) = joined(&b, "erin", "r");
    let listed: Vec<&Value> = (joiner["pubs"].as_array().unwrap().iter())
        .filter(|p| p["mid"] == *mid)
        .collect();
    assert_eq!(listed.len(), 1, "{joiner}");
    assert_eq!(listed[0]["sfuid"], "place-b-sfu-1");

    // Bob (on b) gets it from b's SFU directly; carol (on c) and dave (on
    // a, the owner's board) through relays from b.
    let mut subs: Vec<Peer> = [&mut bob, &mut carol, &mut dave]
        .into_iter()
        .map(|c| subscribe(c, "r", mid))
        .collect();
    let [s0, s1, s2] = &mut subs[..] else {
        unreachable!()
    };
    let flowing = run_until(&mut [&mut first, &mut second, s0, s1, s2], WAIT, |p| {
        p[2..]
            .iter()
            .all(|s| s.received[0] > 10 && s.received[1] > 10)
    });
    assert!(
        flowing,
        "{:?} {:?} {:?}",
        s0.received, s1.received, s2.received
    );
    assert_eq!(metric(c.http, "wren_cluster_relays"), Some(1));
    assert_eq!(metric(a.http, "wren_cluster_relays"), Some(1));
    assert_eq!(metric(b.http, "wren_cluster_served_subscriptions"), Some(2));

    // Only alice may unpublish it, on her own node; then it is gone
    // everywhere, relays included.
    assert_eq!(dave.err("unpublish", json!({"rid": "r", "mid": mid})), 403);
    alice.ok("unpublish", json!({"rid": "r", "mid": mid}));
    for c in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(c.note_named("stream-remove")["mid"], *mid);
    }
    assert_media_stops(&mut second, s0, "unpublished");
    assert!(wait_until(WAIT, || {
        metric(b.http, "wren_cluster_hosted_streams") == Some(0)
            && metric(a.http, "wren_cluster_placed_streams") == Some(0)
            && metric(c.http, "wren_cluster_relays") == Some(0)
            && metric(a.http, "wren_cluster_relays") == Some(0)
    }));

    // Placed again, then its owner's node dies: b drops it.
    let (_second, again) = publish(&mut alice, "r", Peer::publisher());
    assert_eq!(again["sfuid"], "place-b-sfu-1", "{again}");
    assert!(wait_until(WAIT, || metric(
        b.http,
        "wren_cluster_hosted_streams"
    ) == Some(1)));
    drop(a);
    let limit = WAIT * if runner().is_empty() { 1 } else { 3 };
    assert!(wait_until(limit, || {
        metric(b.http, "wren_cluster_hosted_streams") == Some(0)
    }));
    // Both of alice's streams end for bob: the one on a, and this one.
    let removed: Vec<Value> = (0..2)
        .map(|_| bob.note_named("stream-remove")["mid"].clone())
        .collect();
    assert!(removed.contains(&again["mid"]), "{removed:?}");
}
