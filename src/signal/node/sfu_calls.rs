//! Calls to SFUs: a publish or subscribe waits here for the SFU's answer
//! (or its deadline); SFUs come up, go down, and report.

use super::cluster::StreamEntry;
use super::tables::{unique, Asker, PendingCall, PendingKind, Removal, Stream, Subscription};
use super::{Effect, Node, Now, Outcome, Reply, SfuSlot};
use crate::ids::{Mid, NodeId, Sid};
use crate::ipc::{CallId, FromSfu, SfuError, ToSfu};
use crate::signal::error::RequestError;
use crate::signal::protoo::{self, Minfo};
use std::time::Instant;

impl Node {
    pub(super) fn publish(&mut self, now: Now, asker: Asker, offer: String, minfo: Minfo) -> Reply {
        let is_publish = |k: &PendingKind| matches!(k, PendingKind::Publish { .. });
        let mine = |s: &Stream| s.owner.is_none() && s.rid == asker.rid;
        let in_room = self.streams.iter().filter(|s| mine(s)).count()
            + self.pending_count(|p| {
                is_publish(&p.kind) && p.rid == asker.rid && p.for_node.is_none()
            })
            + self.placed_count(Some(&asker.rid));
        if in_room >= self.limits.streams_per_room {
            return Err(RequestError::Full("streams per room"));
        }
        if self.room_for_streams() == 0 {
            // This board is full: the least loaded other one, if any.
            if let Some(reply) = self.publish_elsewhere(now, &asker, &offer, minfo) {
                return reply;
            }
            if self.streams.len() + self.pending_count(|p| is_publish(&p.kind))
                >= self.limits.streams
            {
                return Err(RequestError::Full("streams"));
            }
        }
        let sfu = self.least_loaded_sfu().ok_or(RequestError::NoSfu)?;
        let mid = unique(|| Mid::random(&asker.uid), |m| self.mid_in_use(m));
        let kind = PendingKind::Publish {
            mid: mid.clone(),
            minfo,
        };
        self.call_sfu(now, sfu, asker, kind, None, |call| ToSfu::Publish {
            call,
            mid,
            offer,
        })
    }

    pub(super) fn subscribe(&mut self, now: Now, asker: Asker, mid: Mid, offer: String) -> Reply {
        let local = self
            .streams
            .iter()
            .find(|s| s.mid == mid && s.rid == asker.rid)
            .map(|s| s.sfu);
        let Some(sfu) = local else {
            // Published on another node, maybe: its SFU serves it.
            return self.subscribe_remote(now, asker, mid, offer);
        };
        self.room_for_sub(&mid)?;
        let sid = unique(|| Sid::random(&asker.uid), |s| self.sid_in_use(s));
        self.sfu_subscribe(now, sfu, asker, mid, sid, offer, None)
    }

    /// Whether a subscription to `mid` (a stream of this node) fits its
    /// bounds, counting those under way.
    pub(super) fn room_for_sub(&self, mid: &Mid) -> Result<(), RequestError> {
        let is_sub = |k: &PendingKind| matches!(k, PendingKind::Subscribe { .. });
        let to_this = self.subs.iter().filter(|s| &s.mid == mid).count()
            + self.pending_count(
                |p| matches!(&p.kind, PendingKind::Subscribe { mid: m, .. } if m == mid),
            )
            + self.relay_waiters(Some(mid));
        if to_this >= self.limits.subs_per_stream {
            return Err(RequestError::Full("subscriptions per stream"));
        }
        let all = self.subs.len() + self.pending_count(|p| is_sub(&p.kind));
        if all + self.relay_waiters(None) >= self.limits.subs {
            return Err(RequestError::Full("subscriptions"));
        }
        Ok(())
    }

    /// Asks `sfu` for subscription `sid` to `mid`; `for_node`: on behalf
    /// of another node's peer (that node and its call).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sfu_subscribe(
        &mut self,
        now: Now,
        sfu: SfuSlot,
        asker: Asker,
        mid: Mid,
        sid: Sid,
        offer: String,
        for_node: Option<Box<(NodeId, u64)>>,
    ) -> Reply {
        let kind = PendingKind::Subscribe {
            mid: mid.clone(),
            sid: sid.clone(),
        };
        let msg = |call| ToSfu::Subscribe {
            call,
            sid,
            mid,
            offer,
        };
        self.call_sfu(now, sfu, asker, kind, for_node, msg)
    }

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
        self.sfu_relays_gone(sfu);
        self.prune_served();
        while let Some(i) = self.pending.iter().position(|p| p.sfu == sfu) {
            let p = self.pending.swap_remove(i);
            self.fail_call(&p, RequestError::NoSfu);
        }
    }

    /// A message from an SFU.
    pub fn sfu_message(&mut self, now: Now, sfu: SfuSlot, msg: FromSfu) {
        match msg {
            FromSfu::Hello { sfuid, .. } => self.sfu_up(now, sfu, sfuid),
            FromSfu::Answer { call, sdp } => self.call_done(now, sfu, call, Ok(sdp)),
            FromSfu::Failed { call, error } => self.call_done(now, sfu, call, Err(error)),
            FromSfu::StreamClosed { mid } => {
                if self.streams.iter().any(|s| s.mid == mid && s.sfu == sfu) {
                    self.remove_stream(&mid, Removal::BySfu);
                } else {
                    self.relay_closed(sfu, &mid);
                }
            }
            FromSfu::Stats(stats) => {
                if let Some(s) = self.sfus.get_mut(sfu.0) {
                    s.stats = stats;
                }
            }
            FromSfu::SubscriptionClosed { sid } => {
                self.subs.retain(|s| !(s.sid == sid && s.sfu == sfu));
                self.prune_served();
            }
        }
    }

    fn call_done(
        &mut self,
        now: Now,
        sfu: SfuSlot,
        call: CallId,
        result: Result<String, SfuError>,
    ) {
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
                self.fail_call(&p, err);
                return;
            }
        };
        if let Some(node) = p.for_node {
            let (bizid, call) = *node;
            match p.kind {
                PendingKind::Subscribe { mid, sid } => {
                    let sub = Subscription {
                        sid,
                        mid,
                        rid: p.rid,
                        uid: p.uid,
                        sfu,
                    };
                    self.served_subscribed(sub, bizid, call, sdp);
                }
                PendingKind::Publish { mid, minfo } => {
                    let stream = Stream::new(mid, p.rid, p.uid, minfo, sfu);
                    self.hosted_published(stream, bizid, call, sdp);
                }
                // Never another node's: a relay is this node's own.
                PendingKind::Relay { .. } => {}
            }
            return;
        }
        // The peer may have left (or the stream gone) while the SFU worked.
        let still_here = self
            .peers
            .iter()
            .any(|peer| peer.conn == p.conn && peer.in_room(&p.rid));
        match p.kind {
            // The relay's offer, for the publisher's node (its own waiting
            // subscribers are answered once the relay is up).
            PendingKind::Relay { mid } => self.relay_offered(now.mono, sfu, mid, sdp),
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
                let stream = Stream::new(mid, p.rid, p.uid, minfo, sfu);
                let entry = StreamEntry {
                    rid: stream.rid.clone(),
                    mid: stream.mid.clone(),
                    uid: stream.uid.clone(),
                    bizid: self.bizid.clone(),
                    sfuid,
                    minfo,
                    host: None,
                };
                self.announce_stream(p.conn, p.req, &entry, &sdp);
                log::info!("{}: published {} on {}", entry.uid, entry.mid, entry.sfuid);
                // Capacity was reserved by the pending call.
                let _ = self.streams.push(stream);
            }
            PendingKind::Subscribe { mid, sid } => {
                let stream_alive =
                    self.streams.iter().any(|s| s.mid == mid) || self.relay_is_up(&mid);
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
                    // A relay only it was to use is no longer needed.
                    self.prune_relays();
                    return;
                }
                let answer = protoo::SubscribeAnswer::response(p.req, &sdp, &sid);
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

    /// Answers the asker of a failed SFU call: a client, or the node that
    /// asked for one of its peers.
    fn fail_call(&mut self, p: &PendingCall, err: RequestError) {
        if let PendingKind::Relay { mid } = &p.kind {
            self.relay_failed(mid, err);
            return;
        }
        match &p.for_node {
            None => self.reply(p.conn, p.req, Err(err)),
            Some(node) => self.refuse_node(&node.0, node.1, &err),
        }
    }

    /// Sends a call to an SFU; the request is answered when the SFU
    /// answers (or does not, in time).
    pub(super) fn call_sfu(
        &mut self,
        now: Now,
        sfu: SfuSlot,
        asker: Asker,
        kind: PendingKind,
        for_node: Option<Box<(NodeId, u64)>>,
        msg: impl FnOnce(CallId) -> ToSfu,
    ) -> Reply {
        if self.pending.len() >= self.limits.pending_sfu_calls {
            return Err(RequestError::Full("pending SFU calls"));
        }
        let call = self.next_call;
        let pending = PendingCall {
            call,
            sfu,
            deadline: now.mono + self.limits.sfu_call_timeout(),
            conn: asker.conn,
            uid: asker.uid,
            rid: asker.rid,
            req: asker.req,
            kind,
            for_node,
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

    /// The live SFU with the fewest sessions (streams + subscriptions +
    /// calls under way); ties go to the lowest slot.
    pub(super) fn least_loaded_sfu(&self) -> Option<SfuSlot> {
        (0..self.sfus.len())
            .filter(|&i| self.sfus[i].id.is_some())
            .map(SfuSlot)
            .min_by_key(|&i| {
                self.streams.iter().filter(|s| s.sfu == i).count()
                    + self.subs.iter().filter(|s| s.sfu == i).count()
                    + self.pending.iter().filter(|p| p.sfu == i).count()
            })
    }

    /// Fails the SFU calls whose deadline has come (504).
    pub(super) fn expire_calls(&mut self, now: Instant) {
        while let Some(i) = self.pending.iter().position(|p| p.deadline <= now) {
            let p = self.pending.swap_remove(i);
            log::warn!("SFU slot {} did not answer call {} in time", p.sfu, p.call);
            // The SFU may still set the session up: make sure it does not linger.
            let msg = match &p.kind {
                PendingKind::Publish { mid, .. } | PendingKind::Relay { mid } => {
                    ToSfu::Unpublish { mid: mid.clone() }
                }
                PendingKind::Subscribe { sid, .. } => ToSfu::Unsubscribe { sid: sid.clone() },
            };
            self.effects.push_back(Effect::Sfu { sfu: p.sfu, msg });
            self.fail_call(&p, RequestError::SfuTimeout);
        }
    }
}
