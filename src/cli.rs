//! The command line: which role to run, with which settings.

use crate::config::{self, FileConfig, DEFAULT_LISTEN, DEFAULT_MEDIA_PORT};
use crate::ids::NodeId;
use crate::limits::DEFAULT_LIVENESS_TIMEOUT_SECS;
use crate::{sfu, signal, supervise};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: wren [ROLE] [OPTIONS]

roles:
  (none)    a signaling node plus one SFU child process it supervises
  signal    a signaling node only (connects to --sfu-socket)
  sfu       one SFU process (listens on --socket)

options:
  --listen ADDR:PORT     HTTP + WebSocket address (default 0.0.0.0:8080)
  --media-ip IP          address the SFU advertises in ICE candidates
                         (default: the host's first non-loopback IPv4)
  --media-port PORT      the SFU's UDP port (default 40000)
  --config FILE          TOML configuration (kebab-case keys)
  --log-level LEVEL      error, warn, info, debug, trace (default info)
  --bizid ID             the signaling node's id (default biz-1)
  --sfuid ID             the SFU's id (default sfu-1)
  --sfu-socket PATH      an SFU control socket (signal role; repeatable)
  --socket PATH          the control socket to listen on (sfu role)
  -h, --help             this text
  -V, --version          the version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    AllInOne,
    Signal,
    Sfu,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Role, Box<Flags>),
    Help,
    Version,
}

/// Flags as given; `None` means "from the config file, else the default".
#[derive(Debug, Default, PartialEq)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub media_ip: Option<IpAddr>,
    pub media_port: Option<u16>,
    pub config: Option<PathBuf>,
    pub log_level: Option<String>,
    pub bizid: Option<String>,
    pub sfuid: Option<String>,
    pub sfu_sockets: Vec<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Exit when standard input closes: how an SFU child notices that its
    /// supervising parent died, whatever killed it.
    pub exit_on_stdin_eof: bool,
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().peekable();
    let role = match it.peek().map(|s| s.as_str()) {
        Some("signal") => Role::Signal,
        Some("sfu") => Role::Sfu,
        _ => Role::AllInOne,
    };
    if role != Role::AllInOne {
        it.next();
    }
    let mut f = Flags::default();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let bad = |what: &str, v: &str| format!("{name}: invalid {what} {v:?}");
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--listen" => {
                let v = value()?;
                f.listen = Some(v.parse().map_err(|_| bad("address", &v))?);
            }
            "--media-ip" => {
                let v = value()?;
                f.media_ip = Some(v.parse().map_err(|_| bad("IP address", &v))?);
            }
            "--media-port" => {
                let v = value()?;
                f.media_port = Some(v.parse().map_err(|_| bad("port", &v))?);
            }
            "--config" => f.config = Some(value()?.into()),
            "--log-level" => {
                let v = value()?;
                config::parse_level(&v)?;
                f.log_level = Some(v);
            }
            "--bizid" => f.bizid = Some(value()?),
            "--sfuid" => f.sfuid = Some(value()?),
            "--sfu-socket" => f.sfu_sockets.push(value()?.into()),
            "--socket" => f.socket = Some(value()?.into()),
            "--exit-on-stdin-eof" => f.exit_on_stdin_eof = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Run(role, Box::new(f)))
}

/// Everything a role needs, with flags, file and defaults merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub media_ip: IpAddr,
    pub media_port: u16,
    pub log_level: log::LevelFilter,
    pub bizid: NodeId,
    pub sfuid: NodeId,
    pub sfu_sockets: Vec<PathBuf>,
    pub socket: Option<PathBuf>,
    pub liveness_timeout: Duration,
    pub exit_on_stdin_eof: bool,
}

fn node_id(key: &str, v: Option<String>, default: &str) -> Result<NodeId, String> {
    let v = v.unwrap_or_else(|| default.to_string());
    NodeId::parse(&v).ok_or_else(|| format!("{key}: invalid id {v:?}"))
}

pub fn settings(f: Flags) -> Result<Settings, String> {
    let file = match &f.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let level = f
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let sfu_sockets = if f.sfu_sockets.is_empty() {
        file.sfu_sockets.unwrap_or_default()
    } else {
        f.sfu_sockets
    };
    Ok(Settings {
        listen: f
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
        media_ip: f
            .media_ip
            .or(file.media_ip)
            .unwrap_or_else(config::default_media_ip),
        media_port: f
            .media_port
            .or(file.media_port)
            .unwrap_or(DEFAULT_MEDIA_PORT),
        log_level: config::parse_level(&level)?,
        bizid: node_id("bizid", f.bizid.or(file.bizid), "biz-1")?,
        sfuid: node_id("sfuid", f.sfuid.or(file.sfuid), "sfu-1")?,
        sfu_sockets,
        socket: f.socket.or(file.socket),
        liveness_timeout: Duration::from_secs(
            file.liveness_timeout_secs
                .unwrap_or(DEFAULT_LIVENESS_TIMEOUT_SECS),
        ),
        exit_on_stdin_eof: f.exit_on_stdin_eof,
    })
}

fn init_logging(level: log::LevelFilter) {
    // RUST_LOG, when set, wins: handy for a one-off debug run.
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .init();
}

pub fn run(cmd: Command) -> Result<(), String> {
    let (role, flags) = match cmd {
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Version => {
            println!("wren {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Run(role, flags) => (role, flags),
    };
    let s = settings(*flags)?;
    init_logging(s.log_level);
    match role {
        Role::Signal => {
            if s.sfu_sockets.is_empty() {
                return Err("signal: name at least one --sfu-socket".into());
            }
            signal::run(signal_config(&s)).map_err(|e| format!("signal: {e}"))
        }
        Role::Sfu => {
            let socket = s.socket.clone().ok_or("sfu: --socket PATH is required")?;
            sfu::run(sfu::SfuConfig {
                sfuid: s.sfuid.clone(),
                socket,
                media_ip: s.media_ip,
                media_port: s.media_port,
                exit_on_stdin_eof: s.exit_on_stdin_eof,
            })
            .map_err(|e| format!("sfu: {e}"))
        }
        Role::AllInOne => supervise::run(&s),
    }
}

pub fn signal_config(s: &Settings) -> signal::SignalConfig {
    signal::SignalConfig {
        listen: s.listen,
        bizid: s.bizid.clone(),
        sfu_sockets: s.sfu_sockets.clone(),
        liveness_timeout: s.liveness_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn roles_and_flags_parse() {
        let Command::Run(role, f) = parse(&args(
            "sfu --socket /x.sock --media-port=5000 --media-ip 127.0.0.1",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(role, Role::Sfu);
        assert_eq!(f.media_port, Some(5000));
        assert_eq!(f.socket, Some(PathBuf::from("/x.sock")));
        assert!(matches!(
            parse(&args("--listen 127.0.0.1:1")).unwrap(),
            Command::Run(Role::AllInOne, _)
        ));
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&args("--listen nope")).is_err());
        assert!(parse(&args("--media-port 70000")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(parse(&args("--listen")).is_err());
        assert!(parse(&args("--log-level loud")).is_err());
    }
}
