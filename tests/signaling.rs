//! The seed protocol on the wire: the real `wren` binary on loopback, real
//! WebSockets, every request and notification, the error cases, and
//! "socket closed = left every room".

use serde_json::json;
use wren_testkit::peer::Peer;
use wren_testkit::{http_get, Client, Server};

/// Publishes a real (str0m-made) offer; returns (mid, sfuid).
fn publish(c: &mut Client, rid: &str) -> (String, String) {
    let peer = Peer::publisher();
    let data = c.ok(
        "publish",
        json!({"rid": rid, "jsep": {"type": "offer", "sdp": peer.offer()}, "minfo": wren_testkit::minfo()}),
    );
    assert_eq!(data["jsep"]["type"], "answer");
    assert!(data["jsep"]["sdp"].as_str().unwrap().starts_with("v=0"));
    (
        data["mid"].as_str().unwrap().to_string(),
        data["sfuid"].as_str().unwrap().to_string(),
    )
}

#[test]
fn the_web_client_is_served_and_bad_peer_ids_get_400() {
    let server = Server::start();
    let (status, body) = http_get(server.http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    assert_eq!(http_get(server.http, "/app.js").unwrap().0, 200);
    assert_eq!(http_get(server.http, "/nope").unwrap().0, 404);
    assert_eq!(
        http_get(server.http, "/healthz").unwrap(),
        (200, "ok\n".into())
    );
    for bad in ["", "?peer=", "?peer=has%20space", "?peer=%C3%BC"] {
        let (status, _) = http_get(server.http, &format!("/ws{bad}")).unwrap();
        assert_eq!(status, 400, "/ws{bad}");
    }
    let long = "x".repeat(65);
    assert!(Client::try_connect(&server, &long, true).is_err());
}

#[test]
fn the_protoo_subprotocol_is_selected_when_offered() {
    let server = Server::start();
    let with = Client::try_connect(&server, "a", true).unwrap();
    assert_eq!(with.protocol.as_deref(), Some("protoo"));
    let without = Client::try_connect(&server, "b", false).unwrap();
    assert_eq!(without.protocol, None);
}

#[test]
fn join_leave_keepalive_and_broadcast_with_their_notifications() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");

    assert_eq!(
        alice.ok("join", json!({"rid": "777777"})),
        json!({"pubs": [], "users": []})
    );
    let joined = bob.ok("join", json!({"rid": "777777"}));
    assert_eq!(
        joined["users"],
        json!([{"bizid": "biz-1", "rid": "777777", "uid": "alice"}])
    );
    assert_eq!(
        alice.note(),
        (
            "peer-join".into(),
            json!({"rid": "777777", "uid": "bob", "bizid": "biz-1"})
        )
    );

    assert_eq!(alice.ok("keepalive", json!({"rid": "777777"})), json!({}));
    assert_eq!(
        alice.ok("broadcast", json!({"rid": "777777", "data": "$date"})),
        json!({})
    );
    assert_eq!(
        bob.note(),
        (
            "broadcast".into(),
            json!({"rid": "777777", "uid": "alice", "data": "$date"})
        )
    );
    alice.assert_quiet();

    assert_eq!(bob.ok("leave", json!({"rid": "777777"})), json!({}));
    assert_eq!(
        alice.note(),
        ("peer-leave".into(), json!({"rid": "777777", "uid": "bob"}))
    );
    assert_eq!(bob.err("keepalive", json!({"rid": "777777"})), 403);
}

#[test]
fn publish_subscribe_unsubscribe_unpublish_on_the_wire() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    alice.note_named("peer-join");

    let (mid, sfuid) = publish(&mut alice, "r");
    assert!(mid.starts_with("alice#"));
    assert_eq!(sfuid, "sfu-1");
    let added = bob.note_named("stream-add");
    assert_eq!(
        added,
        json!({"rid": "r", "uid": "alice", "mid": mid, "sfuid": "sfu-1", "minfo": wren_testkit::minfo()})
    );

    // A late joiner sees the stream in pubs.
    let mut carol = Client::connect(&server, "carol");
    let pubs = carol.ok("join", json!({"rid": "r"}))["pubs"].clone();
    assert_eq!(
        pubs,
        json!([{"mid": mid, "minfo": wren_testkit::minfo(), "rid": "r", "sfuid": "sfu-1", "uid": "alice"}])
    );

    let sub_peer = Peer::subscriber();
    let sub = bob.ok(
        "subscribe",
        json!({"rid": "r", "mid": mid, "jsep": {"type": "offer", "sdp": sub_peer.offer()}}),
    );
    let sid = sub["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("bob#"));
    assert_eq!(sub["jsep"]["type"], "answer");

    assert_eq!(
        carol.err("unsubscribe", json!({"rid": "r", "mid": mid, "sid": sid})),
        403
    );
    assert_eq!(
        bob.ok(
            "unsubscribe",
            json!({"rid": "r", "mid": mid, "sid": sid, "sfuid": sfuid})
        ),
        json!({})
    );
    assert_eq!(
        bob.err("unsubscribe", json!({"rid": "r", "mid": mid, "sid": sid})),
        404
    );

    assert_eq!(
        bob.err("unpublish", json!({"rid": "r", "mid": mid, "sfuid": sfuid})),
        403
    );
    assert_eq!(
        alice.ok("unpublish", json!({"rid": "r", "mid": mid, "sfuid": sfuid})),
        json!({})
    );
    let removed = bob.note_named("stream-remove");
    assert_eq!(removed, json!({"rid": "r", "uid": "alice", "mid": mid}));
    assert_eq!(carol.note_named("stream-remove"), removed);
    let sub_peer = Peer::subscriber();
    assert_eq!(
        bob.err(
            "subscribe",
            json!({"rid": "r", "mid": mid, "jsep": {"type": "offer", "sdp": sub_peer.offer()}})
        ),
        404
    );
}

#[test]
fn error_codes_of_the_table() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    // 403: not in that room.
    assert_eq!(alice.err("keepalive", json!({"rid": "nowhere"})), 403);
    // 400: missing field, wrong type, not an offer.
    assert_eq!(alice.err("join", json!({})), 400);
    assert_eq!(alice.err("join", json!({"rid": ["x"]})), 400);
    alice.ok("join", json!({"rid": "r"}));
    assert_eq!(
        alice.err(
            "publish",
            json!({"rid": "r", "jsep": {"type": "answer", "sdp": "v=0"}, "minfo": wren_testkit::minfo()})
        ),
        400
    );
    assert_eq!(
        alice.err(
            "publish",
            json!({"rid": "r", "jsep": {"type": "offer", "sdp": "v=0"}})
        ),
        400
    );
    // 405: unknown method; 409: already joined; 404: no such stream.
    assert_eq!(alice.err("teleport", json!({"rid": "r"})), 405);
    assert_eq!(alice.err("join", json!({"rid": "r"})), 409);
    let offer = Peer::subscriber().offer();
    assert_eq!(
        alice.err(
            "subscribe",
            json!({"rid": "r", "mid": "ghost#123456", "jsep": {"type": "offer", "sdp": offer}})
        ),
        404
    );
    // Data must be an object; the request is still answered by id.
    let r = {
        alice.send_text(r#"{"request":true,"id":77,"method":"join","data":"r"}"#);
        alice.response(77)
    };
    assert_eq!(r["errorCode"], 400);
}

#[test]
fn unreadable_requests_get_no_answer_and_do_not_disturb() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    alice.send_text("not json");
    alice.send_text(r#"{"request":true,"id":"seven","method":"join","data":{"rid":"r"}}"#);
    alice.send_text(r#"{"response":true,"id":1,"ok":true,"data":{}}"#);
    alice.send_binary(vec![1, 2, 3]);
    // The next answer is the one to the next good request.
    assert_eq!(
        alice.ok("join", json!({"rid": "r"})),
        json!({"pubs": [], "users": []})
    );
}

#[test]
fn endless_garbage_closes_the_socket() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    bob.ok("join", json!({"rid": "r"}));
    alice.ok("join", json!({"rid": "r"}));
    for _ in 0..20 {
        alice.send_text("garbage");
    }
    assert_eq!(alice.wait_close(), Some(1008));
    assert_eq!(
        bob.note_named("peer-leave"),
        json!({"rid": "r", "uid": "alice"})
    );
}

#[test]
fn an_oversized_request_gets_413_and_a_huge_frame_closes_with_1009() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    alice.ok("join", json!({"rid": "r"}));
    let big = |n: usize| {
        format!(
            r#"{{"request":true,"id":9,"method":"broadcast","data":{{"rid":"r","data":"{}"}}}}"#,
            "x".repeat(n)
        )
    };
    alice.send_text(&big(wren::limits::MAX_MESSAGE_BYTES));
    assert_eq!(alice.response(9)["errorCode"], 413);
    // Still usable afterwards.
    assert_eq!(alice.ok("keepalive", json!({"rid": "r"})), json!({}));
    alice.send_text(&big(wren::limits::MAX_FRAME_BYTES));
    assert_eq!(alice.wait_close(), Some(1009));
}

#[test]
fn a_closed_socket_leaves_every_room_with_stream_remove_first() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    for rid in ["r1", "r2"] {
        alice.ok("join", json!({"rid": rid}));
        bob.ok("join", json!({"rid": rid}));
    }
    let (mid, _) = publish(&mut alice, "r1");
    assert_eq!(bob.note_named("stream-add")["mid"], mid.as_str());
    alice.close();
    assert_eq!(
        bob.note_named("stream-remove"),
        json!({"rid": "r1", "uid": "alice", "mid": mid})
    );
    let mut left = vec![
        bob.note_named("peer-leave")["rid"].clone(),
        bob.note_named("peer-leave")["rid"].clone(),
    ];
    left.sort_by_key(|v| v.to_string());
    assert_eq!(left, vec![json!("r1"), json!("r2")]);
    // And the room is usable, without alice.
    let mut carol = Client::connect(&server, "carol");
    let joined = carol.ok("join", json!({"rid": "r1"}));
    assert_eq!(joined["pubs"], json!([]));
    assert_eq!(
        joined["users"],
        json!([{"bizid": "biz-1", "rid": "r1", "uid": "bob"}])
    );
}

#[test]
fn a_second_connection_with_the_same_uid_replaces_the_first() {
    let server = Server::start();
    let mut first = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    first.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let mut second = Client::connect(&server, "alice");
    assert_eq!(first.wait_close(), Some(4000));
    assert_eq!(bob.note_named("peer-leave")["uid"], "alice");
    second.ok("join", json!({"rid": "r"}));
    assert_eq!(bob.note_named("peer-join")["uid"], "alice");
}
