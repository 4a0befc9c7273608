//! Rooms that span nodes: this node's copy of the other nodes' members and
//! streams of its own rooms (the replica), kept by the cluster's events and
//! corrected by snapshots; joins decided by Redis; what this node tells the
//! others when its own peers come, go, publish and broadcast.
//!
//! Redis is the authority on who is in a room cluster-wide (the join
//! script counts every node's members against the room's bound). Each
//! node is the authority on its own peers: after its link comes back it
//! writes them all again (`Sync`), and the others read their shared rooms
//! again and tell their clients what changed. Only rooms with a member here
//! are copied, into tables of fixed size.

use super::cluster::{
    ClusterAnswer, ClusterCall, ClusterEvent, ClusterOp, Link, MemberEntry, MemberRow, PeerRef,
    PendingJoin, RoomSnapshot, StreamEntry, MAX_REMOTE_MEMBERS,
};
use super::tables::Asker;
use super::{Effect, Node, Now, Outcome, Reply};
use crate::ids::{NodeId, PeerId, RoomId};
use crate::limits::{MAX_STREAMS, REDIS_TIMEOUT};
use crate::signal::error::RequestError;
use crate::signal::protoo;
use std::time::Instant;

/// How long a join waits for Redis before it is failed (the shell drops a
/// link that does not answer in [`REDIS_TIMEOUT`]; this is the node's own
/// bound, whatever the shell does).
const JOIN_TIMEOUT: std::time::Duration = REDIS_TIMEOUT.saturating_mul(2);

impl Node {
    /// Whether joins and the like go through the cluster now.
    pub(super) fn cluster_linked(&self) -> bool {
        self.cluster.as_deref().is_some_and(|c| c.link == Link::Up)
    }

    /// Queues an operation for Redis. While the link is down there is
    /// nobody to tell: the `Sync` after it comes back says it all.
    pub(super) fn cluster_op(&mut self, op: ClusterOp) {
        if self.cluster_linked() {
            self.effects.push_back(Effect::Cluster(Box::new(op)));
        }
    }

    fn new_cluster_call(&mut self) -> Option<ClusterCall> {
        let c = self.cluster.as_deref_mut()?;
        let call = ClusterCall(c.next_call);
        c.next_call += 1;
        Some(call)
    }

    /// A join while the link is up: Redis decides (the room's bound counts
    /// every node's members); the answer comes in [`Node::cluster_answer`].
    pub(super) fn cluster_join(&mut self, now: Now, asker: Asker, may_publish: bool) -> Reply {
        let full = self
            .cluster
            .as_deref()
            .is_none_or(|c| c.replica.joins.is_full());
        if full {
            return Err(RequestError::Full("pending joins"));
        }
        let call = self
            .new_cluster_call()
            .ok_or_else(|| RequestError::ClusterUnavailable("no cluster".into()))?;
        let op = ClusterOp::Join {
            call,
            rid: asker.rid.clone(),
            uid: asker.uid.clone(),
            bizid: self.bizid.clone(),
            cap: self.limits.peers_per_room,
        };
        if let Some(c) = self.cluster.as_deref_mut() {
            // Has room: checked above.
            let _ = c.replica.joins.push(PendingJoin {
                call,
                conn: asker.conn,
                req: asker.req,
                uid: asker.uid,
                rid: asker.rid,
                may_publish,
                deadline: now.mono + JOIN_TIMEOUT,
            });
        }
        self.cluster_op(op);
        Ok(Outcome::Deferred)
    }

    /// Whether `uid` has a join of `rid` under way.
    pub(super) fn join_pending(&self, uid: &PeerId, rid: &RoomId) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            c.replica
                .joins
                .iter()
                .any(|j| &j.uid == uid && &j.rid == rid)
        })
    }

    /// Redis answered a call.
    pub fn cluster_answer(&mut self, now: Now, call: ClusterCall, answer: ClusterAnswer) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let join = c
            .replica
            .joins
            .iter()
            .position(|j| j.call == call)
            .map(|i| c.replica.joins.swap_remove(i));
        match (join, answer) {
            (_, ClusterAnswer::Rooms(rooms)) => {
                for room in rooms {
                    self.replace_room(call, room, false);
                }
            }
            (Some(j), ClusterAnswer::Joined { order, room }) => self.joined(now, j, order, room),
            (Some(j), ClusterAnswer::Full) => {
                self.reply(j.conn, j.req, Err(RequestError::Full("peers per room")))
            }
            (Some(j), ClusterAnswer::Taken(bizid)) => {
                self.reply(j.conn, j.req, Err(RequestError::JoinedElsewhere(bizid)))
            }
            (Some(j), ClusterAnswer::Failed(why)) => {
                self.reply(j.conn, j.req, Err(RequestError::ClusterUnavailable(why)))
            }
            // A join answered after its deadline: the `Leave` queued when
            // it expired follows it and undoes it.
            (None, _) => log::debug!("cluster call {call:?} answered too late"),
        }
    }

    /// Redis let a peer in: it enters the room here with the order Redis
    /// gave it, and the other nodes' members and streams come with the
    /// answer. If it went away meanwhile, Redis is told it left.
    fn joined(&mut self, _now: Now, j: PendingJoin, order: u32, room: RoomSnapshot) {
        let here = self
            .peers
            .iter()
            .position(|p| p.conn == j.conn && p.uid == j.uid)
            .filter(|&i| !self.peers[i].in_room(&j.rid));
        let Some(pidx) = here else {
            self.cluster_op(ClusterOp::Leave(PeerRef {
                rid: j.rid.clone(),
                uid: j.uid.clone(),
                bizid: self.bizid.clone(),
            }));
            return;
        };
        self.replace_room(j.call, room, true);
        match self.enter_room(j.req, pidx, j.rid.clone(), j.may_publish, Some(order)) {
            Ok(text) => self.send(j.conn, text),
            Err(e) => {
                self.cluster_op(ClusterOp::Leave(PeerRef {
                    rid: j.rid.clone(),
                    uid: j.uid.clone(),
                    bizid: self.bizid.clone(),
                }));
                self.drop_room_replica_if_unused(&j.rid);
                self.reply(j.conn, j.req, Err(e));
            }
        }
    }

    /// When the first join waiting for Redis runs out of time.
    pub(super) fn join_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_deref()?;
        c.replica.joins.iter().map(|j| j.deadline).min()
    }

    /// Fails the joins waiting for Redis: all of them (`now` None: the
    /// link is gone), or those whose time is up. Each is undone with a
    /// `Leave` queued behind it: operations are carried out in order, so
    /// whenever the join is done, the leave follows (with the link down
    /// there is nothing to undo, and `cluster_op` sends nothing).
    pub(super) fn fail_joins(&mut self, now: Option<Instant>, why: &str) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(i) =
            (c.replica.joins.iter()).position(|j| now.is_none_or(|now| j.deadline <= now))
        {
            due.push(c.replica.joins.swap_remove(i));
        }
        for j in due {
            let err = RequestError::ClusterUnavailable(why.to_string());
            self.reply(j.conn, j.req, Err(err));
            self.cluster_op(ClusterOp::Leave(PeerRef {
                rid: j.rid,
                uid: j.uid,
                bizid: self.bizid.clone(),
            }));
        }
    }

    /// Writes this node's whole state to Redis (after the link came back,
    /// or when Redis had taken this node for dead); the answer corrects
    /// the replica of every room here.
    pub(super) fn sync(&mut self, _now: Now) {
        let Some(call) = self.new_cluster_call() else {
            return;
        };
        let rooms = self
            .rooms
            .iter()
            .map(|r| RoomSnapshot {
                rid: r.rid.clone(),
                members: self
                    .members(&r.rid)
                    .map(|p| MemberEntry {
                        uid: p.uid.clone(),
                        bizid: self.bizid.clone(),
                        order: p.membership(&r.rid).map_or(0, |m| m.order),
                    })
                    .collect(),
                streams: self
                    .streams
                    .iter()
                    .filter(|s| s.rid == r.rid && s.owner.is_none())
                    .filter_map(|s| self.stream_entry(s))
                    .chain(self.placed_in(&r.rid).cloned())
                    .collect(),
            })
            .collect();
        self.cluster_op(ClusterOp::Sync {
            call,
            bizid: self.bizid.clone(),
            rooms,
        });
    }

    /// A local stream as the cluster keeps it (None while its SFU is
    /// down, which never lasts: `sfu_down` removes its streams).
    pub(super) fn stream_entry(&self, s: &super::tables::Stream) -> Option<StreamEntry> {
        Some(StreamEntry {
            rid: s.rid.clone(),
            mid: s.mid.clone(),
            uid: s.uid.clone(),
            bizid: self.bizid.clone(),
            sfuid: self.sfus[s.sfu.0].id.clone()?,
            minfo: s.minfo,
            host: None,
        })
    }

    /// One of the other nodes' events about rooms.
    pub(super) fn room_event(&mut self, _now: Now, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Join {
                rid,
                uid,
                bizid,
                order,
            } if bizid != self.bizid => {
                let entry = MemberEntry { uid, bizid, order };
                self.add_remote_member(&rid, entry, false);
            }
            ClusterEvent::Leave(p) if p.bizid != self.bizid => {
                self.remove_remote_member(&p.rid, &p.uid, &p.bizid);
            }
            ClusterEvent::Add(entry) if entry.bizid != self.bizid => {
                self.add_remote_stream(entry, false);
            }
            ClusterEvent::Remove(s) if s.bizid != self.bizid => {
                self.remove_remote_stream(&s.rid, &s.mid, &s.bizid);
            }
            ClusterEvent::Broadcast {
                rid,
                uid,
                bizid,
                data,
            } if bizid != self.bizid => {
                // Only this node's members of the room hear it (if any).
                let note = protoo::BroadcastNote {
                    rid: &rid,
                    uid: &uid,
                    data: &data,
                }
                .note();
                self.notify_room(&rid, None, note);
            }
            ClusterEvent::Sync { bizid } if bizid != self.bizid => {
                if let Some(c) = self.cluster.as_deref_mut() {
                    let after = ClusterCall(c.next_call);
                    if let Some(r) = c.resync.as_mut() {
                        if !r.synced.iter().any(|(b, _)| *b == bizid) {
                            // Full: the rest are kept until the grace ends.
                            let _ = r.synced.push((bizid, after));
                        }
                    }
                }
                // It may share any of our rooms: read them all again.
                self.reread_rooms();
            }
            _ => {}
        }
    }

    /// Reads every room of this node from Redis again.
    fn reread_rooms(&mut self) {
        let rids: Vec<RoomId> = self.rooms.iter().map(|r| r.rid.clone()).collect();
        if let (false, Some(call)) = (rids.is_empty(), self.new_cluster_call()) {
            self.cluster_op(ClusterOp::Snapshot { call, rids });
        }
    }

    /// The grace after the link came back is over: the rooms are read
    /// again, and what Redis still lacks is gone.
    pub(super) fn settle(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.settle_at.is_none_or(|t| t > now) {
            return;
        }
        c.settle_at = None;
        if let Some(r) = c.resync.as_mut() {
            r.until = Some(ClusterCall(c.next_call));
        }
        if c.link == Link::Up {
            self.reread_rooms();
        }
    }

    /// When the grace after the link came back ends.
    pub(super) fn settle_timeout(&self) -> Option<Instant> {
        self.cluster.as_deref()?.settle_at
    }

    /// Whether an entry of node `bizid` that the answer to `call` lacks is
    /// kept for now: the call was made in the grace after the link came
    /// back, before the node (alive) was heard writing its state again.
    fn awaiting_resync(&self, call: ClusterCall, bizid: &NodeId) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            c.resync.as_ref().is_some_and(|r| r.may_lack(call, bizid))
                && c.nodes.iter().any(|n| &n.beat.bizid == bizid)
        })
    }

    /// A member of another node enters a room here; the local members
    /// hear of it. `entering`: copy it even though the room has nobody
    /// here yet (its first member is being let in).
    fn add_remote_member(&mut self, rid: &RoomId, entry: MemberEntry, entering: bool) {
        if !entering && !self.rooms.iter().any(|r| &r.rid == rid) {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let members = &mut c.replica.members;
        if let Some(row) = members
            .iter_mut()
            .find(|m| &m.rid == rid && m.entry.uid == entry.uid)
        {
            row.entry = entry;
            return;
        }
        let note = protoo::notification(
            "peer-join",
            &protoo::PeerJoin {
                rid,
                uid: &entry.uid,
                bizid: &entry.bizid,
            },
        );
        let row = MemberRow {
            rid: rid.clone(),
            entry,
        };
        if members.push(row).is_err() {
            log::warn!(
                "room {rid}: a member of another node is not shown here: this node keeps \
                 {MAX_REMOTE_MEMBERS} at most"
            );
            return;
        }
        self.notify_room(rid, None, note);
    }

    fn remove_remote_member(&mut self, rid: &RoomId, uid: &PeerId, bizid: &NodeId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let members = &mut c.replica.members;
        let Some(i) = members
            .iter()
            .position(|m| &m.rid == rid && &m.entry.uid == uid && &m.entry.bizid == bizid)
        else {
            return;
        };
        members.swap_remove(i);
        // Its streams went with it (its node says so too; a crash would not).
        let mids: Vec<_> = c
            .replica
            .streams
            .iter()
            .filter(|s| &s.rid == rid && &s.uid == uid)
            .map(|s| s.mid.clone())
            .collect();
        for mid in mids {
            self.remove_remote_stream(rid, &mid, bizid);
        }
        let note = protoo::notification("peer-leave", &protoo::PeerLeave { rid, uid });
        self.notify_room(rid, None, note);
    }

    /// A stream of another node appears in a room here (`entering`: as
    /// for [`Node::add_remote_member`]).
    fn add_remote_stream(&mut self, entry: StreamEntry, entering: bool) {
        if !entering && !self.rooms.iter().any(|r| r.rid == entry.rid) {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let streams = &mut c.replica.streams;
        if streams.iter().any(|s| s.mid == entry.mid) {
            return;
        }
        let note = super::responses::stream_add(&entry);
        let rid = entry.rid.clone();
        if streams.push(entry).is_err() {
            log::warn!(
                "room {rid}: a stream of another node is not shown here: this node keeps \
                 {MAX_STREAMS} at most"
            );
            return;
        }
        self.notify_room(&rid, None, note);
    }

    fn remove_remote_stream(&mut self, rid: &RoomId, mid: &crate::ids::Mid, bizid: &NodeId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let streams = &mut c.replica.streams;
        let Some(i) = streams
            .iter()
            .position(|s| &s.rid == rid && &s.mid == mid && &s.bizid == bizid)
        else {
            return;
        };
        let s = streams.swap_remove(i);
        self.remote_stream_ended(&s.mid);
        let note = protoo::StreamRemove {
            rid: &s.rid,
            uid: &s.uid,
            mid: &s.mid,
        }
        .note();
        self.notify_room(rid, None, note);
    }

    /// A dead node's members leave and its streams end, in every room here.
    pub(super) fn forget_node(&mut self, bizid: &NodeId) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let gone: Vec<(RoomId, PeerId)> = c
            .replica
            .members
            .iter()
            .filter(|m| &m.entry.bizid == bizid)
            .map(|m| (m.rid.clone(), m.entry.uid.clone()))
            .collect();
        let ended: Vec<(RoomId, crate::ids::Mid)> = c
            .replica
            .streams
            .iter()
            .filter(|s| &s.bizid == bizid)
            .map(|s| (s.rid.clone(), s.mid.clone()))
            .collect();
        for (rid, mid) in ended {
            self.remove_remote_stream(&rid, &mid, bizid);
        }
        for (rid, uid) in gone {
            self.remove_remote_member(&rid, &uid, bizid);
        }
        self.forget_node_subs(bizid);
        self.host_gone(bizid);
        self.owner_gone(bizid);
    }

    /// Makes the replica of one room what Redis says it is, telling the
    /// local members what changed. `call`: the call it answers (an entry
    /// it lacks may be kept: see `Resync`). `joining`: the room may have no
    /// member here yet (its first is about to enter).
    pub(super) fn replace_room(&mut self, call: ClusterCall, room: RoomSnapshot, joining: bool) {
        if !joining && !self.rooms.iter().any(|r| r.rid == room.rid) {
            return;
        }
        let rid = room.rid;
        // This node's own entries carry the order Redis gave them.
        for m in room.members.iter().filter(|m| m.bizid == self.bizid) {
            if let Some(p) = self.peers.iter_mut().find(|p| p.uid == m.uid) {
                if let Some(ms) = p.rooms.iter_mut().find(|ms| ms.rid == rid) {
                    ms.order = m.order;
                }
            }
        }
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let me = self.bizid.clone();
        let theirs = move |b: &NodeId| b != &me;
        let stale_members: Vec<(PeerId, NodeId)> = c
            .replica
            .members
            .iter()
            .filter(|m| m.rid == rid)
            .filter(|m| !self.awaiting_resync(call, &m.entry.bizid))
            .filter(|m| {
                !room
                    .members
                    .iter()
                    .any(|n| n.uid == m.entry.uid && n.bizid == m.entry.bizid)
            })
            .map(|m| (m.entry.uid.clone(), m.entry.bizid.clone()))
            .collect();
        let stale_streams: Vec<(crate::ids::Mid, NodeId)> = c
            .replica
            .streams
            .iter()
            .filter(|s| s.rid == rid)
            .filter(|s| !self.awaiting_resync(call, &s.bizid))
            .filter(|s| !room.streams.iter().any(|n| n.mid == s.mid))
            .map(|s| (s.mid.clone(), s.bizid.clone()))
            .collect();
        for (mid, bizid) in stale_streams {
            self.remove_remote_stream(&rid, &mid, &bizid);
        }
        for (uid, bizid) in stale_members {
            self.remove_remote_member(&rid, &uid, &bizid);
        }
        // The joining peer is not a member yet: what is new goes to the
        // others here, and to it in the join's answer.
        for m in room.members.into_iter().filter(|m| theirs(&m.bizid)) {
            self.add_remote_member(&rid, m, joining);
        }
        for s in room.streams.into_iter().filter(|s| theirs(&s.bizid)) {
            self.add_remote_stream(s, joining);
        }
    }

    /// Forgets the other nodes' part of `rid` once nobody here is in it.
    pub(super) fn drop_room_replica_if_unused(&mut self, rid: &RoomId) {
        if self.rooms.iter().any(|r| &r.rid == rid) {
            return;
        }
        if let Some(c) = self.cluster.as_deref_mut() {
            c.replica.members.retain(|m| &m.rid != rid);
            c.replica.streams.retain(|s| &s.rid != rid);
        }
    }

    /// The other nodes' members of `rid`, for a join's answer.
    pub(super) fn remote_members<'a>(
        &'a self,
        rid: &'a RoomId,
    ) -> impl Iterator<Item = &'a MemberEntry> + 'a {
        let rows = self.cluster.as_deref().map(|c| c.replica.members.iter());
        rows.into_iter()
            .flatten()
            .filter(move |m| &m.rid == rid)
            .map(|m| &m.entry)
    }

    /// The other nodes' streams in `rid`, for a join's answer.
    pub(super) fn remote_streams<'a>(
        &'a self,
        rid: &'a RoomId,
    ) -> impl Iterator<Item = &'a StreamEntry> + 'a {
        let rows = self.cluster.as_deref().map(|c| c.replica.streams.iter());
        rows.into_iter().flatten().filter(move |s| &s.rid == rid)
    }

    /// Whether another node has a member in `rid` (a broadcast must cross).
    pub(super) fn has_remote_members(&self, rid: &RoomId) -> bool {
        self.remote_members(rid).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::cluster::{NodeMsg, StreamRef, SubscribeAsk};
    use super::super::{ConnId, Effect, Node, Now, SfuSlot};
    use super::*;
    use crate::ids::Sid;
    use crate::ipc::ToSfu;
    use crate::limits::Limits;
    use crate::signal::protoo::Minfo;
    use serde_json::{json, Value};

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    /// Node "a" of a cluster, link up, one SFU, alice on connection 1.
    struct H {
        node: Node,
        now: Now,
        next: u64,
    }

    impl H {
        fn new() -> H {
            H::with(Limits::default())
        }

        fn with(limits: Limits) -> H {
            let mut node = Node::new(id("a"), limits, 1);
            let now = Now {
                mono: Instant::now(),
                unix_secs: 1_700_000_000,
            };
            node.sfu_up(now, super::super::SfuSlot(0), id("a-sfu-1"));
            node.enable_cluster(1);
            node.cluster_up(now);
            let mut h = H { node, now, next: 1 };
            assert!(matches!(h.ops()[..], [ClusterOp::Sync { .. }]));
            h.connect(1, "alice");
            h
        }

        fn connect(&mut self, conn: u64, uid: &str) {
            let uid = PeerId::parse(uid).unwrap();
            self.node
                .connect(self.now, ConnId(conn), uid, None)
                .unwrap();
        }

        fn effects(&mut self) -> Vec<Effect> {
            std::iter::from_fn(|| self.node.poll_effect()).collect()
        }

        fn ops(&mut self) -> Vec<ClusterOp> {
            self.effects()
                .into_iter()
                .filter_map(|e| match e {
                    Effect::Cluster(op) => Some(*op),
                    _ => None,
                })
                .collect()
        }

        fn req(&mut self, conn: u64, method: &str, data: Value) {
            let text = json!({"request": true, "id": self.next, "method": method, "data": data});
            self.next += 1;
            match protoo::decode(&text.to_string()) {
                protoo::Incoming::Request(rid, r) => {
                    self.node.request(self.now, ConnId(conn), rid, *r)
                }
                other => panic!("{other:?}"),
            }
        }

        /// The methods of the notifications connection `conn` was sent.
        fn methods(effects: &[Effect], conn: u64) -> Vec<String> {
            H::sent(effects, conn)
                .iter()
                .map(|m| m["method"].as_str().unwrap().to_string())
                .collect()
        }

        /// What connection `conn` was sent, decoded.
        fn sent(effects: &[Effect], conn: u64) -> Vec<Value> {
            effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Send { conn: c, text } if *c == ConnId(conn) => {
                        Some(serde_json::from_str(text).unwrap())
                    }
                    _ => None,
                })
                .collect()
        }

        /// Joins `conn` to `rid` with Redis answering `room`; the answer.
        fn join(&mut self, conn: u64, rid: &str, order: u32, room: RoomSnapshot) -> Value {
            self.req(conn, "join", json!({"rid": rid}));
            let ops = self.ops();
            let [ClusterOp::Join { call, .. }] = ops[..] else {
                panic!("{ops:?}")
            };
            self.node
                .cluster_answer(self.now, call, ClusterAnswer::Joined { order, room });
            let fx = self.effects();
            H::sent(&fx, conn).pop().unwrap()
        }
    }

    fn member(uid: &str, bizid: &str, order: u32) -> MemberEntry {
        MemberEntry {
            uid: PeerId::parse(uid).unwrap(),
            bizid: id(bizid),
            order,
        }
    }

    fn stream(mid: &str, uid: &str, bizid: &str) -> StreamEntry {
        StreamEntry {
            rid: RoomId::parse("r").unwrap(),
            mid: crate::ids::Mid::parse(mid).unwrap(),
            uid: PeerId::parse(uid).unwrap(),
            bizid: id(bizid),
            host: None,
            sfuid: id(&format!("{bizid}-sfu-1")),
            minfo: Minfo {
                audio: true,
                video: true,
                audiotype: 0,
                videotype: 0,
            },
        }
    }

    fn room(members: Vec<MemberEntry>, streams: Vec<StreamEntry>) -> RoomSnapshot {
        RoomSnapshot {
            rid: RoomId::parse("r").unwrap(),
            members,
            streams,
        }
    }

    #[test]
    fn a_join_lists_every_node_s_members_in_order_and_their_streams() {
        let mut h = H::new();
        let snap = room(
            vec![member("bob", "b", 1), member("carol", "c", 3)],
            vec![stream("bob#000001", "bob", "b")],
        );
        let answer = h.join(1, "r", 4, snap);
        assert_eq!(answer["ok"], true, "{answer}");
        let users = &answer["data"]["users"];
        assert_eq!(users[0]["uid"], "bob");
        assert_eq!(users[0]["bizid"], "b");
        assert_eq!(users[1]["uid"], "carol");
        assert_eq!(answer["data"]["pubs"][0]["sfuid"], "b-sfu-1");
        // Dan joins here at 5: he sees alice (4) after carol (3).
        h.connect(2, "dan");
        let answer = h.join(
            2,
            "r",
            5,
            room(vec![member("bob", "b", 1), member("carol", "c", 3)], vec![]),
        );
        let uids: Vec<_> = answer["data"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["uid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(uids, ["bob", "carol", "alice"]);
        // The newer snapshot had no stream: alice heard it end.
        let metrics = h.node.cluster_metrics().unwrap();
        assert_eq!((metrics.remote_members, metrics.remote_streams), (2, 0));
    }

    #[test]
    fn events_of_other_nodes_reach_local_members_and_their_own_are_ignored() {
        let mut h = H::new();
        h.join(1, "r", 1, room(vec![], vec![]));
        let rid = RoomId::parse("r").unwrap();
        let bob = PeerId::parse("bob").unwrap();
        let ev = |h: &mut H, ev: ClusterEvent| {
            h.node.cluster_event(h.now, ev);
            let fx = h.effects();
            H::sent(&fx, 1)
        };
        let own = ClusterEvent::Join {
            rid: rid.clone(),
            uid: bob.clone(),
            bizid: id("a"),
            order: 2,
        };
        assert!(
            ev(&mut h, own).is_empty(),
            "its own events were done already"
        );
        let join = ClusterEvent::Join {
            rid: rid.clone(),
            uid: bob.clone(),
            bizid: id("b"),
            order: 2,
        };
        let got = ev(&mut h, join.clone());
        assert_eq!(got[0]["method"], "peer-join");
        assert_eq!(got[0]["data"]["bizid"], "b");
        assert!(ev(&mut h, join).is_empty(), "a repeated event is no news");
        let got = ev(&mut h, ClusterEvent::Add(stream("bob#000001", "bob", "b")));
        assert_eq!(got[0]["method"], "stream-add");
        let other_room = ClusterEvent::Join {
            rid: RoomId::parse("elsewhere").unwrap(),
            uid: bob.clone(),
            bizid: id("b"),
            order: 1,
        };
        assert!(ev(&mut h, other_room).is_empty());
        let got = ev(
            &mut h,
            ClusterEvent::Broadcast {
                rid: rid.clone(),
                uid: bob.clone(),
                bizid: id("b"),
                data: json!(1),
            },
        );
        assert_eq!(got[0]["method"], "broadcast");
        // Leaving takes its streams along.
        let got = ev(
            &mut h,
            ClusterEvent::Leave(PeerRef {
                rid,
                uid: bob,
                bizid: id("b"),
            }),
        );
        let methods: Vec<_> = got.iter().map(|m| m["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["stream-remove", "peer-leave"]);
    }

    #[test]
    fn a_dead_node_leaves_every_room_and_is_purged() {
        let mut h = H::new();
        h.join(1, "r", 2, bob_of_b());
        h.node.cluster_event(
            h.now,
            ClusterEvent::Bye {
                bizid: id("b"),
                epoch: 9,
            },
        );
        assert!(
            h.effects().is_empty(),
            "an unknown process's goodbye is nothing"
        );
        let beat = super::super::cluster::Beat {
            bizid: id("b"),
            epoch: 9,
            peers: 1,
            streams: 1,
            free_streams: 0,
        };
        h.node.cluster_event(h.now, ClusterEvent::Beat(beat));
        h.node.cluster_event(
            h.now,
            ClusterEvent::Bye {
                bizid: id("b"),
                epoch: 9,
            },
        );
        let fx = h.effects();
        let methods = H::methods(&fx, 1);
        assert_eq!(methods, ["stream-remove", "peer-leave"]);
        let purge = ClusterOp::Purge { bizid: id("b") };
        assert!(fx.contains(&Effect::Cluster(Box::new(purge))));
    }

    #[test]
    fn without_a_link_joins_are_local_and_a_broken_link_fails_waiting_ones() {
        let mut h = H::new();
        h.connect(2, "bob");
        h.req(1, "join", json!({"rid": "r"}));
        assert_eq!(h.ops().len(), 1);
        h.node.cluster_down(h.now, "connection refused".into());
        let fx = h.effects();
        let answer = &H::sent(&fx, 1)[0];
        assert_eq!(answer["errorCode"], 503, "{answer}");
        assert!(answer["errorReason"]
            .as_str()
            .unwrap()
            .contains("connection refused"));
        // Down: the join is this node's alone, and nothing goes to Redis.
        h.req(2, "join", json!({"rid": "r"}));
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 2)[0]["ok"], true);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Cluster(_))));
        // Up again: the first thing is the whole state.
        h.node.cluster_up(h.now);
        let ops = h.ops();
        let [ClusterOp::Sync { rooms, .. }] = &ops[..] else {
            panic!("{ops:?}")
        };
        assert_eq!(rooms[0].members[0].uid.as_str(), "bob");
    }

    #[test]
    fn after_the_link_returns_a_live_node_s_entries_wait_for_it_to_write_them_again() {
        let mut h = in_room_with_bob_of_live_b();
        // Redis restarted empty: this node's own sync finds nothing of b.
        let sync_answer = |h: &mut H| {
            let ops = h.ops();
            let call = ops.iter().find_map(|op| op.call()).expect("a call");
            h.node.cluster_answer(
                h.now,
                call,
                ClusterAnswer::Rooms(vec![room(vec![], vec![])]),
            );
            h.effects()
        };
        h.node.cluster_down(h.now, "gone".into());
        h.node.cluster_up(h.now);
        let fx = sync_answer(&mut h);
        assert!(H::sent(&fx, 1).is_empty(), "bob kept: {fx:?}");
        // b writes its state again: the rooms are read, bob is there.
        h.node
            .cluster_event(h.now, ClusterEvent::Sync { bizid: id("b") });
        let ops = h.ops();
        let call = ops.iter().find_map(|op| op.call()).expect("a snapshot");
        h.node
            .cluster_answer(h.now, call, ClusterAnswer::Rooms(vec![bob_of_b()]));
        assert!(H::sent(&h.effects(), 1).is_empty());

        // Another time b never writes again (its peer left meanwhile):
        // when the grace ends the rooms are read again, and bob is gone.
        h.node.cluster_down(h.now, "gone".into());
        h.node.cluster_up(h.now);
        let fx = sync_answer(&mut h);
        assert!(H::sent(&fx, 1).is_empty());
        h.now.mono += crate::limits::RESYNC_GRACE;
        h.node.cluster_event(
            h.now,
            ClusterEvent::Beat(super::super::cluster::Beat {
                bizid: id("b"),
                epoch: 1,
                peers: 0,
                streams: 0,
                free_streams: 9,
            }),
        );
        assert_eq!(h.node.poll_timeout(), Some(h.now.mono));
        h.node.tick(h.now);
        let fx = sync_answer(&mut h);
        let methods = H::methods(&fx, 1);
        assert_eq!(methods, ["stream-remove", "peer-leave"]);
    }

    #[test]
    fn an_answer_read_before_a_node_wrote_its_state_again_keeps_its_entries() {
        let mut h = in_room_with_bob_of_live_b();
        let call = |ops: Vec<ClusterOp>| ops.iter().find_map(|op| op.call()).expect("a call");
        // Redis restarted empty. This node writes its state again, and
        // hears b's `Sync` (on the event connection) before the answer to
        // its own (on the command connection), read before b wrote.
        h.node.cluster_down(h.now, "gone".into());
        h.node.cluster_up(h.now);
        let own = call(h.ops());
        h.node
            .cluster_event(h.now, ClusterEvent::Sync { bizid: id("b") });
        let reread = call(h.ops());
        h.node
            .cluster_answer(h.now, own, ClusterAnswer::Rooms(vec![room(vec![], vec![])]));
        assert!(H::sent(&h.effects(), 1).is_empty(), "bob kept");
        // The read made after b's `Sync` is believed: here bob has left.
        h.node.cluster_answer(
            h.now,
            reread,
            ClusterAnswer::Rooms(vec![room(vec![], vec![])]),
        );
        let methods = H::methods(&h.effects(), 1);
        assert_eq!(methods, ["stream-remove", "peer-leave"]);
    }

    #[test]
    fn a_join_redis_does_not_answer_fails_and_is_undone() {
        let mut h = H::new();
        h.req(1, "join", json!({"rid": "r"}));
        h.ops();
        let due = h.node.poll_timeout().unwrap();
        h.now.mono = due;
        h.node.tick(h.now);
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 1)[0]["errorCode"], 503);
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::Cluster(op) if matches!(**op, ClusterOp::Leave(_)))));
    }

    #[test]
    fn refusals_from_redis_are_the_usual_errors() {
        let mut h = H::new();
        for (answer, code) in [
            (ClusterAnswer::Full, 503),
            (ClusterAnswer::Taken(id("b")), 409),
        ] {
            h.req(1, "join", json!({"rid": "r"}));
            let ops = h.ops();
            let call = ops[0].call().unwrap();
            h.node.cluster_answer(h.now, call, answer);
            let fx = h.effects();
            assert_eq!(H::sent(&fx, 1)[0]["errorCode"], code);
        }
    }

    /// The SFU call among `fx`.
    fn sfu_call(fx: &[Effect]) -> crate::ipc::CallId {
        fx.iter()
            .find_map(|e| match e {
                Effect::Sfu {
                    msg: ToSfu::Publish { call, .. } | ToSfu::Subscribe { call, .. },
                    ..
                } => Some(*call),
                _ => None,
            })
            .expect("an SFU call")
    }

    fn sent_to_node(fx: &[Effect]) -> Vec<(NodeId, NodeMsg)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Cluster(op) => match &**op {
                    ClusterOp::Send { to, msg } => Some((to.clone(), msg.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Every message to an SFU among `fx`.
    fn to_sfu(fx: &[Effect]) -> Vec<ToSfu> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Sfu { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    fn relays(h: &H) -> usize {
        h.node.cluster_metrics().unwrap().relays
    }

    /// Room "r" as Redis has it: bob of node b, who publishes bob#000001.
    fn bob_of_b() -> RoomSnapshot {
        room(
            vec![member("bob", "b", 1)],
            vec![stream("bob#000001", "bob", "b")],
        )
    }

    /// Alice (connection 1) here, in room "r" with bob of node b, whose
    /// heartbeat was heard.
    fn in_room_with_bob_of_live_b() -> H {
        let mut h = H::new();
        h.join(1, "r", 2, bob_of_b());
        let beat = super::super::cluster::Beat {
            bizid: id("b"),
            epoch: 1,
            peers: 1,
            streams: 1,
            free_streams: 9,
        };
        h.node.cluster_event(h.now, ClusterEvent::Beat(beat));
        h
    }

    /// Alice (connection 1) and dan (2) here, in room "r" with bob of
    /// node b, who publishes bob#000001.
    fn with_a_stream_on_b() -> H {
        let mut h = H::new();
        let snap = bob_of_b();
        h.join(1, "r", 2, snap.clone());
        h.connect(2, "dan");
        h.join(2, "r", 3, snap);
        h
    }

    fn subscribe_bob(h: &mut H, conn: u64) {
        let offer = json!({"type": "offer", "sdp": "v=0"});
        h.req(
            conn,
            "subscribe",
            json!({"rid": "r", "mid": "bob#000001", "jsep": offer}),
        );
    }

    /// The SFU answers every subscribe among `msgs`; the sids.
    fn answer_subscribes(h: &mut H, msgs: &[ToSfu]) -> Vec<Sid> {
        let mut sids = Vec::new();
        for m in msgs {
            if let ToSfu::Subscribe { call, sid, mid, .. } = m {
                assert_eq!(mid.as_str(), "bob#000001");
                let answer = crate::ipc::FromSfu::Answer {
                    call: *call,
                    sdp: format!("v=0 {sid}"),
                };
                h.node.sfu_message(h.now, SfuSlot(0), answer);
                sids.push(sid.clone());
            }
        }
        sids
    }

    #[test]
    fn subscriptions_to_another_node_s_stream_share_one_relay() {
        let mut h = with_a_stream_on_b();
        subscribe_bob(&mut h, 1);
        // The SFU here makes the relay's offer first; nothing goes to b.
        let fx = h.effects();
        let [ToSfu::RelayOffer {
            call,
            audio: true,
            video: true,
            ..
        }] = to_sfu(&fx)[..]
        else {
            panic!("{fx:?}")
        };
        assert!(sent_to_node(&fx).is_empty());
        // Dan's subscription waits for the same relay.
        subscribe_bob(&mut h, 2);
        let fx = h.effects();
        assert!(to_sfu(&fx).is_empty() && sent_to_node(&fx).is_empty());
        let offer = crate::ipc::FromSfu::Answer {
            call,
            sdp: "v=0 relay".into(),
        };
        h.node.sfu_message(h.now, SfuSlot(0), offer);
        let fx = h.effects();
        let sent = sent_to_node(&fx);
        let [(to, NodeMsg::Subscribe(ask))] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!((to.as_str(), ask.offer.as_str()), ("b", "v=0 relay"));
        let relay_sid = ask.sid.clone();
        let call = ask.call;
        b_answers(&mut h, call, &relay_sid, "v=0 b");
        // The relay is completed, and both subscriptions are made on the
        // SFU here, to the relayed stream.
        let fx = h.effects();
        let msgs = to_sfu(&fx);
        assert!(
            matches!(&msgs[0], ToSfu::RelayAnswer { answer, .. } if answer == "v=0 b"),
            "{msgs:?}"
        );
        let sids = answer_subscribes(&mut h, &msgs[1..]);
        assert_eq!(sids.len(), 2);
        let fx = h.effects();
        for conn in [1, 2] {
            let answer = &H::sent(&fx, conn)[0];
            let sid = answer["data"]["sid"].as_str().unwrap();
            assert!(sids.iter().any(|s| s.as_str() == sid), "{answer}");
        }
        assert_eq!((h.node.counts().3, relays(&h)), (2, 1));
        // Alice is done: the relay stays for dan. When dan is done too, it
        // ends here and on b.
        for (conn, sid) in [(1, &sids[0]), (2, &sids[1])] {
            let ids = json!({"rid": "r", "mid": "bob#000001", "sid": sid.as_str()});
            h.req(conn, "unsubscribe", ids);
        }
        let fx = h.effects();
        assert!(to_sfu(&fx)
            .iter()
            .any(|m| matches!(m, ToSfu::Unpublish { mid } if mid.as_str() == "bob#000001")));
        assert!(matches!(
            &sent_to_node(&fx)[..],
            [(_, NodeMsg::Unsubscribe { sid, .. })] if sid == &relay_sid
        ));
        assert_eq!((h.node.counts().3, relays(&h)), (0, 0));
    }

    #[test]
    fn a_relay_refused_or_ended_takes_its_subscriptions_along() {
        let mut h = with_a_stream_on_b();
        // b refuses: the waiting subscriber hears b's code.
        let (call, _) = relay_asked(&mut h);
        let refused = NodeMsg::Refused {
            call,
            code: 503,
            reason: "capacity full: x".into(),
        };
        h.node.cluster_message(h.now, refused);
        let fx = h.effects();
        let answer = &H::sent(&fx, 1)[0];
        assert_eq!(
            (answer["errorCode"].as_u64(), answer["errorReason"].as_str()),
            (Some(503), Some("capacity full: x"))
        );
        assert!(to_sfu(&fx)
            .iter()
            .any(|m| matches!(m, ToSfu::Unpublish { .. })));
        assert_eq!(relays(&h), 0);

        // The next one is made; then bob unpublishes on b: the relay and
        // the subscription end here, with no word to b (its side ended).
        relay_up(&mut h);
        assert_eq!((h.node.counts().3, relays(&h)), (1, 1));
        let gone = StreamRef {
            rid: RoomId::parse("r").unwrap(),
            mid: crate::ids::Mid::parse("bob#000001").unwrap(),
            uid: PeerId::parse("bob").unwrap(),
            bizid: id("b"),
        };
        h.node.cluster_event(h.now, ClusterEvent::Remove(gone));
        let fx = h.effects();
        assert!(to_sfu(&fx)
            .iter()
            .any(|m| matches!(m, ToSfu::Unpublish { .. })));
        assert!(sent_to_node(&fx).is_empty(), "{fx:?}");
        assert_eq!(H::sent(&fx, 1)[0]["method"], "stream-remove");
        assert_eq!((h.node.counts().3, relays(&h)), (0, 0));
    }

    /// b's SFU answers relay call `call` as subscription `sid`.
    fn b_answers(h: &mut H, call: u64, sid: &Sid, sdp: &str) {
        let answer = NodeMsg::Answer {
            from: id("b"),
            call,
            sid: sid.clone(),
            sdp: sdp.into(),
        };
        h.node.cluster_message(h.now, answer);
    }

    /// Alice subscribes to bob's stream; the relay's offer goes to b.
    /// The relay's subscription id there.
    fn relay_asked(h: &mut H) -> (u64, Sid) {
        subscribe_bob(h, 1);
        let fx = h.effects();
        let [ToSfu::RelayOffer { call, .. }] = to_sfu(&fx)[..] else {
            panic!("{fx:?}")
        };
        let offer = crate::ipc::FromSfu::Answer {
            call,
            sdp: "v=0".into(),
        };
        h.node.sfu_message(h.now, SfuSlot(0), offer);
        let fx = h.effects();
        let [(_, NodeMsg::Subscribe(ask))] = &sent_to_node(&fx)[..] else {
            panic!("{fx:?}")
        };
        (ask.call, ask.sid.clone())
    }

    /// `relay_asked`, then b answers and alice's subscription is made on
    /// the SFU here. The relay's subscription id on b.
    fn relay_up(h: &mut H) -> Sid {
        let (call, sid) = relay_asked(h);
        b_answers(h, call, &sid, "v=0");
        let fx = h.effects();
        assert_eq!(answer_subscribes(h, &to_sfu(&fx)).len(), 1);
        h.effects();
        sid
    }

    #[test]
    fn a_relay_whose_answer_comes_too_late_or_whose_link_fails_ends_on_both_nodes() {
        let mut h = with_a_stream_on_b();
        // b does not answer in time: alice hears 503, and b's late answer
        // is told to go away.
        let (call, sid) = relay_asked(&mut h);
        h.now.mono += std::time::Duration::from_secs(8);
        h.node.tick(h.now);
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 1)[0]["errorCode"], 503, "{fx:?}");
        assert_eq!(relays(&h), 0);
        b_answers(&mut h, call, &sid, "v=0");
        let fx = h.effects();
        assert!(matches!(
            &sent_to_node(&fx)[..],
            [(to, NodeMsg::Unsubscribe { sid: s, .. })] if to.as_str() == "b" && s == &sid
        ));
        assert!(to_sfu(&fx).is_empty(), "nothing for the SFU here: {fx:?}");

        // A relay made, then its media link fails on the SFU here: the
        // subscription here is gone, and b is told.
        let sid = relay_up(&mut h);
        assert_eq!((h.node.counts().3, relays(&h)), (1, 1));
        let closed = crate::ipc::FromSfu::StreamClosed {
            mid: crate::ids::Mid::parse("bob#000001").unwrap(),
        };
        h.node.sfu_message(h.now, SfuSlot(0), closed);
        let fx = h.effects();
        assert!(matches!(
            &sent_to_node(&fx)[..],
            [(_, NodeMsg::Unsubscribe { sid: s, .. })] if s == &sid
        ));
        assert_eq!((h.node.counts().3, relays(&h)), (0, 0));
        // The stream itself is still there: no stream-remove.
        assert!(H::sent(&fx, 1).is_empty(), "{fx:?}");
    }

    /// Node `bizid` (epoch 1) says goodbye.
    fn bye(h: &mut H, bizid: &str) {
        let bye = ClusterEvent::Bye {
            bizid: id(bizid),
            epoch: 1,
        };
        h.node.cluster_event(h.now, bye);
    }

    /// Node "a" with no room for a stream of its own, alice in "r", and
    /// b (room for 9) and c (room for 3) alive.
    fn full_with_b_and_c() -> H {
        let mut h = H::with(Limits {
            streams: 0,
            ..Limits::default()
        });
        h.join(1, "r", 1, room(vec![], vec![]));
        beat_b_and_c(&mut h);
        h
    }

    fn beat_b_and_c(h: &mut H) {
        for (bizid, free) in [("b", 9), ("c", 3)] {
            let beat = super::super::cluster::Beat {
                bizid: id(bizid),
                epoch: 1,
                peers: 0,
                streams: 0,
                free_streams: free,
            };
            h.node.cluster_event(h.now, ClusterEvent::Beat(beat));
        }
    }

    /// b's SFU took `ask`.
    fn b_places(h: &mut H, ask: &super::super::cluster::PublishAsk, sdp: &str) {
        let placed = NodeMsg::Placed {
            from: id("b"),
            call: ask.call,
            mid: ask.mid.clone(),
            sfuid: id("b-sfu-1"),
            sdp: sdp.into(),
        };
        h.node.cluster_message(h.now, placed);
    }

    /// Alice publishes: the ask that went to another node.
    fn publish_placed(h: &mut H) -> (NodeId, super::super::cluster::PublishAsk) {
        let publish = json!({"rid": "r", "jsep": {"type": "offer", "sdp": "v=0"},
            "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}});
        h.req(1, "publish", publish);
        let fx = h.effects();
        assert!(to_sfu(&fx).is_empty(), "not on this node's SFU: {fx:?}");
        let sent = sent_to_node(&fx);
        let [(to, NodeMsg::Publish(ask))] = &sent[..] else {
            panic!("{sent:?}")
        };
        (to.clone(), (**ask).clone())
    }

    #[test]
    fn a_full_node_places_a_publish_and_ends_it_with_its_host() {
        let mut h = full_with_b_and_c();
        // The most room: b. b refuses: alice hears b's code.
        let (to, ask) = publish_placed(&mut h);
        assert_eq!(to.as_str(), "b");
        let refused = NodeMsg::Refused {
            call: ask.call,
            code: 503,
            reason: "capacity full: streams".into(),
        };
        h.node.cluster_message(h.now, refused);
        assert_eq!(H::sent(&h.effects(), 1)[0]["errorCode"], 503);
        // b does not answer in time: 503, and b is told to drop it.
        let (_, ask) = publish_placed(&mut h);
        h.now.mono += std::time::Duration::from_secs(8);
        beat_b_and_c(&mut h);
        h.node.tick(h.now);
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 1)[0]["errorCode"], 503);
        assert!(sent_to_node(&fx).iter().any(|(to, m)| to.as_str() == "b"
            && matches!(m, NodeMsg::Unpublish { mid, .. } if mid == &ask.mid)));
        // Placed: alice's answer names b's SFU; the room and the cluster
        // learn the stream, with b as its host.
        let (_, ask) = publish_placed(&mut h);
        b_places(&mut h, &ask, "v=0 b");
        let fx = h.effects();
        let answer = &H::sent(&fx, 1)[0];
        assert_eq!(answer["data"]["sfuid"], "b-sfu-1", "{answer}");
        assert_eq!(answer["data"]["jsep"]["sdp"], "v=0 b");
        let added = fx.iter().find_map(|e| match e {
            Effect::Cluster(op) => match &**op {
                ClusterOp::Add(entry) => Some(entry.clone()),
                _ => None,
            },
            _ => None,
        });
        let added = added.expect("announced");
        assert_eq!((added.bizid.as_str(), added.home().as_str()), ("a", "b"));
        assert_eq!(h.node.cluster_metrics().unwrap().placed_streams, 1);
        // b's SFU lost the publisher: the stream ends here for everyone.
        let ended = NodeMsg::Ended {
            from: id("b"),
            mid: ask.mid.clone(),
        };
        h.node.cluster_message(h.now, ended);
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 1)[0]["method"], "stream-remove");
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::Cluster(op) if matches!(**op, ClusterOp::Remove(_)))));
        assert_eq!(h.node.cluster_metrics().unwrap().placed_streams, 0);
        // Placed once more, then b dies: the same.
        let (_, ask) = publish_placed(&mut h);
        b_places(&mut h, &ask, "v=0");
        h.effects();
        bye(&mut h, "b");
        let fx = h.effects();
        assert_eq!(H::sent(&fx, 1)[0]["method"], "stream-remove");
        assert_eq!(h.node.cluster_metrics().unwrap().placed_streams, 0);
        // With only c left, c is asked; with nobody, the usual 503.
        let (to, _) = publish_placed(&mut h);
        assert_eq!(to.as_str(), "c");
        bye(&mut h, "c");
        h.effects();
        let publish = json!({"rid": "r", "jsep": {"type": "offer", "sdp": "v=0"},
            "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}});
        h.req(1, "publish", publish);
        let answer = &H::sent(&h.effects(), 1)[0];
        assert_eq!(answer["errorCode"], 503, "{answer}");
    }

    #[test]
    fn this_node_s_sfu_serves_another_node_s_subscriber_until_it_is_done_or_gone() {
        let mut h = H::new();
        h.join(1, "r", 1, room(vec![], vec![]));
        let publish = json!({"rid": "r", "jsep": {"type": "offer", "sdp": "v=0"},
            "minfo": {"audio": true, "video": true, "audiotype": 0, "videotype": 0}});
        h.req(1, "publish", publish);
        let fx = h.effects();
        let call = sfu_call(&fx);
        let slot = super::super::SfuSlot(0);
        h.node.sfu_message(
            h.now,
            slot,
            crate::ipc::FromSfu::Answer {
                call,
                sdp: "v=0".into(),
            },
        );
        let fx = h.effects();
        let mid = H::sent(&fx, 1)[0]["data"]["mid"]
            .as_str()
            .unwrap()
            .to_string();
        let beat = super::super::cluster::Beat {
            bizid: id("b"),
            epoch: 1,
            peers: 1,
            streams: 0,
            free_streams: 9,
        };
        h.node.cluster_event(h.now, ClusterEvent::Beat(beat));
        let ask = |sid: &str, call: u64| SubscribeAsk {
            from: id("b"),
            call,
            rid: RoomId::parse("r").unwrap(),
            mid: crate::ids::Mid::parse(&mid).unwrap(),
            uid: PeerId::parse("bob").unwrap(),
            sid: Sid::parse(sid).unwrap(),
            offer: "v=0".into(),
        };
        h.node
            .cluster_message(h.now, NodeMsg::Subscribe(Box::new(ask("bob#000007", 5))));
        let fx = h.effects();
        let call = sfu_call(&fx);
        h.node.sfu_message(
            h.now,
            slot,
            crate::ipc::FromSfu::Answer {
                call,
                sdp: "v=0 a".into(),
            },
        );
        let fx = h.effects();
        assert_eq!(
            sent_to_node(&fx),
            [(
                id("b"),
                NodeMsg::Answer {
                    from: id("a"),
                    call: 5,
                    sid: Sid::parse("bob#000007").unwrap(),
                    sdp: "v=0 a".into()
                }
            )]
        );
        assert_eq!(h.node.counts().3, 1);
        // Unknown streams are refused with the usual code.
        let mut bad = ask("bob#000008", 6);
        bad.mid = crate::ids::Mid::parse("zed#000001").unwrap();
        h.node
            .cluster_message(h.now, NodeMsg::Subscribe(Box::new(bad)));
        let fx = h.effects();
        assert!(matches!(
            &sent_to_node(&fx)[..],
            [(
                _,
                NodeMsg::Refused {
                    call: 6,
                    code: 404,
                    ..
                }
            )]
        ));
        // b says goodbye: its subscription ends here.
        bye(&mut h, "b");
        let fx = h.effects();
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Sfu {
                msg: ToSfu::Unsubscribe { .. },
                ..
            }
        )));
        assert_eq!(h.node.counts().3, 0);
    }
}
