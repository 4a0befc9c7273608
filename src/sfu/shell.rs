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
use crate::ids::NodeId;
use crate::ipc::{self, FrameReader, FromSfu, ToSfu};
use crate::limits::{
    MAX_DATAGRAM_BYTES, SFU_CONTROL_QUEUE, SFU_RECV_BURST, SFU_SEND_BATCH, SFU_STATS_INTERVAL,
};
use async_signal::Signals;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, UdpSocket};
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

pub struct Shell {
    sfu: Sfu,
    udp: UdpSocket,
    listener: UnixListener,
    sfuid: NodeId,
    control: Option<Control>,
    buf: Vec<u8>,
    outgoing: Vec<Transmit>,
    msgs: Vec<ToSfu>,
}

impl Shell {
    pub fn new(sfu: Sfu, udp: UdpSocket, listener: UnixListener, sfuid: NodeId) -> Shell {
        Shell {
            sfu,
            udp,
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
            if now >= deadline {
                self.sfu.handle_timeout(now);
            }
            self.send_media()?;
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
        let mut fds = [
            PollFd::new(&self.udp, PollFlags::IN),
            PollFd::new(&self.listener, PollFlags::IN),
            PollFd::new(signals, PollFlags::IN),
            // Without a control connection the slot is left out of the call.
            control.unwrap_or_else(|| PollFd::new(&self.udp, PollFlags::empty())),
        ];
        let n = if has_control { 4 } else { 3 };
        let result = poll(&mut fds[..n], Some(&timeout));
        match result {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Ready::default()),
            Err(e) => return Err(e.into()),
        }
        let any = |f: &PollFd| !f.revents().is_empty();
        Ok(Ready {
            udp: any(&fds[0]),
            listener: any(&fds[1]),
            stop: any(&fds[2]),
            control: has_control && any(&fds[3]),
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
            if let Some(reply) = handle_control(&mut self.sfu, now, msg) {
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

/// What `poll` found ready.
#[derive(Debug, Default)]
struct Ready {
    udp: bool,
    listener: bool,
    control: bool,
    stop: bool,
}
