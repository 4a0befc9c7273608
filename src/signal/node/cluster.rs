//! The cluster as this node sees it: whether its link to Redis is up, and
//! the other signaling nodes it hears heartbeats from.
//!
//! The node does no I/O here either: the shell (`signal::cluster_link`)
//! says when the link comes and goes and hands over what arrives on it;
//! the node decides who is alive. A node is dead when nothing was heard
//! from it for [`NODE_TIMEOUT`] while our own link was up; one that comes
//! back with another `epoch` is a new process, and the old one is dead.

use super::{Node, Now};
use crate::ids::NodeId;
use crate::limits::{MAX_CLUSTER_NODES, NODE_TIMEOUT};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What one node tells the others on the cluster's event channel. Every
/// node hears every message, its own included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ClusterEvent {
    /// "I am alive", every heartbeat interval.
    Beat(Beat),
    /// "I am stopping": the others need not wait for the timeout.
    Bye { bizid: NodeId, epoch: u64 },
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
}

/// The cluster part of the node; absent on a node without one.
pub(super) struct Cluster {
    pub(super) epoch: u64,
    pub(super) link: Link,
    pub(super) nodes: heapless::Vec<ClusterNode, MAX_CLUSTER_NODES>,
}

/// What `/metrics` and `/healthz` show of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetrics {
    pub link: Link,
    /// Other nodes alive.
    pub nodes: usize,
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
        }
        log::info!("cluster link up; {} other nodes known", c.nodes.len());
    }

    /// The link to Redis is gone. Local rooms carry on; nobody is judged
    /// dead until it is back.
    pub fn cluster_down(&mut self, _now: Now, why: String) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.link = Link::Down { why };
        }
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
        };
        match c.nodes.push(node) {
            Ok(()) => log::info!("node {bizid} joined the cluster"),
            Err(_) => log::warn!(
                "node {bizid} ignored: this node tracks {MAX_CLUSTER_NODES} others at most"
            ),
        }
    }

    /// A node died or stopped: it is forgotten.
    fn node_gone(&mut self, bizid: &NodeId) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.nodes.retain(|n| &n.beat.bizid != bizid);
        }
    }

    /// This node's heartbeat.
    pub fn beat(&self) -> Option<Beat> {
        let c = self.cluster.as_deref()?;
        let live_sfu = self.sfus.iter().any(|s| s.id.is_some());
        let free = match live_sfu {
            true => self.limits.streams.saturating_sub(self.streams.len()),
            false => 0,
        };
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
        c.nodes.iter().map(|n| n.last_heard + NODE_TIMEOUT).min()
    }

    /// Forgets the nodes not heard from in time (only while the link is up).
    pub(super) fn expire_nodes(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        if c.link != Link::Up {
            return;
        }
        let dead: Vec<NodeId> = c
            .nodes
            .iter()
            .filter(|n| now.saturating_duration_since(n.last_heard) >= NODE_TIMEOUT)
            .map(|n| n.beat.bizid.clone())
            .collect();
        for bizid in dead {
            log::warn!(
                "node {bizid}: no heartbeat for {} s, taken as dead",
                NODE_TIMEOUT.as_secs()
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
        // Back up: b gets a whole timeout from now.
        node.cluster_up(now);
        now.mono += NODE_TIMEOUT - Duration::from_millis(1);
        node.tick(now);
        assert_eq!(others(&node), 1);
        now.mono += Duration::from_millis(1);
        node.tick(now);
        assert_eq!(others(&node), 0);
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
