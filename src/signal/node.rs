//! The signaling node's state: peers, rooms, streams and subscriptions in
//! fixed-capacity tables, as an I/O-free state machine.
//!
//! Inputs are method calls that take a [`Now`]; outputs are [`Effect`]s
//! drained with [`Node::poll_effect`]: text for a connection, a close, or a
//! control message for an SFU. [`Node::poll_timeout`] says when the node
//! next needs [`Node::tick`]. It knows nothing of sockets, clocks or WebRTC:
//! an SFU is a slot that answers calls with SDP.

use super::error::RequestError;
use super::protoo::{self, Minfo, Request, RequestId};
use super::token::{Grant, TokenError, TokenKey};
use crate::ids::{Mid, NodeId, PeerId, RoomId, Sid};
use crate::ipc::{CallId, FromSfu, SfuError, SfuStats, ToSfu};
use crate::limits::*;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

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
}

/// WebSocket close code for a connection replaced by a newer one with the
/// same uid. protoo-client does not reconnect after 4000, which is what we
/// want: the newer connection is the one that counts.
pub const CLOSE_REPLACED: u16 = 4000;
/// WebSocket close code for a peer that stayed silent too long.
pub const CLOSE_TIMEOUT: u16 = 4408;

struct Peer {
    uid: PeerId,
    conn: ConnId,
    rooms: heapless::Vec<Membership, MAX_ROOMS_PER_PEER>,
    /// The token of the WebSocket URL, already verified (boxed: most
    /// nodes use no tokens, and the peer table is paid for up front).
    url_grant: Option<Box<Grant>>,
    last_seen: Instant,
    bucket: TokenBucket,
}

/// Per-connection request budget: `rate` tokens a second, `burst` at most.
struct TokenBucket {
    tokens: f32,
    at: Instant,
}

impl TokenBucket {
    fn new(now: Instant, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            at: now,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f32() * rate as f32;
        self.tokens = (self.tokens + refill).min(burst as f32);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A room a peer is in.
struct Membership {
    rid: RoomId,
    /// False when the peer's token does not allow publishing there.
    may_publish: bool,
}

impl Peer {
    fn in_room(&self, rid: &RoomId) -> bool {
        self.rooms.iter().any(|m| &m.rid == rid)
    }
}

struct Room {
    rid: RoomId,
    members: heapless::Vec<PeerId, MAX_PEERS_PER_ROOM>,
}

struct Stream {
    mid: Mid,
    rid: RoomId,
    uid: PeerId,
    minfo: Minfo,
    sfu: SfuSlot,
}

struct Subscription {
    sid: Sid,
    mid: Mid,
    rid: RoomId,
    uid: PeerId,
    sfu: SfuSlot,
}

struct SfuState {
    /// `Some` while the SFU is connected and has said hello.
    id: Option<NodeId>,
    /// Its last report.
    stats: SfuStats,
}

enum PendingKind {
    Publish { mid: Mid, minfo: Minfo },
    Subscribe { mid: Mid, sid: Sid },
}

/// Who asked for a call to an SFU, to answer them later.
struct Asker {
    conn: ConnId,
    req: RequestId,
    uid: PeerId,
    rid: RoomId,
}

struct PendingCall {
    call: CallId,
    sfu: SfuSlot,
    deadline: Instant,
    conn: ConnId,
    uid: PeerId,
    rid: RoomId,
    req: RequestId,
    kind: PendingKind,
}

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
    liveness_timeout: Duration,
    call_timeout: Duration,
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
}

/// Why a stream goes away, which decides who must hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Its owner unpublished or left: the SFU must drop the session, and
    /// the owner, who asked, needs no stream-remove.
    ByOwner,
    /// The SFU lost it (media failed, or the SFU is gone): the SFU knows
    /// already, and the owner did not ask, so it gets stream-remove too.
    BySfu,
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
    pub fn new(
        bizid: NodeId,
        liveness_timeout: Duration,
        limits: Limits,
        sfu_slots: usize,
    ) -> Node {
        let mut sfus = heapless::Vec::new();
        for _ in 0..sfu_slots.min(MAX_SFUS) {
            let _ = sfus.push(SfuState {
                id: None,
                stats: SfuStats::default(),
            });
        }
        Node {
            bizid,
            liveness_timeout,
            call_timeout: Duration::from_millis(limits.sfu_call_timeout_ms),
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
        }
    }

    /// The next thing the shell must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Requires a room token for every join from now on.
    pub fn require_tokens(&mut self, key: TokenKey) {
        self.tokens = Some(key);
    }

    /// Checks the token of a WebSocket URL for `uid` (before the upgrade).
    /// `Ok(None)` when tokens are not in use.
    pub fn check_url_token(
        &self,
        now: Now,
        uid: &PeerId,
        token: &str,
    ) -> Result<Option<Grant>, TokenError> {
        let Some(key) = &self.tokens else {
            return Ok(None);
        };
        let grant = key.verify(token, now.unix_secs)?;
        if &grant.uid != uid {
            return Err(TokenError::Invalid);
        }
        Ok(Some(grant))
    }

    /// Bytes of the fixed tables, all allocated when the node is made.
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
        }
    }

    /// Counts for logs and tests: (peers, rooms, streams, subscriptions).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.peers.len(),
            self.rooms.len(),
            self.streams.len(),
            self.subs.len(),
        )
    }

    // ----- connections -----

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

    fn drop_peer(&mut self, conn: ConnId) {
        let Some(idx) = self.peers.iter().position(|p| p.conn == conn) else {
            return;
        };
        let rooms: Vec<RoomId> = self.peers[idx]
            .rooms
            .iter()
            .map(|m| m.rid.clone())
            .collect();
        let uid = self.peers[idx].uid.clone();
        for rid in &rooms {
            self.leave_room(&uid, rid);
        }
        self.peers.swap_remove(idx);
        log::debug!("{uid}: disconnected");
    }

    // ----- time -----

    /// When the node next needs [`Node::tick`]: the earliest instant at
    /// which a peer falls silent for the liveness timeout or an SFU call
    /// runs out of time. None while there is neither. Inputs can move it
    /// (earlier, too: a new peer or call), so ask again after each one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silent = self
            .peers
            .iter()
            .map(|p| p.last_seen + self.liveness_timeout);
        let calls = self.pending.iter().map(|p| p.deadline);
        silent.chain(calls).min()
    }

    /// Expires silent peers and SFU calls that were not answered in time.
    pub fn tick(&mut self, now: Now) {
        let now = now.mono;
        let timeout = self.liveness_timeout;
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
        while let Some(i) = self.pending.iter().position(|p| p.deadline <= now) {
            let p = self.pending.swap_remove(i);
            log::warn!("SFU slot {} did not answer call {} in time", p.sfu, p.call);
            // The SFU may still set the session up: make sure it does not linger.
            let msg = match &p.kind {
                PendingKind::Publish { mid, .. } => ToSfu::Unpublish { mid: mid.clone() },
                PendingKind::Subscribe { sid, .. } => ToSfu::Unsubscribe { sid: sid.clone() },
            };
            self.effects.push_back(Effect::Sfu { sfu: p.sfu, msg });
            self.reply(p.conn, p.req, Err(RequestError::SfuTimeout));
        }
    }

    // ----- requests -----

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
            Request::Join { rid, token } => self.join(now, id, &uid, rid, token.as_deref()),
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
            Request::Broadcast { rid, data } => {
                let note = protoo::notification(
                    "broadcast",
                    &protoo::BroadcastNote {
                        rid: &rid,
                        uid: &uid,
                        data: &data,
                    },
                );
                self.notify_room(&rid, Some(&uid), note);
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

    fn join(
        &mut self,
        now: Now,
        id: RequestId,
        uid: &PeerId,
        rid: RoomId,
        token: Option<&str>,
    ) -> Reply {
        let pidx = self.peer_idx(uid).ok_or(RequestError::NotInRoom)?;
        if self.peers[pidx].in_room(&rid) {
            return Err(RequestError::AlreadyJoined);
        }
        let may_publish = self.admit(now, pidx, &rid, token)?;
        if self.peers[pidx].rooms.len() >= self.limits.rooms_per_peer {
            return Err(RequestError::Full("rooms per peer"));
        }
        let ridx = match self.rooms.iter().position(|r| r.rid == rid) {
            Some(i) => {
                if self.rooms[i].members.len() >= self.limits.peers_per_room {
                    return Err(RequestError::Full("peers per room"));
                }
                i
            }
            None if self.rooms.len() >= self.limits.rooms => {
                return Err(RequestError::Full("rooms"));
            }
            None => {
                let room = Room {
                    rid: rid.clone(),
                    members: heapless::Vec::new(),
                };
                self.rooms
                    .push(room)
                    .map_err(|_| RequestError::Full("rooms"))?;
                self.rooms.len() - 1
            }
        };
        // Both have room: checked above.
        let _ = self.rooms[ridx].members.push(uid.clone());
        let _ = self.peers[pidx].rooms.push(Membership {
            rid: rid.clone(),
            may_publish,
        });

        let answer = protoo::JoinAnswer {
            pubs: self
                .streams
                .iter()
                .filter(|s| s.rid == rid)
                .map(|s| self.pub_info(s))
                .collect(),
            users: self.rooms[ridx]
                .members
                .iter()
                .filter(|m| *m != uid)
                .map(|m| protoo::UserInfo {
                    bizid: self.bizid.clone(),
                    rid: rid.clone(),
                    uid: m.clone(),
                })
                .collect(),
        };
        let note = protoo::notification(
            "peer-join",
            &protoo::PeerJoin {
                rid: &rid,
                uid,
                bizid: &self.bizid,
            },
        );
        self.notify_room(&rid, Some(uid), note);
        log::info!("{uid} joined room {rid}");
        Ok(Outcome::Answer(protoo::ok_response(id, &answer)))
    }

    /// Access control of a join: with tokens in use, the join's token (or
    /// else the URL's) must be valid and name this uid and room. Returns
    /// whether the peer may publish there.
    fn admit(
        &mut self,
        now: Now,
        pidx: usize,
        rid: &RoomId,
        token: Option<&str>,
    ) -> Result<bool, RequestError> {
        let Some(key) = &self.tokens else {
            return Ok(true);
        };
        let peer = &self.peers[pidx];
        let now = now.unix_secs;
        let grant = match token {
            Some(t) => key.verify(t, now),
            None => match &peer.url_grant {
                Some(g) if g.exp > now => Ok((**g).clone()),
                Some(_) => Err(TokenError::Expired),
                None => return Err(RequestError::Forbidden("a room token is required")),
            },
        };
        let grant = grant.map_err(|e| match e {
            TokenError::Expired => RequestError::Forbidden("expired token"),
            TokenError::Invalid => RequestError::Forbidden("invalid token"),
        })?;
        if grant.uid != peer.uid || &grant.rid != rid {
            return Err(RequestError::Forbidden(
                "the token is for another peer or room",
            ));
        }
        Ok(grant.publish)
    }

    fn publish(&mut self, now: Now, asker: Asker, offer: String, minfo: Minfo) -> Reply {
        let is_publish = |k: &PendingKind| matches!(k, PendingKind::Publish { .. });
        let in_room = self.streams.iter().filter(|s| s.rid == asker.rid).count()
            + self.pending_count(|p| is_publish(&p.kind) && p.rid == asker.rid);
        if in_room >= self.limits.streams_per_room {
            return Err(RequestError::Full("streams per room"));
        }
        if self.streams.len() + self.pending_count(|p| is_publish(&p.kind)) >= self.limits.streams {
            return Err(RequestError::Full("streams"));
        }
        let sfu = self.least_loaded_sfu().ok_or(RequestError::NoSfu)?;
        let mid = unique(|| Mid::random(&asker.uid), |m| self.mid_in_use(m));
        let kind = PendingKind::Publish {
            mid: mid.clone(),
            minfo,
        };
        self.call_sfu(now, sfu, asker, kind, |call| ToSfu::Publish {
            call,
            mid,
            offer,
        })
    }

    fn unpublish(&mut self, uid: &PeerId, rid: &RoomId, mid: &Mid) -> Reply {
        let s = self
            .streams
            .iter()
            .find(|s| &s.mid == mid && &s.rid == rid)
            .ok_or(RequestError::NoSuchStream)?;
        if &s.uid != uid {
            return Err(RequestError::NotOwner);
        }
        self.remove_stream(mid, Removal::ByOwner);
        Ok(Outcome::Ok)
    }

    fn subscribe(&mut self, now: Now, asker: Asker, mid: Mid, offer: String) -> Reply {
        let stream = self
            .streams
            .iter()
            .find(|s| s.mid == mid && s.rid == asker.rid)
            .ok_or(RequestError::NoSuchStream)?;
        let sfu = stream.sfu;
        let is_sub = |k: &PendingKind| matches!(k, PendingKind::Subscribe { .. });
        let to_this = self.subs.iter().filter(|s| s.mid == mid).count()
            + self.pending_count(
                |p| matches!(&p.kind, PendingKind::Subscribe { mid: m, .. } if *m == mid),
            );
        if to_this >= self.limits.subs_per_stream {
            return Err(RequestError::Full("subscriptions per stream"));
        }
        if self.subs.len() + self.pending_count(|p| is_sub(&p.kind)) >= self.limits.subs {
            return Err(RequestError::Full("subscriptions"));
        }
        let sid = unique(|| Sid::random(&asker.uid), |s| self.sid_in_use(s));
        let kind = PendingKind::Subscribe {
            mid: mid.clone(),
            sid: sid.clone(),
        };
        self.call_sfu(now, sfu, asker, kind, |call| ToSfu::Subscribe {
            call,
            sid,
            mid,
            offer,
        })
    }

    fn unsubscribe(&mut self, uid: &PeerId, rid: &RoomId, mid: &Mid, sid: &Sid) -> Reply {
        let i = self
            .subs
            .iter()
            .position(|s| &s.sid == sid && &s.mid == mid && &s.rid == rid)
            .ok_or(RequestError::NoSuchSubscription)?;
        if &self.subs[i].uid != uid {
            return Err(RequestError::NotOwner);
        }
        self.close_subscription(i);
        Ok(Outcome::Ok)
    }

    /// Removes subscription `i` and tells its SFU.
    fn close_subscription(&mut self, i: usize) {
        let sub = self.subs.swap_remove(i);
        self.effects.push_back(Effect::Sfu {
            sfu: sub.sfu,
            msg: ToSfu::Unsubscribe { sid: sub.sid },
        });
    }

    /// Leaves one room: the peer's streams there are unpublished (others
    /// get stream-remove), its subscriptions there closed, then peer-leave.
    fn leave_room(&mut self, uid: &PeerId, rid: &RoomId) {
        let mids: Vec<Mid> = self
            .streams
            .iter()
            .filter(|s| &s.uid == uid && &s.rid == rid)
            .map(|s| s.mid.clone())
            .collect();
        for mid in &mids {
            self.remove_stream(mid, Removal::ByOwner);
        }
        while let Some(i) = self
            .subs
            .iter()
            .position(|s| &s.uid == uid && &s.rid == rid)
        {
            self.close_subscription(i);
        }
        if let Some(ridx) = self.rooms.iter().position(|r| &r.rid == rid) {
            self.rooms[ridx].members.retain(|m| m != uid);
            if self.rooms[ridx].members.is_empty() {
                self.rooms.swap_remove(ridx);
                log::debug!("room {rid} is empty and freed");
            }
        }
        if let Some(pidx) = self.peer_idx(uid) {
            self.peers[pidx].rooms.retain(|m| &m.rid != rid);
        }
        let note = protoo::notification("peer-leave", &protoo::PeerLeave { rid, uid });
        self.notify_room(rid, Some(uid), note);
        log::info!("{uid} left room {rid}");
    }

    /// Removes a stream and every subscription to it; tells the room.
    fn remove_stream(&mut self, mid: &Mid, why: Removal) {
        let Some(i) = self.streams.iter().position(|s| &s.mid == mid) else {
            return;
        };
        let s = self.streams.swap_remove(i);
        // The SFU closes the stream's subscriptions itself.
        self.subs.retain(|sub| &sub.mid != mid);
        if why == Removal::ByOwner {
            self.effects.push_back(Effect::Sfu {
                sfu: s.sfu,
                msg: ToSfu::Unpublish { mid: s.mid.clone() },
            });
        }
        let note = protoo::notification(
            "stream-remove",
            &protoo::StreamRemove {
                rid: &s.rid,
                uid: &s.uid,
                mid: &s.mid,
            },
        );
        let except = match why {
            Removal::ByOwner => Some(&s.uid),
            Removal::BySfu => None,
        };
        self.notify_room(&s.rid, except, note);
        log::info!("{}: stream {} removed", s.uid, s.mid);
    }

    // ----- SFUs -----

    /// An SFU connected and said hello.
    pub fn sfu_up(&mut self, _now: Now, sfu: SfuSlot, sfuid: NodeId) {
        if let Some(s) = self.sfus.get_mut(sfu.0) {
            log::info!("SFU {sfuid} is up (slot {sfu})");
            s.id = Some(sfuid);
        }
    }

    /// An SFU's control connection is gone: its streams and subscriptions
    /// are removed as on unpublish, its pending calls fail with 503.
    pub fn sfu_down(&mut self, _now: Now, sfu: SfuSlot) {
        let Some(state) = self.sfus.get_mut(sfu.0) else {
            return;
        };
        if let Some(id) = state.id.take() {
            log::warn!("SFU {id} is down (slot {sfu})");
        }
        let mids: Vec<Mid> = self
            .streams
            .iter()
            .filter(|s| s.sfu == sfu)
            .map(|s| s.mid.clone())
            .collect();
        for mid in &mids {
            self.remove_stream(mid, Removal::BySfu);
        }
        self.subs.retain(|s| s.sfu != sfu);
        while let Some(i) = self.pending.iter().position(|p| p.sfu == sfu) {
            let p = self.pending.swap_remove(i);
            self.reply(p.conn, p.req, Err(RequestError::NoSfu));
        }
    }

    /// A message from an SFU.
    pub fn from_sfu(&mut self, now: Now, sfu: SfuSlot, msg: FromSfu) {
        match msg {
            FromSfu::Hello { sfuid, .. } => self.sfu_up(now, sfu, sfuid),
            FromSfu::Answer { call, sdp } => self.call_done(sfu, call, Ok(sdp)),
            FromSfu::Failed { call, error } => self.call_done(sfu, call, Err(error)),
            FromSfu::StreamClosed { mid } => {
                if self.streams.iter().any(|s| s.mid == mid && s.sfu == sfu) {
                    self.remove_stream(&mid, Removal::BySfu);
                }
            }
            FromSfu::Stats(stats) => {
                if let Some(s) = self.sfus.get_mut(sfu.0) {
                    s.stats = stats;
                }
            }
            FromSfu::SubscriptionClosed { sid } => {
                self.subs.retain(|s| !(s.sid == sid && s.sfu == sfu));
            }
        }
    }

    fn call_done(&mut self, sfu: SfuSlot, call: CallId, result: Result<String, SfuError>) {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.call == call && p.sfu == sfu)
        else {
            log::debug!("SFU slot {sfu}: answer to unknown call {call}");
            return;
        };
        let p = self.pending.swap_remove(i);
        let sdp = match result {
            Ok(sdp) => sdp,
            Err(e) => {
                let err = match e {
                    SfuError::BadOffer(why) => RequestError::Malformed(why),
                    SfuError::NoSuchStream => RequestError::NoSuchStream,
                    SfuError::Full => RequestError::Full("SFU sessions"),
                    other => RequestError::Sfu(other.to_string()),
                };
                self.reply(p.conn, p.req, Err(err));
                return;
            }
        };
        // The peer may have left (or the stream gone) while the SFU worked.
        let still_here = self
            .peers
            .iter()
            .any(|peer| peer.conn == p.conn && peer.in_room(&p.rid));
        match p.kind {
            PendingKind::Publish { mid, minfo } => {
                let sfuid = self.sfus[sfu.0].id.clone();
                let (true, Some(sfuid)) = (still_here, sfuid) else {
                    self.effects.push_back(Effect::Sfu {
                        sfu,
                        msg: ToSfu::Unpublish { mid },
                    });
                    self.reply(p.conn, p.req, Err(RequestError::NotInRoom));
                    return;
                };
                let stream = Stream {
                    mid,
                    rid: p.rid,
                    uid: p.uid,
                    minfo,
                    sfu,
                };
                let answer = protoo::ok_response(
                    p.req,
                    &protoo::PublishAnswer {
                        jsep: protoo::AnswerJsep {
                            kind: "answer",
                            sdp: &sdp,
                        },
                        mid: &stream.mid,
                        sfuid: &sfuid,
                    },
                );
                self.send(p.conn, answer);
                let note = protoo::notification(
                    "stream-add",
                    &protoo::StreamAdd {
                        rid: &stream.rid,
                        uid: &stream.uid,
                        mid: &stream.mid,
                        sfuid: &sfuid,
                        minfo: &stream.minfo,
                    },
                );
                self.notify_room(&stream.rid, Some(&stream.uid), note);
                log::info!("{}: published {} on {sfuid}", stream.uid, stream.mid);
                // Capacity was reserved by the pending call.
                let _ = self.streams.push(stream);
            }
            PendingKind::Subscribe { mid, sid } => {
                let stream_alive = self.streams.iter().any(|s| s.mid == mid);
                if !(still_here && stream_alive) {
                    self.effects.push_back(Effect::Sfu {
                        sfu,
                        msg: ToSfu::Unsubscribe { sid },
                    });
                    let err = if still_here {
                        RequestError::NoSuchStream
                    } else {
                        RequestError::NotInRoom
                    };
                    self.reply(p.conn, p.req, Err(err));
                    return;
                }
                let answer = protoo::ok_response(
                    p.req,
                    &protoo::SubscribeAnswer {
                        jsep: protoo::AnswerJsep {
                            kind: "answer",
                            sdp: &sdp,
                        },
                        sid: &sid,
                    },
                );
                self.send(p.conn, answer);
                log::info!("{}: subscribed to {mid} as {sid}", p.uid);
                let _ = self.subs.push(Subscription {
                    sid,
                    mid,
                    rid: p.rid,
                    uid: p.uid,
                    sfu,
                });
            }
        }
    }

    // ----- helpers -----

    /// Sends a call to an SFU; the request is answered when the SFU
    /// answers (or does not, in time).
    fn call_sfu(
        &mut self,
        now: Now,
        sfu: SfuSlot,
        asker: Asker,
        kind: PendingKind,
        msg: impl FnOnce(CallId) -> ToSfu,
    ) -> Reply {
        if self.pending.len() >= self.limits.pending_sfu_calls {
            return Err(RequestError::Full("pending SFU calls"));
        }
        let call = self.next_call;
        let pending = PendingCall {
            call,
            sfu,
            deadline: now.mono + self.call_timeout,
            conn: asker.conn,
            uid: asker.uid,
            rid: asker.rid,
            req: asker.req,
            kind,
        };
        self.pending
            .push(pending)
            .map_err(|_| RequestError::Full("pending SFU calls"))?;
        self.next_call = CallId(call.0 + 1);
        self.effects.push_back(Effect::Sfu {
            sfu,
            msg: msg(call),
        });
        Ok(Outcome::Deferred)
    }

    fn pending_count(&self, f: impl Fn(&PendingCall) -> bool) -> usize {
        self.pending.iter().filter(|p| f(p)).count()
    }

    fn mid_in_use(&self, mid: &Mid) -> bool {
        self.streams.iter().any(|s| &s.mid == mid)
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.kind, PendingKind::Publish { mid: m, .. } if m == mid))
    }

    fn sid_in_use(&self, sid: &Sid) -> bool {
        self.subs.iter().any(|s| &s.sid == sid)
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.kind, PendingKind::Subscribe { sid: s, .. } if s == sid))
    }

    /// The live SFU with the fewest sessions (streams + subscriptions +
    /// calls under way); ties go to the lowest slot.
    fn least_loaded_sfu(&self) -> Option<SfuSlot> {
        (0..self.sfus.len())
            .filter(|&i| self.sfus[i].id.is_some())
            .map(SfuSlot)
            .min_by_key(|&i| {
                self.streams.iter().filter(|s| s.sfu == i).count()
                    + self.subs.iter().filter(|s| s.sfu == i).count()
                    + self.pending.iter().filter(|p| p.sfu == i).count()
            })
    }

    fn pub_info(&self, s: &Stream) -> protoo::PubInfo {
        protoo::PubInfo {
            mid: s.mid.clone(),
            minfo: s.minfo,
            rid: s.rid.clone(),
            sfuid: self.sfus[s.sfu.0]
                .id
                .clone()
                .unwrap_or_else(|| self.bizid.clone()),
            uid: s.uid.clone(),
        }
    }

    fn peer_idx(&self, uid: &PeerId) -> Option<usize> {
        self.peers.iter().position(|p| &p.uid == uid)
    }

    fn send(&mut self, conn: ConnId, text: String) {
        self.effects.push_back(Effect::Send {
            conn,
            text: text.into(),
        });
    }

    fn reply(&mut self, conn: ConnId, id: RequestId, result: Result<String, RequestError>) {
        let text = match result {
            Ok(t) => t,
            Err(e) => {
                log::debug!("connection {conn:?}: request {id} failed: {e}");
                let code = e.code();
                match self.errors.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => self.errors.push((code, 1)),
                }
                protoo::error_response(id, &e)
            }
        };
        self.send(conn, text);
    }

    /// Sends one notification to every member of `rid` but `except`.
    fn notify_room(&mut self, rid: &RoomId, except: Option<&PeerId>, text: String) {
        let Some(room) = self.rooms.iter().find(|r| &r.rid == rid) else {
            return;
        };
        let text: Rc<str> = text.into();
        for m in room.members.iter().filter(|m| Some(*m) != except) {
            if let Some(p) = self.peers.iter().find(|p| &p.uid == m) {
                self.effects.push_back(Effect::Send {
                    conn: p.conn,
                    text: text.clone(),
                });
            }
        }
    }
}

/// Draws ids until one is not taken (six random digits: collisions are
/// rare, and the tables are far smaller than the id space).
fn unique<T>(mut draw: impl FnMut() -> T, taken: impl Fn(&T) -> bool) -> T {
    loop {
        let v = draw();
        if !taken(&v) {
            return v;
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
