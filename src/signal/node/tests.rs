//! The room state machine, driven without sockets in simulated time.

use super::tables::PendingCall;
use super::tables::{Peer, Room, Stream, Subscription};
use super::*;
use crate::ids::{Mid, RoomId, Sid};
use crate::ipc::{FromSfu, LayerPin, SfuError};
use crate::signal::token::TokenError;
use serde_json::{json, Value};
use std::time::Duration;

struct Harness {
    node: Node,
    /// Simulated time: both clocks move only with `advance`.
    now: Now,
    start: Instant,
    next_id: u64,
}

/// The wall clock when a harness starts (any time will do).
const UNIX_START: u64 = 1_700_000_000;

/// What one connection received, decoded.
fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("node emits JSON")
}

impl Harness {
    fn new(sfus: usize) -> Harness {
        Harness::with_limits(sfus, Limits::default())
    }

    fn with_limits(sfus: usize, limits: Limits) -> Harness {
        let mut node = Node::new(NodeId::parse("biz-1").unwrap(), limits, sfus);
        let start = Instant::now();
        let now = Now {
            mono: start,
            unix_secs: UNIX_START,
        };
        for i in 0..sfus {
            node.sfu_up(
                now,
                SfuSlot(i),
                NodeId::parse(&format!("sfu-{}", i + 1)).unwrap(),
            );
        }
        Harness {
            node,
            now,
            start,
            next_id: 1,
        }
    }

    /// Moves both clocks on.
    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.unix_secs = UNIX_START + (self.now.mono - self.start).as_secs();
    }

    /// Alice (connection 1) and Bob (2) in room r1, effects drained.
    fn alice_and_bob_in_r1(sfus: usize) -> Harness {
        let mut h = Harness::new(sfus);
        h.connect(1, "alice");
        h.connect(2, "bob");
        h.join(1, "r1");
        h.join(2, "r1");
        h.effects();
        h
    }

    fn effects(&mut self) -> Vec<Effect> {
        std::iter::from_fn(|| self.node.poll_effect()).collect()
    }

    fn connect(&mut self, conn: u64, uid: &str) {
        self.node
            .connect(self.now, ConnId(conn), PeerId::parse(uid).unwrap(), None)
            .unwrap();
    }

    /// Sends a request; returns every effect it caused.
    fn req(&mut self, conn: u64, method: &str, data: Value) -> Vec<Effect> {
        let id = self.next_id;
        self.next_id += 1;
        let text = json!({"request": true, "id": id, "method": method, "data": data}).to_string();
        match protoo::decode(&text) {
            protoo::Incoming::Request(id, r) => self.node.request(self.now, ConnId(conn), id, *r),
            protoo::Incoming::Invalid(id, e) => self.node.reject(self.now, ConnId(conn), id, e),
            other => panic!("{other:?}"),
        }
        self.effects()
    }

    /// Joins and checks the answer is ok.
    fn join(&mut self, conn: u64, rid: &str) -> Value {
        let fx = self.req(conn, "join", json!({"rid": rid}));
        let resp = response_to(&fx, conn);
        assert_eq!(resp["ok"], true, "{resp}");
        resp["data"].clone()
    }

    /// Publishes through the fake SFU answer; returns the mid.
    fn publish(&mut self, conn: u64, rid: &str) -> String {
        let data = self.answered(conn, "publish", publish_data(rid));
        data["mid"].as_str().unwrap().to_string()
    }

    /// `conn` subscribes to `mid` in `rid` and its SFU answers; the sid.
    fn subscribe(&mut self, conn: u64, rid: &str, mid: &str) -> String {
        let offer = json!({"rid": rid, "mid": mid, "jsep": {"type": "offer", "sdp": "v=0"}});
        let data = self.answered(conn, "subscribe", offer);
        data["sid"].as_str().unwrap().to_string()
    }

    /// A publish or subscribe request the SFU answers; the response data.
    fn answered(&mut self, conn: u64, method: &str, data: Value) -> Value {
        let fx = self.req(conn, method, data);
        let (sfu, call) = sfu_call(&fx);
        self.node.sfu_message(
            self.now,
            sfu,
            FromSfu::Answer {
                call,
                sdp: "v=0\r\nanswer".into(),
            },
        );
        let fx = self.effects();
        let resp = response_to(&fx, conn);
        assert_eq!(resp["ok"], true, "{resp}");
        resp["data"].clone()
    }
}

fn publish_data(rid: &str) -> Value {
    json!({"rid": rid, "jsep": {"type": "offer", "sdp": "v=0\r\n"},
           "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}})
}

fn sent_to(fx: &[Effect], conn: u64) -> Vec<Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { conn: c, text } if c.0 == conn => Some(parse(text)),
            _ => None,
        })
        .collect()
}

fn response_to(fx: &[Effect], conn: u64) -> Value {
    let mut r: Vec<Value> = sent_to(fx, conn)
        .into_iter()
        .filter(|m| m["response"] == true)
        .collect();
    assert_eq!(r.len(), 1, "exactly one response expected in {fx:?}");
    r.remove(0)
}

fn notes_to(fx: &[Effect], conn: u64) -> Vec<(String, Value)> {
    sent_to(fx, conn)
        .into_iter()
        .filter(|m| m["notification"] == true)
        .map(|m| (m["method"].as_str().unwrap().to_string(), m["data"].clone()))
        .collect()
}

fn sfu_call(fx: &[Effect]) -> (SfuSlot, CallId) {
    fx.iter()
        .find_map(|e| match e {
            Effect::Sfu {
                sfu,
                msg: ToSfu::Publish { call, .. } | ToSfu::Subscribe { call, .. },
            } => Some((*sfu, *call)),
            _ => None,
        })
        .expect("an SFU call")
}

fn sfu_msgs(fx: &[Effect]) -> Vec<ToSfu> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Sfu { msg, .. } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(fx: &[Effect], conn: u64) -> u64 {
    let r = response_to(fx, conn);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["errorReason"].is_string());
    r["errorCode"].as_u64().unwrap()
}

#[test]
fn join_lists_other_users_and_pubs_and_announces_the_newcomer() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.connect(2, "bob");
    let first = h.join(1, "r1");
    assert_eq!(first, json!({"pubs": [], "users": []}));
    let mid = h.publish(1, "r1");

    let fx = h.req(2, "join", json!({"rid": "r1"}));
    let data = response_to(&fx, 2)["data"].clone();
    assert_eq!(
        data["users"],
        json!([{"bizid": "biz-1", "rid": "r1", "uid": "alice"}])
    );
    assert_eq!(
        data["pubs"],
        json!([{"mid": mid, "rid": "r1", "sfuid": "sfu-1", "uid": "alice",
                "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}}])
    );
    assert_eq!(
        notes_to(&fx, 1),
        vec![(
            "peer-join".into(),
            json!({"rid": "r1", "uid": "bob", "bizid": "biz-1"})
        )]
    );
    assert!(notes_to(&fx, 2).is_empty(), "no notification to the joiner");
}

#[test]
fn join_lists_the_others_in_the_order_they_joined() {
    let mut h = Harness::new(1);
    // Connected in another order than they join: the peer table's order
    // must not leak into the list.
    for (conn, uid) in [(1, "dave"), (2, "carol"), (3, "bob"), (4, "alice")] {
        h.connect(conn, uid);
    }
    let uids = |data: Value| -> Vec<String> {
        data["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["uid"].as_str().unwrap().to_string())
            .collect()
    };
    h.join(4, "r1");
    h.join(3, "r1");
    h.join(2, "r1");
    assert_eq!(uids(h.join(1, "r1")), ["alice", "bob", "carol"]);
    // alice leaves and comes back: now she is the last to have joined.
    h.req(4, "leave", json!({"rid": "r1"}));
    h.join(4, "r1");
    h.req(1, "leave", json!({"rid": "r1"}));
    assert_eq!(uids(h.join(1, "r1")), ["bob", "carol", "alice"]);
}

#[test]
fn joining_twice_is_409_and_other_rooms_are_403() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.join(1, "r1");
    assert_eq!(error_code(&h.req(1, "join", json!({"rid": "r1"})), 1), 409);
    assert_eq!(
        error_code(&h.req(1, "keepalive", json!({"rid": "r2"})), 1),
        403
    );
    assert_eq!(error_code(&h.req(1, "leave", json!({"rid": "r2"})), 1), 403);
    assert_eq!(error_code(&h.req(1, "publish", publish_data("r2")), 1), 403);
    let ok = h.req(1, "keepalive", json!({"rid": "r1"}));
    assert_eq!(response_to(&ok, 1)["data"], json!({}));
}

#[test]
fn publish_answers_with_mid_and_sfuid_and_tells_the_others() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let fx = h.req(1, "publish", publish_data("r1"));
    assert!(sent_to(&fx, 1).is_empty(), "the answer waits for the SFU");
    let (sfu, call) = sfu_call(&fx);
    h.node.sfu_message(
        h.now,
        sfu,
        FromSfu::Answer {
            call,
            sdp: "v=0\r\nX".into(),
        },
    );
    let fx = h.effects();
    let resp = response_to(&fx, 1);
    assert_eq!(
        resp["data"]["jsep"],
        json!({"type": "answer", "sdp": "v=0\r\nX"})
    );
    assert_eq!(resp["data"]["sfuid"], "sfu-1");
    let mid = resp["data"]["mid"].as_str().unwrap();
    let (uid, digits) = mid.split_once('#').unwrap();
    assert_eq!(uid, "alice");
    assert!(digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()));
    let notes = notes_to(&fx, 2);
    assert_eq!(notes[0].0, "stream-add");
    assert_eq!(
        notes[0].1,
        json!({"rid": "r1", "uid": "alice", "mid": mid, "sfuid": "sfu-1",
               "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}})
    );
    assert!(notes_to(&fx, 1).is_empty());
}

#[test]
fn sfu_errors_timeouts_and_absence_become_error_codes() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.join(1, "r1");
    for (error, code, detail) in [
        (SfuError::BadOffer("no media".into()), 400, "no media"),
        (SfuError::Full, 503, "SFU sessions"),
        (
            SfuError::Internal("out of ports".into()),
            500,
            "out of ports",
        ),
    ] {
        let fx = h.req(1, "publish", publish_data("r1"));
        let (sfu, call) = sfu_call(&fx);
        h.node
            .sfu_message(h.now, sfu, FromSfu::Failed { call, error });
        let fx = h.effects();
        assert_eq!(error_code(&fx, 1), code);
        let told = response_to(&fx, 1)["errorReason"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(told.contains(detail), "{told:?} says {detail:?}");
        assert_eq!(h.node.counts().2, 0, "no stream was added");
    }

    h.req(1, "publish", publish_data("r1"));
    h.advance(Duration::from_millis(SFU_CALL_TIMEOUT_MS));
    h.node.tick(h.now);
    let fx = h.effects();
    assert_eq!(error_code(&fx, 1), 504);
    assert!(
        matches!(sfu_msgs(&fx)[..], [ToSfu::Unpublish { .. }]),
        "a late session must not linger"
    );

    h.node.sfu_down(h.now, SfuSlot(0));
    assert_eq!(error_code(&h.req(1, "publish", publish_data("r1")), 1), 503);
}

#[test]
fn only_the_owner_may_unpublish_and_others_get_stream_remove() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let mid = h.publish(1, "r1");
    let fx = h.req(
        2,
        "unpublish",
        json!({"rid": "r1", "mid": mid, "sfuid": "sfu-1"}),
    );
    assert_eq!(error_code(&fx, 2), 403);
    let fx = h.req(2, "unpublish", json!({"rid": "r1", "mid": "bob#000000"}));
    assert_eq!(error_code(&fx, 2), 404);

    let fx = h.req(
        1,
        "unpublish",
        json!({"rid": "r1", "mid": mid, "sfuid": "sfu-1"}),
    );
    assert_eq!(response_to(&fx, 1)["ok"], true);
    assert_eq!(
        notes_to(&fx, 2),
        vec![(
            "stream-remove".into(),
            json!({"rid": "r1", "uid": "alice", "mid": mid})
        )]
    );
    assert_eq!(
        sfu_msgs(&fx),
        vec![ToSfu::Unpublish {
            mid: Mid::parse(&mid).unwrap()
        }]
    );
    assert_eq!(h.node.counts().2, 0);
}

#[test]
fn subscribe_and_unsubscribe_go_to_the_stream_sfu() {
    let mut h = Harness::alice_and_bob_in_r1(2);
    let mid = h.publish(1, "r1");
    assert_eq!(
        error_code(
            &h.req(
                2,
                "subscribe",
                json!({"rid": "r1", "mid": "alice#999999",
                "jsep": {"type": "offer", "sdp": "v=0"}})
            ),
            2
        ),
        404
    );
    // The client's sfuid is only a hint: a wrong one still reaches the right SFU.
    let fx = h.req(
        2,
        "subscribe",
        json!({"rid": "r1", "mid": mid, "sfuid": "sfu-2", "jsep": {"type": "offer", "sdp": "v=0"}}),
    );
    let (sfu, call) = sfu_call(&fx);
    assert_eq!(sfu, SfuSlot(0), "the stream lives on the first SFU");
    h.node.sfu_message(
        h.now,
        sfu,
        FromSfu::Answer {
            call,
            sdp: "v=0\r\nS".into(),
        },
    );
    let resp = response_to(&h.effects(), 2);
    let sid = resp["data"]["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("bob#"));
    assert_eq!(resp["data"]["jsep"]["type"], "answer");

    let wrong = h.req(
        1,
        "unsubscribe",
        json!({"rid": "r1", "mid": mid, "sid": sid}),
    );
    assert_eq!(error_code(&wrong, 1), 403);
    let fx = h.req(
        2,
        "unsubscribe",
        json!({"rid": "r1", "mid": mid, "sid": sid}),
    );
    assert_eq!(response_to(&fx, 2)["ok"], true);
    assert_eq!(
        sfu_msgs(&fx),
        vec![ToSfu::Unsubscribe {
            sid: Sid::parse(&sid).unwrap()
        }]
    );
    let again = h.req(
        2,
        "unsubscribe",
        json!({"rid": "r1", "mid": mid, "sid": sid}),
    );
    assert_eq!(error_code(&again, 2), 404);
    let gone = h.req(
        2,
        "layer",
        json!({"rid": "r1", "mid": mid, "sid": sid, "layer": "low"}),
    );
    assert_eq!(
        error_code(&gone, 2),
        404,
        "no layer for a closed subscription"
    );
}

#[test]
fn a_subscriber_pins_the_layer_of_its_own_subscriptions_only() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let mid = h.publish(1, "r1");
    let sid = h.subscribe(2, "r1", &mid);
    let pin = |layer: &str| json!({"rid": "r1", "mid": mid, "sid": sid, "layer": layer});
    assert_eq!(error_code(&h.req(1, "layer", pin("low")), 1), 403);
    assert_eq!(error_code(&h.req(2, "layer", pin("tiny")), 2), 400);
    let fx = h.req(2, "layer", pin("low"));
    assert_eq!(response_to(&fx, 2)["ok"], true);
    let sid = Sid::parse(&sid).unwrap();
    assert_eq!(
        sfu_msgs(&fx),
        vec![ToSfu::PinLayer {
            sid: sid.clone(),
            layer: Some(LayerPin::Low)
        }]
    );
    let fx = h.req(2, "layer", pin("auto"));
    assert_eq!(sfu_msgs(&fx), vec![ToSfu::PinLayer { sid, layer: None }]);
}

#[test]
fn publishes_spread_over_sfus_by_load() {
    let mut h = Harness::new(2);
    h.connect(1, "alice");
    h.join(1, "r1");
    let a = h.req(1, "publish", publish_data("r1"));
    let b = h.req(1, "publish", publish_data("r1"));
    assert_eq!(sfu_call(&a).0, SfuSlot(0));
    assert_eq!(sfu_call(&b).0, SfuSlot(1));
}

#[test]
fn leave_unpublishes_closes_subscriptions_then_says_peer_leave() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let mid = h.publish(1, "r1");
    let mid_b = h.publish(2, "r1");
    h.subscribe(1, "r1", &mid_b);

    let fx = h.req(1, "leave", json!({"rid": "r1"}));
    assert_eq!(response_to(&fx, 1)["data"], json!({}));
    let notes: Vec<String> = notes_to(&fx, 2).into_iter().map(|n| n.0).collect();
    assert_eq!(notes, vec!["stream-remove", "peer-leave"]);
    let msgs = sfu_msgs(&fx);
    assert!(msgs.contains(&ToSfu::Unpublish {
        mid: Mid::parse(&mid).unwrap()
    }));
    assert!(msgs.iter().any(|m| matches!(m, ToSfu::Unsubscribe { .. })));
    assert_eq!(h.node.counts(), (2, 1, 1, 0));

    h.req(2, "leave", json!({"rid": "r1"}));
    assert_eq!(h.node.counts(), (2, 0, 0, 0), "an empty room is freed");
}

#[test]
fn a_closed_connection_leaves_every_room_at_once() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.connect(2, "bob");
    h.join(1, "r1");
    h.join(1, "r2");
    h.join(2, "r1");
    h.join(2, "r2");
    h.publish(1, "r2");
    h.node.disconnect(h.now, ConnId(1));
    let fx = h.effects();
    let notes: Vec<(String, String)> = notes_to(&fx, 2)
        .into_iter()
        .map(|(m, d)| (m, d["rid"].as_str().unwrap().to_string()))
        .collect();
    assert!(notes.contains(&("peer-leave".into(), "r1".into())));
    assert!(notes.contains(&("stream-remove".into(), "r2".into())));
    assert!(notes.contains(&("peer-leave".into(), "r2".into())));
    assert_eq!(h.node.counts(), (1, 2, 0, 0));
}

#[test]
fn a_second_connection_with_the_same_uid_replaces_the_first() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    h.connect(3, "alice");
    let fx = h.effects();
    assert!(fx.contains(&Effect::Close {
        conn: ConnId(1),
        code: CLOSE_REPLACED,
        reason: "replaced by a new connection"
    }));
    assert_eq!(notes_to(&fx, 2)[0].0, "peer-leave");
    // The new connection starts outside every room.
    assert_eq!(
        error_code(&h.req(3, "keepalive", json!({"rid": "r1"})), 3),
        403
    );
    h.join(3, "r1");
}

#[test]
fn broadcast_reaches_every_other_peer_with_any_json() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.connect(2, "bob");
    h.connect(3, "carol");
    h.join(1, "r1");
    h.join(2, "r1");
    h.join(3, "r2");
    let payload = json!({"text": "hi", "n": [1, 2.5, null]});
    let fx = h.req(1, "broadcast", json!({"rid": "r1", "data": payload}));
    assert_eq!(response_to(&fx, 1)["ok"], true);
    assert_eq!(
        notes_to(&fx, 2),
        vec![(
            "broadcast".into(),
            json!({"rid": "r1", "uid": "alice", "data": payload})
        )]
    );
    assert!(notes_to(&fx, 1).is_empty());
    assert!(sent_to(&fx, 3).is_empty());
}

#[test]
fn a_full_room_refuses_with_503_and_changes_nothing() {
    let mut h = Harness::new(1);
    for i in 0..MAX_PEERS_PER_ROOM as u64 {
        h.connect(i + 1, &format!("p{i}"));
        h.join(i + 1, "r1");
    }
    let extra = MAX_PEERS_PER_ROOM as u64 + 1;
    h.connect(extra, "late");
    let fx = h.req(extra, "join", json!({"rid": "r1"}));
    assert_eq!(error_code(&fx, extra), 503);
    assert!(response_to(&fx, extra)["errorReason"]
        .as_str()
        .unwrap()
        .contains("peers per room"));
    assert_eq!(fx.len(), 1, "nobody else hears of it");
    assert_eq!(h.node.counts().1, 1);
}

#[test]
fn rooms_per_peer_are_bounded() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    for i in 0..MAX_ROOMS_PER_PEER {
        h.join(1, &format!("r{i}"));
    }
    assert_eq!(
        error_code(&h.req(1, "join", json!({"rid": "one-more"})), 1),
        503
    );
}

#[test]
fn a_silent_peer_is_removed_after_the_liveness_timeout() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    h.advance(Duration::from_secs(20));
    h.req(2, "keepalive", json!({"rid": "r1"}));
    h.advance(Duration::from_secs(10));
    h.node.tick(h.now);
    let fx = h.effects();
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Close {
            conn: ConnId(1),
            code: CLOSE_TIMEOUT,
            ..
        }
    )));
    assert_eq!(notes_to(&fx, 2)[0].0, "peer-leave");
    assert!(!fx.iter().any(|e| matches!(
        e,
        Effect::Close {
            conn: ConnId(2),
            ..
        }
    )));
}

#[test]
fn an_sfu_going_down_removes_its_streams_for_everyone() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let mid = h.publish(1, "r1");
    h.node.sfu_down(h.now, SfuSlot(0));
    let fx = h.effects();
    for conn in [1, 2] {
        assert_eq!(
            notes_to(&fx, conn),
            vec![(
                "stream-remove".into(),
                json!({"rid": "r1", "uid": "alice", "mid": mid})
            )]
        );
    }
    assert_eq!(h.node.counts().2, 0);
}

#[test]
fn a_publisher_whose_media_fails_is_removed_like_unpublish() {
    let mut h = Harness::alice_and_bob_in_r1(1);
    let mid = h.publish(1, "r1");
    h.node.sfu_message(
        h.now,
        SfuSlot(0),
        FromSfu::StreamClosed {
            mid: Mid::parse(&mid).unwrap(),
        },
    );
    let fx = h.effects();
    assert_eq!(notes_to(&fx, 2)[0].0, "stream-remove");
    assert!(sfu_msgs(&fx).is_empty(), "the SFU already knows");
}

#[test]
fn a_peer_that_leaves_during_publish_leaves_no_session_behind() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.join(1, "r1");
    let fx = h.req(1, "publish", publish_data("r1"));
    let (sfu, call) = sfu_call(&fx);
    h.req(1, "leave", json!({"rid": "r1"}));
    h.node.sfu_message(
        h.now,
        sfu,
        FromSfu::Answer {
            call,
            sdp: "v=0".into(),
        },
    );
    let fx = h.effects();
    assert!(matches!(sfu_msgs(&fx)[..], [ToSfu::Unpublish { .. }]));
    assert_eq!(error_code(&fx, 1), 403);
    assert_eq!(h.node.counts().2, 0);
}

#[test]
fn malformed_requests_are_400_and_unknown_methods_405() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    assert_eq!(error_code(&h.req(1, "join", json!({"rid": 7})), 1), 400);
    assert_eq!(error_code(&h.req(1, "fly", json!({})), 1), 405);
    h.join(1, "r1");
    let bad_jsep = json!({"rid": "r1", "jsep": {"type": "offer"},
        "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}});
    assert_eq!(error_code(&h.req(1, "publish", bad_jsep), 1), 400);
    assert_eq!(h.node.counts(), (1, 1, 0, 0));
}

#[test]
fn the_fixed_tables_fit_the_documented_budget() {
    // README "Limits": the node's tables are allocated up front, 416 KiB on
    // a 64-bit target (467 KiB when rooms listed their members).
    use std::mem::size_of;
    let size = Harness::new(1).node.table_bytes();
    println!(
        "Node tables: {size} bytes; slots: peer {}, room {}, stream {}, subscription {}, call {}",
        size_of::<Peer>(),
        size_of::<Room>(),
        size_of::<Stream>(),
        size_of::<Subscription>(),
        size_of::<PendingCall>()
    );
    assert!(size <= 420 * 1024, "{size} bytes");
}

#[test]
fn a_burst_past_the_request_budget_gets_429_until_it_refills() {
    let limits = Limits {
        requests_per_sec: 2,
        request_burst: 3,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(1, limits);
    h.connect(1, "alice");
    h.join(1, "r1");
    for _ in 0..2 {
        assert_eq!(
            response_to(&h.req(1, "keepalive", json!({"rid": "r1"})), 1)["ok"],
            true
        );
    }
    assert_eq!(
        error_code(&h.req(1, "keepalive", json!({"rid": "r1"})), 1),
        429
    );
    h.advance(Duration::from_millis(500));
    assert_eq!(
        response_to(&h.req(1, "keepalive", json!({"rid": "r1"})), 1)["ok"],
        true
    );
    assert_eq!(
        error_code(&h.req(1, "broadcast", json!({"rid": "r1", "data": 1})), 1),
        429
    );
}

#[test]
fn limits_above_capacity_or_zero_are_rejected() {
    assert!(Limits::default().validate().is_ok());
    let too_many = Limits {
        rooms: MAX_ROOMS + 1,
        ..Limits::default()
    };
    assert!(too_many.validate().unwrap_err().contains("rooms"));
    let zero = Limits {
        subs: 0,
        ..Limits::default()
    };
    assert!(zero.validate().is_err());
}

fn closed_for_silence(fx: &[Effect], conn: u64) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::Close { conn: c, code: CLOSE_TIMEOUT, .. } if c.0 == conn))
}

#[test]
fn an_empty_node_needs_no_tick() {
    let h = Harness::new(1);
    assert_eq!(h.node.poll_timeout(), None);
}

#[test]
fn poll_timeout_is_the_earliest_liveness_deadline_and_ticking_then_expires_it() {
    let liveness = Duration::from_secs(30);
    let mut h = Harness::new(1);
    let t0 = h.now.mono;
    h.connect(1, "alice");
    assert_eq!(h.node.poll_timeout(), Some(t0 + liveness));
    h.advance(Duration::from_secs(10));
    h.connect(2, "bob");
    assert_eq!(
        h.node.poll_timeout(),
        Some(t0 + liveness),
        "alice is due first"
    );

    // A tick just before the deadline changes nothing.
    let mut early = h.now;
    early.mono = t0 + liveness - Duration::from_millis(1);
    h.node.tick(early);
    assert!(h.effects().is_empty());
    assert_eq!(h.node.counts().0, 2);

    // At the deadline exactly, alice goes; bob's deadline is next.
    let at = h.node.poll_timeout().unwrap();
    h.advance(at - h.now.mono);
    h.node.tick(h.now);
    let fx = h.effects();
    assert!(closed_for_silence(&fx, 1), "{fx:?}");
    assert!(!closed_for_silence(&fx, 2));
    assert_eq!(h.node.counts().0, 1);
    let bob_due = t0 + Duration::from_secs(10) + liveness;
    assert_eq!(h.node.poll_timeout(), Some(bob_due));

    // Traffic moves the deadline on.
    h.node.touch(h.now, ConnId(2));
    assert_eq!(h.node.poll_timeout(), Some(h.now.mono + liveness));
    h.node.disconnect(h.now, ConnId(2));
    assert_eq!(h.node.poll_timeout(), None);
}

#[test]
fn poll_timeout_covers_a_pending_sfu_call_and_ticking_then_times_it_out() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.join(1, "r1");
    h.advance(Duration::from_secs(1));
    let asked = h.now.mono;
    let fx = h.req(1, "publish", publish_data("r1"));
    sfu_call(&fx);
    let due = asked + Duration::from_millis(SFU_CALL_TIMEOUT_MS);
    assert_eq!(h.node.poll_timeout(), Some(due), "the call is due first");

    h.advance(due - h.now.mono);
    h.node.tick(h.now);
    let fx = h.effects();
    assert_eq!(error_code(&fx, 1), 504);
    assert!(!closed_for_silence(&fx, 1));
    // Only the peer's liveness is left (its request proved it alive).
    assert_eq!(h.node.poll_timeout(), Some(asked + Duration::from_secs(30)));
}

#[test]
fn an_answered_call_leaves_the_timeout_to_liveness() {
    let mut h = Harness::new(1);
    h.connect(1, "alice");
    h.join(1, "r1");
    h.publish(1, "r1");
    assert_eq!(
        h.node.poll_timeout(),
        Some(h.now.mono + Duration::from_secs(30))
    );
}

#[test]
fn token_expiry_goes_by_the_wall_clock_of_the_input() {
    let key = TokenKey::new(b"0123456789abcdef").unwrap();
    let grant = Grant {
        uid: PeerId::parse("alice").unwrap(),
        rid: RoomId::parse("r1").unwrap(),
        exp: UNIX_START + 60,
        publish: true,
    };
    let token = key.mint(&grant);
    let mut h = Harness::new(1);
    h.node.require_tokens(key);
    let alice = PeerId::parse("alice").unwrap();
    assert_eq!(
        h.node.check_url_token(h.now, &alice, &token),
        Ok(Some(grant.clone()))
    );
    let mut later = h.now;
    later.unix_secs = UNIX_START + 60;
    assert_eq!(
        h.node.check_url_token(later, &alice, &token),
        Err(TokenError::Expired)
    );

    // A URL grant is checked again at join time, by that input's clock.
    h.node
        .connect(h.now, ConnId(1), alice, Some(grant))
        .unwrap();
    h.advance(Duration::from_secs(60));
    assert_eq!(error_code(&h.req(1, "join", json!({"rid": "r1"})), 1), 403);
}
