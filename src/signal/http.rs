//! The signaling node's HTTP front door: the embedded web client, and the
//! WebSocket upgrade at `/ws?peer=UID`. Just enough HTTP/1.1 for that; the
//! request head is bounded and read with a deadline.

use crate::ids::PeerId;
use crate::limits::MAX_HTTP_HEAD_BYTES;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;

/// The web client, compiled into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header lists `token`.
    fn header_has(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| percent_decode(v))
        })
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are
/// (the uid check rejects them afterwards).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a request head. Returns it and any bytes read past its end (a
/// client may send its first WebSocket frame right behind the upgrade).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scan_from + p + 4;
        }
        if buf.len() > MAX_HTTP_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    };
    let rest = buf.split_off(end);
    let text = std::str::from_utf8(&buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request head is not UTF-8"))?;
    parse_head(text)
        .map(|h| (h, rest))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed request head"))
}

fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    if !request_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

/// What to do with a request.
#[derive(Debug)]
pub enum Route {
    /// Upgrade to a WebSocket for this peer.
    WebSocket {
        uid: PeerId,
        key: String,
        protoo: bool,
    },
    /// Answer with a plain HTTP response and close.
    Respond(Response),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: std::borrow::Cow<'static, str>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<std::borrow::Cow<'static, str>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Routes a request head.
pub fn route(head: &Head) -> Route {
    if head.path == "/ws" {
        return route_websocket(head).unwrap_or_else(Route::Respond);
    }
    if head.method != "GET" && head.method != "HEAD" {
        return Route::Respond(Response::text(405, "method not allowed\n"));
    }
    match ASSETS.iter().find(|(p, _, _)| *p == head.path) {
        Some((_, ct, body)) => Route::Respond(Response {
            status: 200,
            content_type: ct,
            body: (*body).into(),
        }),
        None => Route::Respond(Response::text(404, "not found\n")),
    }
}

fn route_websocket(head: &Head) -> Result<Route, Response> {
    let bad = |why: &'static str| Response::text(400, why);
    if head.method != "GET" {
        return Err(Response::text(405, "method not allowed\n"));
    }
    let uid = head
        .query_param("peer")
        .ok_or_else(|| bad("missing ?peer=UID\n"))?;
    let uid = PeerId::parse(&uid)
        .ok_or_else(|| bad("invalid peer id: 1..=64 characters of [A-Za-z0-9_.@:-]\n"))?;
    if !head.header_has("Upgrade", "websocket") || !head.header_has("Connection", "upgrade") {
        return Err(Response::text(426, "WebSocket upgrade required\n"));
    }
    if head.header("Sec-WebSocket-Version") != Some("13") {
        return Err(bad("unsupported Sec-WebSocket-Version\n"));
    }
    let key = head
        .header("Sec-WebSocket-Key")
        .ok_or_else(|| bad("missing Sec-WebSocket-Key\n"))?
        .to_string();
    Ok(Route::WebSocket {
        uid,
        key,
        protoo: head.header_has("Sec-WebSocket-Protocol", "protoo"),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a complete response (the connection is closed afterwards).
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    resp: &Response,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if !head_only {
        out.push_str(&resp.body);
    }
    s.write_all(out.as_bytes()).await?;
    s.flush().await
}

/// Writes the 101 that completes a WebSocket handshake.
pub async fn accept_websocket<S: AsyncWrite + Unpin>(
    s: &mut S,
    key: &str,
    protoo: bool,
) -> io::Result<()> {
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = if protoo {
        "Sec-WebSocket-Protocol: protoo\r\n"
    } else {
        ""
    };
    let out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    );
    s.write_all(out.as_bytes()).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text).expect("parses")
    }

    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn ws_route_needs_a_valid_peer() {
        let ok = head(&format!(
            "GET /ws?peer=a%40b HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Protocol: protoo\r\n\r\n"
        ));
        match route(&ok) {
            Route::WebSocket { uid, protoo, .. } => {
                assert_eq!(uid.as_str(), "a@b");
                assert!(protoo);
            }
            other => panic!("{other:?}"),
        }
        for q in ["", "?peer=", "?peer=a%20b", "?other=1"] {
            let h = head(&format!("GET /ws{q} HTTP/1.1\r\n{UPGRADE}\r\n"));
            assert!(
                matches!(route(&h), Route::Respond(Response { status: 400, .. })),
                "{q}"
            );
        }
    }

    #[test]
    fn serves_the_web_client_and_404s_the_rest() {
        let h = head("GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            route(&h),
            Route::Respond(Response { status: 200, .. })
        ));
        let h = head("GET /nope HTTP/1.1\r\n\r\n");
        assert!(matches!(
            route(&h),
            Route::Respond(Response { status: 404, .. })
        ));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
