//! The in-memory directory: users, groups, membership in both directions,
//! secondary indexes and precomputed principals, kept current over the
//! durable [`Store`](crate::store).
//!
//! Reads go straight to `dashmap` maps and never wait for a writer beyond a
//! shard lock held for a single map operation; an authorization lookup is one
//! map read returning an `Arc<Principal>`. No guard is ever held across an
//! `.await`.
//!
//! Writes are serialized by one writer lock (a blocking mutex, held only for
//! the synchronous part of a write: validate, apply the sled batch, update
//! the maps). Durability is awaited *after* the lock is released, so
//! concurrent writers share group-committed flushes.
//!
//! Visibility: a change is visible to readers as soon as its batch is
//! applied, which may be up to one group commit (about a flush, ~100 µs)
//! before it is durable; it is acknowledged to the caller and published as an
//! event only once durable. If a flush ever fails, the in-memory state may be
//! ahead of the disk, so the directory refuses every further write
//! (fail-stop) and [`Directory::health`] reports it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::error::{DirectoryError, ResourceKind, StoreError};
use crate::events::{Change, ChangeKind, PrincipalChange};
use crate::key::{Key, KeyMap, KeySet, SmallKeys, id_of, key_of, new_id};
use crate::model::{Group, Id, Member, MemberKind, Meta, Principal, PrincipalKey, User};
use crate::store::{self, Store, Writes};

/// Tuning knobs for [`Directory::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// sled's page cache size. The directory keeps its own in-memory copy of
    /// everything, so sled's cache only needs to cover the write path.
    pub cache_bytes: u64,
    /// How many change events a slow subscriber may fall behind by.
    pub event_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 32 * 1024 * 1024,
            event_capacity: 65_536,
        }
    }
}

/// Which attribute identifies a user when the proxy binds a token to the
/// directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityAttr {
    /// `userName`, compared case-insensitively (unique).
    UserName,
    /// `externalId`, compared exactly (not necessarily unique).
    ExternalId,
    /// any of `emails[].value`, compared case-insensitively (not necessarily
    /// unique).
    Email,
}

/// The result of binding an identity to a directory user.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Arc<Principal>),
    NotFound,
    /// Several users carry this value; the proxy must refuse rather than pick.
    Ambiguous(usize),
}

/// One step of a group membership change, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembersEdit {
    Add(Vec<String>),
    Remove(Vec<String>),
    Replace(Vec<String>),
}

/// What a group update changes: the attribute document (`None` keeps it)
/// and the membership.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupUpdate {
    pub doc: Option<Map<String, Value>>,
    pub members: Vec<MembersEdit>,
}

/// The outcome of a group write.
#[derive(Debug, Clone)]
pub struct GroupWrite {
    pub group: Arc<Group>,
    /// Member ids that were asked for but are not resources of this client;
    /// real IdPs send stale ids, and rejecting the whole change would lose
    /// the valid part of it.
    pub unknown_members: Vec<String>,
}

/// Sizes, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub users: usize,
    pub groups: usize,
    pub memberships: usize,
}

/// A group's current direct members, for a group update to inspect.
#[derive(Debug)]
pub struct MemberView<'a> {
    members: Option<&'a Members>,
}

impl MemberView<'_> {
    pub fn contains(&self, id: &str) -> bool {
        match (self.members, key_of(id)) {
            (Some(m), Some(k)) => m.kind_of(k).is_some(),
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.members.map_or(0, |m| m.users.len() + m.groups.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Member> + '_ {
        self.members.into_iter().flat_map(|m| m.iter())
    }
}

#[derive(Debug, Default, Clone)]
struct Members {
    users: KeySet,
    groups: KeySet,
}

impl Members {
    fn iter(&self) -> impl Iterator<Item = Member> + '_ {
        self.keys().map(|(kind, k)| Member {
            kind,
            id: Id::from(id_of(k)),
        })
    }

    fn keys(&self) -> impl Iterator<Item = (MemberKind, Key)> + '_ {
        let users = self.users.iter().map(|k| (MemberKind::User, *k));
        let groups = self.groups.iter().map(|k| (MemberKind::Group, *k));
        users.chain(groups)
    }

    fn set(&mut self, kind: MemberKind) -> &mut KeySet {
        match kind {
            MemberKind::User => &mut self.users,
            MemberKind::Group => &mut self.groups,
        }
    }

    fn kind_of(&self, k: Key) -> Option<MemberKind> {
        if self.users.contains(&k) {
            Some(MemberKind::User)
        } else if self.groups.contains(&k) {
            Some(MemberKind::Group)
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.users.len() + self.groups.len()
    }
}

/// The identity directory. Cheap to clone; all clones share one state.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

/// Every map is keyed by the `u128` form of resource ids (see
/// [`crate::key`]); strings appear only in the secondary indexes, whose keys
/// come from outside.
#[derive(Debug)]
struct Inner {
    users: KeyMap<Arc<User>>,
    groups: KeyMap<Arc<Group>>,
    /// Lower-cased userName -> user. userName is unique across all clients:
    /// it is what tokens are bound to.
    user_by_name: DashMap<Box<str>, Key>,
    users_by_external_id: DashMap<Box<str>, SmallKeys>,
    /// Lower-cased email -> users.
    users_by_email: DashMap<Box<str>, SmallKeys>,
    /// `owner \0 lower-cased displayName` -> group: unique per client.
    group_by_name: DashMap<Box<str>, Key>,
    groups_by_external_id: DashMap<Box<str>, SmallKeys>,
    /// Group -> direct members.
    members: KeyMap<Members>,
    /// User -> groups it is a direct member of.
    user_groups: KeyMap<SmallKeys>,
    /// Group -> groups it is a direct member of.
    group_parents: KeyMap<SmallKeys>,
    /// User -> what the proxy authorizes with, recomputed on every change
    /// that touches the user.
    principals: KeyMap<Arc<Principal>>,
    /// Serializes writers; held only across synchronous work.
    writer: Mutex<()>,
    publisher: Arc<Publisher>,
    store: Store,
}

/// Holds changes until they are durable, then broadcasts them in order.
#[derive(Debug)]
struct Publisher {
    pending: Mutex<VecDeque<Arc<Change>>>,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Publisher {
    fn publish_through(&self, seq: u64) {
        let mut pending = self.pending.lock();
        while pending.front().is_some_and(|c| c.seq <= seq) {
            if let Some(change) = pending.pop_front() {
                // No subscribers is fine: nobody is listening yet.
                let _ = self.tx.send(change);
            }
        }
    }
}

/// The health of the directory, for readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A flush failed; writes are refused until restart.
    Failed(String),
}

impl Directory {
    /// Opens the store at `path`, rebuilds the cache from it, and starts the
    /// flusher. A store that cannot be opened or decoded is an error: the
    /// directory is never silently started empty.
    pub fn open(path: &Path, options: Options) -> Result<Self, StoreError> {
        let (tx, _) = broadcast::channel(options.event_capacity.max(16));
        let publisher = Arc::new(Publisher {
            pending: Mutex::new(VecDeque::new()),
            tx,
        });
        let store = {
            let publisher = publisher.clone();
            Store::open(
                path,
                options.cache_bytes,
                Box::new(move |seq| publisher.publish_through(seq)),
            )?
        };
        if let Some(key) = store.unknown_key() {
            return Err(StoreError::Corrupt {
                key,
                reason: "unknown key prefix; written by another version?".into(),
            });
        }
        let inner = Inner {
            users: KeyMap::default(),
            groups: KeyMap::default(),
            user_by_name: DashMap::new(),
            users_by_external_id: DashMap::new(),
            users_by_email: DashMap::new(),
            group_by_name: DashMap::new(),
            groups_by_external_id: DashMap::new(),
            members: KeyMap::default(),
            user_groups: KeyMap::default(),
            group_parents: KeyMap::default(),
            principals: KeyMap::default(),
            writer: Mutex::new(()),
            publisher,
            store,
        };
        inner.rebuild()?;
        Ok(Directory { inner: Arc::new(inner) })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        self.inner.store.path()
    }

    pub fn health(&self) -> Health {
        match self.inner.store.failure() {
            None => Health::Ok,
            Some(reason) => Health::Failed(reason.to_string()),
        }
    }

    /// Subscribes to committed changes (see [`crate::events`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.inner.publisher.tx.subscribe()
    }

    /// The sequence number of the last applied change.
    pub fn generation(&self) -> u64 {
        self.inner.store.applied()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            users: self.inner.users.len(),
            groups: self.inner.groups.len(),
            memberships: self.inner.members.iter().map(|m| m.len()).sum(),
        }
    }

    /// Users' last access, in the same store.
    pub fn activity(&self) -> crate::activity::ActivityStore {
        self.inner.store.activity().clone()
    }

    /// The browser-session tree in the same store.
    pub fn sessions(&self) -> crate::sessions::SessionStore {
        self.inner.store.sessions().clone()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.inner.store.size_on_disk()
    }

    // ---- reads --------------------------------------------------------

    /// The authorization view of a user, by id: one map read.
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.inner.principals.get(&key_of(id)?).map(|p| p.clone())
    }

    /// The authorization view of a user by its key: one hash map probe, no
    /// text. What the proxy calls on every request.
    pub fn principal_by_key(&self, key: PrincipalKey) -> Option<Arc<Principal>> {
        self.inner.principals.get(&key.0).map(|p| p.clone())
    }

    /// Runs `f` on a user's principal without taking a reference count;
    /// the shard's read lock is held only while `f` runs, which is why `f`
    /// is synchronous.
    pub fn with_principal<R>(&self, key: PrincipalKey, f: impl FnOnce(&Principal) -> R) -> Option<R> {
        self.inner.principals.get(&key.0).map(|p| f(&p))
    }

    /// Binds an identity (a token claim) to a user.
    pub fn principal_by(&self, attr: IdentityAttr, value: &str) -> Lookup {
        let inner = &self.inner;
        let found = |k: Key| match inner.principals.get(&k) {
            Some(p) => Lookup::Found(p.clone()),
            None => Lookup::NotFound,
        };
        let from_set = |set: Option<dashmap::mapref::one::Ref<'_, Box<str>, SmallKeys>>| match set {
            None => Lookup::NotFound,
            Some(keys) if keys.len() == 1 => keys.iter().next().map_or(Lookup::NotFound, found),
            Some(keys) if keys.is_empty() => Lookup::NotFound,
            Some(keys) => Lookup::Ambiguous(keys.len()),
        };
        match attr {
            IdentityAttr::UserName => match inner.user_by_name.get(&*fold(value)).map(|k| *k) {
                Some(k) => found(k),
                None => Lookup::NotFound,
            },
            IdentityAttr::ExternalId => from_set(inner.users_by_external_id.get(value)),
            IdentityAttr::Email => from_set(inner.users_by_email.get(&*fold(value))),
        }
    }

    pub fn user(&self, id: &str) -> Option<Arc<User>> {
        self.inner.users.get(&key_of(id)?).map(|u| u.clone())
    }

    pub fn group(&self, id: &str) -> Option<Arc<Group>> {
        self.inner.groups.get(&key_of(id)?).map(|g| g.clone())
    }

    /// A user by userName, case-insensitively.
    pub fn user_by_name(&self, user_name: &str) -> Option<Arc<User>> {
        let k = *self.inner.user_by_name.get(&*fold(user_name))?;
        self.inner.users.get(&k).map(|u| u.clone())
    }

    pub fn users_by_external_id(&self, external_id: &str) -> Vec<Arc<User>> {
        let keys = self.inner.users_by_external_id.get(external_id).map(|s| s.clone());
        self.users_in(keys)
    }

    pub fn users_by_email(&self, email: &str) -> Vec<Arc<User>> {
        let keys = self.inner.users_by_email.get(&*fold(email)).map(|s| s.clone());
        self.users_in(keys)
    }

    /// A client's group by displayName, case-insensitively.
    pub fn group_by_name(&self, owner: &str, display_name: &str) -> Option<Arc<Group>> {
        let k = *self.inner.group_by_name.get(&*group_name_key(owner, display_name))?;
        self.inner.groups.get(&k).map(|g| g.clone())
    }

    pub fn groups_by_external_id(&self, external_id: &str) -> Vec<Arc<Group>> {
        let keys = self.inner.groups_by_external_id.get(external_id).map(|s| s.clone());
        keys.iter()
            .flat_map(|s| s.iter())
            .filter_map(|k| self.inner.groups.get(&k).map(|g| g.clone()))
            .collect()
    }

    /// Every user a client owns, in no particular order.
    pub fn users_of(&self, owner: &str) -> Vec<Arc<User>> {
        self.inner
            .users
            .iter()
            .filter(|u| &*u.owner == owner)
            .map(|u| u.clone())
            .collect()
    }

    /// Every group a client owns, in no particular order.
    pub fn groups_of(&self, owner: &str) -> Vec<Arc<Group>> {
        self.inner
            .groups
            .iter()
            .filter(|g| &*g.owner == owner)
            .map(|g| g.clone())
            .collect()
    }

    /// Every user, of every client.
    pub fn all_users(&self) -> Vec<Arc<User>> {
        self.inner.users.iter().map(|u| u.clone()).collect()
    }

    /// A group's direct members, sorted (users first, then by id).
    pub fn members_of(&self, group_id: &str) -> Vec<Member> {
        let mut out: Vec<Member> = key_of(group_id)
            .and_then(|k| self.inner.members.get(&k).map(|m| m.iter().collect()))
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The groups a user is a direct member of, by display name.
    pub fn direct_groups_of(&self, user_id: &str) -> Vec<Arc<Group>> {
        let keys = key_of(user_id).and_then(|k| self.inner.user_groups.get(&k).map(|s| s.clone()));
        let mut groups: Vec<Arc<Group>> = keys
            .iter()
            .flat_map(|s| s.iter())
            .filter_map(|k| self.inner.groups.get(&k).map(|g| g.clone()))
            .collect();
        groups.sort_by(|a, b| a.display_name().cmp(b.display_name()).then(a.id.cmp(&b.id)));
        groups
    }

    fn users_in(&self, keys: Option<SmallKeys>) -> Vec<Arc<User>> {
        let mut users: Vec<Arc<User>> = keys
            .iter()
            .flat_map(|s| s.iter())
            .filter_map(|k| self.inner.users.get(&k).map(|u| u.clone()))
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }

    // ---- writes -------------------------------------------------------

    /// Creates a user owned by `actor`. Fails with `Conflict` if the
    /// userName is taken (case-insensitively) by any client.
    pub async fn create_user(&self, actor: &Id, doc: Map<String, Value>) -> Result<Arc<User>, DirectoryError> {
        let (seq, user) = self.inner.create_user(actor, doc)?;
        self.finish(seq).await?;
        Ok(user)
    }

    /// Replaces a user's attribute document with what `edit` returns from
    /// the current user. The whole read-modify-write runs under the writer
    /// lock, so concurrent updates never lose each other's changes. A result
    /// equal to the current document writes nothing and keeps the version.
    pub async fn update_user<E>(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
        edit: impl FnOnce(&User) -> Result<Map<String, Value>, E>,
    ) -> Result<Arc<User>, E>
    where
        E: From<DirectoryError>,
    {
        let (seq, user) = self.inner.update_user(actor, id, expected_version, edit)?;
        if let Some(seq) = seq {
            self.finish(seq).await?;
        }
        Ok(user)
    }

    /// Deletes a user and every membership it has.
    pub async fn delete_user(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
    ) -> Result<(), DirectoryError> {
        let seq = self.inner.delete_user(actor, id, expected_version)?;
        self.finish(seq).await
    }

    /// Creates a group owned by `actor` with the given member ids.
    pub async fn create_group(
        &self,
        actor: &Id,
        doc: Map<String, Value>,
        members: Vec<String>,
    ) -> Result<GroupWrite, DirectoryError> {
        let (seq, write) = self.inner.create_group(actor, doc, members)?;
        self.finish(seq).await?;
        Ok(write)
    }

    /// Updates a group with what `edit` decides from the current group and
    /// members, atomically (see [`Directory::update_user`]).
    pub async fn update_group<E>(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
        edit: impl FnOnce(&Group, &MemberView<'_>) -> Result<GroupUpdate, E>,
    ) -> Result<GroupWrite, E>
    where
        E: From<DirectoryError>,
    {
        let (seq, write) = self.inner.update_group(actor, id, expected_version, edit)?;
        if let Some(seq) = seq {
            self.finish(seq).await?;
        }
        Ok(write)
    }

    /// Deletes a group, its memberships, and its place in parent groups.
    pub async fn delete_group(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
    ) -> Result<(), DirectoryError> {
        let seq = self.inner.delete_group(actor, id, expected_version)?;
        self.finish(seq).await
    }

    async fn finish(&self, seq: u64) -> Result<(), DirectoryError> {
        self.inner.store.durable(seq).await?;
        self.inner.publisher.publish_through(seq);
        Ok(())
    }

    // ---- checking -----------------------------------------------------

    /// Checks every index, both directions of membership and every
    /// principal against the primary data. Returns the problems found.
    /// Linear in the directory size; meant for tests and `portcullis check`.
    pub fn verify(&self) -> Vec<String> {
        self.inner.verify()
    }

    /// A canonical, comparable copy of the whole directory (for tests that
    /// compare the cache with a fresh load from disk).
    pub fn dump(&self) -> Dump {
        let mut dump = Dump::default();
        for u in self.inner.users.iter() {
            dump.users.insert(
                u.id.to_string(),
                (u.owner.to_string(), u.meta.version, u.doc_json().to_owned()),
            );
        }
        for g in self.inner.groups.iter() {
            dump.groups.insert(
                g.id.to_string(),
                (g.owner.to_string(), g.meta.version, g.doc_json().to_owned()),
            );
        }
        for m in self.inner.members.iter() {
            for (kind, k) in m.keys() {
                dump.edges.insert((id_of(*m.key()), kind, id_of(k)));
            }
        }
        for p in self.inner.principals.iter() {
            let groups = p.groups.iter().map(|g| g.id.to_string()).collect();
            dump.principals.insert(p.id.to_string(), (p.active, groups));
        }
        dump
    }
}

/// See [`Directory::dump`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dump {
    pub users: std::collections::BTreeMap<String, (String, u64, String)>,
    pub groups: std::collections::BTreeMap<String, (String, u64, String)>,
    pub edges: std::collections::BTreeSet<(String, MemberKind, String)>,
    pub principals: std::collections::BTreeMap<String, (bool, Vec<String>)>,
}

impl Inner {
    // ---- rebuild ------------------------------------------------------

    /// Loads the store into the maps. Users load on one thread while
    /// groups and memberships load on another (they touch different maps,
    /// and membership needs only keys); principals are then computed on
    /// both.
    fn rebuild(&self) -> Result<(), StoreError> {
        std::thread::scope(|s| {
            let users = s.spawn(|| self.load_users());
            let groups = self.load_groups();
            let users = users.join().unwrap_or_else(|_| {
                Err(StoreError::Corrupt {
                    key: "u:*".into(),
                    reason: "loader thread panicked".into(),
                })
            });
            groups.and(users)
        })?;
        // Memberships may only name resources that exist.
        for e in self.user_groups.iter() {
            if !self.users.contains_key(e.key()) {
                return Err(dangling(*e.key(), e.value()));
            }
        }
        for e in self.group_parents.iter() {
            if !self.groups.contains_key(e.key()) {
                return Err(dangling(*e.key(), e.value()));
            }
        }
        let generation = self.store.applied();
        let keys: Vec<Key> = self.users.iter().map(|u| *u.key()).collect();
        let (a, b) = keys.split_at(keys.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| self.compute_all(a, generation));
            self.compute_all(b, generation);
        });
        Ok(())
    }

    fn load_users(&self) -> Result<(), StoreError> {
        let mut owners = HashMap::new();
        self.store.scan("u:", |id, value| {
            let (owner, meta, doc) = store::decode_record(value, &mut owners)?;
            let user = Arc::new(User::from_stored(id.into(), owner, meta, doc)?);
            if self.user_by_name.contains_key(&*fold(user.user_name())) {
                return Err("duplicate userName".into());
            }
            self.index_user(&user);
            self.users.insert(user.key(), user);
            Ok(())
        })
    }

    fn load_groups(&self) -> Result<(), StoreError> {
        let mut owners = HashMap::new();
        self.store.scan("g:", |id, value| {
            let (owner, meta, doc) = store::decode_record(value, &mut owners)?;
            let group = Arc::new(Group::from_stored(id.into(), owner, meta, doc)?);
            self.index_group(&group);
            self.members.insert(group.key(), Members::default());
            self.groups.insert(group.key(), group);
            Ok(())
        })?;
        self.store.scan("m:", |rest, value| {
            let (group, members) = store::decode_members(rest, value)?;
            if !self.groups.contains_key(&group) {
                return Err("members of an unknown group".into());
            }
            for (kind, member) in members {
                self.link(group, kind, member);
            }
            Ok(())
        })
    }

    fn compute_all(&self, keys: &[Key], generation: u64) {
        for &k in keys {
            if let Some(p) = self.compute_principal(k, generation) {
                self.principals.insert(k, Arc::new(p));
            }
        }
    }

    // ---- user writes --------------------------------------------------

    fn create_user(&self, actor: &Id, doc: Map<String, Value>) -> Result<(u64, Arc<User>), DirectoryError> {
        let _writer = self.writer.lock();
        let now = now();
        let (_, id) = new_id();
        let user = User::new(id, actor.clone(), Meta::new(now), doc)?;
        self.check_user_name_free(user.user_name(), None)?;

        let mut writes = Writes::default();
        writes.insert(store::user_key(&user.id), store::encode_user(&user));
        let seq = self.store.apply(writes)?;

        let user = Arc::new(user);
        self.index_user(&user);
        self.users.insert(user.key(), user.clone());
        let principals = self.refresh_principals([user.key()], seq);
        self.queue(
            seq,
            actor,
            now,
            ChangeKind::UserCreated { after: user.clone() },
            principals,
        );
        Ok((seq, user))
    }

    fn update_user<E>(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
        edit: impl FnOnce(&User) -> Result<Map<String, Value>, E>,
    ) -> Result<(Option<u64>, Arc<User>), E>
    where
        E: From<DirectoryError>,
    {
        let _writer = self.writer.lock();
        let current = self.owned_user(actor, id, expected_version)?;
        let doc = edit(&current)?;
        let now = now();
        let updated = User::new(current.id.clone(), current.owner.clone(), current.meta.bumped(now), doc)?;
        if updated.doc_json() == current.doc_json() {
            return Ok((None, current));
        }
        self.check_user_name_free(updated.user_name(), Some(current.key()))?;

        let mut writes = Writes::default();
        writes.insert(store::user_key(&updated.id), store::encode_user(&updated));
        let seq = self.store.apply(writes).map_err(DirectoryError::from)?;

        let updated = Arc::new(updated);
        self.unindex_user(&current);
        self.index_user(&updated);
        self.users.insert(updated.key(), updated.clone());
        let principals = self.refresh_principals([updated.key()], seq);
        let kind = ChangeKind::UserUpdated {
            before: current,
            after: updated.clone(),
        };
        self.queue(seq, &updated.owner, now, kind, principals);
        Ok((Some(seq), updated))
    }

    fn delete_user(&self, actor: &str, id: &str, expected_version: Option<u64>) -> Result<u64, DirectoryError> {
        let _writer = self.writer.lock();
        let current = self.owned_user(actor, id, expected_version)?;
        let key = current.key();
        let now = now();
        let groups: Vec<Key> = self
            .user_groups
            .get(&key)
            .map(|s| s.iter().collect())
            .unwrap_or_default();

        let mut writes = Writes::default();
        writes.remove(store::user_key(&current.id));
        let gone = MemberChange::removing(MemberKind::User, key);
        let mut bumped = Vec::with_capacity(groups.len());
        for &g in &groups {
            self.write_buckets(&mut writes, g, &gone);
            if let Some(group) = self.bump_group(g, now) {
                writes.insert(store::group_key(&group.id), store::encode_group(&group));
                bumped.push(group);
            }
        }
        let seq = self.store.apply(writes)?;

        for &g in &groups {
            self.unlink(g, MemberKind::User, key);
        }
        for g in bumped {
            self.groups.insert(g.key(), g);
        }
        self.user_groups.remove(&key);
        self.unindex_user(&current);
        self.users.remove(&key);
        let principals = self.refresh_principals([key], seq);
        let owner = current.owner.clone();
        self.queue(
            seq,
            &owner,
            now,
            ChangeKind::UserDeleted { before: current },
            principals,
        );
        Ok(seq)
    }

    // ---- group writes -------------------------------------------------

    fn create_group(
        &self,
        actor: &Id,
        doc: Map<String, Value>,
        member_ids: Vec<String>,
    ) -> Result<(u64, GroupWrite), DirectoryError> {
        let _writer = self.writer.lock();
        let now = now();
        let (_, id) = new_id();
        let group = Group::new(id, actor.clone(), Meta::new(now), doc)?;
        self.check_group_name_free(&group.owner, group.display_name(), None)?;
        let mut delta = Delta::default();
        delta.apply(self, group.key(), actor, None, MembersEdit::Add(member_ids))?;
        let change = delta.finish();

        let mut writes = Writes::default();
        writes.insert(store::group_key(&group.id), store::encode_group(&group));
        self.write_buckets(&mut writes, group.key(), &change);
        let seq = self.store.apply(writes)?;

        let group = Arc::new(group);
        self.index_group(&group);
        self.groups.insert(group.key(), group.clone());
        self.members.insert(group.key(), Members::default());
        for &(kind, k) in &change.add {
            self.link(group.key(), kind, k);
        }
        let affected = self.users_affected_by(&change.add);
        let principals = self.refresh_principals(affected, seq);
        let kind = ChangeKind::GroupCreated {
            after: group.clone(),
            added: members(&change.add),
        };
        self.queue(seq, actor, now, kind, principals);
        Ok((
            seq,
            GroupWrite {
                group,
                unknown_members: change.unknown,
            },
        ))
    }

    fn update_group<E>(
        &self,
        actor: &str,
        id: &str,
        expected_version: Option<u64>,
        edit: impl FnOnce(&Group, &MemberView<'_>) -> Result<GroupUpdate, E>,
    ) -> Result<(Option<u64>, GroupWrite), E>
    where
        E: From<DirectoryError>,
    {
        let _writer = self.writer.lock();
        let current = self.owned_group(actor, id, expected_version)?;
        let gkey = current.key();
        let update = {
            // The read guard is dropped before any map is written below.
            let members = self.members.get(&gkey);
            let view = MemberView {
                members: members.as_deref(),
            };
            edit(&current, &view)?
        };
        let now = now();
        let mut delta = Delta::default();
        for op in update.members {
            delta.apply(self, gkey, actor, Some(gkey), op)?;
        }
        let change = delta.finish();
        let renamed = match update.doc {
            Some(doc) => {
                let g = Group::new(current.id.clone(), current.owner.clone(), current.meta.bumped(now), doc)?;
                (g.doc_json() != current.doc_json()).then_some(g)
            }
            None => None,
        };
        if renamed.is_none() && change.is_empty() {
            return Ok((
                None,
                GroupWrite {
                    group: current,
                    unknown_members: change.unknown,
                },
            ));
        }
        let name_changed = renamed
            .as_ref()
            .is_some_and(|g| g.display_name() != current.display_name());
        if let Some(g) = &renamed {
            self.check_group_name_free(&g.owner, g.display_name(), Some(gkey))?;
        }
        let updated = match renamed {
            Some(g) => g,
            None => {
                let mut g = (*current).clone();
                g.meta = current.meta.bumped(now);
                g
            }
        };

        let mut writes = Writes::default();
        writes.insert(store::group_key(&updated.id), store::encode_group(&updated));
        self.write_buckets(&mut writes, gkey, &change);
        let seq = self.store.apply(writes).map_err(DirectoryError::from)?;

        let updated = Arc::new(updated);
        self.unindex_group(&current);
        self.index_group(&updated);
        self.groups.insert(gkey, updated.clone());
        for &(kind, k) in &change.add {
            self.link(gkey, kind, k);
        }
        for &(kind, k) in &change.remove {
            self.unlink(gkey, kind, k);
        }
        let mut affected = self.users_affected_by(&change.add);
        affected.extend(self.users_affected_by(&change.remove));
        if name_changed {
            self.users_under(gkey, &mut affected);
        }
        let principals = self.refresh_principals(affected, seq);
        let kind = ChangeKind::GroupUpdated {
            before: current,
            after: updated.clone(),
            added: members(&change.add),
            removed: members(&change.remove),
        };
        self.queue(seq, &updated.owner, now, kind, principals);
        Ok((
            Some(seq),
            GroupWrite {
                group: updated,
                unknown_members: change.unknown,
            },
        ))
    }

    fn delete_group(&self, actor: &str, id: &str, expected_version: Option<u64>) -> Result<u64, DirectoryError> {
        let _writer = self.writer.lock();
        let current = self.owned_group(actor, id, expected_version)?;
        let gkey = current.key();
        let now = now();
        let mut affected = KeySet::default();
        self.users_under(gkey, &mut affected);
        let members: Vec<(MemberKind, Key)> = self.members.get(&gkey).map(|m| m.keys().collect()).unwrap_or_default();
        let parents: Vec<Key> = self
            .group_parents
            .get(&gkey)
            .map(|s| s.iter().collect())
            .unwrap_or_default();

        let mut writes = Writes::default();
        writes.remove(store::group_key(&current.id));
        for bucket in 0..16 {
            writes.remove(store::members_key(&current.id, bucket));
        }
        let gone = MemberChange::removing(MemberKind::Group, gkey);
        let mut bumped = Vec::with_capacity(parents.len());
        for &parent in &parents {
            self.write_buckets(&mut writes, parent, &gone);
            if let Some(g) = self.bump_group(parent, now) {
                writes.insert(store::group_key(&g.id), store::encode_group(&g));
                bumped.push(g);
            }
        }
        let seq = self.store.apply(writes)?;

        for &(kind, k) in &members {
            self.unlink(gkey, kind, k);
        }
        for &parent in &parents {
            self.unlink(parent, MemberKind::Group, gkey);
        }
        for g in bumped {
            self.groups.insert(g.key(), g);
        }
        self.members.remove(&gkey);
        self.group_parents.remove(&gkey);
        self.unindex_group(&current);
        self.groups.remove(&gkey);
        let principals = self.refresh_principals(affected, seq);
        let owner = current.owner.clone();
        let kind = ChangeKind::GroupDeleted {
            before: current,
            removed: self::members(&members),
        };
        self.queue(seq, &owner, now, kind, principals);
        Ok(seq)
    }

    // ---- helpers ------------------------------------------------------

    fn owned_user(&self, actor: &str, id: &str, expected: Option<u64>) -> Result<Arc<User>, DirectoryError> {
        let user = key_of(id)
            .and_then(|k| self.users.get(&k).map(|u| u.clone()))
            .filter(|u| &*u.owner == actor)
            .ok_or_else(|| DirectoryError::NotFound {
                kind: ResourceKind::User,
                id: id.to_owned(),
            })?;
        check_version(ResourceKind::User, id, expected, user.meta.version)?;
        Ok(user)
    }

    fn owned_group(&self, actor: &str, id: &str, expected: Option<u64>) -> Result<Arc<Group>, DirectoryError> {
        let group = key_of(id)
            .and_then(|k| self.groups.get(&k).map(|g| g.clone()))
            .filter(|g| &*g.owner == actor)
            .ok_or_else(|| DirectoryError::NotFound {
                kind: ResourceKind::Group,
                id: id.to_owned(),
            })?;
        check_version(ResourceKind::Group, id, expected, group.meta.version)?;
        Ok(group)
    }

    fn check_user_name_free(&self, user_name: &str, except: Option<Key>) -> Result<(), DirectoryError> {
        match self.user_by_name.get(&*fold(user_name)).map(|k| *k) {
            Some(holder) if Some(holder) != except => Err(DirectoryError::Conflict {
                attribute: "userName",
                value: user_name.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn check_group_name_free(&self, owner: &str, name: &str, except: Option<Key>) -> Result<(), DirectoryError> {
        match self.group_by_name.get(&*group_name_key(owner, name)).map(|k| *k) {
            Some(holder) if Some(holder) != except => Err(DirectoryError::Conflict {
                attribute: "displayName",
                value: name.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// A copy of a group with its version bumped (its members changed).
    fn bump_group(&self, k: Key, now: OffsetDateTime) -> Option<Arc<Group>> {
        let current = self.groups.get(&k)?.clone();
        let mut g = (*current).clone();
        g.meta = current.meta.bumped(now);
        Some(Arc::new(g))
    }

    /// Adds to `writes` the member buckets of `group` that `change` touches,
    /// as they will be once it is applied.
    fn write_buckets(&self, writes: &mut Writes, group: Key, change: &MemberChange) {
        let group_id = id_of(group);
        let mut touched: Vec<u8> = change
            .add
            .iter()
            .chain(&change.remove)
            .map(|(_, k)| store::bucket_of(*k))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let current = self.members.get(&group);
        for bucket in touched {
            let removed: KeySet = change
                .remove
                .iter()
                .filter(|(_, k)| store::bucket_of(*k) == bucket)
                .map(|(_, k)| *k)
                .collect();
            let kept = current
                .iter()
                .flat_map(|m| m.keys())
                .filter(|(_, k)| store::bucket_of(*k) == bucket && !removed.contains(k));
            let added = change
                .add
                .iter()
                .copied()
                .filter(|(_, k)| store::bucket_of(*k) == bucket);
            let mut entries: Vec<(MemberKind, Key)> = kept.chain(added).collect();
            entries.sort_unstable_by_key(|(_, k)| *k);
            let key = store::members_key(&group_id, bucket);
            if entries.is_empty() {
                writes.remove(key);
            } else {
                writes.insert(key, store::encode_members(entries.into_iter()));
            }
        }
    }

    fn queue(&self, seq: u64, actor: &Id, at: OffsetDateTime, kind: ChangeKind, principals: Vec<PrincipalChange>) {
        let change = Arc::new(Change {
            seq,
            actor: actor.clone(),
            at,
            kind,
            principals,
        });
        self.publisher.pending.lock().push_back(change);
    }

    fn index_user(&self, user: &Arc<User>) {
        let k = user.key();
        self.user_by_name.insert(fold(user.user_name()).into(), k);
        if let Some(ext) = user.external_id() {
            self.users_by_external_id.entry(ext.into()).or_default().insert(k);
        }
        for email in user.emails() {
            self.users_by_email.entry(email.into()).or_default().insert(k);
        }
    }

    fn unindex_user(&self, user: &User) {
        let k = user.key();
        self.user_by_name
            .remove_if(&*fold(user.user_name()), |_, holder| *holder == k);
        if let Some(ext) = user.external_id() {
            remove_from_index(&self.users_by_external_id, ext, k);
        }
        for email in user.emails() {
            remove_from_index(&self.users_by_email, email, k);
        }
    }

    fn index_group(&self, group: &Arc<Group>) {
        let k = group.key();
        self.group_by_name
            .insert(group_name_key(&group.owner, group.display_name()), k);
        if let Some(ext) = group.external_id() {
            self.groups_by_external_id.entry(ext.into()).or_default().insert(k);
        }
    }

    fn unindex_group(&self, group: &Group) {
        let k = group.key();
        let name = group_name_key(&group.owner, group.display_name());
        self.group_by_name.remove_if(&name, |_, holder| *holder == k);
        if let Some(ext) = group.external_id() {
            remove_from_index(&self.groups_by_external_id, ext, k);
        }
    }

    fn reverse(&self, kind: MemberKind) -> &KeyMap<SmallKeys> {
        match kind {
            MemberKind::User => &self.user_groups,
            MemberKind::Group => &self.group_parents,
        }
    }

    fn link(&self, group: Key, kind: MemberKind, member: Key) {
        self.members.entry(group).or_default().set(kind).insert(member);
        self.reverse(kind).entry(member).or_default().insert(group);
    }

    fn unlink(&self, group: Key, kind: MemberKind, member: Key) {
        if let Some(mut m) = self.members.get_mut(&group) {
            m.set(kind).remove(&member);
        }
        self.reverse(kind).remove_if_mut(&member, |_, set| {
            set.remove(group);
            set.is_empty()
        });
    }

    /// Users whose effective groups can change when these members join or
    /// leave a group: the users themselves, and every user inside a member
    /// group (transitively).
    fn users_affected_by(&self, members: &[(MemberKind, Key)]) -> KeySet {
        let mut out = KeySet::default();
        for &(kind, k) in members {
            match kind {
                MemberKind::User => {
                    out.insert(k);
                }
                MemberKind::Group => self.users_under(k, &mut out),
            }
        }
        out
    }

    /// Every user inside `group`, directly or through nested groups. Cycles
    /// are tolerated (each group is visited once).
    fn users_under(&self, group: Key, out: &mut KeySet) {
        let mut seen = KeySet::default();
        let mut stack = vec![group];
        while let Some(g) = stack.pop() {
            if !seen.insert(g) {
                continue;
            }
            if let Some(m) = self.members.get(&g) {
                out.extend(m.users.iter().copied());
                stack.extend(m.groups.iter().copied().filter(|c| !seen.contains(c)));
            }
        }
    }

    /// The user's principal: its effective groups are its direct groups and
    /// all their ancestors.
    fn compute_principal(&self, k: Key, generation: u64) -> Option<Principal> {
        let user = self.users.get(&k)?.clone();
        let mut seen: Vec<Key> = Vec::new();
        let mut stack: Vec<Key> = self.user_groups.get(&k).map(|s| s.iter().collect()).unwrap_or_default();
        while let Some(g) = stack.pop() {
            if seen.contains(&g) {
                continue;
            }
            seen.push(g);
            if let Some(parents) = self.group_parents.get(&g) {
                stack.extend(parents.iter().filter(|p| !seen.contains(p)));
            }
        }
        let mut groups: Vec<Arc<Group>> = seen
            .iter()
            .filter_map(|g| self.groups.get(g).map(|g| g.clone()))
            .collect();
        groups.sort_by(|a, b| (&*a.owner, a.display_name(), &*a.id).cmp(&(&*b.owner, b.display_name(), &*b.id)));
        Some(Principal {
            key: PrincipalKey(k),
            id: user.id.clone(),
            owner: user.owner.clone(),
            user_name: user.user_name().into(),
            active: user.active(),
            groups: groups.into_boxed_slice(),
            generation,
        })
    }

    /// Recomputes the principals of these users; returns those whose
    /// authorization view changed. An unchanged principal keeps its `Arc`
    /// (and generation), so derived caches stay valid.
    fn refresh_principals(&self, keys: impl IntoIterator<Item = Key>, generation: u64) -> Vec<PrincipalChange> {
        let mut changes = Vec::new();
        for k in keys {
            let before = self.principals.get(&k).map(|p| p.clone());
            let after = self.compute_principal(k, generation).map(Arc::new);
            if let (Some(b), Some(a)) = (&before, &after)
                && same_access(b, a)
            {
                continue;
            }
            match &after {
                Some(p) => {
                    self.principals.insert(k, p.clone());
                }
                None => {
                    self.principals.remove(&k);
                }
            }
            if before.is_some() || after.is_some() {
                changes.push(PrincipalChange { before, after });
            }
        }
        changes
    }

    fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for u in self.users.iter() {
            let k = *u.key();
            match self.user_by_name.get(&*fold(u.user_name())).map(|h| *h) {
                Some(h) if h == k => {}
                other => problems.push(format!("user {}: userName index has {:?}", u.id, other.map(id_of))),
            }
            if let Some(ext) = u.external_id()
                && !self.users_by_external_id.get(ext).is_some_and(|s| s.contains(k))
            {
                problems.push(format!("user {}: missing from externalId index", u.id));
            }
            for email in u.emails() {
                if !self.users_by_email.get(email).is_some_and(|s| s.contains(k)) {
                    problems.push(format!("user {}: missing from email index {email}", u.id));
                }
            }
        }
        if self.user_by_name.len() != self.users.len() {
            problems.push(format!(
                "userName index has {} entries for {} users",
                self.user_by_name.len(),
                self.users.len()
            ));
        }
        for e in self.users_by_external_id.iter() {
            for k in e.value().iter() {
                if self
                    .users
                    .get(&k)
                    .and_then(|u| u.external_id().map(|x| x == &**e.key()))
                    != Some(true)
                {
                    problems.push(format!("externalId index {} has stale user {}", e.key(), id_of(k)));
                }
            }
        }
        for e in self.users_by_email.iter() {
            for k in e.value().iter() {
                if self.users.get(&k).map(|u| u.emails().any(|m| m == &**e.key())) != Some(true) {
                    problems.push(format!("email index {} has stale user {}", e.key(), id_of(k)));
                }
            }
        }
        for g in self.groups.iter() {
            match self
                .group_by_name
                .get(&*group_name_key(&g.owner, g.display_name()))
                .map(|h| *h)
            {
                Some(h) if h == *g.key() => {}
                _ => problems.push(format!("group {}: displayName index is wrong", g.id)),
            }
        }
        if self.group_by_name.len() != self.groups.len() {
            problems.push("group displayName index size differs from groups".into());
        }
        let mut edges = 0usize;
        for m in self.members.iter() {
            let g = *m.key();
            if !self.groups.contains_key(&g) {
                problems.push(format!("members of unknown group {}", id_of(g)));
            }
            for (kind, k) in m.keys() {
                edges += 1;
                let exists = match kind {
                    MemberKind::User => self.users.contains_key(&k),
                    MemberKind::Group => self.groups.contains_key(&k),
                };
                if !exists {
                    problems.push(format!("group {} has unknown member {}", id_of(g), id_of(k)));
                }
                if !self.reverse(kind).get(&k).is_some_and(|s| s.contains(g)) {
                    problems.push(format!("member {} lacks its reverse edge to {}", id_of(k), id_of(g)));
                }
            }
        }
        let reverse: usize = self.user_groups.iter().map(|s| s.len()).sum::<usize>()
            + self.group_parents.iter().map(|s| s.len()).sum::<usize>();
        if reverse != edges {
            problems.push(format!("{edges} forward edges but {reverse} reverse edges"));
        }
        for u in self.users.iter() {
            match (self.principals.get(u.key()), self.compute_principal(*u.key(), 0)) {
                (Some(p), Some(fresh)) if same_access(&p, &fresh) => {}
                _ => problems.push(format!("user {}: principal is stale", u.id)),
            }
        }
        if self.principals.len() != self.users.len() {
            problems.push("principal count differs from users".into());
        }
        problems
    }
}

/// A resolved membership change: who joins, who leaves, and which asked-for
/// ids named nothing this client owns. Sorted, so events and records are
/// deterministic.
#[derive(Debug, Default)]
struct MemberChange {
    add: Vec<(MemberKind, Key)>,
    remove: Vec<(MemberKind, Key)>,
    unknown: Vec<String>,
}

impl MemberChange {
    fn removing(kind: MemberKind, k: Key) -> Self {
        MemberChange {
            remove: vec![(kind, k)],
            ..MemberChange::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Builds a [`MemberChange`] from a sequence of edits against the group's
/// current members. Maps, not lists: one request may add or remove tens of
/// thousands of members.
#[derive(Debug, Default)]
struct Delta {
    add: HashMap<Key, MemberKind>,
    remove: HashMap<Key, MemberKind>,
    unknown: Vec<String>,
    unknown_seen: HashSet<String>,
}

impl Delta {
    /// Folds one edit in. `group` is `None` while the group is being created
    /// (it has no members yet).
    fn apply(
        &mut self,
        dir: &Inner,
        group_key: Key,
        actor: &str,
        group: Option<Key>,
        edit: MembersEdit,
    ) -> Result<(), DirectoryError> {
        // A read guard, not a copy: a group may have 100,000 members. Nothing
        // below writes to `members`, so holding it cannot deadlock.
        let current = group.and_then(|g| dir.members.get(&g));
        let current_kind = |k: Key| current.as_ref().and_then(|m| m.kind_of(k));
        match edit {
            MembersEdit::Add(ids) => {
                for raw in ids {
                    let Some((kind, k)) = self.resolve(dir, group_key, actor, &raw)? else {
                        continue;
                    };
                    if self.remove.remove(&k).is_none() && current_kind(k).is_none() {
                        self.add.insert(k, kind);
                    }
                }
            }
            MembersEdit::Remove(ids) => {
                for raw in ids {
                    let Some(k) = key_of(&raw) else { continue };
                    if self.add.remove(&k).is_some() {
                        continue;
                    }
                    if let Some(kind) = current_kind(k) {
                        self.remove.insert(k, kind);
                    }
                }
            }
            MembersEdit::Replace(ids) => {
                let mut wanted: HashMap<Key, MemberKind> = HashMap::with_capacity(ids.len());
                for raw in ids {
                    if let Some((kind, k)) = self.resolve(dir, group_key, actor, &raw)? {
                        wanted.insert(k, kind);
                    }
                }
                self.remove.clear();
                if let Some(current) = &current {
                    self.remove.extend(
                        current
                            .keys()
                            .filter(|(_, k)| !wanted.contains_key(k))
                            .map(|(kind, k)| (k, kind)),
                    );
                    wanted.retain(|k, _| current.kind_of(*k).is_none());
                }
                self.add = wanted;
            }
        }
        Ok(())
    }

    /// A member id as one of `actor`'s users or groups; `None` (and noted as
    /// unknown) when it is neither.
    fn resolve(
        &mut self,
        dir: &Inner,
        group_key: Key,
        actor: &str,
        raw: &str,
    ) -> Result<Option<(MemberKind, Key)>, DirectoryError> {
        let k = key_of(raw);
        if k == Some(group_key) {
            return Err(DirectoryError::InvalidMember {
                kind: MemberKind::Group,
                id: raw.to_owned(),
                reason: "a group cannot be a member of itself",
            });
        }
        if let Some(k) = k {
            if dir.users.get(&k).is_some_and(|u| &*u.owner == actor) {
                return Ok(Some((MemberKind::User, k)));
            }
            if dir.groups.get(&k).is_some_and(|g| &*g.owner == actor) {
                return Ok(Some((MemberKind::Group, k)));
            }
        }
        if self.unknown_seen.insert(raw.to_owned()) {
            self.unknown.push(raw.to_owned());
        }
        Ok(None)
    }

    fn finish(self) -> MemberChange {
        let sorted = |m: HashMap<Key, MemberKind>| {
            let mut v: Vec<(MemberKind, Key)> = m.into_iter().map(|(k, kind)| (kind, k)).collect();
            v.sort_unstable();
            v
        };
        MemberChange {
            add: sorted(self.add),
            remove: sorted(self.remove),
            unknown: self.unknown,
        }
    }
}

fn members(keys: &[(MemberKind, Key)]) -> Vec<Member> {
    keys.iter()
        .map(|&(kind, k)| Member {
            kind,
            id: Id::from(id_of(k)),
        })
        .collect()
}

fn dangling(member: Key, groups: &SmallKeys) -> StoreError {
    let group = groups.iter().next().map(id_of).unwrap_or_default();
    StoreError::Corrupt {
        key: format!("m:{group}"),
        reason: format!("membership of unknown member {}", id_of(member)),
    }
}

fn check_version(kind: ResourceKind, id: &str, expected: Option<u64>, current: u64) -> Result<(), DirectoryError> {
    match expected {
        Some(expected) if expected != current => Err(DirectoryError::VersionMismatch {
            kind,
            id: id.to_owned(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

/// Whether two principals grant the same access (generation aside).
fn same_access(a: &Principal, b: &Principal) -> bool {
    a.user_name == b.user_name
        && a.active == b.active
        && a.groups.len() == b.groups.len()
        && a.groups
            .iter()
            .zip(b.groups.iter())
            .all(|(x, y)| x.id == y.id && x.display_name() == y.display_name())
}

fn remove_from_index(map: &DashMap<Box<str>, SmallKeys>, key: &str, k: Key) {
    map.remove_if_mut(key, |_, set| {
        set.remove(k);
        set.is_empty()
    });
}

/// The case-insensitive key form of userName, email and displayName.
/// Borrows when the text is already lower-case ASCII (the common case for
/// a token claim), so a lookup does not allocate.
fn fold(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn group_name_key(owner: &str, display_name: &str) -> Box<str> {
    format!("{owner}\0{}", display_name.to_lowercase()).into_boxed_str()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
