//! Access reviews: who has what (`portcullis report access`), and who has
//! not used it (`portcullis report stale --days N`).
//!
//! Last access is tracked by [`Activity`]: the proxy touches it on every
//! allowed request of an authenticated user, which costs one map read
//! unless the user's time moved by a minute or more; a background task
//! writes what changed to the store every few minutes, one batch, at most
//! one key per user (bounded write amplification). Reports read the store
//! and add what is still only in memory.
//!
//! What this module does not do: read the audit trail (that is the
//! history; this is the current state), or decide access.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use portcullis_directory::{ActivityStore, Directory, Principal, PrincipalKey, PrincipalKeyHash};
use portcullis_policy::Policy;
use serde::Serialize;

use crate::authz::PrincipalIdentity;

/// A user's last access moves in memory only by at least this much.
const RESOLUTION_SECS: i64 = 60;
/// How often changed last-access times are written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Seen {
    user_id: Arc<str>,
    at: AtomicI64,
    dirty: AtomicBool,
}

/// Users' last access, in memory, written to the store in batches.
#[derive(Debug)]
pub struct Activity {
    store: ActivityStore,
    seen: DashMap<PrincipalKey, Seen, PrincipalKeyHash>,
}

impl Activity {
    pub fn new(store: ActivityStore) -> Activity {
        Activity {
            store,
            seen: DashMap::default(),
        }
    }

    /// Notes that `principal` was let through at `now` (Unix seconds).
    pub fn touch(&self, principal: &Principal, now: i64) {
        if let Some(seen) = self.seen.get(&principal.key) {
            if now - seen.at.load(Ordering::Relaxed) >= RESOLUTION_SECS {
                seen.at.store(now, Ordering::Relaxed);
                seen.dirty.store(true, Ordering::Release);
            }
            return;
        }
        self.seen.insert(
            principal.key,
            Seen {
                user_id: principal.id.clone(),
                at: AtomicI64::new(now),
                dirty: AtomicBool::new(true),
            },
        );
    }

    /// Writes every changed time to the store (one durable batch).
    /// Returns how many users were written.
    pub async fn flush(&self) -> Result<usize, portcullis_directory::StoreError> {
        let mut keys = Vec::new();
        let mut batch = Vec::new();
        for seen in self.seen.iter() {
            if seen.dirty.swap(false, Ordering::AcqRel) {
                keys.push(*seen.key());
                batch.push((seen.user_id.to_string(), seen.at.load(Ordering::Relaxed)));
            }
        }
        let n = batch.len();
        if let Err(e) = self.store.record(&batch).await {
            // Mark them again so the next flush retries.
            for key in keys {
                if let Some(seen) = self.seen.get(&key) {
                    seen.dirty.store(true, Ordering::Release);
                }
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Every user's last access: the store's, updated with memory.
    pub fn all(&self) -> HashMap<String, i64> {
        let mut all = self.store.all();
        for seen in self.seen.iter() {
            let at = seen.at.load(Ordering::Relaxed);
            let entry = all.entry(seen.user_id.to_string()).or_insert(at);
            *entry = (*entry).max(at);
        }
        all
    }

    /// Flushes every [`FLUSH_EVERY`] until `shutdown`, and once more then.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.flush().await {
                        tracing::warn!(error = %e, "cannot record users' last access; will retry");
                    }
                }
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot record users' last access at shutdown");
        }
    }
}

/// One line of the access report.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AccessRow {
    pub user: String,
    pub user_id: String,
    pub active: bool,
    /// Effective groups (nested included), as `client/displayName`.
    pub groups: Vec<String>,
    /// Roles under the current policy (none while inactive).
    pub roles: Vec<String>,
    /// Last access, RFC 3339, if ever.
    pub last_access: Option<String>,
}

/// Every user, their groups and roles, sorted by userName.
pub fn access(directory: &Directory, policy: &Policy, last: &HashMap<String, i64>) -> Vec<AccessRow> {
    let mut rows: Vec<AccessRow> = directory
        .all_users()
        .iter()
        .filter_map(|u| directory.principal(&u.id))
        .map(|p| {
            let mut groups: Vec<String> = p
                .groups
                .iter()
                .map(|g| format!("{}/{}", g.owner, g.display_name()))
                .collect();
            groups.sort();
            let roles = if p.active {
                let set = policy.roles_for(&PrincipalIdentity(&p));
                let mut names: Vec<String> = policy.role_names(&set).map(str::to_owned).collect();
                names.sort();
                names
            } else {
                Vec::new()
            };
            AccessRow {
                user: p.user_name.to_string(),
                user_id: p.id.to_string(),
                active: p.active,
                groups,
                roles,
                last_access: last.get(&*p.id).map(|t| rfc3339(*t)),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.user.cmp(&b.user));
    rows
}

/// Users with no access in the last `days` days (or never), as of `now`.
pub fn stale(rows: Vec<AccessRow>, last: &HashMap<String, i64>, days: u32, now: i64) -> Vec<AccessRow> {
    let cutoff = now - i64::from(days) * 86_400;
    rows.into_iter()
        .filter(|r| last.get(&r.user_id).is_none_or(|t| *t < cutoff))
        .collect()
}

/// The report as CSV (RFC 4180 quoting; groups and roles `;`-separated).
pub fn csv(rows: &[AccessRow]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::from("user,user_id,active,groups,roles,last_access\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            quote(&r.user),
            quote(&r.user_id),
            r.active,
            quote(&r.groups.join(";")),
            quote(&r.roles.join(";")),
            r.last_access.as_deref().unwrap_or("")
        ));
    }
    out
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests;
