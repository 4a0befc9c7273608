//! The load tool runs a small scenario end to end, and its numbers are
//! sane (packets really forwarded), not fast: speed is measured natively
//! with the README's command, never asserted here.

use serde_json::Value;
use std::process::Command;
use wren_testkit::{runner, socket_path, wren_bin};

/// Runs wren-bench (under QEMU when the tests are) with `args` against
/// the wren under test; its numbers, as it wrote them.
fn run_bench(name: &str, args: &[&str]) -> Value {
    let json = socket_path(name).with_extension("json");
    let mut cmd = match runner() {
        [] => Command::new(env!("CARGO_BIN_EXE_wren-bench")),
        [qemu, rest @ ..] => {
            let mut c = Command::new(qemu);
            c.args(rest).arg(env!("CARGO_BIN_EXE_wren-bench"));
            c.args(["--wrapper", &runner().join(" ")]);
            c
        }
    };
    if !runner().is_empty() {
        // Emulated, an SFU answers an offer many times slower than
        // natively: give its answers as long as wren-bench's own waits.
        let config = json.with_extension("toml");
        std::fs::write(&config, "[limits]\nsfu-call-timeout-ms = 50000\n").unwrap();
        cmd.arg("--config").arg(config);
    }
    let out = cmd
        .args(["--wren", &wren_bin()])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("wren-bench runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{table}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn the_load_tool_measures_a_small_scenario() {
    let r = run_bench(
        "bench",
        &[
            "--sfus",
            "2",
            "--peers",
            "20",
            "--rooms",
            "4",
            "--rate",
            "5",
            "--seconds",
            "2",
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--bitrate",
            "300",
            "--packet-size",
            "800",
            "--tries",
            "2",
        ],
    );

    let s = &r["signaling"];
    assert_eq!(s["peers"], 20);
    assert!(s["requests"].as_u64().unwrap() >= 20, "{s}");
    assert!(s["join_p99_ms"].as_f64().unwrap() > 0.0);
    assert!(s["request_p50_ms"].as_f64().unwrap() <= s["request_p99_ms"].as_f64().unwrap());
    assert!(s["messages_per_sec"].as_f64().unwrap() > 0.0);
    // Memory is read from /proc of the real processes: present, and PSS
    // (shared pages split) never above RSS.
    let (rss, pss) = (
        s["rss_idle_kib"].as_u64().unwrap(),
        s["pss_idle_kib"].as_u64().unwrap(),
    );
    assert!(pss > 0 && pss <= rss, "{s}");
    assert!(s["rss_kib"].as_u64().unwrap() > 0, "{s}");

    let m = &r["media"];
    let offered = m["offered_pps"].as_f64().unwrap();
    let forwarded = m["forwarded_pps"].as_f64().unwrap();
    let delivered = m["delivered_pps"].as_f64().unwrap();
    assert!(offered > 0.0 && forwarded > 0.0 && delivered > 0.0, "{m}");
    // Roughly what was offered arrived (loopback loses almost nothing).
    assert!(delivered > offered * 0.5, "{m}");
    assert!(
        forwarded > offered * 0.5 && forwarded < offered * 1.5,
        "{m}"
    );
    assert!(m["sfu_cpu_s_per_million"].as_f64().unwrap() > 0.0);
    // Sessions with media cost the SFUs memory.
    let idle = m["sfu_rss_idle_kib"].as_u64().unwrap();
    assert!(m["sfu_rss_first_kib"].as_u64().unwrap() > idle, "{m}");
    assert!(m["sfu_rss_kib"].as_u64().unwrap() > idle, "{m}");

    let f = &r["first_frame"];
    assert_eq!(f["tries"], 2);
    assert!(f["first_packet_p50_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_load_tool_measures_a_small_cluster() {
    let r = run_bench(
        "bench-cluster",
        &[
            "--only",
            "cluster",
            "--cluster-peers",
            "9",
            "--cluster-rooms",
            "2",
            "--subscribers",
            "2",
            "--bitrate",
            "300",
            "--seconds",
            "2",
        ],
    );
    let c = &r["cluster"];
    assert_eq!(
        (c["nodes"].as_u64(), c["peers"].as_u64()),
        (Some(3), Some(9))
    );
    let f = |k: &str| c[k].as_f64().unwrap();
    assert!(
        f("join_p50_ms") > 0.0 && f("join_p50_ms") <= f("join_p99_ms"),
        "{c}"
    );
    assert!(
        f("fanout_p50_ms") > 0.0 && f("fanout_p50_ms") <= f("fanout_p99_ms"),
        "{c}"
    );
    // A join is one script call and what it runs: never none.
    assert!(f("redis_commands_per_join") >= 1.0, "{c}");
    assert!(f("sent_pps") > 0.0, "{c}");
    // The publisher's board sends a copy per local subscriber, and one
    // (the relay's) for all of another board's.
    let (local, relayed) = (
        f("publisher_board_copies_local"),
        f("publisher_board_copies_relayed"),
    );
    assert!((1.5..2.5).contains(&local), "{c}");
    assert!((0.5..1.5).contains(&relayed), "{c}");
    assert!(
        f("local_us_per_packet") > 0.0 && f("relayed_us_per_packet") > 0.0,
        "{c}"
    );
}
