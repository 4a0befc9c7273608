//! The cluster as this node sees it: whether its link to Redis is up, the
//! other signaling nodes it hears heartbeats from, and what node and shell
//! say to each other about it (events, operations, answers). What the
//! other nodes' peers and streams are, room by room, is `remote`'s.
//!
//! The node does no I/O here either: the shell (`signal::cluster_link`)
//! says when the link comes and goes and hands over what arrives on it;
//! the node decides who is alive. A node is dead when nothing was heard
//! from it for [`NODE_TIMEOUT`] while our own link was up (and, when our
//! link came back, not before the [`RESYNC_GRACE`] is over: its link may
//! come back later than ours); one that comes back with another `epoch`
//! is a new process, and the old one is dead.

use super::{ConnId, Node, Now, SfuSlot};
use crate::ids::{Mid, NodeId, PeerId, RoomId, Sid};
use crate::limits::{
    MAX_CLUSTER_NODES, MAX_CONNECTIONS, MAX_PENDING_SFU_CALLS, MAX_RELAYS, MAX_STREAMS, MAX_SUBS,
    NODE_TIMEOUT, RESYNC_GRACE,
};
use crate::signal::protoo::{Minfo, RequestId};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What one node tells the others on the cluster's event channel. Every
/// node hears every message, its own included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ClusterEvent {
    /// "I am alive", every heartbeat interval.
    Beat(Beat),
    /// "I am stopping": the others need not wait for the timeout.
    Bye { bizid: NodeId, epoch: u64 },
    /// A peer of `bizid` joined a room (published by the join script,
    /// with the order Redis gave it).
    Join {
        rid: RoomId,
        uid: PeerId,
        bizid: NodeId,
        order: u32,
    },
    /// A peer of `bizid` left a room.
    Leave(PeerRef),
    /// A stream was published on `bizid`.
    Add(StreamEntry),
    /// A stream of `bizid` went away.
    Remove(StreamRef),
    /// A peer of `bizid` broadcast `data` to its room.
    Broadcast {
        rid: RoomId,
        uid: PeerId,
        bizid: NodeId,
        data: serde_json::Value,
    },
    /// `bizid` wrote its whole state again (after its link came back):
    /// whoever shares a room with it reads that room again.
    Sync { bizid: NodeId },
}

/// A peer of node `bizid` in room `rid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRef {
    pub rid: RoomId,
    pub uid: PeerId,
    pub bizid: NodeId,
}

/// Stream `mid` of peer `uid` of node `bizid` in room `rid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRef {
    pub rid: RoomId,
    pub mid: Mid,
    pub uid: PeerId,
    pub bizid: NodeId,
}

/// What one node asks of another, on the other's own channel
/// (`wren:to:BIZID`): relays, its SFUs' subscriptions to streams the
/// other node's SFUs carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum NodeMsg {
    /// A relay of another node subscribes (boxed: the largest by far).
    Subscribe(Box<SubscribeAsk>),
    /// Node `from`'s SFU answered call `call`, as subscription `sid`.
    Answer {
        from: NodeId,
        call: u64,
        sid: Sid,
        sdp: String,
    },
    /// Call `call` failed: an error code and reason for the client.
    Refused {
        call: u64,
        code: u16,
        reason: String,
    },
    /// The relay is done with `sid`.
    Unsubscribe { from: NodeId, sid: Sid },
    /// A peer of node `from` publishes here: this node was full
    /// (boxed: the largest by far).
    Publish(Box<PublishAsk>),
    /// Node `from`'s SFU took publish call `call` (stream `mid`): its id
    /// and answer.
    Placed {
        from: NodeId,
        call: u64,
        mid: Mid,
        sfuid: NodeId,
        sdp: String,
    },
    /// The owner unpublished stream `mid` that node `from` placed here.
    Unpublish { from: NodeId, mid: Mid },
    /// Stream `mid`, placed by the receiving node on node `from`, ended
    /// there (its publisher's connection failed, or its SFU went).
    Ended { from: NodeId, mid: Mid },
}

/// Peer `uid` of node `from` publishes `mid` in `rid` with `offer`;
/// `call` numbers it at `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishAsk {
    pub from: NodeId,
    pub call: u64,
    pub rid: RoomId,
    pub mid: Mid,
    pub uid: PeerId,
    pub minfo: Minfo,
    pub offer: String,
}

/// A relay of node `from` subscribes to `mid` with `offer`, as `sid`
/// (chosen by `from`, unique there), for its peer `uid` (the first to
/// want it); `call` numbers it at `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeAsk {
    pub from: NodeId,
    pub call: u64,
    pub rid: RoomId,
    pub mid: Mid,
    pub uid: PeerId,
    pub sid: Sid,
    pub offer: String,
}

/// A published stream, as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub rid: RoomId,
    pub mid: Mid,
    pub uid: PeerId,
    /// The node whose peer published it.
    pub bizid: NodeId,
    /// The SFU it lives on.
    pub sfuid: NodeId,
    pub minfo: Minfo,
    /// The node whose SFU carries it, when not `bizid`'s (that board was
    /// full: the publish was placed on another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<NodeId>,
}

impl StreamEntry {
    /// The node whose SFU carries it: relays pull it from there.
    pub fn home(&self) -> &NodeId {
        self.host.as_ref().unwrap_or(&self.bizid)
    }
}

/// A room member, as the cluster keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberEntry {
    pub uid: PeerId,
    pub bizid: NodeId,
    /// Its place in the room's order of joining (Redis counts the room's
    /// joins; past 2^32 of them in one room the order is no longer kept).
    pub order: u32,
}

/// One room as Redis has it: its members and streams on live nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSnapshot {
    pub rid: RoomId,
    pub members: Vec<MemberEntry>,
    pub streams: Vec<StreamEntry>,
}

/// A call to Redis that the node waits for (the others it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterCall(pub u64);

/// Something the shell must do in Redis. Operations are carried out in
/// the order the node makes them.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterOp {
    /// Enter `uid` into `rid` unless `cap` others are in it, cluster-wide;
    /// answered with [`ClusterAnswer::Joined`], `Full` or `Taken`.
    Join {
        call: ClusterCall,
        rid: RoomId,
        uid: PeerId,
        bizid: NodeId,
        cap: usize,
    },
    /// Take a peer out of its room, if it is there for its node, and
    /// tell the others.
    Leave(PeerRef),
    /// Record a stream and tell the others.
    Add(StreamEntry),
    /// Drop a stream of its node and tell the others.
    Remove(StreamRef),
    /// Publish an event (JSON) as it is; nothing is stored.
    Publish(Rc<str>),
    /// Replace everything Redis has of `bizid` by `rooms`, tell the others,
    /// and answer with those rooms as they then are ([`ClusterAnswer::Rooms`]).
    Sync {
        call: ClusterCall,
        bizid: NodeId,
        rooms: Vec<RoomSnapshot>,
    },
    /// Read rooms ([`ClusterAnswer::Rooms`]).
    Snapshot {
        call: ClusterCall,
        rids: Vec<RoomId>,
    },
    /// Drop what Redis has of a dead node (unless it is alive again).
    Purge { bizid: NodeId },
    /// Send a message to one node.
    Send { to: NodeId, msg: NodeMsg },
}

impl ClusterOp {
    /// The call the node waits on, for the operations it waits for.
    pub fn call(&self) -> Option<ClusterCall> {
        match self {
            ClusterOp::Join { call, .. }
            | ClusterOp::Sync { call, .. }
            | ClusterOp::Snapshot { call, .. } => Some(*call),
            _ => None,
        }
    }
}

/// What Redis answered to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAnswer {
    /// In: at `order`, with the room as it now is.
    Joined {
        order: u32,
        room: RoomSnapshot,
    },
    /// The room is at its bound, counting every node's members.
    Full,
    /// The uid is in the room through another node.
    Taken(NodeId),
    Rooms(Vec<RoomSnapshot>),
    /// The link failed before an answer came.
    Failed(String),
}

/// A node's heartbeat: who it is and how loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    pub bizid: NodeId,
    /// Drawn once per process: a node that restarts under the same bizid
    /// is told apart from the one that was there before.
    pub epoch: u64,
    pub peers: u32,
    pub streams: u32,
    /// Streams it can still take (its table's room, with a live SFU).
    pub free_streams: u32,
}

/// Whether the link to Redis is up, and since when it is down.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Up,
    Down { why: String },
}

/// Another node, as last heard.
pub(super) struct ClusterNode {
    pub(super) beat: Beat,
    pub(super) last_heard: Instant,
    /// Not heard since our link came back: waited for until the grace
    /// after it ends, even if that is later than `NODE_TIMEOUT`.
    pub(super) awaited: bool,
}

/// Members of other nodes this node keeps at most: as many as it has
/// connections of its own.
pub const MAX_REMOTE_MEMBERS: usize = MAX_CONNECTIONS;

/// A member of another node in one of this node's rooms.
pub(super) struct MemberRow {
    pub(super) rid: RoomId,
    pub(super) entry: MemberEntry,
}

/// A join waiting for Redis, and whom to answer.
pub(super) struct PendingJoin {
    pub(super) call: ClusterCall,
    pub(super) conn: ConnId,
    pub(super) req: RequestId,
    pub(super) uid: PeerId,
    pub(super) rid: RoomId,
    pub(super) may_publish: bool,
    pub(super) deadline: Instant,
}

/// A stream of another node that an SFU here pulls (see `relays`).
pub(super) struct Relay {
    pub(super) mid: Mid,
    pub(super) rid: RoomId,
    /// The peer here that first wanted it.
    pub(super) uid: PeerId,
    /// The node whose SFU carries the stream.
    pub(super) bizid: NodeId,
    /// The relay's subscription on that node.
    pub(super) sid: Sid,
    /// The SFU here that pulls it.
    pub(super) sfu: SfuSlot,
    pub(super) state: RelayState,
    /// Subscriptions here waiting for it to be up (all relays' together
    /// at most [`MAX_PENDING_SFU_CALLS`]).
    pub(super) waiting: Vec<Waiter>,
}

/// Where a relay is in its setting up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayState {
    /// The SFU here makes its offer (a pending SFU call).
    Offering,
    /// The publisher's node answers call `call` by `deadline`.
    Asking { call: u64, deadline: Instant },
    /// Answered: media flows, or is about to.
    Up,
}

/// A subscription waiting for its relay: who asked, and what.
pub(super) struct Waiter {
    pub(super) conn: ConnId,
    pub(super) req: RequestId,
    pub(super) uid: PeerId,
    pub(super) rid: RoomId,
    pub(super) sid: Sid,
    pub(super) offer: String,
}

/// A publish placed on another node, waiting for its answer.
pub(super) struct PendingPlace {
    pub(super) call: u64,
    pub(super) conn: ConnId,
    pub(super) req: RequestId,
    /// The stream as it will be known (its `host`, the node asked).
    pub(super) entry: StreamEntry,
    pub(super) deadline: Instant,
}

/// A subscription on this node's SFU that another node's relay made.
pub(super) struct ServedSub {
    pub(super) sid: Sid,
    /// The subscriber's node.
    pub(super) bizid: NodeId,
}

/// The other nodes' part of this node's rooms (see `remote`), the joins
/// waiting for Redis, and the subscriptions that cross nodes (see
/// `remote_subs`). Allocated with the cluster, never on a node without one.
#[derive(Default)]
pub(super) struct Replica {
    pub(super) members: Box<heapless::Vec<MemberRow, MAX_REMOTE_MEMBERS>>,
    pub(super) streams: Box<heapless::Vec<StreamEntry, MAX_STREAMS>>,
    pub(super) joins: heapless::Vec<PendingJoin, MAX_PENDING_SFU_CALLS>,
    /// Streams of other nodes this node's SFUs pull.
    pub(super) relays: heapless::Vec<Relay, MAX_RELAYS>,
    /// This node's peers' streams placed on other nodes (this node was
    /// full), and those waiting for the other node's answer.
    pub(super) placed: Box<heapless::Vec<StreamEntry, MAX_STREAMS>>,
    pub(super) placing: heapless::Vec<PendingPlace, MAX_PENDING_SFU_CALLS>,
    /// Other nodes' relays' subscriptions on this node's SFUs.
    pub(super) served: Box<heapless::Vec<ServedSub, MAX_SUBS>>,
}

/// The cluster part of the node; absent on a node without one.
pub(super) struct Cluster {
    pub(super) epoch: u64,
    pub(super) link: Link,
    pub(super) nodes: heapless::Vec<ClusterNode, MAX_CLUSTER_NODES>,
    /// The other nodes' members and streams of this node's rooms.
    pub(super) replica: Replica,
    pub(super) next_call: u64,
    /// Until when, after the link was made again, entries of live nodes
    /// that Redis lacks are kept (see `RESYNC_GRACE`).
    pub(super) settle_at: Option<Instant>,
    /// Which answers, since the link was last made again, may lack a live
    /// node's entries.
    pub(super) resync: Option<Resync>,
}

/// The calls of the grace after the link came back, and the nodes heard
/// writing their state again in it. An answer is judged by when its call
/// was made, not by when it came: Redis answers on the command connection
/// and tells of a node's `Sync` on the event connection, so the answer to
/// a read made before that `Sync` can come after it, without the node's
/// entries (seen under QEMU: a peer told another had left, which came back
/// at once).
#[derive(Debug)]
pub(super) struct Resync {
    /// The first call made in the grace (this node's own sync).
    pub(super) from: ClusterCall,
    /// The first call made after the grace ended (None: it goes on).
    pub(super) until: Option<ClusterCall>,
    /// The nodes heard writing their state again, each with the first call
    /// made after that: its answer has their entries.
    pub(super) synced: heapless::Vec<(NodeId, ClusterCall), MAX_CLUSTER_NODES>,
}

impl Resync {
    /// Whether the answer to `call` may lack entries of `bizid` that Redis
    /// will have again (`bizid` alive).
    pub(super) fn may_lack(&self, call: ClusterCall, bizid: &NodeId) -> bool {
        let in_grace = call >= self.from && self.until.is_none_or(|u| call < u);
        in_grace
            && !self
                .synced
                .iter()
                .any(|(b, after)| b == bizid && call >= *after)
    }
}

impl Cluster {
    /// When `n` is taken as dead if nothing more is heard from it. A node
    /// not heard since our link came back is waited for until the grace
    /// ends: its own link to Redis likely went down with ours and comes
    /// back after its own retry pause, which can end later than
    /// `NODE_TIMEOUT` after ours did.
    fn deadline(&self, n: &ClusterNode) -> Instant {
        let heard = n.last_heard + NODE_TIMEOUT;
        match self.settle_at {
            Some(end) if n.awaited => heard.max(end),
            _ => heard,
        }
    }
}

/// What `/metrics` and `/healthz` show of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetrics {
    pub link: Link,
    /// Other nodes alive.
    pub nodes: usize,
    /// Members of this node's rooms connected to other nodes.
    pub remote_members: usize,
    /// Streams of this node's rooms published on other nodes.
    pub remote_streams: usize,
    /// Streams of other nodes this node's SFUs pull (relays).
    pub relays: usize,
    /// This node's peers' streams placed on other nodes (it was full).
    pub placed_streams: usize,
    /// Other nodes' peers' streams placed on this node's SFUs.
    pub hosted_streams: usize,
    /// Subscriptions this node's SFUs serve for other nodes' relays.
    pub served_subscriptions: usize,
}

impl Node {
    /// Makes this node part of a cluster, its link down until
    /// [`Node::cluster_up`]. `epoch` tells this process apart from an
    /// earlier one with the same bizid.
    pub fn enable_cluster(&mut self, epoch: u64) {
        self.cluster = Some(Box::new(Cluster {
            epoch,
            link: Link::Down {
                why: "not connected yet".into(),
            },
            nodes: heapless::Vec::new(),
            replica: Replica::default(),
            next_call: 1,
            settle_at: None,
            resync: None,
        }));
    }

    /// The link to Redis is made (or made again). Whoever we knew is given
    /// a full timeout from now: while the link was down we heard nobody,
    /// and that says nothing about them.
    pub fn cluster_up(&mut self, now: Now) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.link = Link::Up;
        for n in c.nodes.iter_mut() {
            n.last_heard = now.mono;
            n.awaited = true;
        }
        c.settle_at = Some(now.mono + RESYNC_GRACE);
        c.resync = Some(Resync {
            from: ClusterCall(c.next_call),
            until: None,
            synced: heapless::Vec::new(),
        });
        log::info!("cluster link up; {} other nodes known", c.nodes.len());
        self.sync(now);
    }

    /// The link to Redis is gone. Local rooms carry on; nobody is judged
    /// dead until it is back.
    pub fn cluster_down(&mut self, _now: Now, why: String) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.link = Link::Down { why: why.clone() };
            // Its next coming up starts another grace.
            c.settle_at = None;
        }
        self.fail_joins(None, &why);
        self.fail_relay_calls(None, &why);
        self.fail_placing(None, &why);
    }

    /// Something arrived on the cluster's event channel.
    pub fn cluster_event(&mut self, now: Now, ev: ClusterEvent) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        match ev {
            ClusterEvent::Beat(beat) if beat.bizid == self.bizid => {
                if beat.epoch != c.epoch {
                    log::error!(
                        "another node also calls itself {}: every node needs its own bizid",
                        beat.bizid
                    );
                }
            }
            ClusterEvent::Beat(beat) => {
                let known = c.nodes.iter().position(|n| n.beat.bizid == beat.bizid);
                match known {
                    Some(i) if c.nodes[i].beat.epoch == beat.epoch => {
                        c.nodes[i].beat = beat;
                        c.nodes[i].last_heard = now.mono;
                        c.nodes[i].awaited = false;
                    }
                    Some(_) => {
                        log::info!("node {} restarted", beat.bizid);
                        let bizid = beat.bizid.clone();
                        self.node_gone(&bizid);
                        self.add_node(now, beat);
                    }
                    None => self.add_node(now, beat),
                }
            }
            ClusterEvent::Bye { bizid, epoch } => {
                let known = c
                    .nodes
                    .iter()
                    .any(|n| n.beat.bizid == bizid && n.beat.epoch == epoch);
                if known {
                    log::info!("node {bizid} stopped");
                    self.node_gone(&bizid);
                }
            }
            room_event => self.room_event(now, room_event),
        }
    }

    fn add_node(&mut self, now: Now, beat: Beat) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let bizid = beat.bizid.clone();
        let node = ClusterNode {
            beat,
            last_heard: now.mono,
            awaited: false,
        };
        match c.nodes.push(node) {
            Ok(()) => log::info!("node {bizid} joined the cluster"),
            Err(_) => log::warn!(
                "node {bizid} ignored: this node tracks {MAX_CLUSTER_NODES} others at most"
            ),
        }
    }

    /// A node died or stopped: it is forgotten, its peers leave this
    /// node's rooms and its streams end, and Redis drops what it had of it.
    fn node_gone(&mut self, bizid: &NodeId) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.nodes.retain(|n| &n.beat.bizid != bizid);
        }
        self.forget_node(bizid);
        self.cluster_op(ClusterOp::Purge {
            bizid: bizid.clone(),
        });
    }

    /// This node's heartbeat.
    pub fn beat(&self) -> Option<Beat> {
        let c = self.cluster.as_deref()?;
        let free = self.room_for_streams();
        Some(Beat {
            bizid: self.bizid.clone(),
            epoch: c.epoch,
            peers: self.peers.len() as u32,
            streams: self.streams.len() as u32,
            free_streams: free as u32,
        })
    }

    /// When the next node would time out; None without a link.
    pub(super) fn cluster_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_deref()?;
        if c.link != Link::Up {
            return None;
        }
        c.nodes.iter().map(|n| c.deadline(n)).min()
    }

    /// Forgets the nodes not heard from in time (only while the link is up).
    pub(super) fn expire_nodes(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        if c.link != Link::Up {
            return;
        }
        let dead: Vec<(NodeId, Duration)> = c
            .nodes
            .iter()
            .filter(|n| now >= c.deadline(n))
            .map(|n| {
                (
                    n.beat.bizid.clone(),
                    now.saturating_duration_since(n.last_heard),
                )
            })
            .collect();
        for (bizid, silent) in dead {
            log::warn!(
                "node {bizid}: no heartbeat for {} s, taken as dead",
                silent.as_secs()
            );
            self.node_gone(&bizid);
        }
    }

    /// The cluster's state, for `/metrics` and `/healthz`; None without one.
    pub fn cluster_metrics(&self) -> Option<ClusterMetrics> {
        let c = self.cluster.as_deref()?;
        Some(ClusterMetrics {
            link: c.link.clone(),
            nodes: c.nodes.len(),
            remote_members: c.replica.members.len(),
            remote_streams: c.replica.streams.len(),
            relays: c.replica.relays.len(),
            placed_streams: c.replica.placed.len(),
            hosted_streams: self.streams.iter().filter(|s| s.owner.is_some()).count(),
            served_subscriptions: c.replica.served.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Limits, HEARTBEAT_INTERVAL};
    use std::time::Duration;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    fn beat(bizid: &str, epoch: u64) -> ClusterEvent {
        ClusterEvent::Beat(Beat {
            bizid: id(bizid),
            epoch,
            peers: 0,
            streams: 0,
            free_streams: 1,
        })
    }

    /// A node of a cluster with its link up, at `now`.
    fn clustered() -> (Node, Now) {
        let mut node = Node::new(id("a"), Limits::default(), 1);
        let now = Now {
            mono: Instant::now(),
            unix_secs: 1_700_000_000,
        };
        node.enable_cluster(7);
        node.cluster_up(now);
        (node, now)
    }

    fn others(node: &Node) -> usize {
        node.cluster_metrics().unwrap().nodes
    }

    #[test]
    fn a_node_without_a_cluster_has_no_cluster_state() {
        let node = Node::new(id("a"), Limits::default(), 1);
        assert_eq!(node.cluster_metrics(), None);
        assert_eq!(node.beat(), None);
    }

    #[test]
    fn heartbeats_make_nodes_known_and_silence_makes_them_dead() {
        let (mut node, mut now) = clustered();
        node.cluster_event(now, beat("a", 7));
        assert_eq!(others(&node), 0, "its own heartbeat is not another node");
        node.cluster_event(now, beat("b", 1));
        node.cluster_event(now, beat("c", 1));
        assert_eq!(others(&node), 2);
        assert_eq!(node.poll_timeout(), Some(now.mono + NODE_TIMEOUT));
        // b keeps beating, c falls silent.
        for _ in 0..3 {
            now.mono += HEARTBEAT_INTERVAL;
            node.cluster_event(now, beat("b", 1));
            node.tick(now);
        }
        let names: Vec<_> = (node.cluster.as_ref().unwrap().nodes.iter())
            .map(|n| n.beat.bizid.to_string())
            .collect();
        assert_eq!(names, ["b"], "c was silent for {NODE_TIMEOUT:?}");
    }

    #[test]
    fn nobody_is_judged_while_the_link_is_down() {
        let (mut node, mut now) = clustered();
        node.cluster_event(now, beat("b", 1));
        node.cluster_down(now, "connection refused".into());
        assert_eq!(node.poll_timeout(), None);
        now.mono += NODE_TIMEOUT * 3;
        node.tick(now);
        assert_eq!(others(&node), 1);
        // Back up: b's own link may come back up to a retry pause later,
        // so b is waited for until the grace ends, longer than a timeout.
        node.cluster_up(now);
        let up = now.mono;
        assert_eq!(node.poll_timeout(), Some(up + RESYNC_GRACE));
        now.mono = up + RESYNC_GRACE - Duration::from_millis(1);
        node.tick(now);
        assert_eq!(others(&node), 1);
        now.mono += Duration::from_millis(1);
        node.tick(now);
        assert_eq!(others(&node), 0);

        // Once heard again, b has its own timeout, grace or not.
        node.cluster_event(now, beat("b", 1));
        node.cluster_down(now, "connection refused".into());
        node.cluster_up(now);
        now.mono += Duration::from_secs(1);
        node.cluster_event(now, beat("b", 1));
        assert_eq!(node.poll_timeout(), Some(now.mono + NODE_TIMEOUT));
    }

    #[test]
    fn a_restarted_node_and_a_goodbye_are_told_apart() {
        let (mut node, now) = clustered();
        node.cluster_event(now, beat("b", 1));
        node.cluster_event(now, beat("b", 2));
        let c = node.cluster.as_ref().unwrap();
        assert_eq!((c.nodes.len(), c.nodes[0].beat.epoch), (1, 2));
        // A goodbye of the old process is old news.
        node.cluster_event(
            now,
            ClusterEvent::Bye {
                bizid: id("b"),
                epoch: 1,
            },
        );
        assert_eq!(others(&node), 1);
        node.cluster_event(
            now,
            ClusterEvent::Bye {
                bizid: id("b"),
                epoch: 2,
            },
        );
        assert_eq!(others(&node), 0);
    }

    #[test]
    fn the_node_table_is_bounded() {
        let (mut node, now) = clustered();
        for i in 0..MAX_CLUSTER_NODES + 3 {
            node.cluster_event(now, beat(&format!("n{i}"), 1));
        }
        assert_eq!(others(&node), MAX_CLUSTER_NODES);
    }

    #[test]
    fn events_are_json_with_a_type_tag() {
        let text = serde_json::to_string(&beat("b", 3)).unwrap();
        assert_eq!(
            text,
            r#"{"t":"beat","bizid":"b","epoch":3,"peers":0,"streams":0,"free_streams":1}"#
        );
        let bye: ClusterEvent =
            serde_json::from_str(r#"{"t":"bye","bizid":"b","epoch":3}"#).unwrap();
        assert_eq!(
            bye,
            ClusterEvent::Bye {
                bizid: id("b"),
                epoch: 3
            }
        );
        assert!(serde_json::from_str::<ClusterEvent>(r#"{"t":"later","x":1}"#).is_err());
    }
}
