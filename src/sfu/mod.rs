//! The SFU role: one process, one thread, one UDP port. It terminates
//! WebRTC with str0m ([`engine::Sfu`]) and takes orders from one
//! signaling node over a Unix control socket. This module is the shell:
//! it moves datagrams and control frames; everything else is I/O-free.
//!
//! - `engine`: the session table, control API and propagation loop;
//! - `session`: one str0m session, publisher or subscriber;
//! - `track`: up-tracks and down-tracks, matched by slot;
//! - `rewrite`: sequence numbers, timestamps and payload types per
//!   subscriber track;
//! - `keyframe`: coalesced key-frame requests;
//! - `codec`: codec negotiation;
//! - `deadlines`: when each session next needs time;
//! - `fasthash`: the hasher of the per-packet tables;
//! - `batch`: many datagrams per system call.

mod batch;
mod codec;
mod deadlines;
pub mod engine;
mod fasthash;
pub(crate) mod keyframe;
mod rewrite;
mod session;
#[cfg(test)]
mod sim;
mod track;

use crate::ids::NodeId;
use crate::ipc::{self, FromSfu, ToSfu};
use crate::limits::MAX_PENDING_SFU_CALLS;
use async_signal::{Signal, Signals};
use engine::Sfu;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::net::unix::{UnixListener, UnixStream};
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};
use str0m::net::Transmit;

/// What an SFU process needs to run.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    pub sfuid: NodeId,
    /// The control socket to listen on.
    pub socket: PathBuf,
    /// The address advertised in ICE candidates.
    pub media_ip: IpAddr,
    pub media_port: u16,
    /// Group of the control socket: mode 0660 with it, else 0600.
    pub socket_group: Option<String>,
    /// Sessions (publishers + subscribers) this process takes at most.
    pub max_sessions: usize,
    /// How long a session may take to connect.
    pub connect_timeout: Duration,
    /// Video packets kept per subscriber track for retransmission.
    pub rtx_cache_packets: usize,
    /// Exit when stdin closes (set by a supervising parent).
    pub exit_on_stdin_eof: bool,
}

/// Something from the control side, for the main loop.
enum Control {
    /// A signaling node connected; `generation` tells its messages apart
    /// from those of one it replaced.
    Connected {
        generation: u64,
        outbox: Sender<FromSfu>,
        stream: UnixStream,
    },
    Message(u64, ToSfu),
    Closed(u64),
}

pub fn run(cfg: SfuConfig) -> io::Result<()> {
    // First of all, so that a stop request never meets the default action.
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
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
    let udp = Async::new(udp)?;

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

    let sfu = Sfu::new(
        local,
        cfg.max_sessions,
        cfg.connect_timeout,
        cfg.rtx_cache_packets,
    )
    .map_err(io::Error::other)?;
    log::info!(
        "SFU {} media on udp {local}, control on {}",
        cfg.sfuid,
        cfg.socket.display()
    );

    let ex = LocalExecutor::new();
    let (tx, rx) = smol::channel::bounded(2 * MAX_PENDING_SFU_CALLS);
    let accept = async {
        accept_loop(&ex, listener, cfg.sfuid.clone(), tx).await;
        Ok(())
    };
    let stop = async {
        signals.next().await;
        log::info!("shutting down");
        crate::notify::notify("STOPPING=1");
        Ok(())
    };
    crate::notify::notify("READY=1");
    let result = smol::block_on(ex.run(media_loop(sfu, udp, rx).or(accept).or(stop)));
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

/// Accepts control connections; each new one replaces the last.
async fn accept_loop<'a>(
    ex: &LocalExecutor<'a>,
    listener: UnixListener,
    sfuid: NodeId,
    to_main: Sender<Control>,
) {
    let mut generation = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("control accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        generation += 1;
        log::info!("signaling node connected (control generation {generation})");
        let (outbox, outbox_rx) = smol::channel::bounded(2 * MAX_PENDING_SFU_CALLS);
        let hello = FromSfu::Hello {
            sfuid: sfuid.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = outbox.try_send(hello);
        ex.spawn(write_loop(stream.clone(), outbox_rx)).detach();
        ex.spawn(read_loop(generation, stream.clone(), to_main.clone()))
            .detach();
        let connected = Control::Connected {
            generation,
            outbox,
            stream,
        };
        if to_main.send(connected).await.is_err() {
            return;
        }
    }
}

async fn read_loop(generation: u64, mut stream: UnixStream, to_main: Sender<Control>) {
    loop {
        let msg = match ipc::read_frame(&mut stream).await {
            Ok(Some(frame)) => ipc::decode::<ToSfu>(&frame),
            Ok(None) => break,
            Err(e) => Err(e),
        };
        match msg {
            Ok(m) => {
                if to_main.send(Control::Message(generation, m)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                log::warn!("control connection: {e}");
                break;
            }
        }
    }
    let _ = to_main.send(Control::Closed(generation)).await;
}

async fn write_loop(mut stream: UnixStream, outbox: Receiver<FromSfu>) {
    while let Ok(msg) = outbox.recv().await {
        if ipc::write_msg(&mut stream, &msg).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// How often the SFU reports its load and counters.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

enum Wake {
    Readable,
    Control(Control),
    Timeout,
}

/// Datagrams served per wake of the media loop at most.
const RECV_BURST: usize = 32;

async fn media_loop(
    mut sfu: Sfu,
    udp: Async<UdpSocket>,
    control: Receiver<Control>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut outgoing: Vec<Transmit> = Vec::with_capacity(batch::BATCH);
    // The current control connection: its generation, outbox and stream.
    let mut owner: Option<(u64, Sender<FromSfu>, UnixStream)> = None;
    let mut next_stats = Instant::now() + STATS_INTERVAL;
    // What the loop waits on lives across its turns: a wake re-arms them
    // instead of making a timer and a channel listener every time.
    let mut timer = Timer::never();
    let mut next_control = Box::pin(control.recv());
    let mut control_open = true;
    loop {
        let deadline = sfu.poll_timeout().unwrap_or(next_stats).min(next_stats);
        timer.set_at(deadline);
        let wake = std::future::poll_fn(|cx| {
            // A closed channel (never, while the accept loop runs) stays
            // ready with an error: then it is not polled again.
            if control_open {
                if let Poll::Ready(c) = next_control.as_mut().poll(cx) {
                    return Poll::Ready(c.map_or(None, |c| Some(Wake::Control(c))));
                }
            }
            // An error (ICMP, on Linux) surfaces on the next read.
            if udp.poll_readable(cx).is_ready() {
                return Poll::Ready(Some(Wake::Readable));
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(Some(Wake::Timeout));
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        let Some(wake) = wake else {
            control_open = false;
            continue;
        };
        match wake {
            Wake::Readable => {
                // Every queued datagram up to a burst (a video frame is a
                // burst of packets), then one flush: each subscriber's
                // session is ticked once for all its packets in the burst.
                for _ in 0..RECV_BURST {
                    match udp.get_ref().recv_from(&mut buf) {
                        Ok((n, src)) => sfu.receive(now, src, &buf[..n]),
                        // Drained (WouldBlock), or an ICMP error: the next
                        // wake deals with it.
                        Err(_) => break,
                    }
                }
                sfu.flush(now);
            }
            Wake::Timeout => sfu.handle_timeout(now),
            Wake::Control(c) => {
                next_control.set(control.recv());
                match c {
                    Control::Connected {
                        generation,
                        outbox,
                        stream,
                    } => {
                        if let Some((_, _, old)) = owner.take() {
                            log::info!("a new signaling node took over: dropping every session");
                            let _ = old.shutdown(Shutdown::Both);
                            sfu.clear();
                        }
                        owner = Some((generation, outbox, stream));
                    }
                    Control::Closed(generation) => {
                        if owner.as_ref().is_some_and(|o| o.0 == generation) {
                            log::info!("signaling node gone: dropping every session");
                            owner = None;
                            sfu.clear();
                        }
                    }
                    Control::Message(generation, msg) => {
                        if let Some((_, outbox, _)) = owner.as_ref().filter(|o| o.0 == generation) {
                            if let Some(reply) = handle_control(&mut sfu, now, msg) {
                                let _ = outbox.try_send(reply);
                            }
                        }
                    }
                }
            }
        }
        send_all(&mut sfu, &udp, &mut outgoing).await;
        if now >= next_stats {
            next_stats = now + STATS_INTERVAL;
            if let Some((_, outbox, _)) = &owner {
                let _ = outbox.try_send(FromSfu::Stats(sfu.stats()));
            }
        }
        while let Some(ev) = sfu.poll_event() {
            if let Some((_, outbox, _)) = &owner {
                let _ = outbox.try_send(ev);
            }
        }
    }
}

/// Sends everything the sessions have to send, a batch per system call.
/// A datagram the kernel refuses (e.g. no route) is dropped, as a lost
/// packet would be; a full socket buffer waits for room.
async fn send_all(sfu: &mut Sfu, udp: &Async<UdpSocket>, outgoing: &mut Vec<Transmit>) {
    loop {
        while outgoing.len() < batch::BATCH {
            match sfu.poll_transmit() {
                Some(t) => outgoing.push(t),
                None => break,
            }
        }
        if outgoing.is_empty() {
            return;
        }
        match batch::send(udp.get_ref(), outgoing) {
            Ok(n) => {
                outgoing.drain(..n.clamp(1, outgoing.len()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = udp.writable().await {
                    log::warn!("UDP socket unusable: {e}");
                    outgoing.clear();
                }
            }
            Err(e) => {
                log::debug!("send to {} failed: {e}", outgoing[0].destination);
                outgoing.remove(0);
            }
        }
    }
}

fn handle_control(sfu: &mut Sfu, now: Instant, msg: ToSfu) -> Option<FromSfu> {
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
    }
}
