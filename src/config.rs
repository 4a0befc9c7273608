//! Every setting and every rule about one, in one place: command-line
//! flags ([`Flags`]) over an optional TOML file ([`FileConfig`],
//! kebab-case keys, unknown keys refused) over the defaults, merged into
//! [`Settings`], from which each role's own config is built.
//!
//! Each rule (SFU count, port range, ids, log level, TLS pair, token
//! secret, `[limits]`) is written once and checked on every value given,
//! flag or file: a bad file is refused even where a flag overrides it,
//! since `check-config` and the other units read the same file. The error
//! blames where the value came from: a flag is a usage error, the file a
//! configuration error (see [`crate::error`]).

use crate::cli::Flags;
use crate::error::Error;
use crate::ids::NodeId;
use crate::limits::{Limits, MAX_SFUS};
use crate::sfu::SfuConfig;
use crate::signal::cluster_link::ClusterConfig;
use crate::signal::token::{Secret, MIN_SECRET_LEN};
use crate::signal::SignalConfig;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_MEDIA_PORT: u16 = 40000;
pub const DEFAULT_LOG_LEVEL: log::LevelFilter = log::LevelFilter::Info;
pub const DEFAULT_BIZID: &str = "biz-1";

/// The file, as written. Every key is optional.
// No Debug: the file may hold the token secret.
#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// HTTP + WebSocket address of the signaling node.
    pub listen: Option<SocketAddr>,
    /// Address the SFU advertises in its ICE candidates.
    pub media_ip: Option<IpAddr>,
    /// The SFU's UDP port.
    pub media_port: Option<u16>,
    /// error, warn, info, debug or trace.
    pub log_level: Option<String>,
    /// This signaling node's id (`bizid`).
    pub bizid: Option<String>,
    /// This SFU's id (`sfuid`).
    pub sfuid: Option<String>,
    /// How many SFU processes (`sfu-1`..`sfu-N`, UDP ports `media-port`..+N-1).
    pub sfus: Option<usize>,
    /// Folder of the control sockets `sfu-N.sock`.
    pub socket_dir: Option<PathBuf>,
    /// Control sockets of the SFUs a signaling node uses, when not the
    /// `sfus` sockets in `socket-dir`.
    pub sfu_sockets: Option<Vec<PathBuf>>,
    /// The control socket an SFU listens on, when not its `socket-dir` one.
    pub socket: Option<PathBuf>,
    /// A command prefix for the SFU children of the all-in-one mode, e.g.
    /// `["nice", "-n", "5"]` or `["qemu-aarch64"]`.
    pub sfu_wrapper: Option<Vec<String>>,
    /// Moved to `[limits]`: read only to say so, which `deny_unknown_fields`
    /// would not (it lists every key instead).
    liveness_timeout_secs: Option<IgnoredAny>,
    /// PEM certificate chain for https:// and wss:// (with `tls-key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// Require room tokens signed with this secret (16 bytes or more)...
    pub token_secret: Option<String>,
    /// ...or with the contents of this file (kept out of the config).
    pub token_secret_file: Option<PathBuf>,
    /// Origins (e.g. `"https://meet.example"`) allowed to open WebSockets;
    /// unset or empty: any.
    pub allowed_origins: Option<Vec<String>>,
    /// Group of the SFU control sockets: mode 0660 with it, else 0600.
    pub socket_group: Option<String>,
    /// The Redis of a cluster of signaling nodes:
    /// `redis://[[user]:password@]host[:port][/db]` or `rediss://...`.
    pub cluster: Option<String>,
    /// The CAs a `rediss://` server is checked against (default: the
    /// system's, /etc/ssl/certs/ca-certificates.crt).
    pub cluster_ca_file: Option<PathBuf>,
    /// Bounds lower than the built-in capacities.
    #[serde(default)]
    pub limits: Limits,
}

impl FileConfig {
    /// Reads and parses `path`; the rules are checked by [`Settings::new`].
    fn load(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

/// Everything a role needs, with flags, file and defaults merged and
/// every rule checked.
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
    pub limits: Limits,
    pub token_secret: Option<Secret>,
    pub allowed_origins: Vec<String>,
    pub socket_group: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The config file, passed on to SFU children.
    pub config: Option<PathBuf>,
    pub exit_on_stdin_eof: bool,
    /// The cluster's Redis, when this node is part of one.
    pub cluster: Option<ClusterConfig>,
}

// The rules. Each returns the checked value, or what is wrong with it
// (the caller says where the value came from).

/// `sfus`, `instance` and how many `sfu-sockets`: one signaling node
/// talks to MAX_SFUS at most.
fn sfu_count(n: usize) -> Result<usize, String> {
    if n == 0 || n > MAX_SFUS {
        return Err(format!("must be 1..={MAX_SFUS}, not {n}"));
    }
    Ok(n)
}

fn log_level(s: String) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("invalid log level {s:?} (error, warn, info, debug, trace)"))
}

fn node_id(s: String) -> Result<NodeId, String> {
    NodeId::parse(&s).ok_or_else(|| format!("invalid id {s:?}"))
}

fn token_secret(bytes: Vec<u8>) -> Result<Secret, String> {
    if bytes.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the secret must have at least {MIN_SECRET_LEN} bytes"
        ));
    }
    Ok(Secret(bytes))
}

/// Every SFU instance up to `top` needs its UDP port (`media-port + N - 1`).
fn ports_fit(media_port: u16, top: usize) -> Result<(), String> {
    if usize::from(media_port) + top - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "SFU {top} does not fit above UDP port {media_port}"
        ));
    }
    Ok(())
}

/// In a cluster, SFU ids are the node's bizid and the SFU's number,
/// unique cluster-wide as the bizids are; that id must fit.
fn cluster_ids(bizid: &NodeId, sfus: usize) -> Result<(), String> {
    match NodeId::parse(&format!("{bizid}-sfu-{sfus}")) {
        Some(_) => Ok(()),
        None => Err(format!(
            "too long for a cluster: its SFUs are {bizid}-sfu-N, at most {} characters",
            NodeId::CAPACITY
        )),
    }
}

fn tls_pair<T>(cert: Option<T>, key: Option<T>) -> Result<Option<(T, T)>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err("tls-cert and tls-key go together".into()),
    }
}

/// Where a value came from: the error blames it.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    Flag,
    /// The config file, or no file (a rule between file-only keys).
    File(Option<&'a Path>),
}

impl<'a> Origin<'a> {
    fn error(self, key: &str, msg: impl Display) -> Error {
        match self {
            Origin::Flag => Error::Usage(format!("--{}: {msg}", flag_of(key))),
            Origin::File(Some(p)) => Error::Config(format!("{}: {key}: {msg}", p.display())),
            Origin::File(None) => Error::Config(format!("{key}: {msg}")),
        }
    }

    /// Blames a flag when any part of a value made of several is one.
    fn any_flag(self, parts: &[Origin]) -> Origin<'a> {
        if parts.iter().any(|o| matches!(o, Origin::Flag)) {
            Origin::Flag
        } else {
            self
        }
    }
}

/// The flag of file key `key`: the same name, but for the one list whose
/// flag is repeated rather than plural.
fn flag_of(key: &str) -> &str {
    match key {
        "sfu-sockets" => "sfu-socket",
        other => other,
    }
}

/// Merges one setting: the flag's value, else the file's; `rule` checks
/// both when both are given.
fn pick<'a, T, U>(
    file_path: Option<&'a Path>,
    key: &str,
    flag: Option<T>,
    file: Option<T>,
    rule: impl Fn(T) -> Result<U, String>,
) -> Result<Option<(U, Origin<'a>)>, Error> {
    let check = |v, at: Origin<'a>| rule(v).map(|u| (u, at)).map_err(|e| at.error(key, e));
    let file = file
        .map(|v| check(v, Origin::File(file_path)))
        .transpose()?;
    let flag = flag.map(|v| check(v, Origin::Flag)).transpose()?;
    Ok(flag.or(file))
}

/// [`pick`] for settings without a rule.
fn pick_any<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

impl Settings {
    /// Merges flags, the file they name and the defaults, checking every
    /// rule.
    pub fn new(f: Flags) -> Result<Settings, Error> {
        let file = match &f.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let path = f.config.as_deref();
        let at_file = Origin::File(path);
        if file.liveness_timeout_secs.is_some() {
            return Err(at_file.error(
                "liveness-timeout-secs",
                "moved: write it under [limits] as liveness-timeout-secs",
            ));
        }
        file.limits
            .validate()
            .map_err(|e| at_file.error("[limits]", e))?;
        let token_secret = match (file.token_secret, &file.token_secret_file) {
            (Some(_), Some(_)) => {
                return Err(at_file.error("token-secret", "excludes token-secret-file"))
            }
            (Some(s), None) => {
                Some(token_secret(s.into_bytes()).map_err(|e| at_file.error("token-secret", e))?)
            }
            (None, Some(p)) => {
                let bytes = std::fs::read(p).map_err(|e| {
                    at_file.error("token-secret-file", format!("{}: {e}", p.display()))
                })?;
                // A trailing newline of an editor is not part of the secret.
                let bytes = bytes.trim_ascii_end().to_vec();
                Some(token_secret(bytes).map_err(|e| {
                    at_file.error("token-secret-file", format!("{}: {e}", p.display()))
                })?)
            }
            (None, None) => None,
        };

        let ca_file = file.cluster_ca_file.as_deref();
        let cluster = pick(path, "cluster", f.cluster, file.cluster, |url: String| {
            ClusterConfig::parse(&url, ca_file)
        })?;
        if cluster.is_none() && ca_file.is_some() {
            return Err(at_file.error("cluster-ca-file", "is for a cluster: set cluster too"));
        }
        let log_level = pick(path, "log-level", f.log_level, file.log_level, log_level)?;
        let bizid = pick(path, "bizid", f.bizid, file.bizid, node_id)?;
        let sfuid = pick(path, "sfuid", f.sfuid, file.sfuid, node_id)?;
        let sfus = pick(path, "sfus", f.sfus, file.sfus, sfu_count)?;
        // A flag only: each SFU unit passes its own.
        let instance = pick(path, "instance", f.instance, None, sfu_count)?;
        let media_port = pick(path, "media-port", f.media_port, file.media_port, Ok)?;
        // An empty list is no list: the `sfus` sockets in the socket folder.
        let given = |v: Vec<PathBuf>| (!v.is_empty()).then_some(v);
        let sfu_sockets = pick(
            path,
            "sfu-sockets",
            given(f.sfu_sockets),
            file.sfu_sockets.and_then(given),
            |v| sfu_count(v.len()).map(|_| v),
        )?;

        let (sfus, sfus_at) = sfus.unwrap_or((1, at_file));
        let (instance, instance_at) = instance.unwrap_or((1, at_file));
        let (media_port, port_at) = media_port.unwrap_or((DEFAULT_MEDIA_PORT, at_file));
        // `socket` and `sfuid` in the file name one SFU: with several, each
        // instance (a child, or a `wren-sfu@N` unit reading the same file)
        // would take the same ones and collide.
        let sfuid_in_file = matches!(sfuid, Some((_, Origin::File(_))));
        for (key, set) in [("socket", file.socket.is_some()), ("sfuid", sfuid_in_file)] {
            if set && sfus > 1 {
                return Err(at_file.error(
                    key,
                    format!(
                        "names one SFU, but there are {sfus}: leave it out (sfu-N takes its own)"
                    ),
                ));
            }
        }
        let top = sfus.max(instance);
        let at = at_file.any_flag(&[port_at, sfus_at, instance_at]);
        ports_fit(media_port, top).map_err(|e| at.error("media-port", e))?;

        // Two nodes with the default bizid would take each other's rooms
        // for their own: a cluster needs each node named.
        if let Some((_, cluster_at)) = &cluster {
            match &bizid {
                None => {
                    return Err(cluster_at.error(
                        "cluster",
                        "needs a bizid of this node's own (unique in the cluster)",
                    ))
                }
                Some((id, at)) => cluster_ids(id, top).map_err(|e| at.error("bizid", e))?,
            }
        }
        let cluster = cluster.map(|(c, _)| c);

        let at_tls = if f.tls_cert.is_some() || f.tls_key.is_some() {
            Origin::Flag
        } else {
            at_file
        };
        let tls = tls_pair(
            pick_any(f.tls_cert, file.tls_cert),
            pick_any(f.tls_key, file.tls_key),
        )
        .map_err(|e| at_tls.error("tls-cert", e))?;

        Ok(Settings {
            listen: pick_any(f.listen, file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
            media_ip: pick_any(f.media_ip, file.media_ip).unwrap_or_else(default_media_ip),
            media_port,
            sfus,
            log_level: log_level.map_or(DEFAULT_LOG_LEVEL, |(l, _)| l),
            bizid: bizid.map_or_else(
                || NodeId::parse(DEFAULT_BIZID).expect("valid default id"),
                |(id, _)| id,
            ),
            socket_dir: pick_any(f.socket_dir, file.socket_dir),
            instance,
            sfuid: sfuid.map(|(id, _)| id),
            sfu_sockets: sfu_sockets.map_or_else(Vec::new, |(v, _)| v),
            socket: pick_any(f.socket, file.socket),
            sfu_wrapper: pick_any(f.sfu_wrapper, file.sfu_wrapper).unwrap_or_default(),
            limits: file.limits,
            token_secret,
            allowed_origins: file.allowed_origins.unwrap_or_default(),
            socket_group: file.socket_group,
            tls,
            config: f.config,
            exit_on_stdin_eof: f.exit_on_stdin_eof,
            cluster,
        })
    }

    /// The settings of `file` alone, as `check-config` and `token` see it.
    pub fn of_file(file: &Path) -> Result<Settings, Error> {
        Settings::new(Flags {
            config: Some(file.into()),
            ..Flags::default()
        })
    }

    /// The signaling role's view: the explicit sockets, or `sfus` sockets
    /// in the socket folder.
    pub fn signal_config(&self, dir: &Path) -> SignalConfig {
        let sfu_sockets = if self.sfu_sockets.is_empty() {
            (1..=self.sfus).map(|n| sfu_socket(dir, n)).collect()
        } else {
            self.sfu_sockets.clone()
        };
        SignalConfig {
            listen: self.listen,
            bizid: self.bizid.clone(),
            sfu_sockets,
            limits: self.limits,
            tls: self.tls.clone(),
            token_secret: self.token_secret.clone(),
            allowed_origins: self.allowed_origins.clone(),
            cluster: self.cluster.clone(),
        }
    }

    /// The SFU role's view: instance N has id sfu-N, socket sfu-N.sock and
    /// UDP port media-port + N - 1, unless told otherwise.
    pub fn sfu_config(&self, dir: &Path) -> SfuConfig {
        let n = self.instance;
        SfuConfig {
            sfuid: self.sfu_id(n),
            socket: self.socket.clone().unwrap_or_else(|| sfu_socket(dir, n)),
            media_ip: self.media_ip,
            // Cannot overflow: `new` checked the top instance's port.
            media_port: self.media_port + (n - 1) as u16,
            limits: self.limits,
            socket_group: self.socket_group.clone(),
            exit_on_stdin_eof: self.exit_on_stdin_eof,
        }
    }
}

impl Settings {
    /// The id of SFU instance `n`: `sfuid` when given, else sfu-N, or in
    /// a cluster BIZID-sfu-N (unique cluster-wide).
    pub fn sfu_id(&self, n: usize) -> NodeId {
        if let Some(id) = &self.sfuid {
            return id.clone();
        }
        let id = match self.cluster {
            Some(_) => format!("{}-sfu-{n}", self.bizid),
            None => format!("sfu-{n}"),
        };
        // `new` checked that the longest fits.
        NodeId::parse(&id).expect("a valid SFU id")
    }
}

/// The control socket of SFU instance `n` in `dir`.
pub fn sfu_socket(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("sfu-{n}.sock"))
}

/// The host's first non-loopback IPv4 address, as the kernel would pick it
/// for outgoing traffic; 127.0.0.1 when there is none. A UDP `connect`
/// sends nothing: it only asks the routing table.
pub fn default_media_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command, Role};
    use std::time::Duration;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn settings(s: &str) -> Result<(Role, Settings), Error> {
        match parse(&args(s))? {
            Command::Run(role, f) => Ok((role, Settings::new(*f)?)),
            other => panic!("{other:?}"),
        }
    }

    /// A config file in a folder of its own, removed on drop. Its own:
    /// tests run in parallel, and a folder they shared could be removed by
    /// one while another creates its file in it.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("wren-config-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir(self.0.parent().unwrap());
        }
    }

    #[test]
    fn roles_and_flags_make_role_configs() {
        let (role, s) =
            settings("sfu --socket /x.sock --media-port=5000 --media-ip 127.0.0.1").unwrap();
        assert_eq!(role, Role::Sfu);
        let c = s.sfu_config(Path::new("/run/wren"));
        assert_eq!(c.media_port, 5000);
        assert_eq!(c.socket, PathBuf::from("/x.sock"));
        assert_eq!(c.sfuid.as_str(), "sfu-1");
    }

    #[test]
    fn an_sfu_instance_derives_its_id_socket_and_port() {
        let (_, s) = settings("sfu --instance 3 --media-port 40000 --media-ip 10.0.0.2").unwrap();
        let c = s.sfu_config(Path::new("/run/wren"));
        assert_eq!(c.sfuid.as_str(), "sfu-3");
        assert_eq!(c.socket, PathBuf::from("/run/wren/sfu-3.sock"));
        assert_eq!(c.media_port, 40002);
        let (_, s) = settings("signal --sfus 2 --media-ip 10.0.0.2").unwrap();
        let sig = s.signal_config(Path::new("/run/wren"));
        assert_eq!(
            sig.sfu_sockets,
            vec![
                PathBuf::from("/run/wren/sfu-1.sock"),
                PathBuf::from("/run/wren/sfu-2.sock")
            ]
        );
        assert_eq!(sig.limits.liveness_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for bad in [
            "--log-level loud",
            "--sfus 0",
            "--sfus 99",
            "sfu --instance 0",
            "sfu --instance 9",
            "--bizid ü",
            "--tls-cert c.pem",
            "signal --sfu-socket 1 --sfu-socket 2 --sfu-socket 3 --sfu-socket 4 \
             --sfu-socket 5 --sfu-socket 6 --sfu-socket 7 --sfu-socket 8 --sfu-socket 9",
            // sfu-3's port is past 65535.
            "sfu --instance 3 --media-port 65534",
            // A cluster needs each node named, with room for its SFU ids.
            "--cluster redis://127.0.0.1/",
            "--cluster http://127.0.0.1/ --bizid a",
            "--cluster redis:// --bizid a",
        ] {
            match settings(bad) {
                Err(Error::Usage(e)) => {
                    // It names one of the flags given.
                    let flag = e.split(':').next().unwrap();
                    assert!(flag.starts_with("--") && bad.contains(flag), "{bad}: {e}")
                }
                other => panic!("{bad}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn bad_file_values_are_config_errors_naming_file_and_key() {
        for (text, key) in [
            ("sfus = 0", "sfus"),
            (
                "sfu-sockets = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\"]",
                "sfu-sockets",
            ),
            ("log-level = \"loud\"", "log-level"),
            ("sfuid = \"a b\"", "sfuid"),
            ("tls-key = \"k.pem\"", "tls-cert"),
            ("token-secret = \"short\"", "token-secret"),
            (
                "token-secret = \"0123456789abcdef\"\ntoken-secret-file = \"/f\"",
                "token-secret",
            ),
            ("media-port = 65535\nsfus = 2", "media-port"),
            (
                "[limits]\nliveness-timeout-secs = 0",
                "liveness-timeout-secs",
            ),
            ("[limits]\nrooms = 0", "rooms"),
            ("sfus = 2\nsocket = \"/run/x.sock\"", "socket"),
            ("sfus = 2\nsfuid = \"edge\"", "sfuid"),
            ("bogus = 1", "bogus"),
            ("cluster = \"redis://r/\"", "cluster"),
            ("cluster = \"tcp://r/\"\nbizid = \"a\"", "cluster"),
            ("cluster-ca-file = \"/ca.pem\"", "cluster-ca-file"),
            (
                "cluster = \"redis://r/\"\nbizid = \"a\"\ncluster-ca-file = \"/ca.pem\"",
                "cluster",
            ),
            (
                "cluster = \"rediss://r/\"\nbizid = \"a\"\ncluster-ca-file = \"/nonexistent.pem\"",
                "nonexistent.pem",
            ),
            (
                format!("cluster = \"redis://r/\"\nbizid = \"{}\"", "b".repeat(60)).as_str(),
                "bizid",
            ),
        ] {
            let f = TempFile::new("bad.toml", text);
            match Settings::of_file(&f.0) {
                Err(Error::Config(e)) => {
                    assert!(e.contains("bad.toml"), "{text}: {e}");
                    assert!(e.contains(key), "{text}: {e}");
                }
                other => panic!("{text}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn a_bad_file_value_is_refused_even_when_a_flag_overrides_it() {
        let f = TempFile::new("override.toml", "sfus = 0");
        let cmd = format!("--sfus 2 --config {}", f.0.display());
        assert!(matches!(settings(&cmd), Err(Error::Config(_))));
    }

    #[test]
    fn the_liveness_timeout_is_a_limits_key_and_the_old_key_says_so() {
        let f = TempFile::new("liveness.toml", "[limits]\nliveness-timeout-secs = 7");
        let s = Settings::of_file(&f.0).unwrap();
        let sig = s.signal_config(Path::new("/run/wren"));
        assert_eq!(sig.limits.liveness_timeout(), Duration::from_secs(7));
        let f = TempFile::new("old.toml", "liveness-timeout-secs = 7");
        let Err(Error::Config(e)) = Settings::of_file(&f.0) else {
            panic!("the old key is accepted")
        };
        assert!(e.contains("[limits]"), "{e}");
    }

    #[test]
    fn a_cluster_derives_sfu_ids_from_the_bizid_and_hides_its_password() {
        let (_, s) =
            settings("--cluster redis://:pw@10.0.0.9:7000/2 --bizid hall-3 --sfus 2").unwrap();
        assert_eq!(s.sfu_id(2).as_str(), "hall-3-sfu-2");
        let shown = s.cluster.as_ref().unwrap().to_string();
        assert_eq!(shown, "redis://:***@10.0.0.9:7000/2");
        assert!(!format!("{s:?}").contains("pw@"), "{s:?}");
        let (_, s) = settings("sfu --instance 2 --bizid hall-3").unwrap();
        assert_eq!(s.sfu_id(2).as_str(), "sfu-2", "no cluster: as before");
        let (_, s) = settings("--cluster redis://u:pw@r/ --bizid b --sfuid edge").unwrap();
        assert_eq!(s.sfu_id(1).as_str(), "edge", "a given sfuid wins");
        assert_eq!(s.cluster.unwrap().to_string(), "redis://u:***@r:6379/0");
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = TempFile::new(
            "merge.toml",
            "media-port = 41000\nlog-level = \"debug\"\nsfus = 2\n\
             token-secret = \"0123456789abcdef\"\n",
        );
        let cmd = format!("--media-port 42000 --config {}", f.0.display());
        let (_, s) = settings(&cmd).unwrap();
        assert_eq!(s.media_port, 42000);
        assert_eq!(s.log_level, log::LevelFilter::Debug);
        assert_eq!(s.sfus, 2);
        assert!(s.token_secret.is_some());
    }
}
