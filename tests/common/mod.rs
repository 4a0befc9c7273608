//! Shared helpers of the end-to-end tests: start the real `wren` binary on
//! loopback, talk the seed protocol to it over real WebSockets, and run
//! real str0m WebRTC peers against its SFU.

#![allow(dead_code)] // Each test file uses a different part.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use serde_json::{json, Value};
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wren::bench::peer::{run_all, run_until, Peer};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A free TCP port on loopback (closed again; the server binds it next).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A running `wren` (all-in-one unless told otherwise), killed on drop.
pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub media_port: u16,
}

impl Server {
    /// Starts `wren` with a signaling node and one SFU on free loopback
    /// ports and waits until it can carry calls.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let server = Server::spawn(extra);
        server.wait_healthy();
        server
    }

    /// Starts `wren` without waiting for it (e.g. when it speaks TLS).
    pub fn spawn(extra: &[&str]) -> Server {
        Server::spawn_logged(extra, None)
    }

    /// Like `start_with`, with everything it logs written to `log`.
    pub fn start_logged(extra: &[&str], log: &Path) -> Server {
        let server = Server::spawn_logged(extra, Some(log));
        server.wait_healthy();
        server
    }

    fn spawn_logged(extra: &[&str], log: Option<&Path>) -> Server {
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let media_port = free_udp_port();
        let mut args = vec![
            "--listen".to_string(),
            http.to_string(),
            "--media-ip".into(),
            "127.0.0.1".into(),
            "--media-port".into(),
            media_port.to_string(),
        ];
        if !runner().is_empty() {
            // The SFU child is as foreign as its parent.
            args.extend(["--sfu-wrapper".to_string(), runner().join(" ")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = match log {
            None => spawn_wren(&args),
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                wren_command()
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(file.try_clone().expect("log file"))
                    .stderr(file)
                    .spawn()
                    .expect("wren starts")
            }
        };
        Server {
            child,
            http,
            media_port,
        }
    }

    /// `wren` with a config file of this TOML text.
    pub fn start_with_config(toml: &str) -> Server {
        let path = socket_path("config").with_extension("toml");
        std::fs::write(&path, toml).expect("config written");
        Server::start_with(&["--config", path.to_str().unwrap()])
    }

    /// A signaling node alone (`wren signal`), using the SFU at `socket`.
    /// Not waited for: its health depends on the SFU.
    pub fn start_signal(socket: &Path) -> Server {
        Server::start_signal_with(socket, &[])
    }

    pub fn start_signal_with(socket: &Path, extra: &[&str]) -> Server {
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut args = [
            "signal",
            "--listen",
            &http.to_string(),
            "--sfu-socket",
            &socket.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = Server {
            child: spawn_wren(&args),
            http,
            media_port: 0,
        };
        let deadline = Instant::now() + WAIT;
        while http_get(http, "/healthz").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Polls `/healthz` until the SFU is connected.
    pub fn wait_healthy(&self) {
        assert!(
            self.wait_health(200),
            "wren at {} did not become healthy",
            self.http
        );
    }

    /// Polls `/healthz` until it answers `status`; false if it never does.
    pub fn wait_health(&self, status: u16) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if http_get(self.http, "/healthz").is_some_and(|(s, _)| s == status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until `n` SFUs are up (healthz needs only one).
    pub fn wait_sfus(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let up = http_get(self.http, "/metrics").map_or(0, |(_, body)| {
                body.lines()
                    .filter(|l| l.starts_with("wren_sfu_up{") && l.ends_with(" 1"))
                    .count()
            });
            if up >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fewer than {n} SFUs came up");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    pub fn ws_url(&self, uid: &str) -> String {
        format!("ws://{}/ws?peer={uid}", self.http)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by pid. Its SFU child exits when our pipe closes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs the wren binary here: the binary itself, or, when
/// it is built for another architecture and the kernel cannot execute it
/// (no binfmt in our sandboxes), QEMU user emulation named by its ELF
/// machine. `WREN_RUNNER` overrides the choice.
pub fn runner() -> &'static [String] {
    static RUNNER: OnceLock<Vec<String>> = OnceLock::new();
    RUNNER.get_or_init(|| {
        if let Ok(r) = std::env::var("WREN_RUNNER") {
            return r.split_whitespace().map(String::from).collect();
        }
        let bin = wren_bin();
        // Foreign binaries fail with ENOEXEC, or, when this test itself runs
        // under QEMU, as a child that exits 127 without a word.
        let native = Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"wren "));
        if native {
            return Vec::new();
        }
        let elf = std::fs::read(&bin).expect("the wren binary is readable");
        let qemu = match elf.get(18..20) {
            Some([0xb7, 0]) => "qemu-aarch64 -L /usr/aarch64-linux-gnu",
            Some([0x28, 0]) => "qemu-arm -L /usr/arm-linux-gnueabihf",
            other => panic!("wren is built for an unknown machine {other:?}"),
        };
        qemu.split_whitespace().map(String::from).collect()
    })
}

/// The wren binary under test: cargo's, or `WREN_BIN` (e.g. a release
/// build, to measure memory as shipped).
pub fn wren_bin() -> String {
    std::env::var("WREN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wren").to_string())
}

/// A command that runs the wren binary (through the runner if needed).
pub fn wren_command() -> Command {
    match runner() {
        [] => Command::new(wren_bin()),
        [qemu, rest @ ..] => {
            let mut c = Command::new(qemu);
            c.args(rest).arg(wren_bin());
            c
        }
    }
}

/// Starts the `wren` binary with these arguments (logs hidden unless
/// `WREN_TEST_LOG` is set).
pub fn spawn_wren(args: &[String]) -> Child {
    let mut cmd = wren_command();
    cmd.args(args).stdin(Stdio::null());
    if std::env::var_os("WREN_TEST_LOG").is_none() {
        cmd.stderr(Stdio::null()).stdout(Stdio::null());
    }
    cmd.spawn().expect("wren starts")
}

/// A fresh path for a control socket of this test.
pub fn socket_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}.sock", std::process::id()))
}

/// A standalone SFU process (`wren sfu`), killed on drop.
pub struct SfuProcess {
    pub child: Child,
    pub socket: PathBuf,
    pub media_port: u16,
}

impl SfuProcess {
    pub fn start(socket: &Path, sfuid: &str) -> SfuProcess {
        SfuProcess::start_with(socket, sfuid, &[])
    }

    pub fn start_with(socket: &Path, sfuid: &str, extra: &[&str]) -> SfuProcess {
        let media_port = free_udp_port();
        let mut args = [
            "sfu",
            "--socket",
            &socket.display().to_string(),
            "--sfuid",
            sfuid,
            "--media-ip",
            "127.0.0.1",
            "--media-port",
            &media_port.to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        SfuProcess {
            child: spawn_wren(&args),
            socket: socket.to_path_buf(),
            media_port,
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to it, by pid.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name}");
    }

    /// Kills it hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SfuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

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

/// A protoo client over a real WebSocket.
pub struct Client {
    pub uid: String,
    ws: WebSocketStream<TcpStream>,
    pub protocol: Option<String>,
    next_id: u64,
    notes: VecDeque<Value>,
    pub closed: Option<Option<CloseFrame>>,
}

impl Client {
    /// Connects as `uid`, offering subprotocol `protoo`.
    pub fn connect(server: &Server, uid: &str) -> Client {
        Client::try_connect(server, uid, true).expect("WebSocket connects")
    }

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
        smol::block_on(async {
            let mut req = format!("{}{query}", server.ws_url(uid))
                .into_client_request()
                .map_err(|e| e.to_string())?;
            for (name, value) in headers {
                let name =
                    async_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                        .expect("a header name");
                req.headers_mut().insert(name, value.parse().unwrap());
            }
            let tcp = TcpStream::connect(server.http)
                .await
                .map_err(|e| e.to_string())?;
            let (ws, resp) = async_tungstenite::client_async(req, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let protocol = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            Ok(Client {
                uid: uid.to_string(),
                ws,
                protocol,
                next_id: 1000,
                notes: VecDeque::new(),
                closed: None,
            })
        })
    }

    /// Sends a raw text frame. A socket the server closed is recorded as
    /// closed (a later wait for an answer fails).
    pub fn send_text(&mut self, text: &str) {
        self.send(Message::text(text));
    }

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
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"request": true, "id": id, "method": method, "data": data});
        self.send_text(&msg.to_string());
        self.response(id)
    }

    /// Waits for the response with this id.
    pub fn response(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(m) = self.recv(left) else { break };
            if m["response"] == true && m["id"] == id {
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
            let slot = ids
                .iter()
                .position(|id| m["response"] == true && m["id"] == *id);
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

/// Asserts that `response` is the 503 of one bound, named exactly (the
/// node's `errorReason` is `capacity full: BOUND`): `rooms` must not pass
/// for `rooms per peer`, nor `subscriptions` for `subscriptions per
/// stream`.
pub fn assert_full(response: &Value, bound: &str) {
    assert_eq!(response["ok"], false, "{bound}: {response}");
    assert_eq!(response["errorCode"], 503, "{bound}: {response}");
    assert_eq!(
        response["errorReason"].as_str(),
        Some(format!("capacity full: {bound}").as_str()),
        "the refusal names exactly {bound:?}: {response}"
    );
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

/// `a` publishes real media in `rid`, `b` subscribes to it; asserts that
/// audio and video reach `b`. Returns both peers (to keep them running)
/// and the publish answer's data.
pub fn media_call(a: &mut Client, b: &mut Client, rid: &str) -> (Peer, Peer, Value) {
    let mut publisher = Peer::publisher();
    let answer = a.ok("publish", publish_data(rid, &publisher));
    publisher.accept_answer(answer["jsep"]["sdp"].as_str().unwrap());
    let mut subscriber = Peer::subscriber();
    let sub = b.ok(
        "subscribe",
        subscribe_data(rid, &answer["mid"], &subscriber),
    );
    subscriber.accept_answer(sub["jsep"]["sdp"].as_str().unwrap());
    let flowing = run_until(
        &mut [&mut publisher, &mut subscriber],
        Duration::from_secs(10),
        |p| p[1].received[0] > 10 && p[1].received[1] > 10,
    );
    assert!(
        flowing,
        "media reaches {}: {:?}",
        b.uid, subscriber.received
    );
    (publisher, subscriber, answer)
}

/// Asserts that, after a moment to settle, nothing more reaches
/// `subscriber` while `publisher` keeps sending.
pub fn assert_media_stops(publisher: &mut Peer, subscriber: &mut Peer, why: &str) {
    run_all(&mut [publisher, subscriber], Duration::from_millis(300));
    let after = subscriber.received;
    run_all(&mut [publisher, subscriber], Duration::from_millis(600));
    assert_eq!(subscriber.received, after, "{why}");
}
