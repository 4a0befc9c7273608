//! The seed protocol's client side (protoo requests, responses and
//! notifications over a real WebSocket): an async [`Session`] for the load
//! tool, which runs hundreds at once and times each request, and a blocking
//! [`Client`] for the tests, which keeps notifications for later and asserts
//! on what it gets.

use crate::peer::Peer;
use crate::server::{Server, WAIT};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use serde_json::{json, Value};
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Ids of our requests start here, above the small ids tests write by hand.
const FIRST_REQUEST_ID: u64 = 1001;

/// Opens the WebSocket of peer `uid` at `addr`, with more query parameters
/// (`&token=...`) and request headers; returns it and the subprotocol the
/// server chose.
pub async fn open(
    addr: SocketAddr,
    uid: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<TcpStream>, Option<String>), String> {
    let mut req = format!("ws://{addr}/ws?peer={uid}{query}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        let name = async_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| e.to_string())?;
        let value = value
            .parse()
            .map_err(|_| format!("header value {value:?}"))?;
        req.headers_mut().insert(name, value);
    }
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Requests are small and each waits for its answer: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let (ws, resp) = async_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let protocol = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Ok((ws, protocol))
}

/// A protoo request frame.
pub fn request_text(id: u64, method: &str, data: Value) -> String {
    json!({"request": true, "id": id, "method": method, "data": data}).to_string()
}

/// Whether `m` is the response to request `id`.
fn answers(m: &Value, id: u64) -> bool {
    m["response"] == true && m["id"] == id
}

/// A peer's signaling session for the load tool: requests with their round
/// trip time; notifications only counted.
pub struct Session {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Notifications received so far.
    pub notifications: u64,
}

impl Session {
    /// Connects as `uid`, with subprotocol `protoo`.
    pub async fn connect(addr: SocketAddr, uid: &str) -> Result<Session, String> {
        let (ws, _) = open(addr, uid, "", &[("Sec-WebSocket-Protocol", "protoo")]).await?;
        Ok(Session {
            ws,
            next_id: FIRST_REQUEST_ID,
            notifications: 0,
        })
    }

    /// Sends a request; returns its response and the time it took.
    pub async fn request(
        &mut self,
        method: &str,
        data: Value,
    ) -> Result<(Value, Duration), String> {
        let id = self.next_id;
        self.next_id += 1;
        let sent = Instant::now();
        self.ws
            .send(Message::text(request_text(id, method, data)))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let v = self.next_message().await?;
            if answers(&v, id) {
                return Ok((v, sent.elapsed()));
            }
            self.notifications += 1;
        }
    }

    /// The next text message, decoded.
    async fn next_message(&mut self) -> Result<Value, String> {
        loop {
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            };
            return serde_json::from_str(text.as_str()).map_err(|e| e.to_string());
        }
    }

    /// Waits for the next notification (a response without a request
    /// waiting for it is not one): its method and data.
    pub async fn next_note(&mut self) -> Result<(String, Value), String> {
        loop {
            let v = self.next_message().await?;
            if v["notification"] == true {
                self.notifications += 1;
                let method = v["method"].as_str().unwrap_or_default().to_string();
                return Ok((method, v["data"].clone()));
            }
        }
    }

    /// Like `request`, but an error response is an error.
    pub async fn ok(&mut self, method: &str, data: Value) -> Result<(Value, Duration), String> {
        let (v, rtt) = self.request(method, data).await?;
        if v["ok"] != true {
            return Err(format!("{method}: {} {}", v["errorCode"], v["errorReason"]));
        }
        Ok((v["data"].clone(), rtt))
    }
}

/// A test's protoo client: blocking calls with a time limit; notifications
/// that arrive while it waits for a response are kept for [`Client::note`].
pub struct Client {
    /// The uid it connected as (`?peer=`).
    pub uid: String,
    ws: WebSocketStream<TcpStream>,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    next_id: u64,
    notes: VecDeque<Value>,
    /// Set once the socket is closed: the server's close frame, if it
    /// sent one.
    pub closed: Option<Option<CloseFrame>>,
}

impl Client {
    /// Connects as `uid`, offering subprotocol `protoo`.
    pub fn connect(server: &Server, uid: &str) -> Client {
        Client::try_connect(server, uid, true).expect("WebSocket connects")
    }

    /// Connects as `uid`, offering subprotocol `protoo` only if asked;
    /// the handshake's failure is an error, not a panic.
    pub fn try_connect(server: &Server, uid: &str, protoo: bool) -> Result<Client, String> {
        let headers: &[(&str, &str)] = if protoo {
            &[("Sec-WebSocket-Protocol", "protoo")]
        } else {
            &[]
        };
        Client::try_connect_with(server, uid, "", headers)
    }

    /// Connects as `uid` with more query parameters (`&token=...`) and
    /// request headers.
    pub fn try_connect_with(
        server: &Server,
        uid: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        Client::connect_at(server.http, uid, query, headers)
    }

    /// Connects as `uid` to a node at `http` that this process did not
    /// start (an emulated board's), with more query parameters and
    /// request headers.
    pub fn connect_at(
        http: SocketAddr,
        uid: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        let (ws, protocol) = smol::block_on(open(http, uid, query, headers))?;
        Ok(Client {
            uid: uid.to_string(),
            ws,
            protocol,
            next_id: FIRST_REQUEST_ID,
            notes: VecDeque::new(),
            closed: None,
        })
    }

    /// Sends a raw text frame. A socket the server closed is recorded as
    /// closed (a later wait for an answer fails).
    pub fn send_text(&mut self, text: &str) {
        self.send(Message::text(text));
    }

    /// Sends a raw binary frame (which the protocol does not use).
    pub fn send_binary(&mut self, data: Vec<u8>) {
        self.send(Message::binary(data));
    }

    fn send(&mut self, msg: Message) {
        if smol::block_on(self.ws.send(msg)).is_err() && self.closed.is_none() {
            self.closed = Some(None);
        }
    }

    /// Receives the next JSON message, or None on close/timeout.
    fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if self.closed.is_some() {
            return None;
        }
        smol::block_on(async {
            loop {
                let next = async { self.ws.next().await.map(Some) }.or(async {
                    smol::Timer::after(timeout).await;
                    Some(None)
                });
                match next.await {
                    None | Some(Some(Err(_))) => {
                        self.closed = Some(None);
                        return None;
                    }
                    Some(None) => return None,
                    Some(Some(Ok(Message::Text(t)))) => {
                        return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"))
                    }
                    Some(Some(Ok(Message::Close(frame)))) => {
                        self.closed = Some(frame);
                        return None;
                    }
                    Some(Some(Ok(_))) => continue,
                }
            }
        })
    }

    /// Sends a request and waits for its response (notifications that
    /// arrive meanwhile are kept for `note`).
    pub fn request(&mut self, method: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&request_text(id, method, data));
        self.response(id)
    }

    /// Waits for the response with this id.
    pub fn response(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(m) = self.recv(left) else { break };
            if answers(&m, id) {
                return m;
            }
            assert_eq!(m["notification"], true, "unexpected message {m}");
            self.notes.push_back(m);
        }
        panic!("{}: no response to request {id}", self.uid);
    }

    /// Waits for the responses to all these requests, in whatever order
    /// they come; returns them in the order of `ids`.
    pub fn responses(&mut self, ids: &[u64]) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; ids.len()];
        let deadline = Instant::now() + WAIT;
        while got.iter().any(Option::is_none) {
            let left = deadline.checked_duration_since(Instant::now());
            let Some(m) = left.and_then(|left| self.recv(left)) else {
                panic!("{}: no response to some of {ids:?}", self.uid);
            };
            let slot = ids.iter().position(|id| answers(&m, *id));
            match slot {
                Some(i) => got[i] = Some(m),
                None => {
                    assert_eq!(m["notification"], true, "unexpected message {m}");
                    self.notes.push_back(m);
                }
            }
        }
        got.into_iter().flatten().collect()
    }

    /// Expects `ok: true` and returns `data`.
    pub fn ok(&mut self, method: &str, data: Value) -> Value {
        let r = self.request(method, data);
        assert_eq!(r["ok"], true, "{}: {method} failed: {r}", self.uid);
        r["data"].clone()
    }

    /// Expects `ok: false` and returns `errorCode`.
    pub fn err(&mut self, method: &str, data: Value) -> u64 {
        let r = self.request(method, data);
        assert_eq!(r["ok"], false, "{}: {method} should fail: {r}", self.uid);
        assert!(r["errorReason"].as_str().is_some_and(|s| !s.is_empty()));
        r["errorCode"].as_u64().expect("numeric errorCode")
    }

    /// The next notification (method, data), waiting up to `WAIT`.
    pub fn note(&mut self) -> (String, Value) {
        self.try_note(WAIT)
            .unwrap_or_else(|| panic!("{}: no notification", self.uid))
    }

    /// The next notification (method, data), or None if none comes
    /// within `timeout`.
    pub fn try_note(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let m = match self.notes.pop_front() {
            Some(m) => m,
            None => {
                let m = self.recv(timeout)?;
                assert_eq!(m["notification"], true, "unexpected message {m}");
                m
            }
        };
        Some((m["method"].as_str()?.to_string(), m["data"].clone()))
    }

    /// The next notification with this method, skipping others.
    pub fn note_named(&mut self, method: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.try_note(left) {
                Some((m, d)) if m == method => return d,
                Some(_) => continue,
                None => break,
            }
        }
        panic!("{}: no {method} notification", self.uid);
    }

    /// Reads and drops whatever arrives within `d` (keeps a flooding
    /// client's socket from backing up).
    pub fn drain(&mut self, d: Duration) {
        while self.recv(d).is_some() {}
        self.notes.clear();
    }

    /// Asserts nothing arrives for a short while.
    pub fn assert_quiet(&mut self) {
        if let Some(n) = self.try_note(Duration::from_millis(300)) {
            panic!("{}: unexpected notification {n:?}", self.uid);
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub fn wait_close(&mut self) -> Option<u16> {
        self.wait_close_frame().map(|(code, _)| code)
    }

    /// Waits for the server to close the socket; returns the close code
    /// and reason.
    pub fn wait_close_frame(&mut self) -> Option<(u16, String)> {
        let deadline = Instant::now() + WAIT;
        while self.closed.is_none() && Instant::now() < deadline {
            self.recv(Duration::from_millis(200));
        }
        match &self.closed {
            Some(Some(frame)) => Some((frame.code.into(), frame.reason.to_string())),
            _ => None,
        }
    }

    /// Closes our side.
    pub fn close(mut self) {
        let _ = smol::block_on(self.ws.close(None));
    }
}

/// The `minfo` of a camera-and-microphone stream.
pub fn minfo() -> Value {
    json!({"audio": true, "video": true, "audiotype": 0, "videotype": 0})
}

/// `publish` data with this peer's offer.
pub fn publish_data(rid: &str, peer: &Peer) -> Value {
    json!({"rid": rid, "jsep": {"type": "offer", "sdp": peer.offer()}, "minfo": minfo()})
}

/// `subscribe` data with this peer's offer.
pub fn subscribe_data(rid: &str, mid: &Value, peer: &Peer) -> Value {
    json!({"rid": rid, "mid": mid, "jsep": {"type": "offer", "sdp": peer.offer()}})
}
