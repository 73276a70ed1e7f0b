//! Role identifiers and the fixed-size role bitset used on the hot path.
//!
//! Roles are interned to small integers at compile time so that a user's
//! effective roles fit in a [`RoleSet`] that lives on the stack: computing and
//! testing it never allocates. The price is a hard limit of [`MAX_ROLES`]
//! roles per policy, enforced by the compiler with a located error. This
//! module does not know role names; [`crate::Policy`] maps ids to names.

use std::fmt;

/// Number of 64-bit words in a [`RoleSet`].
const WORDS: usize = 16;

/// The largest number of roles a policy may define.
pub const MAX_ROLES: usize = WORDS * 64;

/// A role interned by the policy compiler; valid only for the
/// [`crate::Policy`] that produced it. Ids follow definition order (files in
/// the order given, roles in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleId(u16);

impl RoleId {
    /// Creates an id from an index below [`MAX_ROLES`].
    pub(crate) fn new(index: usize) -> Option<Self> {
        if index < MAX_ROLES {
            u16::try_from(index).ok().map(Self)
        } else {
            None
        }
    }

    /// The index of the role in its policy's role table.
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A short list of roles stored inline (no pointer to follow) when it has
/// at most [`RoleList::INLINE`] entries, which is the common case for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleList {
    len: usize,
    inline: [RoleId; RoleList::INLINE],
    spill: Box<[RoleId]>,
}

impl RoleList {
    const INLINE: usize = 4;

    pub(crate) fn new(roles: &[RoleId]) -> Self {
        let mut inline = [RoleId(0); Self::INLINE];
        let spill: Box<[RoleId]> = if roles.len() <= Self::INLINE {
            for (dst, src) in inline.iter_mut().zip(roles) {
                *dst = *src;
            }
            Box::new([])
        } else {
            roles.into()
        };
        Self {
            len: roles.len(),
            inline,
            spill,
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[RoleId] {
        self.inline.get(..self.len).unwrap_or(&self.spill)
    }
}

/// A set of roles, as a fixed-size bitset (128 bytes, `Copy`, no heap).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoleSet {
    words: [u64; WORDS],
}

impl RoleSet {
    /// The empty set.
    #[must_use]
    pub const fn new() -> Self {
        Self { words: [0; WORDS] }
    }

    #[inline]
    pub(crate) fn insert(&mut self, role: RoleId) {
        let i = role.index();
        if let Some(word) = self.words.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    /// Whether `role` is in the set.
    #[inline]
    #[must_use]
    pub fn contains(&self, role: RoleId) -> bool {
        let i = role.index();
        self.words.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    /// The roles in both sets.
    #[inline]
    #[must_use]
    pub fn intersection(&self, other: &Self) -> Self {
        let mut words = self.words;
        for (w, o) in words.iter_mut().zip(&other.words) {
            *w &= o;
        }
        Self { words }
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Number of roles in the set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The roles in the set, in id (definition) order.
    #[must_use]
    pub fn iter(&self) -> RoleSetIter {
        RoleSetIter {
            words: self.words,
            word: 0,
        }
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(RoleId::index)).finish()
    }
}

impl IntoIterator for &RoleSet {
    type Item = RoleId;
    type IntoIter = RoleSetIter;

    fn into_iter(self) -> RoleSetIter {
        self.iter()
    }
}

/// Iterator over the roles of a [`RoleSet`], in id order.
#[derive(Debug, Clone)]
pub struct RoleSetIter {
    words: [u64; WORDS],
    word: usize,
}

impl Iterator for RoleSetIter {
    type Item = RoleId;

    #[inline]
    fn next(&mut self) -> Option<RoleId> {
        while let Some(bits) = self.words.get_mut(self.word) {
            if *bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                *bits &= *bits - 1;
                return RoleId::new(self.word * 64 + bit);
            }
            self.word += 1;
        }
        None
    }
}
