//! Browser sessions: what a signed-in browser's cookie stands for.
//!
//! **Server-side sessions, chosen over encrypted stateless cookies.** The
//! cookie holds only a random 256-bit secret (43 characters, whatever the
//! user's group count); the session lives in the store under a hash of that
//! secret. Why:
//! - revocation is a delete: logout, deprovisioning and an operator's
//!   revoke take effect at once and survive a restart, with no deny-list of
//!   still-valid cookies to keep in step;
//! - nothing in the store can be replayed as a cookie (it is keyed by a
//!   hash), and the IdP's refresh and ID tokens are sealed (AES-256-GCM)
//!   under a key derived from the cookie secret, so the store alone does
//!   not give them away either;
//! - Portcullis is one instance per store already (SCIM writes land in its
//!   sled store), so a shared session store costs nothing extra.
//!
//! Groups never ride in the session: every request reads them from the
//! directory, which is what makes access follow SCIM on the next request.
//!
//! Lifetimes: a session ends `idle_timeout` after its last use or
//! `absolute_timeout` after sign-in, whichever comes first. Last use is kept
//! in memory and written to the store at most once a minute per session
//! (not flushed: losing it only makes a session look a little older).
//!
//! What this module does not do: the OIDC exchange ([`signin`]), or decide
//! access (the proxy does, from the directory user the session names).

pub mod http;
pub mod signin;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use portcullis_directory::{Directory, SessionHandle, SessionStore, StoreError, StoredSession};
use ring::aead;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;

use crate::config::Session as SessionConfig;

/// Seconds since the Unix epoch; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

/// Written at most this often per session when only last use changed.
const TOUCH_EVERY: i64 = 60;
/// How often expired sessions are swept from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The random secret a session cookie carries.
#[derive(Clone)]
pub struct SessionSecret([u8; 32]);

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

impl SessionSecret {
    fn random() -> SessionSecret {
        SessionSecret(rand::random())
    }

    /// Parses a cookie value; anything but 43 base64url characters is not
    /// one of ours.
    pub fn from_cookie(value: &str) -> Option<SessionSecret> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(SessionSecret(bytes.try_into().ok()?))
    }

    pub fn cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The store key: a hash, so the store never holds a usable cookie.
    pub fn handle(&self) -> SessionHandle {
        self.derive(b"portcullis session handle")
    }

    /// A token that proves a form was served to this session (logout).
    pub fn csrf_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.derive(b"portcullis logout form"))
    }

    pub fn csrf_matches(&self, token: &str) -> bool {
        self.csrf_token().as_bytes().ct_eq(token.as_bytes()).into()
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(label);
        h.update([0]);
        h.update(self.0);
        h.finalize().into()
    }

    fn seal_key(&self) -> Option<aead::LessSafeKey> {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, &self.derive(b"portcullis session seal")).ok()?;
        Some(aead::LessSafeKey::new(key))
    }

    /// Encrypts the IdP's tokens for the store.
    fn seal(&self, tokens: &IdpTokens) -> Option<String> {
        let key = self.seal_key()?;
        let nonce_bytes: [u8; 12] = rand::random();
        let mut data = serde_json::to_vec(tokens).ok()?;
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce_bytes),
            aead::Aad::empty(),
            &mut data,
        )
        .ok()?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    fn open(&self, sealed: &str) -> Option<IdpTokens> {
        let key = self.seal_key()?;
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (nonce, data) = raw.split_at_checked(12)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = key.open_in_place(nonce, aead::Aad::empty(), &mut data).ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// The IdP's tokens kept with a session: for refreshing it and for
/// RP-initiated logout. Stored sealed only.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct IdpTokens {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for IdpTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpTokens")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A session as stored (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Sign-in time.
    created: i64,
    /// Absolute end.
    expires: i64,
    last_seen: i64,
    /// The IdP's subject and session id, for logout and audit.
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// When the IdP's tokens lapse and a refresh is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// A live session.
#[derive(Debug)]
pub struct Session {
    pub handle: SessionHandle,
    /// The directory user.
    pub user_id: Arc<str>,
    pub created: i64,
    pub expires: i64,
    pub sub: String,
    pub sid: Option<String>,
    refresh_at: AtomicI64,
    sealed: parking_lot::Mutex<Option<String>>,
    last_seen: AtomicI64,
    persisted_seen: AtomicI64,
    refreshing: AtomicBool,
}

impl Session {
    fn record(&self) -> Record {
        let refresh_at = self.refresh_at.load(Ordering::Relaxed);
        Record {
            created: self.created,
            expires: self.expires,
            last_seen: self.last_seen.load(Ordering::Relaxed),
            sub: self.sub.clone(),
            sid: self.sid.clone(),
            refresh_at: (refresh_at != i64::MAX).then_some(refresh_at),
            sealed: self.sealed.lock().clone(),
        }
    }

    fn from_record(stored: StoredSession, r: Record) -> Session {
        Session {
            handle: stored.handle,
            user_id: Arc::from(stored.user_id),
            created: r.created,
            expires: r.expires,
            sub: r.sub,
            sid: r.sid,
            refresh_at: AtomicI64::new(r.refresh_at.unwrap_or(i64::MAX)),
            sealed: parking_lot::Mutex::new(r.sealed),
            last_seen: AtomicI64::new(r.last_seen),
            persisted_seen: AtomicI64::new(r.last_seen),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The IdP tokens, unsealed with the cookie's secret.
    pub fn tokens(&self, secret: &SessionSecret) -> Option<IdpTokens> {
        let sealed = self.sealed.lock().clone()?;
        secret.open(&sealed)
    }

    /// Whether the IdP tokens have lapsed and this caller should refresh
    /// them. True for one caller at a time.
    pub fn claim_refresh(&self, now: i64) -> bool {
        now >= self.refresh_at.load(Ordering::Relaxed)
            && self
                .refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// What a cookie turned out to be.
#[derive(Debug)]
pub enum Lookup {
    Valid(Arc<Session>),
    /// Known, but past its idle or absolute end (now removed).
    Expired,
    /// Not a session of ours: never issued, revoked, or tampered with.
    Unknown,
}

/// What a new session starts with.
#[derive(Debug)]
pub struct NewSession {
    pub user_id: String,
    pub sub: String,
    pub sid: Option<String>,
    pub tokens: IdpTokens,
    /// When the IdP's tokens lapse (from `expires_in`), if a refresh token
    /// came with them.
    pub refresh_at: Option<i64>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub created: std::sync::atomic::AtomicU64,
    pub revoked: std::sync::atomic::AtomicU64,
    pub expired: std::sync::atomic::AtomicU64,
}

/// Every session: a cache in front of the store.
pub struct Sessions {
    store: SessionStore,
    /// Sessions seen since start. Entries are dropped on revoke, expiry and
    /// sweep; misses fall through to the store.
    cache: DashMap<SessionHandle, Arc<Session>>,
    config: SessionConfig,
    clock: Clock,
    pub counters: SessionCounters,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cached", &self.cache.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(store: SessionStore, config: SessionConfig, clock: Clock) -> Sessions {
        Sessions {
            store,
            cache: DashMap::new(),
            config,
            clock,
            counters: SessionCounters::default(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Creates a session, durable before it returns, and gives the secret
    /// for the cookie.
    pub async fn create(&self, new: NewSession) -> Result<SessionSecret, StoreError> {
        let secret = SessionSecret::random();
        let now = self.now();
        let has_refresh = new.tokens.refresh_token.is_some();
        let sealed = if new.tokens.refresh_token.is_some() || new.tokens.id_token.is_some() {
            secret.seal(&new.tokens)
        } else {
            None
        };
        let record = Record {
            created: now,
            expires: now.saturating_add(secs(self.config.absolute_timeout)),
            last_seen: now,
            sub: new.sub,
            sid: new.sid,
            refresh_at: new.refresh_at.filter(|_| has_refresh),
            sealed,
        };
        let stored = StoredSession {
            handle: secret.handle(),
            user_id: new.user_id,
            record: serde_json::to_vec(&record).unwrap_or_default(),
        };
        self.store.put(&stored).await?;
        let session = Arc::new(Session::from_record(stored, record));
        self.cache.insert(session.handle, session);
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(secret)
    }

    /// The session a cookie names, if it is valid now. Marks it used.
    pub fn lookup(&self, secret: &SessionSecret) -> Lookup {
        let handle = secret.handle();
        let session = match self.cache.get(&handle) {
            Some(s) => s.clone(),
            None => match self.load(&handle) {
                Some(s) => s,
                None => return Lookup::Unknown,
            },
        };
        let now = self.now();
        let idle_end = session
            .last_seen
            .load(Ordering::Relaxed)
            .saturating_add(secs(self.config.idle_timeout));
        if now >= session.expires || now >= idle_end {
            self.forget(&handle);
            // Removal from the store is best-effort here; the sweep
            // catches what this misses, and the session is refused anyway.
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = store.remove(&handle).await;
            });
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            return Lookup::Expired;
        }
        session.last_seen.fetch_max(now, Ordering::Relaxed);
        if now - session.persisted_seen.load(Ordering::Relaxed) >= TOUCH_EVERY {
            session.persisted_seen.store(now, Ordering::Relaxed);
            self.persist(&session);
        }
        Lookup::Valid(session)
    }

    fn load(&self, handle: &SessionHandle) -> Option<Arc<Session>> {
        let stored = match self.store.get(handle) {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session from the store");
                return None;
            }
        };
        let record: Record = match serde_json::from_slice(&stored.record) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a stored session cannot be decoded; ignoring it");
                return None;
            }
        };
        let session = Arc::new(Session::from_record(stored, record));
        Some(self.cache.entry(*handle).or_insert(session).clone())
    }

    fn persist(&self, session: &Session) {
        let record = serde_json::to_vec(&session.record()).unwrap_or_default();
        if let Err(e) = self.store.touch(&session.handle, &record) {
            tracing::warn!(error = %e, "cannot record a session's last use");
        }
    }

    /// Stores refreshed IdP tokens for a session.
    pub fn refreshed(&self, session: &Session, secret: &SessionSecret, tokens: &IdpTokens, refresh_at: Option<i64>) {
        *session.sealed.lock() = secret.seal(tokens);
        session.refresh_at.store(
            refresh_at
                .filter(|_| tokens.refresh_token.is_some())
                .unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        session.refreshing.store(false, Ordering::Release);
        self.persist(session);
    }

    /// A refresh that could not reach the IdP: try again after `retry`.
    pub fn refresh_postponed(&self, session: &Session, retry: Duration) {
        session
            .refresh_at
            .store(self.now().saturating_add(secs(retry)), Ordering::Relaxed);
        session.refreshing.store(false, Ordering::Release);
    }

    /// Ends one session, durably.
    pub async fn revoke(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        self.forget(handle);
        let existed = self.store.remove(handle).await?;
        if existed {
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(existed)
    }

    /// Ends every session of a directory user, durably. Returns how many.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        self.cache.retain(|_, s| &*s.user_id != user_id);
        let removed = self.store.remove_user(user_id).await?;
        for handle in &removed {
            self.forget(handle);
        }
        self.counters.revoked.fetch_add(removed.len() as u64, Ordering::Relaxed);
        Ok(removed.len())
    }

    fn forget(&self, handle: &SessionHandle) {
        self.cache.remove(handle);
    }

    /// Removes expired sessions from the store. Returns how many.
    pub async fn sweep(&self) -> usize {
        let now = self.now();
        let idle = secs(self.config.idle_timeout);
        let mut expired = Vec::new();
        for item in self.store.scan() {
            let stored = match item {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a session while sweeping");
                    continue;
                }
            };
            let dead = match serde_json::from_slice::<Record>(&stored.record) {
                Ok(r) => {
                    // A cached session may have been used since its record
                    // was written.
                    let seen = self
                        .cache
                        .get(&stored.handle)
                        .map_or(r.last_seen, |s| s.last_seen.load(Ordering::Relaxed));
                    now >= r.expires || now >= seen.saturating_add(idle)
                }
                // Unreadable records can never be used; clear them out.
                Err(_) => true,
            };
            if dead {
                expired.push(stored.handle);
            }
        }
        let mut removed = 0;
        for handle in expired {
            self.forget(&handle);
            if matches!(self.store.remove(&handle).await, Ok(true)) {
                removed += 1;
            }
        }
        self.counters.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// How many sessions the store holds.
    pub fn count(&self) -> usize {
        self.store.len()
    }

    /// Keeps sessions in step with the directory until `shutdown`: a user
    /// deactivated or deleted loses every session at once; expired
    /// sessions are swept now and then.
    pub async fn run(self: Arc<Self>, directory: Directory, shutdown: impl std::future::Future<Output = ()>) {
        let mut changes = directory.subscribe();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = sweep.tick() => {
                    let removed = self.sweep().await;
                    if removed > 0 {
                        tracing::info!(removed, "expired sessions removed");
                    }
                }
                change = changes.recv() => match change {
                    Ok(change) => {
                        for p in &change.principals {
                            if p.revokes()
                                && let Some(before) = &p.before
                            {
                                self.revoke_for(&before.id, "deprovisioned").await;
                            }
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Changes were missed: check every session's user
                        // against the directory as it is now.
                        tracing::warn!(missed, "session watcher fell behind; rechecking every session");
                        self.recheck(&directory).await;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    async fn revoke_for(&self, user_id: &str, why: &str) {
        match self.revoke_user(user_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(user_id, sessions = n, why, "sessions revoked"),
            Err(e) => tracing::error!(user_id, error = %e, "cannot revoke sessions"),
        }
    }

    async fn recheck(&self, directory: &Directory) {
        let mut users: Vec<String> = self
            .store
            .scan()
            .filter_map(Result::ok)
            .map(|s| s.user_id)
            .filter(|u| directory.principal(u).is_none_or(|p| !p.active))
            .collect();
        users.sort();
        users.dedup();
        for user in users {
            self.revoke_for(&user, "deprovisioned").await;
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
