//! Media through the real SFU: str0m peers publish synthetic Opus + VP8
//! and subscribe over the wire protocol; packets must arrive, and the
//! publisher must be asked for a key frame when a subscriber attaches.

use serde_json::json;
use std::time::{Duration, Instant};
use wren_testkit::peer::{run_all, run_until, Peer};
use wren_testkit::{Client, Server};

#[test]
fn subscriber_receives_audio_and_video_starting_at_a_key_frame() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "media"}));
    bob.ok("join", json!({"rid": "media"}));

    let mut publisher = Peer::publisher();
    let answer = alice.ok(
        "publish",
        json!({"rid": "media", "jsep": {"type": "offer", "sdp": publisher.offer()}, "minfo": wren_testkit::minfo()}),
    );
    let sdp = answer["jsep"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite"), "the SFU is ICE-lite");
    assert!(
        sdp.contains("127.0.0.1"),
        "the answer carries the server candidate"
    );
    publisher.accept_answer(sdp);
    let mid = answer["mid"].as_str().unwrap().to_string();
    assert!(
        run_until(&mut [&mut publisher], Duration::from_secs(10), |p| p[0]
            .connected()),
        "publisher connects without trickle"
    );
    run_all(&mut [&mut publisher], Duration::from_millis(300));
    let requests_before = publisher.keyframe_requests;

    let added = bob.note_named("stream-add");
    assert_eq!(added["mid"], mid.as_str());
    let mut subscriber = Peer::subscriber();
    let sub = bob.ok(
        "subscribe",
        json!({"rid": "media", "mid": mid, "sfuid": added["sfuid"],
               "jsep": {"type": "offer", "sdp": subscriber.offer()}}),
    );
    let answered = Instant::now();
    subscriber.accept_answer(sub["jsep"]["sdp"].as_str().unwrap());

    let flowing = run_until(
        &mut [&mut publisher, &mut subscriber],
        Duration::from_secs(10),
        |p| p[1].received[0] > 25 && p[1].received[1] > 25,
    );
    assert!(
        flowing,
        "media reaches the subscriber: {:?} (audio, video)",
        subscriber.received
    );
    // Its video starts at a key frame: one the SFU asked the publisher for
    // when the subscriber attached, or, if the publisher sent one less than
    // a key-frame window before, the SFU's copy of that one.
    assert_eq!(
        subscriber.first_video_key,
        Some(true),
        "the subscriber's video starts at a key frame: {}",
        subscriber.video_start()
    );
    let asked = publisher.keyframe_requests > requests_before;
    let first_video = subscriber.first_video_packet.unwrap();
    println!(
        "first video packet {:?} after the subscribe answer, from a key frame {}",
        first_video - answered,
        if asked {
            "asked for"
        } else {
            "in the SFU's copy"
        }
    );

    // Unsubscribe stops the flow to that subscriber.
    let sid = sub["sid"].as_str().unwrap();
    bob.ok(
        "unsubscribe",
        json!({"rid": "media", "mid": mid, "sid": sid}),
    );
    wren_testkit::assert_media_stops(
        &mut publisher,
        &mut subscriber,
        "no media after unsubscribe",
    );
}

#[test]
fn a_bad_offer_is_rejected_with_400_and_nothing_changes() {
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "r"}));
    bob.ok("join", json!({"rid": "r"}));
    let code = alice.err(
        "publish",
        json!({"rid": "r", "jsep": {"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"}, "minfo": wren_testkit::minfo()}),
    );
    assert_eq!(code, 400);
    bob.assert_quiet();
    let pubs = bob.ok("join", json!({"rid": "other"}))["pubs"].clone();
    assert_eq!(pubs, json!([]));
}

/// Payload types are mapped by codec, not copied: a subscriber whose
/// codec table numbers Opus and VP8 differently from the publisher's
/// (str0m's defaults: Opus 111, VP8 96) receives packets carrying its own
/// numbers, as its answer negotiated them.
#[test]
fn a_subscriber_with_other_payload_types_receives_its_own() {
    const OPUS: u8 = 109;
    const VP8: u8 = 120;
    const VP8_RTX: u8 = 121;
    let server = Server::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    alice.ok("join", json!({"rid": "pt"}));
    bob.ok("join", json!({"rid": "pt"}));

    let mut publisher = Peer::publisher();
    assert!(publisher.offer().contains("a=rtpmap:96 VP8/90000"));
    assert!(publisher.offer().contains("a=rtpmap:111 opus/48000/2"));
    let answer = alice.ok("publish", wren_testkit::publish_data("pt", &publisher));
    publisher.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());

    let mut subscriber = Peer::subscriber_with_pts(OPUS, VP8, VP8_RTX);
    let offer = subscriber.offer();
    assert!(
        offer.contains(&format!("a=rtpmap:{VP8} VP8/90000")),
        "{offer}"
    );
    assert!(!offer.contains("a=rtpmap:96 "), "{offer}");
    let sub = bob.ok(
        "subscribe",
        wren_testkit::subscribe_data("pt", &answer["mid"], &subscriber),
    );
    let sdp = sub["jsep"]["sdp"].as_str().unwrap();
    assert!(sdp.contains(&format!("a=rtpmap:{VP8} VP8/90000")), "{sdp}");
    assert!(
        sdp.contains(&format!("a=rtpmap:{OPUS} opus/48000/2")),
        "{sdp}"
    );
    subscriber.accept_answer(sdp);

    let flowing = run_until(
        &mut [&mut publisher, &mut subscriber],
        Duration::from_secs(10),
        |p| p[1].received[0] > 10 && p[1].received[1] > 10,
    );
    assert!(
        flowing,
        "media reaches the subscriber: {:?}",
        subscriber.received
    );
    assert_eq!(subscriber.received_pts, [vec![OPUS], vec![VP8]]);
}
