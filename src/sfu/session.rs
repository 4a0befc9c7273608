//! One WebRTC session: a str0m `Rtc` and what it is for, a publisher with
//! its up-tracks or a subscriber with its down-tracks.

use super::track::{DownTrack, UpTrack};
use crate::ids::{Mid, Sid};
use crate::limits::MAX_SSRCS_PER_PUBLISHER;
use std::collections::VecDeque;
use std::time::Instant;
use str0m::media::{MediaKind, Mid as TrackMid};
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
    /// SSRC → index into `tracks`, learned from the first packets.
    ssrcs: Vec<(Ssrc, usize)>,
}

#[derive(Debug)]
pub struct Subscriber {
    pub sid: Sid,
    pub publisher: SessionId,
    pub tracks: Vec<DownTrack>,
    /// Connected and given its start (a key frame, or one is coming):
    /// media is forwarded to it from then on.
    pub started: bool,
}

#[derive(Debug)]
pub enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

impl Role {
    pub fn publisher(mid: Mid) -> Role {
        Role::Publisher(Publisher {
            mid,
            tracks: Vec::new(),
            subscribers: Vec::new(),
            ssrcs: Vec::new(),
        })
    }

    pub fn subscriber(sid: Sid, publisher: SessionId) -> Role {
        Role::Subscriber(Subscriber {
            sid,
            publisher,
            tracks: Vec::new(),
            started: false,
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
                .filter_map(|t| t.keyframes.poll_timeout())
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
                    Event::MediaAdded(m) => self.add_track(m.mid, m.kind),
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

    fn add_track(&mut self, mid: TrackMid, kind: MediaKind) {
        match &mut self.role {
            Role::Publisher(p) => {
                let t = UpTrack::new(&p.tracks, mid, kind);
                p.tracks.push(t);
            }
            Role::Subscriber(s) => {
                let t = DownTrack::new(&s.tracks, mid, kind);
                s.tracks.push(t);
            }
        }
    }
}

impl Publisher {
    /// The up-track a packet of `ssrc` belongs to, learned once per SSRC
    /// from str0m's receive streams. A new SSRC on a track becomes its
    /// source. None: not (or no longer) a source we forward.
    pub fn track_of(&mut self, rtc: &mut Rtc, ssrc: Ssrc) -> Option<usize> {
        let i = match self.ssrcs.iter().find(|(s, _)| *s == ssrc) {
            Some((_, i)) => *i,
            None => {
                let mid = rtc.direct_api().stream_rx(&ssrc)?.mid();
                let i = self.tracks.iter().position(|t| t.mid == mid)?;
                if self.ssrcs.len() == MAX_SSRCS_PER_PUBLISHER {
                    self.ssrcs.remove(0);
                }
                self.ssrcs.push((ssrc, i));
                self.tracks[i].source = Some(ssrc);
                i
            }
        };
        (self.tracks[i].source == Some(ssrc)).then_some(i)
    }
}
