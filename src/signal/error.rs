//! The errors a request can end in, and the one place their wire codes
//! (`errorCode`) come from.

use std::fmt;

/// Why a request failed. `code()` is the HTTP-like `errorCode` of the wire,
/// `Display` the `errorReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Bad JSON shape, missing or ill-typed field, not an offer, bad SDP.
    Malformed(String),
    /// The peer has not joined the room it names.
    NotInRoom,
    /// The stream or subscription belongs to someone else.
    NotOwner,
    /// Access control said no (token missing, invalid, expired, for
    /// another room, or without the right to publish).
    Forbidden(&'static str),
    /// The room named does not exist.
    NoSuchRoom,
    /// No stream with that mid exists in the room (or on its SFU).
    NoSuchStream,
    /// No subscription with that sid exists.
    NoSuchSubscription,
    /// The method is not one of the protocol's; carries the name, cut
    /// short, to echo back.
    UnknownMethod(String),
    /// A join of a room the peer is already in.
    AlreadyJoined,
    /// The message was larger than the limit.
    TooLarge,
    /// Too many requests in a short time.
    RateLimited,
    /// A fixed-capacity table is full; names the bound.
    Full(&'static str),
    /// No SFU is connected.
    NoSfu,
    /// The SFU did not answer in time.
    SfuTimeout,
    /// The SFU rejected the request for a reason of its own.
    Sfu(String),
    /// What was asked needs the other nodes of the cluster, and the link
    /// to them is down (or it broke while the request was under way).
    ClusterUnavailable(String),
    /// The uid is already in that room through another node.
    JoinedElsewhere(crate::ids::NodeId),
    /// Another node refused the request (a subscription to a stream its
    /// SFU carries): its code and reason, passed on.
    Remote(u16, String),
}

impl RequestError {
    /// The wire `errorCode`. The table of PROTOCOL.md, "Errors", kept in this one match.
    pub fn code(&self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            RequestError::NotInRoom | RequestError::NotOwner | RequestError::Forbidden(_) => 403,
            RequestError::NoSuchRoom
            | RequestError::NoSuchStream
            | RequestError::NoSuchSubscription => 404,
            RequestError::UnknownMethod(_) => 405,
            RequestError::AlreadyJoined | RequestError::JoinedElsewhere(_) => 409,
            RequestError::TooLarge => 413,
            RequestError::RateLimited => 429,
            RequestError::Full(_) | RequestError::NoSfu | RequestError::ClusterUnavailable(_) => {
                503
            }
            RequestError::SfuTimeout => 504,
            RequestError::Remote(code, _) => *code,
            RequestError::Sfu(_) => 500,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Malformed(why) => write!(f, "malformed request: {why}"),
            RequestError::NotInRoom => f.write_str("not in that room"),
            RequestError::NotOwner => f.write_str("not the owner"),
            RequestError::Forbidden(why) => write!(f, "forbidden: {why}"),
            RequestError::NoSuchRoom => f.write_str("no such room"),
            RequestError::NoSuchStream => f.write_str("no such stream"),
            RequestError::NoSuchSubscription => f.write_str("no such subscription"),
            RequestError::UnknownMethod(m) => write!(f, "unknown method {m:?}"),
            RequestError::AlreadyJoined => f.write_str("already joined that room"),
            RequestError::TooLarge => f.write_str("message too large"),
            RequestError::RateLimited => f.write_str("too many requests"),
            RequestError::Full(bound) => write!(f, "capacity full: {bound}"),
            RequestError::NoSfu => f.write_str("no SFU available"),
            RequestError::SfuTimeout => f.write_str("the SFU did not answer in time"),
            RequestError::Sfu(why) => write!(f, "SFU error: {why}"),
            RequestError::ClusterUnavailable(why) => write!(f, "cluster unavailable: {why}"),
            RequestError::JoinedElsewhere(bizid) => {
                write!(f, "already joined that room through node {bizid}")
            }
            RequestError::Remote(_, reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for RequestError {}
