//! One client connection: HTTP request, WebSocket upgrade, then frames in
//! (decoded and handed to the node) and frames out (from the node's queue).

use super::http::{self, Route};
use super::node::{ConnId, Link};
use super::protoo::{self, Incoming};
use super::token::Grant;
use super::{clock, outbox, Outbound, Shared};
use crate::ids::PeerId;
use crate::limits::{
    HTTP_HEAD_TIMEOUT_MS, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, MAX_QUEUED_PER_CONNECTION,
    MAX_VIOLATIONS, WS_BUFFER_BYTES, WS_CLOSE_TIMEOUT,
};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::StreamExt;
use smol::Timer;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

type Close = Option<(u16, &'static str)>;

/// Counts a connection task as live until dropped.
struct LiveGuard<'a>(&'a Shared);

impl<'a> LiveGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.live_conns.set(shared.live_conns.get() + 1);
        LiveGuard(shared)
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.live_conns.set(self.0.live_conns.get() - 1);
    }
}

/// Serves one connection, plain TCP or TLS.
pub async fn handle<S>(shared: Rc<Shared>, mut stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _live = LiveGuard::new(&shared);
    // The HTTP phase runs boxed: its buffers and parsed head are freed
    // before the WebSocket phase, which lasts (and is paid for) much longer.
    let Some(Upgrade {
        uid,
        url_grant,
        rest,
    }) = Box::pin(front_door(&shared, &mut stream, addr)).await
    else {
        return;
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await;
    let (mut sender, mut receiver) = ws.split();

    let conn = shared.new_conn_id();
    let (tx, rx) = outbox::bounded(MAX_QUEUED_PER_CONNECTION);
    shared.conns.borrow_mut().insert(conn, tx);
    if let Err(e) = shared.with_node(|n| n.connect(clock(), conn, uid.clone(), url_grant)) {
        log::info!("{addr}: {uid} refused: {e}");
        shared.conns.borrow_mut().remove(&conn);
        close(&mut sender, (1013, "capacity full: connections")).await;
        return;
    }
    log::debug!("{addr}: {uid} connected as {conn:?}");

    let reason = read_loop(&shared, conn, &mut receiver)
        .or(write_loop(&mut sender, rx, shared.ping_interval))
        .await;
    shared.conns.borrow_mut().remove(&conn);
    shared.with_node(|n| n.disconnect(clock(), conn));
    if let Some(reason) = reason {
        close(&mut sender, reason).await;
        linger(&mut receiver).await;
    }
    log::debug!("{addr}: {uid} ({conn:?}) closed");
}

/// What an accepted WebSocket upgrade carries on.
struct Upgrade {
    uid: PeerId,
    url_grant: Option<Grant>,
    /// Bytes the client sent right behind its request head.
    rest: Vec<u8>,
}

/// Reads one HTTP request and answers it: a page, `/metrics`, `/healthz`,
/// an error, or the 101 of a WebSocket upgrade (then returns `Some`).
async fn front_door<S>(shared: &Shared, stream: &mut S, addr: SocketAddr) -> Option<Upgrade>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = http::read_head(stream).or(async {
        Timer::after(Duration::from_millis(HTTP_HEAD_TIMEOUT_MS)).await;
        Err(std::io::ErrorKind::TimedOut.into())
    });
    let (head, rest) = match head.await {
        Ok(h) => h,
        Err(e) => {
            log::debug!("{addr}: no valid request head: {e}");
            if e.kind() == std::io::ErrorKind::InvalidData {
                let resp = http::Response::text(400, "bad request\n");
                let _ = http::respond(stream, &resp, false).await;
            }
            return None;
        }
    };
    if head.path == "/metrics" {
        let m = shared.node.borrow().metrics();
        let text = super::metrics::render(&m, shared.cluster_rtt.get());
        let resp = http::Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: text.into(),
        };
        let _ = http::respond(stream, &resp, head.method == "HEAD").await;
        return None;
    }
    if head.path == "/healthz" {
        // Ready to carry calls: at least one SFU is connected. A node cut
        // off from its cluster still carries its local calls: it says so,
        // but stays healthy.
        let live = shared.sfus.borrow().iter().any(Option::is_some);
        let cluster = match shared.node.borrow().cluster_metrics().map(|c| c.link) {
            None => String::new(),
            Some(Link::Up) => "cluster: up\n".into(),
            Some(Link::Down { why }) => format!("cluster: down ({why})\n"),
        };
        let resp = match live {
            true => http::Response::text(200, format!("ok\n{cluster}")),
            false => http::Response::text(503, format!("no SFU available\n{cluster}")),
        };
        let _ = http::respond(stream, &resp, head.method == "HEAD").await;
        return None;
    }
    let (uid, key, protoo) = match http::route(&head) {
        Route::Respond(resp) => {
            if resp.status >= 400 {
                log::debug!("{addr}: {} {} -> {}", head.method, head.path, resp.status);
            }
            let _ = http::respond(stream, &resp, head.method == "HEAD").await;
            return None;
        }
        Route::WebSocket { uid, key, protoo } => (uid, key, protoo),
    };
    let url_grant = match admit(shared, &head, &uid) {
        Ok(grant) => grant,
        Err(why) => {
            log::info!("{addr}: {uid} refused: {why}");
            let resp = http::Response::text(403, format!("{why}\n"));
            let _ = http::respond(stream, &resp, false).await;
            return None;
        }
    };
    if http::accept_websocket(stream, &key, protoo).await.is_err() {
        return None;
    }
    Some(Upgrade {
        uid,
        url_grant,
        rest,
    })
}

/// Access control before the upgrade: the Origin allow-list (browsers
/// always send Origin; other clients may not, and pass), then the URL's
/// room token, if any.
fn admit(shared: &Shared, head: &http::Head, uid: &PeerId) -> Result<Option<Grant>, String> {
    if !shared.allowed_origins.is_empty() {
        if let Some(origin) = head.header("Origin") {
            if !shared.allowed_origins.iter().any(|o| o == origin) {
                return Err("origin not allowed".into());
            }
        }
    }
    match head.query_param("token") {
        Some(token) => shared
            .node
            .borrow()
            .check_url_token(clock(), uid, &token)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// Frames in. Returns the close to send, if the client misbehaved.
async fn read_loop<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: ConnId,
    receiver: &mut WebSocketReceiver<S>,
) -> Close {
    let mut violations = 0;
    while let Some(msg) = receiver.next().await {
        let now = clock();
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => {
                shared.node.borrow_mut().touch(now, conn);
                continue;
            }
            Ok(Message::Binary(_) | Message::Frame(_)) => {
                violations += 1;
                if violations > MAX_VIOLATIONS {
                    return Some((1003, "too many unsupported frames"));
                }
                continue;
            }
            Err(WsError::Capacity(_)) => return Some((1009, "message too large")),
            Err(e) => {
                log::debug!("connection {conn:?}: {e}");
                return None;
            }
        };
        shared.node.borrow_mut().touch(now, conn);
        match protoo::decode_bounded(text.as_str(), MAX_MESSAGE_BYTES) {
            Incoming::Request(id, req) => shared.with_node(|n| n.request(now, conn, id, *req)),
            Incoming::Invalid(id, err) => shared.with_node(|n| n.reject(now, conn, id, err)),
            Incoming::Ignored => {}
            Incoming::Garbage(why) => {
                log::debug!("connection {conn:?}: unanswerable frame: {why}");
                violations += 1;
                if violations > MAX_VIOLATIONS {
                    return Some((1008, "too many malformed messages"));
                }
            }
        }
    }
    None
}

/// Frames out, plus a ping on a fixed schedule. Returns the close to send.
///
/// The schedule does not move when other frames go out: a client that
/// proves itself alive only by answering pings (no `keepalive`, or a
/// background tab whose timers the browser throttles) must be pinged in a
/// busy room too, or the liveness timeout would close it.
async fn write_loop<S: AsyncRead + AsyncWrite + Unpin>(
    sender: &mut WebSocketSender<S>,
    rx: outbox::Receiver<Outbound>,
    ping_interval: Duration,
) -> Close {
    let mut pings = Timer::interval(ping_interval);
    loop {
        let next = rx.recv().or(async {
            pings.next().await;
            Some(Outbound::Ping)
        });
        let msg = match next.await {
            // The node dropped our queue (too slow): just close.
            None => return Some((1008, "not reading")),
            Some(Outbound::Close(code, reason)) => return Some((code, reason)),
            Some(Outbound::Text(t)) => Message::text(&*t),
            Some(Outbound::Ping) => Message::Ping(Default::default()),
        };
        // A client that stops reading blocks this send for good: when the
        // node drops its queue (full), stop waiting and end the task, which
        // takes the peer out of its rooms.
        let sent = async { sender.send(msg).await.is_ok() }.or(async {
            rx.closed().await;
            false
        });
        if !sent.await {
            return None;
        }
    }
}

/// After our close frame: reads (and drops) what the client still sends
/// until its own close or the end of the stream, for 2 s at most. Closing
/// the socket with unread data in it would make the kernel reset the
/// connection, and a client that had not yet read our close frame (say,
/// one behind on its pings) would lose it with the reset and never learn
/// why it was closed.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(receiver: &mut WebSocketReceiver<S>) {
    let drain = async { while let Some(Ok(_)) = receiver.next().await {} };
    drain
        .or(async {
            Timer::after(WS_CLOSE_TIMEOUT).await;
        })
        .await;
}

async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    sender: &mut WebSocketSender<S>,
    (code, reason): (u16, &'static str),
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = sender
        .close(Some(frame))
        .or(async {
            Timer::after(WS_CLOSE_TIMEOUT).await;
            Ok(())
        })
        .await;
}
