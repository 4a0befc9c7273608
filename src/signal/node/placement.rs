//! Placement: a publish goes to the publisher's own board unless that
//! board is full (its stream table, or its SFUs' sessions); then it goes
//! to the live node with the most room, as its heartbeat says.
//!
//! The publisher's node stays the stream's owner: it answers the client
//! (with the other board's SFU id and answer: the publisher's media goes
//! there), announces the stream (its cluster entry names that node as its
//! `host`), and ends it when its peer unpublishes or leaves. The host only
//! carries it: its SFU, its bounds; it serves relays and its own peers'
//! subscriptions as for a stream of its own, but announces nothing. If the
//! publisher's connection to the host fails, or the host goes, the owner
//! ends the stream; if the owner goes, the host drops it.

use super::cluster::{ClusterOp, NodeMsg, PendingPlace, PublishAsk, StreamEntry};
use super::tables::{unique, Asker, PendingKind, Removal, Stream};
use super::{Node, Now, Outcome, Reply};
use crate::ids::{Mid, NodeId, RoomId};
use crate::limits::SFU_CALL_TIMEOUT_MS;
use crate::signal::error::RequestError;
use crate::signal::protoo::{self, Minfo};
use std::time::{Duration, Instant};

/// How long the other node may take to answer a placed publish: its
/// SFU's own deadline, and a margin for the way there and back.
const PLACE_TIMEOUT: Duration = Duration::from_millis(SFU_CALL_TIMEOUT_MS + 2_000);

impl Node {
    /// Streams this node can still take itself: its table's room, and its
    /// live SFUs' sessions to spare (as they last reported).
    pub(super) fn room_for_streams(&self) -> usize {
        let is_publish = |k: &PendingKind| matches!(k, PendingKind::Publish { .. });
        let pending = self.pending.iter().filter(|p| is_publish(&p.kind)).count();
        let table = self
            .limits
            .streams
            .saturating_sub(self.streams.len() + pending);
        let sessions: usize = (self.sfus.iter())
            .filter(|s| s.id.is_some())
            .map(|s| {
                let used = (s.stats.publishers + s.stats.subscribers) as usize;
                self.limits.sfu_sessions.saturating_sub(used)
            })
            .sum();
        table.min(sessions.saturating_sub(pending))
    }

    /// A publish this node cannot carry: to the live node with the most
    /// room. None: there is no such node (or no cluster, or no link).
    pub(super) fn publish_elsewhere(
        &mut self,
        now: Now,
        asker: &Asker,
        offer: &str,
        minfo: Minfo,
    ) -> Option<Reply> {
        if !self.cluster_linked() {
            return None;
        }
        let c = self.cluster.as_deref()?;
        let host = (c.nodes.iter())
            .filter(|n| n.beat.free_streams > 0)
            .max_by_key(|n| n.beat.free_streams)?
            .beat
            .bizid
            .clone();
        if c.replica.placed.is_full() {
            return Some(Err(RequestError::Full("streams")));
        }
        if c.replica.placing.is_full() {
            return Some(Err(RequestError::Full("pending SFU calls")));
        }
        let mid = unique(|| Mid::random(&asker.uid), |m| self.mid_in_use(m));
        let from = self.bizid.clone();
        let c = self.cluster.as_deref_mut()?;
        let call = c.next_call;
        c.next_call += 1;
        let entry = StreamEntry {
            rid: asker.rid.clone(),
            mid: mid.clone(),
            uid: asker.uid.clone(),
            bizid: from.clone(),
            // Known once the host answers.
            sfuid: host.clone(),
            minfo,
            host: Some(host.clone()),
        };
        // Has room: checked above.
        let _ = c.replica.placing.push(PendingPlace {
            call,
            conn: asker.conn,
            req: asker.req,
            entry,
            deadline: now.mono + PLACE_TIMEOUT,
        });
        log::info!("{}: this node is full, publishing on {host}", asker.uid);
        let msg = NodeMsg::Publish(Box::new(PublishAsk {
            from,
            call,
            rid: asker.rid.clone(),
            mid,
            uid: asker.uid.clone(),
            minfo,
            offer: offer.to_string(),
        }));
        self.cluster_op(ClusterOp::Send { to: host, msg });
        Some(Ok(Outcome::Deferred))
    }

    /// The host took placed publish `call`: the client gets its answer,
    /// the room the stream.
    pub(super) fn placed(
        &mut self,
        (host, call): (NodeId, u64),
        mid: &Mid,
        sfuid: NodeId,
        sdp: &str,
    ) {
        let Some(p) = self.take_placing(|p| p.call == call) else {
            // Given up meanwhile: the host must not keep it.
            self.tell_host(host, mid);
            return;
        };
        let host = p.entry.home().clone();
        let still_here = self
            .peers
            .iter()
            .any(|peer| peer.conn == p.conn && peer.in_room(&p.entry.rid));
        if !still_here {
            self.tell_host(host, mid);
            self.reply(p.conn, p.req, Err(RequestError::NotInRoom));
            return;
        }
        let entry = StreamEntry { sfuid, ..p.entry };
        self.announce_stream(p.conn, p.req, &entry, sdp);
        log::info!(
            "{}: published {} on {} (node {host})",
            entry.uid,
            entry.mid,
            entry.sfuid
        );
        if let Some(c) = self.cluster.as_deref_mut() {
            // Has room: reserved when it was asked for.
            let _ = c.replica.placed.push(entry);
        }
    }

    /// Placed publish `call` was refused by its host.
    pub(super) fn place_refused(&mut self, call: u64, err: RequestError) {
        if let Some(p) = self.take_placing(|p| p.call == call) {
            self.reply(p.conn, p.req, Err(err));
        }
    }

    /// Fails the placed publishes still waiting: the link is gone, or
    /// (`now`) their time is up. The host may still set one up: it is told.
    pub(super) fn fail_placing(&mut self, now: Option<Instant>, why: &str) {
        while let Some(p) = self.take_placing(|p| now.is_none_or(|now| p.deadline <= now)) {
            let host = p.entry.home().clone();
            self.tell_host(host, &p.entry.mid);
            let err = RequestError::ClusterUnavailable(why.to_string());
            self.reply(p.conn, p.req, Err(err));
        }
    }

    /// When the first placed publish runs out of time.
    pub(super) fn placing_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_deref()?;
        c.replica.placing.iter().map(|p| p.deadline).min()
    }

    /// Peer `uid`'s stream `mid` in `rid`, placed on another node: its
    /// owner unpublishes it (None: no such placed stream).
    pub(super) fn unpublish_placed(
        &mut self,
        uid: &crate::ids::PeerId,
        rid: &RoomId,
        mid: &Mid,
    ) -> Option<Reply> {
        let s = self.placed_stream(mid).filter(|s| &s.rid == rid)?;
        if &s.uid != uid {
            return Some(Err(RequestError::NotOwner));
        }
        self.remove_placed(mid, Removal::ByOwner);
        Some(Ok(Outcome::Ok))
    }

    /// Ends placed stream `mid`: the room hears `stream-remove` (all but
    /// the owner when the owner asked), the cluster forgets it, the relays
    /// here that pulled it end, and (owner's removal) its host drops it.
    pub(super) fn remove_placed(&mut self, mid: &Mid, why: Removal) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(i) = c.replica.placed.iter().position(|s| &s.mid == mid) else {
            return;
        };
        let s = c.replica.placed.swap_remove(i);
        self.remote_stream_ended(mid);
        if why == Removal::ByOwner {
            self.tell_host(s.home().clone(), mid);
        }
        self.stream_gone(&s.rid, &s.uid, mid, why);
    }

    /// This node's peers' streams placed on node `host`, which is gone.
    pub(super) fn host_gone(&mut self, host: &NodeId) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let gone: Vec<Mid> = (c.replica.placed.iter())
            .filter(|s| s.home() == host)
            .map(|s| s.mid.clone())
            .collect();
        for mid in gone {
            self.remove_placed(&mid, Removal::BySfu);
        }
        self.fail_placing_on(host);
    }

    /// Node `owner` is gone: the streams it placed here end.
    pub(super) fn owner_gone(&mut self, owner: &NodeId) {
        let theirs: Vec<Mid> = (self.streams.iter())
            .filter(|s| s.owner.as_deref() == Some(owner))
            .map(|s| s.mid.clone())
            .collect();
        for mid in theirs {
            self.remove_stream(&mid, Removal::ByOwner);
        }
    }

    /// The placed streams of `rid`, for a join's answer and the sync.
    pub(super) fn placed_in<'a>(
        &'a self,
        rid: &'a RoomId,
    ) -> impl Iterator<Item = &'a StreamEntry> {
        let rows = self.cluster.as_deref().map(|c| c.replica.placed.iter());
        rows.into_iter().flatten().filter(move |s| &s.rid == rid)
    }

    /// Placed stream `mid`, if it is one.
    pub(super) fn placed_stream(&self, mid: &Mid) -> Option<&StreamEntry> {
        let c = self.cluster.as_deref()?;
        c.replica.placed.iter().find(|s| &s.mid == mid)
    }

    /// Whether `mid` is taken by a placed stream, or one being placed.
    pub(super) fn placed_mid_in_use(&self, mid: &Mid) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            c.replica.placed.iter().any(|s| &s.mid == mid)
                || c.replica.placing.iter().any(|p| &p.entry.mid == mid)
        })
    }

    /// Placed streams (and those being placed) of `rid`.
    pub(super) fn placed_count(&self, rid: Option<&RoomId>) -> usize {
        let Some(c) = self.cluster.as_deref() else {
            return 0;
        };
        let here = |r: &RoomId| rid.is_none_or(|rid| rid == r);
        c.replica.placed.iter().filter(|s| here(&s.rid)).count()
            + (c.replica.placing.iter())
                .filter(|p| here(&p.entry.rid))
                .count()
    }

    // ----- the host's side -----

    /// Another node's peer publishes here: the same bounds as for a peer
    /// here, then this node's SFU is asked.
    pub(super) fn serve_publish(&mut self, now: Now, ask: PublishAsk) -> Result<(), RequestError> {
        let PublishAsk {
            from,
            call,
            rid,
            mid,
            uid,
            minfo,
            offer,
        } = ask;
        if self.room_for_streams() == 0 {
            return Err(RequestError::Full("streams"));
        }
        if self.mid_in_use(&mid) {
            return Err(RequestError::Sfu("the mid is in use on the host".into()));
        }
        let sfu = self.least_loaded_sfu().ok_or(RequestError::NoSfu)?;
        // The answer goes to `from` (see `sfu_calls::call_done`).
        let asker = Asker {
            conn: super::ConnId(0),
            req: protoo::RequestId(0),
            uid,
            rid,
        };
        let kind = PendingKind::Publish {
            mid: mid.clone(),
            minfo,
        };
        let for_node = Some(Box::new((from, call)));
        let msg = |call| crate::ipc::ToSfu::Publish { call, mid, offer };
        self.call_sfu(now, sfu, asker, kind, for_node, msg)
            .map(|_| ())
    }

    /// This node's SFU took another node's publish: it is carried here
    /// (not announced: its owner does that) and the answer goes back.
    pub(super) fn hosted_published(
        &mut self,
        stream: Stream,
        owner: NodeId,
        call: u64,
        sdp: String,
    ) {
        let Some(sfuid) = self.sfus[stream.sfu.0].id.clone() else {
            self.refuse_node(&owner, call, &RequestError::NoSfu);
            return;
        };
        log::info!(
            "{} of node {owner}: published {} here, on {sfuid}",
            stream.uid,
            stream.mid
        );
        let msg = NodeMsg::Placed {
            from: self.bizid.clone(),
            call,
            mid: stream.mid.clone(),
            sfuid,
            sdp,
        };
        // Capacity was reserved by the pending call.
        let _ = self.streams.push(Stream {
            owner: Some(Box::new(owner.clone())),
            ..stream
        });
        self.cluster_op(ClusterOp::Send { to: owner, msg });
    }

    /// Its owner ended stream `mid`, placed here by node `from`.
    pub(super) fn drop_hosted(&mut self, from: &NodeId, mid: &Mid) {
        let hosted =
            (self.streams.iter()).any(|s| &s.mid == mid && s.owner.as_deref() == Some(from));
        if hosted {
            self.remove_stream(mid, Removal::ByOwner);
        }
    }

    /// A stream carried here for node `owner` ended by itself (its
    /// publisher's connection, or this node's SFU): the owner is told.
    pub(super) fn hosted_ended(&mut self, owner: NodeId, mid: &Mid) {
        let msg = NodeMsg::Ended {
            from: self.bizid.clone(),
            mid: mid.clone(),
        };
        self.cluster_op(ClusterOp::Send { to: owner, msg });
    }

    fn tell_host(&mut self, host: NodeId, mid: &Mid) {
        let msg = NodeMsg::Unpublish {
            from: self.bizid.clone(),
            mid: mid.clone(),
        };
        self.cluster_op(ClusterOp::Send { to: host, msg });
    }

    fn take_placing(&mut self, f: impl Fn(&PendingPlace) -> bool) -> Option<PendingPlace> {
        let c = self.cluster.as_deref_mut()?;
        let i = c.replica.placing.iter().position(f)?;
        Some(c.replica.placing.swap_remove(i))
    }

    /// The placed publishes waiting for `host`, which is gone, fail.
    fn fail_placing_on(&mut self, host: &NodeId) {
        while let Some(p) = self.take_placing(|p| p.entry.home() == host) {
            let why = format!("node {host} is gone");
            self.reply(p.conn, p.req, Err(RequestError::ClusterUnavailable(why)));
        }
    }
}
