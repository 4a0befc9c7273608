//! Several SFU processes behind one signaling node, and the metrics that
//! show what they carry.

use serde_json::json;
use std::time::Duration;
use wren_testkit::peer::{run_until, Peer};
use wren_testkit::{http_get, Client, Server};

/// The value of one sample line of `/metrics` (`name{labels}` exactly).
fn metric(server: &Server, sample: &str) -> u64 {
    let (status, body) = http_get(server.http, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{body}"))
}

#[test]
fn two_publishes_land_on_two_sfus_and_both_carry_media() {
    let server = Server::start_with(&["--sfus", "2"]);
    server.wait_sfus(2);
    assert_eq!(metric(&server, "wren_peers"), 0);
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    let mut carol = Client::connect(&server, "carol");
    for c in [&mut alice, &mut bob, &mut carol] {
        c.ok("join", json!({"rid": "r"}));
    }
    assert_eq!(metric(&server, "wren_peers"), 3);
    assert_eq!(metric(&server, "wren_rooms"), 1);
    for slot in 1..=2 {
        assert_eq!(
            metric(
                &server,
                &format!("wren_sfu_up{{slot=\"{slot}\",sfuid=\"sfu-{slot}\"}}")
            ),
            1
        );
    }

    let minfo = json!({"audio": true, "video": true, "audiotype": 0, "videotype": 0});
    let mut pubs = Vec::new();
    for c in [&mut alice, &mut bob] {
        let mut p = Peer::publisher();
        let a = c.ok(
            "publish",
            json!({"rid": "r", "jsep": {"type": "offer", "sdp": p.offer()}, "minfo": minfo}),
        );
        p.accept_answer(a["jsep"]["sdp"].as_str().unwrap());
        pubs.push((
            p,
            a["mid"].clone(),
            a["sfuid"].as_str().unwrap().to_string(),
        ));
    }
    let mut sfuids: Vec<&str> = pubs.iter().map(|p| p.2.as_str()).collect();
    sfuids.sort();
    assert_eq!(
        sfuids,
        ["sfu-1", "sfu-2"],
        "the second publish goes to the idle SFU"
    );
    assert_eq!(metric(&server, "wren_streams"), 2);

    // carol subscribes to both, naming no sfuid: the node knows.
    let mut subs = Vec::new();
    for (_, mid, _) in &pubs {
        let mut s = Peer::subscriber();
        let a = carol.ok(
            "subscribe",
            json!({"rid": "r", "mid": mid, "jsep": {"type": "offer", "sdp": s.offer()}}),
        );
        s.accept_answer(a["jsep"]["sdp"].as_str().unwrap());
        subs.push(s);
    }
    let [(p1, _, _), (p2, _, _)] = &mut pubs[..] else {
        unreachable!()
    };
    let [s1, s2] = &mut subs[..] else {
        unreachable!()
    };
    assert!(
        run_until(&mut [p1, p2, s1, s2], Duration::from_secs(15), |p| {
            p[2].received[1] > 20 && p[3].received[1] > 20
        }),
        "media through both SFUs"
    );
    assert_eq!(metric(&server, "wren_subscriptions"), 2);
    // Each SFU reports what it forwarded (stats come once a second).
    std::thread::sleep(Duration::from_millis(1200));
    for slot in 1..=2 {
        let labels = format!("{{slot=\"{slot}\",sfuid=\"sfu-{slot}\"}}");
        assert!(metric(&server, &format!("wren_forwarded_packets_total{labels}")) > 20);
        assert!(metric(&server, &format!("wren_forwarded_bytes_total{labels}")) > 1000);
        assert_eq!(metric(&server, &format!("wren_sfu_sessions{labels}")), 2);
    }
    // A refused request is counted.
    assert_eq!(carol.err("keepalive", json!({"rid": "elsewhere"})), 403);
    assert_eq!(metric(&server, "wren_errors_total{code=\"403\"}"), 1);
}
