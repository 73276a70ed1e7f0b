//! Durable "last access" times per user, for `portcullis report stale`: a
//! third sled tree, `activity`, in the directory's database (this module
//! and `store`/`sessions` are the only code that touches the disk).
//!
//! Write amplification is the caller's to bound: the proxy keeps last
//! access in memory and hands this store one batch every few minutes, at
//! most one key per user per batch. Writes here are flushed before
//! [`ActivityStore::record`] returns, so a batch survives a crash once
//! acknowledged; a crash between batches loses only that interval's
//! updates, which makes users look a few minutes less recently active.
//!
//! Layout: key = the user id, value = last access as 8 bytes, big-endian
//! Unix seconds. What this module does not do: decide when to write, or
//! drop entries of deleted users (reports join against the directory).

use std::collections::HashMap;

use crate::StoreError;

/// The activity tree. Cheap to clone.
#[derive(Clone)]
pub struct ActivityStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl std::fmt::Debug for ActivityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityStore")
            .field("users", &self.tree.len())
            .finish()
    }
}

impl ActivityStore {
    pub(crate) fn open(db: &sled::Db) -> Result<ActivityStore, sled::Error> {
        Ok(ActivityStore {
            db: db.clone(),
            tree: db.open_tree("activity")?,
        })
    }

    /// Records last-access times (user id, Unix seconds), keeping the later
    /// of the stored and the given time, in one batch; flushed on return.
    pub async fn record(&self, entries: &[(String, i64)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (user, at) in entries {
            let stored = self.get(user)?;
            if stored.is_none_or(|s| s < *at) {
                batch.insert(user.as_bytes(), &at.to_be_bytes());
            }
        }
        self.tree.apply_batch(batch).map_err(StoreError::Write)?;
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| StoreError::Flush(e.to_string()))
    }

    /// The stored last access of one user.
    pub fn get(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        let value = self.tree.get(user_id.as_bytes()).map_err(StoreError::Write)?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map(i64::from_be_bytes))
    }

    /// Every stored last access, by user id. Unreadable entries are
    /// skipped with a warning (they can only make a user look inactive).
    pub fn all(&self) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        for item in self.tree.iter() {
            match item {
                Ok((k, v)) => match (std::str::from_utf8(&k), <[u8; 8]>::try_from(&*v)) {
                    (Ok(user), Ok(bytes)) => {
                        out.insert(user.to_owned(), i64::from_be_bytes(bytes));
                    }
                    _ => tracing::warn!("skipping a malformed activity record"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot read an activity record"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::{Directory, Options};

    #[tokio::test]
    async fn the_latest_access_is_kept_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = Directory::open(dir.path(), Options::default()).unwrap();
            let a = d.activity();
            a.record(&[("u1".into(), 100), ("u2".into(), 50)]).await.unwrap();
            a.record(&[("u1".into(), 90), ("u2".into(), 70)]).await.unwrap();
            assert_eq!(a.get("u1").unwrap(), Some(100), "an older time never overwrites");
            assert_eq!(a.get("u3").unwrap(), None);
        }
        let d = Directory::open(dir.path(), Options::default()).unwrap();
        let all = d.activity().all();
        assert_eq!(all.get("u1"), Some(&100));
        assert_eq!(all.get("u2"), Some(&70));
        assert_eq!(all.len(), 2);
    }
}
