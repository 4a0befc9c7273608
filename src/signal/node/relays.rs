//! Streams of other boards, pulled once. A peer here subscribes to a
//! stream another node's SFU carries: an SFU of this node pulls that
//! stream from the other board (a relay: SFU to SFU over the LAN, as
//! mediasoup's pipe transports do) and serves every subscriber here from
//! it. The publisher's board sends the stream once per board that
//! watches it, and each board's egress carries only its own clients.
//!
//! A relay is set up in three steps, each with a deadline:
//! 1. an SFU here makes the relay's offer (a pending SFU call,
//!    `PendingKind::Relay`): it will call the other board as a client;
//! 2. the publisher's node has its SFU answer that offer as it answers
//!    any subscriber's ([`NodeMsg::Subscribe`] on its channel; that node
//!    keeps the subscription as one it serves for this node);
//! 3. the answer goes to the SFU here (`RelayAnswer`): the relay is a
//!    local publisher of the stream from then on, and the subscriptions
//!    that waited for it are made on that SFU as to a stream of this node.
//!
//! It ends when its last subscriber here goes, when the stream ends,
//! when its SFU or either node goes, or when its media link fails. The
//! relay carries one layer of a simulcast stream: the best the link
//! between the boards carries (the other SFU chooses it, as for any
//! subscriber).
//!
//! The other side is here too: subscriptions this node's SFUs serve for
//! other nodes' relays.

use super::cluster::{ClusterOp, NodeMsg, Relay, RelayState, ServedSub, SubscribeAsk, Waiter};
use super::tables::{unique, Asker, PendingKind, Removal, Subscription};
use super::{Effect, Node, Now, Outcome, Reply, SfuSlot};
use crate::ids::{Mid, NodeId, Sid};
use crate::ipc::ToSfu;
use crate::limits::{MAX_PENDING_SFU_CALLS, SFU_CALL_TIMEOUT_MS};
use crate::signal::error::RequestError;
use crate::signal::protoo;
use std::time::{Duration, Instant};

/// How long the other node may take to answer a relay's offer: its SFU's
/// own deadline, and a margin for the way there and back.
const RELAY_ANSWER_TIMEOUT: Duration = Duration::from_millis(SFU_CALL_TIMEOUT_MS + 2_000);

impl Node {
    /// A subscription to `mid` when no SFU here publishes it: through the
    /// relay that pulls it from its board, set up first if there is none.
    pub(super) fn subscribe_remote(
        &mut self,
        now: Now,
        asker: Asker,
        mid: Mid,
        offer: String,
    ) -> Reply {
        // Another node's, or one of this node's placed on another.
        let home = (self.remote_streams(&asker.rid))
            .chain(self.placed_in(&asker.rid))
            .find(|s| s.mid == mid);
        let (bizid, minfo) = home
            .map(|s| (s.home().clone(), s.minfo))
            .ok_or(RequestError::NoSuchStream)?;
        self.room_for_sub(&mid)?;
        let sid = unique(|| Sid::random(&asker.uid), |s| self.sid_in_use(s));
        let waiting = self.relay_waiters(None);
        if let Some(c) = self.cluster.as_deref_mut() {
            if let Some(relay) = c.replica.relays.iter_mut().find(|r| r.mid == mid) {
                if relay.state == RelayState::Up {
                    let sfu = relay.sfu;
                    return self.sfu_subscribe(now, sfu, asker, mid, sid, offer, None);
                }
                if waiting >= MAX_PENDING_SFU_CALLS {
                    return Err(RequestError::Full("pending SFU calls"));
                }
                relay.waiting.push(waiter(asker, sid, offer));
                return Ok(Outcome::Deferred);
            }
        }
        if !self.cluster_linked() {
            let why = "the stream is on another node".to_string();
            return Err(RequestError::ClusterUnavailable(why));
        }
        let c = self.cluster.as_deref().ok_or(RequestError::NoSuchStream)?;
        if c.replica.relays.is_full() {
            return Err(RequestError::Full("relays"));
        }
        if waiting >= MAX_PENDING_SFU_CALLS {
            return Err(RequestError::Full("pending SFU calls"));
        }
        let sfu = self.least_loaded_sfu().ok_or(RequestError::NoSfu)?;
        let relay_sid = unique(
            || Sid::random(&asker.uid),
            |s| s == &sid || self.sid_in_use(s),
        );
        let kind = PendingKind::Relay { mid: mid.clone() };
        let (audio, video) = (minfo.audio, minfo.video);
        let relay = Relay {
            mid: mid.clone(),
            rid: asker.rid.clone(),
            uid: asker.uid.clone(),
            bizid,
            sid: relay_sid,
            sfu,
            state: RelayState::Offering,
            waiting: vec![waiter(asker.clone(), sid, offer)],
        };
        let msg = |call| ToSfu::RelayOffer {
            call,
            mid,
            audio,
            video,
        };
        let outcome = self.call_sfu(now, sfu, asker, kind, None, msg)?;
        if let Some(c) = self.cluster.as_deref_mut() {
            // Has room: checked above.
            let _ = c.replica.relays.push(relay);
        }
        Ok(outcome)
    }

    /// The SFU here made relay `mid`'s offer: to the publisher's node.
    pub(super) fn relay_offered(&mut self, now: Instant, sfu: SfuSlot, mid: Mid, offer: String) {
        if self.relay(&mid).is_none() {
            // Given up meanwhile (the stream ended).
            let msg = ToSfu::Unpublish { mid };
            self.effects.push_back(Effect::Sfu { sfu, msg });
            return;
        }
        if !self.cluster_linked() {
            let why = "the link to the cluster is down".to_string();
            self.relay_failed(&mid, RequestError::ClusterUnavailable(why));
            return;
        }
        let from = self.bizid.clone();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let call = c.next_call;
        c.next_call += 1;
        let Some(relay) = c.replica.relays.iter_mut().find(|r| r.mid == mid) else {
            return;
        };
        relay.state = RelayState::Asking {
            call,
            deadline: now + RELAY_ANSWER_TIMEOUT,
        };
        let msg = NodeMsg::Subscribe(Box::new(SubscribeAsk {
            from,
            call,
            rid: relay.rid.clone(),
            mid,
            uid: relay.uid.clone(),
            sid: relay.sid.clone(),
            offer,
        }));
        let to = relay.bizid.clone();
        self.cluster_op(ClusterOp::Send { to, msg });
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
            NodeMsg::Answer {
                from,
                call,
                sid,
                sdp,
            } => self.relay_answered(now, (from, call, sid), sdp),
            NodeMsg::Refused { call, code, reason } => {
                let err = RequestError::Remote(code, reason);
                if let Some(mid) = self.asking(call) {
                    self.relay_failed(&mid, err);
                } else {
                    self.place_refused(call, err);
                }
            }
            NodeMsg::Publish(ask) => {
                let (from, call) = (ask.from.clone(), ask.call);
                if let Err(e) = self.serve_publish(now, *ask) {
                    self.refuse_node(&from, call, &e);
                }
            }
            NodeMsg::Placed {
                from,
                call,
                mid,
                sfuid,
                sdp,
            } => self.placed((from, call), &mid, sfuid, &sdp),
            NodeMsg::Unpublish { from, mid } => self.drop_hosted(&from, &mid),
            NodeMsg::Ended { from, mid } => {
                if self.placed_stream(&mid).is_some_and(|s| s.home() == &from) {
                    self.remove_placed(&mid, Removal::BySfu);
                }
            }
            NodeMsg::Unsubscribe { from, sid } => {
                if let Some(i) = self.served_index(&from, &sid) {
                    self.close_subscription(i);
                }
            }
        }
    }

    /// The publisher's node answered relay call `call`: the SFU here
    /// completes the relay, and the subscriptions waiting for it are made.
    fn relay_answered(&mut self, now: Now, (from, call, sid): (NodeId, u64, Sid), sdp: String) {
        let Some(mid) = self.asking(call) else {
            // Given up meanwhile (its time ran out, its subscribers left):
            // the other node must not keep serving it.
            let msg = NodeMsg::Unsubscribe {
                from: self.bizid.clone(),
                sid,
            };
            self.cluster_op(ClusterOp::Send { to: from, msg });
            return;
        };
        let Some(relay) = self.relay_mut(&mid) else {
            return;
        };
        relay.state = RelayState::Up;
        let (sfu, mid) = (relay.sfu, relay.mid.clone());
        let waiting = std::mem::take(&mut relay.waiting);
        log::info!("relaying {mid} from node {} on SFU slot {sfu}", relay.bizid);
        let msg = ToSfu::RelayAnswer {
            mid: mid.clone(),
            answer: sdp,
        };
        self.effects.push_back(Effect::Sfu { sfu, msg });
        for w in waiting {
            let (conn, req) = (w.conn, w.req);
            let asker = Asker {
                conn,
                req,
                uid: w.uid,
                rid: w.rid,
            };
            let made = self.sfu_subscribe(now, sfu, asker, mid.clone(), w.sid, w.offer, None);
            if let Err(e) = made {
                self.reply(conn, req, Err(e));
            }
        }
        self.prune_relays();
    }

    /// Relay `mid` cannot be made: its waiting subscriptions get `err`,
    /// and whatever was set up of it ends.
    pub(super) fn relay_failed(&mut self, mid: &Mid, err: RequestError) {
        let Some(relay) = self.take_relay(mid) else {
            return;
        };
        log::info!("relay of {mid} from node {} failed: {err}", relay.bizid);
        self.end_relay(&relay, true);
        for w in relay.waiting {
            self.reply(w.conn, w.req, Err(err.clone()));
        }
    }

    /// Relay `mid`'s SFU dropped it (its media link failed, or the SFU
    /// went): the subscriptions here to it are gone with it.
    pub(super) fn relay_closed(&mut self, sfu: SfuSlot, mid: &Mid) {
        if self.relay(mid).is_none_or(|r| r.sfu != sfu) {
            return;
        }
        self.subs.retain(|s| !(&s.mid == mid && s.sfu == sfu));
        let why = RequestError::Sfu("the relay from the publisher's board failed".into());
        self.relay_failed(mid, why);
        self.prune_served();
    }

    /// Stream `mid` of another node ended: so does its relay here, and
    /// with it every subscription to it (its SFU closes them).
    pub(super) fn remote_stream_ended(&mut self, mid: &Mid) {
        let Some(relay) = self.take_relay(mid) else {
            return;
        };
        self.subs.retain(|s| &s.mid != mid);
        self.end_relay(&relay, false);
        for w in relay.waiting {
            self.reply(w.conn, w.req, Err(RequestError::NoSuchStream));
        }
        self.prune_served();
    }

    /// Drops the relays nobody here uses any more: no subscription to
    /// them, made, under way or waiting.
    pub(super) fn prune_relays(&mut self) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let unused: Vec<Mid> = (c.replica.relays.iter())
            .filter(|r| r.state == RelayState::Up && r.waiting.is_empty())
            .filter(|r| !self.subs.iter().any(|s| s.mid == r.mid))
            .filter(|r| {
                !self
                    .pending
                    .iter()
                    .any(|p| matches!(&p.kind, PendingKind::Subscribe { mid, .. } if mid == &r.mid))
            })
            .map(|r| r.mid.clone())
            .collect();
        for mid in unused {
            if let Some(relay) = self.take_relay(&mid) {
                log::info!("relay of {mid}: no subscriber left here");
                self.end_relay(&relay, true);
            }
        }
    }

    /// The SFU in `sfu` is gone, and its relays with it.
    pub(super) fn sfu_relays_gone(&mut self, sfu: SfuSlot) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let gone: Vec<Mid> = (c.replica.relays.iter())
            .filter(|r| r.sfu == sfu)
            .map(|r| r.mid.clone())
            .collect();
        for mid in gone {
            self.relay_failed(&mid, RequestError::NoSfu);
        }
    }

    /// Fails the relays whose offer still waits for the other node's
    /// answer: the link is gone, or (`now`) their time is up.
    pub(super) fn fail_relay_calls(&mut self, now: Option<Instant>, why: &str) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let due: Vec<Mid> = (c.replica.relays.iter())
            .filter(|r| match r.state {
                RelayState::Asking { deadline, .. } => now.is_none_or(|now| deadline <= now),
                _ => false,
            })
            .map(|r| r.mid.clone())
            .collect();
        for mid in due {
            let err = RequestError::ClusterUnavailable(why.to_string());
            self.relay_failed(&mid, err);
        }
    }

    /// When the first relay offer sent to another node runs out of time.
    pub(super) fn relay_call_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_deref()?;
        (c.replica.relays.iter())
            .filter_map(|r| match r.state {
                RelayState::Asking { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Whether relay `mid` is up (its subscriptions are as good as those
    /// to a stream of this node).
    pub(super) fn relay_is_up(&self, mid: &Mid) -> bool {
        self.relay(mid).is_some_and(|r| r.state == RelayState::Up)
    }

    /// Whether a relay here uses `sid`, or a subscription waits as `sid`.
    pub(super) fn relay_sid_in_use(&self, sid: &Sid) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            (c.replica.relays.iter())
                .any(|r| &r.sid == sid || r.waiting.iter().any(|w| &w.sid == sid))
        })
    }

    /// Subscriptions waiting for relay `mid` (None: for any relay).
    pub(super) fn relay_waiters(&self, mid: Option<&Mid>) -> usize {
        let Some(c) = self.cluster.as_deref() else {
            return 0;
        };
        (c.replica.relays.iter())
            .filter(|r| mid.is_none_or(|m| m == &r.mid))
            .map(|r| r.waiting.len())
            .sum()
    }

    /// Stops what was set up of a relay: its session on the SFU here,
    /// and (`tell`) its subscription on the publisher's node.
    fn end_relay(&mut self, relay: &Relay, tell: bool) {
        let msg = ToSfu::Unpublish {
            mid: relay.mid.clone(),
        };
        self.effects.push_back(Effect::Sfu {
            sfu: relay.sfu,
            msg,
        });
        if tell && relay.state != RelayState::Offering {
            let msg = NodeMsg::Unsubscribe {
                from: self.bizid.clone(),
                sid: relay.sid.clone(),
            };
            let to = relay.bizid.clone();
            self.cluster_op(ClusterOp::Send { to, msg });
        }
    }

    fn relay(&self, mid: &Mid) -> Option<&Relay> {
        let c = self.cluster.as_deref()?;
        c.replica.relays.iter().find(|r| &r.mid == mid)
    }

    fn relay_mut(&mut self, mid: &Mid) -> Option<&mut Relay> {
        let c = self.cluster.as_deref_mut()?;
        c.replica.relays.iter_mut().find(|r| &r.mid == mid)
    }

    /// The stream of the relay whose offer is call `call` to another node.
    fn asking(&self, call: u64) -> Option<Mid> {
        let c = self.cluster.as_deref()?;
        (c.replica.relays.iter())
            .find(|r| matches!(r.state, RelayState::Asking { call: c, .. } if c == call))
            .map(|r| r.mid.clone())
    }

    fn take_relay(&mut self, mid: &Mid) -> Option<Relay> {
        let c = self.cluster.as_deref_mut()?;
        let i = c.replica.relays.iter().position(|r| &r.mid == mid)?;
        Some(c.replica.relays.swap_remove(i))
    }

    // ----- the publisher's side -----

    /// Another node's relay subscribes to a stream of this node: the same
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

    /// This node's SFU answered another node's relay: the subscription is
    /// kept (and closed when that node says so, or dies) and the answer
    /// goes back. If the stream ended meanwhile, the SFU drops it again.
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
            "node {bizid} relays {} (for {}) as {}",
            sub.mid,
            sub.uid,
            sub.sid
        );
        let msg = NodeMsg::Answer {
            from: self.bizid.clone(),
            call,
            sid: sub.sid.clone(),
            sdp,
        };
        let _ = self.subs.push(sub);
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

    /// Node `bizid` is gone: the subscriptions this node served for its
    /// relays end. (Its streams, and so the relays here that pulled them,
    /// ended with its members.)
    pub(super) fn forget_node_subs(&mut self, bizid: &NodeId) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let theirs: Vec<Sid> = (c.replica.served.iter())
            .filter(|s| &s.bizid == bizid)
            .map(|s| s.sid.clone())
            .collect();
        for sid in theirs {
            if let Some(i) = self.subs.iter().position(|s| s.sid == sid) {
                self.close_subscription(i);
            }
        }
    }

    /// Forgets served subscriptions whose subscription is gone here, and
    /// drops the relays no subscription here uses any more.
    pub(super) fn prune_served(&mut self) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let subs = &self.subs;
        c.replica
            .served
            .retain(|s| subs.iter().any(|x| x.sid == s.sid));
        self.prune_relays();
    }
}

fn waiter(asker: Asker, sid: Sid, offer: String) -> Waiter {
    Waiter {
        conn: asker.conn,
        req: asker.req,
        uid: asker.uid,
        rid: asker.rid,
        sid,
        offer,
    }
}
