//! The load tool's scenarios, against a running wren: signaling load,
//! media load, and time to the first video packet. Each returns a report
//! of what it measured.

use serde::Serialize;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use wren_testkit::peer::{run_all, run_until, Peer};
use wren_testkit::procfs;
use wren_testkit::protoo::{publish_data, subscribe_data, Session};

/// The wren under load: its HTTP address and the pid of the process that
/// runs the signaling node (its children are the SFUs).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub http: SocketAddr,
    pub pid: u32,
    /// How many times longer than natively any wait may take (wren under
    /// an emulator: its DTLS handshakes and answers are that much slower).
    pub patience: u32,
}

impl Target {
    /// A wait that is `d` natively, stretched by the patience.
    pub(crate) fn wait(&self, d: Duration) -> Duration {
        d * self.patience.max(1)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0..=100) of sorted durations, in ms.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// Prints a progress line on stderr, in place.
pub(crate) fn progress(what: &str, line: std::fmt::Arguments) {
    eprint!("\r\x1b[K[{what}] {line}");
}

#[derive(Debug, Clone, Serialize)]
pub struct SignalingReport {
    pub peers: usize,
    pub rooms: usize,
    pub seconds: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub request_p50_ms: f64,
    pub request_p99_ms: f64,
    pub requests: u64,
    /// Responses and notifications the node delivered, per second.
    pub messages_per_sec: f64,
    pub rss_idle_kib: u64,
    pub pss_idle_kib: u64,
    pub rss_kib: u64,
    pub rss_per_peer_kib: f64,
}

/// K peers join R rooms (join latency measured with all K connected), then
/// each sends `rate` requests a second (keepalive and broadcast in turn)
/// for `seconds`.
pub fn signaling(
    t: Target,
    peers: usize,
    rooms: usize,
    rate: f64,
    seconds: f64,
) -> Result<SignalingReport, String> {
    let rss_idle_kib = procfs::rss_kib(t.pid).unwrap_or(0);
    let pss_idle_kib = procfs::pss_kib(t.pid).unwrap_or(0);
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let mut clients = Vec::with_capacity(peers);
        for i in 0..peers {
            clients.push(Session::connect(t.http, &format!("bench-{i}")).await?);
            if i % 50 == 49 {
                progress("signaling", format_args!("{} peers connected", i + 1));
            }
        }
        let mut joins = Vec::with_capacity(peers);
        for (i, c) in clients.iter_mut().enumerate() {
            let (_, rtt) = c
                .ok("join", json!({"rid": format!("room-{}", i % rooms)}))
                .await?;
            joins.push(rtt);
        }
        joins.sort();
        progress(
            "signaling",
            format_args!("{peers} peers joined; load for {seconds} s"),
        );

        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                ex.spawn(async move {
                    let rid = format!("room-{}", i % rooms);
                    let mut rtts = Vec::new();
                    // Spread the peers' first requests over one interval.
                    let mut next = start + interval.mul_f64(i as f64 / peers as f64);
                    let mut n = 0u64;
                    while next < end {
                        smol::Timer::at(next).await;
                        next += interval;
                        let (method, data) = if n.is_multiple_of(2) {
                            ("keepalive", json!({"rid": rid}))
                        } else {
                            ("broadcast", json!({"rid": rid, "data": {"n": n}}))
                        };
                        n += 1;
                        let (_, rtt) = c.ok(method, data).await?;
                        rtts.push(rtt);
                    }
                    // Collect what is still in flight to us.
                    let (_, _) = c.ok("keepalive", json!({"rid": rid})).await?;
                    let delivered = c.notifications + n + 1;
                    Ok::<_, String>((rtts, delivered, c))
                })
            })
            .collect();
        let mut rtts = Vec::new();
        let mut delivered = 0;
        // The peers stay connected until the loaded RSS is read.
        let mut connected = Vec::with_capacity(peers);
        for task in tasks {
            let (r, d, c) = task.await?;
            rtts.extend(r);
            delivered += d;
            connected.push(c);
        }
        let elapsed = start.elapsed().as_secs_f64();
        rtts.sort();
        let rss_kib = procfs::rss_kib(t.pid).unwrap_or(0);
        drop(connected);
        eprintln!();
        Ok(SignalingReport {
            peers,
            rooms,
            seconds: elapsed,
            join_p50_ms: percentile(&joins, 50.0),
            join_p99_ms: percentile(&joins, 99.0),
            request_p50_ms: percentile(&rtts, 50.0),
            request_p99_ms: percentile(&rtts, 99.0),
            requests: rtts.len() as u64,
            messages_per_sec: delivered as f64 / elapsed,
            rss_idle_kib,
            pss_idle_kib,
            rss_kib,
            rss_per_peer_kib: rss_kib.saturating_sub(rss_idle_kib) as f64 / peers as f64,
        })
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaReport {
    pub publishers: usize,
    pub subscribers: usize,
    pub bitrate_kbps: u64,
    pub packet_size: usize,
    /// Frames a second of each publisher (0: packets evenly spaced).
    pub fps: u32,
    /// The publishers sent simulcast (the test kit's three layers).
    pub simulcast: bool,
    pub seconds: f64,
    /// Packets the publishers sent times the subscribers of each, per second.
    pub offered_pps: f64,
    /// Packets the SFUs forwarded, per second (their own counters).
    pub forwarded_pps: f64,
    /// Packets the subscribers received, per second.
    pub delivered_pps: f64,
    pub loss_percent: f64,
    pub sfu_cpu_percent: f64,
    pub sfu_cpu_s_per_million: f64,
    pub sfu_rss_idle_kib: u64,
    /// With the publishers and the first subscriber's subscriptions.
    pub sfu_rss_first_kib: u64,
    pub sfu_rss_kib: u64,
    /// What each subscription past the first subscriber's added.
    pub sfu_rss_per_subscriber_kib: f64,
}

/// Waits for the SFUs' next stats report (they come once a second) and
/// returns the forwarded total it brought, and when it came.
fn fresh_forwarded_total(t: Target) -> Result<(u64, Instant), String> {
    let before = forwarded_total(t)?;
    let deadline = Instant::now() + t.wait(Duration::from_secs(3));
    loop {
        let now = forwarded_total(t)?;
        if now != before || Instant::now() > deadline {
            return Ok((now, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn forwarded_total(t: Target) -> Result<u64, String> {
    let body = http_get(t.http, "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("wren_forwarded_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

pub(crate) fn sfus_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| procfs::cpu_seconds(*p)).sum()
}

fn sfus_rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| procfs::rss_kib(*p)).sum()
}

/// The media scenario's load.
#[derive(Debug, Clone, Copy)]
pub struct MediaLoad {
    pub publishers: usize,
    /// Subscribers of each publisher.
    pub subscribers: usize,
    /// Bits per second of each publisher.
    pub bps: u64,
    /// RTP payload bytes.
    pub size: usize,
    /// Frames a second, each a burst of packets (0: packets evenly spaced).
    pub fps: u32,
    /// Publishers send the test kit's three simulcast layers instead.
    pub simulcast: bool,
}

/// P publishers send `bps` of `size`-byte RTP packets; S subscribers each
/// subscribe to every publisher. Measured over `seconds` after a warm-up.
pub fn media(t: Target, load: MediaLoad, seconds: f64) -> Result<MediaReport, String> {
    let MediaLoad {
        publishers,
        subscribers,
        bps,
        size,
        fps,
        simulcast,
    } = load;
    let sfu_pids = procfs::children(t.pid);
    let sfu_rss_idle_kib = sfus_rss(&sfu_pids);
    let rid = "bench-media";
    let mut users = Vec::new();
    let mut peers: Vec<Peer> = Vec::new();
    let mids = smol::block_on(async {
        let mut mids = Vec::new();
        for i in 0..publishers {
            let mut c = Session::connect(t.http, &format!("pub-{i}")).await?;
            c.ok("join", json!({"rid": rid})).await?;
            let mut p = if simulcast {
                Peer::simulcast_publisher_at(Ipv4Addr::LOCALHOST.into())
            } else {
                Peer::load_publisher(bps, size, fps)
            };
            let (a, _) = c.ok("publish", publish_data(rid, &p)).await?;
            p.accept_answer(a["jsep"]["sdp"].as_str().unwrap_or_default());
            mids.push(a["mid"].clone());
            peers.push(p);
            users.push(c);
        }
        Ok::<_, String>(mids)
    })?;
    // The first subscriber alone, then the others: what they add over it
    // is the marginal cost of a subscription. Measured from idle instead,
    // it would also count the publishers and the first touch of every
    // code page and allocator arena the media path uses.
    let mut sfu_rss_first_kib = sfu_rss_idle_kib;
    let first = subscribers.min(1);
    for (n, batch) in [0..first, first..subscribers].into_iter().enumerate() {
        smol::block_on(async {
            for i in batch {
                let mut c = Session::connect(t.http, &format!("sub-{i}")).await?;
                c.ok("join", json!({"rid": rid})).await?;
                for mid in &mids {
                    let mut p = Peer::subscriber();
                    let (a, _) = c.ok("subscribe", subscribe_data(rid, mid, &p)).await?;
                    p.accept_answer(a["jsep"]["sdp"].as_str().unwrap_or_default());
                    peers.push(p);
                }
                users.push(c);
            }
            Ok::<_, String>(())
        })?;
        let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
        let limit = t.wait(Duration::from_secs(20));
        let connected = run_until(&mut refs, limit, |p| p.iter().all(|p| p.connected()));
        if !connected {
            return Err(format!("not every peer connected within {limit:?}"));
        }
        // Long enough for the retransmission caches to fill (128 packets
        // at 170 packets/s), so each figure is a steady state.
        run_all(&mut refs, Duration::from_secs(2));
        if n == 0 {
            sfu_rss_first_kib = sfus_rss(&sfu_pids);
        }
    }
    let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
    let sent0: u64 = refs[..publishers].iter().map(|p| p.sent).sum();
    let recv0: u64 = refs[publishers..]
        .iter()
        .map(|p| p.received[1] as u64)
        .sum();
    let (fwd0, fwd0_at) = fresh_forwarded_total(t)?;
    let cpu0 = sfus_cpu(&sfu_pids);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next_keepalive = start + Duration::from_secs(10);
    while Instant::now() < end {
        run_all(&mut refs, Duration::from_millis(500));
        progress(
            "media",
            format_args!(
                "{:.1}/{seconds} s, received {} packets",
                start.elapsed().as_secs_f64(),
                refs[publishers..]
                    .iter()
                    .map(|p| p.received[1])
                    .sum::<usize>()
            ),
        );
        if Instant::now() >= next_keepalive {
            next_keepalive += Duration::from_secs(10);
            smol::block_on(async {
                for u in users.iter_mut() {
                    u.ok("keepalive", json!({"rid": rid})).await?;
                }
                Ok::<_, String>(())
            })?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = sfus_cpu(&sfu_pids) - cpu0;
    let sent = refs[..publishers].iter().map(|p| p.sent).sum::<u64>() - sent0;
    let recv = refs[publishers..]
        .iter()
        .map(|p| p.received[1] as u64)
        .sum::<u64>()
        - recv0;
    // Media keeps flowing while we wait for the closing stats report.
    let (fwd1, fwd1_at) = {
        let before = forwarded_total(t)?;
        let deadline = Instant::now() + t.wait(Duration::from_secs(3));
        loop {
            run_all(&mut refs, Duration::from_millis(10));
            let now = forwarded_total(t)?;
            if now != before || Instant::now() > deadline {
                break (now, Instant::now());
            }
        }
    };
    let fwd = fwd1.saturating_sub(fwd0);
    let fwd_secs = (fwd1_at - fwd0_at).as_secs_f64();
    let sfu_rss_kib = sfus_rss(&sfu_pids);
    eprintln!();
    let offered = (sent * subscribers as u64) as f64;
    Ok(MediaReport {
        publishers,
        subscribers,
        bitrate_kbps: bps / 1000,
        packet_size: size,
        fps,
        seconds: elapsed,
        offered_pps: offered / elapsed,
        forwarded_pps: fwd as f64 / fwd_secs,
        delivered_pps: recv as f64 / elapsed,
        simulcast,
        // A simulcast publisher counts frames, not packets, and each
        // subscriber gets one of its layers: no loss figure.
        loss_percent: if offered > 0.0 && !simulcast {
            (100.0 * (1.0 - recv as f64 / offered)).max(0.0)
        } else {
            0.0
        },
        sfu_cpu_percent: 100.0 * cpu / elapsed,
        sfu_cpu_s_per_million: if fwd > 0 {
            cpu / (fwd as f64 / fwd_secs * elapsed / 1e6)
        } else {
            0.0
        },
        sfu_rss_idle_kib,
        sfu_rss_kib,
        sfu_rss_first_kib,
        sfu_rss_per_subscriber_kib: if subscribers > 1 {
            sfu_rss_kib.saturating_sub(sfu_rss_first_kib) as f64
                / (publishers * (subscribers - 1)).max(1) as f64
        } else {
            sfu_rss_kib.saturating_sub(sfu_rss_idle_kib) as f64 / publishers.max(1) as f64
        },
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FirstFrameReport {
    pub tries: usize,
    /// Subscribe answer → first video packet at the subscriber.
    pub first_packet_p50_ms: f64,
    pub first_packet_max_ms: f64,
}

/// `tries` times: a fresh publisher and subscriber; the time from the
/// subscribe answer to the first video packet.
pub fn first_frame(t: Target, tries: usize) -> Result<FirstFrameReport, String> {
    let mut times = Vec::new();
    for i in 0..tries {
        let rid = format!("bench-ff-{i}");
        let (mut a, mut b) = smol::block_on(async {
            let a = Session::connect(t.http, &format!("ff-pub-{i}")).await?;
            let b = Session::connect(t.http, &format!("ff-sub-{i}")).await?;
            Ok::<_, String>((a, b))
        })?;
        let mut publisher = Peer::publisher();
        let mid = smol::block_on(async {
            a.ok("join", json!({"rid": rid})).await?;
            b.ok("join", json!({"rid": rid})).await?;
            let (ans, _) = a.ok("publish", publish_data(&rid, &publisher)).await?;
            publisher.accept_answer(ans["jsep"]["sdp"].as_str().unwrap_or_default());
            Ok::<_, String>(ans["mid"].clone())
        })?;
        run_until(
            &mut [&mut publisher],
            t.wait(Duration::from_secs(10)),
            |p| p[0].connected(),
        );
        run_all(&mut [&mut publisher], Duration::from_millis(300));
        let mut subscriber = Peer::subscriber();
        let (ans, _) = smol::block_on(b.ok("subscribe", subscribe_data(&rid, &mid, &subscriber)))?;
        let answered = Instant::now();
        subscriber.accept_answer(ans["jsep"]["sdp"].as_str().unwrap_or_default());
        run_until(
            &mut [&mut publisher, &mut subscriber],
            t.wait(Duration::from_secs(10)),
            |p| p[1].first_video_packet.is_some(),
        );
        let first = subscriber
            .first_video_packet
            .ok_or("no video reached the subscriber")?;
        times.push(first - answered);
        progress("first-frame", format_args!("{}/{tries}", i + 1));
    }
    eprintln!();
    times.sort();
    Ok(FirstFrameReport {
        tries,
        first_packet_p50_ms: percentile(&times, 50.0),
        first_packet_max_ms: percentile(&times, 100.0),
    })
}

/// The body of one of the node's own endpoints; an error unless it
/// answers 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    match wren_testkit::http_get(addr, path) {
        Some((200, body)) => Ok(body),
        Some((status, _)) => Err(format!("GET {path}: {status}")),
        None => Err(format!("GET {path}: no answer")),
    }
}
