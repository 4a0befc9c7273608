//! The all-in-one mode: a signaling node plus `sfus` SFU child processes
//! that it starts (the same executable, `sfu` role) and restarts when they
//! die.

use crate::cli::Settings;
use crate::signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy: backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

pub fn run(s: &Settings) -> Result<(), String> {
    let dir = match &s.socket_dir {
        Some(d) => d.clone(),
        None => private_socket_dir()?,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    for n in 1..=s.sfus {
        let mut cmd = s.sfu_wrapper.clone();
        cmd.push(exe.display().to_string());
        cmd.extend(
            [
                "sfu",
                "--exit-on-stdin-eof",
                "--instance",
                &n.to_string(),
                "--socket-dir",
                &dir.display().to_string(),
                "--media-ip",
                &s.media_ip.to_string(),
                "--media-port",
                &s.media_port.to_string(),
                "--log-level",
                s.log_level.as_str(),
            ]
            .map(String::from),
        );
        if let Some(config) = &s.config {
            // The SFUs read their limits from the same file; flags win.
            cmd.extend(["--config".to_string(), config.display().to_string()]);
        }
        std::thread::Builder::new()
            .name(format!("sfu-{n}-supervisor"))
            .spawn(move || supervise(&cmd))
            .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    }
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    println!("wren: open {scheme}://{}/ in a browser", display_addr(s));
    signal::run(s.signal_config(&dir)).map_err(|e| format!("signal: {e}"))
}

/// A folder for the control sockets that only this process uses: under
/// `XDG_RUNTIME_DIR` or the temp dir. The SFU children remove their
/// sockets and the folder when they exit.
fn private_socket_dir() -> Result<PathBuf, String> {
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

/// Runs one SFU child forever, restarting it with backoff.
fn supervise(cmd: &[String]) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match spawn(cmd) {
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
            Err(e) => log::error!("cannot start the SFU child {:?}: {e}", cmd[0]),
        }
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = BACKOFF_MIN;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(cmd: &[String]) -> std::io::Result<Child> {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .spawn()
}
