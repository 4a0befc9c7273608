//! `wren-bench`: load for a real wren, with real WebSockets and real
//! WebRTC (str0m) peers. It starts its own wren (all-in-one, on loopback),
//! runs the scenarios, prints a table, and can write the numbers as JSON.

use scenarios::Target;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wren_testkit::server::{free_tcp_port, free_udp_port, wait_for_sfus, wait_until};

mod cluster;
mod scenarios;

const USAGE: &str = "\
usage: wren-bench [OPTIONS]

  --wren PATH          the wren binary (default: the one beside wren-bench)
  --sfus N             SFU processes of that wren (default 1)
  --config FILE        a wren config file for it (e.g. its [limits])
  --wrapper CMD        command prefix to run wren with (and its SFUs),
                       split at spaces, e.g. 'taskset -c 1' or 'qemu-aarch64'
  --patience N         let every wait take N times longer (default 1, or 10
                       with --wrapper: an emulated wren is that much slower)
  --only LIST          scenarios, comma-separated: signaling,media,first-frame,
                       cluster (default: the first three; cluster starts its
                       own redis-server and three wren nodes)
  --peers K            signaling: peers (default 200)
  --rooms R            signaling: rooms (default 20)
  --rate N             signaling: requests per second per peer (default 2)
  --publishers P       media: publishers (default 2)
  --subscribers S      media: subscribers of each publisher (default 4)
  --bitrate KBPS       media: per publisher (default 1000)
  --packet-size BYTES  media: RTP payload size (default 1000)
  --fps N              media: send each publisher's load as N frames a
                       second, a burst of packets each, as a camera does
                       (default 0: packets evenly spaced)
  --simulcast          media: publishers send three simulcast layers (the
                       test kit's, ~1.85 Mbit/s in all; --bitrate, --packet-size
                       and --fps do not apply); subscribers' loss is not counted
  --seconds SECS       length of each load window (default 5)
  --tries N            first-frame: attempts (default 5)
  --cluster-peers K    cluster: peers over the three nodes (default 60)
  --cluster-rooms R    cluster: rooms they join, each on every node (default 4)
  --json FILE          also write the results as JSON";

struct Opts {
    wren: PathBuf,
    wrapper: Vec<String>,
    patience: Option<u32>,
    config: Option<PathBuf>,
    sfus: usize,
    only: Vec<String>,
    peers: usize,
    rooms: usize,
    rate: f64,
    publishers: usize,
    subscribers: usize,
    bitrate_kbps: u64,
    packet_size: usize,
    fps: u32,
    simulcast: bool,
    seconds: f64,
    tries: usize,
    cluster_peers: usize,
    cluster_rooms: usize,
    json: Option<PathBuf>,
}

impl Opts {
    fn patience(&self) -> u32 {
        let emulated = !self.wrapper.is_empty();
        self.patience.unwrap_or(if emulated { 10 } else { 1 })
    }
}

fn parse() -> Result<Opts, String> {
    let beside = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("wren");
    let mut o = Opts {
        wren: beside,
        wrapper: Vec::new(),
        patience: None,
        config: None,
        sfus: 1,
        only: vec!["signaling".into(), "media".into(), "first-frame".into()],
        peers: 200,
        rooms: 20,
        rate: 2.0,
        publishers: 2,
        subscribers: 4,
        bitrate_kbps: 1000,
        packet_size: 1000,
        fps: 0,
        simulcast: false,
        seconds: 5.0,
        tries: 5,
        cluster_peers: 60,
        cluster_rooms: 4,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        let num = |s: String| {
            s.parse::<f64>()
                .map_err(|_| format!("{a}: not a number: {s}"))
        };
        match a.as_str() {
            "--wren" => o.wren = v()?.into(),
            "--wrapper" => o.wrapper = v()?.split_whitespace().map(String::from).collect(),
            "--patience" => o.patience = Some((num(v()?)? as u32).max(1)),
            "--config" => o.config = Some(v()?.into()),
            "--sfus" => o.sfus = num(v()?)? as usize,
            "--only" => o.only = v()?.split(',').map(String::from).collect(),
            "--peers" => o.peers = num(v()?)? as usize,
            "--rooms" => o.rooms = (num(v()?)? as usize).max(1),
            "--rate" => o.rate = num(v()?)?,
            "--publishers" => o.publishers = num(v()?)? as usize,
            "--subscribers" => o.subscribers = num(v()?)? as usize,
            "--bitrate" => o.bitrate_kbps = num(v()?)? as u64,
            "--packet-size" => o.packet_size = num(v()?)? as usize,
            "--fps" => o.fps = num(v()?)? as u32,
            "--simulcast" => o.simulcast = true,
            "--seconds" => o.seconds = num(v()?)?,
            "--tries" => o.tries = num(v()?)? as usize,
            "--cluster-peers" => o.cluster_peers = (num(v()?)? as usize).max(3),
            "--cluster-rooms" => o.cluster_rooms = (num(v()?)? as usize).max(1),
            "--json" => o.json = Some(v()?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

/// The wren under test, killed (by pid) when dropped.
struct Wren(Child);

impl Drop for Wren {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a wren for the scenarios, with `extra` arguments.
fn start_wren(o: &Opts, extra: &[String]) -> Result<(Wren, Target), String> {
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut cmd = match o.wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&o.wren);
            c.args(["--sfu-wrapper", &o.wrapper.join(" ")]);
            c
        }
        None => Command::new(&o.wren),
    };
    if let Some(config) = &o.config {
        cmd.arg("--config").arg(config);
    }
    let child = cmd
        .args(["--listen", &http.to_string(), "--media-ip", "127.0.0.1"])
        .args(["--media-port", &free_udp_port().to_string()])
        .args(["--sfus", &o.sfus.to_string(), "--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", o.wren.display()))?;
    let wren = Wren(child);
    let target = Target {
        http,
        pid: wren.0.id(),
        patience: o.patience(),
    };
    let limit = Duration::from_secs(15) * o.patience();
    let deadline = Instant::now() + limit;
    if !wait_until(limit, || scenarios::http_get(http, "/healthz").is_ok()) {
        return Err("wren did not become healthy".into());
    }
    // Every SFU must be up, not only the first.
    let left = deadline.saturating_duration_since(Instant::now());
    if !wait_for_sfus(http, o.sfus, left) {
        return Err("not every SFU came up".into());
    }
    Ok((wren, target))
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = bench(&o) {
        eprintln!("wren-bench: {e}");
        std::process::exit(1);
    }
}

fn bench(o: &Opts) -> Result<(), String> {
    let mut json = serde_json::Map::new();
    let mut rows: Vec<(String, String)> = Vec::new();
    let single = ["signaling", "media", "first-frame"];
    if o.only.iter().any(|s| single.contains(&s.as_str())) {
        single_node(o, &mut rows, &mut json)?;
    }
    if o.only.iter().any(|s| s == "cluster") {
        cluster(o, &mut rows, &mut json)?;
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("{k:width$}  {v}");
    }
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

type Rows = Vec<(String, String)>;
type Json = serde_json::Map<String, serde_json::Value>;

/// Three nodes on one Redis (the test kit's: a redis-server of its own).
fn cluster(o: &Opts, rows: &mut Rows, json: &mut Json) -> Result<(), String> {
    let redis = wren_testkit::redis::Redis::start();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let args = ["--cluster", &redis.url(), "--bizid", &format!("bench-{i}")];
        nodes.push(start_wren(o, &args.map(String::from))?);
    }
    let targets: Vec<Target> = nodes.iter().map(|(_, t)| *t).collect();
    let counted = |t: &Target| {
        scenarios::http_get(t.http, "/metrics")
            .is_ok_and(|m| m.lines().any(|l| l == "wren_cluster_nodes 2"))
    };
    let limit = Duration::from_secs(15) * o.patience();
    if !wait_until(limit, || targets.iter().all(counted)) {
        return Err("the three nodes did not find each other".into());
    }
    let load = cluster::ClusterLoad {
        peers: o.cluster_peers,
        rooms: o.cluster_rooms,
        broadcasts: 50,
        subscribers: o.subscribers,
        bps: o.bitrate_kbps * 1000,
        size: o.packet_size,
        seconds: o.seconds,
    };
    let r = cluster::cluster(&redis, &targets, load)?;
    rows.push((
        format!(
            "cluster: {} nodes on one redis-server, {} peers in {} rooms spanning them",
            r.nodes, r.peers, r.rooms
        ),
        String::new(),
    ));
    rows.push((
        "  join answer p50 / p99".into(),
        format!("{:.3} / {:.3} ms", r.join_p50_ms, r.join_p99_ms),
    ));
    rows.push((
        "  Redis commands per join".into(),
        format!("{:.1}", r.redis_commands_per_join),
    ));
    rows.push((
        "  broadcast to another node's peer p50 / p99".into(),
        format!("{:.3} / {:.3} ms", r.fanout_p50_ms, r.fanout_p99_ms),
    ));
    rows.push((
        format!(
            "  {} subscribers of a {} kbps stream ({:.0} packets/s)",
            r.subscribers, o.bitrate_kbps, r.sent_pps
        ),
        String::new(),
    ));
    rows.push((
        "    on its board: SFU CPU per packet forwarded".into(),
        format!("{:.1} us", r.local_us_per_packet),
    ));
    rows.push((
        "    on another board: both SFUs' CPU per packet delivered".into(),
        format!("{:.1} us", r.relayed_us_per_packet),
    ));
    rows.push((
        "    relay cost per packet carried between boards".into(),
        format!("{:.1} us", r.relay_us_per_packet),
    ));
    rows.push((
        "    publisher's board: copies sent per packet, local / relayed".into(),
        format!(
            "{:.2} / {:.2}",
            r.publisher_board_copies_local, r.publisher_board_copies_relayed
        ),
    ));
    json.insert(
        "cluster".into(),
        serde_json::to_value(&r).map_err(|e| e.to_string())?,
    );
    Ok(())
}

/// The scenarios of one wren.
fn single_node(o: &Opts, rows: &mut Rows, json: &mut Json) -> Result<(), String> {
    let (_wren, target) = start_wren(o, &[])?;
    if o.only.iter().any(|s| s == "signaling") {
        let r = scenarios::signaling(target, o.peers, o.rooms, o.rate, o.seconds)?;
        rows.push((
            format!(
                "signaling: {} peers, {} rooms, {} req/s each",
                r.peers, r.rooms, o.rate
            ),
            String::new(),
        ));
        rows.push((
            "  join answer p50 / p99".into(),
            format!("{:.3} / {:.3} ms", r.join_p50_ms, r.join_p99_ms),
        ));
        rows.push((
            "  request answer p50 / p99".into(),
            format!("{:.3} / {:.3} ms", r.request_p50_ms, r.request_p99_ms),
        ));
        rows.push((
            "  messages delivered".into(),
            format!("{:.0} /s ({} requests)", r.messages_per_sec, r.requests),
        ));
        rows.push((
            "  signaling RSS idle / loaded".into(),
            format!("{} / {} KiB", r.rss_idle_kib, r.rss_kib),
        ));
        rows.push((
            "  signaling PSS idle".into(),
            format!("{} KiB", r.pss_idle_kib),
        ));
        rows.push((
            "  signaling RSS per peer".into(),
            format!("{:.1} KiB", r.rss_per_peer_kib),
        ));
        json.insert(
            "signaling".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
    }
    if o.only.iter().any(|s| s == "media") {
        let load = scenarios::MediaLoad {
            publishers: o.publishers,
            subscribers: o.subscribers,
            bps: o.bitrate_kbps * 1000,
            size: o.packet_size,
            fps: o.fps,
            simulcast: o.simulcast,
        };
        let r = scenarios::media(target, load, o.seconds)?;
        let pacing = match r.fps {
            0 => "evenly spaced".to_string(),
            fps => format!("{fps} frames/s"),
        };
        let title = if r.simulcast {
            format!(
                "media: {} simulcast publishers (150/500/1200 kbps layers, 50 frames/s) x {} subscribers",
                r.publishers, r.subscribers
            )
        } else {
            format!(
                "media: {} publishers x {} subscribers, {} kbps, {} B packets, {pacing}",
                r.publishers, r.subscribers, r.bitrate_kbps, r.packet_size
            )
        };
        rows.push((title, String::new()));
        rows.push((
            "  offered / forwarded / delivered".into(),
            format!(
                "{:.0} / {:.0} / {:.0} packets/s",
                r.offered_pps, r.forwarded_pps, r.delivered_pps
            ),
        ));
        rows.push(("  loss".into(), format!("{:.2} %", r.loss_percent)));
        rows.push((
            "  SFU CPU".into(),
            format!(
                "{:.1} % of a core, {:.2} s per million packets",
                r.sfu_cpu_percent, r.sfu_cpu_s_per_million
            ),
        ));
        rows.push((
            "  SFU RSS idle / first subscriber / loaded".into(),
            format!(
                "{} / {} / {} KiB",
                r.sfu_rss_idle_kib, r.sfu_rss_first_kib, r.sfu_rss_kib
            ),
        ));
        rows.push((
            "  SFU RSS per further subscription".into(),
            format!("{:.1} KiB", r.sfu_rss_per_subscriber_kib),
        ));
        json.insert(
            "media".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
    }
    if o.only.iter().any(|s| s == "first-frame") {
        let r = scenarios::first_frame(target, o.tries)?;
        rows.push((format!("first frame: {} tries", r.tries), String::new()));
        rows.push((
            "  subscribe answer -> first video packet p50 / max".into(),
            format!(
                "{:.1} / {:.1} ms",
                r.first_packet_p50_ms, r.first_packet_max_ms
            ),
        ));
        json.insert(
            "first_frame".into(),
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        );
    }
    Ok(())
}
