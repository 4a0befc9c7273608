//! What a subscriber's video looked like to a decoder: from every video
//! packet it received, the frames it could decode, its freezes, the
//! simulcast layers it was sent and when it switched, and the bitrate.
//!
//! A frame counts as decoded when every packet from the last key frame up
//! to its own has arrived (retransmissions included), at the time its last
//! packet arrived or the frame before it was decoded, whichever is later:
//! what a jitter buffer waiting for repairs would do. A
//! freeze is a gap between two decoded frames longer than WebRTC's own
//! threshold for a 50 frames/s stream: max(3 × 20 ms, 20 ms + 150 ms).

use std::time::{Duration, Instant};

/// A gap between decoded frames longer than this is a freeze.
pub const FREEZE: Duration = Duration::from_millis(170);

/// One video packet as a subscriber received it.
#[derive(Debug, Clone, Copy)]
pub struct VideoPacket {
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp (one per frame).
    pub timestamp: u32,
    /// It starts a key frame.
    pub key: bool,
    /// It is part of a key frame (the test publishers' fill byte).
    pub in_key: bool,
    /// The simulcast layer it came from (the test publishers' fill byte).
    pub layer: u8,
    /// Payload bytes.
    pub bytes: usize,
    /// When it arrived.
    pub at: Instant,
}

/// A subscriber's video over a window of time.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoReport {
    /// Frames decodable in the window.
    pub frames: usize,
    /// Frames per second over the window.
    pub fps: f64,
    /// Gaps longer than [`FREEZE`] between decoded frames in the window.
    pub freezes: usize,
    /// The longest gap between decoded frames in the window.
    pub longest_gap: Duration,
    /// Layer changes in the window.
    pub switches: usize,
    /// The layers received in the window, in order, without repeats.
    pub layers: Vec<u8>,
    /// Payload bitrate received in the window, bits per second.
    pub bps: u64,
}

/// The report of `log` (every video packet received, in arrival order)
/// over `[from, to)`.
pub fn report(log: &[VideoPacket], from: Instant, to: Instant) -> VideoReport {
    let window = |p: &&VideoPacket| p.at >= from && p.at < to;
    let mut layers: Vec<u8> = log.iter().filter(window).map(|p| p.layer).collect();
    let switches = layers.windows(2).filter(|w| w[0] != w[1]).count();
    layers.dedup();
    let bytes: usize = log.iter().filter(window).map(|p| p.bytes).sum();
    let secs = to.saturating_duration_since(from).as_secs_f64().max(1e-3);

    // Decodable frames over the whole log (a window's first frame needs
    // the key frame before it), each at its last packet's arrival.
    let mut by_seq: Vec<&VideoPacket> = log.iter().collect();
    by_seq.sort_by_key(|p| p.seq);
    by_seq.dedup_by_key(|p| p.seq);
    let mut decoded: Vec<Instant> = Vec::new();
    let mut whole = false;
    let mut prev: Option<u64> = None;
    // The frame being assembled: its timestamp and its latest arrival.
    let mut frame: Option<(u32, Instant)> = None;
    for p in by_seq {
        let contiguous = prev.is_some_and(|s| p.seq == s + 1);
        prev = Some(p.seq);
        if frame.is_some_and(|(ts, _)| ts != p.timestamp) {
            if let Some((_, at)) = frame.take().filter(|_| whole && contiguous) {
                // Frames decode in order: none before the one before it.
                decoded.push(decoded.last().map_or(at, |l: &Instant| at.max(*l)));
            }
        }
        whole = p.key || (whole && contiguous);
        if !whole {
            frame = None;
            continue;
        }
        let at = frame.map_or(p.at, |(_, a)| a.max(p.at));
        frame = Some((p.timestamp, at));
    }
    if let Some((_, at)) = frame.filter(|_| whole) {
        decoded.push(decoded.last().map_or(at, |l| at.max(*l)));
    }
    let in_window: Vec<Instant> = decoded
        .into_iter()
        .filter(|t| *t >= from && *t < to)
        .collect();
    let mut gaps: Vec<Duration> = in_window.windows(2).map(|w| w[1] - w[0]).collect();
    if let Some(first) = in_window.first() {
        gaps.push(*first - from);
    }
    if let Some(last) = in_window.last() {
        gaps.push(to - *last);
    } else {
        gaps.push(to.saturating_duration_since(from));
    }
    VideoReport {
        frames: in_window.len(),
        fps: in_window.len() as f64 / secs,
        freezes: gaps.iter().filter(|g| **g > FREEZE).count(),
        longest_gap: gaps.into_iter().max().unwrap_or_default(),
        switches,
        layers,
        bps: (bytes as f64 * 8.0 / secs) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 50 frames/s stream of one layer: `n` frames of `per` packets, the
    /// first a key frame, from `t0`.
    fn stream(t0: Instant, n: u64, per: u64, layer: u8) -> Vec<VideoPacket> {
        let mut v = Vec::new();
        for f in 0..n {
            for i in 0..per {
                v.push(VideoPacket {
                    seq: f * per + i,
                    timestamp: f as u32 * 1800,
                    key: f == 0 && i == 0,
                    in_key: f == 0,
                    layer,
                    bytes: 1000,
                    at: t0 + Duration::from_millis(20 * f),
                });
            }
        }
        v
    }

    #[test]
    fn a_clean_stream_decodes_every_frame() {
        let t0 = Instant::now();
        let log = stream(t0, 100, 3, 2);
        let r = report(&log, t0, t0 + Duration::from_secs(2));
        assert_eq!(r.frames, 100);
        assert_eq!((r.freezes, r.switches), (0, 0));
        assert_eq!(r.layers, [2]);
        assert!(r.longest_gap <= Duration::from_millis(20));
        assert_eq!(r.bps, 100 * 3 * 1000 * 8 / 2);
    }

    #[test]
    fn a_lost_packet_freezes_until_the_next_key_frame() {
        let t0 = Instant::now();
        let mut log = stream(t0, 100, 3, 0);
        // Packet 3 × 20 + 1 never comes; a key frame at frame 50 heals.
        log.retain(|p| p.seq != 61);
        let k = log.iter_mut().find(|p| p.seq == 150).unwrap();
        k.key = true;
        let r = report(&log, t0, t0 + Duration::from_secs(2));
        assert_eq!(r.frames, 20 + 50, "frames 20..50 are lost");
        assert_eq!(r.freezes, 1);
        assert_eq!(r.longest_gap, Duration::from_millis(620));
    }

    #[test]
    fn a_late_repair_delays_its_frame_and_layers_are_told_apart() {
        let t0 = Instant::now();
        let mut log = stream(t0, 50, 2, 0);
        // Packet 21 (frame 10) arrives 300 ms late; from frame 30 on, the
        // stream is another layer.
        let late = log.iter().position(|p| p.seq == 21).unwrap();
        let mut p = log.remove(late);
        p.at += Duration::from_millis(300);
        log.push(p);
        for p in log.iter_mut().filter(|p| p.seq >= 60) {
            p.layer = 1;
        }
        log.sort_by_key(|p| p.at); // in arrival order, as received
        let r = report(&log, t0, t0 + Duration::from_secs(1));
        assert_eq!(r.frames, 50, "every frame decoded in the end");
        assert_eq!(r.freezes, 1, "the wait for the repair");
        assert_eq!((r.switches, r.layers.clone()), (1, vec![0, 1]));
    }
}
