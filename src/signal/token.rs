//! Room tokens: who may join which room until when, and whether they may
//! publish, signed with HMAC-SHA256 under a secret of the node.
//!
//! A token is `base64url(JSON claims) "." base64url(HMAC-SHA256(secret,
//! first part))`, claims `{"uid":…,"rid":…,"exp":UNIX_SECONDS,"pub":bool}`.
//! Tokens and the secret are never logged.

use crate::ids::{PeerId, RoomId};
use aws_lc_rs::hmac;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Shortest secret accepted (bytes).
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The peer the token is for: it must connect with this uid.
    pub uid: PeerId,
    /// The one room it may join.
    pub rid: RoomId,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Whether the holder may publish.
    #[serde(rename = "pub")]
    pub publish: bool,
}

/// Why a token was refused (both answer 403; the reason says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token, or not signed with our secret.
    Invalid,
    /// Signed by us, but its `exp` has passed.
    Expired,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Invalid => "invalid token",
            TokenError::Expired => "expired token",
        })
    }
}

/// A token secret: its `Debug` shows nothing, so no log can leak it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The node's signing key.
pub struct TokenKey(hmac::Key);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKey {
    /// The key for `secret`; a secret shorter than 16 bytes is refused.
    pub fn new(secret: &[u8]) -> Result<TokenKey, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the token secret must have at least {MIN_SECRET_LEN} bytes"
            ));
        }
        Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// A token that grants `grant`, signed with this key.
    pub fn mint(&self, grant: &Grant) -> String {
        // Our own struct of strings, a number and a bool: cannot fail.
        let claims = serde_json::to_vec(grant).unwrap_or_default();
        let body = BASE64URL_NOPAD.encode(&claims);
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", BASE64URL_NOPAD.encode(tag.as_ref()))
    }

    /// Checks the signature (in constant time), then the expiry.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Grant, TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let tag = BASE64URL_NOPAD
            .decode(tag.as_bytes())
            .map_err(|_| TokenError::Invalid)?;
        hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| TokenError::Invalid)?;
        let claims = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| TokenError::Invalid)?;
        let grant: Grant = serde_json::from_slice(&claims).map_err(|_| TokenError::Invalid)?;
        if grant.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(exp: u64) -> Grant {
        Grant {
            uid: PeerId::parse("alice").unwrap(),
            rid: RoomId::parse("r1").unwrap(),
            exp,
            publish: true,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = TokenKey::new(b"0123456789abcdef").unwrap();
        let t = key.mint(&grant(1000));
        assert_eq!(key.verify(&t, 999), Ok(grant(1000)));
        assert_eq!(key.verify(&t, 1000), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_foreign_tokens_are_invalid() {
        let key = TokenKey::new(b"0123456789abcdef").unwrap();
        let other = TokenKey::new(b"fedcba9876543210").unwrap();
        let t = other.mint(&grant(1000));
        assert_eq!(key.verify(&t, 0), Err(TokenError::Invalid));
        // Changing the claims breaks the signature.
        let good = key.mint(&grant(1000));
        let (_, tag) = good.split_once('.').unwrap();
        let forged_claims =
            BASE64URL_NOPAD.encode(br#"{"uid":"alice","rid":"r1","exp":99999,"pub":true}"#);
        assert_eq!(
            key.verify(&format!("{forged_claims}.{tag}"), 0),
            Err(TokenError::Invalid)
        );
        for junk in ["", ".", "a.b", "no-dot", "!!.!!"] {
            assert_eq!(key.verify(junk, 0), Err(TokenError::Invalid), "{junk}");
        }
        assert!(TokenKey::new(b"short").is_err());
    }
}
