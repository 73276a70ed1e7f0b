//! What Portcullis records in its audit trail, and when. The writing,
//! chaining, rotation and verification are `portcullis-audit`'s.
//!
//! Two kinds of record:
//! - `access`: one per proxied request (or sign-in) with its decision:
//!   time, request id, user, client IP, route, method, normalized path,
//!   decision, the deciding rule (`file:line:column`), the user's roles, the
//!   status, the upstream's latency and the whole request's. Allowed and
//!   public requests may be sampled per route (`audit_allowed`); denials,
//!   refusals and errors never are.
//! - `scim`: one per committed directory change, from the directory's
//!   change stream (so only durable changes are recorded): the SCIM client,
//!   the operation, the resource, what changed (attributes before and
//!   after; members added and removed), and for every user whose access
//!   changed, their roles before and after under the current policy.
//!
//! Records are submitted with [`AuditLog::log`], which waits (rather than
//! drops) when the writer's queue is full. If this recorder falls behind the
//! directory's change stream, the gap is recorded as a `audit_gap` record
//! naming how many changes were missed, never silently skipped.
//!
//! What this module does not do: alerting, reports (they read the files).

use std::sync::Arc;
use std::time::Duration;

use portcullis_audit::{AuditConfig, AuditError, AuditLog, AuditStats, Fields, fields, kinds};
use portcullis_directory::{Change, ChangeKind, Directory, Principal};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::authz::PrincipalIdentity;
use crate::config::Audit as AuditSettings;
use crate::policy_runtime::PolicyRuntime;

/// The audit trail as the proxy and the SCIM watcher use it.
#[derive(Debug)]
pub struct Audit {
    log: AuditLog,
}

/// One access decision, as the proxy knows it when the request ends.
#[derive(Debug)]
pub struct Access<'a> {
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub client_ip: std::net::IpAddr,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub decision: &'a str,
    /// Why a request was refused (the error code), if it was.
    pub reason: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub roles: Option<&'a [Box<str>]>,
    pub status: u16,
    pub upstream: Option<Duration>,
    pub total: Duration,
}

impl Audit {
    /// Opens the trail the configuration names; `None` when auditing is off.
    pub fn open(settings: &AuditSettings) -> Result<Option<Arc<Audit>>, AuditError> {
        if settings.path.is_none() && !settings.stdout {
            return Ok(None);
        }
        let mut config = match &settings.path {
            Some(path) => AuditConfig::file(path.clone()),
            None => AuditConfig::default(),
        };
        config.stdout = settings.stdout;
        config.max_file_bytes = settings.max_file_bytes;
        config.keep_files = settings.keep_files;
        Ok(Some(Arc::new(Audit {
            log: AuditLog::open(config)?,
        })))
    }

    pub fn stats(&self) -> AuditStats {
        self.log.stats()
    }

    /// Waits until everything submitted so far is on disk.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.log.sync()
    }

    /// Records one access decision. The record is serialized here, on the
    /// request's thread, into one buffer (see `portcullis_audit::Fields`).
    pub fn access(&self, a: &Access<'_>) {
        let mut r = Fields::with_capacity(384);
        r.str(fields::KIND, Some(kinds::ACCESS))
            .str("request_id", Some(a.request_id))
            .str(fields::USER, a.user)
            .add("client_ip", &a.client_ip)
            .str(fields::ROUTE, a.route)
            .str("method", Some(a.method))
            .str("path", Some(a.path))
            .str(fields::DECISION, Some(a.decision));
        if let Some(reason) = a.reason {
            r.str("reason", Some(reason));
        }
        r.str("rule", a.rule);
        if let Some(roles) = a.roles {
            r.strs("roles", roles.iter().map(|r| &**r));
        }
        r.add("status", &a.status);
        if let Some(up) = a.upstream {
            r.add("upstream_ms", &millis(up));
        }
        r.add("total_ms", &millis(a.total));
        self.submit(r);
    }

    fn submit(&self, record: impl Into<Fields>) {
        if let Err(e) = self.log.log(record) {
            tracing::error!(error = %e, "cannot write an audit record");
        }
    }

    /// Records every committed directory change until `shutdown`.
    pub async fn run_scim(
        self: Arc<Self>,
        directory: Directory,
        policy: Arc<PolicyRuntime>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut changes = directory.subscribe();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                change = changes.recv() => match change {
                    Ok(change) => self.submit(scim_record(&change, &policy)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::error!(missed, "the audit trail fell behind the directory; recording the gap");
                        let mut r = Map::new();
                        r.insert(fields::KIND.into(), "audit_gap".into());
                        r.insert("missed_changes".into(), missed.into());
                        self.submit(r);
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "cannot sync the audit trail at shutdown");
        }
    }
}

/// Milliseconds with microsecond resolution.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The audit record of one directory change.
pub fn scim_record(change: &Change, policy: &PolicyRuntime) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert(fields::KIND.into(), kinds::SCIM.into());
    r.insert("scim_client".into(), (&*change.actor).into());
    r.insert("change_seq".into(), change.seq.into());
    let (operation, resource, id, detail) = match &change.kind {
        ChangeKind::UserCreated { after } => (
            "create",
            "User",
            after.id.to_string(),
            json!({"after": redacted(after.doc())}),
        ),
        ChangeKind::UserUpdated { before, after } => (
            "update",
            "User",
            after.id.to_string(),
            json!({"changed": diff(&before.doc(), &after.doc())}),
        ),
        ChangeKind::UserDeleted { before } => (
            "delete",
            "User",
            before.id.to_string(),
            json!({"before": redacted(before.doc())}),
        ),
        ChangeKind::GroupCreated { after, added } => (
            "create",
            "Group",
            after.id.to_string(),
            json!({"display_name": after.display_name(), "members_added": members(added)}),
        ),
        ChangeKind::GroupUpdated {
            before,
            after,
            added,
            removed,
        } => {
            let mut d = json!({"display_name": after.display_name()});
            let (mut b, mut a) = (before.doc(), after.doc());
            b.remove("members");
            a.remove("members");
            let changed = diff(&b, &a);
            if !changed.is_empty() {
                d["changed"] = Value::Object(changed);
            }
            if !added.is_empty() {
                d["members_added"] = members(added);
            }
            if !removed.is_empty() {
                d["members_removed"] = members(removed);
            }
            ("update", "Group", after.id.to_string(), d)
        }
        ChangeKind::GroupDeleted { before, removed } => (
            "delete",
            "Group",
            before.id.to_string(),
            json!({"display_name": before.display_name(), "members_removed": members(removed)}),
        ),
    };
    r.insert("operation".into(), operation.into());
    r.insert("resource_type".into(), resource.into());
    r.insert("resource_id".into(), id.into());
    r.insert("detail".into(), detail);
    let current = policy.current();
    let access: Vec<Value> = change
        .principals
        .iter()
        .filter_map(|p| {
            let user = p.after.as_ref().or(p.before.as_ref())?;
            let roles = |p: Option<&Arc<Principal>>| -> Vec<String> {
                match p {
                    Some(p) if p.active => {
                        let set = current.roles_for(&PrincipalIdentity(p));
                        let mut names: Vec<String> = current.role_names(&set).map(str::to_owned).collect();
                        names.sort();
                        names
                    }
                    _ => Vec::new(),
                }
            };
            let before = roles(p.before.as_ref());
            let after = roles(p.after.as_ref());
            let added: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
            let removed: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
            Some(json!({
                "user": &*user.user_name,
                "user_id": &*user.id,
                "active_before": p.before.as_ref().map(|b| b.active),
                "active_after": p.after.as_ref().map(|a| a.active),
                "roles_before": before,
                "roles_after": after,
                "roles_added": added,
                "roles_removed": removed,
            }))
        })
        .collect();
    r.insert("access_changes".into(), Value::Array(access));
    r
}

/// A user document without anything secret (passwords are never stored,
/// but an IdP might still send one in a create that failed elsewhere).
fn redacted(mut doc: Map<String, Value>) -> Map<String, Value> {
    doc.remove("password");
    doc
}

/// Top-level attributes that differ: `{attr: {"before": .., "after": ..}}`.
fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in before.keys().chain(after.keys()) {
        if key == "password" || key == "meta" || out.contains_key(key) {
            continue;
        }
        let (b, a) = (before.get(key), after.get(key));
        if b != a {
            out.insert(
                key.clone(),
                json!({"before": b.cloned().unwrap_or(Value::Null), "after": a.cloned().unwrap_or(Value::Null)}),
            );
        }
    }
    out
}

fn members(list: &[portcullis_directory::Member]) -> Value {
    list.iter()
        .map(|m| json!({"type": format!("{:?}", m.kind), "id": &*m.id}))
        .collect()
}
