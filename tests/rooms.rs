//! Rooms the size of the places wren serves, with the shipped defaults:
//! a classroom (one teacher publishing to 39 students) and a meeting where
//! each of 12 peers publishes and watches the other 11. Real WebSockets,
//! real str0m peers, real media through the real SFU.

use serde_json::json;
use std::time::Duration;
use wren::limits::{MAX_PEERS_PER_ROOM, MAX_STREAMS_PER_ROOM, MAX_SUBS_PER_STREAM};
use wren_testkit::peer::{run_until, Peer};
use wren_testkit::{publish_data, runner, subscribe_data, Client, Server};

/// How long media may take to reach every subscriber: a few seconds
/// natively; under QEMU every DTLS handshake and packet is emulated, on
/// both ends.
fn media_wait() -> Duration {
    if runner().is_empty() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(240)
    }
}

/// Audio and video packets each subscriber must receive.
const ENOUGH: usize = 10;

/// `client` subscribes to the stream `mid` with a fresh peer, answered.
fn subscribe(client: &mut Client, rid: &str, mid: &serde_json::Value) -> Peer {
    let mut peer = Peer::subscriber();
    let answer = client.ok("subscribe", subscribe_data(rid, mid, &peer));
    peer.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    peer
}

/// Gives every peer one turn: as real clients do, peers that have their
/// answer connect while the others are still subscribing (under QEMU,
/// setting up a hundred subscriptions takes longer than the SFU waits for
/// a peer to connect).
fn poll_all<'a>(peers: impl IntoIterator<Item = &'a mut Peer>) {
    for p in peers {
        p.poll();
    }
}

fn publish(client: &mut Client, rid: &str) -> (Peer, serde_json::Value) {
    let mut peer = Peer::publisher();
    let answer = client.ok("publish", publish_data(rid, &peer));
    peer.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    (peer, answer["mid"].clone())
}

/// Runs every peer until each subscriber has audio and video; panics with
/// the ones that have not.
fn until_every_subscriber_receives(publishers: &mut [Peer], subscribers: &mut [Peer]) {
    let n_pub = publishers.len();
    let mut all: Vec<&mut Peer> = publishers
        .iter_mut()
        .chain(subscribers.iter_mut())
        .collect();
    let flowing = run_until(&mut all, media_wait(), |p| {
        p[n_pub..]
            .iter()
            .all(|s| s.received[0] >= ENOUGH && s.received[1] >= ENOUGH)
    });
    let starved: Vec<(usize, [usize; 2])> = all[n_pub..]
        .iter()
        .enumerate()
        .filter(|(_, s)| s.received[0] < ENOUGH || s.received[1] < ENOUGH)
        .map(|(i, s)| (i, s.received))
        .collect();
    assert!(
        flowing,
        "{} of {} subscribers lack media (index, [audio, video]): {starved:?}",
        starved.len(),
        all.len() - n_pub
    );
}

#[test]
fn a_classroom_of_one_teacher_and_39_students_meets_with_the_defaults() {
    const STUDENTS: usize = 39;
    const { assert!(STUDENTS < MAX_PEERS_PER_ROOM && STUDENTS <= MAX_SUBS_PER_STREAM) };
    let server = Server::start();
    let mut teacher = Client::connect(&server, "teacher");
    teacher.ok("join", json!({"rid": "class"}));
    let mut students: Vec<Client> = (0..STUDENTS)
        .map(|i| {
            let mut c = Client::connect(&server, &format!("student-{i}"));
            c.ok("join", json!({"rid": "class"}));
            c
        })
        .collect();
    let (camera, mid) = publish(&mut teacher, "class");
    let mut cameras = [camera];
    let mut watching: Vec<Peer> = Vec::with_capacity(STUDENTS);
    for s in &mut students {
        watching.push(subscribe(s, "class", &mid));
        poll_all(cameras.iter_mut().chain(watching.iter_mut()));
    }
    until_every_subscriber_receives(&mut cameras, &mut watching);
    // Each student started at a key frame, whenever it came in.
    for (i, s) in watching.iter().enumerate() {
        assert_eq!(s.first_video_key, Some(true), "student {i}");
    }
}

#[test]
fn a_meeting_of_12_where_everyone_publishes_and_watches_everyone() {
    const PEERS: usize = 12;
    const { assert!(PEERS <= MAX_PEERS_PER_ROOM && PEERS <= MAX_STREAMS_PER_ROOM) };
    let server = Server::start();
    let mut clients: Vec<Client> = (0..PEERS)
        .map(|i| {
            let mut c = Client::connect(&server, &format!("peer-{i}"));
            c.ok("join", json!({"rid": "meeting"}));
            c
        })
        .collect();
    let mut cameras = Vec::with_capacity(PEERS);
    let mut mids = Vec::with_capacity(PEERS);
    for c in &mut clients {
        let (camera, mid) = publish(c, "meeting");
        cameras.push(camera);
        mids.push(mid);
        poll_all(&mut cameras);
    }
    let mut watching = Vec::with_capacity(PEERS * (PEERS - 1));
    for (i, c) in clients.iter_mut().enumerate() {
        for (j, mid) in mids.iter().enumerate() {
            if i != j {
                watching.push(subscribe(c, "meeting", mid));
                poll_all(cameras.iter_mut().chain(watching.iter_mut()));
            }
        }
    }
    until_every_subscriber_receives(&mut cameras, &mut watching);
}
