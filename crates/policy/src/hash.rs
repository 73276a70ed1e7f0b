//! Fast, non-cryptographic hashing and a small open-addressing string table
//! for the evaluator's lookups (group names, route names), plus
//! allocation-free case-insensitive hashing and comparison for user names.
//!
//! The tables are built only from policy files and configuration, which are
//! trusted; request data is only ever *looked up*, and lookups cannot grow a
//! table, so the lack of HashDoS resistance is acceptable here. Do not use
//! these for maps whose keys come from requests. The table stores the full
//! 64-bit hash of each key and compares strings only when hashes agree, which
//! keeps a lookup to one hash computation and (usually) one string compare.

#[cfg(test)]
mod tests;

/// Odd constants (digits of pi) for the folded multiplications.
const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7345;

/// The 128-bit product of `a` and `b`, high half xor-ed into the low half
/// (the mixing step of foldhash and wyhash): every input bit affects every
/// output bit, in both directions.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Little-endian `u64` from up to 8 bytes (missing bytes are zero).
#[inline]
pub(crate) fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    for (dst, src) in w.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u64::from_le_bytes(w)
}

/// Hashes a byte string: 8 bytes per step, length mixed in.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = K2 ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h = folded_multiply(h ^ word(chunk), K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = folded_multiply(h ^ word(rest), K1);
    }
    folded_multiply(h, K2)
}

/// Feeds bytes one at a time into the same word-wise scheme as
/// [`hash_bytes`], so that a streamed string hashes like the whole string.
#[derive(Debug)]
struct Stream {
    h: u64,
    buf: [u8; 8],
    len: usize,
    total: u64,
}

impl Stream {
    fn new() -> Self {
        Self {
            h: 0,
            buf: [0; 8],
            len: 0,
            total: 0,
        }
    }

    #[inline]
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
        }
        self.len += 1;
        self.total += 1;
        if self.len == 8 {
            self.h = folded_multiply(self.h ^ u64::from_le_bytes(self.buf), K1);
            self.len = 0;
        }
    }

    fn finish(mut self) -> u64 {
        if self.len > 0 {
            let rest = word(self.buf.get(..self.len).unwrap_or(&[]));
            self.h = folded_multiply(self.h ^ rest, K1);
        }
        folded_multiply(self.h ^ self.total, K2)
    }
}

/// Hashes `s` as if it had been lower-cased with [`char::to_lowercase`] (and
/// encoded as UTF-8), without allocating; ASCII strings take a fast path.
pub(crate) fn hash_lowercase(s: &str) -> u64 {
    let mut stream = Stream::new();
    if s.is_ascii() {
        for &b in s.as_bytes() {
            stream.push(b.to_ascii_lowercase());
        }
    } else {
        let mut buf = [0u8; 4];
        for c in s.chars().flat_map(char::to_lowercase) {
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                stream.push(b);
            }
        }
    }
    stream.finish()
}

/// Compares `a` and `b` after lower-casing both with [`char::to_lowercase`],
/// without allocating; ASCII strings take a fast path.
pub(crate) fn eq_lowercase(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Byte-string equality for short keys without a `memcmp` call.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if word(x) != word(y) {
            return false;
        }
    }
    word(ca.remainder()) == word(cb.remainder())
}

/// A slot: the key's full hash, where the key is in the arena, and the
/// value's index + 1 (0 marks an empty slot). Everything a lookup needs
/// before the final string compare is in this one small struct.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    key_start: u32,
    key_len: u32,
    index: u32,
}

const EMPTY: Slot = Slot {
    hash: 0,
    key_start: 0,
    key_len: 0,
    index: 0,
};

/// An immutable string-keyed table with linear probing, at most half full,
/// with all keys in one contiguous arena.
#[derive(Debug, Clone)]
pub(crate) struct StrTable<V> {
    slots: Box<[Slot]>,
    arena: Box<str>,
    values: Box<[V]>,
}

impl<V> Default for StrTable<V> {
    fn default() -> Self {
        Self {
            slots: Box::new([]),
            arena: Box::from(""),
            values: Box::new([]),
        }
    }
}

impl<V> StrTable<V> {
    /// Builds a table; on duplicate keys the first entry wins. Keys beyond
    /// `u32` offsets are ignored (far beyond any policy).
    pub(crate) fn new(entries: impl IntoIterator<Item = (Box<str>, V)>) -> Self {
        let (keys, values): (Vec<Box<str>>, Vec<V>) = entries.into_iter().unzip();
        let capacity = (keys.len() * 2).next_power_of_two().max(8);
        let mask = capacity - 1;
        let mut slots = vec![EMPTY; capacity];
        let mut arena = String::new();
        'keys: for (i, key) in keys.iter().enumerate() {
            let (Ok(index), Ok(key_start), Ok(key_len)) = (
                u32::try_from(i + 1),
                u32::try_from(arena.len()),
                u32::try_from(key.len()),
            ) else {
                break;
            };
            let hash = hash_bytes(key.as_bytes());
            let mut pos = (hash as usize) & mask;
            loop {
                let Some(slot) = slots.get_mut(pos) else { break 'keys };
                if slot.index == 0 {
                    *slot = Slot {
                        hash,
                        key_start,
                        key_len,
                        index,
                    };
                    arena.push_str(key);
                    break;
                }
                let existing = arena.get(slot.key_start as usize..(slot.key_start + slot.key_len) as usize);
                if slot.hash == hash && existing == Some(&**key) {
                    break;
                }
                pos = (pos + 1) & mask;
            }
        }
        Self {
            slots: slots.into(),
            arena: arena.into(),
            values: values.into(),
        }
    }

    /// Number of distinct keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.index != 0).count()
    }

    /// Every key with its value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.slots.iter().filter(|s| s.index != 0).filter_map(|s| {
            let key = self
                .arena
                .get(s.key_start as usize..(s.key_start + s.key_len) as usize)?;
            let value = self.values.get(s.index as usize - 1)?;
            Some((key, value))
        })
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value for `key`. Never allocates.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let hash = hash_bytes(key.as_bytes());
        let mut pos = (hash as usize) & mask;
        // At most half full, so an empty slot ends every probe sequence;
        // the bound only guards against a broken invariant.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(pos)?;
            if slot.index == 0 {
                return None;
            }
            if slot.hash == hash && slot.key_len as usize == key.len() {
                let start = slot.key_start as usize;
                let stored = self.arena.as_bytes().get(start..start + key.len());
                if stored.is_some_and(|k| bytes_eq(k, key.as_bytes())) {
                    return self.values.get(slot.index as usize - 1);
                }
            }
            pos = (pos + 1) & mask;
        }
        None
    }
}

/// An immutable `u64 -> (u32, u32)` table with linear probing, at most half
/// full; used to find the rules whose literal prefix a path starts with.
#[derive(Debug, Clone, Default)]
pub(crate) struct U64Table {
    /// `(key, start, end)`; `end == 0` marks an empty slot (stored ranges
    /// are never empty, so their `end` is at least 1).
    slots: Box<[(u64, u32, u32)]>,
}

impl U64Table {
    /// Builds a table from keys with non-empty ranges; on duplicate keys the
    /// first entry wins.
    pub(crate) fn new(entries: &[(u64, u32, u32)]) -> Self {
        let capacity = (entries.len() * 2).next_power_of_two().max(4);
        let mask = capacity - 1;
        let mut slots = vec![(0, 0, 0); capacity];
        for &(key, start, end) in entries.iter().filter(|e| e.2 > e.1) {
            let mut pos = (folded_multiply(key, K1) as usize) & mask;
            while let Some(slot) = slots.get_mut(pos) {
                if slot.2 == 0 {
                    *slot = (key, start, end);
                    break;
                }
                if slot.0 == key {
                    break;
                }
                pos = (pos + 1) & mask;
            }
        }
        Self { slots: slots.into() }
    }

    /// The range stored for `key`. Never allocates.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<(u32, u32)> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut pos = (folded_multiply(key, K1) as usize) & mask;
        for _ in 0..self.slots.len() {
            let &(k, start, end) = self.slots.get(pos)?;
            if end == 0 {
                return None;
            }
            if k == key {
                return Some((start, end));
            }
            pos = (pos + 1) & mask;
        }
        None
    }
}
