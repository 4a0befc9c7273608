//! How much crossed each client's link, each way, since the lab started:
//! what entered the link (offered) and what left it (delivered). Both in
//! IP bytes. Read from where each number is exact:
//!
//! - uplink offered: the router side's `c<n>` receive counters, before
//!   its ingress rate limit;
//! - uplink delivered: an nft counter in the router's postrouting hook,
//!   after the loss rule and the delay line;
//! - downlink offered: an nft counter in prerouting, before everything;
//! - downlink delivered: `c<n>`'s transmit counters, after the rate
//!   limit's queue (a packet it drops is never transmitted).
//!
//! The counters live in a table of their own (`wlab_count`) that a
//! reshape never replaces, so they count from the start. The interface
//! counters include the odd ARP packet (IPv6 is off in the lab).

use super::sys::run;
use serde_json::Value;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

/// One direction of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// IP bytes that left the link (reached the far side).
    pub bytes: u64,
    /// Packets that left the link.
    pub packets: u64,
    /// IP bytes that entered the link.
    pub offered_bytes: u64,
    /// Packets that entered the link. `offered_packets - packets` is what
    /// the link dropped (loss, a full queue) or still holds (delay).
    pub offered_packets: u64,
}

/// Both directions of a client's link, counted since the lab started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Client toward the router.
    pub up: DirStats,
    /// Router toward the client.
    pub down: DirStats,
}

impl LinkStats {
    /// The one-line JSON the CLI answers `stats` with (`client` is the
    /// 1-based number).
    pub fn to_json(&self, client: usize) -> String {
        let dir = |d: &DirStats| {
            serde_json::json!({
                "bytes": d.bytes,
                "packets": d.packets,
                "offered_bytes": d.offered_bytes,
                "offered_packets": d.offered_packets,
            })
        };
        serde_json::json!({ "client": client, "up": dir(&self.up), "down": dir(&self.down) })
            .to_string()
    }
}

/// The Ethernet header the interface counters include and IP bytes do
/// not.
const ETHERNET: u64 = 14;

/// The counting table for clients 1..=n, made once with the lab. The
/// `d*` exclusions count a packet that crosses the delay line once, on
/// its last hop.
pub(super) fn count_table(clients: &[Ipv4Addr]) -> String {
    let (mut pre, mut post) = (String::new(), String::new());
    for (k, ip) in clients.iter().enumerate() {
        let n = k + 1;
        let _ = writeln!(
            pre,
            "    ip daddr {ip} iifname != \"d*\" counter comment \"down-in-{n}\""
        );
        let _ = writeln!(
            post,
            "    ip saddr {ip} oifname != \"d*\" counter comment \"up-out-{n}\""
        );
    }
    format!(
        "table inet wlab_count {{\n  chain pre {{\n    type filter hook prerouting priority -300; \
         policy accept;\n{pre}  }}\n  chain post {{\n    type filter hook postrouting priority 300; \
         policy accept;\n{post}  }}\n}}\n"
    )
}

/// Reads client `n`'s counters in the router namespace `router`.
pub(super) fn read(ip: &Path, nft: &Path, router: &str, n: usize) -> io::Result<LinkStats> {
    let nft_json = run(
        ip,
        &[
            "netns",
            "exec",
            router,
            &nft.display().to_string(),
            "-j",
            "list",
            "table",
            "inet",
            "wlab_count",
        ],
        None,
    )?;
    let link_json = run(
        ip,
        &[
            "-n",
            router,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &format!("c{n}"),
        ],
        None,
    )?;
    let counter = |comment: String| nft_counter(&nft_json, &comment);
    let (down_in, up_out) = (
        counter(format!("down-in-{n}"))?,
        counter(format!("up-out-{n}"))?,
    );
    let (rx, tx) = (
        link_counter(&link_json, "rx")?,
        link_counter(&link_json, "tx")?,
    );
    Ok(LinkStats {
        up: DirStats {
            bytes: up_out.1,
            packets: up_out.0,
            offered_bytes: rx.1.saturating_sub(ETHERNET * rx.0),
            offered_packets: rx.0,
        },
        down: DirStats {
            bytes: tx.1.saturating_sub(ETHERNET * tx.0),
            packets: tx.0,
            offered_bytes: down_in.1,
            offered_packets: down_in.0,
        },
    })
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// (packets, bytes) of the rule carrying `comment` in `nft -j` output.
fn nft_counter(json: &str, comment: &str) -> io::Result<(u64, u64)> {
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(format!("nft -j: {e}")))?;
    let rule = doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .find(|r| r["comment"] == comment)
        .ok_or_else(|| bad(format!("no nft rule `{comment}`")))?;
    let counter = rule["expr"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| e.get("counter"))
        .ok_or_else(|| bad(format!("nft rule `{comment}` has no counter")))?;
    Ok((
        counter["packets"].as_u64().unwrap_or(0),
        counter["bytes"].as_u64().unwrap_or(0),
    ))
}

/// (packets, bytes) of `side` ("rx" or "tx") in `ip -s -j link` output.
fn link_counter(json: &str, side: &str) -> io::Result<(u64, u64)> {
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(format!("ip -j: {e}")))?;
    let stats = &doc[0]["stats64"][side];
    match (stats["packets"].as_u64(), stats["bytes"].as_u64()) {
        (Some(p), Some(b)) => Ok((p, b)),
        _ => Err(bad(format!("no {side} counters in `ip -s -j link`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nft_and_ip_json() {
        let nft = r#"{"nftables":[{"metainfo":{}},{"table":{"name":"wlab_count"}},
            {"rule":{"chain":"pre","comment":"down-in-2","expr":[{"match":{}},
            {"counter":{"packets":7,"bytes":700}}]}},
            {"rule":{"chain":"post","comment":"up-out-2","expr":[{"counter":{"packets":3,"bytes":90}}]}}]}"#;
        assert_eq!(nft_counter(nft, "down-in-2").unwrap(), (7, 700));
        assert_eq!(nft_counter(nft, "up-out-2").unwrap(), (3, 90));
        assert!(nft_counter(nft, "up-out-1").is_err());
        let ip = r#"[{"ifname":"c2","stats64":{"rx":{"bytes":1042,"packets":1},"tx":{"bytes":2084,"packets":2}}}]"#;
        assert_eq!(link_counter(ip, "rx").unwrap(), (1, 1042));
        assert_eq!(link_counter(ip, "tx").unwrap(), (2, 2084));
    }

    #[test]
    fn json_line_has_both_directions() {
        let stats = LinkStats {
            up: DirStats {
                bytes: 1,
                packets: 2,
                offered_bytes: 3,
                offered_packets: 4,
            },
            down: DirStats::default(),
        };
        let v: Value = serde_json::from_str(&stats.to_json(1)).unwrap();
        assert_eq!(v["client"], 1);
        assert_eq!(v["up"]["offered_packets"], 4);
        assert_eq!(v["down"]["bytes"], 0);
    }
}
