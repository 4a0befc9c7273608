//! One WebRTC session: a str0m `Rtc` and what it is for, a publisher with
//! its up-tracks or a subscriber with its down-tracks.

use super::adapt::Ceiling;
use super::cap::Cap;
use super::track::{DownTrack, UpTrack};
use crate::ids::{Mid, Sid};
use crate::limits::MAX_SSRCS_PER_PUBLISHER;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::bwe::BweKind;
use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid as TrackMid, Rid};
use str0m::net::Transmit;
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

/// Identifies a session inside this SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

#[derive(Debug)]
pub struct Publisher {
    pub mid: Mid,
    pub tracks: Vec<UpTrack>,
    pub subscribers: Vec<SessionId>,
    /// Its offer had `a=simulcast` (its tracks are known only later).
    pub offered_simulcast: bool,
    /// SSRC → (track, layer) indices, learned from the first packets.
    ssrcs: Vec<(Ssrc, usize, usize)>,
    /// When its subscribers' layers are next chosen again.
    pub next_allocation: Option<Instant>,
    pub cap: Cap,
    /// Set for a relay: another board's stream this SFU pulls.
    pub relay: Option<RelayLeg>,
}

/// A relay's side of its call to another board's SFU.
pub struct RelayLeg {
    /// Its own UDP port's address (its ICE candidate).
    pub local: SocketAddr,
    /// Its offer, until the other board's answer comes.
    pub offer: Option<SdpPendingOffer>,
}

impl std::fmt::Debug for RelayLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLeg")
            .field("local", &self.local)
            .field("answered", &self.offer.is_none())
            .finish()
    }
}

#[derive(Debug)]
pub struct Subscriber {
    pub sid: Sid,
    pub publisher: SessionId,
    pub tracks: Vec<DownTrack>,
    /// Connected and given its start (a key frame, or one is coming):
    /// media is forwarded to it from then on.
    pub started: bool,
    /// What its link carries, bits per second (str0m's TWCC estimator; a
    /// subscriber of a publisher without simulcast has none).
    pub estimate: Option<u64>,
    /// The latest REMB its browser sent (a receiver's own estimate: how a
    /// single-layer publisher is capped).
    pub remb: Option<u64>,
    /// Its REMB has fallen (by 5 % or more) at least once: a receiver's
    /// estimate climbs from a low start (Firefox's from ~80 kbit/s) and
    /// until it has seen the link push back (an overuse cuts it) it says
    /// how far it got, not what the link carries, so it takes no temporal
    /// layer away.
    pub remb_settled: bool,
    /// The highest layer the client pinned (the `layer` request), kept for
    /// tracks not added yet: a pin may come before the connection.
    pub ceiling: Option<Ceiling>,
    /// What its estimator was last told to probe for (minimum, desired).
    pub bwe_set: Option<(u64, u64)>,
    /// When its estimate last moved (str0m reports a move of 5 % or more).
    pub estimate_at: Option<Instant>,
    /// Its estimator may be started again (a stall) from then on, and the
    /// wait after that (`STALL_RESTART_FIRST`, doubled on each restart).
    pub restart: Option<(Instant, Duration)>,
    /// The fraction of its video lost on the way, from its receiver
    /// reports since the allocator last looked (no estimator: a REMB does
    /// not see a link that drops before its queue grows).
    pub video_loss: Option<f32>,
}

#[derive(Debug)]
pub enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

impl Role {
    pub fn publisher(mid: Mid, offered_simulcast: bool) -> Role {
        Role::Publisher(Publisher {
            mid,
            offered_simulcast,
            tracks: Vec::new(),
            subscribers: Vec::new(),
            ssrcs: Vec::new(),
            next_allocation: None,
            cap: Cap::default(),
            relay: None,
        })
    }

    pub fn subscriber(sid: Sid, publisher: SessionId) -> Role {
        Role::Subscriber(Subscriber {
            sid,
            publisher,
            tracks: Vec::new(),
            started: false,
            estimate: None,
            remb: None,
            remb_settled: false,
            ceiling: None,
            bwe_set: None,
            estimate_at: None,
            restart: None,
            video_loss: None,
        })
    }
}

/// What a session produced that concerns other sessions: queued by
/// [`Session::drain`] and propagated by the SFU's loop, so no session is
/// ever driven from inside another.
// Packets stay inline: the queue is reused, so boxing them would only add
// an allocation per forwarded packet.
#[allow(clippy::large_enum_variant)]
pub enum Happening {
    Packet(RtpPacket),
    KeyframeRequest(TrackMid),
    Connected,
    /// A subscriber's bandwidth estimate changed.
    Estimate,
}

pub struct Session {
    pub rtc: Rtc,
    pub role: Role,
    pub created: Instant,
    pub connected: bool,
    /// When str0m next wants `Input::Timeout`.
    pub rtc_timeout: Instant,
    /// When the SFU next gives it time (str0m's timeout, a key-frame
    /// request, the end of its time to connect): its entry in the SFU's
    /// deadline heap. None while it is being handled.
    pub deadline: Option<Instant>,
    /// Written to or asked something since it was last drained.
    pub dirty: bool,
}

impl Session {
    pub fn new(rtc: Rtc, role: Role, now: Instant) -> Session {
        Session {
            rtc,
            role,
            created: now,
            connected: false,
            rtc_timeout: now,
            deadline: None,
            dirty: false,
        }
    }

    /// Gives str0m the time (it sends what is due: queued media, RTCP,
    /// retransmissions). A failure ends the session.
    pub fn tick(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            log::debug!("session input failed: {e}");
            self.rtc.disconnect();
        }
    }

    /// When a key-frame request of one of its up-tracks is due.
    pub fn keyframe_deadline(&self) -> Option<Instant> {
        match &self.role {
            Role::Publisher(p) => p
                .tracks
                .iter()
                .flat_map(|t| t.layers.iter())
                .filter_map(|l| l.keyframes.poll_timeout())
                .min(),
            Role::Subscriber(_) => None,
        }
    }

    /// Polls str0m until it wants a timeout: datagrams go to `transmits`,
    /// what concerns other sessions to `out`. Returns false if the session
    /// is dead and must be removed.
    pub fn drain(
        &mut self,
        transmits: &mut VecDeque<Transmit>,
        out: &mut impl FnMut(Happening),
    ) -> bool {
        loop {
            if !self.rtc.is_alive() {
                return false;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return true;
                }
                Ok(Output::Transmit(t)) => transmits.push_back(t),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        self.connected = true;
                        out(Happening::Connected);
                    }
                    // A connected peer that went silent is gone. One that
                    // never connected is given up by our own connect
                    // timeout, not by ICE's (shorter than a slow client
                    // may need).
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                        if self.connected =>
                    {
                        self.rtc.disconnect();
                    }
                    Event::MediaAdded(m) => {
                        let rids: Vec<Rid> = m
                            .simulcast
                            .map(|s| s.recv.iter().map(|l| l.rid).collect())
                            .unwrap_or_default();
                        self.add_track(m.mid, m.kind, &rids)
                    }
                    Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                        if let Role::Subscriber(s) = &mut self.role {
                            let remb = estimate.as_u64();
                            s.remb_settled |= s.remb.is_some_and(|r| remb * 100 <= r * 95);
                            s.remb = Some(remb);
                        }
                    }
                    Event::MediaEgressStats(stats) => {
                        if let Role::Subscriber(s) = &mut self.role {
                            let video = s
                                .tracks
                                .iter()
                                .any(|t| t.mid == stats.mid && t.slot.kind == MediaKind::Video);
                            if let Some(loss) = stats.loss.filter(|_| video) {
                                s.video_loss = Some(s.video_loss.map_or(loss, |l| l.max(loss)));
                            }
                        }
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        if let Role::Subscriber(s) = &mut self.role {
                            s.estimate = Some(estimate.as_u64());
                            out(Happening::Estimate);
                        }
                    }
                    Event::RtpPacket(p) => out(Happening::Packet(p)),
                    Event::KeyframeRequest(r) => out(Happening::KeyframeRequest(r.mid)),
                    Event::Closed => self.rtc.disconnect(),
                    _ => {}
                },
                Err(e) => {
                    log::debug!("session output failed: {e}");
                    self.rtc.disconnect();
                    return false;
                }
            }
        }
    }

    /// A media line of its own: a browser's, once str0m says it was
    /// added; a relay's, when it makes its offer (str0m tells an offerer
    /// nothing of the lines it added itself).
    pub fn add_track(&mut self, mid: TrackMid, kind: MediaKind, rids: &[Rid]) {
        match &mut self.role {
            Role::Publisher(p) => {
                let t = UpTrack::new(&p.tracks, mid, kind, rids);
                p.tracks.push(t);
            }
            Role::Subscriber(s) => {
                let mut t = DownTrack::new(&s.tracks, mid, kind);
                t.ceiling = s.ceiling;
                s.tracks.push(t);
            }
        }
    }
}

impl Publisher {
    /// The (track, layer) a packet of `ssrc` belongs to, learned once per
    /// SSRC from str0m's receive streams (a simulcast layer by its rid: a
    /// browser stops sending the rid once it has a receiver report). A new
    /// SSRC on a layer becomes its source. None: not (or no longer) a
    /// source we forward.
    pub fn layer_of(&mut self, rtc: &mut Rtc, ssrc: Ssrc) -> Option<(usize, usize)> {
        let (t, l) = match self.ssrcs.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, t, l)) => (*t, *l),
            None => {
                let mut api = rtc.direct_api();
                let rx = api.stream_rx(&ssrc)?;
                let (mid, rid) = (rx.mid(), rx.rid());
                let t = self.tracks.iter().position(|t| t.mid == mid)?;
                let l = self.tracks[t].layers.iter().position(|l| l.rid == rid)?;
                if self.ssrcs.len() == MAX_SSRCS_PER_PUBLISHER {
                    self.ssrcs.remove(0);
                }
                self.ssrcs.push((ssrc, t, l));
                self.tracks[t].layers[l].source = Some(ssrc);
                (t, l)
            }
        };
        (self.tracks[t].layers[l].source == Some(ssrc)).then_some((t, l))
    }

    /// Whether any of its tracks is simulcast.
    pub fn simulcast(&self) -> bool {
        self.tracks.iter().any(|t| t.simulcast())
    }
}
