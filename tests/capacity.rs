//! The whole signaling node at full capacity, with the default bounds:
//! 512 connections each in 4 rooms (64 rooms of 32 peers), 128 streams, 512
//! subscriptions
//! (on 2 real SFUs). Every bound answers with its error,
//! the node keeps serving, and its memory stays under the README's bound.

use serde_json::json;
use wren::limits::*;
use wren_testkit::peer::Peer;
use wren_testkit::{runner, Client, Server};

/// README "Limits": what the signaling node may grow by, from idle to
/// full capacity (tables, buffers of 256 sockets, requests in flight).
/// Growth, not total: a debug build's idle RSS is three times a release's.
const GROWTH_BOUND_KIB: u64 = 12 * 1024;

fn rss_kib(pid: u32) -> u64 {
    wren_testkit::procfs::rss_kib(pid).expect("VmRSS")
}

#[test]
fn at_full_capacity_every_bound_answers_and_memory_stays_bounded() {
    // None of the 640 sessions ever connects, and most clients stay
    // silent once set up: keep both for the test's whole run (slow under
    // QEMU) instead of the default 20 s and 30 s.
    let server = Server::start_with_config(
        "sfus = 2\n[limits]\nliveness-timeout-secs = 600\nsfu-connect-timeout-ms = 600000\n",
    );
    server.wait_sfus(2);
    let idle = rss_kib(server.child.id());
    // Peers come in groups; each group shares its own rooms. Every peer is
    // in as many rooms as it may be, and the rooms table fills up exactly:
    // 2048 memberships over 64 rooms (a room could hold more, but peers
    // cannot be in more rooms).
    let rooms_each = MAX_ROOMS_PER_PEER;
    let peers_per_group = MAX_CONNECTIONS * rooms_each / MAX_ROOMS;
    const { assert!((MAX_CONNECTIONS * MAX_ROOMS_PER_PEER).is_multiple_of(MAX_ROOMS)) };
    assert!(peers_per_group <= MAX_PEERS_PER_ROOM);
    assert!(MAX_CONNECTIONS.is_multiple_of(peers_per_group));
    let mut clients: Vec<Client> = (0..MAX_CONNECTIONS)
        .map(|i| Client::connect(&server, &format!("p{i}")))
        .collect();
    // Peer i is in rooms g*n+k (group g, k < n).
    let room = |i: usize, k: usize| format!("r{}", (i / peers_per_group) * rooms_each + k);
    for k in 0..rooms_each {
        for (i, c) in clients.iter_mut().enumerate() {
            c.ok("join", json!({"rid": room(i, k)}));
        }
    }
    // One offer of each kind serves every request: the sessions never
    // connect, and making 640 peers (a DTLS key each) is slow under QEMU.
    let publish_offer = Peer::publisher().offer();
    let subscribe_offer = Peer::subscriber().offer();
    // 128 streams: the first few peers of each group publish in their room k=0.
    let mut mids = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if i % peers_per_group < MAX_STREAMS / (MAX_CONNECTIONS / peers_per_group) {
            let data = c.ok(
                "publish",
                json!({"rid": room(i, 0), "jsep": {"type": "offer", "sdp": publish_offer},
                       "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}}),
            );
            mids.push((i, data["mid"].clone()));
        }
    }
    assert_eq!(mids.len(), MAX_STREAMS);
    // 512 subscriptions: 4 per stream, by the next peers of the group.
    for (publisher, mid) in &mids {
        for n in 1..=MAX_SUBS / MAX_STREAMS {
            let group = publisher / peers_per_group;
            let sub = group * peers_per_group + (publisher % peers_per_group + n) % peers_per_group;
            clients[sub].ok(
                "subscribe",
                json!({"rid": room(*publisher, 0), "mid": mid,
                       "jsep": {"type": "offer", "sdp": subscribe_offer}}),
            );
        }
    }

    // Every table is full: each bound answers with its own error.
    let mut extra = Client::connect(&server, "one-too-many");
    assert_eq!(
        extra.wait_close_frame(),
        Some((1013, "capacity full: connections".to_string()))
    );
    let c = &mut clients[0];
    let full = |c: &mut Client, method: &str, data: serde_json::Value, bound: &str| {
        let r = c.request(method, data);
        wren_testkit::assert_full(&r, bound);
    };
    // Peer 0 is in as many rooms as it may be...
    full(c, "join", json!({"rid": "r-new"}), "rooms per peer");
    // ...and once it leaves one (which stays: others are in it), the
    // rooms table refuses.
    assert_eq!(
        c.ok("leave", json!({"rid": room(0, rooms_each - 1)})),
        json!({})
    );
    full(c, "join", json!({"rid": "r-new"}), "rooms");
    // Room (0, 1) holds no stream: the node-wide table refuses.
    full(
        c,
        "publish",
        json!({"rid": room(0, 1), "jsep": {"type": "offer", "sdp": Peer::publisher().offer()},
               "minfo": {"audio": true, "video": false, "audiotype": 0, "videotype": 0}}),
        "streams",
    );
    // A stream with 4 of its 47 subscriptions: the node-wide table refuses.
    const { assert!(MAX_SUBS / MAX_STREAMS < MAX_SUBS_PER_STREAM) };
    full(
        c,
        "subscribe",
        json!({"rid": room(0, 0), "mid": mids[1].1,
               "jsep": {"type": "offer", "sdp": Peer::subscriber().offer()}}),
        "subscriptions",
    );
    assert_eq!(c.ok("keepalive", json!({"rid": room(0, 0)})), json!({}));

    let full_rss = rss_kib(server.child.id());
    println!("signaling RSS: idle {idle} KiB, at full capacity {full_rss} KiB");
    // Under QEMU the RSS is the emulator's: the bound is checked natively.
    if runner().is_empty() {
        let growth = full_rss.saturating_sub(idle);
        assert!(
            growth <= GROWTH_BOUND_KIB,
            "grew by {growth} KiB at full capacity, README promises at most {GROWTH_BOUND_KIB} KiB"
        );
    }
}
