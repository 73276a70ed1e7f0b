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
use crate::model::{Group, Id, Member, MemberKind, Meta, Principal, User};
use crate::store::{self, Store};

type IdSet = HashSet<Id>;

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
        self.members
            .is_some_and(|m| m.users.contains(id) || m.groups.contains(id))
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
    users: IdSet,
    groups: IdSet,
}

impl Members {
    fn iter(&self) -> impl Iterator<Item = Member> + '_ {
        let users = self.users.iter().map(|id| Member {
            kind: MemberKind::User,
            id: id.clone(),
        });
        let groups = self.groups.iter().map(|id| Member {
            kind: MemberKind::Group,
            id: id.clone(),
        });
        users.chain(groups)
    }

    fn set(&mut self, kind: MemberKind) -> &mut IdSet {
        match kind {
            MemberKind::User => &mut self.users,
            MemberKind::Group => &mut self.groups,
        }
    }

    fn kind_of(&self, id: &str) -> Option<MemberKind> {
        if self.users.contains(id) {
            Some(MemberKind::User)
        } else if self.groups.contains(id) {
            Some(MemberKind::Group)
        } else {
            None
        }
    }
}

/// The identity directory. Cheap to clone; all clones share one state.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    users: DashMap<Id, Arc<User>>,
    groups: DashMap<Id, Arc<Group>>,
    /// Lower-cased userName -> user id. userName is unique across all
    /// clients: it is what tokens are bound to.
    user_by_name: DashMap<Box<str>, Id>,
    users_by_external_id: DashMap<Box<str>, IdSet>,
    /// Lower-cased email -> user ids.
    users_by_email: DashMap<Box<str>, IdSet>,
    /// `owner \0 lower-cased displayName` -> group id: unique per client.
    group_by_name: DashMap<Box<str>, Id>,
    groups_by_external_id: DashMap<Box<str>, IdSet>,
    /// Group id -> direct members.
    members: DashMap<Id, Members>,
    /// User id -> groups it is a direct member of.
    user_groups: DashMap<Id, IdSet>,
    /// Group id -> groups it is a direct member of.
    group_parents: DashMap<Id, IdSet>,
    /// User id -> what the proxy authorizes with, recomputed on every change
    /// that touches the user.
    principals: DashMap<Id, Arc<Principal>>,
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
        let loaded = store.load()?;
        let inner = Inner {
            users: DashMap::with_capacity(loaded.users.len()),
            groups: DashMap::with_capacity(loaded.groups.len()),
            user_by_name: DashMap::with_capacity(loaded.users.len()),
            users_by_external_id: DashMap::new(),
            users_by_email: DashMap::new(),
            group_by_name: DashMap::with_capacity(loaded.groups.len()),
            groups_by_external_id: DashMap::new(),
            members: DashMap::with_capacity(loaded.groups.len()),
            user_groups: DashMap::with_capacity(loaded.users.len()),
            group_parents: DashMap::new(),
            principals: DashMap::with_capacity(loaded.users.len()),
            writer: Mutex::new(()),
            publisher,
            store,
        };
        inner.rebuild(loaded)?;
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
        let memberships = self.inner.members.iter().map(|m| m.users.len() + m.groups.len()).sum();
        Stats {
            users: self.inner.users.len(),
            groups: self.inner.groups.len(),
            memberships,
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        self.inner.store.size_on_disk()
    }

    // ---- reads --------------------------------------------------------

    /// The authorization view of a user, by id: one map read.
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.inner.principals.get(id).map(|p| p.clone())
    }

    /// Binds an identity (a token claim) to a user.
    pub fn principal_by(&self, attr: IdentityAttr, value: &str) -> Lookup {
        let inner = &self.inner;
        let found = |id: &Id| match inner.principals.get(id) {
            Some(p) => Lookup::Found(p.clone()),
            None => Lookup::NotFound,
        };
        let from_set = |set: Option<dashmap::mapref::one::Ref<'_, Box<str>, IdSet>>| match set {
            None => Lookup::NotFound,
            Some(ids) if ids.len() == 1 => ids.iter().next().map_or(Lookup::NotFound, found),
            Some(ids) if ids.is_empty() => Lookup::NotFound,
            Some(ids) => Lookup::Ambiguous(ids.len()),
        };
        match attr {
            IdentityAttr::UserName => match inner.user_by_name.get(&*fold(value)) {
                Some(id) => found(&id),
                None => Lookup::NotFound,
            },
            IdentityAttr::ExternalId => from_set(inner.users_by_external_id.get(value)),
            IdentityAttr::Email => from_set(inner.users_by_email.get(&*fold(value))),
        }
    }

    pub fn user(&self, id: &str) -> Option<Arc<User>> {
        self.inner.users.get(id).map(|u| u.clone())
    }

    pub fn group(&self, id: &str) -> Option<Arc<Group>> {
        self.inner.groups.get(id).map(|g| g.clone())
    }

    /// A user by userName, case-insensitively.
    pub fn user_by_name(&self, user_name: &str) -> Option<Arc<User>> {
        let id = self.inner.user_by_name.get(&*fold(user_name))?.clone();
        self.user(&id)
    }

    pub fn users_by_external_id(&self, external_id: &str) -> Vec<Arc<User>> {
        self.users_in(self.inner.users_by_external_id.get(external_id).map(|s| s.clone()))
    }

    pub fn users_by_email(&self, email: &str) -> Vec<Arc<User>> {
        self.users_in(self.inner.users_by_email.get(&*fold(email)).map(|s| s.clone()))
    }

    /// A client's group by displayName, case-insensitively.
    pub fn group_by_name(&self, owner: &str, display_name: &str) -> Option<Arc<Group>> {
        let id = self
            .inner
            .group_by_name
            .get(&*group_name_key(owner, display_name))?
            .clone();
        self.group(&id)
    }

    pub fn groups_by_external_id(&self, external_id: &str) -> Vec<Arc<Group>> {
        let ids = self.inner.groups_by_external_id.get(external_id).map(|s| s.clone());
        ids.into_iter().flatten().filter_map(|id| self.group(&id)).collect()
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
        let mut out: Vec<Member> = self
            .inner
            .members
            .get(group_id)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The groups a user is a direct member of.
    pub fn direct_groups_of(&self, user_id: &str) -> Vec<Arc<Group>> {
        let ids: Vec<Id> = self
            .inner
            .user_groups
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut groups: Vec<Arc<Group>> = ids.iter().filter_map(|id| self.group(id)).collect();
        groups.sort_by(|a, b| a.display_name().cmp(b.display_name()).then(a.id.cmp(&b.id)));
        groups
    }

    fn users_in(&self, ids: Option<IdSet>) -> Vec<Arc<User>> {
        let mut users: Vec<Arc<User>> = ids.into_iter().flatten().filter_map(|id| self.user(&id)).collect();
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
            for member in m.iter() {
                dump.edges
                    .insert((m.key().to_string(), member.kind, member.id.to_string()));
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

    fn rebuild(&self, loaded: store::Loaded) -> Result<(), StoreError> {
        let corrupt = |key: String, reason: &str| StoreError::Corrupt {
            key,
            reason: reason.to_owned(),
        };
        for user in loaded.users {
            let user = Arc::new(user);
            if self.user_by_name.contains_key(&*fold(user.user_name())) {
                return Err(corrupt(format!("u:{}", user.id), "duplicate userName"));
            }
            self.index_user(&user);
            self.users.insert(user.id.clone(), user);
        }
        for group in loaded.groups {
            let group = Arc::new(group);
            self.index_group(&group);
            self.groups.insert(group.id.clone(), group);
        }
        for (group, kind, member) in loaded.edges {
            let key = || format!("m:{group}/{member}");
            let group_id = self
                .groups
                .get(&*group)
                .map(|g| g.id.clone())
                .ok_or_else(|| corrupt(key(), "membership of an unknown group"))?;
            let member_id = match kind {
                MemberKind::User => self.users.get(&*member).map(|u| u.id.clone()),
                MemberKind::Group => self.groups.get(&*member).map(|g| g.id.clone()),
            }
            .ok_or_else(|| corrupt(key(), "membership of an unknown member"))?;
            self.link(&group_id, kind, &member_id);
        }
        let generation = self.store.applied();
        let ids: Vec<Id> = self.users.iter().map(|u| u.id.clone()).collect();
        for id in ids {
            if let Some(p) = self.compute_principal(&id, generation) {
                self.principals.insert(id, Arc::new(p));
            }
        }
        Ok(())
    }

    // ---- user writes --------------------------------------------------

    fn create_user(&self, actor: &Id, doc: Map<String, Value>) -> Result<(u64, Arc<User>), DirectoryError> {
        let _writer = self.writer.lock();
        let now = now();
        let user = User::new(new_id(), actor.clone(), Meta::new(now), doc)?;
        self.check_user_name_free(user.user_name(), None)?;

        let mut batch = store::Writes::default();
        batch.insert(store::user_key(&user.id), store::encode_user(&user));
        let seq = self.store.apply(batch)?;

        let user = Arc::new(user);
        self.index_user(&user);
        self.users.insert(user.id.clone(), user.clone());
        let principals = self.refresh_principals([user.id.clone()], seq);
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
        self.check_user_name_free(updated.user_name(), Some(&current.id))?;

        let mut batch = store::Writes::default();
        batch.insert(store::user_key(&updated.id), store::encode_user(&updated));
        let seq = self.store.apply(batch).map_err(DirectoryError::from)?;

        let updated = Arc::new(updated);
        self.unindex_user(&current);
        self.index_user(&updated);
        self.users.insert(updated.id.clone(), updated.clone());
        let principals = self.refresh_principals([updated.id.clone()], seq);
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
        let now = now();
        let groups: Vec<Id> = self
            .user_groups
            .get(&current.id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();

        let mut batch = store::Writes::default();
        batch.remove(store::user_key(&current.id));
        let mut bumped = Vec::with_capacity(groups.len());
        for group_id in &groups {
            batch.remove(store::edge_key(group_id, &current.id));
            if let Some(g) = self.bump_group(group_id, now) {
                batch.insert(store::group_key(&g.id), store::encode_group(&g));
                bumped.push(g);
            }
        }
        let seq = self.store.apply(batch)?;

        for group_id in &groups {
            self.unlink(group_id, MemberKind::User, &current.id);
        }
        for g in bumped {
            self.groups.insert(g.id.clone(), g);
        }
        self.user_groups.remove(&current.id);
        self.unindex_user(&current);
        self.users.remove(&current.id);
        let principals = self.refresh_principals([current.id.clone()], seq);
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
        let group = Group::new(new_id(), actor.clone(), Meta::new(now), doc)?;
        self.check_group_name_free(&group.owner, group.display_name(), None)?;
        let mut delta = Delta::default();
        delta.apply(self, &group.id, actor, None, MembersEdit::Add(member_ids))?;
        let delta = delta.finish();

        let mut batch = store::Writes::default();
        batch.insert(store::group_key(&group.id), store::encode_group(&group));
        for m in &delta.add {
            batch.insert(store::edge_key(&group.id, &m.id), store::edge_value(m.kind));
        }
        let seq = self.store.apply(batch)?;

        let group = Arc::new(group);
        self.index_group(&group);
        self.groups.insert(group.id.clone(), group.clone());
        self.members.insert(group.id.clone(), Members::default());
        for m in &delta.add {
            self.link(&group.id, m.kind, &m.id);
        }
        let affected = self.users_affected_by(&delta.add);
        let principals = self.refresh_principals(affected, seq);
        let kind = ChangeKind::GroupCreated {
            after: group.clone(),
            added: delta.add.clone(),
        };
        self.queue(seq, actor, now, kind, principals);
        Ok((
            seq,
            GroupWrite {
                group,
                unknown_members: delta.unknown,
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
        let update = {
            // The read guard is dropped before any map is written below.
            let members = self.members.get(&current.id);
            let view = MemberView {
                members: members.as_deref(),
            };
            edit(&current, &view)?
        };
        let now = now();
        let mut delta = Delta::default();
        for op in update.members {
            delta.apply(self, &current.id, actor, Some(&current.id), op)?;
        }
        let delta = delta.finish();
        let renamed = match update.doc {
            Some(doc) => {
                let g = Group::new(current.id.clone(), current.owner.clone(), current.meta.bumped(now), doc)?;
                (g.doc_json() != current.doc_json()).then_some(g)
            }
            None => None,
        };
        if renamed.is_none() && delta.add.is_empty() && delta.remove.is_empty() {
            return Ok((
                None,
                GroupWrite {
                    group: current,
                    unknown_members: delta.unknown,
                },
            ));
        }
        let name_changed = renamed
            .as_ref()
            .is_some_and(|g| g.display_name() != current.display_name());
        if let Some(g) = &renamed {
            self.check_group_name_free(&g.owner, g.display_name(), Some(&g.id))?;
        }
        let updated = match renamed {
            Some(g) => g,
            None => {
                let mut g = (*current).clone();
                g.meta = current.meta.bumped(now);
                g
            }
        };

        let mut batch = store::Writes::default();
        batch.insert(store::group_key(&updated.id), store::encode_group(&updated));
        for m in &delta.add {
            batch.insert(store::edge_key(&updated.id, &m.id), store::edge_value(m.kind));
        }
        for m in &delta.remove {
            batch.remove(store::edge_key(&updated.id, &m.id));
        }
        let seq = self.store.apply(batch).map_err(DirectoryError::from)?;

        let updated = Arc::new(updated);
        self.unindex_group(&current);
        self.index_group(&updated);
        self.groups.insert(updated.id.clone(), updated.clone());
        for m in &delta.add {
            self.link(&updated.id, m.kind, &m.id);
        }
        for m in &delta.remove {
            self.unlink(&updated.id, m.kind, &m.id);
        }
        let mut affected = self.users_affected_by(&delta.add);
        affected.extend(self.users_affected_by(&delta.remove));
        if name_changed {
            self.users_under(&updated.id, &mut affected);
        }
        let principals = self.refresh_principals(affected, seq);
        let kind = ChangeKind::GroupUpdated {
            before: current,
            after: updated.clone(),
            added: delta.add,
            removed: delta.remove,
        };
        self.queue(seq, &updated.owner, now, kind, principals);
        Ok((
            Some(seq),
            GroupWrite {
                group: updated,
                unknown_members: delta.unknown,
            },
        ))
    }

    fn delete_group(&self, actor: &str, id: &str, expected_version: Option<u64>) -> Result<u64, DirectoryError> {
        let _writer = self.writer.lock();
        let current = self.owned_group(actor, id, expected_version)?;
        let now = now();
        let mut affected = HashSet::new();
        self.users_under(&current.id, &mut affected);
        let members: Vec<Member> = self
            .members
            .get(&current.id)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        let parents: Vec<Id> = self
            .group_parents
            .get(&current.id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();

        let mut batch = store::Writes::default();
        batch.remove(store::group_key(&current.id));
        for m in &members {
            batch.remove(store::edge_key(&current.id, &m.id));
        }
        let mut bumped = Vec::with_capacity(parents.len());
        for parent in &parents {
            batch.remove(store::edge_key(parent, &current.id));
            if let Some(g) = self.bump_group(parent, now) {
                batch.insert(store::group_key(&g.id), store::encode_group(&g));
                bumped.push(g);
            }
        }
        let seq = self.store.apply(batch)?;

        for m in &members {
            self.unlink(&current.id, m.kind, &m.id);
        }
        for parent in &parents {
            self.unlink(parent, MemberKind::Group, &current.id);
        }
        for g in bumped {
            self.groups.insert(g.id.clone(), g);
        }
        self.members.remove(&current.id);
        self.group_parents.remove(&current.id);
        self.unindex_group(&current);
        self.groups.remove(&current.id);
        let principals = self.refresh_principals(affected, seq);
        let owner = current.owner.clone();
        let kind = ChangeKind::GroupDeleted {
            before: current,
            removed: members,
        };
        self.queue(seq, &owner, now, kind, principals);
        Ok(seq)
    }

    // ---- helpers ------------------------------------------------------

    fn owned_user(&self, actor: &str, id: &str, expected: Option<u64>) -> Result<Arc<User>, DirectoryError> {
        let user = self
            .users
            .get(id)
            .map(|u| u.clone())
            .filter(|u| &*u.owner == actor)
            .ok_or_else(|| DirectoryError::NotFound {
                kind: ResourceKind::User,
                id: id.to_owned(),
            })?;
        check_version(ResourceKind::User, id, expected, user.meta.version)?;
        Ok(user)
    }

    fn owned_group(&self, actor: &str, id: &str, expected: Option<u64>) -> Result<Arc<Group>, DirectoryError> {
        let group = self
            .groups
            .get(id)
            .map(|g| g.clone())
            .filter(|g| &*g.owner == actor)
            .ok_or_else(|| DirectoryError::NotFound {
                kind: ResourceKind::Group,
                id: id.to_owned(),
            })?;
        check_version(ResourceKind::Group, id, expected, group.meta.version)?;
        Ok(group)
    }

    fn check_user_name_free(&self, user_name: &str, except: Option<&Id>) -> Result<(), DirectoryError> {
        match self.user_by_name.get(&*fold(user_name)) {
            Some(holder) if Some(&*holder) != except => Err(DirectoryError::Conflict {
                attribute: "userName",
                value: user_name.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn check_group_name_free(&self, owner: &str, name: &str, except: Option<&Id>) -> Result<(), DirectoryError> {
        match self.group_by_name.get(&*group_name_key(owner, name)) {
            Some(holder) if Some(&*holder) != except => Err(DirectoryError::Conflict {
                attribute: "displayName",
                value: name.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// A copy of a group with its version bumped (its members changed).
    fn bump_group(&self, id: &str, now: OffsetDateTime) -> Option<Arc<Group>> {
        let current = self.groups.get(id)?.clone();
        let mut g = (*current).clone();
        g.meta = current.meta.bumped(now);
        Some(Arc::new(g))
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
        self.user_by_name.insert(fold(user.user_name()).into(), user.id.clone());
        if let Some(ext) = user.external_id() {
            self.users_by_external_id
                .entry(ext.into())
                .or_default()
                .insert(user.id.clone());
        }
        for email in user.emails() {
            self.users_by_email
                .entry(email.into())
                .or_default()
                .insert(user.id.clone());
        }
    }

    fn unindex_user(&self, user: &User) {
        let name = fold(user.user_name());
        self.user_by_name.remove_if(&*name, |_, id| *id == user.id);
        if let Some(ext) = user.external_id() {
            remove_from_set(&self.users_by_external_id, ext, &user.id);
        }
        for email in user.emails() {
            remove_from_set(&self.users_by_email, email, &user.id);
        }
    }

    fn index_group(&self, group: &Arc<Group>) {
        self.group_by_name
            .insert(group_name_key(&group.owner, group.display_name()), group.id.clone());
        if let Some(ext) = group.external_id() {
            self.groups_by_external_id
                .entry(ext.into())
                .or_default()
                .insert(group.id.clone());
        }
    }

    fn unindex_group(&self, group: &Group) {
        let key = group_name_key(&group.owner, group.display_name());
        self.group_by_name.remove_if(&key, |_, id| *id == group.id);
        if let Some(ext) = group.external_id() {
            remove_from_set(&self.groups_by_external_id, ext, &group.id);
        }
    }

    fn link(&self, group: &Id, kind: MemberKind, member: &Id) {
        self.members
            .entry(group.clone())
            .or_default()
            .set(kind)
            .insert(member.clone());
        let reverse = match kind {
            MemberKind::User => &self.user_groups,
            MemberKind::Group => &self.group_parents,
        };
        reverse.entry(member.clone()).or_default().insert(group.clone());
    }

    fn unlink(&self, group: &Id, kind: MemberKind, member: &Id) {
        if let Some(mut m) = self.members.get_mut(group) {
            m.set(kind).remove(member);
        }
        let reverse = match kind {
            MemberKind::User => &self.user_groups,
            MemberKind::Group => &self.group_parents,
        };
        remove_from_set(reverse, member, group);
    }

    /// Users whose effective groups can change when these members join or
    /// leave a group: the users themselves, and every user inside a member
    /// group (transitively).
    fn users_affected_by(&self, members: &[Member]) -> HashSet<Id> {
        let mut out = HashSet::new();
        for m in members {
            match m.kind {
                MemberKind::User => {
                    out.insert(m.id.clone());
                }
                MemberKind::Group => self.users_under(&m.id, &mut out),
            }
        }
        out
    }

    /// Every user inside `group`, directly or through nested groups. Cycles
    /// are tolerated (each group is visited once).
    fn users_under(&self, group: &Id, out: &mut HashSet<Id>) {
        let mut seen: HashSet<Id> = HashSet::new();
        let mut stack = vec![group.clone()];
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(m) = self.members.get(&g) {
                out.extend(m.users.iter().cloned());
                stack.extend(m.groups.iter().filter(|c| !seen.contains(*c)).cloned());
            }
        }
    }

    /// The user's effective groups: direct groups and all their ancestors.
    fn compute_principal(&self, id: &str, generation: u64) -> Option<Principal> {
        let user = self.users.get(id)?.clone();
        let mut seen: HashSet<Id> = HashSet::new();
        let mut stack: Vec<Id> = self
            .user_groups
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(parents) = self.group_parents.get(&g) {
                stack.extend(parents.iter().filter(|p| !seen.contains(*p)).cloned());
            }
        }
        let mut groups: Vec<Arc<Group>> = seen
            .iter()
            .filter_map(|g| self.groups.get(g).map(|g| g.clone()))
            .collect();
        groups.sort_by(|a, b| (&*a.owner, a.display_name(), &*a.id).cmp(&(&*b.owner, b.display_name(), &*b.id)));
        Some(Principal {
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
    fn refresh_principals(&self, ids: impl IntoIterator<Item = Id>, generation: u64) -> Vec<PrincipalChange> {
        let mut changes = Vec::new();
        for id in ids {
            let before = self.principals.get(&id).map(|p| p.clone());
            let after = self.compute_principal(&id, generation).map(Arc::new);
            if let (Some(b), Some(a)) = (&before, &after)
                && same_access(b, a)
            {
                continue;
            }
            match &after {
                Some(p) => {
                    self.principals.insert(id, p.clone());
                }
                None => {
                    self.principals.remove(&id);
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
        // userName index: one entry per user, pointing back at it.
        for u in self.users.iter() {
            match self.user_by_name.get(&*fold(u.user_name())) {
                Some(id) if *id == u.id => {}
                other => problems.push(format!(
                    "user {}: userName index has {:?}",
                    u.id,
                    other.map(|i| i.to_string())
                )),
            }
            if let Some(ext) = u.external_id()
                && !self.users_by_external_id.get(ext).is_some_and(|s| s.contains(&u.id))
            {
                problems.push(format!("user {}: missing from externalId index", u.id));
            }
            for email in u.emails() {
                if !self.users_by_email.get(email).is_some_and(|s| s.contains(&u.id)) {
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
            for id in e.value() {
                if self
                    .users
                    .get(id)
                    .and_then(|u| u.external_id().map(|x| x == &**e.key()))
                    != Some(true)
                {
                    problems.push(format!("externalId index {} has stale user {id}", e.key()));
                }
            }
        }
        for e in self.users_by_email.iter() {
            for id in e.value() {
                if self.users.get(id).map(|u| u.emails().any(|m| m == &**e.key())) != Some(true) {
                    problems.push(format!("email index {} has stale user {id}", e.key()));
                }
            }
        }
        for g in self.groups.iter() {
            match self.group_by_name.get(&*group_name_key(&g.owner, g.display_name())) {
                Some(id) if *id == g.id => {}
                _ => problems.push(format!("group {}: displayName index is wrong", g.id)),
            }
        }
        if self.group_by_name.len() != self.groups.len() {
            problems.push("group displayName index size differs from groups".into());
        }
        // Membership, both ways.
        let mut edges = 0usize;
        for m in self.members.iter() {
            if !self.groups.contains_key(m.key()) {
                problems.push(format!("members of unknown group {}", m.key()));
            }
            for u in &m.users {
                edges += 1;
                if !self.users.contains_key(u) {
                    problems.push(format!("group {} has unknown user {u}", m.key()));
                }
                if !self.user_groups.get(u).is_some_and(|s| s.contains(m.key())) {
                    problems.push(format!("user {u} lacks reverse edge to {}", m.key()));
                }
            }
            for c in &m.groups {
                edges += 1;
                if !self.groups.contains_key(c) {
                    problems.push(format!("group {} has unknown group {c}", m.key()));
                }
                if !self.group_parents.get(c).is_some_and(|s| s.contains(m.key())) {
                    problems.push(format!("group {c} lacks reverse edge to {}", m.key()));
                }
            }
        }
        let reverse: usize = self.user_groups.iter().map(|s| s.len()).sum::<usize>()
            + self.group_parents.iter().map(|s| s.len()).sum::<usize>();
        if reverse != edges {
            problems.push(format!("{edges} forward edges but {reverse} reverse edges"));
        }
        // Principals.
        for u in self.users.iter() {
            match (self.principals.get(&u.id), self.compute_principal(&u.id, 0)) {
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

/// The computed membership change of one group update, against the
/// group's current members. Maps, not lists: a single request may add or
/// remove tens of thousands of members.
#[derive(Debug, Default)]
struct Delta {
    add: HashMap<Id, MemberKind>,
    remove: HashMap<Id, MemberKind>,
    unknown: Vec<String>,
    unknown_seen: HashSet<String>,
}

/// A finished [`Delta`], sorted so events and records are deterministic.
#[derive(Debug, Default)]
struct Resolved {
    add: Vec<Member>,
    remove: Vec<Member>,
    unknown: Vec<String>,
}

impl Delta {
    /// Folds one edit into the delta. `group` is `None` while the group is
    /// being created (it has no members yet).
    fn apply(
        &mut self,
        dir: &Inner,
        group_id: &Id,
        actor: &str,
        group: Option<&Id>,
        edit: MembersEdit,
    ) -> Result<(), DirectoryError> {
        // A read guard, not a copy: a group may have 100,000 members. Nothing
        // below writes to `members`, so holding it cannot deadlock.
        let current = group.and_then(|g| dir.members.get(g));
        let current_kind = |id: &str| current.as_ref().and_then(|m| m.kind_of(id));
        match edit {
            MembersEdit::Add(ids) => {
                for raw in ids {
                    let Some(member) = self.resolve(dir, group_id, actor, &raw)? else {
                        continue;
                    };
                    if self.remove.remove(&member.id).is_none() && current_kind(&member.id).is_none() {
                        self.add.insert(member.id, member.kind);
                    }
                }
            }
            MembersEdit::Remove(ids) => {
                for raw in ids {
                    if self.add.remove(raw.as_str()).is_some() {
                        continue;
                    }
                    let Some(kind) = current_kind(&raw) else { continue };
                    let id = match kind {
                        MemberKind::User => dir.users.get(raw.as_str()).map(|u| u.id.clone()),
                        MemberKind::Group => dir.groups.get(raw.as_str()).map(|g| g.id.clone()),
                    };
                    if let Some(id) = id {
                        self.remove.insert(id, kind);
                    }
                }
            }
            MembersEdit::Replace(ids) => {
                let mut wanted: HashMap<Id, MemberKind> = HashMap::with_capacity(ids.len());
                for raw in ids {
                    if let Some(m) = self.resolve(dir, group_id, actor, &raw)? {
                        wanted.insert(m.id, m.kind);
                    }
                }
                self.add.clear();
                self.remove.clear();
                if let Some(current) = &current {
                    self.remove.extend(
                        current
                            .iter()
                            .filter(|m| !wanted.contains_key(&m.id))
                            .map(|m| (m.id, m.kind)),
                    );
                    wanted.retain(|id, _| current.kind_of(id).is_none());
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
        group_id: &Id,
        actor: &str,
        raw: &str,
    ) -> Result<Option<Member>, DirectoryError> {
        if raw == &**group_id {
            return Err(DirectoryError::InvalidMember {
                kind: MemberKind::Group,
                id: raw.to_owned(),
                reason: "a group cannot be a member of itself",
            });
        }
        if let Some(u) = dir.users.get(raw).filter(|u| &*u.owner == actor) {
            return Ok(Some(Member {
                kind: MemberKind::User,
                id: u.id.clone(),
            }));
        }
        if let Some(g) = dir.groups.get(raw).filter(|g| &*g.owner == actor) {
            return Ok(Some(Member {
                kind: MemberKind::Group,
                id: g.id.clone(),
            }));
        }
        if self.unknown_seen.insert(raw.to_owned()) {
            self.unknown.push(raw.to_owned());
        }
        Ok(None)
    }

    fn finish(self) -> Resolved {
        let sorted = |m: HashMap<Id, MemberKind>| {
            let mut v: Vec<Member> = m.into_iter().map(|(id, kind)| Member { kind, id }).collect();
            v.sort();
            v
        };
        Resolved {
            add: sorted(self.add),
            remove: sorted(self.remove),
            unknown: self.unknown,
        }
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

fn remove_from_set<K>(map: &DashMap<K, IdSet>, key: &str, id: &str)
where
    K: std::borrow::Borrow<str> + Eq + std::hash::Hash,
{
    map.remove_if_mut(key, |_, set| {
        set.remove(id);
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

fn new_id() -> Id {
    Id::from(uuid::Uuid::new_v4().to_string())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
