//! The control channel between a signaling node and an SFU process: the
//! messages both roles share, and their framing on a Unix stream socket.
//!
//! Framing: a 4-byte big-endian length, then that many bytes of JSON. The
//! SFU listens; the signaling node connects (and reconnects). The SFU serves
//! one control connection at a time: its sessions belong to that
//! connection, so when a signaling node goes away (or a new one takes over)
//! they are dropped and no orphan lingers.

use crate::ids::{Mid, NodeId, Sid};
use crate::limits::MAX_IPC_FRAME_BYTES;
use serde::{Deserialize, Serialize};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::io;

/// Matches an SFU's answer to the request that asked for it. On the wire
/// it is the bare JSON number it always was (`transparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The highest simulcast layer a subscriber wants (the `layer` request,
/// a wren extension of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerPin {
    /// The lowest layer (a thumbnail).
    Low,
    /// The middle layer (the lowest of two).
    Medium,
    /// The top layer.
    High,
}

/// Signaling node → SFU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ToSfu {
    /// Answer a publisher's offer; the stream will be known as `mid`.
    Publish {
        /// Echoed by the `answer` or `failed` that settles the call.
        call: CallId,
        /// The stream's id, chosen by the node.
        mid: Mid,
        /// The publisher's SDP offer, as the client sent it.
        offer: String,
    },
    /// Answer a subscriber's offer with the tracks of stream `mid`.
    Subscribe {
        /// Echoed by the `answer` or `failed` that settles the call.
        call: CallId,
        /// The subscription's id, chosen by the node.
        sid: Sid,
        /// The stream to receive; it lives on this SFU.
        mid: Mid,
        /// The subscriber's SDP offer, as the client sent it.
        offer: String,
    },
    /// Pull stream `mid` from another board's SFU (a relay): this SFU
    /// makes the offer, as a full-ICE client receiving audio and/or video
    /// on a UDP port of its own; the relay is then a local publisher of
    /// `mid`. The `answer` settles the call with the offer, for the other
    /// board's SFU; `Unpublish` ends the relay.
    RelayOffer {
        /// Echoed by the `answer` (carrying the offer) or `failed`.
        call: CallId,
        /// The stream, as the other board knows it.
        mid: Mid,
        /// Whether to receive audio.
        audio: bool,
        /// Whether to receive video.
        video: bool,
    },
    /// The other board's answer to a relay's offer. If it cannot be used,
    /// the relay ends with `stream-closed`.
    RelayAnswer {
        /// The relayed stream.
        mid: Mid,
        /// The other board's SDP answer.
        answer: String,
    },
    /// Stop a stream and every subscription to it.
    Unpublish {
        /// The stream to stop.
        mid: Mid,
    },
    /// Stop one subscription.
    Unsubscribe {
        /// The subscription to stop.
        sid: Sid,
    },
    /// Pin the highest simulcast layer one subscription receives (None:
    /// whatever its link carries).
    PinLayer {
        /// The subscription.
        sid: Sid,
        /// The highest layer it wants.
        layer: Option<LayerPin>,
    },
}

/// SFU → signaling node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FromSfu {
    /// First message on every control connection.
    Hello {
        /// The SFU's id: the `sfuid` clients see on its streams.
        sfuid: NodeId,
        /// The SFU's wren version (informational; not checked).
        version: String,
    },
    /// The SDP answer to a publish or subscribe call.
    Answer {
        /// The call answered.
        call: CallId,
        /// The SDP answer, passed on to the client.
        sdp: String,
    },
    /// A publish or subscribe call failed.
    Failed {
        /// The call that failed.
        call: CallId,
        /// Why; the node turns it into the client's `errorCode`.
        error: SfuError,
    },
    /// A publisher's media connection failed or closed: the stream is gone
    /// (and with it every subscription to it).
    StreamClosed {
        /// The stream that is gone.
        mid: Mid,
    },
    /// A subscriber's media connection failed or closed.
    SubscriptionClosed {
        /// The subscription that is gone.
        sid: Sid,
    },
    /// Load and counters, once a second.
    Stats(SfuStats),
}

/// What an SFU reports about itself. Counters count from its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SfuStats {
    /// Publisher sessions now (connected or not yet).
    pub publishers: u32,
    /// Subscriber sessions now (connected or not yet).
    pub subscribers: u32,
    /// RTP packets written to subscribers.
    pub forwarded_packets: u64,
    /// Their payload bytes.
    pub forwarded_bytes: u64,
}

/// Why an SFU refused a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum SfuError {
    /// The offer could not be parsed or offers nothing we can use.
    BadOffer(String),
    /// No stream with that mid on this SFU.
    NoSuchStream,
    /// The mid or sid is already in use.
    Duplicate,
    /// The SFU's session table is full.
    Full,
    /// Anything else.
    Internal(String),
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::BadOffer(why) => write!(f, "bad offer: {why}"),
            SfuError::NoSuchStream => f.write_str("no such stream"),
            SfuError::Duplicate => f.write_str("duplicate id"),
            SfuError::Full => f.write_str("SFU session table full"),
            SfuError::Internal(why) => write!(f, "{why}"),
        }
    }
}

/// Encodes one message as a frame (length prefix included).
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut frame = vec![0; 4];
    // Our own enums with string keys: serialization cannot fail.
    let _ = serde_json::to_writer(&mut frame, msg);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Decodes the payload of one frame.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Frames out of a byte stream that arrives in pieces (a non-blocking
/// socket's reads): `extend` with what was read, then take `next_frame`
/// until it says there is no whole frame yet.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's payload, None if it has not all arrived. An
    /// oversized frame is an error: the stream cannot be trusted further.
    pub fn next_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_IPC_FRAME_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("control frame of {len} bytes exceeds {MAX_IPC_FRAME_BYTES}"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(payload))
    }
}

/// Reads one frame's payload; `Ok(None)` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_IPC_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds {MAX_IPC_FRAME_BYTES}"),
        ));
    }
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// Writes one message as a frame.
pub(crate) async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    w.write_all(&encode(msg)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_whole_out_of_pieces() {
        let a = encode(&FromSfu::StreamClosed {
            mid: Mid::parse("a#123456").unwrap(),
        });
        let mut r = FrameReader::default();
        let mut stream = a.clone();
        stream.extend(encode(&ToSfu::Unsubscribe {
            sid: Sid::parse("b#123456").unwrap(),
        }));
        for byte in &stream[..stream.len() - 1] {
            r.extend(&[*byte]);
        }
        assert_eq!(r.next_frame().unwrap().as_deref(), Some(&a[4..]));
        assert_eq!(r.next_frame().unwrap(), None, "the second is not whole yet");
        r.extend(&stream[stream.len() - 1..]);
        let second: ToSfu = decode(&r.next_frame().unwrap().unwrap()).unwrap();
        assert!(matches!(second, ToSfu::Unsubscribe { .. }));
        assert_eq!(r.next_frame().unwrap(), None);
        let mut big = FrameReader::default();
        big.extend(&((MAX_IPC_FRAME_BYTES as u32 + 1).to_be_bytes()));
        assert!(big.next_frame().is_err());
    }

    #[test]
    fn messages_round_trip_through_frames() {
        let msgs = vec![
            ToSfu::Publish {
                call: CallId(7),
                mid: Mid::parse("a#123456").unwrap(),
                offer: "v=0\r\n".into(),
            },
            ToSfu::Unsubscribe {
                sid: Sid::parse("b#654321").unwrap(),
            },
        ];
        for m in msgs {
            let frame = encode(&m);
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            let back: ToSfu = decode(&frame[4..]).unwrap();
            assert_eq!(back, m);
        }
        let f = FromSfu::Failed {
            call: CallId(1),
            error: SfuError::BadOffer("no m-lines".into()),
        };
        let back: FromSfu = decode(&encode(&f)[4..]).unwrap();
        assert_eq!(back, f);
        // The call id is a bare number on the wire, as it was before it
        // had a type of its own.
        let text = String::from_utf8(encode(&f)[4..].to_vec()).unwrap();
        assert!(text.contains(r#""call":1,"#), "{text}");
    }

    /// Property: neither decoder panics, whatever the bytes; frames of a
    /// length past the bound are refused before any allocation.
    #[test]
    fn control_frames_decode_totally() {
        let good = encode(&FromSfu::Answer {
            call: CallId(9),
            sdp: "v=0".into(),
        });
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 0..50_000 {
            let mut bytes = if round % 3 == 0 {
                (0..rng.usize(..64))
                    .map(|_| rng.u8(..))
                    .collect::<Vec<u8>>()
            } else {
                good.clone()
            };
            for _ in 0..rng.usize(..4) {
                if !bytes.is_empty() {
                    let i = rng.usize(..bytes.len());
                    bytes[i] = rng.u8(..);
                }
            }
            if let Ok(Some(payload)) = smol::block_on(read_frame(&mut bytes.as_slice())) {
                assert!(payload.len() <= MAX_IPC_FRAME_BYTES);
                let _ = decode::<FromSfu>(&payload);
                let _ = decode::<ToSfu>(&payload);
            }
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut big = Vec::new();
        big.extend_from_slice(&((MAX_IPC_FRAME_BYTES as u32) + 1).to_be_bytes());
        let err = smol::block_on(read_frame(&mut big.as_slice())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(decode::<ToSfu>(b"{\"type\":\"nope\"}").is_err());
        assert!(decode::<ToSfu>(b"\xff").is_err());
        let empty: &[u8] = &[];
        assert!(smol::block_on(read_frame(&mut &*empty)).unwrap().is_none());
    }
}
