//! Configuration: an optional TOML file (kebab-case keys, unknown keys
//! rejected) overridden by command-line flags.

use crate::ids::NodeId;
use crate::limits::Limits;
use crate::signal::token::Secret;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_MEDIA_PORT: u16 = 40000;

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
    /// Seconds of silence after which a peer is removed.
    pub liveness_timeout_secs: Option<u64>,
    /// PEM certificate chain for https:// and wss:// (with `tls-key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// Require room tokens signed with this secret (16 bytes or more)...
    pub token_secret: Option<String>,
    /// ...or with the contents of this file (kept out of the config).
    pub token_secret_file: Option<PathBuf>,
    /// Origins (e.g. "https://meet.example") allowed to open WebSockets;
    /// unset or empty: any.
    pub allowed_origins: Option<Vec<String>>,
    /// Group of the SFU control sockets: mode 0660 with it, else 0600.
    pub socket_group: Option<String>,
    /// Bounds lower than the built-in capacities.
    #[serde(default)]
    pub limits: Limits,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let cfg: FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(l) = &self.log_level {
            parse_level(l)?;
        }
        for (key, id) in [("bizid", &self.bizid), ("sfuid", &self.sfuid)] {
            if let Some(id) = id {
                NodeId::parse(id).ok_or(format!("{key}: invalid id {id:?}"))?;
            }
        }
        if let Some(n) = self.sfus {
            if n == 0 || n > crate::limits::MAX_SFUS {
                return Err(format!("sfus must be 1..={}", crate::limits::MAX_SFUS));
            }
        }
        self.limits.validate()?;
        if self.token_secret.is_some() && self.token_secret_file.is_some() {
            return Err("token-secret and token-secret-file exclude each other".into());
        }
        if let Some(s) = &self.token_secret {
            if s.len() < crate::signal::token::MIN_SECRET_LEN {
                return Err(format!(
                    "token-secret must have at least {} bytes",
                    crate::signal::token::MIN_SECRET_LEN
                ));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls-cert and tls-key go together".into());
        }
        if self.liveness_timeout_secs == Some(0) {
            return Err("liveness-timeout-secs must be at least 1".into());
        }
        Ok(())
    }
}

impl FileConfig {
    /// The token secret, read from its file if it lives in one.
    pub fn token_secret(&self) -> Result<Option<Secret>, String> {
        if let Some(s) = &self.token_secret {
            return Ok(Some(Secret(s.as_bytes().to_vec())));
        }
        let Some(path) = &self.token_secret_file else {
            return Ok(None);
        };
        let secret = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // A trailing newline of an editor is not part of the secret.
        let secret = secret.trim_ascii_end().to_vec();
        if secret.len() < crate::signal::token::MIN_SECRET_LEN {
            return Err(format!("{}: the secret is too short", path.display()));
        }
        Ok(Some(Secret(secret)))
    }
}

pub fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("invalid log level {s:?} (error, warn, info, debug, trace)"))
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
