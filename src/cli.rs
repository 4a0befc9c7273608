//! The command line: which role to run, with which settings.

use crate::config::{self, FileConfig, DEFAULT_LISTEN, DEFAULT_MEDIA_PORT};
use crate::ids::NodeId;
use crate::ids::{PeerId, RoomId};
use crate::limits::{Limits, DEFAULT_LIVENESS_TIMEOUT_SECS, MAX_SFUS};
use crate::signal::token::{self, Grant, Secret, TokenKey};
use crate::{sfu, signal, supervise};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USAGE: &str = "\
usage: wren [ROLE] [OPTIONS]

roles:
  (none)               a signaling node plus --sfus SFU child processes
  signal               a signaling node only
  sfu                  one SFU process
  check-config FILE    validate a configuration file and exit
  token --config FILE --uid UID --rid RID [--ttl SECS] [--listen-only]
                       print a room token signed with the file's
                       token secret (valid --ttl seconds, default 86400)

options:
  --listen ADDR:PORT     HTTP + WebSocket address (default 0.0.0.0:8080)
  --media-ip IP          address the SFUs advertise in ICE candidates
                         (default: the host's first non-loopback IPv4)
  --media-port PORT      UDP port of sfu-1; sfu-N uses PORT+N-1 (default 40000)
  --sfus N               SFU processes (default 1; one per core at most)
  --config FILE          TOML configuration (kebab-case keys)
  --log-level LEVEL      error, warn, info, debug, trace (default info)
  --bizid ID             the signaling node's id (default biz-1)
  --socket-dir DIR       folder of the control sockets sfu-N.sock
                         (default $RUNTIME_DIRECTORY, else /run/wren; the
                         all-in-one mode makes a private one)
  --instance N           sfu role: be sfu-N (socket, port and id follow)
  --sfu-socket PATH      signal role: an SFU control socket (repeatable;
                         replaces the socket-dir ones)
  --socket PATH          sfu role: the control socket to listen on
  --sfuid ID             sfu role: the SFU's id (default sfu-N)
  --tls-cert FILE        PEM certificate chain: serve https:// and wss://
  --tls-key FILE         PEM private key of --tls-cert
  --sfu-wrapper CMD      command prefix for SFU children, split at spaces
                         (e.g. \"nice -n 5\", \"qemu-aarch64\")
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
    CheckConfig(PathBuf),
    Token(TokenRequest),
    Help,
    Version,
}

/// What `wren token` is asked to mint.
#[derive(Debug, PartialEq)]
pub struct TokenRequest {
    pub config: PathBuf,
    pub uid: PeerId,
    pub rid: RoomId,
    pub ttl_secs: u64,
    pub publish: bool,
}

fn parse_token(args: &[String]) -> Result<Command, String> {
    let (mut config, mut uid, mut rid, mut ttl, mut publish) = (None, None, None, 86_400, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--uid" => {
                let v = value()?;
                uid = Some(PeerId::parse(v).ok_or(format!("invalid uid {v:?}"))?);
            }
            "--rid" => {
                let v = value()?;
                rid = Some(RoomId::parse(v).ok_or(format!("invalid rid {v:?}"))?);
            }
            "--ttl" => {
                let v = value()?;
                ttl = v.parse().map_err(|_| format!("invalid --ttl {v:?}"))?;
            }
            "--listen-only" => publish = false,
            other => return Err(format!("token: unknown argument {other:?}")),
        }
    }
    Ok(Command::Token(TokenRequest {
        config: config.ok_or("token: --config FILE is required")?,
        uid: uid.ok_or("token: --uid is required")?,
        rid: rid.ok_or("token: --rid is required")?,
        ttl_secs: ttl,
        publish,
    }))
}

/// Flags as given; `None` means "from the config file, else the default".
#[derive(Debug, Default, PartialEq)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub media_ip: Option<IpAddr>,
    pub media_port: Option<u16>,
    pub sfus: Option<usize>,
    pub config: Option<PathBuf>,
    pub log_level: Option<String>,
    pub bizid: Option<String>,
    pub sfuid: Option<String>,
    pub socket_dir: Option<PathBuf>,
    pub instance: Option<usize>,
    pub sfu_sockets: Vec<PathBuf>,
    pub socket: Option<PathBuf>,
    pub sfu_wrapper: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Exit when standard input closes: how an SFU child notices that its
    /// supervising parent died, whatever killed it.
    pub exit_on_stdin_eof: bool,
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().peekable();
    let role = match it.peek().map(|s| s.as_str()) {
        Some("signal") => Role::Signal,
        Some("sfu") => Role::Sfu,
        Some("token") => return parse_token(&args[1..]),
        Some("check-config") => {
            return match args {
                [_, file] => Ok(Command::CheckConfig(file.into())),
                _ => Err("check-config takes one FILE".into()),
            }
        }
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
            "--sfus" => {
                let v = value()?;
                let n = v.parse().map_err(|_| bad("count", &v))?;
                if n == 0 || n > MAX_SFUS {
                    return Err(bad(&format!("count (1..={MAX_SFUS})"), &v));
                }
                f.sfus = Some(n);
            }
            "--instance" => {
                let v = value()?;
                let n = v.parse().map_err(|_| bad("instance", &v))?;
                if n == 0 || n > MAX_SFUS {
                    return Err(bad(&format!("instance (1..={MAX_SFUS})"), &v));
                }
                f.instance = Some(n);
            }
            "--config" => f.config = Some(value()?.into()),
            "--log-level" => {
                let v = value()?;
                config::parse_level(&v)?;
                f.log_level = Some(v);
            }
            "--bizid" => f.bizid = Some(value()?),
            "--sfuid" => f.sfuid = Some(value()?),
            "--socket-dir" => f.socket_dir = Some(value()?.into()),
            "--sfu-socket" => f.sfu_sockets.push(value()?.into()),
            "--socket" => f.socket = Some(value()?.into()),
            "--sfu-wrapper" => {
                f.sfu_wrapper = Some(value()?.split_whitespace().map(String::from).collect())
            }
            "--tls-cert" => f.tls_cert = Some(value()?.into()),
            "--tls-key" => f.tls_key = Some(value()?.into()),
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
    /// UDP port of sfu-1.
    pub media_port: u16,
    pub sfus: usize,
    pub log_level: log::LevelFilter,
    pub bizid: NodeId,
    /// Set only when given: the all-in-one mode makes a private folder.
    pub socket_dir: Option<PathBuf>,
    pub instance: usize,
    pub sfuid: Option<NodeId>,
    pub sfu_sockets: Vec<PathBuf>,
    pub socket: Option<PathBuf>,
    pub sfu_wrapper: Vec<String>,
    pub liveness_timeout: Duration,
    pub limits: Limits,
    pub token_secret: Option<Secret>,
    pub allowed_origins: Vec<String>,
    pub socket_group: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The config file, passed on to SFU children.
    pub config: Option<PathBuf>,
    pub exit_on_stdin_eof: bool,
}

fn node_id(key: &str, v: String) -> Result<NodeId, String> {
    NodeId::parse(&v).ok_or_else(|| format!("{key}: invalid id {v:?}"))
}

/// The id of SFU instance `n`.
pub fn sfu_id(n: usize) -> NodeId {
    node_id("sfuid", format!("sfu-{n}")).expect("sfu-N is a valid id")
}

/// The control socket of SFU instance `n` in `dir`.
pub fn sfu_socket(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("sfu-{n}.sock"))
}

/// systemd's runtime folder when it made one, else /run/wren.
fn service_socket_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/wren"))
}

pub fn settings(f: Flags) -> Result<Settings, String> {
    let file = match &f.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let token_secret = file.token_secret()?;
    let level = f
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let sfu_sockets = if f.sfu_sockets.is_empty() {
        file.sfu_sockets.unwrap_or_default()
    } else {
        f.sfu_sockets
    };
    let media_port = f
        .media_port
        .or(file.media_port)
        .unwrap_or(DEFAULT_MEDIA_PORT);
    let sfus = f.sfus.or(file.sfus).unwrap_or(1);
    let instance = f.instance.unwrap_or(1);
    let top = sfus.max(instance);
    if usize::from(media_port) + top - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "SFU {top} does not fit above UDP port {media_port}"
        ));
    }
    Ok(Settings {
        listen: f
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
        media_ip: f
            .media_ip
            .or(file.media_ip)
            .unwrap_or_else(config::default_media_ip),
        media_port,
        sfus,
        log_level: config::parse_level(&level)?,
        bizid: node_id(
            "bizid",
            f.bizid.or(file.bizid).unwrap_or_else(|| "biz-1".into()),
        )?,
        socket_dir: f.socket_dir.or(file.socket_dir),
        instance,
        sfuid: f
            .sfuid
            .or(file.sfuid)
            .map(|v| node_id("sfuid", v))
            .transpose()?,
        sfu_sockets,
        socket: f.socket.or(file.socket),
        sfu_wrapper: f.sfu_wrapper.or(file.sfu_wrapper).unwrap_or_default(),
        liveness_timeout: Duration::from_secs(
            file.liveness_timeout_secs
                .unwrap_or(DEFAULT_LIVENESS_TIMEOUT_SECS),
        ),
        limits: file.limits,
        token_secret,
        allowed_origins: file.allowed_origins.clone().unwrap_or_default(),
        socket_group: file.socket_group.clone(),
        tls: match (f.tls_cert.or(file.tls_cert), f.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        },
        config: f.config,
        exit_on_stdin_eof: f.exit_on_stdin_eof,
    })
}

impl Settings {
    /// The signaling role's view: the explicit sockets, or `sfus` sockets
    /// in the socket folder.
    pub fn signal_config(&self, dir: &Path) -> signal::SignalConfig {
        let sfu_sockets = if self.sfu_sockets.is_empty() {
            (1..=self.sfus).map(|n| sfu_socket(dir, n)).collect()
        } else {
            self.sfu_sockets.clone()
        };
        signal::SignalConfig {
            listen: self.listen,
            bizid: self.bizid.clone(),
            sfu_sockets,
            liveness_timeout: self.liveness_timeout,
            limits: self.limits,
            tls: self.tls.clone(),
            token_secret: self.token_secret.clone(),
            allowed_origins: self.allowed_origins.clone(),
        }
    }

    /// The SFU role's view: instance N has id sfu-N, socket sfu-N.sock and
    /// UDP port media-port + N - 1, unless told otherwise.
    pub fn sfu_config(&self, dir: &Path) -> sfu::SfuConfig {
        let n = self.instance;
        sfu::SfuConfig {
            sfuid: self.sfuid.clone().unwrap_or_else(|| sfu_id(n)),
            socket: self.socket.clone().unwrap_or_else(|| sfu_socket(dir, n)),
            media_ip: self.media_ip,
            // Cannot overflow: `settings` checked the top instance's port.
            media_port: self.media_port + (n - 1) as u16,
            max_sessions: self.limits.sfu_sessions,
            connect_timeout: Duration::from_millis(self.limits.sfu_connect_timeout_ms),
            rtx_cache_packets: self.limits.rtx_cache_packets,
            socket_group: self.socket_group.clone(),
            exit_on_stdin_eof: self.exit_on_stdin_eof,
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    // RUST_LOG, when set, wins: handy for a one-off debug run.
    // tungstenite traces whole frames, and frames carry room tokens: the
    // libraries say at most `info`, whatever the level.
    let quiet = level.min(log::LevelFilter::Info);
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .with_module_level("tungstenite", quiet)
        .with_module_level("async_tungstenite", quiet)
        .with_module_level("rustls", quiet)
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
        Command::CheckConfig(path) => {
            let flags = Flags {
                config: Some(path.clone()),
                ..Flags::default()
            };
            settings(flags)?;
            println!("{}: ok", path.display());
            return Ok(());
        }
        Command::Token(req) => {
            let file = FileConfig::load(&req.config)?;
            let secret = file
                .token_secret()?
                .ok_or("token: the file sets no token-secret or token-secret-file")?;
            let key = TokenKey::new(&secret.0)?;
            let grant = Grant {
                uid: req.uid,
                rid: req.rid,
                exp: token::unix_now() + req.ttl_secs,
                publish: req.publish,
            };
            println!("{}", key.mint(&grant));
            return Ok(());
        }
        Command::Run(role, flags) => (role, flags),
    };
    let s = settings(*flags)?;
    init_logging(s.log_level);
    let dir = || s.socket_dir.clone().unwrap_or_else(service_socket_dir);
    match role {
        Role::Signal => signal::run(s.signal_config(&dir())).map_err(|e| format!("signal: {e}")),
        Role::Sfu => sfu::run(s.sfu_config(&dir())).map_err(|e| format!("sfu: {e}")),
        Role::AllInOne => supervise::run(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run_settings(s: &str) -> (Role, Settings) {
        match parse(&args(s)).unwrap() {
            Command::Run(role, f) => (role, settings(*f).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn roles_and_flags_parse() {
        let (role, s) = run_settings("sfu --socket /x.sock --media-port=5000 --media-ip 127.0.0.1");
        assert_eq!(role, Role::Sfu);
        let c = s.sfu_config(Path::new("/run/wren"));
        assert_eq!(c.media_port, 5000);
        assert_eq!(c.socket, PathBuf::from("/x.sock"));
        assert_eq!(c.sfuid.as_str(), "sfu-1");
        assert!(matches!(
            parse(&args("--listen 127.0.0.1:1")).unwrap(),
            Command::Run(Role::AllInOne, _)
        ));
        assert_eq!(
            parse(&args("check-config /etc/wren/wren.toml")).unwrap(),
            Command::CheckConfig("/etc/wren/wren.toml".into())
        );
    }

    #[test]
    fn an_sfu_instance_derives_its_id_socket_and_port() {
        let (_, s) = run_settings("sfu --instance 3 --media-port 40000 --media-ip 10.0.0.2");
        let c = s.sfu_config(Path::new("/run/wren"));
        assert_eq!(c.sfuid.as_str(), "sfu-3");
        assert_eq!(c.socket, PathBuf::from("/run/wren/sfu-3.sock"));
        assert_eq!(c.media_port, 40002);
        let (_, s) = run_settings("signal --sfus 2 --media-ip 10.0.0.2");
        let sig = s.signal_config(Path::new("/run/wren"));
        assert_eq!(
            sig.sfu_sockets,
            vec![
                PathBuf::from("/run/wren/sfu-1.sock"),
                PathBuf::from("/run/wren/sfu-2.sock")
            ]
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        for bad in [
            "--listen nope",
            "--media-port 70000",
            "--bogus",
            "--listen",
            "--log-level loud",
            "--sfus 0",
            "--sfus 99",
            "sfu --instance 0",
            "check-config",
            "token --uid a --rid r",
            "token --config f --uid 'a b' --rid r",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        let Command::Run(_, f) = parse(&args("sfu --instance 3 --media-port 65534")).unwrap()
        else {
            panic!()
        };
        assert!(settings(*f).is_err(), "sfu-3's port is past 65535");
    }
}
