//! The node's cluster operations as Redis commands (Lua scripts, loaded
//! once per connection and called by their SHA-1), and Redis's answers
//! back as the node's [`ClusterAnswer`]s.

use super::{node_channel, EVENTS};
use crate::ids::{NodeId, PeerId, RoomId};
use crate::signal::node::{
    ClusterAnswer, ClusterCall, ClusterEvent, ClusterOp, MemberEntry, RoomSnapshot, StreamEntry,
};
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Value};
use serde::{Deserialize, Serialize};

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// The scripts, each run after the prelude.
#[derive(Clone, Copy)]
enum Script {
    Join,
    Leave,
    Add,
    Remove,
    Sync,
    Snapshot,
    Purge,
}

const SCRIPTS: [(Script, &str); 7] = [
    (Script::Join, include_str!("lua/join.lua")),
    (Script::Leave, include_str!("lua/leave.lua")),
    (Script::Add, include_str!("lua/add.lua")),
    (Script::Remove, include_str!("lua/remove.lua")),
    (Script::Sync, include_str!("lua/sync.lua")),
    (Script::Snapshot, include_str!("lua/snapshot.lua")),
    (Script::Purge, include_str!("lua/purge.lua")),
];

/// The SHA-1s Redis gave the scripts on this connection.
pub struct Scripts([String; SCRIPTS.len()]);

impl Scripts {
    /// Loads every script (`SCRIPT LOAD`, one round trip). A Redis that
    /// restarted has forgotten them, but then the connection is new too.
    pub async fn load(con: &mut MultiplexedConnection) -> Result<Scripts, String> {
        let mut pipe = redis::pipe();
        for (_, body) in SCRIPTS {
            pipe.cmd("SCRIPT")
                .arg("LOAD")
                .arg(format!("{PRELUDE}\n{body}"));
        }
        let shas: Vec<String> = pipe
            .query_async(con)
            .await
            .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        let shas: [String; SCRIPTS.len()] = shas
            .try_into()
            .map_err(|_| "SCRIPT LOAD: wrong number of answers".to_string())?;
        Ok(Scripts(shas))
    }

    /// Starts a call of `script` in `pipe` (its arguments follow).
    fn call<'a>(&self, pipe: &'a mut Pipeline, script: Script) -> &'a mut Pipeline {
        pipe.cmd("EVALSHA").arg(&self.0[script as usize]).arg(0)
    }
}

/// A member's value in a room's hash.
#[derive(Serialize, Deserialize)]
struct MemberValue {
    bizid: NodeId,
    order: u64,
}

/// A join's order as the node keeps it (see [`MemberEntry::order`]).
fn order(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A room as `sync.lua` takes it.
#[derive(Serialize)]
struct SyncRoom<'a> {
    rid: &'a RoomId,
    uids: Vec<&'a PeerId>,
    /// Each stream's entry, as the JSON text stored in Redis.
    streams: Vec<String>,
}

fn json<T: Serialize>(v: &T) -> String {
    // Our own types, all of them serializable.
    serde_json::to_string(v).expect("serializable")
}

/// Adds the commands of one operation to a pipeline (one command each).
pub fn add(pipe: &mut Pipeline, scripts: &Scripts, op: &ClusterOp) {
    match op {
        ClusterOp::Join {
            rid,
            uid,
            bizid,
            cap,
            ..
        } => {
            scripts
                .call(pipe, Script::Join)
                .arg(rid.as_str())
                .arg(uid.as_str())
                .arg(bizid.as_str())
                .arg(*cap);
        }
        ClusterOp::Leave(p) => {
            let ev = ClusterEvent::Leave(p.clone());
            scripts
                .call(pipe, Script::Leave)
                .arg(p.rid.as_str())
                .arg(p.uid.as_str())
                .arg(p.bizid.as_str())
                .arg(json(&ev));
        }
        ClusterOp::Add(entry) => {
            let ev = ClusterEvent::Add(entry.clone());
            scripts
                .call(pipe, Script::Add)
                .arg(entry.rid.as_str())
                .arg(entry.mid.as_str())
                .arg(entry.bizid.as_str())
                .arg(json(entry))
                .arg(json(&ev));
        }
        ClusterOp::Remove(r) => {
            let ev = ClusterEvent::Remove(r.clone());
            scripts
                .call(pipe, Script::Remove)
                .arg(r.rid.as_str())
                .arg(r.mid.as_str())
                .arg(r.bizid.as_str())
                .arg(json(&ev));
        }
        ClusterOp::Publish(event) => {
            pipe.cmd("PUBLISH").arg(EVENTS).arg(event.as_bytes());
        }
        ClusterOp::Sync { bizid, rooms, .. } => {
            let state: Vec<SyncRoom> = rooms
                .iter()
                .map(|r| SyncRoom {
                    rid: &r.rid,
                    uids: r.members.iter().map(|m| &m.uid).collect(),
                    streams: r.streams.iter().map(json).collect(),
                })
                .collect();
            scripts
                .call(pipe, Script::Sync)
                .arg(bizid.as_str())
                .arg(json(&state));
        }
        ClusterOp::Snapshot { rids, .. } => {
            let cmd = scripts.call(pipe, Script::Snapshot);
            for rid in rids {
                cmd.arg(rid.as_str());
            }
        }
        ClusterOp::Send { to, msg } => {
            pipe.cmd("PUBLISH").arg(node_channel(to)).arg(json(msg));
        }
        ClusterOp::Purge { bizid } => {
            scripts.call(pipe, Script::Purge).arg(bizid.as_str());
        }
    }
}

/// The node's answer to an operation it waits for (None for the others),
/// from Redis's reply.
pub fn answer(op: &ClusterOp, reply: Value) -> Option<(ClusterCall, ClusterAnswer)> {
    let (call, parsed) = match op {
        ClusterOp::Join { call, rid, .. } => (*call, join_answer(rid, &reply)),
        ClusterOp::Sync { call, .. } | ClusterOp::Snapshot { call, .. } => {
            (*call, rooms(&reply).map(ClusterAnswer::Rooms))
        }
        _ => return None,
    };
    let answer = parsed.unwrap_or_else(|| {
        log::warn!("cluster: unexpected answer from Redis: {reply:?}");
        ClusterAnswer::Failed("unexpected answer from Redis".into())
    });
    Some((call, answer))
}

/// The bytes of a string reply.
fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn join_answer(rid: &RoomId, reply: &Value) -> Option<ClusterAnswer> {
    let parts = items(reply)?;
    match text(parts.first()?)? {
        b"ok" => {
            let order = order(int(parts.get(1)?)?);
            let room = room(rid.clone(), parts.get(2)?, parts.get(3)?)?;
            Some(ClusterAnswer::Joined { order, room })
        }
        b"full" => Some(ClusterAnswer::Full),
        b"taken" => {
            let bizid = std::str::from_utf8(text(parts.get(1)?)?).ok()?;
            Some(ClusterAnswer::Taken(NodeId::parse(bizid)?))
        }
        _ => None,
    }
}

/// `{rid, members, streams}` triples.
fn rooms(reply: &Value) -> Option<Vec<RoomSnapshot>> {
    items(reply)?
        .iter()
        .map(|r| {
            let parts = items(r)?;
            let rid = RoomId::parse(std::str::from_utf8(text(parts.first()?)?).ok()?)?;
            room(rid, parts.get(1)?, parts.get(2)?)
        })
        .collect()
}

/// A room from its members (`uid, json, ...`) and streams (`json, ...`).
/// An entry that does not parse (written by a wren of another version) is
/// left out rather than failing the room.
fn room(rid: RoomId, members: &Value, streams: &Value) -> Option<RoomSnapshot> {
    let members = items(members)?
        .chunks(2)
        .filter_map(|pair| {
            let uid = PeerId::parse(std::str::from_utf8(text(pair.first()?)?).ok()?)?;
            let v: MemberValue = serde_json::from_slice(text(pair.get(1)?)?).ok()?;
            Some(MemberEntry {
                uid,
                bizid: v.bizid,
                order: order(v.order),
            })
        })
        .collect();
    let streams = items(streams)?
        .iter()
        .filter_map(|s| serde_json::from_slice::<StreamEntry>(text(s)?).ok())
        .collect();
    Some(RoomSnapshot {
        rid,
        members,
        streams,
    })
}
