//! The signaling node's state: peers, rooms, streams and subscriptions in
//! fixed-capacity tables, as an I/O-free state machine.
//!
//! Inputs are method calls that take a [`Now`]; outputs are [`Effect`]s
//! drained with [`Node::poll_effect`]: text for a connection, a close, or a
//! control message for an SFU. [`Node::poll_timeout`] says when the node
//! next needs [`Node::tick`]. It knows nothing of sockets, clocks or WebRTC:
//! an SFU is a slot that answers calls with SDP.
//!
//! This file holds the node and its inputs and outputs; the rest is split
//! by concern, each file another `impl Node` block:
//! - [`tables`]: every table (peers, rooms, streams, subscriptions, SFU
//!   slots, calls under way), their lookups, joining and leaving;
//! - [`sfu_calls`]: publishing and subscribing through an SFU's answer,
//!   and SFUs coming and going;
//! - [`access`]: room tokens, admission and request budgets;
//! - [`responses`]: what goes out to clients;
//! - [`cluster`]: the other signaling nodes, as heard through Redis;
//! - [`remote`]: rooms that span nodes (the other nodes' members and
//!   streams of this node's rooms);
//! - [`relays`]: streams of another node's SFU, pulled once by an SFU of
//!   this node for all its subscribers (and the other side of it);
//! - [`placement`]: publishes this node is too full to carry, placed on
//!   the least loaded other node (and the other side of it).
//!
//! They use each other one way only: `sfu_calls` and `responses` use
//! `tables`, which uses `access` (`tests/layout.rs` checks).

mod access;
mod cluster;
mod placement;
mod relays;
mod remote;
mod responses;
mod sfu_calls;
mod tables;
#[cfg(test)]
mod tests;

use super::error::RequestError;
use super::protoo::{self, Request, RequestId};
use super::token::{Grant, TokenKey};
use crate::ids::{NodeId, PeerId};
use crate::ipc::{CallId, SfuStats, ToSfu};
use crate::limits::*;
use access::TokenBucket;
pub use cluster::{
    ClusterAnswer, ClusterCall, ClusterEvent, ClusterMetrics, ClusterOp, Link, MemberEntry,
    NodeMsg, RoomSnapshot, StreamEntry,
};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;
use tables::{Asker, PendingCall, SfuState};
use tables::{Peer, Room, Stream, Subscription};

/// One WebSocket connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// An SFU's place in the node's SFU table (fixed by configuration order).
/// A type of its own so that it cannot be mixed up with the other indexes
/// the node juggles (table rows, connection numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfuSlot(pub usize);

impl std::fmt::Display for SfuSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The time of one input, read once by the shell. The node reads no clock
/// itself: tests drive it in simulated time, and the same inputs at the
/// same times give the same outputs. Every input takes one, whether it
/// uses it today or not, so the shell need not know which inputs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic: liveness, SFU call deadlines and request budgets.
    pub mono: Instant,
    /// Wall clock, seconds since the Unix epoch: token expiry (a token's
    /// `exp` is a Unix time, minted by another machine).
    pub unix_secs: u64,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a text frame to a connection.
    Send { conn: ConnId, text: Rc<str> },
    /// Close a connection (its peer has already left every room).
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// Send a control message to an SFU.
    Sfu { sfu: SfuSlot, msg: ToSfu },
    /// Carry out an operation in the cluster's Redis (boxed: the largest).
    Cluster(Box<ClusterOp>),
}

/// WebSocket close code for a connection replaced by a newer one with the
/// same uid. protoo-client does not reconnect after 4000, which is what we
/// want: the newer connection is the one that counts.
pub const CLOSE_REPLACED: u16 = 4000;

/// WebSocket close code for a peer that stayed silent too long.
pub const CLOSE_TIMEOUT: u16 = 4408;

/// A snapshot of the node for `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub peers: usize,
    pub rooms: usize,
    pub streams: usize,
    pub subscriptions: usize,
    pub pending_calls: usize,
    pub sfus: Vec<SfuMetrics>,
    /// Error responses sent so far, by errorCode.
    pub errors: Vec<(u16, u64)>,
    /// None on a node without a cluster.
    pub cluster: Option<ClusterMetrics>,
}

#[derive(Debug, Clone)]
pub struct SfuMetrics {
    pub slot: SfuSlot,
    /// None while it is down.
    pub id: Option<NodeId>,
    pub streams: usize,
    pub subscriptions: usize,
    /// Its last report (kept while it is down, zero before the first).
    pub stats: SfuStats,
}

/// The room tables of one signaling node.
pub struct Node {
    bizid: NodeId,
    limits: Limits,
    /// When set, every join needs a token signed with this key.
    tokens: Option<TokenKey>,
    // Fixed-capacity tables, each allocated once, up front (boxed so that
    // the node itself stays small to move around).
    peers: Box<heapless::Vec<Peer, MAX_CONNECTIONS>>,
    rooms: Box<heapless::Vec<Room, MAX_ROOMS>>,
    streams: Box<heapless::Vec<Stream, MAX_STREAMS>>,
    subs: Box<heapless::Vec<Subscription, MAX_SUBS>>,
    sfus: heapless::Vec<SfuState, MAX_SFUS>,
    pending: Box<heapless::Vec<PendingCall, MAX_PENDING_SFU_CALLS>>,
    next_call: CallId,
    effects: VecDeque<Effect>,
    /// Error responses sent, by errorCode.
    errors: Vec<(u16, u64)>,
    /// Set by [`Node::enable_cluster`].
    cluster: Option<Box<cluster::Cluster>>,
}

/// How a request handler finished.
enum Outcome {
    /// Answered `ok` with empty data.
    Ok,
    /// Answered with this complete response.
    Answer(String),
    /// A call to an SFU is under way; it answers later.
    Deferred,
}

type Reply = Result<Outcome, RequestError>;

impl Node {
    /// A node with `sfu_slots` SFU slots (all down until `sfu_up`).
    pub fn new(bizid: NodeId, limits: Limits, sfu_slots: usize) -> Node {
        let mut sfus = heapless::Vec::new();
        for _ in 0..sfu_slots.min(MAX_SFUS) {
            let _ = sfus.push(SfuState {
                id: None,
                stats: SfuStats::default(),
            });
        }
        Node {
            bizid,
            limits,
            tokens: None,
            peers: Box::default(),
            rooms: Box::default(),
            streams: Box::default(),
            subs: Box::default(),
            sfus,
            pending: Box::default(),
            next_call: CallId(1),
            effects: VecDeque::new(),
            errors: Vec::new(),
            cluster: None,
        }
    }

    /// The next thing the shell must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Bytes of the fixed tables, all allocated when the node is made.
    #[cfg(test)]
    pub fn table_bytes(&self) -> usize {
        use std::mem::size_of_val;
        size_of_val(self)
            + size_of_val(&*self.peers)
            + size_of_val(&*self.rooms)
            + size_of_val(&*self.streams)
            + size_of_val(&*self.subs)
            + size_of_val(&*self.pending)
    }

    /// What `/metrics` shows.
    pub fn metrics(&self) -> Metrics {
        let mut errors = self.errors.clone();
        errors.sort_unstable();
        Metrics {
            peers: self.peers.len(),
            rooms: self.rooms.len(),
            streams: self.streams.len(),
            subscriptions: self.subs.len(),
            pending_calls: self.pending.len(),
            sfus: self
                .sfus
                .iter()
                .enumerate()
                .map(|(i, s)| (SfuSlot(i), s))
                .map(|(slot, s)| SfuMetrics {
                    slot,
                    id: s.id.clone(),
                    streams: self.streams.iter().filter(|x| x.sfu == slot).count(),
                    subscriptions: self.subs.iter().filter(|x| x.sfu == slot).count(),
                    stats: s.stats,
                })
                .collect(),
            errors,
            cluster: self.cluster_metrics(),
        }
    }

    /// Counts for tests: (peers, rooms, streams, subscriptions).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.peers.len(),
            self.rooms.len(),
            self.streams.len(),
            self.subs.len(),
        )
    }

    /// A new WebSocket for `uid`. An older connection with the same uid is
    /// replaced: it leaves every room and is closed.
    pub fn connect(
        &mut self,
        now: Now,
        conn: ConnId,
        uid: PeerId,
        url_grant: Option<Grant>,
    ) -> Result<(), RequestError> {
        if let Some(old) = self.peers.iter().find(|p| p.uid == uid).map(|p| p.conn) {
            log::info!("{uid}: new connection replaces the old one");
            self.drop_peer(old);
            self.effects.push_back(Effect::Close {
                conn: old,
                code: CLOSE_REPLACED,
                reason: "replaced by a new connection",
            });
        }
        if self.peers.len() >= self.limits.connections {
            return Err(RequestError::Full("connections"));
        }
        let peer = Peer {
            uid,
            conn,
            rooms: heapless::Vec::new(),
            url_grant: url_grant.map(Box::new),
            last_seen: now.mono,
            bucket: TokenBucket::new(now.mono, self.limits.request_burst),
        };
        self.peers
            .push(peer)
            .map_err(|_| RequestError::Full("connections"))
    }

    /// The WebSocket closed: the same as leaving every room, at once.
    pub fn disconnect(&mut self, _now: Now, conn: ConnId) {
        self.drop_peer(conn);
    }

    /// Any traffic from the connection (a frame, a pong) proves it alive.
    pub fn touch(&mut self, now: Now, conn: ConnId) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.conn == conn) {
            p.last_seen = now.mono;
        }
    }

    /// When the node next needs [`Node::tick`]: the earliest instant at
    /// which a peer falls silent for the liveness timeout, an SFU call
    /// runs out of time, or another node of the cluster is overdue. None while there is neither. Inputs can move it
    /// (earlier, too: a new peer or call), so ask again after each one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silent = self
            .peers
            .iter()
            .map(|p| p.last_seen + self.limits.liveness_timeout());
        let calls = self.pending.iter().map(|p| p.deadline);
        let cluster = (self.cluster_timeout().into_iter())
            .chain(self.join_timeout())
            .chain(self.relay_call_timeout())
            .chain(self.placing_timeout())
            .chain(self.settle_timeout());
        silent.chain(calls).chain(cluster).min()
    }

    /// Expires silent peers, SFU calls that were not answered in time and
    /// nodes of the cluster not heard from.
    pub fn tick(&mut self, now: Now) {
        let now = now.mono;
        let timeout = self.limits.liveness_timeout();
        let silent: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|p| now.saturating_duration_since(p.last_seen) >= timeout)
            .map(|p| p.conn)
            .collect();
        for conn in silent {
            log::info!("connection {conn:?}: liveness timeout");
            self.drop_peer(conn);
            self.effects.push_back(Effect::Close {
                conn,
                code: CLOSE_TIMEOUT,
                reason: "liveness timeout",
            });
        }
        self.expire_calls(now);
        self.expire_nodes(now);
        self.fail_joins(Some(now), "Redis did not answer in time");
        self.fail_relay_calls(Some(now), "the other node did not answer in time");
        self.fail_placing(Some(now), "the other node did not answer in time");
        self.settle(now);
    }

    /// Answers a request that could not be decoded.
    pub fn reject(&mut self, _now: Now, conn: ConnId, id: RequestId, err: RequestError) {
        self.reply(conn, id, Err(err));
    }

    /// Handles one decoded request of connection `conn`.
    pub fn request(&mut self, now: Now, conn: ConnId, id: RequestId, req: Request) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.conn == conn) else {
            return;
        };
        peer.last_seen = now.mono;
        let (rate, burst) = (self.limits.requests_per_sec, self.limits.request_burst);
        if !peer.bucket.take(now.mono, rate, burst) {
            self.reply(conn, id, Err(RequestError::RateLimited));
            return;
        }
        let uid = peer.uid.clone();
        let membership = peer.rooms.iter().find(|m| &m.rid == req.rid());
        let joined = membership.is_some();
        let may_publish = membership.is_some_and(|m| m.may_publish);
        let asker = |rid| Asker {
            conn,
            req: id,
            uid: uid.clone(),
            rid,
        };
        let result = match req {
            Request::Join { rid, token } => self.join(now, id, conn, &uid, rid, token.as_deref()),
            _ if !joined => Err(RequestError::NotInRoom),
            Request::Leave { rid } => {
                self.leave_room(&uid, &rid);
                Ok(Outcome::Ok)
            }
            Request::Keepalive { .. } => Ok(Outcome::Ok),
            Request::Publish { .. } if !may_publish => Err(RequestError::Forbidden(
                "the token does not allow publishing",
            )),
            Request::Publish { rid, offer, minfo } => self.publish(now, asker(rid), offer, minfo),
            Request::Unpublish { rid, mid } => self.unpublish(&uid, &rid, &mid),
            Request::Subscribe { rid, mid, offer } => self.subscribe(now, asker(rid), mid, offer),
            Request::Unsubscribe { rid, mid, sid } => self.unsubscribe(&uid, &rid, &mid, &sid),
            Request::Layer {
                rid,
                mid,
                sid,
                layer,
            } => self.pin_layer(&uid, &rid, &mid, &sid, layer),
            Request::Broadcast { rid, data } => {
                let note = protoo::BroadcastNote {
                    rid: &rid,
                    uid: &uid,
                    data: &data,
                }
                .note();
                self.notify_room(&rid, Some(&uid), note);
                if self.has_remote_members(&rid) {
                    let ev = ClusterEvent::Broadcast {
                        rid,
                        uid,
                        bizid: self.bizid.clone(),
                        data,
                    };
                    if let Ok(json) = serde_json::to_string(&ev) {
                        self.cluster_op(cluster::ClusterOp::Publish(json.into()));
                    }
                }
                Ok(Outcome::Ok)
            }
        };
        match result {
            Ok(Outcome::Deferred) => {}
            Ok(Outcome::Answer(text)) => self.send(conn, text),
            Ok(Outcome::Ok) => self.send(conn, protoo::ok_response(id, &protoo::Empty {})),
            Err(e) => self.reply(conn, id, Err(e)),
        }
    }
}
