//! The protoo-style JSON codec of the seed protocol: requests in, responses
//! and notifications out. No I/O; the shapes here are the wire contract.

use super::error::RequestError;
use crate::ids::{Mid, NodeId, PeerId, RoomId, Sid};
use crate::ipc::LayerPin;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request id as protoo sends it (a JSON integer, and echoed back as
/// the same bare number: `transparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a client may publish, passed through to others unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minfo {
    /// Whether the stream carries audio.
    pub audio: bool,
    /// Whether the stream carries video.
    pub video: bool,
    /// The application's kind of audio; opaque to wren.
    pub audiotype: i64,
    /// The application's kind of video (camera, screen...); opaque to
    /// wren.
    pub videotype: i64,
}

/// A decoded request of the seed protocol: one variant per `method`,
/// with the fields of its `data`. Every request but `join` names a room
/// the peer has joined (else 403).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `join`: enter room `rid`. Answered with the peers and streams
    /// already there; the others get `peer-join`.
    Join {
        /// The room to enter (made if it does not exist).
        rid: RoomId,
        /// A room token (an extension of the seed, for nodes that require
        /// tokens; it may also come with the WebSocket URL).
        token: Option<String>,
    },
    /// `leave`: leave room `rid`. The peer's streams there end
    /// (`stream-remove`), its subscriptions there close, and the others
    /// get `peer-leave`.
    Leave {
        /// The room to leave.
        rid: RoomId,
    },
    /// `keepalive`: proof of life and nothing else (any text frame, or a
    /// pong, proves it too).
    Keepalive {
        /// A room the peer is in.
        rid: RoomId,
    },
    /// `publish`: start a stream in room `rid`. Answered with the SFU's
    /// SDP answer and the stream's `mid`; the others get `stream-add`.
    Publish {
        /// The room to publish in.
        rid: RoomId,
        /// The SDP offer (`jsep.sdp`, of `jsep.type` `"offer"`).
        offer: String,
        /// What the stream carries, passed on in `stream-add`.
        minfo: Minfo,
    },
    /// `unpublish`: end one of the peer's own streams; the others get
    /// `stream-remove`.
    Unpublish {
        /// The stream's room.
        rid: RoomId,
        /// The stream to end.
        mid: Mid,
    },
    /// `subscribe`: receive stream `mid`. Answered with the SFU's SDP
    /// answer and the subscription's `sid`.
    Subscribe {
        /// The stream's room.
        rid: RoomId,
        /// The stream to receive.
        mid: Mid,
        /// The SDP offer (`jsep.sdp`, of `jsep.type` `"offer"`).
        offer: String,
    },
    /// `unsubscribe`: close one of the peer's own subscriptions.
    Unsubscribe {
        /// The stream's room.
        rid: RoomId,
        /// The stream subscribed to.
        mid: Mid,
        /// The subscription to close.
        sid: Sid,
    },
    /// `layer` (a wren extension): pin the highest simulcast layer one of
    /// the peer's own subscriptions receives, or unpin it.
    Layer {
        /// The stream's room.
        rid: RoomId,
        /// The stream subscribed to.
        mid: Mid,
        /// The subscription.
        sid: Sid,
        /// The highest layer wanted; None (`"auto"`): what the link carries.
        layer: Option<LayerPin>,
    },
    /// `broadcast`: relay `data` to the room's other peers, as a
    /// `broadcast` notification naming the sender.
    Broadcast {
        /// The room to relay to.
        rid: RoomId,
        /// Any JSON, passed on unchanged.
        data: Value,
    },
}

impl Request {
    /// The room the request names (every request names one).
    pub fn rid(&self) -> &RoomId {
        match self {
            Request::Join { rid, .. }
            | Request::Leave { rid }
            | Request::Keepalive { rid }
            | Request::Publish { rid, .. }
            | Request::Unpublish { rid, .. }
            | Request::Subscribe { rid, .. }
            | Request::Unsubscribe { rid, .. }
            | Request::Layer { rid, .. }
            | Request::Broadcast { rid, .. } => rid,
        }
    }
}

/// The outcome of decoding one text frame.
#[derive(Debug)]
pub enum Incoming {
    /// A well-formed request.
    Request(RequestId, Box<Request>),
    /// A request whose id could be read but whose body is wrong: answer it.
    Invalid(RequestId, RequestError),
    /// Something we do not answer: a protoo response or notification from
    /// the client (we send no requests, so there is nothing to match).
    Ignored,
    /// Not a protoo message at all, or a request without a readable id:
    /// no answer possible; counts as a protocol violation.
    Garbage(&'static str),
}

#[derive(Deserialize)]
struct Jsep {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

impl Jsep {
    fn into_offer(self) -> Result<String, RequestError> {
        if self.kind != "offer" {
            return Err(RequestError::Malformed(format!(
                "jsep.type must be \"offer\", not {:?}",
                self.kind
            )));
        }
        if !self.sdp.starts_with("v=0") {
            return Err(RequestError::Malformed("jsep.sdp is not an SDP".into()));
        }
        Ok(self.sdp)
    }
}

// Typed request bodies. `sfuid` is accepted and ignored: the node knows
// where each stream lives (PROTOCOL.md, "Data model").
#[derive(Deserialize)]
struct RoomBody {
    rid: RoomId,
}
#[derive(Deserialize)]
struct JoinBody {
    rid: RoomId,
    token: Option<String>,
}
#[derive(Deserialize)]
struct PublishBody {
    rid: RoomId,
    jsep: Jsep,
    minfo: Minfo,
}
#[derive(Deserialize)]
struct UnpublishBody {
    rid: RoomId,
    mid: Mid,
    #[serde(rename = "sfuid")]
    _sfuid: Option<Value>,
}
#[derive(Deserialize)]
struct SubscribeBody {
    rid: RoomId,
    mid: Mid,
    jsep: Jsep,
    #[serde(rename = "sfuid")]
    _sfuid: Option<Value>,
}
#[derive(Deserialize)]
struct UnsubscribeBody {
    rid: RoomId,
    mid: Mid,
    sid: Sid,
    #[serde(rename = "sfuid")]
    _sfuid: Option<Value>,
}
#[derive(Deserialize)]
struct LayerBody {
    rid: RoomId,
    mid: Mid,
    sid: Sid,
    layer: LayerName,
    #[serde(rename = "sfuid")]
    _sfuid: Option<Value>,
}
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LayerName {
    Low,
    Medium,
    High,
    Auto,
}
#[derive(Deserialize)]
struct BroadcastBody {
    rid: RoomId,
    data: Value,
}

fn body<T: serde::de::DeserializeOwned>(data: Value) -> Result<T, RequestError> {
    serde_json::from_value(data).map_err(|e| RequestError::Malformed(e.to_string()))
}

fn decode_request(method: &str, data: Value) -> Result<Request, RequestError> {
    Ok(match method {
        "join" => {
            let b: JoinBody = body(data)?;
            Request::Join {
                rid: b.rid,
                token: b.token,
            }
        }
        "leave" => Request::Leave {
            rid: body::<RoomBody>(data)?.rid,
        },
        "keepalive" => Request::Keepalive {
            rid: body::<RoomBody>(data)?.rid,
        },
        "publish" => {
            let b: PublishBody = body(data)?;
            Request::Publish {
                rid: b.rid,
                offer: b.jsep.into_offer()?,
                minfo: b.minfo,
            }
        }
        "unpublish" => {
            let b: UnpublishBody = body(data)?;
            Request::Unpublish {
                rid: b.rid,
                mid: b.mid,
            }
        }
        "subscribe" => {
            let b: SubscribeBody = body(data)?;
            Request::Subscribe {
                rid: b.rid,
                mid: b.mid,
                offer: b.jsep.into_offer()?,
            }
        }
        "unsubscribe" => {
            let b: UnsubscribeBody = body(data)?;
            Request::Unsubscribe {
                rid: b.rid,
                mid: b.mid,
                sid: b.sid,
            }
        }
        "layer" => {
            let b: LayerBody = body(data)?;
            Request::Layer {
                rid: b.rid,
                mid: b.mid,
                sid: b.sid,
                layer: match b.layer {
                    LayerName::Low => Some(LayerPin::Low),
                    LayerName::Medium => Some(LayerPin::Medium),
                    LayerName::High => Some(LayerPin::High),
                    LayerName::Auto => None,
                },
            }
        }
        "broadcast" => {
            let b: BroadcastBody = body(data)?;
            Request::Broadcast {
                rid: b.rid,
                data: b.data,
            }
        }
        other => {
            // Echo a bounded, printable part of the name only.
            let name: String = other.chars().take(32).collect();
            return Err(RequestError::UnknownMethod(name));
        }
    })
}

/// Decodes one text frame from a client. A frame over `max_len` bytes is
/// answered 413 if its request id can be read.
pub fn decode_bounded(text: &str, max_len: usize) -> Incoming {
    if text.len() <= max_len {
        return decode(text);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(msg)) if msg.get("request") == Some(&Value::Bool(true)) => {
            match msg.get("id").and_then(Value::as_u64).map(RequestId) {
                Some(id) => Incoming::Invalid(id, RequestError::TooLarge),
                None => Incoming::Garbage("request without a readable id"),
            }
        }
        _ => Incoming::Garbage("oversized frame"),
    }
}

/// Decodes one text frame from a client.
pub(crate) fn decode(text: &str) -> Incoming {
    let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
        return Incoming::Garbage("not a JSON object");
    };
    if msg.get("response") == Some(&Value::Bool(true))
        || msg.get("notification") == Some(&Value::Bool(true))
    {
        return Incoming::Ignored;
    }
    if msg.get("request") != Some(&Value::Bool(true)) {
        return Incoming::Garbage("neither request, response nor notification");
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64).map(RequestId) else {
        return Incoming::Garbage("request without a readable id");
    };
    let Some(Value::String(method)) = msg.remove("method") else {
        return Incoming::Invalid(
            id,
            RequestError::Malformed("method must be a string".into()),
        );
    };
    let data = match msg.remove("data") {
        Some(d @ Value::Object(_)) => d,
        _ => {
            return Incoming::Invalid(id, RequestError::Malformed("data must be an object".into()))
        }
    };
    match decode_request(&method, data) {
        Ok(req) => Incoming::Request(id, Box::new(req)),
        Err(e) => Incoming::Invalid(id, e),
    }
}

// ----- outgoing -----

#[derive(Serialize)]
struct OkResponse<'a, T: Serialize> {
    response: bool,
    id: RequestId,
    ok: bool,
    data: &'a T,
}

#[derive(Serialize)]
struct ErrResponse<'a> {
    response: bool,
    id: RequestId,
    ok: bool,
    #[serde(rename = "errorCode")]
    error_code: u16,
    #[serde(rename = "errorReason")]
    error_reason: &'a str,
}

#[derive(Serialize)]
struct Notification<'a, T: Serialize> {
    notification: bool,
    method: &'a str,
    data: &'a T,
}

/// An empty `data: {}`.
#[derive(Serialize)]
pub(crate) struct Empty {}

/// A success response to request `id`, with `data`.
pub(crate) fn ok_response<T: Serialize>(id: RequestId, data: &T) -> String {
    encode(&OkResponse {
        response: true,
        id,
        ok: true,
        data,
    })
}

/// A failure response to request `id`: `errorCode` and `errorReason`
/// from `err`.
pub(crate) fn error_response(id: RequestId, err: &RequestError) -> String {
    encode(&ErrResponse {
        response: true,
        id,
        ok: false,
        error_code: err.code(),
        error_reason: &err.to_string(),
    })
}

/// A notification `method` with `data` (the server sends no requests).
pub(crate) fn notification<T: Serialize>(method: &str, data: &T) -> String {
    encode(&Notification {
        notification: true,
        method,
        data,
    })
}

fn encode<T: Serialize>(v: &T) -> String {
    // Our own types with string keys only: serialization cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

// Response and notification bodies, field for field as in the seed.

/// A stream in a `join` answer's `pubs`.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct PubInfo {
    pub mid: Mid,
    pub minfo: Minfo,
    pub rid: RoomId,
    pub sfuid: NodeId,
    pub uid: PeerId,
}

/// A peer in a `join` answer's `users`.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct UserInfo {
    pub bizid: NodeId,
    pub rid: RoomId,
    pub uid: PeerId,
}

/// The `data` of a `join` answer: who and what is in the room already.
#[derive(Serialize)]
pub(crate) struct JoinAnswer {
    pub pubs: Vec<PubInfo>,
    pub users: Vec<UserInfo>,
}

/// `jsep` of a publish or subscribe answer: `{"type":"answer","sdp":…}`.
#[derive(Serialize)]
pub(crate) struct AnswerJsep<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sdp: &'a str,
}

/// The `data` of a `publish` answer.
#[derive(Serialize)]
pub(crate) struct PublishAnswer<'a> {
    pub jsep: AnswerJsep<'a>,
    pub mid: &'a Mid,
    pub sfuid: &'a NodeId,
}

/// The `data` of a `subscribe` answer.
#[derive(Serialize)]
pub(crate) struct SubscribeAnswer<'a> {
    pub jsep: AnswerJsep<'a>,
    pub sid: &'a Sid,
}

impl SubscribeAnswer<'_> {
    /// The whole response to request `id`: the SFU's answer `sdp` for
    /// subscription `sid`.
    pub(crate) fn response(id: RequestId, sdp: &str, sid: &Sid) -> String {
        let jsep = AnswerJsep {
            kind: "answer",
            sdp,
        };
        ok_response(id, &SubscribeAnswer { jsep, sid })
    }
}

/// The `data` of a `peer-join` notification.
#[derive(Serialize)]
pub(crate) struct PeerJoin<'a> {
    pub rid: &'a RoomId,
    pub uid: &'a PeerId,
    pub bizid: &'a NodeId,
}

/// The `data` of a `peer-leave` notification.
#[derive(Serialize)]
pub(crate) struct PeerLeave<'a> {
    pub rid: &'a RoomId,
    pub uid: &'a PeerId,
}

/// The `data` of a `stream-add` notification.
#[derive(Serialize)]
pub(crate) struct StreamAdd<'a> {
    pub rid: &'a RoomId,
    pub uid: &'a PeerId,
    pub mid: &'a Mid,
    pub sfuid: &'a NodeId,
    pub minfo: &'a Minfo,
}

/// The `data` of a `stream-remove` notification.
#[derive(Serialize)]
pub(crate) struct StreamRemove<'a> {
    pub rid: &'a RoomId,
    pub uid: &'a PeerId,
    pub mid: &'a Mid,
}

/// The `data` of a `broadcast` notification: the sender and its `data`.
#[derive(Serialize)]
pub(crate) struct BroadcastNote<'a> {
    pub rid: &'a RoomId,
    pub uid: &'a PeerId,
    pub data: &'a Value,
}

impl StreamRemove<'_> {
    /// The whole notification.
    pub(crate) fn note(&self) -> String {
        notification("stream-remove", self)
    }
}

impl BroadcastNote<'_> {
    /// The whole notification.
    pub(crate) fn note(&self) -> String {
        notification("broadcast", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_code(text: &str) -> (u64, u16) {
        match decode(text) {
            Incoming::Invalid(id, e) => (id.0, e.code()),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn decodes_the_seed_join() {
        let m = decode(r#"{"request":true,"id":1928012,"method":"join","data":{"rid":"777777"}}"#);
        let Incoming::Request(RequestId(1928012), req) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            *req,
            Request::Join {
                rid: RoomId::parse("777777").unwrap(),
                token: None
            }
        );
    }

    #[test]
    fn decodes_publish_with_minfo_and_offer() {
        let m = decode(
            r#"{"request":true,"id":3764139,"method":"publish","data":{"rid":"room",
            "jsep":{"type":"offer","sdp":"v=0\r\n"},
            "minfo":{"audio":true,"video":true,"audiotype":0,"videotype":0}}}"#,
        );
        let Incoming::Request(_, req) = m else {
            panic!("{m:?}")
        };
        let Request::Publish { minfo, offer, .. } = *req else {
            panic!("{req:?}")
        };
        assert!(minfo.audio && minfo.video);
        assert_eq!(offer, "v=0\r\n");
    }

    #[test]
    fn subscribe_accepts_optional_sfuid() {
        let m = decode(
            r#"{"request":true,"id":5,"method":"subscribe","data":{"rid":"room",
            "mid":"a#123456","jsep":{"type":"offer","sdp":"v=0"},"sfuid":"shenzhen-sfu-1"}}"#,
        );
        assert!(
            matches!(m, Incoming::Request(RequestId(5), r) if matches!(*r, Request::Subscribe { .. }))
        );
    }

    #[test]
    fn wrong_shapes_are_400_with_the_id() {
        assert_eq!(
            invalid_code(r#"{"request":true,"id":7,"method":"join","data":{}}"#),
            (7, 400)
        );
        assert_eq!(
            invalid_code(r#"{"request":true,"id":7,"method":"join","data":{"rid":5}}"#),
            (7, 400)
        );
        assert_eq!(
            invalid_code(r#"{"request":true,"id":7,"method":"join","data":{"rid":"a b"}}"#),
            (7, 400)
        );
        assert_eq!(
            invalid_code(r#"{"request":true,"id":7,"method":"join"}"#),
            (7, 400)
        );
        assert_eq!(
            invalid_code(
                r#"{"request":true,"id":8,"method":"publish","data":{"rid":"r",
                "jsep":{"type":"answer","sdp":"v=0"},"minfo":{"audio":true,"video":true,"audiotype":0,"videotype":0}}}"#
            ),
            (8, 400)
        );
    }

    #[test]
    fn unknown_method_is_405() {
        assert_eq!(
            invalid_code(r#"{"request":true,"id":9,"method":"dance","data":{}}"#),
            (9, 405)
        );
    }

    #[test]
    fn unreadable_ids_get_no_answer() {
        assert!(matches!(decode("nope"), Incoming::Garbage(_)));
        assert!(matches!(decode("[1]"), Incoming::Garbage(_)));
        assert!(matches!(
            decode(r#"{"request":true,"id":"x","method":"join","data":{"rid":"a"}}"#),
            Incoming::Garbage(_)
        ));
        assert!(matches!(
            decode(r#"{"request":true,"id":-1,"method":"join","data":{"rid":"a"}}"#),
            Incoming::Garbage(_)
        ));
        assert!(matches!(
            decode(r#"{"response":true,"id":1,"ok":true,"data":{}}"#),
            Incoming::Ignored
        ));
    }

    /// Property: the decoder is total. Whatever the text, it returns, and
    /// anything it answers carries the id the text had. With the real
    /// limit, so that mutations reach the request parser (a small limit
    /// would turn most of them into 413s); one mutated seed in a thousand
    /// is padded past the limit to keep the 413 path under test too.
    #[test]
    fn the_decoder_never_panics_on_random_or_mutated_input() {
        let limit = crate::limits::MAX_MESSAGE_BYTES;
        let seeds = [
            r#"{"request":true,"id":1,"method":"join","data":{"rid":"a"}}"#,
            r#"{"request":true,"id":2,"method":"publish","data":{"rid":"r","jsep":{"type":"offer","sdp":"v=0"},"minfo":{"audio":true,"video":false,"audiotype":0,"videotype":0}}}"#,
            r#"{"request":true,"id":3,"method":"unsubscribe","data":{"rid":"r","mid":"a#1","sid":"b#2","sfuid":"s"}}"#,
            r#"{"request":true,"id":4,"method":"broadcast","data":{"rid":"r","data":[1,{"x":null}]}}"#,
        ];
        let oversized = seeds[3].replace("null", &format!("\"{}\"", "x".repeat(limit)));
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut mutated, mut parsed, mut requests, mut too_large) = (0, 0, 0, 0);
        for round in 0..100_000 {
            // Random text, a mutated seed, or (1 in 1000) a mutated oversized one.
            let (text, is_seed): (String, bool) = if round % 4 == 0 {
                ((0..rng.usize(..80)).map(|_| rng.char(..)).collect(), false)
            } else {
                let seed = match round % 1000 {
                    1 => oversized.as_str(),
                    _ => seeds[rng.usize(..seeds.len())],
                };
                let mut c: Vec<char> = seed.chars().collect();
                for _ in 0..rng.usize(1..5) {
                    let i = rng.usize(..=c.len());
                    match rng.u8(..3) {
                        0 if i < c.len() => c[i] = rng.char(' '..='~'),
                        1 if i < c.len() => {
                            c.remove(i);
                        }
                        _ => c.insert(i, rng.char(..)),
                    }
                }
                (c.into_iter().collect(), round % 1000 != 1)
            };
            mutated += usize::from(is_seed);
            let fits = text.len() <= limit;
            let answered = match decode_bounded(&text, limit) {
                Incoming::Invalid(id, RequestError::TooLarge) => {
                    assert!(!fits, "{} bytes fit the limit", text.len());
                    too_large += 1;
                    id
                }
                Incoming::Request(id, _) | Incoming::Invalid(id, _) => {
                    assert!(fits, "{} bytes got past the limit", text.len());
                    parsed += usize::from(is_seed);
                    id
                }
                Incoming::Ignored | Incoming::Garbage(_) => continue,
            };
            let v: Value = serde_json::from_str(&text).expect("answered text is JSON");
            assert_eq!(v["id"].as_u64(), Some(answered.0));
            if is_seed && fits && v["method"].is_string() && v["data"].is_object() {
                requests += 1;
            }
        }
        println!("{mutated} mutated: {parsed} parsed with an id ({requests} reached the method's decoder); {too_large} too large");
        // Mutations reach the parser, not just the size check: most
        // answered texts are not 413s, and a good share of the mutated
        // seeds get as far as a method's own decoder.
        assert!(
            parsed >= 10 * too_large,
            "{parsed} parsed, {too_large} refused as too large"
        );
        assert!(
            parsed * 8 >= mutated,
            "only {parsed} of {mutated} mutated seeds reached the parser"
        );
        assert!(
            requests * 16 >= mutated,
            "only {requests} of {mutated} reached a method's decoder"
        );
        assert!(too_large > 0, "the 413 path was never taken");
    }

    #[test]
    fn oversized_requests_are_413_when_their_id_is_readable() {
        let big = format!(
            r#"{{"request":true,"id":5,"method":"broadcast","data":{{"rid":"r","data":"{}"}}}}"#,
            "x".repeat(100)
        );
        assert!(matches!(
            decode_bounded(&big, 1000),
            Incoming::Request(RequestId(5), _)
        ));
        match decode_bounded(&big, 50) {
            Incoming::Invalid(RequestId(5), e) => assert_eq!(e.code(), 413),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_bounded(&"x".repeat(100), 50),
            Incoming::Garbage(_)
        ));
    }

    #[test]
    fn responses_have_the_seed_shape() {
        let ok = ok_response(RequestId(3), &Empty {});
        assert_eq!(ok, r#"{"response":true,"id":3,"ok":true,"data":{}}"#);
        let err = error_response(RequestId(4), &RequestError::NotInRoom);
        assert_eq!(
            err,
            r#"{"response":true,"id":4,"ok":false,"errorCode":403,"errorReason":"not in that room"}"#
        );
    }
}
