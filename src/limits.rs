//! Every bound and timer of the system, in one place, each under the one
//! name it has from its `[limits]` key (where it is configurable) to the
//! code that enforces it.
//!
//! Tables are fixed-capacity (`heapless`), so each constant here is also a
//! memory cost paid up front. The byte costs are approximate sizes of one
//! slot on a 64-bit target; the README sums them into the worst case.
//! Reaching a bound is an error the client sees (503, or a close reason for a
//! new socket), never a panic or a silent drop.

use std::time::Duration;

/// Longest uid, rid or SFU id, in bytes. Ids are stored inline.
pub const MAX_ID_LEN: usize = 64;
/// Longest mid/sid: `UID#` + digits.
pub const MAX_MEDIA_ID_LEN: usize = MAX_ID_LEN + 1 + MEDIA_ID_DIGITS;
/// Random digits after the `#` of a mid or sid (the seed shows six).
pub const MEDIA_ID_DIGITS: usize = 6;

/// Open WebSocket connections of one signaling node (424 B of table each,
/// plus [`WS_BUFFER_BYTES`] twice and the task of a live connection).
pub const MAX_CONNECTIONS: usize = 512;
/// Rooms that exist at once (80 B each: an id and a count).
pub const MAX_ROOMS: usize = 64;
/// Peers in one room: a class of 40 with its teacher and a few guests.
pub const MAX_PEERS_PER_ROOM: usize = 48;
/// Rooms one peer may be in at once.
pub const MAX_ROOMS_PER_PEER: usize = 4;
/// Streams published in one room.
pub const MAX_STREAMS_PER_ROOM: usize = 16;
/// Streams published on the whole node (248 B each).
pub const MAX_STREAMS: usize = 128;
/// Subscriptions to one stream: everyone else in a full room watching
/// one publisher (the teacher).
pub const MAX_SUBS_PER_STREAM: usize = MAX_PEERS_PER_ROOM - 1;
/// Subscriptions on the whole node (288 B each).
pub const MAX_SUBS: usize = 512;
/// SFU processes one signaling node talks to.
pub const MAX_SFUS: usize = 8;
/// Control requests in flight at once (all SFUs together, 336 B each).
pub const MAX_PENDING_SFU_CALLS: usize = 64;

/// Largest request a client may send (an SDP offer of a browser with a
/// handful of transceivers is 5–15 KiB). A larger one is answered 413.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest WebSocket message read at all: beyond it the socket is closed
/// with 1009, since not even the request id can be read.
pub const MAX_FRAME_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// Largest frame on the control socket (an offer or answer plus framing).
pub const MAX_IPC_FRAME_BYTES: usize = 128 * 1024;
/// Read and write buffer of one WebSocket (tungstenite's default is 128 KiB,
/// far more than signaling needs; a larger message still fits, it is read
/// in several steps).
pub const WS_BUFFER_BYTES: usize = 2 * 1024;
/// Largest HTTP request head the signaling node reads before it answers 431.
pub const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;
/// Messages queued towards one client before it is considered stuck and
/// disconnected (a reader that stops reading must not grow our memory).
pub const MAX_QUEUED_PER_CONNECTION: usize = 32;

/// WebRTC sessions (publishers plus subscribers) in one SFU process: a
/// subscription costs ~84 KiB in str0m plus ~0.4 KiB per packet of
/// [`DEFAULT_RTX_CACHE_PACKETS`] (132–134 KiB at the default, measured
/// with `wren-bench`; README, Capacity).
pub const MAX_SFU_SESSIONS: usize = 512;

/// A peer that sends nothing for this long is removed (seconds).
pub const DEFAULT_LIVENESS_TIMEOUT_SECS: u64 = 30;
/// How long the signaling node waits for an SFU answer (milliseconds).
pub const SFU_CALL_TIMEOUT_MS: u64 = 5_000;
/// Video packets kept per subscriber track for retransmission: ~0.75 s of
/// a 1.5 Mbit/s camera, several NACK rounds even at Wi-Fi round trips.
/// Each costs ~0.4 KiB of SFU memory per subscription (measured with
/// `wren-bench`: 84 KiB per subscription at 1 packet, 135 at 128, 210 at
/// 256; str0m's own default of 1000 would be ~500).
pub const DEFAULT_RTX_CACHE_PACKETS: usize = 128;
/// The most `[limits] rtx-cache-packets` may ask for (~1.6 MiB per
/// subscription at full-size packets).
pub const MAX_RTX_CACHE_PACKETS: usize = 4096;
/// How long an SFU keeps a session whose peer never connects (ms): a
/// browser connects within a second or two, or never.
pub const SFU_CONNECT_TIMEOUT_MS: u64 = 20_000;
/// Frames that get no answer (not JSON, no readable id, binary) a client may
/// send before its socket is closed.
pub const MAX_VIOLATIONS: u32 = 10;
/// How long a new TCP connection may take to send its request head (ms).
pub const HTTP_HEAD_TIMEOUT_MS: u64 = 10_000;
/// WebSocket ping interval; browsers answer with pong, which proves them
/// alive even when the app sends no keepalive (ms). A shorter liveness
/// timeout shortens it (see [`ping_interval`]).
pub const PING_INTERVAL_MS: u64 = 10_000;

/// How often a connection is pinged when peers are removed after
/// `liveness` of silence: [`PING_INTERVAL_MS`], or a third of `liveness`
/// when that is shorter, so that a client which only answers pings is
/// asked at least three times before it is given up.
pub fn ping_interval(liveness: Duration) -> Duration {
    Duration::from_millis(PING_INTERVAL_MS).min(liveness / 3)
}

// Timers of the signaling node and the supervisor. Compile-time only.

/// How long a client gets to answer our close frame, and how long we read
/// (and drop) what it still sends after it, before the socket is closed.
pub const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping node waits for its connections to close.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Pause after a failed `accept` (out of descriptors and the like).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Control messages queued on a control connection at most, each way
/// (node to SFU and SFU to node). Past it the node resets the connection;
/// the SFU drops the message (the node times the call out).
pub const SFU_CONTROL_QUEUE: usize = 2 * MAX_PENDING_SFU_CALLS;
/// A lost SFU control socket is retried after this, doubling up to
/// [`SFU_RETRY_MAX`].
pub const SFU_RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest pause between attempts to reach an SFU.
pub const SFU_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long an SFU may take to say hello on a new control connection.
pub const SFU_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The all-in-one mode restarts a dead SFU child after this, doubling up
/// to [`SFU_RESTART_MAX`]...
pub const SFU_RESTART_MIN: Duration = Duration::from_millis(500);
/// ...at most this long...
pub const SFU_RESTART_MAX: Duration = Duration::from_secs(30);
/// ...and starts over at the minimum for a child that ran this long.
pub const SFU_HEALTHY_AFTER: Duration = Duration::from_secs(60);

// The cluster (a Redis shared by several signaling nodes). Compile-time
// only: the promise is "a dead node is noticed within 10 s".

/// Other signaling nodes one node keeps track of at most.
pub const MAX_CLUSTER_NODES: usize = 16;
/// How often a node renews its heartbeat key and announces itself.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A node not heard from for this long is dead: three heartbeats missed.
/// Its heartbeat key expires at the same age, so that a node that comes
/// later finds the same answer in Redis. Detection takes this plus at most
/// one heartbeat interval: 8 s, inside the promised 10.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(6);
/// Longest wait for Redis to answer a command; past it the link is
/// dropped and made again (the crate itself never reconnects).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// A lost Redis link is retried after this, doubling up to
/// [`CLUSTER_RETRY_MAX`] (with jitter, so that the nodes of a cluster do
/// not all come back in the same millisecond).
pub const CLUSTER_RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest pause between attempts to reach Redis.
pub const CLUSTER_RETRY_MAX: Duration = Duration::from_secs(4);
/// Operations sent to Redis in one pipeline at most.
pub const CLUSTER_OPS_BATCH: usize = 64;
/// Pub/sub messages queued from Redis at most; past it the node has fallen
/// behind, drops the link, and resynchronises when it makes it again.
pub const CLUSTER_PUSH_QUEUE: usize = 1024;
/// After its link to Redis is made again, how long a node keeps the
/// entries of another live node that Redis no longer has, waiting for that
/// node to write its state again (a Redis that restarted empty loses
/// everything; each node writes its own back when its own link returns,
/// within the longest retry pause). Then the rooms are read once more.
/// The other nodes themselves are waited for as long (their heartbeats
/// come back with their links). It covers another node's longest pause
/// (`CLUSTER_RETRY_MAX` and its quarter of jitter), one connection attempt
/// that runs out of time, and the seconds a loaded board takes to write
/// (at 6 s, as it was, a node coming back 5 s after ours had about one).
pub const RESYNC_GRACE: Duration = Duration::from_secs(10);
const _: () = assert!(
    RESYNC_GRACE.as_millis()
        >= CLUSTER_RETRY_MAX.as_millis() * 5 / 4 + REDIS_TIMEOUT.as_millis() + 2000
);
/// Streams of other boards one node's SFUs pull at once (relays), each on
/// a UDP port of its own: past it a subscription to another board's
/// stream is refused with 503.
pub const MAX_RELAYS: usize = 32;

// The SFU's forwarding loop and media handling. Compile-time only: each
// is a trade-off measured in the SFU (see README, Capacity), not a knob an
// operator needs.

/// Largest datagram the SFU reads; a longer one is cut and then rejected
/// by str0m (WebRTC keeps packets under the path MTU, ~1200 B).
pub const MAX_DATAGRAM_BYTES: usize = 2048;
/// Datagrams the SFU reads in a row before it serves its timers and
/// control socket.
pub const SFU_RECV_BURST: usize = 32;
/// Datagrams per `sendmmsg` at most (Linux's own `UIO_MAXIOV` is 1024;
/// past a few dozen the gain is gone).
pub const SFU_SEND_BATCH: usize = 32;
/// How often each SFU reports its load and counters.
pub const SFU_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// SSRCs remembered per publisher: a few per track (media, a restart or
/// two); the oldest is forgotten first.
pub const MAX_SSRCS_PER_PUBLISHER: usize = 16;
/// After a key frame, how long the publisher would ignore a new request:
/// Chrome's 300 ms, plus the time a key frame takes to reach us.
pub const KEYFRAME_WINDOW: Duration = Duration::from_millis(350);
/// How long a key-frame request may stay unanswered before it is asked
/// again.
pub const KEYFRAME_PATIENCE: Duration = Duration::from_secs(1);
/// Packets kept after a key frame at most (~350 ms of a 3.5 Mbit/s
/// camera); a key frame followed by more is not kept at all, since a
/// subscriber given part of it could not decode what follows.
pub const KEYFRAME_CACHE_PACKETS: usize = 128;
/// The latest packets each video layer keeps (shared payloads), for a
/// subscriber that switches to it at a key frame whose first packet was
/// repaired after the packets that follow it (a repair takes a round trip
/// and a NACK: a few frames).
pub const RECENT_PACKETS: usize = 32;
/// How long a subscriber's video waits for a key frame the SFU can tell
/// apart before it starts anyway.
pub const VIDEO_START_PATIENCE: Duration = Duration::from_secs(3);

// Simulcast and per-subscriber adaptation (see `sfu::adapt`).

/// Simulcast layers received per publisher track (Chrome and Firefox send
/// at most three).
pub const MAX_LAYERS: usize = 3;
/// A layer's bitrate is measured over windows this long.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// A layer with no packet for this long is not being sent (a browser
/// pauses upper layers when its uplink is short); slow enough for a
/// 5 fps screen share.
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// Sooner when the track's other layers went on meanwhile: they are one
/// camera's, and send their frames together.
pub const LAYER_QUIET: Duration = Duration::from_millis(300);
/// How often each subscriber's layers are chosen again (besides every
/// new estimate), and a publisher's cap recomputed. Not more often: the
/// upgrade hold restarts whenever a check sees the estimate dip, and at
/// 250 ms a lifted limit took over 15 s to climb back in 2 of 30
/// simulated runs (0 of 30 at 500 ms).
pub const ALLOCATE_EVERY: Duration = Duration::from_millis(500);
/// A better layer must fit the estimate with this much to spare...
pub const UPGRADE_HEADROOM_PCT: u64 = 15;
/// ...for this long before a subscriber is moved up to it.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(3);
/// A subscriber below its best layer has its estimator pad and probe for
/// this much (percent) over what that layer needs: str0m reports a new
/// estimate only when it moved by 5 %, so an estimate that crept up just
/// to what is needed would not be seen.
pub const PROBE_MARGIN_PCT: u64 = 10;
/// A subscriber held below its best layer whose estimate has not moved
/// for this long has its estimator started again from that estimate: a
/// new estimator probes at 3 and 6 times its start, as on a new call.
/// str0m's own estimate can stall after a lifted limit (seen in the
/// browser lab: 359 kbit/s for 12 s on a free link, B on the lowest layer)
/// and probes on its own only after 15 s of it.
pub const STALL_AFTER: Duration = Duration::from_secs(4);
/// The first wait between two such restarts of one subscriber's
/// estimator, doubled after each (a link that really is that narrow is
/// probed less and less often) up to `STALL_RESTART_MAX`, and back to
/// this once it reaches its best layer.
pub const STALL_RESTART_FIRST: Duration = Duration::from_secs(4);
/// (See `STALL_RESTART_FIRST`.)
pub const STALL_RESTART_MAX: Duration = Duration::from_secs(64);
/// VP8 temporal layers a subscriber can be sent fewer of (TID 0..=3).
pub const MAX_TEMPORAL_LAYERS: usize = 4;
/// A receive-side REMB this much (percent) of what a subscriber is sent
/// is at its ceiling (libwebrtc: 1.5 times what arrives, plus 10 kbit/s):
/// the link shows no limit, the next temporal layer up may be tried.
pub const REMB_CEILING_PCT: u64 = 125;
/// A subscriber without an estimator reports its losses this often.
pub const STATS_EVERY: Duration = Duration::from_secs(1);
/// Over this fraction of its video lost in two receiver reports in a row,
/// a subscriber without an estimator is sent one temporal layer fewer at
/// once (GCC's loss-based controller backs off over 10 % too)...
pub const LOSS_HIGH: f32 = 0.10;
/// ...and the layer it lost at is not tried again for this long, doubled
/// each time it loses there again...
pub const LOSS_BACKOFF: Duration = Duration::from_secs(10);
/// ...up to this.
pub const LOSS_BACKOFF_MAX: Duration = Duration::from_secs(80);
/// Reports this soon after a step down still count what was lost before.
pub const LOSS_SETTLE: Duration = Duration::from_secs(3);
/// How long a layer tried on a REMB at its ceiling is kept while the REMB
/// grows with what now arrives (libwebrtc raises it ~8 % a second).
pub const STEP_UP_GRACE: Duration = Duration::from_secs(10);
/// Runs of skipped packets (dropped frames) a subscriber track remembers,
/// to number a late packet from before them: at 15 dropped frames a
/// second, the last 4 s.
pub const MAX_SKIP_RUNS: usize = 64;
/// Where a subscriber's estimate starts (str0m's TWCC estimator): a
/// middle layer, so that a weak link is not flooded at the start.
pub const BWE_INITIAL_BPS: u64 = 600_000;
/// The publisher is capped at what its best-served subscriber takes, with
/// this much on top (layers' rates vary with the picture).
pub const CAP_MARGIN_PCT: u64 = 25;
/// How often the cap is sent to a publisher (REMB), and how long a lower
/// cap must hold before it is sent (a raised one goes at once).
pub const CAP_EVERY: Duration = Duration::from_secs(1);
/// (See `CAP_EVERY`.)
pub const CAP_LOWER_HOLD: Duration = Duration::from_secs(10);
/// A cap raised for a better layer a subscriber wants (a trial: the layer
/// may be off at the publisher) that nobody has taken once the want is
/// gone is lowered again at once, this long after the raise at the
/// earliest; the next trial then waits twice as long for the want to
/// hold (from `UPGRADE_HOLD`), up to `CAP_TRIAL_HOLD_MAX`. A probe through
/// a bursty link can overestimate a subscriber for seconds (browser lab,
/// case 5: 380 kbit/s read as 1.05 Mbit/s for 3 s behind a `tbf`), and
/// with `CAP_LOWER_HOLD` alone each one had the publisher send its middle
/// layer for nobody for over 10 s.
pub const CAP_TRIAL_MIN: Duration = Duration::from_secs(3);
/// (See `CAP_TRIAL_MIN`.)
pub const CAP_TRIAL_HOLD_MAX: Duration = Duration::from_secs(48);

/// The bounds in force, each at most its compile-time capacity above: the
/// `[limits]` table of the config file may lower them (an edge box with
/// little memory, or a test that wants to reach a bound cheaply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Open WebSocket connections (at most [`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// Rooms at once (at most [`MAX_ROOMS`]).
    pub rooms: usize,
    /// Peers in one room (at most [`MAX_PEERS_PER_ROOM`]).
    pub peers_per_room: usize,
    /// Rooms one peer may be in (at most [`MAX_ROOMS_PER_PEER`]).
    pub rooms_per_peer: usize,
    /// Streams published in one room (at most [`MAX_STREAMS_PER_ROOM`]).
    pub streams_per_room: usize,
    /// Streams on the node (at most [`MAX_STREAMS`]).
    pub streams: usize,
    /// Subscriptions to one stream (at most [`MAX_SUBS_PER_STREAM`]).
    pub subs_per_stream: usize,
    /// Subscriptions on the node (at most [`MAX_SUBS`]).
    pub subs: usize,
    /// SFU calls in flight (at most [`MAX_PENDING_SFU_CALLS`]).
    pub pending_sfu_calls: usize,
    /// WebRTC sessions in one SFU process (at most [`MAX_SFU_SESSIONS`]).
    pub sfu_sessions: usize,
    /// Requests one connection may make per second, on average...
    pub requests_per_sec: u32,
    /// ...and in a burst.
    pub request_burst: u32,
    /// How long the signaling node waits for an SFU answer.
    pub sfu_call_timeout_ms: u64,
    /// How long an SFU keeps a session whose peer never connects.
    pub sfu_connect_timeout_ms: u64,
    /// Video packets each subscriber track keeps for retransmission
    /// (NACK/RTX): the largest part of a subscription's memory.
    pub rtx_cache_packets: usize,
    /// Seconds of silence after which a peer leaves every room.
    pub liveness_timeout_secs: u64,
}

/// Requests per second a connection may keep up (a browser sends a few
/// per minute; a join storm of a reconnecting client a dozen at once).
pub const DEFAULT_REQUESTS_PER_SEC: u32 = 20;
/// Requests a connection may make at once before the rate applies.
pub const DEFAULT_REQUEST_BURST: u32 = 50;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: MAX_CONNECTIONS,
            rooms: MAX_ROOMS,
            peers_per_room: MAX_PEERS_PER_ROOM,
            rooms_per_peer: MAX_ROOMS_PER_PEER,
            streams_per_room: MAX_STREAMS_PER_ROOM,
            streams: MAX_STREAMS,
            subs_per_stream: MAX_SUBS_PER_STREAM,
            subs: MAX_SUBS,
            pending_sfu_calls: MAX_PENDING_SFU_CALLS,
            sfu_sessions: MAX_SFU_SESSIONS,
            requests_per_sec: DEFAULT_REQUESTS_PER_SEC,
            request_burst: DEFAULT_REQUEST_BURST,
            sfu_call_timeout_ms: SFU_CALL_TIMEOUT_MS,
            sfu_connect_timeout_ms: SFU_CONNECT_TIMEOUT_MS,
            rtx_cache_packets: DEFAULT_RTX_CACHE_PACKETS,
            liveness_timeout_secs: DEFAULT_LIVENESS_TIMEOUT_SECS,
        }
    }
}

impl Limits {
    /// `liveness-timeout-secs` as a duration.
    pub fn liveness_timeout(&self) -> Duration {
        Duration::from_secs(self.liveness_timeout_secs)
    }

    /// `sfu-call-timeout-ms` as a duration.
    pub fn sfu_call_timeout(&self) -> Duration {
        Duration::from_millis(self.sfu_call_timeout_ms)
    }

    /// `sfu-connect-timeout-ms` as a duration.
    pub fn sfu_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.sfu_connect_timeout_ms)
    }

    /// Each bound must be at least 1 and at most its capacity.
    pub fn validate(&self) -> Result<(), String> {
        let table = [
            ("connections", self.connections, MAX_CONNECTIONS),
            ("rooms", self.rooms, MAX_ROOMS),
            ("peers-per-room", self.peers_per_room, MAX_PEERS_PER_ROOM),
            ("rooms-per-peer", self.rooms_per_peer, MAX_ROOMS_PER_PEER),
            (
                "streams-per-room",
                self.streams_per_room,
                MAX_STREAMS_PER_ROOM,
            ),
            ("streams", self.streams, MAX_STREAMS),
            ("subs-per-stream", self.subs_per_stream, MAX_SUBS_PER_STREAM),
            ("subs", self.subs, MAX_SUBS),
            (
                "pending-sfu-calls",
                self.pending_sfu_calls,
                MAX_PENDING_SFU_CALLS,
            ),
            ("sfu-sessions", self.sfu_sessions, MAX_SFU_SESSIONS),
            (
                "rtx-cache-packets",
                self.rtx_cache_packets,
                MAX_RTX_CACHE_PACKETS,
            ),
        ];
        for (name, value, cap) in table {
            if value == 0 || value > cap {
                return Err(format!("limits.{name} must be 1..={cap}, not {value}"));
            }
        }
        if self.requests_per_sec == 0 || self.request_burst == 0 {
            return Err("limits.requests-per-sec and request-burst must be at least 1".into());
        }
        if self.sfu_call_timeout_ms == 0 || self.sfu_connect_timeout_ms == 0 {
            return Err(
                "limits.sfu-call-timeout-ms and sfu-connect-timeout-ms must be at least 1".into(),
            );
        }
        if self.liveness_timeout_secs == 0 {
            return Err("limits.liveness-timeout-secs must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_takes_1_to_its_capacity_and_refuses_0_and_past_it() {
        assert_eq!(Limits::default().validate(), Ok(()));
        type Field = fn(&mut Limits) -> &mut usize;
        let fields: [(&str, Field, usize); 3] = [
            ("rooms", |l| &mut l.rooms, MAX_ROOMS),
            ("sfu-sessions", |l| &mut l.sfu_sessions, MAX_SFU_SESSIONS),
            (
                "rtx-cache-packets",
                |l| &mut l.rtx_cache_packets,
                MAX_RTX_CACHE_PACKETS,
            ),
        ];
        for (name, field, cap) in fields {
            for (value, ok) in [(0, false), (1, true), (cap, true), (cap + 1, false)] {
                let mut l = Limits::default();
                *field(&mut l) = value;
                match l.validate() {
                    Ok(()) => assert!(ok, "{name} = {value} accepted"),
                    Err(e) => {
                        assert!(!ok, "{name} = {value} refused: {e}");
                        assert!(e.contains(name), "{e}");
                        assert!(e.contains(&format!("1..={cap}")), "{e}");
                    }
                }
            }
        }
    }
}
