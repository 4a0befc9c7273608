//! The node's tables (peers, rooms, streams, subscriptions, SFUs and the
//! calls to them under way), their lookups, and the changes that keep them
//! consistent with each other: joining, leaving, removing a stream or a
//! subscription.

use super::access::TokenBucket;
use super::cluster::{ClusterOp, PeerRef, StreamRef};
use super::{ConnId, Effect, Node, Now, Outcome, Reply, SfuSlot};
use crate::ids::{Mid, NodeId, PeerId, RoomId, Sid};
use crate::ipc::{CallId, LayerPin, SfuStats, ToSfu};
use crate::limits::*;
use crate::signal::error::RequestError;
use crate::signal::protoo::{self, Minfo, RequestId};
use crate::signal::token::Grant;
use std::time::Instant;

pub(super) struct Peer {
    pub(super) uid: PeerId,
    pub(super) conn: ConnId,
    pub(super) rooms: heapless::Vec<Membership, MAX_ROOMS_PER_PEER>,
    /// The token of the WebSocket URL, already verified (boxed: most
    /// nodes use no tokens, and the peer table is paid for up front).
    pub(super) url_grant: Option<Box<Grant>>,
    pub(super) last_seen: Instant,
    pub(super) bucket: TokenBucket,
}

/// A room a peer is in.
pub(super) struct Membership {
    pub(super) rid: RoomId,
    /// False when the peer's token does not allow publishing there.
    pub(super) may_publish: bool,
    /// Its place in the room's order of joining (the order `users` lists;
    /// in a cluster, Redis numbers the joins of every node).
    pub(super) order: u32,
}

impl Peer {
    pub(super) fn in_room(&self, rid: &RoomId) -> bool {
        self.membership(rid).is_some()
    }

    pub(super) fn membership(&self, rid: &RoomId) -> Option<&Membership> {
        self.rooms.iter().find(|m| &m.rid == rid)
    }
}

/// A room is its id and a count: who is in it is written once, in each
/// peer's memberships. A list of member ids here would cost every room
/// slot `MAX_PEERS_PER_ROOM` ids up front (3 KiB at 48 peers, 200 KiB for
/// the table), and finding a member's connection from its id was a scan
/// of the peer table per member anyway.
pub(super) struct Room {
    pub(super) rid: RoomId,
    pub(super) members: usize,
    /// Joins so far: the next member's `order` (outside a cluster).
    pub(super) joins: u32,
}

pub(super) struct Stream {
    pub(super) mid: Mid,
    pub(super) rid: RoomId,
    pub(super) uid: PeerId,
    pub(super) minfo: Minfo,
    pub(super) sfu: SfuSlot,
    /// Set when another node's peer publishes it here (that node was
    /// full): that node announces it and owns it; this one carries it.
    pub(super) owner: Option<Box<NodeId>>,
}

impl Stream {
    /// A stream of a peer here, on SFU `sfu`.
    pub(super) fn new(mid: Mid, rid: RoomId, uid: PeerId, minfo: Minfo, sfu: SfuSlot) -> Stream {
        Stream {
            mid,
            rid,
            uid,
            minfo,
            sfu,
            owner: None,
        }
    }
}

pub(super) struct Subscription {
    pub(super) sid: Sid,
    pub(super) mid: Mid,
    pub(super) rid: RoomId,
    pub(super) uid: PeerId,
    pub(super) sfu: SfuSlot,
}

/// An SFU slot: what the node knows of the SFU behind one control socket.
pub(super) struct SfuState {
    /// `Some` while the SFU is connected and has said hello.
    pub(super) id: Option<NodeId>,
    /// Its last report.
    pub(super) stats: SfuStats,
}

pub(super) enum PendingKind {
    Publish {
        mid: Mid,
        minfo: Minfo,
    },
    Subscribe {
        mid: Mid,
        sid: Sid,
    },
    /// A relay's offer, to pull another node's stream `mid`.
    Relay {
        mid: Mid,
    },
}

/// Who asked for a call to an SFU, to answer them later.
#[derive(Clone)]
pub(super) struct Asker {
    pub(super) conn: ConnId,
    pub(super) req: RequestId,
    pub(super) uid: PeerId,
    pub(super) rid: RoomId,
}

pub(super) struct PendingCall {
    pub(super) call: CallId,
    /// Set when another node asked (for its peer `uid`): that node and
    /// its call number, to answer instead of a connection (boxed: rare,
    /// and the table is paid for up front).
    pub(super) for_node: Option<Box<(NodeId, u64)>>,
    pub(super) sfu: SfuSlot,
    pub(super) deadline: Instant,
    pub(super) conn: ConnId,
    pub(super) uid: PeerId,
    pub(super) rid: RoomId,
    pub(super) req: RequestId,
    pub(super) kind: PendingKind,
}

/// Why a stream goes away, which decides who must hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// Its owner unpublished or left: the SFU must drop the session, and
    /// the owner, who asked, needs no stream-remove.
    ByOwner,
    /// The SFU lost it (media failed, or the SFU is gone): the SFU knows
    /// already, and the owner did not ask, so it gets stream-remove too.
    BySfu,
}

impl Node {
    pub(super) fn drop_peer(&mut self, conn: ConnId) {
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

    pub(super) fn join(
        &mut self,
        now: Now,
        id: RequestId,
        conn: ConnId,
        uid: &PeerId,
        rid: RoomId,
        token: Option<&str>,
    ) -> Reply {
        let pidx = self.peer_idx(uid).ok_or(RequestError::NotInRoom)?;
        if self.peers[pidx].in_room(&rid) || self.join_pending(uid, &rid) {
            return Err(RequestError::AlreadyJoined);
        }
        let may_publish = self.admit(now, pidx, &rid, token)?;
        self.room_for(pidx, &rid)?;
        if self.cluster_linked() {
            let asker = Asker {
                conn,
                req: id,
                uid: uid.clone(),
                rid,
            };
            return self.cluster_join(now, asker, may_publish);
        }
        let text = self.enter_room(id, pidx, rid, may_publish, None)?;
        Ok(Outcome::Answer(text))
    }

    /// Whether peer `pidx` may enter `rid` as far as this node's tables
    /// go: the room's index, or None when it is to be made.
    fn room_for(&self, pidx: usize, rid: &RoomId) -> Result<Option<usize>, RequestError> {
        if self.peers[pidx].rooms.len() >= self.limits.rooms_per_peer {
            return Err(RequestError::Full("rooms per peer"));
        }
        match self.rooms.iter().position(|r| &r.rid == rid) {
            Some(i) if self.rooms[i].members >= self.limits.peers_per_room => {
                Err(RequestError::Full("peers per room"))
            }
            Some(i) => Ok(Some(i)),
            None if self.rooms.len() >= self.limits.rooms => Err(RequestError::Full("rooms")),
            None => Ok(None),
        }
    }

    /// Peer `pidx` enters `rid` (at `order`, when Redis numbered it): the
    /// room is made if need be, the others here get `peer-join`, and the
    /// answer lists the room's members and streams, on every node.
    pub(super) fn enter_room(
        &mut self,
        id: RequestId,
        pidx: usize,
        rid: RoomId,
        may_publish: bool,
        order: Option<u32>,
    ) -> Result<String, RequestError> {
        let ridx = match self.room_for(pidx, &rid)? {
            Some(i) => i,
            None => {
                let room = Room {
                    rid: rid.clone(),
                    members: 0,
                    joins: 0,
                };
                self.rooms
                    .push(room)
                    .map_err(|_| RequestError::Full("rooms"))?;
                self.rooms.len() - 1
            }
        };
        let room = &mut self.rooms[ridx];
        room.members += 1;
        let order = order.unwrap_or(room.joins);
        room.joins = room.joins.max(order).wrapping_add(1);
        // Has room: `room_for` checked.
        let _ = self.peers[pidx].rooms.push(Membership {
            rid: rid.clone(),
            may_publish,
            order,
        });
        let uid = self.peers[pidx].uid.clone();

        let mut users: Vec<(u32, protoo::UserInfo)> = self
            .members(&rid)
            .filter(|p| p.uid != uid)
            .map(|p| {
                let order = p.membership(&rid).map_or(0, |m| m.order);
                let user = protoo::UserInfo {
                    bizid: self.bizid.clone(),
                    rid: rid.clone(),
                    uid: p.uid.clone(),
                };
                (order, user)
            })
            .collect();
        users.extend(self.remote_members(&rid).map(|m| {
            let user = protoo::UserInfo {
                bizid: m.bizid.clone(),
                rid: rid.clone(),
                uid: m.uid.clone(),
            };
            (m.order, user)
        }));
        users.sort_by_key(|(order, _)| *order);
        let mut pubs: Vec<protoo::PubInfo> = self
            .streams
            .iter()
            .filter(|s| s.rid == rid && s.owner.is_none())
            .map(|s| self.pub_info(s))
            .collect();
        let elsewhere = self.remote_streams(&rid).chain(self.placed_in(&rid));
        pubs.extend(elsewhere.map(|s| protoo::PubInfo {
            mid: s.mid.clone(),
            minfo: s.minfo,
            rid: s.rid.clone(),
            sfuid: s.sfuid.clone(),
            uid: s.uid.clone(),
        }));
        let answer = protoo::JoinAnswer {
            pubs,
            users: users.into_iter().map(|(_, u)| u).collect(),
        };
        let note = protoo::notification(
            "peer-join",
            &protoo::PeerJoin {
                rid: &rid,
                uid: &uid,
                bizid: &self.bizid,
            },
        );
        self.notify_room(&rid, Some(&uid), note);
        log::info!("{uid} joined room {rid}");
        Ok(protoo::ok_response(id, &answer))
    }

    pub(super) fn unpublish(&mut self, uid: &PeerId, rid: &RoomId, mid: &Mid) -> Reply {
        let Some(s) =
            (self.streams.iter()).find(|s| &s.mid == mid && &s.rid == rid && s.owner.is_none())
        else {
            return (self.unpublish_placed(uid, rid, mid))
                .unwrap_or(Err(RequestError::NoSuchStream));
        };
        if &s.uid != uid {
            return Err(RequestError::NotOwner);
        }
        self.remove_stream(mid, Removal::ByOwner);
        Ok(Outcome::Ok)
    }

    pub(super) fn unsubscribe(
        &mut self,
        uid: &PeerId,
        rid: &RoomId,
        mid: &Mid,
        sid: &Sid,
    ) -> Reply {
        let Some(i) = self
            .subs
            .iter()
            .position(|s| &s.sid == sid && &s.mid == mid && &s.rid == rid)
        else {
            return Err(RequestError::NoSuchSubscription);
        };
        if &self.subs[i].uid != uid {
            return Err(RequestError::NotOwner);
        }
        self.close_subscription(i);
        Ok(Outcome::Ok)
    }

    /// Pins the highest layer of one of the peer's own subscriptions (the
    /// same checks as `unsubscribe`); its SFU does the rest.
    pub(super) fn pin_layer(
        &mut self,
        uid: &PeerId,
        rid: &RoomId,
        mid: &Mid,
        sid: &Sid,
        layer: Option<LayerPin>,
    ) -> Reply {
        let Some(sub) = self
            .subs
            .iter()
            .find(|s| &s.sid == sid && &s.mid == mid && &s.rid == rid)
        else {
            return Err(RequestError::NoSuchSubscription);
        };
        if &sub.uid != uid {
            return Err(RequestError::NotOwner);
        }
        self.effects.push_back(Effect::Sfu {
            sfu: sub.sfu,
            msg: ToSfu::PinLayer {
                sid: sid.clone(),
                layer,
            },
        });
        Ok(Outcome::Ok)
    }

    /// Removes subscription `i` and tells its SFU.
    pub(super) fn close_subscription(&mut self, i: usize) {
        let sub = self.subs.swap_remove(i);
        self.effects.push_back(Effect::Sfu {
            sfu: sub.sfu,
            msg: ToSfu::Unsubscribe { sid: sub.sid },
        });
        self.prune_served();
    }

    /// Leaves one room: the peer's streams there are unpublished (others
    /// get stream-remove), its subscriptions there closed, then peer-leave.
    pub(super) fn leave_room(&mut self, uid: &PeerId, rid: &RoomId) {
        let mids: Vec<Mid> = self
            .streams
            .iter()
            .filter(|s| &s.uid == uid && &s.rid == rid && s.owner.is_none())
            .map(|s| s.mid.clone())
            .collect();
        for mid in &mids {
            self.remove_stream(mid, Removal::ByOwner);
        }
        let placed: Vec<Mid> = (self.placed_in(rid))
            .filter(|s| &s.uid == uid)
            .map(|s| s.mid.clone())
            .collect();
        for mid in &placed {
            self.remove_placed(mid, Removal::ByOwner);
        }
        while let Some(i) = self
            .subs
            .iter()
            .position(|s| &s.uid == uid && &s.rid == rid)
        {
            self.close_subscription(i);
        }
        if let Some(ridx) = self.rooms.iter().position(|r| &r.rid == rid) {
            self.rooms[ridx].members -= 1;
            if self.rooms[ridx].members == 0 {
                self.rooms.swap_remove(ridx);
                self.drop_room_replica_if_unused(rid);
                log::debug!("room {rid} is empty and freed");
            }
        }
        if let Some(pidx) = self.peer_idx(uid) {
            self.peers[pidx].rooms.retain(|m| &m.rid != rid);
        }
        let note = protoo::notification("peer-leave", &protoo::PeerLeave { rid, uid });
        self.notify_room(rid, Some(uid), note);
        self.cluster_op(ClusterOp::Leave(PeerRef {
            rid: rid.clone(),
            uid: uid.clone(),
            bizid: self.bizid.clone(),
        }));
        log::info!("{uid} left room {rid}");
    }

    /// Removes a stream and every subscription to it; tells the room.
    pub(super) fn remove_stream(&mut self, mid: &Mid, why: Removal) {
        let Some(i) = self.streams.iter().position(|s| &s.mid == mid) else {
            return;
        };
        let s = self.streams.swap_remove(i);
        // The SFU closes the stream's subscriptions itself.
        self.subs.retain(|sub| &sub.mid != mid);
        self.prune_served();
        if why == Removal::ByOwner {
            self.effects.push_back(Effect::Sfu {
                sfu: s.sfu,
                msg: ToSfu::Unpublish { mid: s.mid.clone() },
            });
        }
        log::info!("{}: stream {} removed", s.uid, s.mid);
        match s.owner {
            // Carried for another node, which announced it: it hears of an
            // end it did not ask for, and tells the room.
            Some(owner) if why == Removal::BySfu => self.hosted_ended(*owner, mid),
            Some(_) => {}
            None => self.stream_gone(&s.rid, &s.uid, mid, why),
        }
    }

    /// A stream of a peer here is gone: the room hears `stream-remove`
    /// (all but its owner when the owner asked) and the cluster forgets it.
    pub(super) fn stream_gone(&mut self, rid: &RoomId, uid: &PeerId, mid: &Mid, why: Removal) {
        let note = protoo::StreamRemove { rid, uid, mid }.note();
        let except = match why {
            Removal::ByOwner => Some(uid),
            Removal::BySfu => None,
        };
        self.notify_room(rid, except, note);
        self.cluster_op(ClusterOp::Remove(StreamRef {
            rid: rid.clone(),
            mid: mid.clone(),
            uid: uid.clone(),
            bizid: self.bizid.clone(),
        }));
    }

    pub(super) fn mid_in_use(&self, mid: &Mid) -> bool {
        self.streams.iter().any(|s| &s.mid == mid)
            || self.placed_mid_in_use(mid)
            || self
                .cluster
                .as_deref()
                .is_some_and(|c| c.replica.streams.iter().any(|s| &s.mid == mid))
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.kind, PendingKind::Publish { mid: m, .. } if m == mid))
    }

    pub(super) fn sid_in_use(&self, sid: &Sid) -> bool {
        self.subs.iter().any(|s| &s.sid == sid)
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.kind, PendingKind::Subscribe { sid: s, .. } if s == sid))
            || self.relay_sid_in_use(sid)
    }

    /// The peers in `rid`, in the order they joined.
    pub(super) fn members(&self, rid: &RoomId) -> impl Iterator<Item = &Peer> {
        let mut found: heapless::Vec<(u32, &Peer), MAX_PEERS_PER_ROOM> = heapless::Vec::new();
        for p in self.peers.iter() {
            if let Some(m) = p.membership(rid) {
                // Never full: a join past `peers_per_room` is refused.
                let _ = found.push((m.order, p));
            }
        }
        found.sort_unstable_by_key(|(order, _)| *order);
        found.into_iter().map(|(_, p)| p)
    }

    fn peer_idx(&self, uid: &PeerId) -> Option<usize> {
        self.peers.iter().position(|p| &p.uid == uid)
    }
}

/// Draws ids until one is not taken (six random digits: collisions are
/// rare, and the tables are far smaller than the id space).
pub(super) fn unique<T>(mut draw: impl FnMut() -> T, taken: impl Fn(&T) -> bool) -> T {
    loop {
        let v = draw();
        if !taken(&v) {
            return v;
        }
    }
}
