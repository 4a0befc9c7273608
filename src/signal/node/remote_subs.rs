//! Subscriptions that cross nodes: a peer here subscribes to a stream
//! another node's SFU carries. This node asks that node (a [`NodeMsg`] on
//! its channel); that node has its SFU answer, and the answer (with that
//! SFU's candidate) comes back for the client, whose media then flows
//! with the publisher's board directly. Unsubscribing and pinning a layer
//! go the same way; a node that dies takes its side along.
//!
//! The publisher's node applies its own bounds (subscriptions per stream,
//! its SFUs' sessions) and this node its own (subscriptions in all).

use super::cluster::{ClusterOp, NodeMsg, PendingRemoteSub, RemoteSub, ServedSub, SubscribeAsk};
use super::tables::{unique, Asker, Subscription};
use super::{Effect, Node, Now, Outcome, Reply};
use crate::ids::{Mid, NodeId, PeerId, RoomId, Sid};
use crate::ipc::{LayerPin, ToSfu};
use crate::limits::SFU_CALL_TIMEOUT_MS;
use crate::signal::error::RequestError;
use crate::signal::protoo;
use std::time::{Duration, Instant};

/// How long a subscription waits for the other node: its SFU's own
/// deadline, and a margin for the way there and back.
const REMOTE_SUB_TIMEOUT: Duration = Duration::from_millis(SFU_CALL_TIMEOUT_MS + 2_000);

impl Node {
    /// A subscription to `mid` when no SFU here carries it: to the node
    /// whose SFU does, if the room has such a stream.
    pub(super) fn subscribe_remote(
        &mut self,
        now: Now,
        asker: Asker,
        mid: Mid,
        offer: String,
    ) -> Reply {
        let home = self.remote_streams(&asker.rid).find(|s| s.mid == mid);
        let bizid = home
            .map(|s| s.bizid.clone())
            .ok_or(RequestError::NoSuchStream)?;
        if !self.cluster_linked() {
            let why = "the stream is on another node".to_string();
            return Err(RequestError::ClusterUnavailable(why));
        }
        let Some(c) = self.cluster.as_deref() else {
            return Err(RequestError::NoSuchStream);
        };
        let mine = self.subs.len() + c.replica.subs.len() + c.replica.sub_calls.len();
        if mine >= self.limits.subs {
            return Err(RequestError::Full("subscriptions"));
        }
        if c.replica.sub_calls.is_full() {
            return Err(RequestError::Full("pending SFU calls"));
        }
        let sid = unique(|| Sid::random(&asker.uid), |s| self.sid_in_use(s));
        let Some(c) = self.cluster.as_deref_mut() else {
            return Err(RequestError::NoSuchStream);
        };
        let call = c.next_call;
        c.next_call += 1;
        let msg = NodeMsg::Subscribe(Box::new(SubscribeAsk {
            from: self.bizid.clone(),
            call,
            rid: asker.rid.clone(),
            mid: mid.clone(),
            uid: asker.uid.clone(),
            sid: sid.clone(),
            offer,
        }));
        // Has room: checked above.
        let _ = c.replica.sub_calls.push(PendingRemoteSub {
            call,
            conn: asker.conn,
            req: asker.req,
            sub: RemoteSub {
                sid,
                mid,
                rid: asker.rid,
                uid: asker.uid,
                bizid: bizid.clone(),
            },
            deadline: now.mono + REMOTE_SUB_TIMEOUT,
        });
        self.cluster_op(ClusterOp::Send { to: bizid, msg });
        Ok(Outcome::Deferred)
    }

    /// A message from another node, on this node's own channel.
    pub fn cluster_message(&mut self, now: Now, msg: NodeMsg) {
        match msg {
            NodeMsg::Subscribe(ask) => {
                let (from, call) = (ask.from.clone(), ask.call);
                if let Err(e) = self.serve_subscribe(now, *ask) {
                    self.refuse_node(&from, call, &e);
                }
            }
            NodeMsg::Answer { call, sdp } => {
                let Some(p) = self.take_sub_call(call) else {
                    return;
                };
                let still_here = self
                    .peers
                    .iter()
                    .any(|peer| peer.conn == p.conn && peer.in_room(&p.sub.rid));
                let stream_alive = self.remote_streams(&p.sub.rid).any(|s| s.mid == p.sub.mid);
                if !(still_here && stream_alive) {
                    self.tell_unsubscribe(&p.sub);
                    let err = match still_here {
                        true => RequestError::NoSuchStream,
                        false => RequestError::NotInRoom,
                    };
                    self.reply(p.conn, p.req, Err(err));
                    return;
                }
                let answer = protoo::SubscribeAnswer::response(p.req, &sdp, &p.sub.sid);
                self.send(p.conn, answer);
                log::info!(
                    "{}: subscribed to {} on node {} as {}",
                    p.sub.uid,
                    p.sub.mid,
                    p.sub.bizid,
                    p.sub.sid
                );
                if let Some(c) = self.cluster.as_deref_mut() {
                    // Counted against `subs` when it was asked for.
                    let _ = c.replica.subs.push(p.sub);
                }
            }
            NodeMsg::Refused { call, code, reason } => {
                if let Some(p) = self.take_sub_call(call) {
                    self.reply(p.conn, p.req, Err(RequestError::Remote(code, reason)));
                }
            }
            NodeMsg::Unsubscribe { from, sid } => {
                if let Some(i) = self.served_index(&from, &sid) {
                    self.close_subscription(i);
                }
            }
            NodeMsg::Pin { from, sid, layer } => {
                if let Some(i) = self.served_index(&from, &sid) {
                    let sfu = self.subs[i].sfu;
                    let msg = ToSfu::PinLayer { sid, layer };
                    self.effects.push_back(Effect::Sfu { sfu, msg });
                }
            }
        }
    }

    /// Another node's peer subscribes to a stream of this node: the same
    /// checks as for a peer here, then this node's SFU is asked.
    fn serve_subscribe(&mut self, now: Now, ask: SubscribeAsk) -> Result<(), RequestError> {
        let SubscribeAsk {
            from,
            call,
            rid,
            mid,
            uid,
            sid,
            offer,
        } = ask;
        let sfu = self
            .streams
            .iter()
            .find(|s| s.mid == mid && s.rid == rid)
            .map(|s| s.sfu)
            .ok_or(RequestError::NoSuchStream)?;
        self.room_for_sub(&mid)?;
        if self.sid_in_use(&sid) {
            return Err(RequestError::Sfu(
                "the sid is in use on the publisher's node".into(),
            ));
        }
        let served_full = self
            .cluster
            .as_deref()
            .is_none_or(|c| c.replica.served.is_full());
        if served_full {
            return Err(RequestError::Full("subscriptions"));
        }
        // The connection and request of a peer here do not apply: the
        // answer goes to `from` (see `sfu_calls::call_done`).
        let asker = Asker {
            conn: super::ConnId(0),
            req: protoo::RequestId(0),
            uid,
            rid,
        };
        let for_node = Some(Box::new((from, call)));
        self.sfu_subscribe(now, sfu, asker, mid, sid, offer, for_node)
            .map(|_| ())
    }

    /// This node's SFU answered another node's subscription: it is kept
    /// (and closed when that node says so, or dies) and the answer goes
    /// back. If the stream ended meanwhile, the SFU drops it again.
    pub(super) fn served_subscribed(
        &mut self,
        sub: Subscription,
        bizid: NodeId,
        call: u64,
        sdp: String,
    ) {
        if !self.streams.iter().any(|s| s.mid == sub.mid) {
            self.effects.push_back(Effect::Sfu {
                sfu: sub.sfu,
                msg: ToSfu::Unsubscribe { sid: sub.sid },
            });
            self.refuse_node(&bizid, call, &RequestError::NoSuchStream);
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // Has room: `serve_subscribe` checked, and the pending call
        // reserved the subscription's place.
        let _ = c.replica.served.push(ServedSub {
            sid: sub.sid.clone(),
            bizid: bizid.clone(),
        });
        log::info!(
            "{} of node {bizid}: subscribed to {} as {}",
            sub.uid,
            sub.mid,
            sub.sid
        );
        let _ = self.subs.push(sub);
        let msg = NodeMsg::Answer { call, sdp };
        self.cluster_op(ClusterOp::Send { to: bizid, msg });
    }

    /// Tells node `bizid` that its call `call` failed.
    pub(super) fn refuse_node(&mut self, bizid: &NodeId, call: u64, err: &RequestError) {
        let msg = NodeMsg::Refused {
            call,
            code: err.code(),
            reason: err.to_string(),
        };
        self.cluster_op(ClusterOp::Send {
            to: bizid.clone(),
            msg,
        });
    }

    fn take_sub_call(&mut self, call: u64) -> Option<PendingRemoteSub> {
        let c = self.cluster.as_deref_mut()?;
        let i = c.replica.sub_calls.iter().position(|p| p.call == call)?;
        Some(c.replica.sub_calls.swap_remove(i))
    }

    /// The index in `subs` of subscription `sid` made for node `from`.
    fn served_index(&self, from: &NodeId, sid: &Sid) -> Option<usize> {
        let c = self.cluster.as_deref()?;
        c.replica
            .served
            .iter()
            .any(|s| &s.sid == sid && &s.bizid == from)
            .then(|| self.subs.iter().position(|s| &s.sid == sid))
            .flatten()
    }

    fn tell_unsubscribe(&mut self, sub: &RemoteSub) {
        let msg = NodeMsg::Unsubscribe {
            from: self.bizid.clone(),
            sid: sub.sid.clone(),
        };
        self.cluster_op(ClusterOp::Send {
            to: sub.bizid.clone(),
            msg,
        });
    }

    /// Peer `uid`'s subscription `sid` to `mid` in `rid` on another node:
    /// its index, NotOwner if it is another peer's, None if there is none
    /// (the same checks as for a subscription here).
    fn own_remote_sub(
        &self,
        uid: &PeerId,
        rid: &RoomId,
        mid: &Mid,
        sid: &Sid,
    ) -> Option<Result<usize, RequestError>> {
        let subs = &self.cluster.as_deref()?.replica.subs;
        let i = (subs.iter()).position(|s| &s.sid == sid && &s.mid == mid && &s.rid == rid)?;
        Some(match &subs[i].uid == uid {
            true => Ok(i),
            false => Err(RequestError::NotOwner),
        })
    }

    /// `unsubscribe` of a subscription on another node (None: not one).
    pub(super) fn unsubscribe_remote(
        &mut self,
        uid: &PeerId,
        rid: &RoomId,
        mid: &Mid,
        sid: &Sid,
    ) -> Option<Reply> {
        let i = match self.own_remote_sub(uid, rid, mid, sid)? {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        let sub = self.cluster.as_deref_mut()?.replica.subs.swap_remove(i);
        self.tell_unsubscribe(&sub);
        Some(Ok(Outcome::Ok))
    }

    /// `layer` of a subscription on another node (None: not one).
    pub(super) fn pin_remote(
        &mut self,
        uid: &PeerId,
        rid: &RoomId,
        mid: &Mid,
        sid: &Sid,
        layer: Option<LayerPin>,
    ) -> Option<Reply> {
        let i = match self.own_remote_sub(uid, rid, mid, sid)? {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        let to = self.cluster.as_deref()?.replica.subs[i].bizid.clone();
        let msg = NodeMsg::Pin {
            from: self.bizid.clone(),
            sid: sid.clone(),
            layer,
        };
        self.cluster_op(ClusterOp::Send { to, msg });
        Some(Ok(Outcome::Ok))
    }

    /// A peer here left `rid`: its subscriptions on other nodes end.
    pub(super) fn leave_remote_subs(&mut self, uid: &PeerId, rid: &RoomId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut gone = Vec::new();
        while let Some(i) = (c.replica.subs.iter()).position(|s| &s.uid == uid && &s.rid == rid) {
            gone.push(c.replica.subs.swap_remove(i));
        }
        for sub in &gone {
            self.tell_unsubscribe(sub);
        }
    }

    /// Stream `mid` of another node ended: its SFU closed the sessions.
    pub(super) fn remote_stream_ended(&mut self, mid: &Mid) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.replica.subs.retain(|s| &s.mid != mid);
        }
    }

    /// Node `bizid` is gone: the subscriptions it served for peers here
    /// ended with it, and those its peers had here end.
    pub(super) fn forget_node_subs(&mut self, bizid: &NodeId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.replica.subs.retain(|s| &s.bizid != bizid);
        let mut failed = Vec::new();
        while let Some(i) = (c.replica.sub_calls.iter()).position(|p| &p.sub.bizid == bizid) {
            failed.push(c.replica.sub_calls.swap_remove(i));
        }
        let theirs: Vec<Sid> = (c.replica.served.iter())
            .filter(|s| &s.bizid == bizid)
            .map(|s| s.sid.clone())
            .collect();
        for p in failed {
            let why = format!("node {bizid} is gone");
            self.reply(p.conn, p.req, Err(RequestError::ClusterUnavailable(why)));
        }
        for sid in theirs {
            if let Some(i) = self.subs.iter().position(|s| s.sid == sid) {
                self.close_subscription(i);
            }
        }
    }

    /// Forgets served subscriptions whose subscription is gone here.
    pub(super) fn prune_served(&mut self) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let subs = &self.subs;
        c.replica
            .served
            .retain(|s| subs.iter().any(|x| x.sid == s.sid));
    }

    /// Fails the subscriptions to other nodes still waiting: the link is
    /// gone, or (`now`) their time is up.
    pub(super) fn fail_sub_calls(&mut self, now: Option<Instant>, why: &str) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(i) =
            (c.replica.sub_calls.iter()).position(|p| now.is_none_or(|now| p.deadline <= now))
        {
            due.push(c.replica.sub_calls.swap_remove(i));
        }
        for p in due {
            // The other node may still set it up: make sure it ends.
            self.tell_unsubscribe(&p.sub);
            let err = RequestError::ClusterUnavailable(why.to_string());
            self.reply(p.conn, p.req, Err(err));
        }
    }

    /// When the first subscription to another node runs out of time.
    pub(super) fn sub_call_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_deref()?;
        c.replica.sub_calls.iter().map(|p| p.deadline).min()
    }
}
