//! The network lab itself, proven with real UDP sockets bound in its
//! namespaces: each shaping knob does what it says, within the
//! tolerances docs/lab.md measured, and nothing is left behind. These
//! tests need root, /dev/net/tun, `ip`, `tc` and `nft`; without them
//! they fail saying what is missing (CI installs the tools, it never
//! skips).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};
use wren_testkit::netlab::{ClientSpec, Host, Lab, LinkShape};
use wren_testkit::qemu_for;

/// IPv4 + UDP + Ethernet headers: tbf limits frames, the tests send
/// payloads.
const FRAME_OVERHEAD: usize = 42;

fn lab(specs: &[ClientSpec]) -> Lab {
    Lab::new(specs).unwrap_or_else(|e| panic!("{e}"))
}

/// A UDP socket bound in `host`'s namespace, on its lab address, with a
/// 4 MB receive buffer: a receiving thread that a busy machine (or QEMU)
/// leaves unscheduled for a while must not lose packets the link
/// delivered, or the tests would blame the lab for them.
fn socket(lab: &Lab, host: &Host) -> UdpSocket {
    let sock = lab
        .enter(&host.ns, || UdpSocket::bind((host.ip, 0)))
        .expect("enter the namespace")
        .expect("bind in the namespace");
    // FORCE: root may exceed net.core.rmem_max.
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 4 << 20)
        .expect("SO_RCVBUFFORCE");
    sock
}

/// Sends `count` packets of `size` bytes (`tag`, then a 4-byte sequence
/// number) at `pps` packets a second, each at its own deadline from the
/// start, so a late wake-up does not lower the rate. Returns the start.
fn send_paced(sock: &UdpSocket, to: SocketAddr, tag: u8, size: usize, pps: f64, count: u32) {
    let start = Instant::now();
    let mut packet = vec![0u8; size];
    packet[0] = tag;
    for seq in 0..count {
        let due = start + Duration::from_secs_f64(f64::from(seq) / pps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        packet[1..5].copy_from_slice(&seq.to_be_bytes());
        sock.send_to(&packet, to).expect("send");
    }
}

/// One packet received: when, its sequence number, its payload size.
struct Arrival {
    at: Instant,
    seq: u32,
    len: usize,
}

/// Receives packets tagged `tag` until `done` is set and nothing came for
/// half a second (a rate limiter's queue and the delay line empty in less),
/// or 30 s pass.
fn receive(sock: &UdpSocket, tag: u8, done: &AtomicBool) -> Vec<Arrival> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 2048]);
    let (limit, mut last) = (Instant::now() + Duration::from_secs(30), Instant::now());
    while Instant::now() < limit {
        match sock.recv(&mut buf) {
            Ok(n) if n >= 5 && buf[0] == tag => {
                last = Instant::now();
                let seq = u32::from_be_bytes(buf[1..5].try_into().unwrap());
                got.push(Arrival {
                    at: last,
                    seq,
                    len: n,
                });
            }
            Ok(_) => {}
            Err(_)
                if done.load(Ordering::Relaxed) && last.elapsed() > Duration::from_millis(500) =>
            {
                break
            }
            Err(_) => {}
        }
    }
    got
}

/// Sends a paced stream from `from` to `to` while `to` receives; returns
/// the send's start and what arrived.
fn stream(
    from: &UdpSocket,
    to: &UdpSocket,
    tag: u8,
    size: usize,
    pps: f64,
    count: u32,
) -> (Instant, Vec<Arrival>) {
    let done = AtomicBool::new(false);
    let dest = to.local_addr().unwrap();
    std::thread::scope(|s| {
        let rx = s.spawn(|| receive(to, tag, &done));
        let start = Instant::now();
        send_paced(from, dest, tag, size, pps, count);
        done.store(true, Ordering::Relaxed);
        (start, rx.join().expect("receiver"))
    })
}

/// The received rate in kbit/s of Ethernet frames over `[from, to)`
/// after `start`.
fn rate_kbit(got: &[Arrival], start: Instant, from: f64, to: f64) -> f64 {
    let (a, b) = (
        start + Duration::from_secs_f64(from),
        start + Duration::from_secs_f64(to),
    );
    let bytes: usize = got
        .iter()
        .filter(|p| p.at >= a && p.at < b)
        .map(|p| p.len + FRAME_OVERHEAD)
        .sum();
    bytes as f64 * 8.0 / (to - from) / 1000.0
}

/// Packets per second that make `kbit` kbit/s of frames of `size`-byte
/// payloads.
fn pps(kbit: f64, size: usize) -> f64 {
    kbit * 1000.0 / 8.0 / (size + FRAME_OVERHEAD) as f64
}

#[test]
fn a_rate_limit_holds_each_way_while_an_unshaped_client_gets_far_more() {
    let lab = lab(&[
        ClientSpec::both(LinkShape::rate(400)),
        ClientSpec::default(),
    ]);
    let [server, server2, server3] = [(); 3].map(|_| socket(&lab, lab.server()));
    let (limited, limited2) = (socket(&lab, lab.client(0)), socket(&lab, lab.client(0)));
    let free = socket(&lab, lab.client(1));
    // At the same time, for 4 s: 1000 kbit/s offered to each direction
    // of the 400 kbit/s link, 8000 to the unshaped one's downlink.
    let (down, up, unshaped) = std::thread::scope(|s| {
        let down = s.spawn(|| stream(&server, &limited, 1, 1000, pps(1000.0, 1000), 480));
        let up = s.spawn(|| stream(&limited2, &server2, 2, 1000, pps(1000.0, 1000), 480));
        let free = s.spawn(|| stream(&server3, &free, 3, 1000, pps(8000.0, 1000), 3840));
        (
            down.join().unwrap(),
            up.join().unwrap(),
            free.join().unwrap(),
        )
    });
    // From 1 s on: tbf lets its burst through at line rate first.
    let down_rate = rate_kbit(&down.1, down.0, 1.0, 4.0);
    let up_rate = rate_kbit(&up.1, up.0, 1.0, 4.0);
    let free_rate = rate_kbit(&unshaped.1, unshaped.0, 1.0, 4.0);
    let stats = lab.stats(0).unwrap();
    println!(
        "400 kbit/s link, 1000 offered: downlink {down_rate:.0} kbit/s steady ({} of 480 \
         packets; link counters {} of {} offered), uplink {up_rate:.0} kbit/s ({} of 480; \
         {} of {}); unshaped downlink, 8000 offered: {free_rate:.0} kbit/s ({} of 3840)",
        down.1.len(),
        stats.down.packets,
        stats.down.offered_packets,
        up.1.len(),
        stats.up.packets,
        stats.up.offered_packets,
        unshaped.1.len()
    );
    for (dir, rate) in [("downlink", down_rate), ("uplink", up_rate)] {
        assert!(
            (360.0..=440.0).contains(&rate),
            "{dir}: {rate:.0} kbit/s is not 400 ± 10 %"
        );
    }
    assert!(
        free_rate > 4.0 * 400.0,
        "the unshaped client got only {free_rate:.0} kbit/s"
    );
    // The link's own counters agree with the sockets: every packet sent
    // entered it, what left it is what arrived (give or take ARP, which
    // the interface counters see).
    assert_eq!(stats.down.offered_packets, 480);
    let extra = stats.down.packets - down.1.len() as u64;
    assert!(
        extra <= 4,
        "{} left, {} arrived",
        stats.down.packets,
        down.1.len()
    );
    assert_eq!(stats.up.packets, up.1.len() as u64);
    assert!((480..=484).contains(&stats.up.offered_packets));
}

#[test]
fn five_percent_loss_drops_about_five_percent_each_way() {
    let lab = lab(&[ClientSpec::both(LinkShape::loss(5.0))]);
    let (server, client) = (socket(&lab, lab.server()), socket(&lab, lab.client(0)));
    let (server2, client2) = (socket(&lab, lab.server()), socket(&lab, lab.client(0)));
    const N: u32 = 3000;
    let (down, up) = std::thread::scope(|s| {
        let down = s.spawn(|| stream(&server, &client, 3, 200, 1000.0, N).1);
        let up = s.spawn(|| stream(&client2, &server2, 4, 200, 1000.0, N).1);
        (down.join().unwrap(), up.join().unwrap())
    });
    let lost = |got: &[Arrival]| 100.0 * (1.0 - got.len() as f64 / f64::from(N));
    let (down_lost, up_lost) = (lost(&down), lost(&up));
    let stats = lab.stats(0).unwrap();
    println!(
        "5 % loss over {N} packets: downlink lost {down_lost:.2} %, uplink {up_lost:.2} % \
         (link counters: down {}/{}, up {}/{})",
        stats.down.packets, stats.down.offered_packets, stats.up.packets, stats.up.offered_packets
    );
    for (dir, lost) in [("downlink", down_lost), ("uplink", up_lost)] {
        assert!((3.0..=7.0).contains(&lost), "{dir} lost {lost:.2} %");
    }
    // Exactly once each way: what the link let out is what arrived.
    assert_eq!(stats.up.packets, up.len() as u64);
    assert_eq!(stats.down.offered_packets, u64::from(N));
}

/// Echoes every datagram back to its sender until `stop` is set.
fn echo(sock: &UdpSocket, stop: &AtomicBool) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// `count` probes at `pps` to the echo server at `to`; returns each
/// answer's (sequence number, round trip) in the order they came back.
fn probe(sock: &UdpSocket, to: SocketAddr, count: u32, pps: f64) -> Vec<(u32, Duration)> {
    let start = Instant::now();
    let sent_at = |seq: u32| start + Duration::from_secs_f64(f64::from(seq) / pps);
    let done = AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| receive(sock, 9, &done));
        send_paced(sock, to, 9, 64, pps, count);
        done.store(true, Ordering::Relaxed);
        rx.join().unwrap()
    });
    // Round trips from the scheduled send times: send_paced keeps them
    // (a late send would only make a round trip look shorter).
    got.iter()
        .map(|a| (a.seq, a.at.duration_since(sent_at(a.seq))))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn delay_and_jitter_set_the_round_trip_and_keep_order() {
    let jittery = ClientSpec::both(LinkShape::delay(75, 15));
    let mut unordered = jittery;
    unordered.up.keep_order = false;
    unordered.down.keep_order = false;
    let lab = lab(&[jittery, unordered]);
    let server = socket(&lab, lab.server());
    let to = server.local_addr().unwrap();
    let (ordered_sock, unordered_sock) = (socket(&lab, lab.client(0)), socket(&lab, lab.client(1)));
    let stop = AtomicBool::new(false);
    let (ordered, free) = std::thread::scope(|s| {
        s.spawn(|| echo(&server, &stop));
        // 50 probes a second: 20 ms apart, closer than the jitter's
        // 30 ms range, so packets would overtake each other.
        let a = s.spawn(|| probe(&ordered_sock, to, 200, 50.0));
        let b = s.spawn(|| probe(&unordered_sock, to, 200, 50.0));
        let got = (a.join().unwrap(), b.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        got
    });
    let overtaken = |got: &[(u32, Duration)]| got.windows(2).filter(|w| w[1].0 < w[0].0).count();
    for (name, got) in [("in order", &ordered), ("unordered", &free)] {
        let rtts: Vec<f64> = got.iter().map(|(_, d)| ms(*d)).collect();
        let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
        let (min, max) = rtts
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "75 ± 15 ms each way, {name}: {} of 200 answered, RTT min/mean/max \
             {min:.1}/{mean:.1}/{max:.1} ms, {} overtaken",
            got.len(),
            overtaken(got)
        );
        assert_eq!(got.len(), 200, "{name}: the delay line lost packets");
        assert!(
            (135.0..=165.0).contains(&mean),
            "{name}: mean RTT {mean:.1} ms"
        );
        // The line never releases a packet early: 60 ms each way at least.
        assert!(min >= 120.0, "{name}: an RTT of {min:.1} ms");
    }
    assert_eq!(overtaken(&ordered), 0, "keep_order let packets overtake");
    // The check has teeth: the same jitter without keep_order reorders
    // (about 1 probe in 9 here).
    assert!(overtaken(&free) > 0, "per-packet jitter reordered nothing");
    assert_eq!(lab.delay_drops(), 0);
}

/// The router's policy rules that send client 1 through its TUN.
fn delay_rules(lab: &Lab) -> usize {
    let out = Command::new("ip")
        .args(["-n", lab.router_ns(), "rule", "show"])
        .output()
        .expect("ip rule");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("lookup 1001") || l.contains("iif d1"))
        .count()
}

/// Packets the router has sent into client 1's TUN (the delay line).
fn into_tun(lab: &Lab) -> u64 {
    let out = Command::new("ip")
        .args([
            "-n",
            lab.router_ns(),
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            "d1",
        ])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("TUN counters")
}

#[test]
fn reshape_lifts_a_limit_and_adds_and_removes_delay_live() {
    let lab = lab(&[ClientSpec::down(LinkShape::rate(400))]);
    let server = socket(&lab, lab.server());
    let client = socket(&lab, lab.client(0));
    let offered = pps(1500.0, 1000);
    // 3 s each time.
    let (start, before) = stream(&server, &client, 5, 1000, offered, 540);
    let limited = rate_kbit(&before, start, 1.0, 3.0);

    // The same lab, the same sockets: the limit lifted.
    lab.reshape(0, &ClientSpec::default()).unwrap();
    assert_eq!(lab.spec(0), ClientSpec::default());
    let (start, after) = stream(&server, &client, 6, 1000, offered, 540);
    let lifted = rate_kbit(&after, start, 0.5, 3.0);
    println!("reshape: {limited:.0} kbit/s limited, {lifted:.0} kbit/s lifted (1500 offered)");
    assert!(
        (360.0..=440.0).contains(&limited),
        "{limited:.0} kbit/s limited"
    );
    assert!(
        lifted > 1200.0,
        "{lifted:.0} kbit/s after the limit was lifted"
    );
    assert_eq!(after.len(), 540, "an unshaped link lost packets");

    // Delay added and removed live; unshaped, no packet goes near the TUN.
    assert_eq!(delay_rules(&lab), 0);
    let stop = AtomicBool::new(false);
    let to = server.local_addr().unwrap();
    let (delayed, undelayed) = std::thread::scope(|s| {
        s.spawn(|| echo(&server, &stop));
        lab.reshape(0, &ClientSpec::down(LinkShape::delay(50, 0)))
            .unwrap();
        let (rules, before) = (delay_rules(&lab), into_tun(&lab));
        let delayed = probe(&client, to, 20, 20.0);
        let through = into_tun(&lab) - before;
        lab.reshape(0, &ClientSpec::default()).unwrap();
        let (rules2, before) = (delay_rules(&lab), into_tun(&lab));
        let undelayed = probe(&client, to, 20, 20.0);
        let through2 = into_tun(&lab) - before;
        stop.store(true, Ordering::Relaxed);
        ((rules, through, delayed), (rules2, through2, undelayed))
    });
    let mean =
        |got: &[(u32, Duration)]| got.iter().map(|(_, d)| ms(*d)).sum::<f64>() / got.len() as f64;
    println!(
        "reshape: RTT {:.1} ms with 50 ms downlink delay ({} packets through the TUN), \
         {:.1} ms without ({} through it)",
        mean(&delayed.2),
        delayed.1,
        mean(&undelayed.2),
        undelayed.1
    );
    assert_eq!(delayed.0, 3, "three policy rules while the link delays");
    // Both directions cross the line (the uplink with no delay).
    assert!(delayed.1 >= 40, "{} packets crossed the TUN", delayed.1);
    assert!(delayed.2.iter().all(|(_, d)| ms(*d) >= 50.0));
    assert_eq!(delayed.2.len(), 20);
    assert_eq!(undelayed.0, 0, "the rules are gone once the delay is");
    assert_eq!(undelayed.1, 0, "packets still went through the TUN");
    assert_eq!(undelayed.2.len(), 20);
}

/// Namespaces listed by `ip netns list` that start with `prefix`.
fn listed(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Waits up to 10 s for `child` to exit.
fn exited(child: &mut Child) -> Option<std::process::ExitStatus> {
    let limit = Instant::now() + Duration::from_secs(10);
    while Instant::now() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn drop_kills_what_runs_inside_and_deletes_every_namespace() {
    // A namespace as a lab of a dead process would leave it: pids are
    // below pid_max, so this one never ran.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let stale = format!("wl-{}-dead00-rt", pid_max.trim());
    assert!(Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap()
        .success());

    let lab = lab(&[
        ClientSpec::both(LinkShape::delay(10, 0)),
        ClientSpec::default(),
    ]);
    assert!(
        listed(&stale).is_empty(),
        "the stale namespace was not swept"
    );
    let prefix = format!("{}-", lab.prefix());
    let mut names = listed(&prefix);
    names.sort();
    let mut expected = vec![
        format!("{prefix}c1"),
        format!("{prefix}c2"),
        format!("{prefix}rt"),
        format!("{prefix}srv"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(lab.namespaces(), expected);

    let mut sleeper = lab
        .command(&lab.client(0).ns, "sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let mut server = lab
        .command(&lab.server().ns, "sleep")
        .arg("600")
        .spawn()
        .unwrap();
    // The delay line is in use when the lab goes.
    let sock = socket(&lab, lab.client(0));
    sock.send_to(b"x", (lab.server().ip, 9)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(lab);

    assert_eq!(
        listed(&prefix),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    for child in [&mut sleeper, &mut server] {
        let status = exited(child).expect("a process in the lab outlived it");
        assert!(!status.success(), "killed, not finished: {status}");
    }
}

/// The wren-netlab that cargo built beside this test, through QEMU when
/// it is built for another machine (no binfmt here: server.rs).
fn netlab_cli() -> Command {
    let bin = env!("CARGO_BIN_EXE_wren-netlab");
    // Native, it prints its usage; foreign, it fails to start, or exits
    // 127 without a word when this test itself runs under QEMU.
    let native = Command::new(bin)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("usage: wren-netlab"));
    if native {
        return Command::new(bin);
    }
    let qemu = qemu_for(bin);
    let mut cmd = Command::new(&qemu[0]);
    cmd.args(&qemu[1..]).arg(bin);
    cmd
}

#[test]
fn the_cli_serves_the_contract() {
    let mut cli = netlab_cli()
        .args(["up", "--clients", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wren-netlab starts");
    let mut stdin = cli.stdin.take().unwrap();
    let (lines_tx, lines) = channel();
    let stdout = BufReader::new(cli.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("wren-netlab answers")
    };
    let up: serde_json::Value = serde_json::from_str(&next()).expect("one line of JSON");
    let prefix = up["prefix"].as_str().unwrap().to_string();
    assert!(prefix.starts_with("wl-"));
    assert_eq!(up["server"]["ip"], "10.77.0.2");
    assert_eq!(up["server"]["ns"], format!("{prefix}-srv"));
    assert_eq!(up["clients"][1]["ns"], format!("{prefix}-c2"));
    assert_eq!(up["clients"][1]["ip"], "10.77.2.2");
    assert_eq!(up["clients"].as_array().unwrap().len(), 2);
    assert_eq!(listed(&format!("{prefix}-")).len(), 4);

    let mut ask = |line: &str| {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        next()
    };
    // Client 1 sends 20 datagrams toward the server, through its uplink.
    let c1 = up["clients"][0]["ns"].as_str().unwrap().to_string();
    let send20 = || {
        wren_testkit::netlab::enter(&c1, || {
            let sock = UdpSocket::bind((Ipv4Addr::new(10, 77, 1, 2), 0)).unwrap();
            for _ in 0..20 {
                sock.send_to(&[0u8; 100], (Ipv4Addr::new(10, 77, 0, 2), 9))
                    .unwrap();
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    };
    let up_stats = |line: String| {
        let v: serde_json::Value = serde_json::from_str(&line).expect("stats JSON");
        assert_eq!(v["client"], 1);
        (
            v["up"]["packets"].as_u64().unwrap(),
            v["up"]["offered_packets"].as_u64().unwrap(),
        )
    };
    send20();
    let (passed, offered) = up_stats(ask("stats 1"));
    assert!(passed >= 20 && offered >= 20, "{passed}/{offered}");
    // 100 % loss on the uplink: 20 more enter, none leaves.
    assert_eq!(ask("shape 1 up loss=100 rate=300 delay=20 jitter=5"), "ok");
    send20();
    let (passed2, offered2) = up_stats(ask("stats 1"));
    assert_eq!(passed2, passed, "the lossy uplink let packets through");
    assert!(offered2 >= offered + 20);
    // `shape 1 up` alone lifts it all again.
    assert_eq!(ask("shape 1 up"), "ok");
    send20();
    let (passed3, _) = up_stats(ask("stats 1"));
    assert!(
        passed3 >= passed + 20,
        "{passed3} after lifting, {passed} before"
    );
    assert_eq!(
        ask("shape 2 down rate=400 loss=5 delay=75 jitter=15 queue=50 burst=5000"),
        "ok"
    );
    for bad in [
        "shape 3 up",
        "shape 1 sideways",
        "shape 1 down rate=fast",
        "stats",
        "launch",
    ] {
        let reply = ask(bad);
        assert!(reply.starts_with("error: "), "`{bad}` answered `{reply}`");
    }

    // End of input: everything goes, exit 0.
    drop(stdin);
    let status = exited(&mut cli).expect("wren-netlab exits on end of input");
    assert!(status.success(), "{status}");
    assert_eq!(listed(&format!("{prefix}-")), Vec::<String>::new());
}

#[test]
fn the_cli_tears_down_on_sigterm() {
    let mut cli = netlab_cli()
        .args(["up", "--clients", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wren-netlab starts");
    let mut line = String::new();
    BufReader::new(cli.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let up: serde_json::Value = serde_json::from_str(&line).expect("one line of JSON");
    let prefix = format!("{}-", up["prefix"].as_str().unwrap());
    assert_eq!(listed(&prefix).len(), 3);
    let term = Command::new("kill")
        .args(["-TERM", &cli.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = exited(&mut cli).expect("wren-netlab exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(listed(&prefix), Vec::<String>::new());
}
