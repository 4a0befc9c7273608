//! What goes out to clients: responses, notifications to a room, and the
//! shapes they carry.

use super::cluster::{ClusterOp, StreamEntry};
use super::tables::Stream;
use super::{ConnId, Effect, Node};
use crate::ids::{PeerId, RoomId};
use crate::signal::error::RequestError;
use crate::signal::protoo::{self, RequestId};
use std::rc::Rc;

/// The `stream-add` notification of a stream.
pub(super) fn stream_add(entry: &StreamEntry) -> String {
    protoo::notification(
        "stream-add",
        &protoo::StreamAdd {
            rid: &entry.rid,
            uid: &entry.uid,
            mid: &entry.mid,
            sfuid: &entry.sfuid,
            minfo: &entry.minfo,
        },
    )
}

impl Node {
    /// A stream as a join answer lists it. Its SFU is up while it exists
    /// (`sfu_down` removes its streams); the fallback to this node's id only
    /// keeps the answer well-formed.
    /// A publish is answered (`sdp`, for the client on `conn`) and its
    /// stream announced: the room hears `stream-add`, the cluster learns it.
    pub(super) fn announce_stream(
        &mut self,
        conn: ConnId,
        req: RequestId,
        entry: &StreamEntry,
        sdp: &str,
    ) {
        let answer = protoo::ok_response(
            req,
            &protoo::PublishAnswer {
                jsep: protoo::AnswerJsep {
                    kind: "answer",
                    sdp,
                },
                mid: &entry.mid,
                sfuid: &entry.sfuid,
            },
        );
        self.send(conn, answer);
        self.notify_room(&entry.rid, Some(&entry.uid), stream_add(entry));
        self.cluster_op(ClusterOp::Add(entry.clone()));
    }

    pub(super) fn pub_info(&self, s: &Stream) -> protoo::PubInfo {
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

    /// Queues a text frame for one connection.
    pub(super) fn send(&mut self, conn: ConnId, text: String) {
        self.effects.push_back(Effect::Send {
            conn,
            text: text.into(),
        });
    }

    /// Answers request `id`: the response text, or an error response
    /// (counted by code for `/metrics`).
    pub(super) fn reply(
        &mut self,
        conn: ConnId,
        id: RequestId,
        result: Result<String, RequestError>,
    ) {
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

    /// Sends one notification to every member of `rid` but `except`. The
    /// text is built once and shared by every copy.
    pub(super) fn notify_room(&mut self, rid: &RoomId, except: Option<&PeerId>, text: String) {
        let text: Rc<str> = text.into();
        // Every member gets one copy: no need for `members`' join order.
        for p in self.peers.iter() {
            if p.in_room(rid) && Some(&p.uid) != except {
                self.effects.push_back(Effect::Send {
                    conn: p.conn,
                    text: text.clone(),
                });
            }
        }
    }
}
