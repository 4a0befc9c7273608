//! Starting the real `wren` binary on loopback (all-in-one, signaling
//! only, or a lone SFU) and waiting until it can carry calls.

use crate::http::{http_get, sfus_up};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take (a bound, never a pause:
/// every wait ends when what it waits for happens). Generous: under QEMU
/// user emulation, with a test binary's tests starting wren in parallel
/// on two cores, a wren once took over 10 s to become healthy.
pub const WAIT: Duration = Duration::from_secs(30);

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
    /// The `wren` process (a test may signal or kill it).
    pub child: Child,
    /// Where it serves HTTP and WebSocket.
    pub http: SocketAddr,
    /// The UDP port of its first SFU (0 for a signaling node alone).
    pub media_port: u16,
}

impl Server {
    /// Starts `wren` with a signaling node and one SFU on free loopback
    /// ports and waits until it can carry calls.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like `start`, with `extra` arguments after the ones it chooses.
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

    /// Starts `wren` listening (HTTP, WebSocket and media) on `ip`, in the
    /// network namespace of the calling thread (a child inherits it: see
    /// `netlab::Lab::enter`), and waits until it can carry calls.
    pub fn start_on(ip: IpAddr) -> Server {
        let server = Server::spawn_on(ip, &[], None);
        server.wait_healthy();
        server
    }

    fn spawn_logged(extra: &[&str], log: Option<&Path>) -> Server {
        Server::spawn_on(Ipv4Addr::LOCALHOST.into(), extra, log)
    }

    fn spawn_on(ip: IpAddr, extra: &[&str], log: Option<&Path>) -> Server {
        let http = SocketAddr::new(ip, free_tcp_port());
        let media_port = free_udp_port();
        let mut args = vec![
            "--listen".to_string(),
            http.to_string(),
            "--media-ip".into(),
            ip.to_string(),
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

    /// Like `start_signal`, with `extra` arguments after the ones it
    /// chooses.
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
        wait_until(WAIT, || http_get(http, "/healthz").is_some());
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
        wait_until(WAIT, || {
            http_get(self.http, "/healthz").is_some_and(|(s, _)| s == status)
        })
    }

    /// Waits until `n` SFUs are up (healthz needs only one).
    pub fn wait_sfus(&self, n: usize) {
        assert!(
            wait_for_sfus(self.http, n, WAIT),
            "fewer than {n} SFUs came up"
        );
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// The WebSocket URL a client named `uid` connects to.
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
        qemu_for(&bin)
    })
}

/// The QEMU user emulation that runs `bin`, a binary built for another
/// machine (aarch64 or armv7), named by its ELF header.
pub fn qemu_for(bin: &str) -> Vec<String> {
    let elf = std::fs::read(bin).unwrap_or_else(|e| panic!("{bin} is not readable: {e}"));
    let qemu = match elf.get(18..20) {
        Some([0xb7, 0]) => "qemu-aarch64 -L /usr/aarch64-linux-gnu",
        Some([0x28, 0]) => "qemu-arm -L /usr/arm-linux-gnueabihf",
        other => panic!("{bin} is built for an unknown machine {other:?}"),
    };
    qemu.split_whitespace().map(String::from).collect()
}

/// The wren binary under test: `WREN_BIN` (e.g. a release build, to
/// measure memory as shipped), else the `wren` that cargo built beside the
/// running test (`target/<triple>/<profile>/wren`: the one
/// `CARGO_BIN_EXE_wren` names in wren's own tests).
pub fn wren_bin() -> String {
    if let Ok(bin) = std::env::var("WREN_BIN") {
        return bin;
    }
    let bin = profile_dir().join("wren");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --bin wren` (cargo test --workspace builds it)",
        bin.display()
    );
    bin.display().to_string()
}

/// The folder of cargo's artifacts for this build (`target/debug`, or
/// `target/<triple>/debug`): a test runs from its `deps` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().expect("the test's folder");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().expect("the profile folder").to_path_buf(),
        _ => dir.to_path_buf(),
    }
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

/// A fresh path for a control socket (or another scratch file) of this
/// test: unique per process and call, in cargo's target folder, so that
/// nothing a run leaves behind meets the next one.
pub fn socket_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = profile_dir().join("wren-tests");
    std::fs::create_dir_all(&dir).expect("the scratch folder");
    dir.join(format!("{name}-{}-{n}.sock", std::process::id()))
}

/// A standalone SFU process (`wren sfu`), killed on drop.
pub struct SfuProcess {
    /// The `wren sfu` process.
    pub child: Child,
    /// The control socket it listens on.
    pub socket: PathBuf,
    /// Its UDP media port.
    pub media_port: u16,
}

impl SfuProcess {
    /// Starts an SFU named `sfuid` listening on `socket`, media on a free
    /// loopback port. Not waited for: a signaling node connects when it
    /// is up.
    pub fn start(socket: &Path, sfuid: &str) -> SfuProcess {
        SfuProcess::start_with(socket, sfuid, &[])
    }

    /// Like `start`, with `extra` arguments after the ones it chooses.
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

/// Waits up to `wait` until `/metrics` of the node at `http` shows `n`
/// SFUs up; false if they never are.
pub fn wait_for_sfus(http: SocketAddr, n: usize, wait: Duration) -> bool {
    wait_until(wait, || sfus_up(http) >= n)
}

/// Asks `done` every 50 ms until it holds (true) or `limit` passes
/// (false; it is asked once more at the end).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
