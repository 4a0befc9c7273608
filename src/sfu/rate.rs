//! A stream's bitrate, measured in windows: what a simulcast layer or a
//! temporal layer costs a subscriber.

use crate::limits::RATE_WINDOW;
use std::time::Instant;

/// A layer's bitrate, measured over windows of `RATE_WINDOW`. The last
/// figure is kept when the layer stops: what it will cost if it resumes.
#[derive(Debug, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    /// Bits per second; 0 until the first window ends.
    bps: u64,
    last: Option<Instant>,
}

impl RateMeter {
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.last = Some(now);
        let start = *self.window_start.get_or_insert(now);
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let sample = self.bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
            // Smoothed over about two windows: key frames come in bursts.
            self.bps = if self.bps == 0 {
                sample
            } else {
                (self.bps + sample) / 2
            };
            self.window_start = Some(now);
            self.bytes = 0;
        }
    }

    /// Bits per second (payload), 0 if not measured yet.
    pub fn bps(&self) -> u64 {
        self.bps
    }

    /// When its latest bytes came.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}
