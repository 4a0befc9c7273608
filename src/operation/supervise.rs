//! The all-in-one mode: a signaling node plus `sfus` SFU child processes
//! that it starts (the same executable, `sfu` role) and restarts when they
//! die.

use crate::cli::{sfu_child_args, SfuChild};
use crate::config::Settings;
use crate::error::Error;
use crate::limits::{SFU_HEALTHY_AFTER, SFU_RESTART_MAX, SFU_RESTART_MIN};
use crate::{process, signal};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Runs the all-in-one mode: starts `sfus` SFU children (each restarted with
/// backoff when it dies), then the signaling node in this thread.
pub fn run(s: &Settings) -> Result<(), Error> {
    let dir = match &s.socket_dir {
        Some(d) => d.clone(),
        None => process::private_socket_dir().map_err(|e| Error::io("socket folder", e))?,
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find own executable", e))?;
    for n in 1..=s.sfus {
        let mut cmd = s.sfu_wrapper.clone();
        cmd.push(exe.display().to_string());
        let sfuid = s.sfu_id(n);
        cmd.extend(sfu_child_args(&child(s, &dir, n, sfuid.as_str())));
        std::thread::Builder::new()
            .name(format!("sfu-{n}-supervisor"))
            .spawn(move || supervise(&cmd))
            .map_err(|e| Error::io("cannot start the supervisor", e))?;
    }
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    println!("wren: open {scheme}://{}/ in a browser", display_addr(s));
    signal::run(s.signal_config(&dir)).map_err(|e| Error::io("signal", e))
}

/// What SFU child `n` is told: the parent's merged settings (the child
/// reads the same file, but flags win), and where the parent's signaling
/// node will look for its socket.
fn child<'a>(s: &'a Settings, dir: &'a Path, n: usize, sfuid: &'a str) -> SfuChild<'a> {
    SfuChild {
        instance: n,
        socket_dir: dir,
        media_ip: s.media_ip,
        media_port: s.media_port,
        log_level: s.log_level,
        config: s.config.as_deref(),
        sfuid,
    }
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
    let mut backoff = SFU_RESTART_MIN;
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
        if started.elapsed() >= SFU_HEALTHY_AFTER {
            backoff = SFU_RESTART_MIN;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(SFU_RESTART_MAX);
    }
}

fn spawn(cmd: &[String]) -> std::io::Result<Child> {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command, Role};
    use crate::sfu::SfuConfig;

    /// The SFU config child `n` should run with: sfu-N in `dir`, the
    /// parent's address, ports and log level, the file's limits.
    fn intended(s: &Settings, dir: &Path, n: usize) -> SfuConfig {
        let child = Settings {
            instance: n,
            sfuid: None,
            socket: None,
            exit_on_stdin_eof: true,
            ..s.clone()
        };
        child.sfu_config(dir)
    }

    /// The child parses its command line into the SFU the supervisor meant.
    #[test]
    fn a_child_command_line_round_trips_to_the_intended_sfu() {
        let dir = std::env::temp_dir().join(format!("wren-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wren.toml");
        std::fs::write(
            &file,
            "media-port = 41000\nlog-level = \"warn\"\nsfus = 3\n\
             socket-group = \"wren\"\n[limits]\nsfu-sessions = 7\nrtx-cache-packets = 9\n",
        )
        .unwrap();
        for parent_args in [
            vec![
                "--sfus",
                "2",
                "--media-ip",
                "10.0.0.2",
                "--log-level",
                "trace",
            ],
            vec!["--config", file.to_str().unwrap(), "--media-ip", "10.0.0.3"],
            vec!["--config", file.to_str().unwrap(), "--media-port", "50000"],
            // In a cluster the children's ids come from the bizid, a flag
            // the children do not see.
            vec![
                "--config",
                file.to_str().unwrap(),
                "--cluster",
                "redis://127.0.0.1/",
                "--bizid",
                "hall-2",
            ],
        ] {
            let args: Vec<String> = parent_args.iter().map(|a| a.to_string()).collect();
            let Command::Run(Role::AllInOne, f) = parse(&args).unwrap() else {
                panic!("not the all-in-one role")
            };
            let parent = Settings::new(*f).unwrap();
            for n in 1..=parent.sfus {
                let sfuid = parent.sfu_id(n);
                let child_args = sfu_child_args(&child(&parent, &dir, n, sfuid.as_str()));
                let Command::Run(Role::Sfu, f) = parse(&child_args).unwrap() else {
                    panic!("{child_args:?} is not the sfu role")
                };
                let got = Settings::new(*f).unwrap();
                assert_eq!(
                    got.sfu_config(&dir),
                    intended(&parent, &dir, n),
                    "{child_args:?}"
                );
                assert_eq!(got.log_level, parent.log_level, "{child_args:?}");
                // The parent's node looks for the child where it listens.
                assert_eq!(
                    parent.signal_config(&dir).sfu_sockets[n - 1],
                    got.sfu_config(&dir).socket
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
