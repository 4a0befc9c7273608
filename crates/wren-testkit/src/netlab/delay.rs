//! The delay line: this kernel has no netem, so delay and jitter are
//! done here. Each client has a TUN device `d<n>` in the router's
//! namespace; while the client's link delays, policy routing sends both
//! its directions through it (mod.rs). One thread reads every TUN, holds
//! each packet until its release time and writes it back, and the kernel
//! routes it on. The direction is told by the destination: the client's
//! own address means downlink.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tun_rs::SyncDevice;

/// How long the thread sleeps at most between looks at its stop flag:
/// the bound on how long dropping a lab waits for it.
const TICK: Duration = Duration::from_millis(20);

/// Packets held at once, over all clients; beyond that a packet is
/// dropped (and counted). 20 000 is 1 s of 240 Mbit/s of full-size
/// packets: far above what a test sends, low enough to bound memory.
const MAX_HELD: usize = 20_000;

/// Indexes of the two directions in `[Hold; 2]`.
pub(super) const UP: usize = 0;
/// See [`UP`].
pub(super) const DOWN: usize = 1;

/// How long one direction holds its packets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Hold {
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub keep_order: bool,
}

/// The running delay line of a lab.
pub(super) struct DelayLine {
    holds: Arc<Mutex<Vec<[Hold; 2]>>>,
    stop: Arc<AtomicBool>,
    overflow: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// A packet waiting for its release time. Ordered by time, then by
/// arrival, so that equal times leave in the order they came.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Instant,
    seq: u64,
    client: usize,
    packet: Vec<u8>,
}

impl DelayLine {
    /// Starts the thread over `devices` (client k's TUN and address at
    /// index k), each direction holding as `holds` says.
    pub(super) fn start(
        devices: Vec<(SyncDevice, Ipv4Addr)>,
        holds: Vec<[Hold; 2]>,
    ) -> io::Result<DelayLine> {
        for (device, _) in &devices {
            // Non-blocking, so that a drain stops when the TUN is empty
            // and the thread gets back to its releases and its stop flag.
            device.set_nonblocking(true)?;
        }
        let holds = Arc::new(Mutex::new(holds));
        let stop = Arc::new(AtomicBool::new(false));
        let overflow = Arc::new(AtomicU64::new(0));
        let thread = {
            let (holds, stop, overflow) = (holds.clone(), stop.clone(), overflow.clone());
            std::thread::Builder::new()
                .name("netlab delay".into())
                .spawn(move || serve(&devices, &holds, &stop, &overflow))?
        };
        Ok(DelayLine {
            holds,
            stop,
            overflow,
            thread: Some(thread),
        })
    }

    /// Changes client k's holds from the next packet on (packets already
    /// held keep their release times).
    pub(super) fn set(&self, client: usize, holds: [Hold; 2]) {
        if let Ok(mut all) = self.holds.lock() {
            all[client] = holds;
        }
    }

    /// Packets dropped because the line held `MAX_HELD` already.
    pub(super) fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Bounded: the thread looks at the flag at least every TICK.
            let _ = thread.join();
        }
    }
}

/// The thread: release what is due, wait for packets or the next
/// release (at most a TICK), take in what arrived; until told to stop.
/// The TUN descriptors close when it returns.
fn serve(
    devices: &[(SyncDevice, Ipv4Addr)],
    holds: &Mutex<Vec<[Hold; 2]>>,
    stop: &AtomicBool,
    overflow: &AtomicU64,
) {
    // Best effort: without it the line still works, only less exactly
    // on a busy machine.
    let _ = super::sys::hurry();
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    // Per client and direction, the latest release time given: with
    // keep_order, no packet is released before it.
    let mut last = vec![[Instant::now(); 2]; devices.len()];
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.0.at <= now) {
            let Reverse(h) = held.pop().expect("peeked");
            // A full TUN queue or a vanished route loses the packet, as
            // a wire would.
            let _ = devices[h.client].0.send(&h.packet);
        }
        let wait = held
            .peek()
            .map_or(TICK, |h| h.0.at.saturating_duration_since(now).min(TICK));
        let mut fds: Vec<_> = devices
            .iter()
            .map(|(d, _)| rustix::event::PollFd::new(d, rustix::event::PollFlags::IN))
            .collect();
        let timeout = rustix::event::Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            // EINTR; anything else would repeat, but the TICK bounds it.
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let Ok(snapshot) = holds.lock().map(|h| h.clone()) else {
            return;
        };
        for (client, (device, ip)) in devices.iter().enumerate() {
            if !ready[client] {
                continue;
            }
            // At most 256 a round, so releases stay on time under a flood.
            for _ in 0..256 {
                let Ok(n) = device.recv(&mut buf) else {
                    break;
                };
                // Read now, not before the loop: a packet that came while
                // the loop read others would leave early by that much (a
                // 50 ms delay once measured 49.99 ms in CI).
                let now = Instant::now();
                let packet = &buf[..n];
                // IPv4 only: the lab routes nothing else here.
                if n < 20 || packet[0] >> 4 != 4 {
                    continue;
                }
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                let dir = if dst == *ip { DOWN } else { UP };
                if held.len() >= MAX_HELD {
                    overflow.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let hold = snapshot[client][dir];
                let at = release(now, hold, &mut last[client][dir]);
                seq += 1;
                held.push(Reverse(Held {
                    at,
                    seq,
                    client,
                    packet: packet.to_vec(),
                }));
            }
        }
    }
}

/// When a packet that arrived `now` leaves: `delay ± jitter` (uniform,
/// never before `now`), and with keep_order never before the previous
/// packet of its direction (`last`, updated).
fn release(now: Instant, hold: Hold, last: &mut Instant) -> Instant {
    let jitter = f64::from(hold.jitter_ms) * (fastrand::f64() * 2.0 - 1.0);
    let ms = (f64::from(hold.delay_ms) + jitter).max(0.0);
    let mut at = now + Duration::from_secs_f64(ms / 1000.0);
    if hold.keep_order {
        at = at.max(*last);
    }
    *last = at;
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_within_delay_and_jitter_and_in_order() {
        let now = Instant::now();
        let hold = Hold {
            delay_ms: 75,
            jitter_ms: 15,
            keep_order: true,
        };
        let mut last = now;
        let mut prev = now;
        for _ in 0..1000 {
            let at = release(now, hold, &mut last);
            let ms = at.duration_since(now).as_secs_f64() * 1000.0;
            assert!((60.0..=90.0).contains(&ms), "{ms} ms");
            assert!(at >= prev, "a packet overtook the one before it");
            prev = at;
        }
    }

    #[test]
    fn without_order_packets_may_overtake() {
        let now = Instant::now();
        let hold = Hold {
            delay_ms: 10,
            jitter_ms: 10,
            keep_order: false,
        };
        let mut last = now;
        let times: Vec<Instant> = (0..200).map(|_| release(now, hold, &mut last)).collect();
        assert!(times.windows(2).any(|w| w[1] < w[0]));
        // Never before it arrived, even when jitter exceeds the delay.
        let hold = Hold {
            delay_ms: 0,
            jitter_ms: 20,
            keep_order: false,
        };
        assert!((0..200).all(|_| release(now, hold, &mut last) >= now));
    }
}
