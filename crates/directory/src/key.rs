//! Internal keys: every resource id is a UUID the directory generated, held
//! in the maps as a `u128` rather than as text.
//!
//! A `u128` key is compared without following a pointer, hashes in a few
//! instructions, and takes 16 bytes in a membership set; at a million
//! memberships that decides whether a lookup misses the CPU cache once or
//! three times and whether the directory fits its memory budget.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashMap;

use crate::model::Id;

pub(crate) type Key = u128;

/// The key of a resource id, or `None` if it is not an id this directory
/// could have generated (lower-case hyphenated UUID): such an id names
/// nothing, so lookups with it find nothing.
pub(crate) fn key_of(id: &str) -> Option<Key> {
    if id.len() != 36 || id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    uuid::Uuid::try_parse(id).ok().map(|u| u.as_u128())
}

/// A fresh random id and its key.
pub(crate) fn new_id() -> (Key, Id) {
    let u = uuid::Uuid::new_v4();
    (u.as_u128(), Id::from(u.hyphenated().to_string()))
}

/// The text form of a key.
pub(crate) fn id_of(key: Key) -> String {
    uuid::Uuid::from_u128(key).hyphenated().to_string()
}

/// Hashes a `u128` key by mixing its halves. Keys are random UUIDs that only
/// the directory creates, so nobody outside can aim collisions at a map;
/// looking up a chosen key costs one probe like any other.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; a plain FNV-1a keeps it correct anyway.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, n: u128) {
        let folded = (n as u64) ^ ((n >> 64) as u64);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type KeyBuild = BuildHasherDefault<KeyHasher>;
pub(crate) type KeyMap<V> = DashMap<Key, V, KeyBuild>;
pub(crate) type KeySet = HashSet<Key, KeyBuild>;

/// A small sorted set of keys (a user's direct groups, a group's parents):
/// a few entries, so a vector beats a hash set in both time and space.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SmallKeys(Vec<Key>);

impl SmallKeys {
    pub(crate) fn insert(&mut self, k: Key) {
        if let Err(pos) = self.0.binary_search(&k) {
            self.0.insert(pos, k);
        }
    }

    pub(crate) fn remove(&mut self, k: Key) {
        if let Ok(pos) = self.0.binary_search(&k) {
            self.0.remove(pos);
        }
    }

    pub(crate) fn contains(&self, k: Key) -> bool {
        self.0.binary_search(&k).is_ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Key> + '_ {
        self.0.iter().copied()
    }
}
