//! The node's own HTTP endpoints (`/healthz`, `/metrics`), read with a
//! plain HTTP/1.1 GET.

use crate::server::WAIT;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// A plain HTTP/1.1 GET: (status, body). None if the connection failed.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of the first `/metrics` series whose line starts with
/// `series` (a name, or a name and the start of its labels:
/// `wren_sfu_up{slot="1"`). None if the node did not answer or has no
/// such series.
pub fn metric(addr: SocketAddr, series: &str) -> Option<u64> {
    let (_, body) = http_get(addr, "/metrics")?;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',']))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// How many SFUs `/metrics` shows up (0 if the node does not answer).
pub fn sfus_up(addr: SocketAddr) -> usize {
    http_get(addr, "/metrics").map_or(0, |(_, body)| {
        body.lines()
            .filter(|l| l.starts_with("wren_sfu_up{") && l.ends_with(" 1"))
            .count()
    })
}
