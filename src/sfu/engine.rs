//! The SFU's core: the session table, its control API, and the loop that
//! propagates what one session produced to the others. No I/O: datagrams
//! and `now` go in; datagrams to send and control events come out
//! (`poll_transmit`, `poll_event`), and `poll_timeout` says when to call
//! again.
//!
//! str0m runs in RTP mode: packets are relayed, never depacketized, with
//! str0m's own NACK/RTX and RTCP on both legs. Sessions are never driven
//! from inside each other (str0m's `chat.rs` is the model): draining a
//! session queues its happenings (a packet, a key-frame request, a
//! connection), the loop in `Sfu::propagate` hands them to the sessions
//! they concern and marks those for draining, until nothing is left.

use super::adapt::{below_top, layer_costs, probe_for, Ceiling, LayerView};
use super::codec::{rtc_config, Link};
use super::deadlines::Deadlines;
use super::fasthash::FastMap;
use super::keyframe::Ask;
use super::session::{Happening, RelayLeg, Role, Session, SessionId, Subscriber};
use super::temporal::{remb_budget, StepUp};
use super::track::{Media, Slot};
use crate::ids::{Mid, Sid};
use crate::ipc::{FromSfu, LayerPin, SfuError, SfuStats};
use crate::limits::{
    Limits, ALLOCATE_EVERY, MAX_SFU_SESSIONS, STALL_AFTER, STALL_RESTART_FIRST, STALL_RESTART_MAX,
};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid as TrackMid, Rid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Input, Rtc};

/// All sessions of one SFU process.
pub struct Sfu {
    sfu_sessions: usize,
    sfu_connect_timeout: Duration,
    rtx_cache_packets: usize,
    /// One DTLS certificate for every session (making one is slow).
    cert: DtlsCert,
    candidate: Candidate,
    local: SocketAddr,
    /// Boxed: a str0m `Rtc` is ~12 KiB, and a table of inline sessions
    /// would keep that much for every empty slot it grows.
    sessions: FastMap<SessionId, Box<Session>>,
    by_addr: FastMap<SocketAddr, SessionId>,
    publishers: HashMap<Mid, SessionId>,
    subscribers: HashMap<Sid, SessionId>,
    /// Relays, by the address of their own UDP port.
    relays: FastMap<SocketAddr, SessionId>,
    /// Relays' ports no longer used, for the shell to close.
    released: Vec<SocketAddr>,
    next_id: u64,
    /// When each session next needs `handle_timeout`.
    deadlines: Deadlines<SessionId>,
    /// What sessions produced for others, not yet propagated.
    queue: VecDeque<(SessionId, Happening)>,
    /// Sessions to drain (their `dirty` flag is set).
    dirty: Vec<SessionId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<FromSfu>,
    forwarded_packets: u64,
    forwarded_bytes: u64,
}

impl Sfu {
    /// An SFU whose one UDP socket is reachable at `local` (the address
    /// put in every answer's host candidate).
    /// Sessions past `limits.sfu_sessions` are refused; a session whose
    /// peer has not connected after `limits.sfu_connect_timeout_ms` is given
    /// up; each subscriber track keeps `limits.rtx_cache_packets`.
    pub fn new(local: SocketAddr, limits: &Limits) -> Result<Sfu, String> {
        let candidate =
            Candidate::host(local, "udp").map_err(|e| format!("bad media address {local}: {e}"))?;
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or("cannot generate a DTLS certificate")?;
        Ok(Sfu {
            sfu_sessions: limits.sfu_sessions.min(MAX_SFU_SESSIONS),
            sfu_connect_timeout: limits.sfu_connect_timeout(),
            rtx_cache_packets: limits.rtx_cache_packets,
            cert,
            candidate,
            local,
            sessions: FastMap::default(),
            by_addr: FastMap::default(),
            publishers: HashMap::new(),
            subscribers: HashMap::new(),
            relays: FastMap::default(),
            released: Vec::new(),
            next_id: 1,
            deadlines: Deadlines::default(),
            queue: VecDeque::new(),
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            forwarded_packets: 0,
            forwarded_bytes: 0,
        })
    }

    /// Load and counters, for the signaling node's metrics.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            publishers: self.publishers.len() as u32,
            subscribers: self.subscribers.len() as u32,
            forwarded_packets: self.forwarded_packets,
            forwarded_bytes: self.forwarded_bytes,
        }
    }

    /// The next datagram to send from the media socket, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next message for the signaling node (a stream or
    /// subscription that closed), in order.
    pub fn poll_event(&mut self) -> Option<FromSfu> {
        self.events.pop_front()
    }

    /// A relay's port that is no longer used: the shell closes it.
    pub fn poll_released(&mut self) -> Option<SocketAddr> {
        self.released.pop()
    }

    /// The earliest time any session needs `handle_timeout`.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let sessions = &self.sessions;
        self.deadlines
            .next(|id| sessions.get(&id).and_then(|s| s.deadline))
    }

    // ----- control -----

    /// Answers a publisher's offer.
    pub fn publish(&mut self, now: Instant, mid: Mid, offer: &str) -> Result<String, SfuError> {
        if self.publishers.contains_key(&mid) {
            return Err(SfuError::Duplicate);
        }
        // Its tracks are known only once it connects (str0m's events wait
        // for SRTP); whether it offered simulcast is known now, for the
        // subscribers that come before.
        let simulcast = offer.lines().any(|l| l.starts_with("a=simulcast:"));
        let role = Role::publisher(mid.clone(), simulcast);
        let (id, answer) = self.new_session(now, offer, role, Link::Publisher)?;
        self.publishers.insert(mid, id);
        Ok(answer)
    }

    /// Answers a subscriber's offer with the tracks of stream `mid`.
    pub fn subscribe(
        &mut self,
        now: Instant,
        sid: Sid,
        mid: &Mid,
        offer: &str,
    ) -> Result<String, SfuError> {
        if self.subscribers.contains_key(&sid) {
            return Err(SfuError::Duplicate);
        }
        let publisher = *self.publishers.get(mid).ok_or(SfuError::NoSuchStream)?;
        // Only a simulcast stream has layers to fit a subscriber's link.
        let simulcast = matches!(
            self.sessions.get(&publisher).map(|s| &s.role),
            Some(Role::Publisher(p)) if p.offered_simulcast
        );
        let link = if simulcast {
            Link::Estimated
        } else {
            Link::Plain
        };
        let role = Role::subscriber(sid.clone(), publisher);
        let (id, answer) = self.new_session(now, offer, role, link)?;
        if let Some(Role::Publisher(p)) = self.sessions.get_mut(&publisher).map(|p| &mut p.role) {
            p.subscribers.push(id);
        }
        self.subscribers.insert(sid, id);
        Ok(answer)
    }

    /// Starts pulling stream `mid` from another board's SFU: a relay, a
    /// full-ICE client on its own UDP port (`local`, bound by the shell),
    /// receiving what `audio` and `video` say. Returns its offer, for the
    /// other board; `relay_answer` completes it. Until it connects the
    /// relay is a publisher of `mid` like any other: subscribers may come.
    pub fn relay_offer(
        &mut self,
        now: Instant,
        mid: Mid,
        (audio, video): (bool, bool),
        local: SocketAddr,
    ) -> Result<String, SfuError> {
        if self.publishers.contains_key(&mid) || self.relays.contains_key(&local) {
            return Err(SfuError::Duplicate);
        }
        if self.sessions.len() >= self.sfu_sessions {
            return Err(SfuError::Full);
        }
        if !(audio || video) {
            return Err(SfuError::BadOffer("a relay of nothing".into()));
        }
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| SfuError::Internal(format!("relay port {local}: {e}")))?;
        let mut rtc = rtc_config("", Link::Relay, &self.cert, self.rtx_cache_packets).build(now);
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mut tracks = Vec::with_capacity(2);
        for (wanted, kind) in [(audio, MediaKind::Audio), (video, MediaKind::Video)] {
            if wanted {
                let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                tracks.push((mid, kind));
            }
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| SfuError::Internal("no relay offer".into()))?;
        let mut role = Role::publisher(mid.clone(), false);
        if let Role::Publisher(p) = &mut role {
            p.relay = Some(RelayLeg {
                local,
                offer: Some(pending),
            });
        }
        let mut session = Box::new(Session::new(rtc, role, now));
        for (track, kind) in tracks {
            session.add_track(track, kind, &[]);
        }
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.sessions.insert(id, session);
        self.publishers.insert(mid, id);
        self.relays.insert(local, id);
        self.mark(id);
        self.propagate(now);
        Ok(offer.to_sdp_string())
    }

    /// The other board's answer to relay `mid`'s offer. One that cannot be
    /// used ends the relay (reported as its stream closing).
    pub fn relay_answer(&mut self, now: Instant, mid: &Mid, answer: &str) {
        let Some(&id) = self.publishers.get(mid) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let pending = match &mut s.role {
            Role::Publisher(p) => p.relay.as_mut().and_then(|r| r.offer.take()),
            Role::Subscriber(_) => None,
        };
        let Some(pending) = pending else {
            log::debug!("stream {mid}: an answer, but no relay offer waits for one");
            return;
        };
        let accepted = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| e.to_string())
            .and_then(|a| (s.rtc.sdp_api().accept_answer(pending, a)).map_err(|e| e.to_string()));
        match accepted {
            Ok(()) => self.mark(id),
            Err(e) => {
                log::warn!("relay of {mid}: unusable answer: {e}");
                self.remove(id, true);
            }
        }
        self.propagate(now);
    }

    /// Relays pulling from other boards now.
    pub fn relays(&self) -> usize {
        self.relays.len()
    }

    /// Stops a stream and every subscription to it.
    pub fn unpublish(&mut self, mid: &Mid) {
        if let Some(id) = self.publishers.get(mid).copied() {
            self.remove(id, false);
        }
    }

    /// Stops one subscription.
    pub fn unsubscribe(&mut self, sid: &Sid) {
        if let Some(id) = self.subscribers.get(sid).copied() {
            self.remove(id, false);
        }
    }

    /// Pins the highest layer a subscription receives (None: unpinned).
    /// Takes effect at once; a stream without simulcast is unaffected.
    pub fn pin_layer(&mut self, now: Instant, sid: &Sid, layer: Option<LayerPin>) {
        let Some(&id) = self.subscribers.get(sid) else {
            return;
        };
        let Some(Role::Subscriber(sub)) = self.sessions.get_mut(&id).map(|s| &mut s.role) else {
            return;
        };
        let ceiling = layer.map(|l| match l {
            LayerPin::Low => Ceiling::Low,
            LayerPin::Medium => Ceiling::Mid,
            LayerPin::High => Ceiling::High,
        });
        sub.ceiling = ceiling;
        for t in sub.tracks.iter_mut() {
            t.ceiling = ceiling;
        }
        let publisher = sub.publisher;
        self.allocate(now, publisher, Some(id));
        self.propagate(now);
    }

    /// Drops every session (the control connection that owned them is gone).
    pub fn clear(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id, false);
        }
        self.queue.clear();
        self.events.clear();
    }

    /// Sessions in the table (publishers and subscribers).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn new_session(
        &mut self,
        now: Instant,
        offer: &str,
        role: Role,
        link: Link,
    ) -> Result<(SessionId, String), SfuError> {
        if self.sessions.len() >= self.sfu_sessions {
            return Err(SfuError::Full);
        }
        let parsed = SdpOffer::from_sdp_string(offer)
            .map_err(|e| SfuError::BadOffer(format!("unparsable SDP: {e}")))?;
        let mut rtc = rtc_config(offer, link, &self.cert, self.rtx_cache_packets).build(now);
        rtc.add_local_candidate(self.candidate.clone());
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.sessions
            .insert(id, Box::new(Session::new(rtc, role, now)));
        self.mark(id);
        self.propagate(now);
        if !self.sessions.contains_key(&id) {
            return Err(SfuError::Internal("session failed at start".into()));
        }
        Ok((id, answer.to_sdp_string()))
    }

    // ----- network and time -----

    /// A datagram arrived on the media socket from `source`.
    ///
    /// Each subscriber written to is ticked and drained before this
    /// returns. Deferring that over a burst of datagrams (one tick for
    /// several packets) was measured: no CPU saved at meeting load (a wake
    /// rarely holds more than one datagram), and 12–15 KiB more per
    /// subscription, as str0m's send-side buffers grew with the packets
    /// written between two ticks.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(input) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return; // Not STUN, DTLS, RTP or RTCP: a stranger's noise.
        };
        let input = Input::Receive(now, input);
        let id = match self.by_addr.get(&source) {
            Some(id) if self.sessions.get(id).is_some_and(|s| s.rtc.accepts(&input)) => *id,
            _ => {
                let Some(id) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    log::trace!("no session accepts a datagram from {source}");
                    return;
                };
                self.by_addr.insert(source, id);
                id
            }
        };
        self.receive(now, id, input);
    }

    /// Hands one received datagram to session `id` and propagates what
    /// it produced.
    fn receive(&mut self, now: Instant, id: SessionId, input: Input) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Err(e) = s.rtc.handle_input(input) {
                log::debug!("session {id:?}: input rejected: {e}");
                s.rtc.disconnect();
            }
            self.drain(id);
        }
        self.propagate(now);
    }

    /// A datagram arrived on relay port `local` from `source`: it can only
    /// be for that relay (its port is its alone).
    pub fn handle_relay_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        source: SocketAddr,
        data: &[u8],
    ) {
        let Some(&id) = self.relays.get(&local) else {
            return;
        };
        let Ok(input) = Receive::new(Protocol::Udp, source, local, data) else {
            return;
        };
        let input = Input::Receive(now, input);
        if self
            .sessions
            .get(&id)
            .is_some_and(|s| !s.rtc.accepts(&input))
        {
            log::trace!("relay port {local}: a stranger's datagram from {source}");
            return;
        }
        self.receive(now, id, input);
    }

    /// Gives every session whose deadline has passed what is due: str0m's
    /// timeout, a coalesced key-frame request, or the end of its time to
    /// connect.
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            let sessions = &self.sessions;
            let due = self
                .deadlines
                .pop_due(now, |id| sessions.get(&id).and_then(|s| s.deadline));
            let Some(id) = due else {
                break;
            };
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.deadline = None;
            if !s.connected && s.created + self.sfu_connect_timeout <= now {
                log::info!(
                    "session {id:?}: no connection within {:?}",
                    self.sfu_connect_timeout
                );
                s.rtc.disconnect();
            }
            if let Role::Publisher(p) = &mut s.role {
                for t in p.tracks.iter_mut() {
                    for l in t.layers.iter_mut() {
                        if l.keyframes.handle_timeout(now) {
                            log::debug!("session {id:?}: a key frame request that waited goes out");
                            ask_keyframe(&mut s.rtc, t.mid, l.rid);
                        }
                    }
                }
            }
            self.mark(id);
        }
        self.propagate(now);
    }

    // ----- propagation -----

    /// Marks a session for draining (with a tick of its clock).
    fn mark(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            mark_session(s, id, &mut self.dirty);
        }
    }

    /// Drains one session now: its datagrams out, its happenings queued,
    /// its next deadline set; removed if it died.
    fn drain(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let queue = &mut self.queue;
        let alive = s.drain(&mut self.transmits, &mut |h| queue.push_back((id, h)));
        if !alive {
            self.remove(id, true);
            return;
        }
        let mut next = s.rtc_timeout;
        if !s.connected {
            next = next.min(s.created + self.sfu_connect_timeout);
        }
        if let Some(k) = s.keyframe_deadline() {
            next = next.min(k);
        }
        if s.deadline != Some(next) {
            s.deadline = Some(next);
            let sessions = &self.sessions;
            self.deadlines.push(id, next, sessions.len(), |id| {
                sessions.get(&id).and_then(|s| s.deadline)
            });
        }
    }

    /// Hands every queued happening to the sessions it concerns, which are
    /// marked for draining.
    fn hand_out(&mut self, now: Instant) {
        while let Some((from, h)) = self.queue.pop_front() {
            match h {
                Happening::Packet(pkt) => self.forward(now, from, pkt),
                Happening::KeyframeRequest(track) => self.relay_keyframe_request(now, from, track),
                Happening::Connected => self.on_connected(now, from),
                Happening::Estimate => {
                    let publisher = match self.sessions.get_mut(&from).map(|s| &mut s.role) {
                        Some(Role::Subscriber(sub)) => {
                            log::debug!("session {from:?}: estimate {:?}", sub.estimate);
                            sub.estimate_at = Some(now);
                            sub.publisher
                        }
                        _ => continue,
                    };
                    self.allocate(now, publisher, Some(from));
                }
            }
        }
    }

    /// Hands every queued happening to the sessions it concerns and drains
    /// those, until nothing is left.
    fn propagate(&mut self, now: Instant) {
        loop {
            self.hand_out(now);
            if self.dirty.is_empty() {
                return;
            }
            let mut dirty = std::mem::take(&mut self.dirty);
            for id in dirty.drain(..) {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.dirty = false;
                    s.tick(now);
                    self.drain(id);
                }
            }
            // Keep the allocation: nothing marked a session meanwhile
            // (draining only queues happenings).
            if self.dirty.is_empty() {
                self.dirty = dirty;
            }
        }
    }

    fn on_connected(&mut self, now: Instant, id: SessionId) {
        log::debug!("session {id:?} connected");
        if let Some(Role::Subscriber(sub)) = self.sessions.get(&id).map(|s| &s.role) {
            let publisher = sub.publisher;
            self.start_subscriber(now, id, publisher);
        }
    }

    /// A subscriber's connection is up: its video must start at once. Its
    /// layers are chosen; each video track starts from that layer's latest
    /// key frame if one just went by (a PLI now would be ignored), else
    /// from one asked for now (or already on its way). Media flows to it
    /// from then on.
    fn start_subscriber(&mut self, now: Instant, id: SessionId, publisher: SessionId) {
        self.allocate(now, publisher, Some(id));
        let targets: Vec<(Slot, usize)> = match self.sessions.get(&id).map(|s| &s.role) {
            Some(Role::Subscriber(sub)) => sub
                .tracks
                .iter()
                .map(|t| (t.slot, t.target.unwrap_or(0)))
                .collect(),
            _ => return,
        };
        let mut replay: Vec<(Slot, usize, Vec<Media>)> = Vec::new();
        if let Some(p) = self.sessions.get_mut(&publisher) {
            if let Role::Publisher(up) = &mut p.role {
                for t in up.tracks.iter_mut() {
                    if t.slot.kind != MediaKind::Video {
                        continue;
                    }
                    let li = targets
                        .iter()
                        .find(|(s, _)| *s == t.slot)
                        .map_or(0, |(_, l)| *l);
                    let Some(l) = t.layers.get_mut(li) else {
                        continue;
                    };
                    if l.keyframes.recent_keyframe(now) {
                        if let Some(cached) = l.cache.replay(now) {
                            replay.push((t.slot, li, cached.to_vec()));
                            continue;
                        }
                    }
                    let ask = l.keyframes.request(now);
                    log::debug!("session {id:?}: waits for a key frame ({ask:?})");
                    if ask == Ask::Now {
                        ask_keyframe(&mut p.rtc, t.mid, l.rid);
                    }
                }
            }
            self.mark(publisher);
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Role::Subscriber(sub) = &mut s.role else {
            return;
        };
        for (slot, layer, packets) in &replay {
            if let Some(track) = sub.tracks.iter_mut().find(|t| t.slot == *slot) {
                log::debug!("session {id:?}: starts from a cached key frame");
                for m in packets {
                    if track.accepts(now, *layer, m) {
                        track.write(&mut s.rtc, now, m);
                    }
                }
            }
        }
        sub.started = true;
        self.mark(id);
    }

    /// Relays a subscriber's PLI/FIR to the publisher's matching track.
    fn relay_keyframe_request(&mut self, now: Instant, id: SessionId, track: TrackMid) {
        let Some(Role::Subscriber(sub)) = self.sessions.get(&id).map(|s| &s.role) else {
            return;
        };
        let Some(t) = sub.tracks.iter().find(|t| t.mid == track) else {
            return;
        };
        let (publisher, slot, layer) = (sub.publisher, t.slot, t.keyframe_layer());
        self.request_keyframe(now, publisher, slot, layer);
    }

    /// Asks a publisher for a key frame on one layer of one video track;
    /// coalesced per layer (see `keyframe`).
    /// Returns what was done about it (None: no such video layer).
    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: SessionId,
        slot: Slot,
        layer: usize,
    ) -> Option<Ask> {
        let s = self.sessions.get_mut(&publisher)?;
        let Role::Publisher(p) = &mut s.role else {
            return None;
        };
        let rtc = &mut s.rtc;
        let ask = (p.tracks.iter_mut())
            .find(|t| t.slot == slot && slot.kind == MediaKind::Video)
            .and_then(|t| {
                let l = t.layers.get_mut(layer)?;
                let ask = l.keyframes.request(now);
                if ask == Ask::Now {
                    ask_keyframe(rtc, t.mid, l.rid);
                }
                Some(ask)
            });
        // Drained even when nothing went out now: its deadline may have
        // moved to a coalesced request.
        self.mark(publisher);
        ask
    }

    /// Chooses again the layer each subscriber of `publisher` receives (or
    /// only `only`'s), asks for the key frames the switches need, and
    /// updates the publisher's cap. Without simulcast there is no layer to
    /// choose: only the cap, from the subscribers' REMBs.
    fn allocate(&mut self, now: Instant, publisher: SessionId, only: Option<SessionId>) {
        let Some(Role::Publisher(up)) = self.sessions.get(&publisher).map(|s| &s.role) else {
            return;
        };
        if !up.simulcast() {
            let take = remb_take(&self.sessions, &up.subscribers).map(|t| (t, t));
            self.allocate_temporal(now, publisher, only);
            if only.is_none() {
                self.cap_publisher(now, publisher, take);
            }
            return;
        }
        let mut tracks: Vec<(Slot, Vec<LayerView>)> =
            up.tracks.iter().map(|t| (t.slot, t.views(now))).collect();
        for ((_, views), costs) in tracks.iter_mut().zip(&up.cap.costs) {
            for (v, &c) in views.iter_mut().zip(costs) {
                v.bps = v.bps.max(c);
            }
        }
        let subscribers = match only {
            Some(id) => vec![id],
            None => up.subscribers.clone(),
        };
        let fixed: u64 = tracks
            .iter()
            .filter(|(_, l)| l.len() == 1)
            .map(|(_, l)| l[0].bps)
            .sum();
        let layered = tracks.iter().filter(|(_, l)| l.len() > 1).count() as u64;
        let whole: u64 = tracks
            .iter()
            .flat_map(|(_, l)| l.iter())
            .map(|l| l.bps)
            .sum();
        let mut switches: Vec<(Slot, usize)> = Vec::new();
        // What the best-served subscriber takes, now and wanted (a better
        // layer its estimate carries); None: unknown (a layer not
        // measured yet), no cap.
        let mut take: Option<(u64, u64)> = Some((0, 0));
        for id in subscribers {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Role::Subscriber(sub) = &mut s.role else {
                continue;
            };
            // Audio and single-layer tracks first; the rest shared out.
            let budget = sub
                .estimate
                .map(|e| e.saturating_sub(fixed) / layered.max(1));
            let (mut takes, mut minimum) = (Some((fixed, fixed)), fixed);
            let mut below = false;
            for (slot, layers) in tracks.iter().filter(|(_, l)| l.len() > 1) {
                let Some(track) = sub.tracks.iter_mut().find(|t| t.slot == *slot) else {
                    continue;
                };
                // Until a packet went out, the first choice is free.
                let target = track.current.and(track.target);
                let choice = track
                    .choice
                    .choose(now, layers, target, budget, track.ceiling);
                if choice != track.target {
                    if let Some(layer) = choice {
                        log::debug!(
                            "session {id:?}: layer {:?} -> {layer} (estimate {:?})",
                            track.target,
                            sub.estimate
                        );
                        if track.current != Some(layer) {
                            switches.push((*slot, layer));
                        }
                    }
                    track.target = choice;
                }
                takes = takes
                    .zip(layer_costs(layers, track.target, budget, track.ceiling))
                    .map(|((now, want), (n, w))| (now + n, want + w));
                minimum += track.target.map_or(0, |t| probe_for(layers, t));
                below |= below_top(layers, track.target, track.ceiling);
            }
            take = take
                .zip(takes)
                .map(|((now, want), (n, w))| (now.max(n), want.max(w)));
            // Probe toward what the next layer up needs (padding fills what media does
            // not), never past what the whole stream needs. Told only when
            // it changes by a tenth: each call re-arms str0m's estimator
            // and pacer timers, and one every allocation delayed its probes
            // (measured: a lifted limit then took over 15 s to climb back in
            // 4 of 30 simulated runs).
            let wanted = (minimum.min(whole), whole.max(1));
            let moved = |a: u64, b: u64| a.abs_diff(b) * 10 > b;
            let changed = sub
                .bwe_set
                .is_none_or(|(m, d)| moved(wanted.0, m) || moved(wanted.1, d));
            if sub.estimate.is_some() && changed {
                sub.bwe_set = Some(wanted);
                s.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(wanted.0), Bitrate::bps(wanted.1));
            }
            restart_if_stalled(now, id, sub, &mut s.rtc, below);
            self.mark(id);
        }
        for (slot, layer) in switches {
            self.request_keyframe(now, publisher, slot, layer);
        }
        if only.is_none() {
            self.cap_publisher(now, publisher, take);
        }
    }

    /// For a publisher of one encoding per track: the VP8 temporal layers
    /// each subscriber of `publisher` (or only `only`) receives, from its
    /// estimate, else its REMB (None: all of them). A receive-side REMB
    /// reads at most about 1.5 times what arrives (libwebrtc's rate
    /// control caps it so), so it cannot show the headroom a simulcast
    /// upgrade waits for: here a layer up is taken once it fits for the
    /// upgrade hold.
    fn allocate_temporal(&mut self, now: Instant, publisher: SessionId, only: Option<SessionId>) {
        let Some(Role::Publisher(up)) = self.sessions.get(&publisher).map(|s| &s.role) else {
            return;
        };
        let tracks: Vec<(Slot, Vec<LayerView>)> = up
            .tracks
            .iter()
            .map(|t| (t.slot, t.layers[0].temporal.views(now)))
            .collect();
        let layered = tracks.iter().filter(|(_, v)| v.len() > 1).count() as u64;
        let fixed: u64 = up
            .tracks
            .iter()
            .zip(&tracks)
            .filter(|(_, (_, v))| v.len() < 2)
            .map(|(t, _)| t.layers[0].rate.bps())
            .sum();
        let subscribers = match only {
            Some(id) => vec![id],
            None => up.subscribers.clone(),
        };
        for id in subscribers {
            let Some(Role::Subscriber(sub)) = self.sessions.get_mut(&id).map(|s| &mut s.role)
            else {
                continue;
            };
            let share = |b: u64| b.saturating_sub(fixed) / layered.max(1);
            let (estimate, remb) = (
                sub.estimate.map(share),
                sub.remb.filter(|_| sub.remb_settled).map(share),
            );
            let loss = sub.video_loss.take();
            for (slot, views) in &tracks {
                let Some(track) = sub.tracks.iter_mut().find(|t| t.slot == *slot) else {
                    continue;
                };
                let target = match views.len() {
                    0 | 1 => None,
                    n => {
                        let top = n - 1;
                        let at = track.temporal.target.map_or(top, |t| (t as usize).min(top));
                        if let Some(loss) = loss {
                            track.temporal.loss.report(now, loss, at);
                        }
                        let allowed = track.temporal.loss.allowed(now, top);
                        let (views, at) = (&views[..=allowed], at.min(allowed));
                        let budget = estimate.or_else(|| {
                            let step = &mut track.temporal.step_up;
                            remb.map(|r| remb_budget(now, r, views, at, step))
                        });
                        let choice =
                            track
                                .choice
                                .choose_with(now, views, Some(at), budget, None, 0);
                        if estimate.is_none() && choice.is_some_and(|c| c > at) {
                            track.temporal.step_up = Some(StepUp::new(now, views[at].bps));
                        }
                        choice.filter(|&c| c < top).map(|c| c as u8)
                    }
                };
                if target != track.temporal.target {
                    log::debug!(
                        "session {id:?}: temporal layers up to {target:?} (REMB {:?}, loss {loss:?})",
                        sub.remb
                    );
                    track.temporal.target = target;
                }
            }
        }
    }

    /// Tells a publisher (REMB) not to send more than its best-served
    /// subscriber takes (`take`: now and wanted, bits per second; None:
    /// unknown), with a margin: for simulcast, the layers that subscriber's
    /// estimate carries; for one layer, the highest REMB of its
    /// subscribers. When a cap goes out is `Cap::next`'s to say.
    fn cap_publisher(&mut self, now: Instant, publisher: SessionId, take: Option<(u64, u64)>) {
        let Some(s) = self.sessions.get_mut(&publisher) else {
            return;
        };
        let Role::Publisher(p) = &mut s.role else {
            return;
        };
        let Some((take_now, take_wanted)) = take.filter(|_| !p.subscribers.is_empty()) else {
            return;
        };
        // One REMB caps the whole connection (the browser shares it out
        // among its layers, dropping the upper ones first).
        let ssrc = p
            .tracks
            .iter()
            .filter(|t| t.slot.kind == MediaKind::Video)
            .flat_map(|t| t.layers.iter())
            .find_map(|l| l.source);
        let Some(ssrc) = ssrc else {
            return;
        };
        let mut api = s.rtc.direct_api();
        let Some(rx) = api.stream_rx(&ssrc) else {
            return;
        };
        let Some(remb) = p.cap.next(now, take_now, take_wanted) else {
            return;
        };
        if remb.withdrawn {
            log::debug!(
                "session {publisher:?}: nobody took the layer the cap was raised for: lowered again"
            );
        }
        log::debug!(
            "session {publisher:?}: capped at {} bit/s (its subscribers take {take_now}, want {take_wanted})",
            remb.value
        );
        rx.request_remb(Bitrate::bps(remb.value));
        if remb.lowered {
            // What each layer cost before this cap throttles it.
            for (i, t) in p.tracks.iter().enumerate() {
                if p.cap.costs.len() <= i {
                    p.cap.costs.push(Vec::new());
                }
                let costs = &mut p.cap.costs[i];
                costs.resize(t.layers.len(), 0);
                for (c, l) in costs.iter_mut().zip(&t.layers) {
                    *c = (*c).max(l.rate.bps());
                }
            }
        }
        self.mark(publisher);
    }

    /// Relays one publisher packet to each of its subscribers.
    fn forward(&mut self, now: Instant, from: SessionId, pkt: RtpPacket) {
        if pkt.payload.is_empty() {
            return; // Padding (bandwidth probing): not ours to relay.
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        let Role::Publisher(p) = &mut s.role else {
            return;
        };
        let Some((ti, li)) = p.layer_of(&mut s.rtc, pkt.header.ssrc) else {
            log::debug!(
                "session {from:?}: packet of SSRC {} not forwarded",
                pkt.header.ssrc
            );
            return;
        };
        let pt = pkt.header.payload_type;
        let Some(params) = s.rtc.codec_config().find(|c| c.pt() == pt).copied() else {
            log::debug!("session {from:?}: packet of unknown PT {pt}");
            return;
        };
        let m = Media::new(&pkt, params);
        let up = &mut p.tracks[ti];
        let slot = up.slot;
        let ahead = up.layers[li].observe(now, &m, slot.kind == MediaKind::Video);
        let allocate = p.next_allocation.is_none_or(|t| t <= now);
        if allocate {
            p.next_allocation = Some(now + ALLOCATE_EVERY);
        }
        // Moved out while the subscribers are written to (no copy, no
        // allocation): nothing in this loop adds or removes a session.
        let subscribers = std::mem::take(&mut p.subscribers);
        for &id in &subscribers {
            let Some(sub) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Role::Subscriber(down) = &mut sub.role else {
                continue;
            };
            if !down.started {
                continue;
            }
            let Some(track) = down.tracks.iter_mut().find(|t| t.slot == slot) else {
                continue;
            };
            let switching = track.current != Some(li);
            if !track.accepts(now, li, &m) || !track.keeps(&m) {
                continue;
            }
            // A switch at a key frame whose first packet came late: the
            // rest of that key frame came before it.
            let rest = if switching { &ahead[..] } else { &[] };
            let mut wrote = false;
            for p in std::iter::once(&m).chain(rest) {
                if (p.seq == m.seq || track.keeps(p)) && track.write(&mut sub.rtc, now, p) {
                    self.forwarded_packets += 1;
                    self.forwarded_bytes += p.payload.len() as u64;
                    wrote = true;
                }
            }
            if wrote {
                mark_session(sub, id, &mut self.dirty);
            }
        }
        if let Some(Role::Publisher(p)) = self.sessions.get_mut(&from).map(|s| &mut s.role) {
            p.subscribers = subscribers;
        }
        if allocate {
            self.allocate(now, from, None);
            self.ask_again(now, from);
        }
    }

    /// Asks `publisher` again for each key frame a subscriber still waits
    /// for (to start, or to switch layers). A PLI lost on the way, or one
    /// the publisher ignored, must not leave a subscriber black (or on a
    /// layer its link cannot carry) until the publisher's next key frame of
    /// its own, which may be minutes away: `KeyframeRequests` sends one
    /// again once the last went `KEYFRAME_PATIENCE` unanswered.
    fn ask_again(&mut self, now: Instant, publisher: SessionId) {
        let Some(Role::Publisher(up)) = self.sessions.get(&publisher).map(|s| &s.role) else {
            return;
        };
        let mut awaited: Vec<(Slot, usize)> = Vec::new();
        for id in &up.subscribers {
            let Some(Role::Subscriber(sub)) = self.sessions.get(id).map(|s| &s.role) else {
                continue;
            };
            if !sub.started {
                continue;
            }
            for t in sub
                .tracks
                .iter()
                .filter(|t| t.slot.kind == MediaKind::Video)
            {
                if let Some(layer) = t.awaited_keyframe() {
                    if !awaited.contains(&(t.slot, layer)) {
                        awaited.push((t.slot, layer));
                    }
                }
            }
        }
        for (slot, layer) in awaited {
            if self.request_keyframe(now, publisher, slot, layer) == Some(Ask::Now) {
                log::debug!("session {publisher:?}: asked again for a key frame (layer {layer})");
            }
        }
    }

    /// Removes a session (and, for a publisher, its subscribers). `report`
    /// says whether the signaling node must be told (it did not ask).
    fn remove(&mut self, id: SessionId, report: bool) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        s.rtc.disconnect();
        self.by_addr.retain(|_, v| *v != id);
        match s.role {
            Role::Publisher(p) => {
                log::info!("stream {} closed", p.mid);
                self.publishers.remove(&p.mid);
                if let Some(relay) = p.relay {
                    self.relays.remove(&relay.local);
                    self.released.push(relay.local);
                }
                for sub in p.subscribers {
                    // The signaling node removes subscriptions of a closed
                    // stream itself: no report per subscriber.
                    self.remove(sub, false);
                }
                if report {
                    self.events.push_back(FromSfu::StreamClosed { mid: p.mid });
                }
            }
            Role::Subscriber(sub) => {
                log::debug!("subscription {} closed", sub.sid);
                self.subscribers.remove(&sub.sid);
                if let Some(Role::Publisher(p)) =
                    self.sessions.get_mut(&sub.publisher).map(|p| &mut p.role)
                {
                    p.subscribers.retain(|s| *s != id);
                }
                if report {
                    self.events
                        .push_back(FromSfu::SubscriptionClosed { sid: sub.sid });
                }
            }
        }
    }
}

/// What the best-served subscriber of a single-layer stream takes: the
/// highest REMB its subscribers' browsers report (None unless every one of
/// them reports one: a subscriber that says nothing may want everything).
fn remb_take(
    sessions: &FastMap<SessionId, Box<Session>>,
    subscribers: &[SessionId],
) -> Option<u64> {
    let mut take = None;
    for id in subscribers {
        let remb = match sessions.get(id).map(|s| &s.role) {
            Some(Role::Subscriber(sub)) => sub.remb?,
            _ => continue,
        };
        take = Some(take.map_or(remb, |t: u64| t.max(remb)));
    }
    take
}

/// Marks a session the caller already holds for draining (`Sfu::mark`
/// looks it up first): at most once in the list.
fn mark_session(s: &mut Session, id: SessionId, dirty: &mut Vec<SessionId>) {
    if !s.dirty {
        s.dirty = true;
        dirty.push(id);
    }
}

/// Sends a PLI on one layer of a publisher's track (nothing if it has
/// sent no media there yet: its first frame is a key frame anyway). The
/// layer is named by its rid: with `None`, str0m would pick any layer.
/// Starts `sub`'s estimator again from its estimate when it is held below
/// a better layer (`below`) and its estimate has not moved for
/// `STALL_AFTER`: str0m's can stall well under what the link carries.
/// The waits between restarts double while it stays below.
fn restart_if_stalled(
    now: Instant,
    id: SessionId,
    sub: &mut Subscriber,
    rtc: &mut Rtc,
    below: bool,
) {
    if !below {
        sub.restart = None;
        return;
    }
    let (Some(estimate), Some(at)) = (sub.estimate, sub.estimate_at) else {
        return;
    };
    let (allowed, wait) = *sub.restart.get_or_insert((now, STALL_RESTART_FIRST));
    if now < allowed || now.saturating_duration_since(at) < STALL_AFTER {
        return;
    }
    log::debug!("session {id:?}: estimate stalled at {estimate} bit/s, its estimator starts again");
    rtc.bwe().reset(Bitrate::bps(estimate));
    sub.estimate_at = Some(now);
    sub.restart = Some((now + wait, (wait * 2).min(STALL_RESTART_MAX)));
}

fn ask_keyframe(rtc: &mut Rtc, mid: TrackMid, rid: Option<Rid>) {
    if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, rid) {
        rx.request_keyframe(KeyframeRequestKind::Pli);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerId;

    /// An audio + video offer as a str0m peer makes it.
    fn offer(now: Instant, dir: Direction) -> String {
        let mut rtc = Rtc::builder().build(now);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        offer.to_sdp_string()
    }

    #[test]
    fn only_publisher_sessions_negotiate_transport_cc() {
        const TWCC: &str = "transport-wide-cc";
        let now = Instant::now();
        let local = "127.0.0.1:40000".parse().unwrap();
        let mut sfu = Sfu::new(
            local,
            &Limits {
                sfu_sessions: 8,
                ..Limits::default()
            },
        )
        .unwrap();
        let uid = PeerId::parse("alice").unwrap();
        let mid = Mid::random(&uid);

        let publisher = offer(now, Direction::SendOnly);
        assert!(publisher.contains(TWCC), "the offer proposes it");
        let answer = sfu.publish(now, mid.clone(), &publisher).unwrap();
        assert!(answer.contains(TWCC), "{answer}");

        let subscriber = offer(now, Direction::RecvOnly);
        assert!(subscriber.contains(TWCC), "the offer proposes it");
        let answer = sfu
            .subscribe(now, Sid::random(&uid), &mid, &subscriber)
            .unwrap();
        assert!(!answer.contains(TWCC), "{answer}");
        // Everything else of the standard map is still offered back.
        assert!(
            answer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
            "{answer}"
        );
    }

    #[test]
    fn a_stalled_estimate_restarts_its_estimator_less_and_less_often() {
        let t0 = Instant::now();
        let uid = PeerId::parse("bob").unwrap();
        let Role::Subscriber(mut sub) = Role::subscriber(Sid::random(&uid), SessionId(1)) else {
            unreachable!()
        };
        let mut rtc = Rtc::builder()
            .enable_bwe(Some(Bitrate::kbps(300)))
            .build(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut restarts = Vec::new();
        sub.estimate = Some(300_000);
        sub.estimate_at = Some(t0);
        for s in 0..=60 {
            let before = sub.estimate_at;
            restart_if_stalled(at(s), SessionId(2), &mut sub, &mut rtc, true);
            if sub.estimate_at != before {
                restarts.push(s);
            }
        }
        // After 4 s without a move, then waits of 4, 8, 16, 32 s.
        assert_eq!(restarts, [4, 8, 16, 32]);
        // On its best layer it is left alone, and the waits start over.
        restart_if_stalled(at(61), SessionId(2), &mut sub, &mut rtc, false);
        assert_eq!(sub.restart, None);
        sub.estimate_at = Some(at(50));
        restart_if_stalled(at(61), SessionId(2), &mut sub, &mut rtc, true);
        assert_eq!(sub.estimate_at, Some(at(61)), "stalled 11 s: at once");
        // An estimate that moves is no stall.
        sub.estimate_at = Some(at(70));
        restart_if_stalled(at(72), SessionId(2), &mut sub, &mut rtc, true);
        assert_eq!(sub.estimate_at, Some(at(70)));
    }

    #[test]
    fn a_relay_calls_another_sfu_with_full_ice_and_gives_its_port_back() {
        let now = Instant::now();
        let limits = Limits {
            sfu_sessions: 8,
            ..Limits::default()
        };
        let mut here = Sfu::new("127.0.0.1:40000".parse().unwrap(), &limits).unwrap();
        let mut there = Sfu::new("127.0.0.1:41000".parse().unwrap(), &limits).unwrap();
        let uid = PeerId::parse("alice").unwrap();
        let mid = Mid::random(&uid);
        there
            .publish(now, mid.clone(), &offer(now, Direction::SendOnly))
            .unwrap();

        let port = "127.0.0.1:40001".parse().unwrap();
        let relay = here
            .relay_offer(now, mid.clone(), (true, true), port)
            .unwrap();
        assert!(!relay.contains("a=ice-lite"), "{relay}");
        assert!(
            relay.contains("m=audio") && relay.contains("m=video"),
            "{relay}"
        );
        assert!(
            relay.contains("a=recvonly") && relay.contains(" 40001 typ host"),
            "{relay}"
        );
        let other = "127.0.0.1:40002".parse().unwrap();
        let again = here.relay_offer(now, mid.clone(), (true, true), other);
        assert_eq!(again, Err(SfuError::Duplicate));
        let nothing = here.relay_offer(now, Mid::random(&uid), (false, false), other);
        assert!(matches!(nothing, Err(SfuError::BadOffer(_))));

        // The publisher's SFU answers it as any subscriber's offer, and
        // the answer completes it.
        let answer = there
            .subscribe(now, Sid::random(&uid), &mid, &relay)
            .unwrap();
        here.relay_answer(now, &mid, &answer);
        assert_eq!(here.poll_event(), None);
        assert_eq!(here.relays(), 1);
        here.unpublish(&mid);
        assert_eq!((here.relays(), here.poll_released()), (0, Some(port)));

        // An answer it cannot use ends it: reported as its stream closing.
        here.relay_offer(now, mid.clone(), (false, true), port)
            .unwrap();
        here.relay_answer(now, &mid, "v=0 nonsense");
        assert_eq!(here.poll_event(), Some(FromSfu::StreamClosed { mid }));
        assert_eq!((here.relays(), here.poll_released()), (0, Some(port)));
    }
}
