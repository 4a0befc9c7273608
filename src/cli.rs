//! The command line's grammar: flags in, [`Command`] out, and back again
//! for the SFU children (`sfu_child_args`). Only syntax lives here (is
//! it a number, an address, a known flag); what a value may be, and how
//! flags, file and defaults combine, is `config`'s job.

use crate::error::Error;
use crate::ids::{PeerId, RoomId};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The text of `wren --help`; `main` also prints it after a usage error.
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
  --bizid ID             the signaling node's id (default biz-1; unique
                         per node in a cluster)
  --cluster URL          join the cluster whose Redis is at URL
                         (redis://[[user]:password@]host[:port][/db],
                         rediss:// for TLS); needs --bizid
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
/// Which part of the server a process runs.
pub enum Role {
    /// No role named: a signaling node that supervises `--sfus` SFU child
    /// processes.
    AllInOne,
    /// `wren signal`: a signaling node only, using SFUs started apart.
    Signal,
    /// `wren sfu`: one SFU process, serving one signaling node.
    Sfu,
}

#[derive(Debug, PartialEq)]
/// What the command line asks for: the input of [`crate::operation::run`].
pub enum Command {
    /// Run a role with these flags, until stopped.
    Run(Role, Box<Flags>),
    /// `wren check-config FILE`: read and check a configuration file, then
    /// exit.
    CheckConfig(PathBuf),
    /// `wren token ...`: print a room token signed with a file's secret.
    Token(TokenRequest),
    /// `-h`, `--help`: print [`USAGE`].
    Help,
    /// `-V`, `--version`: print the version.
    Version,
}

/// What `wren token` is asked to mint.
#[derive(Debug, PartialEq)]
pub struct TokenRequest {
    pub(crate) config: PathBuf,
    pub(crate) uid: PeerId,
    pub(crate) rid: RoomId,
    pub(crate) ttl_secs: u64,
    pub(crate) publish: bool,
}

/// Flags as given; `None` means "from the config file, else the default".
/// Values are only as checked as their type makes them: ranges, ids and
/// log levels are checked by `config`, once for flags and file alike.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Flags {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) media_ip: Option<IpAddr>,
    pub(crate) media_port: Option<u16>,
    pub(crate) sfus: Option<usize>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) log_level: Option<String>,
    pub(crate) bizid: Option<String>,
    pub(crate) sfuid: Option<String>,
    pub(crate) socket_dir: Option<PathBuf>,
    pub(crate) instance: Option<usize>,
    pub(crate) sfu_sockets: Vec<PathBuf>,
    pub(crate) socket: Option<PathBuf>,
    pub(crate) sfu_wrapper: Option<Vec<String>>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) cluster: Option<String>,
    /// Exit when standard input closes: how an SFU child notices that its
    /// supervising parent died, whatever killed it.
    pub(crate) exit_on_stdin_eof: bool,
}

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

fn parse_token(args: &[String]) -> Result<Command, Error> {
    let (mut config, mut uid, mut rid, mut ttl, mut publish) = (None, None, None, 86_400, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| usage(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--uid" => {
                let v = value()?;
                uid = Some(PeerId::parse(v).ok_or_else(|| usage(format!("invalid uid {v:?}")))?);
            }
            "--rid" => {
                let v = value()?;
                rid = Some(RoomId::parse(v).ok_or_else(|| usage(format!("invalid rid {v:?}")))?);
            }
            "--ttl" => {
                let v = value()?;
                ttl = v
                    .parse()
                    .map_err(|_| usage(format!("invalid --ttl {v:?}")))?;
            }
            "--listen-only" => publish = false,
            other => return Err(usage(format!("token: unknown argument {other:?}"))),
        }
    }
    let required = |what: &str| usage(format!("token: {what} is required"));
    Ok(Command::Token(TokenRequest {
        config: config.ok_or_else(|| required("--config FILE"))?,
        uid: uid.ok_or_else(|| required("--uid"))?,
        rid: rid.ok_or_else(|| required("--rid"))?,
        ttl_secs: ttl,
        publish,
    }))
}

/// Reads the arguments after the executable's name. A first argument
/// that names no role (`signal`, `sfu`, `token`, `check-config`) starts
/// the flags of the all-in-one role.
pub fn parse(args: &[String]) -> Result<Command, Error> {
    let mut it = args.iter().peekable();
    let role = match it.peek().map(|s| s.as_str()) {
        Some("signal") => Role::Signal,
        Some("sfu") => Role::Sfu,
        Some("token") => return parse_token(&args[1..]),
        Some("check-config") => {
            return match args {
                [_, file] => Ok(Command::CheckConfig(file.into())),
                _ => Err(usage("check-config takes one FILE".into())),
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
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        let bad = |what: &str, v: &str| usage(format!("{name}: invalid {what} {v:?}"));
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
                f.sfus = Some(v.parse().map_err(|_| bad("count", &v))?);
            }
            "--instance" => {
                let v = value()?;
                f.instance = Some(v.parse().map_err(|_| bad("instance", &v))?);
            }
            "--config" => f.config = Some(value()?.into()),
            "--log-level" => f.log_level = Some(value()?),
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
            "--cluster" => f.cluster = Some(value()?),
            "--exit-on-stdin-eof" => f.exit_on_stdin_eof = true,
            other => return Err(usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Command::Run(role, Box::new(f)))
}

/// What the all-in-one supervisor tells its SFU child `instance`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SfuChild<'a> {
    pub instance: usize,
    /// The folder the parent's signaling node looks for `sfu-N.sock` in.
    pub socket_dir: &'a Path,
    pub media_ip: IpAddr,
    /// UDP port of sfu-1 (the child adds its instance).
    pub media_port: u16,
    pub log_level: log::LevelFilter,
    /// The parent's config file: the child reads its limits from it.
    pub config: Option<&'a Path>,
    /// The SFU's id (in a cluster, derived from the parent's bizid, which
    /// may have been a flag the child does not see).
    pub sfuid: &'a str,
}

/// The arguments (after the executable) that start SFU child `c`: the
/// inverse of [`parse`] for the `sfu` role, kept next to it so that the
/// two grammars cannot drift apart (see the round-trip tests).
pub(crate) fn sfu_child_args(c: &SfuChild) -> Vec<String> {
    let mut args: Vec<String> = [
        "sfu",
        "--exit-on-stdin-eof",
        "--instance",
        &c.instance.to_string(),
        "--socket-dir",
        &c.socket_dir.display().to_string(),
        "--media-ip",
        &c.media_ip.to_string(),
        "--media-port",
        &c.media_port.to_string(),
        "--log-level",
        c.log_level.as_str(),
        "--sfuid",
        c.sfuid,
    ]
    .map(String::from)
    .into();
    if let Some(config) = c.config {
        // Flags win over the file, so the parent's merged values above
        // hold whatever the file says.
        args.extend(["--config".to_string(), config.display().to_string()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn flags(s: &str) -> (Role, Flags) {
        match parse(&args(s)).unwrap() {
            Command::Run(role, f) => (role, *f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn roles_and_flags_parse() {
        let (role, f) = flags("sfu --socket /x.sock --media-port=5000 --media-ip 127.0.0.1");
        assert_eq!(role, Role::Sfu);
        assert_eq!(f.media_port, Some(5000));
        assert_eq!(f.socket, Some(PathBuf::from("/x.sock")));
        assert_eq!(f.media_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(flags("--listen 127.0.0.1:1").0, Role::AllInOne);
        assert_eq!(flags("signal").0, Role::Signal);
        assert_eq!(
            parse(&args("check-config /etc/wren/wren.toml")).unwrap(),
            Command::CheckConfig("/etc/wren/wren.toml".into())
        );
        assert_eq!(parse(&args("sfu -h")).unwrap(), Command::Help);
        assert_eq!(parse(&args("--version")).unwrap(), Command::Version);
    }

    #[test]
    fn a_token_request_parses() {
        let Command::Token(t) = parse(&args(
            "token --config f --uid a --rid r --ttl 60 --listen-only",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(t.config, PathBuf::from("f"));
        assert_eq!((t.uid.as_str(), t.rid.as_str()), ("a", "r"));
        assert_eq!((t.ttl_secs, t.publish), (60, false));
    }

    #[test]
    fn bad_syntax_is_a_usage_error() {
        for bad in [
            "--listen nope",
            "--media-port 70000",
            "--sfus two",
            "sfu --instance -1",
            "--bogus",
            "--listen",
            "check-config",
            "token --uid a --rid r",
            "token --config f --uid ü --rid r",
        ] {
            assert!(matches!(parse(&args(bad)), Err(Error::Usage(_))), "{bad}");
        }
    }

    /// The child's command line parses back into the flags it was built
    /// from (`config` checks that those flags make the intended SFU).
    #[test]
    fn sfu_child_args_parse_back() {
        let dir = Path::new("/run/user/1000/wren-7");
        let config = Path::new("/etc/wren/wren.toml");
        for file in [None, Some(config)] {
            let child = SfuChild {
                instance: 3,
                socket_dir: dir,
                media_ip: "10.0.0.2".parse().unwrap(),
                media_port: 41000,
                log_level: log::LevelFilter::Debug,
                config: file,
                sfuid: "b-sfu-3",
            };
            let Command::Run(Role::Sfu, f) = parse(&sfu_child_args(&child)).unwrap() else {
                panic!("not the sfu role")
            };
            let expected = Flags {
                instance: Some(3),
                socket_dir: Some(dir.into()),
                media_ip: child.media_ip.into(),
                media_port: Some(41000),
                log_level: Some("DEBUG".into()),
                config: file.map(PathBuf::from),
                sfuid: Some("b-sfu-3".into()),
                exit_on_stdin_eof: true,
                ..Flags::default()
            };
            assert_eq!(*f, expected);
        }
    }
}
