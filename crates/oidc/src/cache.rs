//! The verified-token cache: the proxy's hot path.
//!
//! A token that verified once is answered from here until it expires,
//! without a signature check. The key is the **full token**, as the bytes
//! of the `Authorization` header (a hit needs no UTF-8 check of them): a lookup
//! compares the whole token, so a token that differs from a cached one in any
//! byte is a miss and gets verified in full. Only the *hash* that picks the
//! bucket is taken from the token's last bytes (the end of its signature),
//! which makes a hit cost a short hash plus one comparison rather than
//! hashing kilobytes. That is safe because only verified tokens are ever
//! inserted: distinct valid tokens have distinct signatures, and nobody
//! without the issuer's key can make valid tokens that share a tail, while a
//! forged token sharing one only lands in a bucket where the full comparison
//! fails.
//!
//! A hit is a shard read lock, that short hash, a comparison, a clock read
//! and an `Arc` clone: no allocation. The cache is bounded by entries and by
//! estimated bytes; expired entries are dropped when met, by the periodic
//! sweep, and first when room is needed. Failures are never cached.
//!
//! What it does not do: verify anything (the verifier decides what goes in),
//! or keep entries of keys the issuer withdrew (the verifier purges them
//! through [`TokenCache::retain_keys`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;

use crate::VerifiedToken;

/// How many trailing bytes of a token feed the bucket hash: 16 base64url
/// characters of its signature, 96 bits that differ between any two valid
/// tokens.
const HASHED_TAIL: usize = 16;

/// What a cache lookup found.
#[derive(Debug)]
pub(crate) enum Hit {
    Valid(Arc<VerifiedToken>),
    /// The token was cached but has expired since; the entry is gone now.
    Expired,
}

#[derive(Debug)]
pub(crate) struct TokenCache {
    map: DashMap<Box<[u8]>, Arc<VerifiedToken>, TailHash>,
    entries: AtomicUsize,
    bytes: AtomicUsize,
    max_entries: usize,
    max_bytes: usize,
    /// Held while making room, so that a burst of inserts into a full cache
    /// runs one eviction rather than one per insert.
    evicting: parking_lot::Mutex<()>,
}

impl TokenCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> TokenCache {
        TokenCache {
            map: DashMap::with_hasher(TailHash::random()),
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_entries,
            max_bytes,
            evicting: parking_lot::Mutex::new(()),
        }
    }

    /// The cached verification of `token`, if any.
    #[inline]
    pub(crate) fn get(&self, token: &[u8], now: SystemTime) -> Option<Hit> {
        let entry = self.map.get(token)?;
        if now < entry.valid_until {
            return Some(Hit::Valid(Arc::clone(entry.value())));
        }
        let expired = Arc::clone(entry.value());
        drop(entry);
        self.remove_if_same(token, &expired);
        Some(Hit::Expired)
    }

    /// Caches a verified token, making room first if the cache is full. If
    /// room cannot be made at once (another thread is evicting), the token is
    /// simply not cached: it will be verified again next time.
    pub(crate) fn insert(&self, token: &[u8], verified: Arc<VerifiedToken>, now: SystemTime) {
        if self.max_entries == 0 {
            return;
        }
        let cost = cost(token);
        if self.entries.load(Ordering::Relaxed) >= self.max_entries
            || self.bytes.load(Ordering::Relaxed) + cost > self.max_bytes
        {
            let Some(_guard) = self.evicting.try_lock() else {
                return;
            };
            self.make_room(now);
            if self.entries.load(Ordering::Relaxed) >= self.max_entries
                || self.bytes.load(Ordering::Relaxed) + cost > self.max_bytes
            {
                return;
            }
        }
        if self.map.insert(Box::from(token), verified).is_none() {
            self.entries.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(cost, Ordering::Relaxed);
        }
    }

    /// Removes `token` if it still maps to `verified` (and not to a newer
    /// verification of the same token made in between).
    pub(crate) fn remove_if_same(&self, token: &[u8], verified: &Arc<VerifiedToken>) {
        if self.map.remove_if(token, |_, v| Arc::ptr_eq(v, verified)).is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(cost(token), Ordering::Relaxed);
        }
    }

    /// Drops expired entries; returns how many.
    pub(crate) fn sweep(&self, now: SystemTime) -> usize {
        self.retain(|v| now < v.valid_until)
    }

    /// Drops entries verified with a key for which `keep` says no.
    pub(crate) fn retain_keys(&self, keep: impl Fn(&[u8; 32]) -> bool) -> usize {
        self.retain(|v| keep(&v.thumbprint))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        self.retain(|_| false);
    }

    fn retain(&self, keep: impl Fn(&VerifiedToken) -> bool) -> usize {
        let mut removed = 0usize;
        self.map.retain(|token, v| {
            if keep(v) {
                return true;
            }
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(cost(token), Ordering::Relaxed);
            removed += 1;
            false
        });
        removed
    }

    /// Drops expired entries, then (if still over seven eighths of either
    /// limit) arbitrary ones until under it. Arbitrary is good enough: an
    /// evicted token costs one signature check when it comes back.
    fn make_room(&self, now: SystemTime) {
        self.sweep(now);
        let target_entries = self.max_entries - self.max_entries / 8;
        let target_bytes = self.max_bytes - self.max_bytes / 8;
        if self.len() <= target_entries && self.bytes() <= target_bytes {
            return;
        }
        let mut excess_entries = self.len().saturating_sub(target_entries);
        let mut excess_bytes = self.bytes().saturating_sub(target_bytes);
        self.map.retain(|token, _| {
            if excess_entries == 0 && excess_bytes == 0 {
                return true;
            }
            let cost = cost(token);
            excess_entries = excess_entries.saturating_sub(1);
            excess_bytes = excess_bytes.saturating_sub(cost);
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(cost, Ordering::Relaxed);
            false
        });
    }
}

/// Estimated memory of one entry: the token text, its claims (about as much
/// again once parsed into a map) and fixed overhead.
fn cost(token: &[u8]) -> usize {
    2 * token.len() + 256
}

/// The bucket hash: the last [`HASHED_TAIL`] bytes of a key, read as two
/// words, each mixed with a per-cache random key by a folded multiply.
/// Not SipHash: the tail of a verified token is signature, which nobody
/// without the issuer's key can choose, so there is nothing to flood (see
/// the module documentation); a forged token picks a bucket where the full
/// comparison fails. SipHash over the tail cost more than the rest of a
/// cache hit together.
#[derive(Debug, Clone)]
struct TailHash {
    k0: u64,
    k1: u64,
}

impl TailHash {
    fn random() -> TailHash {
        // std's per-process random seed, through its own hasher; odd
        // multipliers keep every bit of the tail in play.
        let seed = RandomState::new();
        TailHash {
            k0: seed.hash_one(0u8) | 1,
            k1: seed.hash_one(1u8) | 1,
        }
    }
}

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher {
            keys: (self.k0, self.k1),
            state: 0,
        }
    }
}

struct TailHasher {
    keys: (u64, u64),
    state: u64,
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut tail = [0u8; HASHED_TAIL];
        let start = bytes.len().saturating_sub(HASHED_TAIL);
        tail[HASHED_TAIL - (bytes.len() - start)..].copy_from_slice(&bytes[start..]);
        let (a, b) = tail.split_at(8);
        let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
        self.state ^= folded_multiply(a ^ self.keys.0, b ^ self.keys.1);
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix `[u8]` hashes first.
        self.state = folded_multiply(self.state ^ n as u64, self.keys.0);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token(i: usize, until: SystemTime) -> (Vec<u8>, Arc<VerifiedToken>) {
        // Same tail for every token: the full comparison must tell them apart.
        let text = format!("header{i}.payload.{}", "s".repeat(100)).into_bytes();
        let verified = VerifiedToken::for_tests(until, [0; 32]);
        (text, Arc::new(verified))
    }

    #[test]
    fn the_bucket_hash_is_taken_from_the_tail() {
        let build = TailHash::random();
        let hash = |key: &[u8]| build.hash_one(key);
        let head_a = b"aaaa.bbbb.0123456789abcdefghij".as_slice();
        let head_b = b"zzzz.yyyy.0123456789abcdefghij".as_slice();
        assert_eq!(hash(head_a), hash(head_b), "only the last bytes count");
        // Any byte of the tail moves the hash; so does the length.
        let mut seen = std::collections::HashSet::new();
        for i in 0..HASHED_TAIL {
            let mut key = head_a.to_vec();
            let at = key.len() - 1 - i;
            key[at] ^= 1;
            assert!(seen.insert(hash(&key)), "tail byte {i} did not change the hash");
        }
        assert_ne!(hash(b"abc"), hash(b"abd"));
        assert_ne!(hash(b""), hash(b"\0"));
        assert!(seen.insert(hash(b"short")));
    }

    #[test]
    fn hits_compare_the_full_token() {
        let now = SystemTime::now();
        let cache = TokenCache::new(100, 1 << 20);
        let (a, va) = token(1, now + Duration::from_secs(60));
        let (b, _) = token(2, now + Duration::from_secs(60));
        cache.insert(&a, va.clone(), now);
        match cache.get(&a, now) {
            Some(Hit::Valid(v)) => assert!(Arc::ptr_eq(&v, &va)),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert!(cache.get(&b, now).is_none(), "same tail, different token");
        assert!(cache.get(&a[..a.len() - 1], now).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn entries_expire() {
        let now = SystemTime::now();
        let cache = TokenCache::new(100, 1 << 20);
        let (a, va) = token(1, now + Duration::from_secs(10));
        cache.insert(&a, va, now);
        assert!(matches!(
            cache.get(&a, now + Duration::from_secs(9)),
            Some(Hit::Valid(_))
        ));
        assert!(matches!(
            cache.get(&a, now + Duration::from_secs(10)),
            Some(Hit::Expired)
        ));
        assert!(cache.get(&a, now).is_none(), "the expired entry was dropped");
        assert_eq!((cache.len(), cache.bytes()), (0, 0));

        let (b, vb) = token(2, now + Duration::from_secs(10));
        cache.insert(&b, vb, now);
        assert_eq!(cache.sweep(now + Duration::from_secs(5)), 0);
        assert_eq!(cache.sweep(now + Duration::from_secs(11)), 1);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn size_is_bounded_by_entries_and_bytes() {
        let now = SystemTime::now();
        let cache = TokenCache::new(64, 1 << 30);
        for i in 0..1000 {
            let (t, v) = token(i, now + Duration::from_secs(60));
            cache.insert(&t, v, now);
            assert!(cache.len() <= 64);
        }
        assert!(cache.len() > 48, "eviction keeps most of the cache: {}", cache.len());
        assert_eq!(cache.len(), cache.map.len());

        let (probe, _) = token(0, now);
        let per_entry = cost(&probe);
        let cache = TokenCache::new(1_000_000, 10 * per_entry);
        for i in 0..100 {
            let (t, v) = token(i, now + Duration::from_secs(60));
            cache.insert(&t, v, now);
            assert!(cache.bytes() <= 10 * per_entry);
        }
        assert!(cache.len() >= 8);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let now = SystemTime::now();
        let cache = TokenCache::new(10, 1 << 30);
        for i in 0..10 {
            let until = if i < 5 {
                now + Duration::from_secs(1)
            } else {
                now + Duration::from_secs(60)
            };
            let (t, v) = token(i, until);
            cache.insert(&t, v, now);
        }
        let later = now + Duration::from_secs(2);
        let (t, v) = token(10, later + Duration::from_secs(60));
        cache.insert(&t, v, later);
        assert_eq!(cache.len(), 6);
        for i in 5..=10 {
            let (t, _) = token(i, now);
            assert!(matches!(cache.get(&t, later), Some(Hit::Valid(_))), "{i} kept");
        }
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let now = SystemTime::now();
        let cache = TokenCache::new(0, 1 << 20);
        let (t, v) = token(1, now + Duration::from_secs(60));
        cache.insert(&t, v, now);
        assert!(cache.get(&t, now).is_none());
    }

    #[test]
    fn entries_of_withdrawn_keys_can_be_dropped() {
        let now = SystemTime::now();
        let cache = TokenCache::new(10, 1 << 20);
        let until = now + Duration::from_secs(60);
        cache.insert(b"a.b.c", Arc::new(VerifiedToken::for_tests(until, [1; 32])), now);
        cache.insert(b"d.e.f", Arc::new(VerifiedToken::for_tests(until, [2; 32])), now);
        assert_eq!(cache.retain_keys(|t| t != &[1; 32]), 1);
        assert!(cache.get(b"a.b.c", now).is_none());
        assert!(cache.get(b"d.e.f", now).is_some());
        cache.clear();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
