//! [`Verifier`]: one issuer's keys, kept fresh, and verification of the
//! bearer tokens it issues.
//!
//! Keys: [`Verifier::run`] runs discovery and fetches the JWKS (retrying with
//! capped exponential backoff until it succeeds), then refetches
//! periodically. A failed fetch keeps the last good key set, so an IdP outage
//! does not lock anybody out. A token with an unknown `kid` triggers one
//! refetch, rate-limited, and single-flight: concurrent requests with the new
//! `kid` wait for the same fetch. When a refetch shows that the issuer
//! withdrew a key, the tokens it verified leave the cache at once.
//!
//! Tokens: a cache hit (see `cache`) answers without a signature check;
//! otherwise the token is parsed (`jose`), its key chosen by `kid`, its
//! algorithm checked against the key (`jwk`), its signature checked, then
//! its claims (`token`). Only successes are cached.
//!
//! All fetching goes through one async mutex, so discovery, periodic and
//! unknown-`kid` fetches never overlap. No lock is held on the hot path.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::Url;

use crate::cache::{Hit, TokenCache};
use crate::config::{self, IssuerConfig};
use crate::error::{OidcError, VerifyError};
use crate::http::HttpClient;
use crate::jose::{self, Compact};
use crate::jwk::{KeySet, Selection};
use crate::token::{self, KeyInfo, Rules, VerifiedToken};

/// First retry delay while the issuer's keys cannot be loaded.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest retry delay: an IdP that comes back is noticed within this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often expired tokens are swept from the cache.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Verifies the bearer tokens of one OpenID Connect issuer. Cheap to clone
/// (an `Arc` inside); every clone shares keys, cache and statistics.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: IssuerConfig,
    http: HttpClient,
    cache: TokenCache,
    /// The key set in force; `None` until the first successful fetch.
    current: ArcSwapOption<Snapshot>,
    /// Bumped after every JWKS fetch attempt, successful or not, so that a
    /// caller that saw an unknown `kid` can tell whether a fetch happened
    /// since it looked.
    fetch_attempts: AtomicU64,
    /// Serializes every fetch; what the fetches remember.
    fetch: Arc<tokio::sync::Mutex<FetchState>>,
    counters: Counters,
}

/// One fetched key set and what it is checked against.
#[derive(Debug)]
struct Snapshot {
    keys: KeySet,
    /// The issuer exactly as discovery announced it: tokens' `iss` must be
    /// this string.
    issuer: Box<str>,
    generation: u64,
    fetched_at: SystemTime,
}

#[derive(Debug, Default)]
struct FetchState {
    discovered: Option<Discovered>,
    last_unknown_kid_fetch: Option<Instant>,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Discovered {
    issuer: String,
    jwks_uri: Url,
}

#[derive(Debug, Default)]
struct Counters {
    discovery_ok: AtomicU64,
    discovery_failed: AtomicU64,
    jwks_ok: AtomicU64,
    jwks_failed: AtomicU64,
    unknown_kid_refetches: AtomicU64,
    signature_checks: AtomicU64,
    withdrawn_key_evictions: AtomicU64,
}

/// A snapshot of a verifier's state and counters, for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierStats {
    /// Discovery done and a key set held ([`Verifier::is_ready`]).
    pub ready: bool,
    /// Usable keys in the key set in force.
    pub keys: usize,
    /// When the key set in force was fetched.
    pub keys_fetched_at: Option<SystemTime>,
    pub discovery_ok: u64,
    pub discovery_failed: u64,
    pub jwks_fetches_ok: u64,
    pub jwks_fetches_failed: u64,
    /// JWKS fetches triggered by a token with an unknown `kid` (a subset of
    /// the two counts above).
    pub unknown_kid_refetches: u64,
    /// Signature checks done, that is tokens verified without the cache.
    pub signature_checks: u64,
    pub cache_entries: usize,
    /// Estimated memory of the cache.
    pub cache_bytes: usize,
    /// Cached tokens dropped because the issuer withdrew their key.
    pub withdrawn_key_evictions: u64,
}

/// Why a check against one key set did not produce a verified token.
enum Refusal {
    /// The `kid` is not in this key set: a refetch may help.
    UnknownKid,
    Final(VerifyError),
}

impl From<VerifyError> for Refusal {
    fn from(error: VerifyError) -> Refusal {
        Refusal::Final(error)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.config.issuer.as_str())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks the configuration and builds the HTTP client (reading
    /// `ca_file`, if set). Opens no connection: nothing is fetched until
    /// [`run`](Self::run) or [`refresh`](Self::refresh).
    pub fn new(config: IssuerConfig) -> Result<Verifier, OidcError> {
        config.validate()?;
        let http = HttpClient::new(config.ca_file.as_deref(), config.http_timeout)?;
        let cache = TokenCache::new(config.cache_capacity, config.cache_max_bytes);
        Ok(Verifier {
            inner: Arc::new(Inner {
                config,
                http,
                cache,
                current: ArcSwapOption::empty(),
                fetch_attempts: AtomicU64::new(0),
                fetch: Arc::new(tokio::sync::Mutex::new(FetchState::default())),
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration this verifier was built with.
    pub fn config(&self) -> &IssuerConfig {
        &self.inner.config
    }

    /// Keeps the issuer's keys: runs discovery and fetches the JWKS, retrying
    /// with exponential backoff (capped at 30 s) until that succeeds, then
    /// refetches every `refresh_interval` (sooner, with backoff, after a
    /// failure), keeping the last good key set while the IdP is down. Also
    /// sweeps expired tokens from the cache. Returns when `shutdown`
    /// resolves. Run it once per verifier, on a task of its own.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let issuer = self.inner.config.issuer.as_str();
        let mut backoff = Backoff::default();
        loop {
            let Some(attempt) = until_shutdown(shutdown.as_mut(), self.refresh()).await else {
                return;
            };
            match attempt {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(issuer, %error, retry_in = ?delay, "cannot load the issuer's signing keys yet");
                    if until_shutdown(shutdown.as_mut(), tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        }

        backoff = Backoff::default();
        let mut next_refresh = Instant::now() + self.inner.config.refresh_interval;
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return,
                () = tokio::time::sleep_until(next_refresh) => {
                    let Some(attempt) = until_shutdown(shutdown.as_mut(), self.refresh()).await else {
                        return;
                    };
                    next_refresh = Instant::now() + match attempt {
                        Ok(()) => {
                            backoff = Backoff::default();
                            self.inner.config.refresh_interval
                        }
                        Err(error) => {
                            let delay = backoff.next_delay().min(self.inner.config.refresh_interval);
                            tracing::warn!(issuer, %error, retry_in = ?delay, "cannot refresh the issuer's signing keys; keeping the ones held");
                            delay
                        }
                    };
                }
                () = tokio::time::sleep_until(next_sweep) => {
                    let swept = self.inner.cache.sweep(SystemTime::now());
                    if swept > 0 {
                        tracing::debug!(issuer, swept, "expired tokens dropped from the cache");
                    }
                    next_sweep = Instant::now() + SWEEP_INTERVAL;
                }
            }
        }
    }

    /// Runs discovery and one JWKS fetch now (waiting for any fetch under
    /// way first). On failure the key set held, if any, stays in force.
    /// [`run`](Self::run) calls this; it is public for a start-up check and
    /// for tests.
    pub async fn refresh(&self) -> Result<(), OidcError> {
        let mut state = self.inner.fetch.lock().await;
        self.inner.refresh_all(&mut state).await
    }

    /// Whether discovery succeeded and a key set is held.
    pub fn is_ready(&self) -> bool {
        self.inner.current.load().is_some()
    }

    /// Verifies a compact JWS bearer token. A token verified before and not
    /// yet expired is answered from the cache, without a signature check
    /// and without allocating.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, VerifyError> {
        let now = SystemTime::now();
        match self.inner.cache.get(token.as_bytes(), now) {
            Some(Hit::Valid(verified)) => return Ok(verified),
            Some(Hit::Expired) => return Err(VerifyError::Expired),
            None => {}
        }
        let verified = Arc::new(self.verify_uncached(token).await?);
        self.inner.cache.insert(token.as_bytes(), Arc::clone(&verified), now);
        // The issuer may have withdrawn the key between the check and the
        // insert, and the purge of its tokens may have run before the
        // insert: then the purge missed this entry, so remove it here.
        if let Some(current) = self.inner.current.load().as_deref()
            && current.generation != verified.generation
            && !current.keys.contains_thumbprint(&verified.thumbprint)
        {
            self.inner.cache.remove_if_same(token.as_bytes(), &verified);
        }
        Ok(verified)
    }

    /// The answer for a token verified before, without waiting: `Some` on a
    /// cache hit (or a cached token that has since expired), `None` when
    /// [`Self::verify`] must check it. Lets a caller keep the slow path out
    /// of its hot future.
    /// The token is given as the header's bytes: a hit needs no UTF-8
    /// check of a token of a kilobyte or more.
    pub fn cached(&self, token: &[u8]) -> Option<Result<Arc<VerifiedToken>, VerifyError>> {
        match self.inner.cache.get(token, SystemTime::now())? {
            Hit::Valid(verified) => Some(Ok(verified)),
            Hit::Expired => Some(Err(VerifyError::Expired)),
        }
    }

    /// Verifies a token in full, neither reading nor filling the cache (for
    /// diagnostics and benchmarks). An unknown `kid` still triggers a
    /// refetch.
    pub async fn verify_uncached(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let compact = Compact::parse(token)?;
        let attempts_seen = self.inner.fetch_attempts.load(Ordering::Acquire);
        let snapshot = self.inner.current.load_full().ok_or(VerifyError::KeysUnavailable)?;
        match self.inner.check(&compact, &snapshot) {
            Ok(verified) => return Ok(verified),
            Err(Refusal::Final(error)) => return Err(error),
            Err(Refusal::UnknownKid) => {}
        }
        let unknown = || VerifyError::UnknownKey(format!("no key with kid {:?}", unknown_kid(&compact)));
        if !self.refetch_for_unknown_kid(attempts_seen).await {
            return Err(unknown());
        }
        let snapshot = self.inner.current.load_full().ok_or(VerifyError::KeysUnavailable)?;
        match self.inner.check(&compact, &snapshot) {
            Ok(verified) => Ok(verified),
            Err(Refusal::Final(error)) => Err(error),
            Err(Refusal::UnknownKid) => Err(unknown()),
        }
    }

    /// Drops every cached token (they will be verified in full again).
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Counters and state, for metrics and health.
    pub fn stats(&self) -> VerifierStats {
        let c = &self.inner.counters;
        let current = self.inner.current.load();
        VerifierStats {
            ready: current.is_some(),
            keys: current.as_ref().map_or(0, |s| s.keys.len()),
            keys_fetched_at: current.as_ref().map(|s| s.fetched_at),
            discovery_ok: c.discovery_ok.load(Ordering::Relaxed),
            discovery_failed: c.discovery_failed.load(Ordering::Relaxed),
            jwks_fetches_ok: c.jwks_ok.load(Ordering::Relaxed),
            jwks_fetches_failed: c.jwks_failed.load(Ordering::Relaxed),
            unknown_kid_refetches: c.unknown_kid_refetches.load(Ordering::Relaxed),
            signature_checks: c.signature_checks.load(Ordering::Relaxed),
            cache_entries: self.inner.cache.len(),
            cache_bytes: self.inner.cache.bytes(),
            withdrawn_key_evictions: c.withdrawn_key_evictions.load(Ordering::Relaxed),
        }
    }

    /// After a token's `kid` was not found: waits for the fetch lock, and
    /// fetches the JWKS unless a fetch was attempted since the caller looked
    /// (then the caller just looks again) or the last unknown-`kid` fetch is
    /// too recent. Returns whether looking again may help.
    async fn refetch_for_unknown_kid(&self, attempts_seen: u64) -> bool {
        let mut state = Arc::clone(&self.inner.fetch).lock_owned().await;
        if self.inner.fetch_attempts.load(Ordering::Acquire) != attempts_seen {
            return true;
        }
        let min_interval = self.inner.config.unknown_kid_min_interval;
        if state
            .last_unknown_kid_fetch
            .is_some_and(|at| at.elapsed() < min_interval)
        {
            return false;
        }
        state.last_unknown_kid_fetch = Some(Instant::now());
        self.inner
            .counters
            .unknown_kid_refetches
            .fetch_add(1, Ordering::Relaxed);
        // The fetch runs on its own task, holding the lock: if this caller
        // goes away (its client disconnected), the fetch still completes for
        // everyone queued behind it.
        let inner = Arc::clone(&self.inner);
        let fetch = tokio::spawn(async move {
            let result = inner.refresh_jwks(&mut state).await;
            if let Err(error) = &result {
                tracing::warn!(issuer = inner.config.issuer.as_str(), %error, "refetching the JWKS for an unknown kid failed");
            }
            result.is_ok()
        });
        fetch.await.unwrap_or(false)
    }
}

impl Inner {
    /// Checks a parsed token against one key set.
    fn check(&self, compact: &Compact<'_>, snapshot: &Snapshot) -> Result<VerifiedToken, Refusal> {
        let key = match snapshot.keys.select(compact.kid.as_deref(), compact.alg) {
            Ok(key) => key,
            Err(Selection::UnknownKid) => return Err(Refusal::UnknownKid),
            Err(Selection::KidRequired) => {
                return Err(
                    VerifyError::UnknownKey("token has no kid and the issuer has several keys".to_owned()).into(),
                );
            }
            Err(Selection::AlgorithmMismatch) => {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "{} is not the algorithm of the key with kid {:?}",
                    compact.alg,
                    unknown_kid(compact)
                ))
                .into());
            }
        };
        let signature = jose::decode(compact.signature).ok_or(VerifyError::Malformed("signature is not base64url"))?;
        self.counters.signature_checks.fetch_add(1, Ordering::Relaxed);
        if !key.verify(compact.alg, compact.signing_input.as_bytes(), &signature) {
            return Err(VerifyError::BadSignature.into());
        }
        let payload = jose::decode(compact.payload).ok_or(VerifyError::Malformed("payload is not base64url"))?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed("payload is not a JSON object"))?;
        let rules = Rules {
            issuer: &snapshot.issuer,
            audiences: &self.config.audiences,
            leeway: self.config.leeway,
        };
        let key_info = KeyInfo {
            algorithm: compact.alg,
            key_id: key.kid.clone(),
            thumbprint: key.thumbprint,
            generation: snapshot.generation,
        };
        Ok(token::check(claims, &rules, key_info, SystemTime::now())?)
    }

    /// Discovery, then the JWKS. A failed discovery is not fatal once an
    /// earlier one succeeded: the JWKS location found then is used.
    async fn refresh_all(&self, state: &mut FetchState) -> Result<(), OidcError> {
        match self.discover().await {
            Ok(discovered) => state.discovered = Some(discovered),
            Err(error) if state.discovered.is_some() => {
                tracing::warn!(issuer = self.config.issuer.as_str(), %error, "discovery failed; using the JWKS location found earlier");
            }
            Err(error) => return Err(error),
        }
        self.refresh_jwks(state).await
    }

    async fn discover(&self) -> Result<Discovered, OidcError> {
        let result = self.try_discover().await;
        let counter = match result {
            Ok(_) => &self.counters.discovery_ok,
            Err(_) => &self.counters.discovery_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn try_discover(&self) -> Result<Discovered, OidcError> {
        #[derive(Deserialize)]
        struct Document {
            issuer: String,
            jwks_uri: String,
        }
        let url = self.config.discovery_url();
        let failed = |reason: String| OidcError::Discovery {
            url: url.to_string(),
            reason,
        };
        let body = self.http.get(&url).await.map_err(failed)?;
        let document: Document =
            serde_json::from_slice(&body).map_err(|e| failed(format!("not a discovery document: {e}")))?;
        if !config::issuer_matches(&self.config.issuer, &document.issuer) {
            return Err(OidcError::IssuerMismatch {
                url: url.to_string(),
                announced: jose::shorten(&document.issuer).to_owned(),
                configured: self.config.issuer.to_string(),
            });
        }
        let jwks_uri = Url::parse(&document.jwks_uri).map_err(|e| failed(format!("jwks_uri is not a URL: {e}")))?;
        config::check_fetch_url("jwks_uri", &jwks_uri)?;
        Ok(Discovered {
            issuer: document.issuer,
            jwks_uri,
        })
    }

    /// Fetches the JWKS and puts it in force. Runs discovery first if it
    /// never succeeded.
    async fn refresh_jwks(&self, state: &mut FetchState) -> Result<(), OidcError> {
        let discovered = match &state.discovered {
            Some(discovered) => discovered.clone(),
            None => {
                let discovered = self.discover().await?;
                state.discovered = Some(discovered.clone());
                discovered
            }
        };
        let url = &discovered.jwks_uri;
        let result = async {
            let body = self.http.get(url).await?;
            let keys = KeySet::parse(&body)?;
            if keys.is_empty() {
                return Err("holds no usable signing key".to_owned());
            }
            Ok(keys)
        }
        .await;
        let outcome = match result {
            Ok(keys) => {
                self.counters.jwks_ok.fetch_add(1, Ordering::Relaxed);
                state.generation += 1;
                self.install(keys, &discovered.issuer, state.generation);
                Ok(())
            }
            Err(reason) => {
                self.counters.jwks_failed.fetch_add(1, Ordering::Relaxed);
                Err(OidcError::Jwks {
                    url: url.to_string(),
                    reason,
                })
            }
        };
        self.fetch_attempts.fetch_add(1, Ordering::Release);
        outcome
    }

    /// Puts a key set in force and drops cached tokens of withdrawn keys.
    fn install(&self, keys: KeySet, issuer: &str, generation: u64) {
        let snapshot = Arc::new(Snapshot {
            keys,
            issuer: issuer.into(),
            generation,
            fetched_at: SystemTime::now(),
        });
        let previous = self.current.swap(Some(Arc::clone(&snapshot)));
        let issuer = self.config.issuer.as_str();
        let Some(previous) = previous else {
            tracing::info!(issuer, kids = ?snapshot.keys.kids(), "issuer signing keys loaded");
            return;
        };
        let withdrawn: Vec<[u8; 32]> = previous
            .keys
            .thumbprints()
            .filter(|t| !snapshot.keys.contains_thumbprint(t))
            .copied()
            .collect();
        let added = snapshot
            .keys
            .thumbprints()
            .any(|t| !previous.keys.contains_thumbprint(t));
        if withdrawn.is_empty() && !added {
            return;
        }
        let dropped = if withdrawn.is_empty() {
            0
        } else {
            self.cache.retain_keys(|t| !withdrawn.contains(t))
        };
        self.counters
            .withdrawn_key_evictions
            .fetch_add(dropped as u64, Ordering::Relaxed);
        tracing::info!(
            issuer,
            kids = ?snapshot.keys.kids(),
            withdrawn = withdrawn.len(),
            cached_tokens_dropped = dropped,
            "issuer signing keys changed"
        );
    }
}

/// The token's `kid` for a message, shortened (the sender chose it).
fn unknown_kid<'a>(compact: &'a Compact<'_>) -> &'a str {
    compact.kid.as_deref().map_or("(none)", jose::shorten)
}

/// Runs `work` unless `shutdown` resolves first (`None` then).
async fn until_shutdown<S, W>(shutdown: Pin<&mut S>, work: W) -> Option<W::Output>
where
    S: Future<Output = ()>,
    W: Future,
{
    tokio::select! {
        biased;
        () = shutdown => None,
        output = work => Some(output),
    }
}

/// Exponential backoff from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], each delay
/// shortened by up to a quarter so that several Portcullis instances do not
/// hit a recovering IdP in step.
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let full = BACKOFF_FIRST
            .saturating_mul(1 << self.attempts.min(16))
            .min(BACKOFF_MAX);
        self.attempts = self.attempts.saturating_add(1);
        // Jitter needs no real randomness; the clock's nanoseconds will do.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        full - full.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= BACKOFF_FIRST && delays[0] >= BACKOFF_FIRST * 3 / 4);
        assert!(delays[1] >= BACKOFF_FIRST * 2 * 3 / 4);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[11] >= BACKOFF_MAX * 3 / 4);
    }
}
