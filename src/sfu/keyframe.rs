//! Key-frame requests towards one publisher track, coalesced.
//!
//! Every subscriber that connects, and every PLI/FIR a subscriber sends,
//! asks the publisher for a key frame. Encoders honour at most one request
//! per window (Chrome ignores a PLI that comes within 300 ms of its last
//! key frame), so asking more often only wastes the publisher's uplink.
//! A request inside the window is not dropped: it is sent once when the
//! window ends, for everyone who asked meanwhile, so no subscriber waits
//! for its own retry.

use std::time::{Duration, Instant};

/// Key-frame requests towards one publisher track, at most one per this.
pub const KEYFRAME_WINDOW: Duration = Duration::from_millis(300);

/// The request state of one publisher track.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    last_sent: Option<Instant>,
    /// Someone asked since `last_sent`, inside the window.
    pending: bool,
}

impl KeyframeRequests {
    /// Someone wants a key frame. Returns whether to ask the publisher
    /// now; if not, `poll_timeout` says when.
    pub fn request(&mut self, now: Instant) -> bool {
        if self.window_open(now) {
            self.last_sent = Some(now);
            self.pending = false;
            true
        } else {
            self.pending = true;
            false
        }
    }

    /// When a coalesced request is due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .then(|| self.last_sent.map(|t| t + KEYFRAME_WINDOW))
            .flatten()
    }

    /// Returns whether a waiting request is due now (and counts it sent).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.pending && self.window_open(now) {
            self.pending = false;
            self.last_sent = Some(now);
            true
        } else {
            false
        }
    }

    fn window_open(&self, now: Instant) -> bool {
        self.last_sent.map_or(true, |t| {
            now.saturating_duration_since(t) >= KEYFRAME_WINDOW
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn the_first_request_goes_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn requests_inside_the_window_go_once_at_its_end() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        for n in [10, 50, 200, 299] {
            assert!(!k.request(ms(t0, n)));
        }
        assert_eq!(k.poll_timeout(), Some(ms(t0, 300)));
        assert!(!k.handle_timeout(ms(t0, 299)), "not before the window ends");
        assert!(k.handle_timeout(ms(t0, 300)));
        assert!(!k.handle_timeout(ms(t0, 301)), "once for everyone");
        assert_eq!(k.poll_timeout(), None);
        // The coalesced request opened a new window.
        assert!(!k.request(ms(t0, 400)));
        assert_eq!(k.poll_timeout(), Some(ms(t0, 600)));
    }

    #[test]
    fn a_request_after_the_window_goes_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        assert!(k.request(ms(t0, 300)));
        assert!(k.request(ms(t0, 1000)));
        assert!(!k.handle_timeout(ms(t0, 5000)), "nothing was waiting");
    }

    #[test]
    fn a_late_timeout_still_sends_the_waiting_request() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        k.request(t0);
        k.request(ms(t0, 100));
        assert!(k.handle_timeout(ms(t0, 2000)));
    }
}
