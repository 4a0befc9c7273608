//! `GET /metrics`: the node's state in the Prometheus text format.

use super::node::{Link, Metrics};
use std::fmt::Write;
use std::time::Duration;

/// Renders a snapshot. Counters end in `_total`; SFUs are labelled by slot
/// (stable across restarts) and id. `redis_rtt` is the last heartbeat's
/// round trip, for a node in a cluster.
pub fn render(m: &Metrics, redis_rtt: Option<Duration>) -> String {
    let mut out = String::with_capacity(2048);
    let mut gauge = |name: &str, help: &str, value: usize| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge("wren_peers", "Connected peers.", m.peers);
    gauge("wren_rooms", "Rooms with at least one peer.", m.rooms);
    gauge("wren_streams", "Published streams.", m.streams);
    gauge("wren_subscriptions", "Subscriptions.", m.subscriptions);
    gauge(
        "wren_sfu_calls_pending",
        "SFU calls awaiting an answer.",
        m.pending_calls,
    );
    if let Some(c) = &m.cluster {
        gauge(
            "wren_cluster_up",
            "Whether the link to the cluster's Redis is up.",
            (c.link == Link::Up) as usize,
        );
        gauge(
            "wren_cluster_nodes",
            "Other signaling nodes of the cluster alive.",
            c.nodes,
        );
        gauge(
            "wren_cluster_remote_members",
            "Members of this node's rooms connected to other nodes.",
            c.remote_members,
        );
        gauge(
            "wren_cluster_remote_streams",
            "Streams of this node's rooms published on other nodes.",
            c.remote_streams,
        );
        gauge(
            "wren_cluster_relays",
            "Streams of other nodes this node's SFUs pull (relays).",
            c.relays,
        );
        gauge(
            "wren_cluster_placed_streams",
            "Streams of peers here placed on other nodes (this one was full).",
            c.placed_streams,
        );
        gauge(
            "wren_cluster_hosted_streams",
            "Streams of other nodes' peers placed on this node's SFUs.",
            c.hosted_streams,
        );
        gauge(
            "wren_cluster_served_subscriptions",
            "Subscriptions this node's SFUs serve for other nodes' relays.",
            c.served_subscriptions,
        );
        let rtt = redis_rtt.map_or(f64::NAN, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP wren_redis_rtt_seconds Round trip of the last heartbeat to Redis.\n\
             # TYPE wren_redis_rtt_seconds gauge\nwren_redis_rtt_seconds {rtt}"
        );
    }

    let families: [(&str, &str, &str); 6] = [
        ("wren_sfu_up", "gauge", "Whether the SFU is connected."),
        ("wren_sfu_streams", "gauge", "Streams placed on the SFU."),
        (
            "wren_sfu_subscriptions",
            "gauge",
            "Subscriptions on the SFU.",
        ),
        (
            "wren_sfu_sessions",
            "gauge",
            "WebRTC sessions the SFU reports.",
        ),
        (
            "wren_forwarded_packets_total",
            "counter",
            "RTP packets the SFU forwarded.",
        ),
        (
            "wren_forwarded_bytes_total",
            "counter",
            "RTP payload bytes the SFU forwarded.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &m.sfus {
            let id = s.id.as_ref().map(|i| i.as_str()).unwrap_or("");
            let value = match i {
                0 => s.id.is_some() as u64,
                1 => s.streams as u64,
                2 => s.subscriptions as u64,
                3 => u64::from(s.stats.publishers + s.stats.subscribers),
                4 => s.stats.forwarded_packets,
                _ => s.stats.forwarded_bytes,
            };
            let _ = writeln!(
                out,
                "{name}{{slot=\"{}\",sfuid=\"{id}\"}} {value}",
                s.slot.0 + 1
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP wren_errors_total Error responses, by errorCode (503: a bound was full).\n\
         # TYPE wren_errors_total counter"
    );
    for (code, n) in &m.errors {
        let _ = writeln!(out, "wren_errors_total{{code=\"{code}\"}} {n}");
    }
    out
}
