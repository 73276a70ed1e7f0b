//! Durable storage for browser sessions: a second sled tree, `sessions`,
//! beside the directory's, in the same database and under the same
//! "only the store touches disk" rule.
//!
//! The store keeps opaque records; what a session *means* (lifetimes,
//! tokens, cookies) is the proxy's business. Keys are 32-byte session
//! handles, which the proxy derives by hashing the secret in the cookie, so
//! nothing read from this tree can be replayed as a cookie.
//!
//! Layout of the `sessions` tree:
//!
//! | key                          | value                                   |
//! |------------------------------|-----------------------------------------|
//! | `s` + handle (32 bytes)      | user id length (1 byte), user id, record |
//! | `u` + user id + `/` + handle | empty: the index for revoking by user   |
//!
//! Creating and removing sessions is durable before it returns (a logout or
//! a revocation that a crash could undo would bring a session back);
//! [`SessionStore::touch`] is not, because losing a last-seen update only
//! makes an idle session look a little older.
//!
//! What this module does not do: expire sessions by time (the caller sweeps
//! with [`SessionStore::scan`]), or cache them.

use crate::StoreError;

/// A session's key in the store.
pub type SessionHandle = [u8; 32];

/// One stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub handle: SessionHandle,
    /// The directory user the session belongs to.
    pub user_id: String,
    pub record: Vec<u8>,
}

/// The sessions tree. Cheap to clone.
#[derive(Clone)]
pub struct SessionStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("sessions", &self.tree.len())
            .finish()
    }
}

const TREE: &str = "sessions";

impl SessionStore {
    pub(crate) fn open(db: &sled::Db) -> Result<SessionStore, sled::Error> {
        Ok(SessionStore {
            db: db.clone(),
            tree: db.open_tree(TREE)?,
        })
    }

    /// The session stored under `handle`, if any.
    pub fn get(&self, handle: &SessionHandle) -> Result<Option<StoredSession>, StoreError> {
        let Some(value) = self.tree.get(session_key(handle)).map_err(StoreError::Write)? else {
            return Ok(None);
        };
        decode(*handle, &value).map(Some)
    }

    /// Stores a session and waits until it is on disk.
    pub async fn put(&self, session: &StoredSession) -> Result<(), StoreError> {
        if session.user_id.is_empty() || session.user_id.len() > 255 || session.user_id.contains('/') {
            return Err(StoreError::Corrupt {
                key: "session".into(),
                reason: format!("unusable user id {:?}", session.user_id),
            });
        }
        let mut batch = sled::Batch::default();
        batch.insert(session_key(&session.handle), encode(session));
        batch.insert(index_key(&session.user_id, &session.handle), Vec::new());
        self.tree.apply_batch(batch).map_err(StoreError::Write)?;
        self.flush().await
    }

    /// Replaces a session's record without waiting for the disk. Does
    /// nothing if the session is gone (revoked meanwhile).
    pub fn touch(&self, handle: &SessionHandle, record: &[u8]) -> Result<(), StoreError> {
        let key = session_key(handle);
        let updated = self.tree.fetch_and_update(&key, |old| {
            let old = old?;
            let user_len = usize::from(*old.first()?);
            let mut value = old.get(..1 + user_len)?.to_vec();
            value.extend_from_slice(record);
            Some(value)
        });
        updated.map(drop).map_err(StoreError::Write)
    }

    /// Removes one session and waits until the removal is on disk. Returns
    /// whether it existed.
    pub async fn remove(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        let Some(stored) = self.get(handle)? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        batch.remove(session_key(handle));
        batch.remove(index_key(&stored.user_id, handle));
        self.tree.apply_batch(batch).map_err(StoreError::Write)?;
        self.flush().await?;
        Ok(true)
    }

    /// Removes every session of a user and waits until that is on disk.
    /// Returns the handles removed.
    pub async fn remove_user(&self, user_id: &str) -> Result<Vec<SessionHandle>, StoreError> {
        let prefix = index_prefix(user_id);
        let mut handles = Vec::new();
        let mut batch = sled::Batch::default();
        for key in self.tree.scan_prefix(&prefix).keys() {
            let key = key.map_err(StoreError::Write)?;
            let Some(handle) = key.get(prefix.len()..).and_then(|h| SessionHandle::try_from(h).ok()) else {
                continue;
            };
            batch.remove(key.to_vec());
            batch.remove(session_key(&handle));
            handles.push(handle);
        }
        if handles.is_empty() {
            return Ok(handles);
        }
        self.tree.apply_batch(batch).map_err(StoreError::Write)?;
        self.flush().await?;
        Ok(handles)
    }

    /// Every stored session, for sweeping expired ones. A record that
    /// cannot be decoded is reported as an error item, not skipped.
    pub fn scan(&self) -> impl Iterator<Item = Result<StoredSession, StoreError>> + '_ {
        self.tree.scan_prefix(b"s").map(|item| {
            let (key, value) = item.map_err(StoreError::Write)?;
            let handle = key
                .get(1..)
                .and_then(|h| SessionHandle::try_from(h).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: "session".into(),
                    reason: "malformed session key".into(),
                })?;
            decode(handle, &value)
        })
    }

    /// How many sessions are stored.
    pub fn len(&self) -> usize {
        self.tree.scan_prefix(b"s").count()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix(b"s").next().is_none()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Session writes are rare (a sign-in, a logout, a revocation), so
        // each flushes on its own rather than joining the directory's group
        // commit, whose sequence numbers order directory changes only.
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| StoreError::Flush(e.to_string()))
    }
}

fn session_key(handle: &SessionHandle) -> Vec<u8> {
    [&b"s"[..], handle].concat()
}

fn index_prefix(user_id: &str) -> Vec<u8> {
    [b"u", user_id.as_bytes(), b"/"].concat()
}

fn index_key(user_id: &str, handle: &SessionHandle) -> Vec<u8> {
    [&index_prefix(user_id)[..], handle].concat()
}

fn encode(session: &StoredSession) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + session.user_id.len() + session.record.len());
    // Checked in `put`: at most 255 bytes.
    value.push(session.user_id.len() as u8);
    value.extend_from_slice(session.user_id.as_bytes());
    value.extend_from_slice(&session.record);
    value
}

fn decode(handle: SessionHandle, value: &[u8]) -> Result<StoredSession, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: "session".into(),
        reason: reason.into(),
    };
    let user_len = usize::from(*value.first().ok_or_else(|| corrupt("empty session record"))?);
    let user = value
        .get(1..1 + user_len)
        .ok_or_else(|| corrupt("session record shorter than its user id"))?;
    let user_id = std::str::from_utf8(user)
        .map_err(|_| corrupt("session user id is not utf-8"))?
        .to_owned();
    Ok(StoredSession {
        handle,
        user_id,
        record: value.get(1 + user_len..).unwrap_or_default().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Directory, Options};

    fn session(handle: u8, user: &str, record: &str) -> StoredSession {
        StoredSession {
            handle: [handle; 32],
            user_id: user.into(),
            record: record.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn sessions_persist_and_are_removed_one_by_one_or_per_user() {
        let dir = tempfile::tempdir().unwrap();
        {
            let directory = Directory::open(dir.path(), Options::default()).unwrap();
            let store = directory.sessions();
            store.put(&session(1, "alice", "a1")).await.unwrap();
            store.put(&session(2, "alice", "a2")).await.unwrap();
            store.put(&session(3, "bob", "b1")).await.unwrap();
            store.touch(&[1; 32], b"a1-touched").unwrap();
            // Touching a session that does not exist creates nothing.
            store.touch(&[9; 32], b"ghost").unwrap();
            assert_eq!(store.len(), 3);
        }
        let directory = Directory::open(dir.path(), Options::default()).unwrap();
        let store = directory.sessions();
        assert_eq!(store.get(&[1; 32]).unwrap(), Some(session(1, "alice", "a1-touched")));
        assert_eq!(store.get(&[9; 32]).unwrap(), None);
        assert!(store.remove(&[3; 32]).await.unwrap());
        assert!(!store.remove(&[3; 32]).await.unwrap());
        let mut removed = store.remove_user("alice").await.unwrap();
        removed.sort();
        assert_eq!(removed, vec![[1; 32], [2; 32]]);
        assert!(store.is_empty());
        assert!(store.remove_user("alice").await.unwrap().is_empty());
        // The directory's own tree is untouched by session keys.
        drop(store);
        drop(directory);
        Directory::open(dir.path(), Options::default()).unwrap();
    }

    #[tokio::test]
    async fn scan_lists_every_session_and_bad_user_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(dir.path(), Options::default()).unwrap();
        let store = directory.sessions();
        for i in 0..5u8 {
            store.put(&session(i, &format!("user{}", i % 2), "r")).await.unwrap();
        }
        let all: Vec<_> = store.scan().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|s| s.record == b"r"));
        assert!(store.put(&session(7, "", "r")).await.is_err());
        assert!(store.put(&session(7, "a/b", "r")).await.is_err());
        assert!(store.put(&session(7, &"x".repeat(256), "r")).await.is_err());
        assert_eq!(store.len(), 5);
    }
}
