//! The emulated board's checks, run from the host by
//! `scripts/board-test.sh` once the board has booted (inside the network
//! namespace whose tap link reaches it; the board's commands go over ssh).
//!
//! It installs the release tarball as README's "Install on a Raspberry Pi"
//! says, then checks, each printed as it passes, what a user relies on:
//! the units run under systemd with their hardening, a call carries media,
//! the journal holds no error, the exposure scores, an SFU killed with
//! SIGKILL is restarted (its stream removed, new ones work), a second SFU
//! carries media, stopping the signaling node closes clients with 1001, an
//! upgrade keeps an edited config, and a reboot brings everything back. A
//! failed check panics with what it saw (exit status 101).
//!
//! Usage: wren-board --board IP --peer-ip IP --ssh-config FILE --tarball FILE

use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};
use wren_testkit::calls;
use wren_testkit::http::http_get;
use wren_testkit::peer::{run_all, run_until, Peer};
use wren_testkit::protoo::Client;
use wren_testkit::server::{wait_for_sfus, wait_until};

/// Generous for TCG: measured here, media flowed 0.2–0.3 s after the
/// answer and a reboot reached ssh in 13–35 s; a loaded CI machine may be
/// many times slower.
const MEDIA_WAIT: Duration = Duration::from_secs(90);
const UNIT_WAIT: Duration = Duration::from_secs(120);
const BOOT_WAIT: Duration = Duration::from_secs(600);

const SIGNAL: &str = "wren-signal.service";
const SFU1: &str = "wren-sfu@1.service";
const SFU2: &str = "wren-sfu@2.service";

fn main() {
    let args = Args::parse();
    let board = Board {
        ssh_config: args.ssh_config,
        http: SocketAddr::new(args.board, 8080),
        peer_ip: args.peer_ip,
    };
    let started = Instant::now();
    let mut memory = Vec::new();

    check("install.sh from the release tarball", || {
        install(&board, &args.tarball)
    });
    check("both units active, /healthz 200", || {
        wait_serving(&board, &[SFU1, SIGNAL])
    });
    std::thread::sleep(Duration::from_secs(3));
    memory.push(("idle", board.memory(SIGNAL), board.memory(SFU1)));

    let mut call = None;
    check(
        "a str0m peer publishes, another subscribes: audio and video arrive",
        || {
            let c = Call::start(&board, "board", "alice", "bob");
            let text = c.describe();
            call = Some(c);
            text
        },
    );
    let mut call = call.expect("the call is up");
    call.run(Duration::from_secs(2));
    memory.push(("in a call", board.memory(SIGNAL), board.memory(SFU1)));
    call.run(Duration::from_secs(1));

    // While the call's clients are fresh: a client that says nothing for
    // 30 s (liveness-timeout-secs) would be dropped from its room.
    check("the journal holds no error and no seccomp kill", || {
        journal_clean(&board)
    });
    check(
        "SIGKILL to the SFU: systemd restarts it, its stream is removed, calls work",
        || sfu_killed(&board, &mut call),
    );
    drop(call);
    check("systemd-analyze security", || exposure(&board));
    check("sfus = 2 and wren-sfu@2: media through both SFUs", || {
        two_sfus(&board)
    });
    check(
        "systemctl stop wren-signal closes clients with 1001",
        || stop(&board),
    );
    check(
        "install.sh again (an upgrade) keeps the edited wren.toml",
        || upgrade(&board, &args.tarball),
    );
    check(
        "reboot: every unit comes back by itself and carries a call",
        || reboot(&board),
    );

    let release = std::path::Path::new(&args.tarball)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches(".tar.gz");
    println!("\nboard memory under systemd ({release}; KiB, RSS / PSS):");
    println!("| state | wren-signal | wren-sfu@1 |");
    println!("| --- | --- | --- |");
    for (state, signal, sfu) in memory {
        println!(
            "| {state} | {} / {} | {} / {} |",
            signal.0, signal.1, sfu.0, sfu.1
        );
    }
    println!(
        "board: every check passed in {} s",
        started.elapsed().as_secs()
    );
}

/// Runs one check, printing its name, what it measured and its time.
fn check(name: &str, f: impl FnOnce() -> String) {
    println!("board: {name} ...");
    let t = Instant::now();
    let detail = f();
    println!(
        "board: ok: {name} ({:.1} s) {detail}",
        t.elapsed().as_secs_f64()
    );
}

struct Args {
    board: IpAddr,
    peer_ip: IpAddr,
    ssh_config: String,
    tarball: String,
}

impl Args {
    fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let (mut board, mut peer_ip, mut ssh_config, mut tarball) = (None, None, None, None);
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--board" => board = value.parse().ok(),
                "--peer-ip" => peer_ip = value.parse().ok(),
                "--ssh-config" => ssh_config = Some(value),
                "--tarball" => tarball = Some(value),
                _ => usage(&format!("unknown flag {flag}")),
            }
        }
        Args {
            board: board.unwrap_or_else(|| usage("--board IP")),
            peer_ip: peer_ip.unwrap_or_else(|| usage("--peer-ip IP")),
            ssh_config: ssh_config.unwrap_or_else(|| usage("--ssh-config FILE")),
            tarball: tarball.unwrap_or_else(|| usage("--tarball FILE")),
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("wren-board: {why}\nusage: wren-board --board IP --peer-ip IP --ssh-config FILE --tarball FILE");
    std::process::exit(2);
}

/// The board: commands over ssh (host alias `board` in the ssh config),
/// signaling at port 8080 of its address.
struct Board {
    ssh_config: String,
    http: SocketAddr,
    /// The host's address on the link to the board: the peers bind it.
    peer_ip: IpAddr,
}

impl Board {
    /// Runs `cmd` in the board's shell as root: its stdout, or why it failed.
    fn try_sh(&self, cmd: &str) -> Result<String, String> {
        let out = Command::new("ssh")
            .args(["-F", &self.ssh_config, "board", "--", cmd])
            .output()
            .map_err(|e| format!("ssh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`{cmd}` on the board: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Like `try_sh`; a failure fails the check.
    fn sh(&self, cmd: &str) -> String {
        self.try_sh(cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    fn main_pid(&self, unit: &str) -> u32 {
        let pid = self.sh(&format!("systemctl show -p MainPID --value {unit}"));
        pid.trim().parse().unwrap_or(0)
    }

    /// (RSS, PSS) in KiB of the unit's main process.
    fn memory(&self, unit: &str) -> (u64, u64) {
        let pid = self.main_pid(unit);
        let rollup = self.sh(&format!("cat /proc/{pid}/smaps_rollup"));
        let field = |name: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} of {unit} (pid {pid}): {rollup}"))
        };
        (field("Rss:"), field("Pss:"))
    }

    fn all_active(&self, units: &[&str]) -> bool {
        self.try_sh(&format!("systemctl is-active --quiet {}", units.join(" ")))
            .is_ok()
    }

    fn connect(&self, uid: &str) -> Client {
        Client::connect_at(self.http, uid, "", &[("Sec-WebSocket-Protocol", "protoo")])
            .unwrap_or_else(|e| panic!("{uid} connects to {}: {e}", self.http))
    }

    fn healthy(&self) -> bool {
        http_get(self.http, "/healthz").is_some_and(|(s, _)| s == 200)
    }
}

fn install(board: &Board, tarball: &str) -> String {
    let name = std::path::Path::new(tarball)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a tarball file name");
    let copied = Command::new("ssh")
        .args(["-F", &board.ssh_config, "board", "--"])
        .arg(format!("cat > /root/{name}"))
        .stdin(std::fs::File::open(tarball).expect("the release tarball"))
        .status()
        .expect("ssh");
    assert!(copied.success(), "copying {tarball} to the board");
    let out = board.sh(&format!(
        "cd /root && tar xzf {name} && cd {} && sudo ./install.sh",
        name.trim_end_matches(".tar.gz")
    ));
    print!("{out}");
    format!("({name})")
}

/// Waits until `units` are active and the node is healthy.
fn wait_serving(board: &Board, units: &[&str]) -> String {
    assert!(
        wait_until(UNIT_WAIT, || board.all_active(units)),
        "{units:?} active: {}",
        board
            .try_sh(&format!("systemctl status --no-pager {}", units.join(" ")))
            .unwrap_or_else(|e| e)
    );
    assert!(
        wait_until(UNIT_WAIT, || board.healthy()),
        "/healthz of {} answers 200",
        board.http
    );
    format!("{units:?}")
}

/// Two clients in a room: one publishes a str0m peer's audio and video, the
/// other subscribes; kept running for the checks that follow.
struct Call {
    publisher_client: Client,
    subscriber_client: Client,
    publisher: Peer,
    subscriber: Peer,
    mid: Value,
    sfuid: Value,
    rid: String,
    took: Duration,
}

impl Call {
    fn start(board: &Board, rid: &str, a: &str, b: &str) -> Call {
        let mut publisher_client = board.connect(a);
        let mut subscriber_client = board.connect(b);
        publisher_client.ok("join", json!({"rid": rid}));
        subscriber_client.ok("join", json!({"rid": rid}));
        let (publisher, answer) = publish(board, &mut publisher_client, rid);
        assert_eq!(
            subscriber_client.note_named("stream-add")["mid"],
            answer["mid"]
        );
        let mid = answer["mid"].clone();
        let subscriber = subscribe(&mut subscriber_client, rid, &mid, board);
        let mut call = Call {
            publisher_client,
            subscriber_client,
            publisher,
            subscriber,
            mid,
            sfuid: answer["sfuid"].clone(),
            rid: rid.to_string(),
            took: Duration::ZERO,
        };
        call.took = media_flows(&mut call.publisher, &mut call.subscriber);
        call
    }

    fn run(&mut self, d: Duration) {
        run_all(&mut [&mut self.publisher, &mut self.subscriber], d);
    }

    fn describe(&self) -> String {
        format!(
            "(mid {}, {}; media in {} ms; audio {} and video {} packets)",
            self.mid,
            self.sfuid,
            self.took.as_millis(),
            self.subscriber.received[0],
            self.subscriber.received[1]
        )
    }
}

fn publish(board: &Board, client: &mut Client, rid: &str) -> (Peer, Value) {
    calls::publish(client, rid, Peer::publisher_at(board.peer_ip))
}

fn subscribe(client: &mut Client, rid: &str, mid: &Value, board: &Board) -> Peer {
    calls::subscribe_with(client, rid, mid, Peer::subscriber_at(board.peer_ip))
}

/// Runs both peers until audio and video reach the subscriber (as
/// `tests/media.rs` asks, with the emulator's time); returns how long
/// that took.
fn media_flows(publisher: &mut Peer, subscriber: &mut Peer) -> Duration {
    let t = Instant::now();
    let flowing = run_until(&mut [publisher, &mut *subscriber], MEDIA_WAIT, |p| {
        p[1].received[0] > 10 && p[1].received[1] > 10
    });
    assert!(
        flowing,
        "media reaches the subscriber: {:?}",
        subscriber.received
    );
    assert_eq!(
        subscriber.first_video_key,
        Some(true),
        "the subscriber's video starts at a key frame"
    );
    t.elapsed()
}

fn journal_clean(board: &Board) -> String {
    let errors = board
        .sh("journalctl -b -q --no-pager -p err -u wren-signal.service -u 'wren-sfu@*.service'");
    assert!(errors.trim().is_empty(), "errors in the journal:\n{errors}");
    // A seccomp kill is SIGSYS (status 31) in the unit's exit, and an
    // audit record of type 1326 in the kernel's log.
    let kills = board.sh("journalctl -b -q --no-pager | grep -E 'status=31/SYS|type=1326' || true");
    assert!(kills.trim().is_empty(), "seccomp kills:\n{kills}");
    let lines = board
        .sh("journalctl -b -q --no-pager -u wren-signal.service -u 'wren-sfu@*.service' | wc -l");
    format!("({} lines from the wren units)", lines.trim())
}

fn exposure(board: &Board) -> String {
    let mut scores = Vec::new();
    for unit in [SIGNAL, SFU1] {
        let out = board.sh(&format!("systemd-analyze security --no-pager {unit}"));
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{out}"));
        // "→ Overall exposure level for wren-signal.service: 1.5 OK 🙂"
        let verdict = line.rsplit(": ").next().unwrap_or(line).trim().to_string();
        let score: f64 = verdict
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a score in {line:?}"));
        // What the shipped units score (1.5); worse means hardening was lost.
        assert!(score <= 2.0, "{unit} is exposed: {line}");
        println!("board:   {unit}: {verdict}");
        scores.push(format!("{unit} {score}"));
    }
    format!("({})", scores.join(", "))
}

fn sfu_killed(board: &Board, call: &mut Call) -> String {
    let before = board.main_pid(SFU1);
    board.sh(&format!("kill -9 {before}"));
    let removed = call.subscriber_client.note_named("stream-remove");
    assert_eq!(
        removed["mid"], call.mid,
        "the killed SFU's stream is removed"
    );
    assert!(
        wait_until(UNIT_WAIT, || {
            let pid = board.main_pid(SFU1);
            pid != 0 && pid != before && board.all_active(&[SFU1])
        }),
        "systemd restarts {SFU1}"
    );
    let after = board.main_pid(SFU1);
    assert!(
        wait_until(UNIT_WAIT, || board.healthy()),
        "the node reconnects"
    );
    let (mut publisher, answer) = publish(board, &mut call.publisher_client, &call.rid);
    assert_eq!(
        call.subscriber_client.note_named("stream-add")["mid"],
        answer["mid"]
    );
    let mut subscriber = subscribe(
        &mut call.subscriber_client,
        &call.rid,
        &answer["mid"],
        board,
    );
    let took = media_flows(&mut publisher, &mut subscriber);
    format!(
        "(pid {before} → {after}; a new publish's media in {} ms)",
        took.as_millis()
    )
}

fn two_sfus(board: &Board) -> String {
    board.sh("sed -i 's/^sfus = 1$/sfus = 2/' /etc/wren/wren.toml && grep -q '^sfus = 2$' /etc/wren/wren.toml");
    board.sh(&format!(
        "systemctl enable --now {SFU2} && systemctl restart {SIGNAL}"
    ));
    wait_serving(board, &[SFU1, SFU2, SIGNAL]);
    assert!(
        wait_for_sfus(board.http, 2, UNIT_WAIT),
        "the node connects to both SFUs"
    );
    let mut a = board.connect("alice");
    let mut c = board.connect("carol");
    let mut b = board.connect("bob");
    for client in [&mut a, &mut c, &mut b] {
        client.ok("join", json!({"rid": "two"}));
    }
    // Each publish goes to the least loaded SFU: the second to the other one.
    let (mut pa, answer_a) = publish(board, &mut a, "two");
    let (mut pc, answer_c) = publish(board, &mut c, "two");
    assert_ne!(
        answer_a["sfuid"], answer_c["sfuid"],
        "two publishes, two SFUs"
    );
    let mut sa = subscribe(&mut b, "two", &answer_a["mid"], board);
    let mut sc = subscribe(&mut b, "two", &answer_c["mid"], board);
    let flowing = run_until(&mut [&mut pa, &mut pc, &mut sa, &mut sc], MEDIA_WAIT, |p| {
        p[2].received.iter().all(|&n| n > 10) && p[3].received.iter().all(|&n| n > 10)
    });
    assert!(
        flowing,
        "media through both SFUs: {:?} and {:?}",
        sa.received, sc.received
    );
    format!("({} and {})", answer_a["sfuid"], answer_c["sfuid"])
}

fn stop(board: &Board) -> String {
    let mut dave = board.connect("dave");
    dave.ok("join", json!({"rid": "stop"}));
    board.sh(&format!("systemctl stop {SIGNAL}"));
    let close = dave.wait_close_frame();
    assert_eq!(
        close.as_ref().map(|c| c.0),
        Some(1001),
        "close frame: {close:?}"
    );
    let result = board.sh(&format!(
        "systemctl show -p Result -p ExecMainStatus {SIGNAL}"
    ));
    assert!(
        result.contains("Result=success") && result.contains("ExecMainStatus=0"),
        "a clean stop: {result}"
    );
    board.sh(&format!("systemctl start {SIGNAL}"));
    wait_serving(board, &[SIGNAL]);
    format!(
        "(close {close:?}; {})",
        result.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn upgrade(board: &Board, tarball: &str) -> String {
    board.sh("echo '# edited on the board' >> /etc/wren/wren.toml");
    let before: Vec<u32> = [SIGNAL, SFU1, SFU2]
        .iter()
        .map(|u| board.main_pid(u))
        .collect();
    install(board, tarball);
    let config = board.sh("cat /etc/wren/wren.toml");
    assert!(
        config.contains("\nsfus = 2\n") && config.contains("# edited on the board"),
        "the edited config is kept:\n{config}"
    );
    wait_serving(board, &[SFU1, SFU2, SIGNAL]);
    let after: Vec<u32> = [SIGNAL, SFU1, SFU2]
        .iter()
        .map(|u| board.main_pid(u))
        .collect();
    for (i, unit) in [SIGNAL, SFU1, SFU2].iter().enumerate() {
        assert_ne!(before[i], after[i], "{unit} runs the new binary: restarted");
    }
    let call = Call::start(board, "upgraded", "alice", "bob");
    format!("(pids {before:?} → {after:?}; {})", call.describe())
}

fn reboot(board: &Board) -> String {
    let t = Instant::now();
    // The connection may drop before ssh hears back.
    let _ = board.try_sh("systemctl reboot");
    assert!(
        wait_until(BOOT_WAIT, || board.try_sh("true").is_err()),
        "the board goes down"
    );
    assert!(
        wait_until(BOOT_WAIT, || board.try_sh("true").is_ok()),
        "the board comes back"
    );
    let up = t.elapsed();
    wait_serving(board, &[SFU1, SFU2, SIGNAL]);
    assert!(
        wait_for_sfus(board.http, 2, UNIT_WAIT),
        "both SFUs are back"
    );
    let call = Call::start(board, "rebooted", "alice", "bob");
    format!("(ssh back after {} s; {})", up.as_secs(), call.describe())
}
