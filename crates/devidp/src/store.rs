//! The provider's in-memory state: pending sign-in transactions, issued
//! authorization codes, SSO sessions and refresh tokens, each in a map with
//! an expiry per entry and a cap on its size.
//!
//! Nothing is persisted; nothing here does I/O or crypto. When a map is full,
//! expired entries go first, then the oldest entry: a flood of requests can
//! make old entries disappear early, never make memory grow without bound.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long a sign-in form may stay open.
pub(crate) const TRANSACTION_TTL: Duration = Duration::from_secs(10 * 60);
/// How long an authorization code is redeemable, unless a test changed it.
pub(crate) const DEFAULT_CODE_TTL: Duration = Duration::from_secs(60);
/// How long an SSO session (the `devidp_session` cookie) lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// How long a refresh token stays usable if not used.
pub(crate) const REFRESH_TTL: Duration = Duration::from_secs(24 * 60 * 60);

const MAX_TRANSACTIONS: usize = 1_000;
const MAX_CODES: usize = 1_000;
const MAX_SESSIONS: usize = 1_000;
const MAX_REFRESH_TOKENS: usize = 10_000;

/// An entry with an age and an end.
pub(crate) trait Expiring {
    fn created(&self) -> Instant;
    fn expires(&self) -> Instant;
}

/// A string-keyed map with per-entry expiry and a size cap.
#[derive(Debug)]
pub(crate) struct Bounded<V> {
    map: HashMap<String, V>,
    cap: usize,
}

impl<V: Expiring> Bounded<V> {
    pub(crate) fn new(cap: usize) -> Bounded<V> {
        Bounded {
            map: HashMap::new(),
            cap,
        }
    }

    /// Inserts, first making room: expired entries, then the oldest one.
    pub(crate) fn insert(&mut self, key: String, value: V, now: Instant) {
        if self.map.len() >= self.cap {
            self.map.retain(|_, v| v.expires() > now);
        }
        while self.map.len() >= self.cap {
            let Some(oldest) = self.map.iter().min_by_key(|(_, v)| v.created()).map(|(k, _)| k.clone()) else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.map.insert(key, value);
    }

    /// The live entry under `key` (an expired one is dropped).
    pub(crate) fn get_mut(&mut self, key: &str, now: Instant) -> Option<&mut V> {
        if self.map.get(key).is_some_and(|v| v.expires() <= now) {
            self.map.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Whether an entry (live or expired) is stored under `key`.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key)
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&String, &mut V) -> bool) {
        self.map.retain(keep);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// What a code or refresh token grants: who, to which client, with what
/// scope, from which sign-in.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) username: String,
    /// Granted scopes, space-free tokens, `openid` first.
    pub(crate) scope: Vec<String>,
    /// The `sid` claim of the SSO session this grant came from.
    pub(crate) sid: String,
    /// When the user last entered their password (Unix seconds).
    pub(crate) auth_time: u64,
    /// Identifies every token descending from one authorization code, so a
    /// replayed code can revoke them all.
    pub(crate) family: String,
}

impl Grant {
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scope.iter().any(|s| s == scope)
    }

    pub(crate) fn scope_string(&self) -> String {
        self.scope.join(" ")
    }
}

/// A sign-in form shown and not yet submitted successfully.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub(crate) request: AuthRequest,
    pub(crate) created: Instant,
    pub(crate) expires: Instant,
    pub(crate) failed_attempts: u32,
}

/// A validated authorization request.
#[derive(Debug, Clone)]
pub(crate) struct AuthRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) login_hint: Option<String>,
}

/// An authorization code, kept after redemption (until it expires) so that
/// a replay is recognised.
#[derive(Debug)]
pub(crate) struct Code {
    pub(crate) grant: Grant,
    pub(crate) redirect_uri: String,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) redeemed: bool,
    pub(crate) created: Instant,
    pub(crate) expires: Instant,
}

/// An SSO session, found by the value of the `devidp_session` cookie.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) username: String,
    /// The `sid` claim (not the cookie value, which stays secret).
    pub(crate) sid: String,
    pub(crate) auth_time: u64,
    pub(crate) created: Instant,
    pub(crate) expires: Instant,
}

/// A refresh token's grant.
#[derive(Debug)]
pub(crate) struct Refresh {
    pub(crate) grant: Grant,
    pub(crate) created: Instant,
    pub(crate) expires: Instant,
}

macro_rules! expiring {
    ($($t:ty),*) => {$(
        impl Expiring for $t {
            fn created(&self) -> Instant {
                self.created
            }
            fn expires(&self) -> Instant {
                self.expires
            }
        }
    )*};
}
expiring!(Transaction, Code, Session, Refresh);

/// Everything the provider remembers.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) transactions: Bounded<Transaction>,
    pub(crate) codes: Bounded<Code>,
    pub(crate) sessions: Bounded<Session>,
    pub(crate) refresh_tokens: Bounded<Refresh>,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            transactions: Bounded::new(MAX_TRANSACTIONS),
            codes: Bounded::new(MAX_CODES),
            sessions: Bounded::new(MAX_SESSIONS),
            refresh_tokens: Bounded::new(MAX_REFRESH_TOKENS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(Instant, Instant);
    impl Expiring for E {
        fn created(&self) -> Instant {
            self.0
        }
        fn expires(&self) -> Instant {
            self.1
        }
    }

    #[test]
    fn bounded_evicts_expired_then_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = Bounded::new(3);
        m.insert("a".into(), E(t0, t0 + 10 * s), t0);
        m.insert("b".into(), E(t0 + s, t0 + 2 * s), t0);
        m.insert("c".into(), E(t0 + 2 * s, t0 + 10 * s), t0);
        // Full: at t0+3s "b" has expired and goes first.
        m.insert("d".into(), E(t0 + 3 * s, t0 + 10 * s), t0 + 3 * s);
        assert!(m.contains("a") && !m.contains("b") && m.contains("c") && m.contains("d"));
        // Full, nothing expired: the oldest ("a") goes.
        m.insert("e".into(), E(t0 + 4 * s, t0 + 10 * s), t0 + 4 * s);
        assert_eq!(m.len(), 3);
        assert!(!m.contains("a") && m.contains("e"));
        // Expired entries are not returned.
        assert!(m.get_mut("c", t0 + 10 * s).is_none());
        assert!(!m.contains("c"));
        assert!(m.get_mut("d", t0 + 5 * s).is_some());
    }
}
