//! The all-in-one mode: a signaling node plus one SFU child process that it
//! starts (the same executable, `sfu` role) and restarts when it dies.

use crate::cli::{signal_config, Settings};
use crate::signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy: backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

pub fn run(s: &Settings) -> Result<(), String> {
    let dir = socket_dir()?;
    let socket = dir.join(format!("{}.sock", s.sfuid));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let args: Vec<String> = vec![
        "sfu".into(),
        "--exit-on-stdin-eof".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--sfuid".into(),
        s.sfuid.to_string(),
        "--media-ip".into(),
        s.media_ip.to_string(),
        "--media-port".into(),
        s.media_port.to_string(),
        "--log-level".into(),
        s.log_level.to_string(),
    ];
    std::thread::Builder::new()
        .name("sfu-supervisor".into())
        .spawn(move || supervise(&exe, &args))
        .map_err(|e| format!("cannot start the supervisor: {e}"))?;

    let mut cfg = signal_config(s);
    cfg.sfu_sockets = vec![socket];
    println!("wren: open http://{}/ in a browser", display_addr(s));
    signal::run(cfg).map_err(|e| format!("signal: {e}"))
}

/// Where the control socket goes: systemd's `RUNTIME_DIRECTORY`, else a
/// private folder of this process under `XDG_RUNTIME_DIR` or the temp dir.
fn socket_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
        return Ok(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("wren-{}", std::process::id()));
    make_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn display_addr(s: &Settings) -> String {
    if s.listen.ip().is_unspecified() {
        format!("{}:{}", s.media_ip, s.listen.port())
    } else {
        s.listen.to_string()
    }
}

/// Runs the SFU child forever, restarting it with backoff.
fn supervise(exe: &Path, args: &[String]) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match spawn(exe, args) {
            Ok(mut child) => {
                log::info!("SFU child started (pid {})", child.id());
                // The child's stdin is a pipe whose write end only we hold:
                // when this process dies, however it dies, the child reads
                // EOF and exits. `wait` would close it, so hold it here.
                let _stdin = child.stdin.take();
                match child.wait() {
                    Ok(status) => log::warn!("SFU child exited: {status}"),
                    Err(e) => log::warn!("SFU child wait failed: {e}"),
                }
            }
            Err(e) => log::error!("cannot start the SFU child: {e}"),
        }
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = BACKOFF_MIN;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(exe: &Path, args: &[String]) -> std::io::Result<Child> {
    Command::new(exe).args(args).stdin(Stdio::piped()).spawn()
}
