//! The durable store: with its `sessions` tree, the only code in Portcullis
//! that touches the sled database.
//!
//! Browser sessions live in a second tree (see [`crate::sessions`]), and
//! users' last access in a third ([`crate::activity`]).
//!
//! Layout (one sled tree, `directory`, so that one `apply_batch` is atomic
//! across users, groups and membership edges):
//!
//! | key                              | value                                   |
//! |----------------------------------|-----------------------------------------|
//! | `g:{group id}`                   | group record (JSON)                     |
//! | `m:{group id}:{bucket}`          | members of the group whose id starts    |
//! |                                  | with hex digit `{bucket}`: 17 bytes each|
//! |                                  | (`u`/`g`, then the id as 16 bytes)      |
//! | `u:{user id}`                    | user record (JSON)                      |
//!
//! Members are packed sixteen buckets to a group rather than one key per
//! membership: a million memberships load as at most 160,000 sled entries,
//! and changing one member rewrites one sixteenth of the group.
//!
//! The default tree holds `schema_version`. A record is
//! `{"owner":..,"created":ns,"modified":ns,"version":n,"doc":{..}}`.
//!
//! Durability uses group commit: a writer applies its batch (in memory, under
//! the directory's writer lock), receives a sequence number, and then awaits
//! [`Store::durable`]. One flusher thread calls `sled::Db::flush` for
//! everything applied so far and releases every waiter the flush covered, so
//! concurrent writers share one fsync instead of queueing for their own.
//!
//! What this module does not do: decide what a valid change is (the
//! directory does), or cache anything (sled's own page cache aside).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::StoreError;
use crate::key::{Key, key_of};
use crate::model::{Group, Id, MemberKind, Meta, User};

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
const TREE: &str = "directory";

/// Called by the flusher after each successful flush with the highest
/// sequence number now durable.
pub(crate) type OnDurable = Box<dyn Fn(u64) + Send + Sync>;

pub(crate) struct Store {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    sessions: crate::sessions::SessionStore,
    activity: crate::activity::ActivityStore,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// State shared between writers and the flusher thread.
struct Shared {
    /// Highest sequence number whose batch sled has applied (in memory).
    /// Bumped only after `apply_batch` returns, under the directory's writer
    /// lock, so every batch numbered at or below it is in sled already.
    applied: AtomicU64,
    /// Guarded by a blocking mutex: the flusher is a plain thread, and no
    /// holder ever awaits while holding it.
    state: Mutex<FlushState>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
}

#[derive(Debug, Default)]
struct FlushState {
    requested: u64,
    durable: u64,
    failed: Option<Arc<str>>,
    shutdown: bool,
}

#[derive(Debug, Clone, Default)]
struct Durable {
    seq: u64,
    failed: Option<Arc<str>>,
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its flusher.
    pub(crate) fn open(path: &Path, cache_bytes: u64, on_durable: OnDurable) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // We flush explicitly, in group commits; a timer flush would only
            // compete with them.
            .flush_every_ms(None);
        let db = open_sled(&config).map_err(open_err)?;
        let tree = db.open_tree(TREE).map_err(open_err)?;
        check_schema(path, &db, &tree)?;
        let sessions = crate::sessions::SessionStore::open(&db).map_err(open_err)?;
        let activity = crate::activity::ActivityStore::open(&db).map_err(open_err)?;

        let shared = Arc::new(Shared {
            applied: AtomicU64::new(0),
            state: Mutex::new(FlushState::default()),
            wake: Condvar::new(),
            durable: watch::Sender::new(Durable::default()),
        });
        let flusher = {
            let shared = shared.clone();
            let db = db.clone();
            std::thread::Builder::new()
                .name("portcullis-store-flush".into())
                .spawn(move || flush_loop(&shared, &db, &on_durable))
                .map_err(|e| StoreError::Flush(format!("cannot start flusher thread: {e}")))?
        };
        Ok(Store {
            path: path.to_owned(),
            db,
            tree,
            sessions,
            activity,
            shared,
            flusher: Some(flusher),
        })
    }

    pub(crate) fn sessions(&self) -> &crate::sessions::SessionStore {
        &self.sessions
    }

    pub(crate) fn activity(&self) -> &crate::activity::ActivityStore {
        &self.activity
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `f` with the rest of the key and the value of every record
    /// whose key starts with `prefix`, in key order, stopping at the first
    /// error. A record that cannot be read or decoded stops the load:
    /// starting with part of the directory missing would silently grant or
    /// revoke access.
    pub(crate) fn scan(
        &self,
        prefix: &str,
        mut f: impl FnMut(&str, &[u8]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item.map_err(|e| StoreError::Corrupt {
                key: format!("{prefix}*"),
                reason: e.to_string(),
            })?;
            let corrupt = |reason: String| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            };
            let text = std::str::from_utf8(&key).map_err(|_| corrupt("key is not utf-8".into()))?;
            let rest = text.get(prefix.len()..).unwrap_or_default();
            f(rest, &value).map_err(corrupt)?;
        }
        Ok(())
    }

    /// A key outside the known prefixes, if any: a newer or foreign layout
    /// that this build would otherwise silently ignore. Checks the gaps
    /// between the prefixes with range seeks, not a full scan.
    pub(crate) fn unknown_key(&self) -> Option<String> {
        let gaps: [(&[u8], &[u8]); 3] = [(b"", b"g:"), (b"g;", b"m:"), (b"m;", b"u:")];
        let first_in = |lo: &[u8], hi: &[u8]| self.tree.range(lo.to_vec()..hi.to_vec()).keys().next();
        gaps.iter()
            .find_map(|(lo, hi)| first_in(lo, hi))
            .or_else(|| self.tree.range(b"u;".to_vec()..).keys().next())
            .map(|k| match k {
                Ok(k) => String::from_utf8_lossy(&k).into_owned(),
                Err(e) => format!("(unreadable: {e})"),
            })
    }

    /// Applies writes atomically (in memory) and returns their sequence
    /// number. Callers must hold the directory's writer lock, which is what
    /// makes sequence numbers follow the order writes were applied in.
    pub(crate) fn apply(&self, writes: Writes) -> Result<u64, StoreError> {
        if let Some(reason) = &self.shared.state.lock().failed {
            return Err(StoreError::Failed(reason.to_string()));
        }
        // A single key is atomic on its own. sled's `apply_batch` costs
        // several times a plain insert and makes the next flush far slower
        // (measured: ~30 us vs ~10 us per write, ~2 ms vs ~0.25 ms per flush
        // of 32 writes), so it is kept for writes that touch several keys.
        let result = match <[_; 1]>::try_from(writes.0) {
            Ok([(key, Some(value))]) => self.tree.insert(key, value).map(drop),
            Ok([(key, None)]) => self.tree.remove(key).map(drop),
            Err(many) => {
                let mut batch = sled::Batch::default();
                for (key, value) in many {
                    match value {
                        Some(v) => batch.insert(key, v),
                        None => batch.remove(key),
                    }
                }
                self.tree.apply_batch(batch)
            }
        };
        result.map_err(StoreError::Write)?;
        let seq = self.shared.applied.fetch_add(1, Ordering::AcqRel) + 1;
        // Ask for the flush now rather than when the caller awaits
        // `durable`: a caller that is cancelled before awaiting must not
        // leave its applied change unflushed until some later write.
        let mut st = self.shared.state.lock();
        st.requested = st.requested.max(seq);
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// The sequence number of the last applied batch.
    pub(crate) fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Resolves once the batch numbered `seq` is on disk.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.shared.durable.subscribe();
        {
            let mut st = self.shared.state.lock();
            if let Some(reason) = &st.failed {
                return Err(StoreError::Failed(reason.to_string()));
            }
            if st.durable >= seq {
                return Ok(());
            }
            if st.shutdown {
                return Err(StoreError::Closed);
            }
            st.requested = st.requested.max(seq);
            self.shared.wake.notify_one();
        }
        let state = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        match &state.failed {
            Some(reason) if state.seq < seq => Err(StoreError::Flush(reason.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether an earlier flush failed.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.shared.state.lock().failed.clone()
    }

    pub(crate) fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock();
            st.shutdown = true;
            // Flush whatever is applied even if nobody waits for it.
            st.requested = st.requested.max(self.shared.applied.load(Ordering::Acquire));
            self.shared.wake.notify_one();
        }
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
    }
}

fn flush_loop(shared: &Shared, db: &sled::Db, on_durable: &OnDurable) {
    loop {
        let target = {
            let mut st = shared.state.lock();
            while !st.shutdown && st.requested <= st.durable {
                shared.wake.wait(&mut st);
            }
            if st.requested <= st.durable || st.failed.is_some() {
                // Shutting down with nothing left to flush, or failed.
                return;
            }
            shared.applied.load(Ordering::Acquire)
        };
        let result = db.flush();
        let published = {
            let mut st = shared.state.lock();
            match result {
                Ok(_) => st.durable = st.durable.max(target),
                Err(e) => {
                    tracing::error!(error = %e, "identity store flush failed; refusing further writes");
                    st.failed = Some(e.to_string().into());
                }
            }
            Durable {
                seq: st.durable,
                failed: st.failed.clone(),
            }
        };
        if published.failed.is_none() {
            on_durable(published.seq);
        }
        shared.durable.send_replace(published);
    }
}

/// Opens sled, waiting briefly for its lock. sled releases the lock when
/// the last of its I/O jobs lets go of the file, a moment after the
/// previous `Db` is dropped; a store reopened at once in the same process
/// (a restart in tests, an embedded restart) can find it still held. A
/// lock held longer than [`LOCK_WAIT`] belongs to another process and is
/// reported.
pub(crate) fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(e) if is_lock_contention(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// How long [`open_sled`] waits for another holder of the store's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn is_lock_contention(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn check_schema(path: &Path, db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    match db.get(SCHEMA_KEY).map_err(open_err)? {
        Some(found) if *found == *SCHEMA_VERSION.to_string().as_bytes() => Ok(()),
        Some(found) => Err(StoreError::SchemaVersion {
            path: path.to_owned(),
            found: String::from_utf8_lossy(&found).into_owned(),
            expected: SCHEMA_VERSION,
        }),
        None if tree.is_empty() => {
            db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                .map_err(open_err)?;
            db.flush().map_err(open_err)?;
            Ok(())
        }
        None => Err(StoreError::MissingSchemaVersion { path: path.to_owned() }),
    }
}

// ---- keys and records ------------------------------------------------------

/// The key writes of one directory change, applied atomically.
#[derive(Debug, Default)]
pub(crate) struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    pub(crate) fn insert(&mut self, key: Vec<u8>, value: impl Into<Vec<u8>>) {
        self.0.push((key, Some(value.into())));
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }
}

pub(crate) fn user_key(id: &str) -> Vec<u8> {
    [b"u:", id.as_bytes()].concat()
}

pub(crate) fn group_key(id: &str) -> Vec<u8> {
    [b"g:", id.as_bytes()].concat()
}

/// The member bucket of a key: its top four bits, which is the first hex
/// digit of its text form.
pub(crate) fn bucket_of(key: Key) -> u8 {
    (key >> 124) as u8
}

pub(crate) fn members_key(group: &str, bucket: u8) -> Vec<u8> {
    format!("m:{group}:{bucket:x}").into_bytes()
}

pub(crate) fn encode_members(members: impl Iterator<Item = (MemberKind, Key)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, key) in members {
        out.push(match kind {
            MemberKind::User => b'u',
            MemberKind::Group => b'g',
        });
        out.extend_from_slice(&key.to_be_bytes());
    }
    out
}

/// Decodes a members record; `rest` is the key after `m:`.
pub(crate) fn decode_members(rest: &str, value: &[u8]) -> Result<(Key, Vec<(MemberKind, Key)>), String> {
    let (group, bucket) = rest.rsplit_once(':').ok_or("members key has no bucket")?;
    let group = key_of(group).ok_or("members key has a malformed group id")?;
    let bucket = u8::from_str_radix(bucket, 16).map_err(|_| "members key has a malformed bucket")?;
    if !value.len().is_multiple_of(17) {
        return Err(format!(
            "members record has {} bytes, not a multiple of 17",
            value.len()
        ));
    }
    let mut out = Vec::with_capacity(value.len() / 17);
    for entry in value.chunks_exact(17) {
        let kind = match entry.first() {
            Some(b'u') => MemberKind::User,
            Some(b'g') => MemberKind::Group,
            _ => return Err("unknown member kind".into()),
        };
        let bytes: [u8; 16] = entry
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or("short member entry")?;
        let key = u128::from_be_bytes(bytes);
        if bucket_of(key) != bucket {
            return Err("member filed under the wrong bucket".into());
        }
        out.push((kind, key));
    }
    Ok((group, out))
}

pub(crate) fn encode_user(user: &User) -> Vec<u8> {
    encode_record(&user.owner, &user.meta, user.doc_json())
}

pub(crate) fn encode_group(group: &Group) -> Vec<u8> {
    encode_record(&group.owner, &group.meta, group.doc_json())
}

fn encode_record(owner: &str, meta: &Meta, doc_json: &str) -> Vec<u8> {
    // The document is already JSON text; splicing it in avoids parsing it
    // again on the write path.
    format!(
        r#"{{"owner":{},"created":{},"modified":{},"version":{},"doc":{}}}"#,
        Value::String(owner.to_owned()),
        nanos(meta.created),
        nanos(meta.last_modified),
        meta.version,
        doc_json
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    owner: std::borrow::Cow<'a, str>,
    created: i64,
    modified: i64,
    version: u64,
    #[serde(borrow)]
    doc: &'a RawValue,
}

/// Decodes a user or group record into its owner, meta and document text.
/// `owners` interns owner names: there are a handful of SCIM clients and
/// hundreds of thousands of resources.
pub(crate) fn decode_record<'a>(
    bytes: &'a [u8],
    owners: &mut HashMap<String, Id>,
) -> Result<(Id, Meta, &'a str), String> {
    let r: Record<'a> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let owner = match owners.get(&*r.owner) {
        Some(o) => o.clone(),
        None => {
            let o = Id::from(&*r.owner);
            owners.insert(r.owner.into_owned(), o.clone());
            o
        }
    };
    let meta = Meta {
        created: from_nanos(r.created)?,
        last_modified: from_nanos(r.modified)?,
        version: r.version,
    };
    Ok((owner, meta, r.doc.get()))
}

fn nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn from_nanos(n: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| format!("bad timestamp {n}: {e}"))
}
