//! Newtype ids stored inline (fixed size, no heap), validated on creation.

use crate::limits::{MAX_ID_LEN, MAX_MEDIA_ID_LEN, MEDIA_ID_DIGITS};
use std::fmt;

/// The characters allowed in a uid (and, as a superset, in every id).
pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | ':' | '-')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $cap:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(heapless::String<{ $cap }, u8>);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const CAPACITY: usize = $cap;

            /// The id as it appears on the wire.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("invalid ", stringify!($name)))
                })
            }
        }
    };
}

id_type!(
    /// A peer's user id (`uid`): 1..=64 chars of `[A-Za-z0-9_.@:-]`.
    PeerId,
    MAX_ID_LEN
);
id_type!(
    /// A room id (`rid`): 1..=64 chars of `[A-Za-z0-9_.@:-]`.
    RoomId,
    MAX_ID_LEN
);
id_type!(
    /// A published stream (`mid`): `UID#digits`.
    Mid,
    MAX_MEDIA_ID_LEN
);
id_type!(
    /// A subscription (`sid`): `UID#digits`.
    Sid,
    MAX_MEDIA_ID_LEN
);
id_type!(
    /// A node id (`sfuid`, `bizid`).
    NodeId,
    MAX_ID_LEN
);

fn parse_plain<const N: usize>(s: &str) -> Option<heapless::String<N, u8>> {
    if s.is_empty() || !s.chars().all(is_id_char) {
        return None;
    }
    heapless::String::try_from(s).ok()
}

/// A mid/sid as a client may name it: a uid, `#`, then a suffix of id
/// characters. Ours are digits, but the seed's own examples use letters, and
/// an unknown id is a 404, not a malformed request.
fn parse_media<const N: usize>(s: &str) -> Option<heapless::String<N, u8>> {
    let (uid, suffix) = s.rsplit_once('#')?;
    PeerId::parse(uid)?;
    if suffix.is_empty() || !suffix.chars().all(is_id_char) {
        return None;
    }
    heapless::String::try_from(s).ok()
}

impl PeerId {
    /// The id if `s` is one: 1..=[`MAX_ID_LEN`] bytes of id characters.
    pub fn parse(s: &str) -> Option<Self> {
        parse_plain(s).map(Self)
    }
}

impl RoomId {
    /// The id if `s` is one: 1..=[`MAX_ID_LEN`] bytes of id characters.
    pub fn parse(s: &str) -> Option<Self> {
        parse_plain(s).map(Self)
    }
}

impl NodeId {
    /// The id if `s` is one: 1..=[`MAX_ID_LEN`] bytes of id characters.
    pub fn parse(s: &str) -> Option<Self> {
        parse_plain(s).map(Self)
    }
}

/// `uid#123456`: the seed's form of mids and sids. Uniqueness is the
/// caller's job (it checks its tables and draws again).
fn media_id(uid: &PeerId) -> heapless::String<MAX_MEDIA_ID_LEN, u8> {
    let mut s = heapless::String::new();
    // Capacity is exactly uid + '#' + digits, so these pushes cannot fail.
    let _ = s.push_str(uid.as_str());
    let _ = s.push('#');
    for _ in 0..MEDIA_ID_DIGITS {
        let _ = s.push(fastrand::char('0'..='9'));
    }
    s
}

impl Mid {
    /// The id if `s` is one: a valid uid, `#`, then id characters (any,
    /// not only digits: a client may name an id we never made).
    pub fn parse(s: &str) -> Option<Self> {
        parse_media(s).map(Self)
    }

    /// A fresh stream id of `uid`: `uid#` and [`MEDIA_ID_DIGITS`] random
    /// digits. Not checked for uniqueness.
    pub fn random(uid: &PeerId) -> Self {
        Self(media_id(uid))
    }
}

impl Sid {
    /// The id if `s` is one: a valid uid, `#`, then id characters (any,
    /// not only digits: a client may name an id we never made).
    pub fn parse(s: &str) -> Option<Self> {
        parse_media(s).map(Self)
    }

    /// A fresh subscription id of `uid`: `uid#` and [`MEDIA_ID_DIGITS`] random
    /// digits. Not checked for uniqueness.
    pub fn random(uid: &PeerId) -> Self {
        Self(media_id(uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_accepts_the_seed_examples_and_rejects_others() {
        assert!(PeerId::parse("HUAWEI_94bf").is_some());
        assert!(PeerId::parse("64236c21-21e8-4a3d-9f80-c767d1e1d67f").is_some());
        assert!(PeerId::parse("a@b.c:d").is_some());
        assert!(PeerId::parse("").is_none());
        assert!(PeerId::parse("a b").is_none());
        assert!(PeerId::parse("ü").is_none());
        assert!(PeerId::parse(&"x".repeat(64)).is_some());
        assert!(PeerId::parse(&"x".repeat(65)).is_none());
    }

    #[test]
    fn media_ids_have_the_seed_shape() {
        let uid = PeerId::parse(&"u".repeat(64)).unwrap();
        let mid = Mid::random(&uid);
        let (u, d) = mid.as_str().rsplit_once('#').unwrap();
        assert_eq!(u, uid.as_str());
        assert_eq!(d.len(), MEDIA_ID_DIGITS);
        assert!(Mid::parse("samsung_10b8d#128047").is_some());
        assert!(Mid::parse("samsung_10b8d#").is_none());
        assert!(Mid::parse("64236c21-21e8-4a3d-9f80-c767d1e1d67f#ABCDEF").is_some());
        assert!(Mid::parse("samsung_10b8d#1 2").is_none());
        assert!(Mid::parse("#123").is_none());
    }
}
