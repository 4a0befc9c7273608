//! Who may do what, and how often: room tokens checked on the WebSocket
//! URL and on join, and each connection's request budget.

use super::{Node, Now};
use crate::ids::{PeerId, RoomId};
use crate::signal::error::RequestError;
use crate::signal::token::{Grant, TokenError, TokenKey};
use std::time::Instant;

/// Per-connection request budget: `rate` tokens a second, `burst` at most.
pub(super) struct TokenBucket {
    tokens: f32,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn new(now: Instant, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            at: now,
        }
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f32() * rate as f32;
        self.tokens = (self.tokens + refill).min(burst as f32);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Node {
    /// Requires a room token for every join from now on.
    pub fn require_tokens(&mut self, key: TokenKey) {
        self.tokens = Some(key);
    }

    /// Checks the token of a WebSocket URL for `uid` (before the upgrade).
    /// `Ok(None)` when tokens are not in use.
    pub fn check_url_token(
        &self,
        now: Now,
        uid: &PeerId,
        token: &str,
    ) -> Result<Option<Grant>, TokenError> {
        let Some(key) = &self.tokens else {
            return Ok(None);
        };
        let grant = key.verify(token, now.unix_secs)?;
        if &grant.uid != uid {
            return Err(TokenError::Invalid);
        }
        Ok(Some(grant))
    }

    /// Access control of a join: with tokens in use, the join's token (or
    /// else the URL's) must be valid and name this uid and room. Returns
    /// whether the peer may publish there.
    pub(super) fn admit(
        &mut self,
        now: Now,
        pidx: usize,
        rid: &RoomId,
        token: Option<&str>,
    ) -> Result<bool, RequestError> {
        let Some(key) = &self.tokens else {
            return Ok(true);
        };
        let peer = &self.peers[pidx];
        let now = now.unix_secs;
        let grant = match token {
            Some(t) => key.verify(t, now),
            None => match &peer.url_grant {
                Some(g) if g.exp > now => Ok((**g).clone()),
                Some(_) => Err(TokenError::Expired),
                None => return Err(RequestError::Forbidden("a room token is required")),
            },
        };
        let grant = grant.map_err(|e| match e {
            TokenError::Expired => RequestError::Forbidden("expired token"),
            TokenError::Invalid => RequestError::Forbidden("invalid token"),
        })?;
        if grant.uid != peer.uid || &grant.rid != rid {
            return Err(RequestError::Forbidden(
                "the token is for another peer or room",
            ));
        }
        Ok(grant.publish)
    }
}
