//! The cluster scenario: a real `redis-server` on loopback and three wren
//! nodes sharing it (each its own process and SFU), as three boards of a
//! LAN would. Measured: joins of rooms spread over the three nodes,
//! notifications crossing nodes, what Redis does per join, and what a
//! relay costs (a stream pulled once by another board's SFU).

use crate::scenarios::{http_get, percentile, progress, sfus_cpu, Target};
use serde::Serialize;
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use wren_testkit::peer::{run_all, run_until, Peer};
use wren_testkit::procfs;
use wren_testkit::protoo::{publish_data, subscribe_data, Session};
use wren_testkit::redis::Redis;

/// What the cluster scenario asks of the nodes.
#[derive(Debug, Clone, Copy)]
pub struct ClusterLoad {
    /// Peers in all, spread over the nodes in turn.
    pub peers: usize,
    /// Rooms they join (each spans every node).
    pub rooms: usize,
    /// Broadcasts timed across nodes.
    pub broadcasts: usize,
    /// Subscribers of the relayed stream.
    pub subscribers: usize,
    /// The relayed stream's bits per second and RTP payload size.
    pub bps: u64,
    pub size: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    pub peers: usize,
    pub rooms: usize,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    /// Redis commands per join (scripts' own calls included; heartbeats
    /// and the rest of the idle rate subtracted).
    pub redis_commands_per_join: f64,
    /// A broadcast from a peer of one node to a peer of another.
    pub fanout_p50_ms: f64,
    pub fanout_p99_ms: f64,
    pub subscribers: usize,
    /// The stream's packets a second, as the publisher sends them.
    pub sent_pps: f64,
    /// The subscribers on the publisher's own board: SFU CPU per packet
    /// forwarded (microseconds).
    pub local_us_per_packet: f64,
    /// The same subscribers on another board, through a relay: both
    /// SFUs' CPU per packet delivered to a subscriber.
    pub relayed_us_per_packet: f64,
    /// What carrying one packet between the boards costs: the two SFUs'
    /// CPU with the relay, less the publisher's SFU's without it, per
    /// packet the relay carried.
    pub relay_us_per_packet: f64,
    /// Packets the publisher's board sent per packet it received, local
    /// and relayed (the relay: one copy, whatever the subscribers).
    pub publisher_board_copies_local: f64,
    pub publisher_board_copies_relayed: f64,
}

/// Runs the scenario against `nodes` (their signaling pids' children are
/// their SFUs), sharing `redis`.
pub fn cluster(
    redis: &Redis,
    nodes: &[Target],
    load: ClusterLoad,
) -> Result<ClusterReport, String> {
    let (joins, redis_commands_per_join, fanout) = signaling(redis, nodes, load)?;
    let relay = relay(nodes, load)?;
    eprintln!();
    Ok(ClusterReport {
        nodes: nodes.len(),
        peers: load.peers,
        rooms: load.rooms,
        join_p50_ms: percentile(&joins, 50.0),
        join_p99_ms: percentile(&joins, 99.0),
        redis_commands_per_join,
        fanout_p50_ms: percentile(&fanout, 50.0),
        fanout_p99_ms: percentile(&fanout, 99.0),
        subscribers: load.subscribers,
        sent_pps: relay.sent_pps,
        local_us_per_packet: relay.local_us,
        relayed_us_per_packet: relay.relayed_us,
        relay_us_per_packet: relay.relay_us,
        publisher_board_copies_local: relay.copies_local,
        publisher_board_copies_relayed: relay.copies_relayed,
    })
}

/// Joins (with Redis's commands per join) and broadcasts across nodes.
fn signaling(
    redis: &Redis,
    nodes: &[Target],
    load: ClusterLoad,
) -> Result<(Vec<Duration>, f64, Vec<Duration>), String> {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let mut clients = Vec::with_capacity(load.peers);
        for i in 0..load.peers {
            let node = nodes[i % nodes.len()];
            clients.push(Session::connect(node.http, &format!("c-{i}")).await?);
        }
        // Redis's idle rate (heartbeats), to take out of the joins' count.
        let idle_from = (redis.commands().ok_or("INFO commandstats")?, Instant::now());
        smol::Timer::after(Duration::from_secs(3)).await;
        let idle_to = (redis.commands().ok_or("INFO commandstats")?, Instant::now());
        let idle_rate = (idle_to.0 - idle_from.0) as f64 / (idle_to.1 - idle_from.1).as_secs_f64();
        let mut joins = Vec::with_capacity(load.peers);
        let before = (redis.commands().ok_or("INFO commandstats")?, Instant::now());
        for (i, c) in clients.iter_mut().enumerate() {
            let rid = format!("hall-{}", (i / nodes.len()) % load.rooms);
            let (_, rtt) = c.ok("join", json!({ "rid": rid })).await?;
            joins.push(rtt);
        }
        let after = (redis.commands().ok_or("INFO commandstats")?, Instant::now());
        joins.sort();
        let idle = idle_rate * (after.1 - before.1).as_secs_f64();
        // Less the INFO calls themselves (one before, one after).
        let commands = (after.0 - before.0) as f64 - idle - 1.0;
        let per_join = commands.max(0.0) / load.peers as f64;
        progress(
            "cluster",
            format_args!("{} peers joined; broadcasts across nodes", load.peers),
        );

        // Peers 0, 1, 2 are in hall-0 on nodes 0, 1, 2: 0 broadcasts, the
        // others time its arrival.
        let mut rest = clients.split_off(1);
        let mut sender = clients.pop().ok_or("no peer")?;
        let receivers: Vec<Session> = rest.drain(..nodes.len() - 1).collect();
        let arrivals: Rc<RefCell<Vec<(u64, Instant)>>> = Rc::default();
        let tasks: Vec<_> = receivers
            .into_iter()
            .map(|mut r| {
                let arrivals = arrivals.clone();
                let n = load.broadcasts as u64;
                ex.spawn(async move {
                    let mut seen = 0;
                    while seen < n {
                        let (method, data) = r.next_note().await?;
                        if method == "broadcast" {
                            let i = data["data"]["n"].as_u64().unwrap_or(u64::MAX);
                            arrivals.borrow_mut().push((i, Instant::now()));
                            seen += 1;
                        }
                    }
                    Ok::<_, String>(r)
                })
            })
            .collect();
        let mut sent = Vec::with_capacity(load.broadcasts);
        for n in 0..load.broadcasts {
            sent.push(Instant::now());
            sender
                .ok("broadcast", json!({"rid": "hall-0", "data": {"n": n}}))
                .await?;
            // Under the default request budget (20 a second).
            smol::Timer::after(Duration::from_millis(60)).await;
        }
        let limit = nodes[0].wait(Duration::from_secs(10));
        let deadline = smol::Timer::after(limit);
        let all = async {
            for t in tasks {
                t.await?;
            }
            Ok::<_, String>(())
        };
        smol::future::or(all, async {
            deadline.await;
            Err(format!("not every broadcast crossed within {limit:?}"))
        })
        .await?;
        let mut fanout: Vec<Duration> = arrivals
            .borrow()
            .iter()
            .filter_map(|(i, at)| Some(at.saturating_duration_since(*sent.get(*i as usize)?)))
            .collect();
        fanout.sort();
        drop(rest);
        Ok((joins, per_join, fanout))
    }))
}

struct RelayReport {
    sent_pps: f64,
    local_us: f64,
    relayed_us: f64,
    relay_us: f64,
    copies_local: f64,
    copies_relayed: f64,
}

/// What one load window measured on two nodes' SFUs, per second.
struct Window {
    sent: f64,
    cpu: [f64; 2],
    forwarded: [f64; 2],
}

/// A publisher on node 0; S subscribers on node 0 (local), then on node 1
/// (through a relay), each measured over `seconds`.
fn relay(nodes: &[Target], load: ClusterLoad) -> Result<RelayReport, String> {
    let [n0, n1] = [nodes[0], nodes[1]];
    let rid = "bench-relay";
    let (mut publisher, mid, mut owner) = smol::block_on(async {
        let mut c = Session::connect(n0.http, "relay-pub").await?;
        c.ok("join", json!({ "rid": rid })).await?;
        let mut p = Peer::load_publisher(load.bps, load.size, 0);
        let (a, _) = c.ok("publish", publish_data(rid, &p)).await?;
        p.accept_answer(a["jsep"]["sdp"].as_str().unwrap_or_default());
        Ok::<_, String>((p, a["mid"].clone(), c))
    })?;
    let mut windows = Vec::new();
    let mut kept_alive = Instant::now();
    for (phase, node) in [("local", n0), ("relayed", n1)] {
        progress("cluster", format_args!("{phase} subscribers"));
        let (mut subs, mut users) = smol::block_on(async {
            let mut subs = Vec::new();
            let mut users = Vec::new();
            for i in 0..load.subscribers {
                let mut c = Session::connect(node.http, &format!("{phase}-{i}")).await?;
                c.ok("join", json!({ "rid": rid })).await?;
                let mut p = Peer::subscriber();
                let (a, _) = c.ok("subscribe", subscribe_data(rid, &mid, &p)).await?;
                p.accept_answer(a["jsep"]["sdp"].as_str().unwrap_or_default());
                subs.push(p);
                users.push(c);
            }
            Ok::<_, String>((subs, users))
        })?;
        let mut refs: Vec<&mut Peer> = std::iter::once(&mut publisher)
            .chain(subs.iter_mut())
            .collect();
        let limit = n0.wait(Duration::from_secs(20));
        let deadline = Instant::now() + limit;
        let flowing = |p: &[&mut Peer]| p[1..].iter().all(|s| s.received[1] > 0);
        // In steps, with keepalives between: an emulated SFU may take
        // longer than the liveness timeout to start them all.
        while !run_until(&mut refs, Duration::from_secs(5), flowing) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{phase}: not every subscriber got media within {limit:?}"
                ));
            }
            keepalive(&mut owner, &mut users, rid)?;
            kept_alive = Instant::now();
        }
        run_all(&mut refs, Duration::from_secs(2));
        let pids = [procfs::children(n0.pid), procfs::children(n1.pid)];
        // The SFUs report their counts once a second: each node's are read
        // as they change, media flowing, and taken as a rate.
        // Node 1 forwards only in the relayed phase (waiting for a count
        // that does not move would take the whole deadline).
        let busy = [true, phase == "relayed"];
        let counts = |refs: &mut [&mut Peer]| -> Result<[(u64, Instant); 2], String> {
            let idle = (0, Instant::now());
            Ok([
                fresh(refs, n0)?,
                if busy[1] { fresh(refs, n1)? } else { idle },
            ])
        };
        let f0 = counts(&mut refs)?;
        let c0 = [sfus_cpu(&pids[0]), sfus_cpu(&pids[1])];
        let s0 = refs[0].sent;
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(load.seconds);
        while Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            run_all(&mut refs, left.min(Duration::from_secs(1)));
            progress(
                "cluster",
                format_args!("{phase}: {:.0} s", start.elapsed().as_secs_f64()),
            );
            // Silent sessions would be dropped (the liveness timeout).
            if kept_alive.elapsed() >= Duration::from_secs(5) {
                keepalive(&mut owner, &mut users, rid)?;
                kept_alive = Instant::now();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let c1 = [sfus_cpu(&pids[0]), sfus_cpu(&pids[1])];
        let sent = refs[0].sent - s0;
        let f1 = counts(&mut refs)?;
        let rate = |i: usize| {
            let secs = (f1[i].1 - f0[i].1).as_secs_f64().max(1e-3);
            (f1[i].0 - f0[i].0) as f64 / secs
        };
        windows.push(Window {
            sent: sent as f64 / seconds,
            cpu: [(c1[0] - c0[0]) / seconds, (c1[1] - c0[1]) / seconds],
            forwarded: [rate(0), rate(1)],
        });
        drop(users);
        drop(subs);
        // Their sessions end on both boards before the next phase.
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(owner);
    let [local, relayed] = &windows[..] else {
        return Err("two windows".into());
    };
    let us = |cpu: f64, pps: f64| 1e6 * cpu / pps.max(1.0);
    Ok(RelayReport {
        sent_pps: local.sent,
        local_us: us(local.cpu[0], local.forwarded[0]),
        relayed_us: us(relayed.cpu[0] + relayed.cpu[1], relayed.forwarded[1]),
        relay_us: us(
            relayed.cpu[0] + relayed.cpu[1] - local.cpu[0],
            relayed.forwarded[0],
        ),
        copies_local: local.forwarded[0] / local.sent.max(1.0),
        copies_relayed: relayed.forwarded[0] / relayed.sent.max(1.0),
    })
}

/// A keepalive from each session.
fn keepalive(owner: &mut Session, users: &mut [Session], rid: &str) -> Result<(), String> {
    smol::block_on(async {
        for s in std::iter::once(owner).chain(users.iter_mut()) {
            s.ok("keepalive", json!({ "rid": rid }))
                .await
                .map_err(|e| format!("keepalive: {e}"))?;
        }
        Ok(())
    })
}

/// Packets the SFUs of the node at `http` forwarded so far.
fn forwarded(http: SocketAddr) -> Result<u64, String> {
    let body = http_get(http, "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("wren_forwarded_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// The node's forwarded count as soon as it changes (its SFU's next
/// report), with when; media keeps flowing meanwhile.
fn fresh(refs: &mut [&mut Peer], node: Target) -> Result<(u64, Instant), String> {
    let before = forwarded(node.http)?;
    let deadline = Instant::now() + node.wait(Duration::from_secs(3));
    loop {
        run_all(refs, Duration::from_millis(10));
        let now = forwarded(node.http)?;
        if now != before || Instant::now() > deadline {
            return Ok((now, Instant::now()));
        }
    }
}
