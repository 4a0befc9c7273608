//! The network lab: wren in a network namespace of its own, a str0m
//! publisher of three simulcast layers and two str0m subscribers each in
//! theirs, every link shaped on its own (rate limits with tbf, loss with
//! nftables, delay and jitter through the test kit's delay line: see
//! docs/lab.md). The cases of issue 11, each printed as rows of one
//! table: per subscriber the layers it got, its switches, frames decoded,
//! freezes and the bitrate its link carried.
//!
//! Needs root, `/dev/net/tun`, `ip`, `tc` and `nft` (scripts/deps.sh
//! installs them); without them it fails and says what is missing. Runs
//! natively only: scripts/test.sh leaves it out of the QEMU runs, which
//! would measure the emulator (the lab itself is the host's kernel).

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use wren_testkit::netlab::{ClientSpec, Lab, LinkShape};
use wren_testkit::peer::{run_all, Peer};
use wren_testkit::video::{report, VideoReport};
use wren_testkit::{publish_data, subscribe_data, Client, Server};

/// A simulcast call in a lab: client 1 publishes, clients 2 and 3
/// (subscribers A and B) subscribe.
struct Call {
    lab: Lab,
    _server: Server,
    _clients: Vec<Client>,
    publisher: Peer,
    subs: Vec<Peer>,
}

const NAMES: [&str; 2] = ["A", "B"];

impl Call {
    fn start(specs: [ClientSpec; 3]) -> Call {
        let lab = Lab::new(&specs).unwrap_or_else(|e| panic!("the network lab: {e}"));
        let srv = lab.server().clone();
        let server = lab
            .enter(&srv.ns, || Server::start_on(IpAddr::V4(srv.ip)))
            .expect("wren in the server's namespace");
        let host = |k: usize| lab.client(k).clone();
        let (mut alice, publisher, mid) = {
            let h = host(0);
            lab.enter(&h.ns, || {
                let mut c = Client::connect(&server, "alice");
                c.ok("join", json!({"rid": "lab"}));
                let mut p = Peer::simulcast_publisher_at(IpAddr::V4(h.ip));
                let a = c.ok("publish", publish_data("lab", &p));
                p.accept_answer(a["jsep"]["sdp"].as_str().unwrap());
                (c, p, a["mid"].clone())
            })
            .expect("the publisher's namespace")
        };
        alice.drain(Duration::from_millis(10));
        let mut clients = vec![alice];
        let mut subs = Vec::new();
        for (k, name) in NAMES.iter().enumerate() {
            let h = host(k + 1);
            let (c, p) = lab
                .enter(&h.ns, || {
                    let mut c = Client::connect(&server, name);
                    c.ok("join", json!({"rid": "lab"}));
                    let mut p = Peer::recording_subscriber_at(IpAddr::V4(h.ip));
                    let a: Value = c.ok("subscribe", subscribe_data("lab", &mid, &p));
                    p.accept_answer(a["jsep"]["sdp"].as_str().unwrap());
                    (c, p)
                })
                .expect("a subscriber's namespace");
            clients.push(c);
            subs.push(p);
        }
        let mut call = Call {
            lab,
            _server: server,
            _clients: clients,
            publisher,
            subs,
        };
        assert!(
            call.run_until(Duration::from_secs(20), |c| c
                .subs
                .iter()
                .all(|s| s.received[1] > 0)),
            "media reaches both subscribers through the lab"
        );
        call
    }

    fn peers(&mut self) -> Vec<&mut Peer> {
        let mut v = vec![&mut self.publisher];
        v.extend(self.subs.iter_mut());
        v
    }

    fn run(&mut self, d: Duration) {
        run_all(&mut self.peers(), d);
    }

    /// Runs until `done` holds (checked every 100 ms) or `limit` passes.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Call) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            self.run(Duration::from_millis(100));
        }
        done(self)
    }

    /// The layer subscriber `s` received last.
    fn layer(&self, s: usize) -> Option<u8> {
        self.subs[s].video_log.as_ref()?.last().map(|v| v.layer)
    }

    /// Runs for `d` and reports each subscriber's video over it, with the
    /// bitrate its downlink carried.
    fn measure(&mut self, d: Duration) -> Vec<(VideoReport, u64)> {
        let bytes = |c: &Call| -> Vec<u64> {
            (1..=2)
                .map(|k| c.lab.stats(k).map_or(0, |s| s.down.bytes))
                .collect()
        };
        let before = bytes(self);
        let from = Instant::now();
        self.run(d);
        let to = Instant::now();
        let after = bytes(self);
        let secs = (to - from).as_secs_f64();
        self.subs
            .iter()
            .enumerate()
            .map(|(s, p)| {
                let r = report(p.video_log.as_ref().unwrap(), from, to);
                let bps = ((after[s] - before[s]) as f64 * 8.0 / secs) as u64;
                (r, bps)
            })
            .collect()
    }
}

/// The printed table.
struct Table(String);

impl Table {
    fn new() -> Table {
        Table(
            "| case | subscriber | layers | switches | frames (fps) | freezes | longest gap | link kbit/s |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n"
                .into(),
        )
    }

    fn rows(&mut self, case: &str, measured: &[(VideoReport, u64)]) {
        for (s, (r, bps)) in measured.iter().enumerate() {
            let _ = writeln!(
                self.0,
                "| {case} | {} | {:?} | {} | {} ({:.0}) | {} | {} ms | {} |",
                NAMES[s],
                r.layers,
                r.switches,
                r.frames,
                r.fps,
                r.freezes,
                r.longest_gap.as_millis(),
                bps / 1000
            );
        }
    }
}

impl Drop for Table {
    /// Printed whole at the end, also when a case failed (with the rows
    /// of the cases before it).
    fn drop(&mut self) {
        println!("\n{}", self.0);
    }
}

fn rate(kbit: u32) -> LinkShape {
    LinkShape::rate(kbit)
}

const WINDOW: Duration = Duration::from_secs(8);

#[test]
fn simulcast_through_shaped_links() {
    let mut table = Table::new();

    // 1. B's downlink carries 400 kbit/s: A gets the top layer, B a lower
    //    one, and B's limit changes nothing for A.
    let mut call = Call::start([
        ClientSpec::default(),
        ClientSpec::default(),
        ClientSpec::down(rate(400)),
    ]);
    let settled = call.run_until(Duration::from_secs(30), |c| {
        c.layer(0) == Some(2) && c.layer(1).is_some_and(|l| l < 2)
    });
    assert!(
        settled,
        "A on the top layer, B below it: {:?} {:?}",
        call.layer(0),
        call.layer(1)
    );
    call.run(Duration::from_secs(3));
    let m = call.measure(WINDOW);
    table.rows("1. B limited to 400 kbit/s", &m);
    let (a, b) = (&m[0].0, &m[1].0);
    assert_eq!(a.layers, [2], "A: the top layer throughout");
    assert!(a.fps >= 20.0, "A: {a:?}");
    assert!(a.longest_gap < Duration::from_millis(500), "A froze: {a:?}");
    assert!(!b.layers.contains(&2), "B: a lower layer: {b:?}");
    assert!(
        b.frames > 0 && b.longest_gap < Duration::from_secs(2),
        "B: {b:?}"
    );

    // 4. B's limit is lifted: it climbs back to the top within 15 s.
    call.lab
        .reshape(2, &ClientSpec::default())
        .expect("the limit lifted");
    let lifted = Instant::now();
    let back = call.run_until(Duration::from_secs(15), |c| c.layer(1) == Some(2));
    let took = lifted.elapsed();
    let m = call.measure(Duration::from_secs(3));
    table.rows(
        &format!(
            "4. B's limit lifted (top layer after {:.1} s)",
            took.as_secs_f64()
        ),
        &m,
    );
    assert!(back, "B stayed on layer {:?}", call.layer(1));
    assert_eq!(m[1].0.layers, [2], "B stays on the top: {:?}", m[1].0);
    drop(call);

    // 2. 5 % loss on the publisher's uplink and on B's downlink: NACK and
    //    RTX keep both decoding.
    let mut call = Call::start([
        ClientSpec::up(LinkShape::loss(5.0)),
        ClientSpec::default(),
        ClientSpec::down(LinkShape::loss(5.0)),
    ]);
    call.run(Duration::from_secs(5));
    let m = call.measure(WINDOW);
    table.rows("2. 5 % loss: publisher up, B down", &m);
    for (r, _) in &m {
        assert!(r.fps >= 20.0, "decoding on despite loss: {r:?}");
    }
    drop(call);

    // 3. Every client 150 ms (± 30) of round trip from the server: 75 ms
    //    ± 15 each way. The call starts and stays up.
    let slow = ClientSpec::both(LinkShape::delay(75, 15));
    let mut call = Call::start([slow, slow, slow]);
    call.run(Duration::from_secs(5));
    let m = call.measure(WINDOW);
    table.rows("3. 150 ms RTT, 30 ms jitter", &m);
    for (r, _) in &m {
        assert!(r.fps >= 20.0, "the call stays up: {r:?}");
    }
}
