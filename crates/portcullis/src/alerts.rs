//! High-risk alerts and SCIM feed health: telling an operator, as it
//! happens, about the changes that matter most.
//!
//! Three things raise an [`Alert`]:
//! - `sensitive_grant` ([`grants`], run by [`watch_directory`] on every
//!   committed directory change): a user who, after the change, is active
//!   and holds a sensitive group (by display name, effective membership,
//!   nested groups included) or a sensitive role (under the current policy)
//!   that they did not hold *while active* before. So a creation, an added
//!   membership (direct or through a nested group) and the reactivation of
//!   a user already in a sensitive group all alert; a deactivated user added
//!   to a group does not (until reactivated).
//! - `policy_widened` ([`widened`], run by [`on_policy_reload`]): after a
//!   policy reload, a sensitive role that an active user holds under the new
//!   policy and did not under the old (any new (user, role) pair, even if
//!   another user lost the role at the same time), or whose rules may have
//!   widened: an `allow` rule of the role that the old policy did not have
//!   as written (route, methods, paths), or a `deny` rule that the new policy
//!   no longer has. Rules are compared as written, not by what their
//!   patterns match, so editing an allow rule alerts even if it narrows.
//! - `scim_silent` ([`watch_feeds`]): a SCIM client that has not completed a
//!   request for longer than the configured silence. A silent identity
//!   provider means deprovisioning is not reaching Portcullis. One alert per
//!   silence period; recovery is logged.
//!
//! A fourth type, `changes_missed`, says that the watcher fell behind the
//! directory's change stream and that some changes were not checked.
//!
//! Every alert is logged at `warn` by [`Alerter::send`], which never blocks:
//! it also queues the alert, in a bounded queue that drops the oldest alert
//! when full (counted), for [`AlerterTask::run`] to POST as JSON to the
//! webhook, in order, retrying failures (connection errors, time-outs after
//! five seconds, any non-2xx answer) with exponential backoff from 250 ms to
//! 30 s, ten attempts per alert by default. The webhook may be `https` (webpki
//! roots plus an optional CA file) or plain `http` to a loopback host only,
//! unless [`WebhookOptions::allow_plain_http`] says otherwise: an alert names
//! users and groups, and should not cross a network in clear text. The
//! webhook URL is never logged (it often carries a token in its path); only
//! its host is.
//!
//! What this module does not do: deduplicate or rate-limit alerts beyond the
//! queue bound, follow redirects, sign payloads, persist undelivered alerts
//! across a restart, or decide anything about access: it only reports.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use parking_lot::Mutex;
use portcullis_directory::{Change, Directory, Group, Principal};
use portcullis_policy::{Effect, Policy};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use url::{Host, Url};

use crate::authz::PrincipalIdentity;
use crate::policy_runtime::PolicyRuntime;
use crate::tls::TlsError;

/// The default bound of the webhook queue.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Largest webhook answer read (and ignored) per request.
const MAX_ANSWER: usize = 64 * 1024;

/// How many user names a `policy_widened` alert lists before "and N more".
const MAX_LISTED_USERS: usize = 20;

/// Why the alerter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("webhook url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("webhook url has no host")]
    NoHost,
    #[error("webhook url must not carry a user name or password; put the token in the path or query")]
    Credentials,
    #[error("webhook {host} uses plain http to a host that is not loopback; use https")]
    PlainHttp { host: String },
    #[error("webhook url is not a valid request target: {0}")]
    Uri(String),
    #[error("webhook ca file: {0}")]
    Tls(#[from] TlsError),
    #[error("webhook tls configuration: {0}")]
    TlsConfig(String),
}

/// What is sensitive: group display names (`"platform-admins"`, or
/// `"client:platform-admins"` for one SCIM client's group; compared
/// exactly, like the policy does) and role names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertRules {
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

impl AlertRules {
    /// True when nothing is sensitive, so there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.roles.is_empty()
    }

    fn sensitive_group(&self, group: &Group) -> bool {
        self.groups.iter().any(|rule| {
            rule == group.display_name()
                || rule
                    .split_once(':')
                    .is_some_and(|(owner, name)| owner == &*group.owner && name == group.display_name())
        })
    }

    fn sensitive_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The kind of an alert (the JSON `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    SensitiveGrant,
    PolicyWidened,
    ScimSilent,
    ChangesMissed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SensitiveGrant => "sensitive_grant",
            AlertKind::PolicyWidened => "policy_widened",
            AlertKind::ScimSilent => "scim_silent",
            AlertKind::ChangesMissed => "changes_missed",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as logged and as POSTed to the webhook. Empty optional
/// fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// When it happened (the change's commit time for directory alerts), as
    /// RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub time: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Sensitive groups (display names) gained.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups_added: Vec<String>,
    /// Sensitive roles gained (`sensitive_grant`) or widened
    /// (`policy_widened`, one role per alert).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles_added: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_seq: Option<u64>,
    /// One line for a human.
    pub detail: String,
}

fn rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

impl Alert {
    fn new(kind: AlertKind, time: OffsetDateTime, detail: String) -> Alert {
        Alert {
            kind,
            time,
            user: None,
            user_id: None,
            groups_added: Vec::new(),
            roles_added: Vec::new(),
            scim_client: None,
            change_seq: None,
            detail,
        }
    }
}

// ---- sensitive grants ------------------------------------------------------

/// Sensitive groups and roles an (active) principal holds; nothing for an
/// absent or inactive one.
fn sensitive_access(
    principal: Option<&Principal>,
    policy: &Policy,
    rules: &AlertRules,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let Some(p) = principal.filter(|p| p.active) else {
        return (BTreeSet::new(), BTreeSet::new());
    };
    let groups = p
        .groups
        .iter()
        .filter(|g| rules.sensitive_group(g))
        .map(|g| g.display_name().to_owned())
        .collect();
    (groups, sensitive_roles(p, policy, rules))
}

fn sensitive_roles(p: &Principal, policy: &Policy, rules: &AlertRules) -> BTreeSet<String> {
    if rules.roles.is_empty() {
        return BTreeSet::new();
    }
    let set = policy.roles_for(&PrincipalIdentity(p));
    policy
        .role_names(&set)
        .filter(|r| rules.sensitive_role(r))
        .map(str::to_owned)
        .collect()
}

/// The `sensitive_grant` alerts of one committed change: one per user in
/// `change.principals` who is active after the change and holds a sensitive
/// group or role (under `policy`, for both sides of the change) that they
/// did not hold while active before it.
pub fn grants(change: &Change, policy: &Policy, rules: &AlertRules) -> Vec<Alert> {
    if rules.is_empty() {
        return Vec::new();
    }
    let mut alerts = Vec::new();
    for pc in &change.principals {
        let Some(after) = pc.after.as_deref().filter(|a| a.active) else {
            continue;
        };
        let before = pc.before.as_deref();
        let (groups_before, roles_before) = sensitive_access(before, policy, rules);
        let (groups_after, roles_after) = sensitive_access(Some(after), policy, rules);
        let groups_added: Vec<String> = groups_after.difference(&groups_before).cloned().collect();
        let roles_added: Vec<String> = roles_after.difference(&roles_before).cloned().collect();
        if groups_added.is_empty() && roles_added.is_empty() {
            continue;
        }
        let how = match before {
            None => "on creation",
            Some(b) if !b.active => "on reactivation",
            Some(_) => "by a membership change",
        };
        let mut what = Vec::new();
        if !groups_added.is_empty() {
            what.push(format!("groups {}", groups_added.join(", ")));
        }
        if !roles_added.is_empty() {
            what.push(format!("roles {}", roles_added.join(", ")));
        }
        let detail = format!(
            "{} gained sensitive access {how} ({}), change {} by SCIM client {}",
            after.user_name,
            what.join("; "),
            change.seq,
            change.actor
        );
        alerts.push(Alert {
            user: Some(after.user_name.to_string()),
            user_id: Some(after.id.to_string()),
            groups_added,
            roles_added,
            scim_client: Some(change.actor.to_string()),
            change_seq: Some(change.seq),
            ..Alert::new(AlertKind::SensitiveGrant, change.at, detail)
        });
    }
    alerts
}

// ---- policy reloads --------------------------------------------------------

/// A rule as written, without its location.
type RuleText = (bool, String, Option<Vec<String>>, Vec<String>);

fn rules_of(policy: &Policy, role: &str) -> BTreeSet<RuleText> {
    policy
        .rules()
        .filter(|r| r.role() == Some(role))
        .map(|r| {
            (
                r.effect() == Effect::Allow,
                r.route().to_owned(),
                r.methods().map(<[String]>::to_vec),
                r.paths().to_vec(),
            )
        })
        .collect()
}

fn describe_rule((allow, route, methods, paths): &RuleText) -> String {
    format!(
        "{} route {route} methods {} paths {}",
        if *allow { "allow" } else { "deny" },
        methods.as_ref().map_or_else(|| "any".to_owned(), |m| m.join(",")),
        paths.join(",")
    )
}

/// The `policy_widened` alerts of a reload from `old` to `new`: one per
/// sensitive role that some active user of `directory` holds under `new`
/// and did not under `old`, or that gained an allow rule or lost a deny rule
/// (as written). Linear in the number of users: call it off the async
/// runtime's worker threads for large directories.
pub fn widened(old: &Policy, new: &Policy, directory: &Directory, rules: &AlertRules) -> Vec<Alert> {
    let roles: BTreeSet<&str> = rules.roles.iter().map(String::as_str).collect();
    if roles.is_empty() {
        return Vec::new();
    }
    let mut gained: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for user in directory.all_users() {
        let Some(p) = directory.principal(&user.id).filter(|p| p.active) else {
            continue;
        };
        let before = sensitive_roles(&p, old, rules);
        for role in sensitive_roles(&p, new, rules).difference(&before) {
            if let Some(&r) = roles.get(role.as_str()) {
                gained.entry(r).or_default().push(p.user_name.to_string());
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    let mut alerts = Vec::new();
    for role in roles {
        let (rules_old, rules_new) = (rules_of(old, role), rules_of(new, role));
        let allows_added: Vec<String> = rules_new
            .difference(&rules_old)
            .filter(|r| r.0)
            .map(describe_rule)
            .collect();
        let denies_removed: Vec<String> = rules_old
            .difference(&rules_new)
            .filter(|r| !r.0)
            .map(describe_rule)
            .collect();
        let mut users = gained.remove(role).unwrap_or_default();
        if users.is_empty() && allows_added.is_empty() && denies_removed.is_empty() {
            continue;
        }
        users.sort();
        let mut parts = Vec::new();
        if !users.is_empty() {
            let more = users.len().saturating_sub(MAX_LISTED_USERS);
            let mut listed = users
                .iter()
                .take(MAX_LISTED_USERS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if more > 0 {
                listed.push_str(&format!(" and {more} more"));
            }
            parts.push(format!("{} more active users hold it: {listed}", users.len()));
        }
        if !allows_added.is_empty() {
            parts.push(format!("allow rules added or changed: {}", allows_added.join("; ")));
        }
        if !denies_removed.is_empty() {
            parts.push(format!("deny rules removed or changed: {}", denies_removed.join("; ")));
        }
        let detail = format!(
            "policy reload (generation {} to {}) widened sensitive role {role}: {}",
            old.generation(),
            new.generation(),
            parts.join("; ")
        );
        alerts.push(Alert {
            roles_added: vec![role.to_owned()],
            ..Alert::new(AlertKind::PolicyWidened, now, detail)
        });
    }
    alerts
}

/// Sends the [`widened`] alerts of a reload from `old` to `new`; returns how
/// many. Call it after every successful policy reload (the policy runtime
/// has no reload notification), from blocking context: it reads every user.
pub fn on_policy_reload(
    old: &Policy,
    new: &Policy,
    directory: &Directory,
    rules: &AlertRules,
    alerter: &Alerter,
) -> usize {
    let alerts = widened(old, new, directory, rules);
    let n = alerts.len();
    for alert in alerts {
        alerter.send(alert);
    }
    n
}

/// Sends `sensitive_grant` alerts for every committed directory change,
/// under the policy current when the change is seen, until `shutdown`. If it
/// falls behind the change stream, it sends one `changes_missed` alert
/// naming how many changes were not checked. Returns at once when `rules`
/// is empty.
pub async fn watch_directory(
    directory: Directory,
    policy: Arc<PolicyRuntime>,
    rules: AlertRules,
    alerter: Alerter,
    shutdown: impl Future<Output = ()>,
) {
    if rules.is_empty() {
        return;
    }
    let changes = directory.subscribe();
    watch_changes(changes, move || policy.current(), &rules, &alerter, shutdown).await;
}

async fn watch_changes(
    mut changes: broadcast::Receiver<Arc<Change>>,
    current: impl Fn() -> Arc<Policy>,
    rules: &AlertRules,
    alerter: &Alerter,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            change = changes.recv() => match change {
                Ok(change) => {
                    for alert in grants(&change, &current(), rules) {
                        alerter.send(alert);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let detail = format!(
                        "the alert watcher fell behind the directory: {missed} changes were not checked for \
                         sensitive grants; review the audit trail"
                    );
                    alerter.send(Alert::new(AlertKind::ChangesMissed, OffsetDateTime::now_utc(), detail));
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

// ---- the alerter -----------------------------------------------------------

/// How the webhook is reached. [`Default`] is what [`Alerter::new`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Bound of the queue; when full, the oldest alert is dropped. At least 1.
    pub capacity: usize,
    /// Extra trusted CA certificates (PEM), added to the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http` to a host that is not loopback (alerts then cross
    /// the network in clear text). `http` to `localhost` or a loopback
    /// address is always allowed.
    pub allow_plain_http: bool,
    /// Time limit of one attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per alert before giving up on it (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            capacity: DEFAULT_CAPACITY,
            ca_file: None,
            allow_plain_http: false,
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Delivery counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Alerts sent (logged), webhook or not.
    pub raised: u64,
    /// Alerts the webhook accepted (2xx).
    pub delivered: u64,
    /// Webhook attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Alerts dropped from a full queue (the oldest first).
    pub dropped: u64,
    /// Alerts given up on after the last attempt failed.
    pub abandoned: u64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Alert>>,
    capacity: usize,
    /// Whether anything drains the queue (a webhook is configured).
    webhook: bool,
    wake: Notify,
    raised: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
    abandoned: AtomicU64,
}

impl Shared {
    fn new(capacity: usize, webhook: bool) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            webhook,
            wake: Notify::new(),
            raised: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        })
    }
}

/// Raises alerts: logs them and queues them for the webhook. Cheap to
/// clone; all clones share one queue.
#[derive(Debug, Clone)]
pub struct Alerter {
    shared: Arc<Shared>,
}

/// Delivers queued alerts to the webhook; run it with [`AlerterTask::run`].
pub struct AlerterTask {
    shared: Arc<Shared>,
    target: Option<Target>,
}

impl std::fmt::Debug for AlerterTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: its path often is the webhook's secret.
        f.debug_struct("AlerterTask")
            .field("webhook_host", &self.target.as_ref().map(|t| &t.host))
            .finish_non_exhaustive()
    }
}

struct Target {
    client: crate::tls::OutboundClient,
    uri: http::Uri,
    host: String,
    options: WebhookOptions,
}

impl Alerter {
    /// An alerter posting to `webhook` (none: alerts are only logged) with
    /// the default [`WebhookOptions`] but for the CA file and queue bound.
    pub fn new(
        webhook: Option<Url>,
        ca_file: Option<&Path>,
        capacity: usize,
    ) -> Result<(Alerter, AlerterTask), AlertError> {
        let options = WebhookOptions {
            capacity,
            ca_file: ca_file.map(Path::to_owned),
            ..WebhookOptions::default()
        };
        Alerter::with_options(webhook, options)
    }

    /// An alerter with every webhook option explicit.
    pub fn with_options(webhook: Option<Url>, options: WebhookOptions) -> Result<(Alerter, AlerterTask), AlertError> {
        let target = webhook.map(|url| Target::new(&url, options.clone())).transpose()?;
        let shared = Shared::new(options.capacity, target.is_some());
        Ok((Alerter { shared: shared.clone() }, AlerterTask { shared, target }))
    }

    /// Logs `alert` at `warn` and queues it for the webhook. Never blocks
    /// and never waits: a full queue drops its oldest alert.
    pub fn send(&self, alert: Alert) {
        let s = &self.shared;
        s.raised.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            alert = alert.kind.as_str(),
            user = alert.user.as_deref(),
            user_id = alert.user_id.as_deref(),
            groups_added = ?alert.groups_added,
            roles_added = ?alert.roles_added,
            scim_client = alert.scim_client.as_deref(),
            change_seq = alert.change_seq,
            detail = %alert.detail,
            "security alert"
        );
        if !s.webhook {
            return;
        }
        let dropped = {
            let mut queue = s.queue.lock();
            let dropped = if queue.len() >= s.capacity {
                queue.pop_front()
            } else {
                None
            };
            queue.push_back(alert);
            dropped
        };
        if let Some(old) = dropped {
            let total = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at the 1st, 2nd, 4th, 8th… drop: a burst must not flood the log.
            if total.is_power_of_two() {
                tracing::error!(
                    alert = old.kind.as_str(),
                    capacity = s.capacity,
                    dropped_total = total,
                    "alert queue full; dropped the oldest undelivered alert"
                );
            }
        }
        s.wake.notify_one();
    }

    pub fn stats(&self) -> AlertStats {
        let s = &self.shared;
        AlertStats {
            raised: s.raised.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            abandoned: s.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Alerts waiting for the webhook (not counting one being delivered).
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().len()
    }
}

impl AlerterTask {
    /// Posts queued alerts to the webhook, one at a time and in order, until
    /// `shutdown` (which also interrupts a delivery or a backoff). Returns at
    /// once when no webhook is configured.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Some(target) = self.target else {
            return;
        };
        let shared = self.shared;
        tokio::pin!(shutdown);
        loop {
            let next = shared.queue.lock().pop_front();
            let Some(alert) = next else {
                tokio::select! {
                    () = shared.wake.notified() => continue,
                    () = &mut shutdown => break,
                }
            };
            let body = match serde_json::to_vec(&alert) {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an alert; skipped");
                    continue;
                }
            };
            tokio::select! {
                () = target.deliver(&shared, body, alert.kind) => {}
                () = &mut shutdown => {
                    tracing::warn!(alert = alert.kind.as_str(), "shutting down during an alert delivery; not delivered");
                    break;
                }
            }
        }
        let left = shared.queue.lock().len();
        if left > 0 {
            tracing::warn!(
                undelivered = left,
                "shutting down with alerts not delivered to the webhook"
            );
        }
    }
}

impl Target {
    fn new(url: &Url, options: WebhookOptions) -> Result<Target, AlertError> {
        let host = url.host().ok_or(AlertError::NoHost)?;
        let host_text = host.to_string();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(AlertError::Credentials);
        }
        match url.scheme() {
            "https" => {}
            "http" if options.allow_plain_http || is_loopback(&host) => {}
            "http" => return Err(AlertError::PlainHttp { host: host_text }),
            other => return Err(AlertError::Scheme(other.to_owned())),
        }
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| AlertError::Uri(e.to_string()))?;
        let client = crate::tls::outbound_client(options.ca_file.as_deref(), options.timeout)?;
        Ok(Target {
            client,
            uri,
            host: host_text,
            options,
        })
    }

    /// Delivers one alert, retrying with backoff; counts the outcome.
    async fn deliver(&self, shared: &Shared, body: Bytes, kind: AlertKind) {
        let attempts = self.options.max_attempts.max(1);
        let mut backoff = self.options.initial_backoff;
        for attempt in 1..=attempts {
            match self.post(body.clone()).await {
                Ok(()) => {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(webhook = %self.host, alert = kind.as_str(), attempt, %error, "alert webhook attempt failed");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
            }
        }
        shared.abandoned.fetch_add(1, Ordering::Relaxed);
        tracing::error!(webhook = %self.host, alert = kind.as_str(), attempts, "gave up delivering an alert to the webhook");
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "portcullis-alerts")
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {}", crate::error_chain(&e)))?;
            let status = response.status();
            // Read (and ignore) a bounded answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), MAX_ANSWER).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("webhook answered {status}"))
            }
        };
        tokio::time::timeout(self.options.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.options.timeout))?
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

// ---- SCIM feed health ------------------------------------------------------

/// When each SCIM client last completed a request. Cheap to clone; all
/// clones share one state.
#[derive(Debug, Clone)]
pub struct FeedHealth {
    inner: Arc<FeedInner>,
}

#[derive(Debug)]
struct FeedInner {
    started: SystemTime,
    silence: Option<Duration>,
    last: Mutex<BTreeMap<String, Option<SystemTime>>>,
}

/// One client's feed, as of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub client: String,
    pub last_success: Option<SystemTime>,
    /// Time since the last success, or since start if there was none; `None`
    /// if the clock is before that instant (it was set back).
    pub silent_for: Option<Duration>,
    /// Whether `silent_for` reached the configured silence (never when no
    /// silence is configured).
    pub silent: bool,
}

impl FeedHealth {
    /// Tracks `clients` from now on; `silence` is how long a client may go
    /// without a successful request (`None`: never silent).
    pub fn new(clients: &[String], silence: Option<Duration>) -> FeedHealth {
        FeedHealth::started_at(clients, silence, SystemTime::now())
    }

    /// Like [`FeedHealth::new`], counting silence from `started`.
    pub fn started_at(clients: &[String], silence: Option<Duration>, started: SystemTime) -> FeedHealth {
        FeedHealth {
            inner: Arc::new(FeedInner {
                started,
                silence,
                last: Mutex::new(clients.iter().map(|c| (c.clone(), None)).collect()),
            }),
        }
    }

    pub fn silence(&self) -> Option<Duration> {
        self.inner.silence
    }

    /// Records a successful SCIM request of `client` that completed at `at`.
    /// A client not named at start is tracked from its first success.
    pub fn record_success(&self, client: &str, at: SystemTime) {
        let mut last = self.inner.last.lock();
        match last.get_mut(client) {
            Some(slot) => *slot = Some(slot.map_or(at, |t| t.max(at))),
            None => {
                last.insert(client.to_owned(), Some(at));
            }
        }
    }

    /// Every client's feed, now.
    pub fn snapshot(&self) -> Vec<FeedStatus> {
        self.snapshot_at(SystemTime::now())
    }

    /// Every client's feed as of `now`, sorted by client.
    pub fn snapshot_at(&self, now: SystemTime) -> Vec<FeedStatus> {
        let last = self.inner.last.lock();
        last.iter()
            .map(|(client, last_success)| {
                let since = last_success.unwrap_or(self.inner.started);
                let silent_for = now.duration_since(since).ok();
                let silent = matches!((silent_for, self.inner.silence), (Some(f), Some(s)) if f >= s);
                FeedStatus {
                    client: client.clone(),
                    last_success: *last_success,
                    silent_for,
                    silent,
                }
            })
            .collect()
    }
}

/// Which clients are already reported silent, so that a silence period
/// raises one alert.
#[derive(Debug, Default)]
struct SilenceWatch {
    silent: BTreeSet<String>,
}

impl SilenceWatch {
    /// The alerts for clients that went silent since the last check; logs
    /// recoveries.
    fn check(&mut self, statuses: &[FeedStatus], now: SystemTime) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for s in statuses {
            if !s.silent {
                if self.silent.remove(&s.client) {
                    tracing::info!(scim_client = %s.client, "scim client recovered: requests are arriving again");
                }
                continue;
            }
            if !self.silent.insert(s.client.clone()) {
                continue;
            }
            let silent_for = s.silent_for.unwrap_or_default();
            let since = match s.last_success {
                Some(t) => format!("last success at {}", format_time(t)),
                None => "none since Portcullis started".to_owned(),
            };
            let detail = format!(
                "no successful SCIM request from {} for {} ({since}); deprovisioning may not be reaching Portcullis",
                s.client,
                humantime::format_duration(Duration::from_secs(silent_for.as_secs()))
            );
            alerts.push(Alert {
                scim_client: Some(s.client.clone()),
                ..Alert::new(AlertKind::ScimSilent, OffsetDateTime::from(now), detail)
            });
        }
        alerts
    }
}

fn format_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "an unprintable time".to_owned())
}

/// Checks the feeds every `check_every` (at least a millisecond) and sends
/// one `scim_silent` alert when a client goes silent, nothing more until it
/// recovers. Returns at once when no silence is configured.
pub async fn watch_feeds(
    feed: FeedHealth,
    alerter: Alerter,
    check_every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    watch_feeds_with_clock(feed, alerter, check_every, SystemTime::now, shutdown).await;
}

async fn watch_feeds_with_clock(
    feed: FeedHealth,
    alerter: Alerter,
    check_every: Duration,
    clock: impl Fn() -> SystemTime,
    shutdown: impl Future<Output = ()>,
) {
    if feed.silence().is_none() {
        return;
    }
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(check_every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = SilenceWatch::default();
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                let now = clock();
                for alert in watch.check(&feed.snapshot_at(now), now) {
                    alerter.send(alert);
                }
            }
        }
    }
}

#[cfg(test)]
impl Alerter {
    /// An alerter whose queue nothing drains, to see what was sent.
    fn capturing(capacity: usize) -> Alerter {
        Alerter {
            shared: Shared::new(capacity, true),
        }
    }

    fn queue_contents(&self) -> Vec<Alert> {
        self.shared.queue.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
