//! The SFU's loop: one `poll(2)` over the media socket, the control
//! listener, the control connection and the stop signals, with the
//! engine's next deadline as its timeout. Then it reads, hands to the
//! engine, and writes what the engine produced.
//!
//! Why not smol here, as in the signaling node: a wake through async-io's
//! reactor went through its helper thread (the thread blocked in
//! `epoll_wait`, then woke the main thread with a futex), two context
//! switches per wake. At meeting load (a wake per video frame) that was a
//! quarter of the SFU's CPU time in `perf`. One thread that sleeps in
//! `poll` and does the work itself has none of it.

use super::batch;
use super::engine::Sfu;
use super::handle_control;
use crate::ids::{Mid, NodeId};
use crate::ipc::{self, CallId, FrameReader, FromSfu, SfuError, ToSfu};
use crate::limits::{
    MAX_DATAGRAM_BYTES, MAX_RELAYS, SFU_CONTROL_QUEUE, SFU_RECV_BURST, SFU_SEND_BATCH,
    SFU_STATS_INTERVAL,
};
use async_signal::Signals;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};
use str0m::net::Transmit;

/// The signaling node's connection.
struct Control {
    stream: UnixStream,
    frames: FrameReader,
    /// Frames to write, the first maybe partly written.
    out: VecDeque<Vec<u8>>,
    written: usize,
}

impl Control {
    fn new(stream: UnixStream, sfuid: &NodeId) -> io::Result<Control> {
        stream.set_nonblocking(true)?;
        let mut c = Control {
            stream,
            frames: FrameReader::default(),
            out: VecDeque::new(),
            written: 0,
        };
        c.send(&FromSfu::Hello {
            sfuid: sfuid.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        });
        Ok(c)
    }

    fn send(&mut self, msg: &FromSfu) {
        if self.out.len() < SFU_CONTROL_QUEUE {
            self.out.push_back(ipc::encode(msg));
        } else {
            log::warn!("control connection not reading: message dropped");
        }
    }

    /// Writes what the socket takes. Err: the connection is broken.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(frame) = self.out.front() {
            match self.stream.write(&frame[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    if self.written == frame.len() {
                        self.out.pop_front();
                        self.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads every message waiting. Err: the connection ended or broke.
    fn read(&mut self, buf: &mut [u8], msgs: &mut Vec<ToSfu>) -> io::Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while let Some(frame) = self.frames.next_frame()? {
            msgs.push(ipc::decode(&frame)?);
        }
        Ok(())
    }
}

/// A relay's own UDP port: it calls another board's SFU from there.
struct RelayPort {
    /// Its advertised address (the media address, its port), as the
    /// engine knows it.
    local: SocketAddr,
    udp: UdpSocket,
}

impl RelayPort {
    /// A port on the media address (or, behind 1:1 NAT, the wildcard
    /// address), chosen by the kernel.
    fn bind(media: SocketAddr) -> io::Result<RelayPort> {
        let udp = UdpSocket::bind(SocketAddr::new(media.ip(), 0))
            .or_else(|_| UdpSocket::bind(SocketAddr::new(super::unspecified(media.ip()), 0)))?;
        udp.set_nonblocking(true)?;
        let local = SocketAddr::new(media.ip(), udp.local_addr()?.port());
        Ok(RelayPort { local, udp })
    }
}

pub struct Shell {
    sfu: Sfu,
    udp: UdpSocket,
    /// The media port's advertised address.
    media: SocketAddr,
    relays: heapless::Vec<RelayPort, MAX_RELAYS>,
    listener: UnixListener,
    sfuid: NodeId,
    control: Option<Control>,
    buf: Vec<u8>,
    outgoing: Vec<Transmit>,
    msgs: Vec<ToSfu>,
}

impl Shell {
    pub fn new(
        sfu: Sfu,
        udp: UdpSocket,
        media: SocketAddr,
        listener: UnixListener,
        sfuid: NodeId,
    ) -> Shell {
        Shell {
            sfu,
            udp,
            media,
            relays: heapless::Vec::new(),
            listener,
            sfuid,
            control: None,
            buf: vec![0; MAX_DATAGRAM_BYTES],
            outgoing: Vec::with_capacity(SFU_SEND_BATCH),
            msgs: Vec::new(),
        }
    }

    /// Serves until a stop signal arrives.
    pub fn run(mut self, signals: &Signals) -> io::Result<()> {
        let mut next_stats = Instant::now() + SFU_STATS_INTERVAL;
        loop {
            let deadline = self
                .sfu
                .poll_timeout()
                .unwrap_or(next_stats)
                .min(next_stats);
            let wait = deadline.saturating_duration_since(Instant::now());
            let wants_out = self.control.as_ref().is_some_and(|c| !c.out.is_empty());
            let ready = self.wait(signals, wait, wants_out)?;
            let now = Instant::now();
            if ready.stop {
                log::info!("shutting down");
                crate::notify::notify("STOPPING=1");
                return Ok(());
            }
            if ready.listener {
                self.accept();
            }
            if ready.control {
                self.read_control(now);
            }
            if ready.udp {
                // Every queued datagram up to a burst, each forwarded and
                // sent before the next is read.
                for _ in 0..SFU_RECV_BURST {
                    match self.udp.recv_from(&mut self.buf) {
                        Ok((n, src)) => self.sfu.handle_datagram(now, src, &self.buf[..n]),
                        // Drained (WouldBlock), or an ICMP error: the next
                        // wake deals with it.
                        Err(_) => break,
                    }
                    self.send_media()?;
                }
            }
            for i in ready.relays {
                self.read_relay(now, i);
                self.send_media()?;
            }
            if now >= deadline {
                self.sfu.handle_timeout(now);
            }
            self.send_media()?;
            while let Some(local) = self.sfu.poll_released() {
                self.relays.retain(|r| r.local != local);
            }
            if now >= next_stats {
                next_stats = now + SFU_STATS_INTERVAL;
                let stats = FromSfu::Stats(self.sfu.stats());
                if let Some(c) = &mut self.control {
                    c.send(&stats);
                }
            }
            while let Some(ev) = self.sfu.poll_event() {
                if let Some(c) = &mut self.control {
                    c.send(&ev);
                }
            }
            if let Some(c) = &mut self.control {
                if let Err(e) = c.flush() {
                    self.drop_control(&format!("control connection broken: {e}"));
                }
            }
        }
    }

    /// Sleeps in `poll` until something is ready or `wait` has passed.
    fn wait(&self, signals: &Signals, wait: Duration, wants_out: bool) -> io::Result<Ready> {
        let timeout = Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        let control = self.control.as_ref().map(|c| {
            let mut flags = PollFlags::IN;
            if wants_out {
                flags |= PollFlags::OUT;
            }
            PollFd::new(&c.stream, flags)
        });
        let has_control = control.is_some();
        let mut fds: heapless::Vec<PollFd<'_>, { 4 + MAX_RELAYS }> = heapless::Vec::new();
        let fixed = [
            PollFd::new(&self.udp, PollFlags::IN),
            PollFd::new(&self.listener, PollFlags::IN),
            PollFd::new(signals, PollFlags::IN),
            // Without a control connection the slot is left out of the call.
            control.unwrap_or_else(|| PollFd::new(&self.udp, PollFlags::empty())),
        ];
        // Room for all: the fixed four and at most MAX_RELAYS relays.
        for fd in fixed.into_iter().take(if has_control { 4 } else { 3 }) {
            let _ = fds.push(fd);
        }
        for r in &self.relays {
            let _ = fds.push(PollFd::new(&r.udp, PollFlags::IN));
        }
        let result = poll(&mut fds, Some(&timeout));
        match result {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Ready::default()),
            Err(e) => return Err(e.into()),
        }
        let any = |f: &PollFd| !f.revents().is_empty();
        let first_relay = if has_control { 4 } else { 3 };
        Ok(Ready {
            udp: any(&fds[0]),
            listener: any(&fds[1]),
            stop: any(&fds[2]),
            control: has_control && any(&fds[3]),
            relays: (fds[first_relay..].iter().enumerate())
                .filter(|(_, f)| any(f))
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// Takes a new control connection; it replaces the last one.
    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control accept failed: {e}");
                    return;
                }
            };
            if self.control.is_some() {
                self.drop_control("a new signaling node took over");
            }
            match Control::new(stream, &self.sfuid) {
                Ok(c) => {
                    log::info!("signaling node connected");
                    self.control = Some(c);
                }
                Err(e) => log::warn!("control connection unusable: {e}"),
            }
        }
    }

    fn read_control(&mut self, now: Instant) {
        let Some(c) = &mut self.control else {
            return;
        };
        self.msgs.clear();
        let result = c.read(&mut self.buf, &mut self.msgs);
        // Messages that came whole before an end or error still count.
        for msg in self.msgs.drain(..) {
            let reply = match msg {
                ToSfu::RelayOffer {
                    call,
                    mid,
                    audio,
                    video,
                } => Some(relay_offer(
                    &mut self.sfu,
                    &mut self.relays,
                    self.media,
                    now,
                    (call, mid, audio, video),
                )),
                msg => handle_control(&mut self.sfu, now, msg),
            };
            if let Some(reply) = reply {
                c.send(&reply);
            }
        }
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.drop_control("signaling node gone")
            }
            Err(e) => self.drop_control(&format!("control connection: {e}")),
        }
    }

    /// Every datagram waiting on relay port `i`, up to a burst.
    fn read_relay(&mut self, now: Instant, i: usize) {
        let Some(r) = self.relays.get(i) else {
            return;
        };
        for _ in 0..SFU_RECV_BURST {
            match r.udp.recv_from(&mut self.buf) {
                Ok((n, src)) => self
                    .sfu
                    .handle_relay_datagram(now, r.local, src, &self.buf[..n]),
                Err(_) => break,
            }
        }
    }

    /// Ends the control connection. Its sessions end with it: no orphan
    /// remains when a signaling node dies or another one takes over.
    fn drop_control(&mut self, why: &str) {
        if let Some(c) = self.control.take() {
            log::info!("{why}: dropping every session");
            let _ = c.stream.shutdown(Shutdown::Both);
            self.sfu.clear();
        }
    }

    /// Sends everything the sessions have to send, a batch per system
    /// call. A datagram the kernel refuses (e.g. no route) is dropped, as a
    /// lost packet would be; a full socket buffer waits for room.
    fn send_media(&mut self) -> io::Result<()> {
        loop {
            while self.outgoing.len() < SFU_SEND_BATCH {
                match self.sfu.poll_transmit() {
                    // A relay's: its feedback and ICE checks, a trickle.
                    Some(t) if t.source != self.media => {
                        if let Some(r) = self.relays.iter().find(|r| r.local == t.source) {
                            if let Err(e) = r.udp.send_to(&t.contents, t.destination) {
                                log::debug!("relay send to {} failed: {e}", t.destination);
                            }
                        }
                    }
                    Some(t) => self.outgoing.push(t),
                    None => break,
                }
            }
            if self.outgoing.is_empty() {
                return Ok(());
            }
            match batch::send(&self.udp, &self.outgoing) {
                Ok(n) => {
                    self.outgoing.drain(..n.clamp(1, self.outgoing.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(&self.udp, PollFlags::OUT)];
                    let second = Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    };
                    if let Err(e) = poll(&mut fds, Some(&second)) {
                        if e != rustix::io::Errno::INTR {
                            return Err(e.into());
                        }
                    }
                }
                Err(e) => {
                    log::debug!("send to {} failed: {e}", self.outgoing[0].destination);
                    self.outgoing.remove(0);
                }
            }
        }
    }
}

/// Starts a relay on a port of its own; the reply carries its offer.
fn relay_offer(
    sfu: &mut Sfu,
    relays: &mut heapless::Vec<RelayPort, MAX_RELAYS>,
    media: SocketAddr,
    now: Instant,
    (call, mid, audio, video): (CallId, Mid, bool, bool),
) -> FromSfu {
    if relays.is_full() {
        return FromSfu::Failed {
            call,
            error: SfuError::Full,
        };
    }
    let port = match RelayPort::bind(media) {
        Ok(p) => p,
        Err(e) => {
            let error = SfuError::Internal(format!("no port for a relay: {e}"));
            return FromSfu::Failed { call, error };
        }
    };
    match sfu.relay_offer(now, mid, (audio, video), port.local) {
        Ok(sdp) => {
            // Not full: checked above.
            let _ = relays.push(port);
            FromSfu::Answer { call, sdp }
        }
        Err(error) => FromSfu::Failed { call, error },
    }
}

/// What `poll` found ready.
#[derive(Debug, Default)]
struct Ready {
    udp: bool,
    listener: bool,
    control: bool,
    stop: bool,
    /// Relay ports with datagrams waiting (indexes into `Shell::relays`).
    relays: heapless::Vec<usize, MAX_RELAYS>,
}
