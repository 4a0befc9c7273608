//! The SFU role: one process, one thread, one UDP port. It terminates
//! WebRTC with str0m ([`engine::Sfu`]) and takes orders from one
//! signaling node over a Unix control socket. This module sets the
//! process up; `shell` moves datagrams and control frames; everything
//! else is I/O-free.
//!
//! - `engine`: the session table, control API and propagation loop;
//! - `session`: one str0m session, publisher or subscriber;
//! - `track`: up-tracks and down-tracks, matched by slot;
//! - `packet`: one publisher packet as it is relayed;
//! - `layer`: a publisher track's simulcast layers and their bitrates;
//! - `adapt`: which layer each subscriber track receives;
//! - `cap`: the most a publisher is told to send;
//! - `rewrite`: sequence numbers, timestamps and payload types per
//!   subscriber track;
//! - `keyframe`: coalesced key-frame requests;
//! - `codec`: codec negotiation;
//! - `deadlines`: when each session next needs time;
//! - `fasthash`: the hasher of the per-packet tables;
//! - `shell`: the loop that moves datagrams and control frames;
//! - `batch`: many datagrams per system call.

mod adapt;
mod batch;
mod cap;
mod codec;
mod deadlines;
pub mod engine;
mod fasthash;
pub mod keyframe;
mod layer;
mod packet;
mod rate;
mod rewrite;
mod session;
mod shell;
#[cfg(test)]
mod sim;
mod temporal;
mod track;

use crate::ids::NodeId;
use crate::ipc::{FromSfu, SfuError, ToSfu};
use crate::limits::Limits;
use async_signal::{Signal, Signals};
use engine::Sfu;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

/// What an SFU process needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SfuConfig {
    pub sfuid: NodeId,
    /// The control socket to listen on.
    pub socket: PathBuf,
    /// The address advertised in ICE candidates.
    pub media_ip: IpAddr,
    pub media_port: u16,
    /// Group of the control socket: mode 0660 with it, else 0600.
    pub socket_group: Option<String>,
    /// The bounds in force (sessions, connect timeout, retransmission
    /// cache; the rest are the signaling node's).
    pub limits: Limits,
    /// Exit when stdin closes (set by a supervising parent).
    pub exit_on_stdin_eof: bool,
}

pub(crate) fn run(cfg: SfuConfig) -> io::Result<()> {
    // First of all, so that a stop request never meets the default action.
    let signals = Signals::new([Signal::Term, Signal::Int])?;
    if cfg.exit_on_stdin_eof {
        let socket = cfg.socket.clone();
        std::thread::spawn(move || {
            // Blocks until the parent's end of the pipe closes.
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            log::info!("supervisor gone, exiting");
            // The supervisor made the socket's folder for us alone; it may
            // have died too suddenly to tidy up.
            let _ = std::fs::remove_file(&socket);
            if let Some(dir) = socket.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            std::process::exit(0);
        });
    }
    let local = SocketAddr::new(cfg.media_ip, cfg.media_port);
    // Bind the advertised address itself when it is ours; behind 1:1 NAT it
    // is not, and the wildcard address receives the same traffic.
    let udp = UdpSocket::bind(local)
        .or_else(|_| UdpSocket::bind(SocketAddr::new(unspecified(cfg.media_ip), cfg.media_port)))
        .map_err(|e| io::Error::new(e.kind(), format!("UDP port {local}: {e}")))?;
    let local = SocketAddr::new(cfg.media_ip, udp.local_addr()?.port());
    udp.set_nonblocking(true)?;

    if cfg.socket.exists() {
        // A stale socket of an earlier run: binding over it would fail.
        std::fs::remove_file(&cfg.socket)?;
    }
    // Bound under a temporary name and renamed once its mode is right, so
    // that the control socket never appears with the default permissions.
    let staging = cfg.socket.with_extension("sock.new");
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", staging.display())))?;
    restrict_socket(&staging, cfg.socket_group.as_deref())?;
    std::fs::rename(&staging, &cfg.socket)?;
    listener.set_nonblocking(true)?;

    let sfu = Sfu::new(local, &cfg.limits).map_err(io::Error::other)?;
    log::info!(
        "SFU {} media on udp {local}, control on {}",
        cfg.sfuid,
        cfg.socket.display()
    );
    crate::notify::notify("READY=1");
    let result = shell::Shell::new(sfu, udp, local, listener, cfg.sfuid.clone()).run(&signals);
    // Sessions end with the process; the control socket must not linger.
    let _ = std::fs::remove_file(&cfg.socket);
    result
}

/// Only our user (mode 0600), or also a configured group (0660), may talk
/// to the control socket: whoever can, can place media sessions.
fn restrict_socket(path: &std::path::Path, group: Option<&str>) -> io::Result<()> {
    let mode = match group {
        Some(name) => {
            let gid = group_id(name)?;
            std::os::unix::fs::chown(path, None, Some(gid))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A group's id from /etc/group.
fn group_id(name: &str) -> io::Result<u32> {
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| io::Error::other(format!("no group {name:?} in /etc/group")))
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Carries out one control message; the reply to send, if any.
pub(crate) fn handle_control(sfu: &mut Sfu, now: Instant, msg: ToSfu) -> Option<FromSfu> {
    match msg {
        ToSfu::Publish { call, mid, offer } => Some(match sfu.publish(now, mid, &offer) {
            Ok(sdp) => FromSfu::Answer { call, sdp },
            Err(error) => FromSfu::Failed { call, error },
        }),
        ToSfu::Subscribe {
            call,
            sid,
            mid,
            offer,
        } => Some(match sfu.subscribe(now, sid, &mid, &offer) {
            Ok(sdp) => FromSfu::Answer { call, sdp },
            Err(error) => FromSfu::Failed { call, error },
        }),
        ToSfu::Unpublish { mid } => {
            sfu.unpublish(&mid);
            None
        }
        ToSfu::Unsubscribe { sid } => {
            sfu.unsubscribe(&sid);
            None
        }
        ToSfu::PinLayer { sid, layer } => {
            sfu.pin_layer(now, &sid, layer);
            None
        }
        ToSfu::RelayAnswer { mid, answer } => {
            sfu.relay_answer(now, &mid, &answer);
            None
        }
        // Needs a port of its own: the shell binds one first.
        ToSfu::RelayOffer { call, .. } => Some(FromSfu::Failed {
            call,
            error: SfuError::Internal("a relay needs the shell".into()),
        }),
    }
}
