//! Assertions the end-to-end tests share: a refusal names its bound, and
//! media flows (or stops) between two clients.

use crate::peer::{run_all, run_until, Peer};
use crate::protoo::{publish_data, subscribe_data, Client};
use serde_json::Value;
use std::time::Duration;

/// Asserts that `response` is the 503 of one bound, named exactly (the
/// node's `errorReason` is `capacity full: BOUND`): `rooms` must not pass
/// for `rooms per peer`, nor `subscriptions` for `subscriptions per
/// stream`.
pub fn assert_full(response: &Value, bound: &str) {
    assert_eq!(response["ok"], false, "{bound}: {response}");
    assert_eq!(response["errorCode"], 503, "{bound}: {response}");
    assert_eq!(
        response["errorReason"].as_str(),
        Some(format!("capacity full: {bound}").as_str()),
        "the refusal names exactly {bound:?}: {response}"
    );
}

/// `client` publishes `peer`'s offer in `rid`; returns the peer, given
/// its answer, and the publish answer's data (`mid`, `sfuid`, `jsep`).
pub fn publish(client: &mut Client, rid: &str, mut peer: Peer) -> (Peer, Value) {
    let answer = client.ok("publish", publish_data(rid, &peer));
    peer.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    (peer, answer)
}

/// `client` subscribes to `mid` with a fresh subscriber peer; returns the
/// peer, given its answer.
pub fn subscribe(client: &mut Client, rid: &str, mid: &Value) -> Peer {
    subscribe_with(client, rid, mid, Peer::subscriber())
}

/// Like [`subscribe`], with this subscriber peer (one bound elsewhere
/// than on loopback, say).
pub fn subscribe_with(client: &mut Client, rid: &str, mid: &Value, mut peer: Peer) -> Peer {
    let answer = client.ok("subscribe", subscribe_data(rid, mid, &peer));
    peer.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    peer
}

/// `a` publishes real media in `rid`, `b` subscribes to it; asserts that
/// audio and video reach `b`. Returns both peers (to keep them running)
/// and the publish answer's data.
pub fn media_call(a: &mut Client, b: &mut Client, rid: &str) -> (Peer, Peer, Value) {
    let (mut publisher, answer) = publish(a, rid, Peer::publisher());
    let mut subscriber = subscribe(b, rid, &answer["mid"]);
    let flowing = run_until(
        &mut [&mut publisher, &mut subscriber],
        Duration::from_secs(10),
        |p| p[1].received[0] > 10 && p[1].received[1] > 10,
    );
    assert!(
        flowing,
        "media reaches {}: {:?}",
        b.uid, subscriber.received
    );
    (publisher, subscriber, answer)
}

/// Asserts that, after a moment to settle, nothing more reaches
/// `subscriber` while `publisher` keeps sending.
pub fn assert_media_stops(publisher: &mut Peer, subscriber: &mut Peer, why: &str) {
    run_all(&mut [publisher, subscriber], Duration::from_millis(300));
    let after = subscriber.received;
    run_all(&mut [publisher, subscriber], Duration::from_millis(600));
    assert_eq!(subscriber.received, after, "{why}");
}
