//! Alerts against a real directory and compiled policies, the webhook
//! against real local HTTP and HTTPS servers, feed health with a clock the
//! tests move.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis_directory::{DirectoryError, GroupUpdate, Id, MembersEdit, Options};
use portcullis_policy::{RouteSet, Source, compile};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::*;

// ---- a directory and policies ----------------------------------------------

const POLICY: &str = r#"
[roles.admin]
allow = [{ route = "es", paths = ["/**"] }]

[roles.reader]
allow = [{ route = "es", methods = ["GET"], paths = ["/**"] }]

[groups]
"ops" = ["admin"]
"readers" = ["reader"]
"platform-admins" = ["reader"]

[users]
"root@example.com" = ["admin"]
"#;

fn policy(text: &str) -> Policy {
    compile(&[Source::new("policies/test.toml", text)], &RouteSet::new(["es"]))
        .unwrap_or_else(|e| panic!("{e:?}"))
        .policy
}

fn rules() -> AlertRules {
    AlertRules {
        groups: vec!["platform-admins".into()],
        roles: vec!["admin".into()],
    }
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("object")
}

struct World {
    _tmp: tempfile::TempDir,
    directory: Directory,
    okta: Id,
    users: BTreeMap<&'static str, String>,
    groups: BTreeMap<&'static str, String>,
}

impl World {
    async fn new(options: Options) -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let directory = Directory::open(tmp.path(), options).expect("directory");
        let mut w = World {
            _tmp: tmp,
            directory,
            okta: Arc::from("okta"),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        for name in ["alice", "bob", "carol", "dave", "erin", "frank", "gina"] {
            w.create_user(name).await;
        }
        w.create_group("platform-admins", &["frank"]).await;
        w.create_group("sre", &["bob"]).await;
        w.create_group("harmless", &[]).await;
        w.create_group("ops", &[]).await;
        w.create_group("readers", &["carol", "dave", "gina"]).await;
        w.set_active("dave", false).await;
        w
    }

    async fn create_user(&mut self, name: &'static str) {
        let user = self
            .directory
            .create_user(&self.okta, obj(json!({"userName": format!("{name}@example.com")})))
            .await
            .expect("create user");
        self.users.insert(name, user.id.to_string());
    }

    async fn create_group(&mut self, name: &'static str, members: &[&str]) {
        let members = members.iter().map(|m| self.users[m].clone()).collect();
        let write = self
            .directory
            .create_group(&self.okta, obj(json!({"displayName": name})), members)
            .await
            .expect("create group");
        self.groups.insert(name, write.group.id.to_string());
    }

    /// A user's or a group's id.
    fn id(&self, name: &str) -> String {
        self.users
            .get(name)
            .or_else(|| self.groups.get(name))
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    }

    async fn edit_members(&self, group: &str, edit: MembersEdit) {
        self.directory
            .update_group("okta", &self.groups[group], None, |_, _| {
                Ok::<_, DirectoryError>(GroupUpdate {
                    doc: None,
                    members: vec![edit],
                })
            })
            .await
            .expect("update group");
    }

    async fn set_active(&self, user: &str, active: bool) {
        self.directory
            .update_user("okta", &self.users[user], None, |u| {
                let mut doc = u.doc();
                doc.insert("active".into(), json!(active));
                Ok::<_, DirectoryError>(doc)
            })
            .await
            .expect("update user");
    }

    async fn apply(&mut self, step: &Step) {
        match step {
            Step::Add(group, members) => {
                let ids = members.iter().map(|m| self.id(m)).collect();
                self.edit_members(group, MembersEdit::Add(ids)).await;
            }
            Step::Remove(group, members) => {
                let ids = members.iter().map(|m| self.id(m)).collect();
                self.edit_members(group, MembersEdit::Remove(ids)).await;
            }
            Step::Active(user, active) => self.set_active(user, *active).await,
            Step::Create(user) => self.create_user(user).await,
        }
    }
}

#[derive(Debug)]
enum Step {
    Add(&'static str, &'static [&'static str]),
    Remove(&'static str, &'static [&'static str]),
    Active(&'static str, bool),
    Create(&'static str),
}

/// What an alert says about whom: (user, groups added, roles added).
type Grant = (&'static str, &'static [&'static str], &'static [&'static str]);

async fn next_change(changes: &mut broadcast::Receiver<Arc<Change>>) -> Arc<Change> {
    tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("a change")
}

#[tokio::test]
async fn grants_alert_on_new_sensitive_access_only() {
    let mut w = World::new(Options::default()).await;
    let policy = policy(POLICY);
    let mut changes = w.directory.subscribe();
    let cases: &[(&str, Step, &[Grant])] = &[
        (
            "added directly to a sensitive group",
            Step::Add("platform-admins", &["alice"]),
            &[("alice", &["platform-admins"], &[])],
        ),
        (
            "a nested group added to a sensitive group",
            Step::Add("platform-admins", &["sre"]),
            &[("bob", &["platform-admins"], &[])],
        ),
        (
            "added to a member of a sensitive group",
            Step::Add("sre", &["gina"]),
            &[("gina", &["platform-admins"], &[])],
        ),
        ("added to a harmless group", Step::Add("harmless", &["carol"]), &[]),
        (
            "already sensitive, added to a harmless group",
            Step::Add("harmless", &["frank"]),
            &[],
        ),
        (
            "a deactivated user added to a sensitive group",
            Step::Add("platform-admins", &["dave"]),
            &[],
        ),
        (
            "reactivation of a user already in a sensitive group",
            Step::Active("dave", true),
            &[("dave", &["platform-admins"], &[])],
        ),
        (
            "a sensitive role only through a policy rule",
            Step::Add("ops", &["erin"]),
            &[("erin", &[], &["admin"])],
        ),
        (
            "a sensitive role by userName, on creation",
            Step::Create("root"),
            &[("root", &[], &["admin"])],
        ),
        (
            "removed from a sensitive group",
            Step::Remove("platform-admins", &["alice"]),
            &[],
        ),
        ("deactivated", Step::Active("frank", false), &[]),
        (
            "a nested group added to a group that grants a sensitive role",
            Step::Add("ops", &["sre"]),
            &[("bob", &[], &["admin"]), ("gina", &[], &["admin"])],
        ),
    ];
    for (name, step, want) in cases {
        w.apply(step).await;
        let change = next_change(&mut changes).await;
        let alerts = grants(&change, &policy, &rules());
        let mut got: Vec<(String, Vec<String>, Vec<String>)> = alerts
            .iter()
            .map(|a| {
                (
                    a.user.clone().unwrap_or_default(),
                    a.groups_added.clone(),
                    a.roles_added.clone(),
                )
            })
            .collect();
        got.sort();
        let want: Vec<(String, Vec<String>, Vec<String>)> = want
            .iter()
            .map(|(u, g, r)| {
                (
                    format!("{u}@example.com"),
                    g.iter().map(|s| s.to_string()).collect(),
                    r.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
        for a in &alerts {
            assert_eq!(a.kind, AlertKind::SensitiveGrant, "{name}");
            assert_eq!(a.scim_client.as_deref(), Some("okta"), "{name}");
            assert_eq!(a.change_seq, Some(change.seq), "{name}");
            assert_eq!(a.time, change.at, "{name}");
            let user = a.user.as_deref().unwrap_or_default().trim_end_matches("@example.com");
            assert_eq!(a.user_id.as_deref(), Some(w.id(user).as_str()), "{name}");
            assert!(
                a.detail.contains(a.user.as_deref().unwrap_or("?")),
                "{name}: {}",
                a.detail
            );
        }
    }
    // Nothing sensitive: nothing to say.
    w.apply(&Step::Add("platform-admins", &["carol"])).await;
    let change = next_change(&mut changes).await;
    assert!(grants(&change, &policy, &AlertRules::default()).is_empty());
    assert_eq!(grants(&change, &policy, &rules()).len(), 1);
}

#[tokio::test]
async fn a_client_qualified_group_rule_matches_only_that_clients_group() {
    let w = World::new(Options::default()).await;
    let policy = policy(POLICY);
    let mut changes = w.directory.subscribe();
    w.edit_members("platform-admins", MembersEdit::Add(vec![w.id("alice")]))
        .await;
    let change = next_change(&mut changes).await;
    let qualified = |group: &str| AlertRules {
        groups: vec![group.into()],
        roles: vec![],
    };
    assert_eq!(grants(&change, &policy, &qualified("okta:platform-admins")).len(), 1);
    assert!(grants(&change, &policy, &qualified("azure:platform-admins")).is_empty());
    assert!(grants(&change, &policy, &qualified("Platform-Admins")).is_empty());
}

#[test]
fn alerts_serialize_as_documented() {
    let time = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    let grant = Alert {
        user: Some("alice@example.com".into()),
        user_id: Some("u1".into()),
        groups_added: vec!["platform-admins".into()],
        scim_client: Some("okta".into()),
        change_seq: Some(7),
        ..Alert::new(AlertKind::SensitiveGrant, time, "d".into())
    };
    assert_eq!(
        serde_json::to_value(&grant).expect("json"),
        json!({
            "type": "sensitive_grant",
            "time": "2023-11-14T22:13:20Z",
            "user": "alice@example.com",
            "user_id": "u1",
            "groups_added": ["platform-admins"],
            "scim_client": "okta",
            "change_seq": 7,
            "detail": "d",
        })
    );
    let silent = Alert::new(AlertKind::ScimSilent, time, "quiet".into());
    assert_eq!(
        serde_json::to_value(&silent).expect("json"),
        json!({"type": "scim_silent", "time": "2023-11-14T22:13:20Z", "detail": "quiet"})
    );
    for (kind, text) in [
        (AlertKind::PolicyWidened, "policy_widened"),
        (AlertKind::ChangesMissed, "changes_missed"),
    ] {
        assert_eq!(serde_json::to_value(kind).expect("json"), json!(text));
        assert_eq!(kind.to_string(), text);
    }
}

// ---- policy reloads ----------------------------------------------------------

#[tokio::test]
async fn widened_reports_new_holders_and_wider_rules_of_sensitive_roles() {
    let w = World::new(Options::default()).await;
    let old = policy(POLICY);
    let rules = rules();
    let summary = |alerts: Vec<Alert>| -> Vec<(Vec<String>, String)> {
        alerts.into_iter().map(|a| (a.roles_added, a.detail)).collect()
    };
    // The same policy widens nothing.
    assert!(widened(&old, &policy(POLICY), &w.directory, &rules).is_empty());

    // readers now grant admin: carol and gina gain it; dave is deactivated.
    let more_holders = POLICY.replace(r#""readers" = ["reader"]"#, r#""readers" = ["reader", "admin"]"#);
    let alerts = widened(&old, &policy(&more_holders), &w.directory, &rules);
    assert_eq!(alerts.len(), 1, "{:#?}", alerts);
    let a = &alerts[0];
    assert_eq!(a.kind, AlertKind::PolicyWidened);
    assert_eq!(a.roles_added, vec!["admin".to_owned()]);
    assert!(a.detail.contains("2 more active users"), "{}", a.detail);
    assert!(a.detail.contains("carol@example.com, gina@example.com"), "{}", a.detail);
    assert!(!a.detail.contains("dave"), "{}", a.detail);
    assert!(a.user.is_none() && a.scim_client.is_none());

    // The reverse reload narrows: nothing to report.
    assert!(widened(&policy(&more_holders), &old, &w.directory, &rules).is_empty());

    // A harmless role widened: not sensitive.
    let reader_wider = POLICY.replace(
        r#""ops" = ["admin"]"#,
        r#""ops" = ["admin"]
"harmless" = ["reader"]"#,
    );
    assert!(widened(&old, &policy(&reader_wider), &w.directory, &rules).is_empty());

    // A new allow rule on the sensitive role, with no new holder.
    let wider_rules = POLICY.replace(
        r#"allow = [{ route = "es", paths = ["/**"] }]"#,
        r#"allow = [{ route = "es", paths = ["/**"] }, { route = "es", methods = ["DELETE"], paths = ["/x"] }]"#,
    );
    let got = summary(widened(&old, &policy(&wider_rules), &w.directory, &rules));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .1
            .contains("allow rules added or changed: allow route es methods DELETE paths /x"),
        "{got:#?}"
    );
    assert!(!got[0].1.contains("more active users"), "{got:#?}");
    // ... and its removal narrows.
    assert!(widened(&policy(&wider_rules), &old, &w.directory, &rules).is_empty());

    // A deny rule removed from the sensitive role widens it.
    let with_deny = POLICY.replace(
        r#"allow = [{ route = "es", paths = ["/**"] }]"#,
        r#"allow = [{ route = "es", paths = ["/**"] }]
deny = [{ route = "es", paths = ["/_security/**"] }]"#,
    );
    let got = summary(widened(&policy(&with_deny), &old, &w.directory, &rules));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].1.contains("deny rules removed or changed"), "{got:#?}");
    assert!(widened(&old, &policy(&with_deny), &w.directory, &rules).is_empty());

    // No sensitive roles: nothing to compare.
    assert!(widened(&old, &policy(&more_holders), &w.directory, &AlertRules::default()).is_empty());
}

#[tokio::test]
async fn on_policy_reload_sends_what_widened_finds() {
    let w = World::new(Options::default()).await;
    let old = policy(POLICY);
    let new = policy(&POLICY.replace(r#""readers" = ["reader"]"#, r#""readers" = ["admin"]"#));
    let alerter = Alerter::capturing(16);
    assert_eq!(on_policy_reload(&old, &old, &w.directory, &rules(), &alerter), 0);
    assert_eq!(on_policy_reload(&old, &new, &w.directory, &rules(), &alerter), 1);
    let sent = alerter.queue_contents();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, AlertKind::PolicyWidened);
    assert_eq!(alerter.stats().raised, 1);
}

// ---- watching the directory ----------------------------------------------------

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn watch_directory_alerts_on_grants_under_the_live_policy() {
    let w = World::new(Options::default()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(policies.join("es.toml"), POLICY).expect("write policy");
    let text = format!(
        "[policy]\ndir = {:?}\n[[routes]]\nname = \"es\"\nupstream = \"http://127.0.0.1:1\"\n",
        policies.display().to_string()
    );
    let config = crate::config::Config::parse(&text, Path::new("t.toml"), tmp.path()).expect("config");
    let (runtime, _) = PolicyRuntime::load(&config).expect("policy");
    let alerter = Alerter::capturing(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(watch_directory(
        w.directory.clone(),
        Arc::new(runtime),
        rules(),
        alerter.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    // Give the watcher time to subscribe before changing anything.
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.edit_members("harmless", MembersEdit::Add(vec![w.id("alice")])).await;
    w.edit_members("ops", MembersEdit::Add(vec![w.id("alice")])).await;
    eventually("one alert", || alerter.stats().raised >= 1).await;
    // A harmless change later still raises nothing more.
    w.edit_members("harmless", MembersEdit::Add(vec![w.id("carol")])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = alerter.queue_contents();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].user.as_deref(), Some("alice@example.com"));
    assert_eq!(sent[0].roles_added, vec!["admin".to_owned()]);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops on shutdown")
        .expect("no panic");
}

#[tokio::test]
async fn a_watcher_that_falls_behind_says_how_many_changes_it_missed() {
    // The directory keeps at least 16 changes for a slow subscriber.
    let w = World::new(Options {
        event_capacity: 16,
        ..Options::default()
    })
    .await;
    let changes = w.directory.subscribe();
    for _ in 0..10 {
        w.edit_members("harmless", MembersEdit::Add(vec![w.id("carol")])).await;
        w.edit_members("harmless", MembersEdit::Remove(vec![w.id("carol")]))
            .await;
    }
    // 21 changes: the first 5 are lost, the last one is a grant.
    w.edit_members("platform-admins", MembersEdit::Add(vec![w.id("alice")]))
        .await;
    let alerter = Alerter::capturing(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let current = Arc::new(policy(POLICY));
    let watcher = {
        let alerter = alerter.clone();
        tokio::spawn(async move {
            watch_changes(changes, move || current.clone(), &rules(), &alerter, async {
                let _ = stopped.await;
            })
            .await;
        })
    };
    eventually("two alerts", || alerter.stats().raised >= 2).await;
    let sent = alerter.queue_contents();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0].kind, AlertKind::ChangesMissed);
    assert!(
        sent[0].detail.contains("5 changes were not checked"),
        "{}",
        sent[0].detail
    );
    assert_eq!(sent[1].kind, AlertKind::SensitiveGrant);
    assert_eq!(sent[1].user.as_deref(), Some("alice@example.com"));
    let _ = stop.send(());
    watcher.await.expect("no panic");
}

// ---- the alerter and its webhook -------------------------------------------

fn alert(n: usize) -> Alert {
    Alert::new(
        AlertKind::ScimSilent,
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
        format!("alert {n}"),
    )
}

#[test]
fn a_full_queue_drops_the_oldest() {
    let alerter = Alerter::capturing(3);
    for n in 1..=5 {
        alerter.send(alert(n));
    }
    let details: Vec<String> = alerter.queue_contents().into_iter().map(|a| a.detail).collect();
    assert_eq!(details, ["alert 3", "alert 4", "alert 5"]);
    assert_eq!(
        alerter.stats(),
        AlertStats {
            raised: 5,
            dropped: 2,
            ..AlertStats::default()
        }
    );
    assert_eq!(alerter.queued(), 3);
}

#[tokio::test]
async fn without_a_webhook_alerts_are_only_logged() {
    let (alerter, task) = Alerter::new(None, None, 4).expect("alerter");
    for n in 0..10 {
        alerter.send(alert(n));
    }
    assert_eq!(alerter.queued(), 0);
    assert_eq!(
        alerter.stats(),
        AlertStats {
            raised: 10,
            ..AlertStats::default()
        }
    );
    // Nothing to deliver: the task ends without waiting for shutdown.
    tokio::time::timeout(Duration::from_secs(5), task.run(std::future::pending()))
        .await
        .expect("returns at once");
}

#[test]
fn webhook_urls_are_checked() {
    let url = |s: &str| Some(Url::parse(s).expect("url"));
    let new = |s: &str| Alerter::new(url(s), None, 4).map(|_| ());
    new("https://hooks.example.com/x").expect("https");
    new("http://127.0.0.1:9/x").expect("loopback v4");
    new("http://[::1]:9/x").expect("loopback v6");
    new("http://localhost:9/x").expect("localhost");
    let e = new("http://hooks.example.com/secret-token").expect_err("plain http");
    assert!(matches!(e, AlertError::PlainHttp { .. }), "{e}");
    assert!(!e.to_string().contains("secret-token"), "{e}");
    assert_eq!(
        e.to_string(),
        "webhook hooks.example.com uses plain http to a host that is not loopback; use https"
    );
    let allowed = WebhookOptions {
        allow_plain_http: true,
        ..WebhookOptions::default()
    };
    Alerter::with_options(url("http://hooks.example.com/x"), allowed).expect("explicitly allowed");
    assert!(matches!(new("ftp://hooks.example.com/x"), Err(AlertError::Scheme(s)) if s == "ftp"));
    assert!(matches!(
        new("https://user:pw@hooks.example.com/x"),
        Err(AlertError::Credentials)
    ));
    let missing = Alerter::new(
        url("https://hooks.example.com/x"),
        Some(Path::new("/nonexistent/ca.pem")),
        4,
    );
    assert!(matches!(missing, Err(AlertError::Tls(_))));
}

/// One request as the test webhook saw it.
#[derive(Debug, Clone)]
struct Received {
    method: http::Method,
    content_type: Option<String>,
    body: Value,
    answered: StatusCode,
    at: Instant,
}

/// A webhook that answers with `script` in order, then 200.
#[derive(Debug, Clone)]
struct Hook {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Hook {
    fn new(script: &[u16]) -> Hook {
        Hook {
            received: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    fn serve<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hook = self.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let hook = hook.clone();
                async move {
                    let method = req.method().clone();
                    let content_type = req
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = req.into_body().collect().await?.to_bytes();
                    let answered = StatusCode::from_u16(hook.script.lock().pop_front().unwrap_or(200)).expect("status");
                    hook.received.lock().push(Received {
                        method,
                        content_type,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        answered,
                        at: Instant::now(),
                    });
                    let response = Response::builder()
                        .status(answered)
                        .body(Full::new(Bytes::from_static(b"ok")))
                        .expect("response");
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }

    async fn listen_http(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hook = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                hook.serve(stream);
            }
        });
        addr
    }
}

fn fast(capacity: usize) -> WebhookOptions {
    WebhookOptions {
        capacity,
        timeout: Duration::from_secs(5),
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..WebhookOptions::default()
    }
}

fn start(
    url: &str,
    options: WebhookOptions,
) -> (Alerter, tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let (alerter, task) = Alerter::with_options(Some(Url::parse(url).expect("url")), options).expect("alerter");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(task.run(async {
        let _ = stopped.await;
    }));
    (alerter, handle, stop)
}

#[tokio::test]
async fn the_webhook_gets_each_alert_once_in_order_after_retries() {
    let hook = Hook::new(&[500, 500]);
    let addr = hook.listen_http().await;
    let (alerter, task, stop) = start(&format!("http://{addr}/hooks/secret"), fast(16));
    for n in 1..=3 {
        alerter.send(alert(n));
    }
    eventually("three deliveries", || alerter.stats().delivered == 3).await;
    let got = hook.received();
    let seen: Vec<(String, u16)> = got
        .iter()
        .map(|r| (r.body["detail"].as_str().unwrap_or("?").to_owned(), r.answered.as_u16()))
        .collect();
    assert_eq!(
        seen,
        [
            ("alert 1".to_owned(), 500),
            ("alert 1".to_owned(), 500),
            ("alert 1".to_owned(), 200),
            ("alert 2".to_owned(), 200),
            ("alert 3".to_owned(), 200),
        ]
    );
    // Backoff between attempts: 10 ms, then 20 ms.
    let gaps = [got[1].at - got[0].at, got[2].at - got[1].at];
    assert!(
        gaps[0] >= Duration::from_millis(10) && gaps[1] >= Duration::from_millis(20),
        "{gaps:?}"
    );
    for r in &got {
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.body["type"], "scim_silent");
        assert_eq!(r.body["time"], "2023-11-14T22:13:20Z");
    }
    assert_eq!(
        alerter.stats(),
        AlertStats {
            raised: 3,
            delivered: 3,
            failed_attempts: 2,
            ..AlertStats::default()
        }
    );
    let _ = stop.send(());
    task.await.expect("no panic");
}

#[tokio::test]
async fn an_alert_is_abandoned_after_the_last_attempt_and_the_next_one_goes_through() {
    let hook = Hook::new(&[503, 503, 503]);
    let addr = hook.listen_http().await;
    let options = WebhookOptions {
        max_attempts: 3,
        ..fast(16)
    };
    let (alerter, task, stop) = start(&format!("http://{addr}/"), options);
    alerter.send(alert(1));
    alerter.send(alert(2));
    eventually("one delivery", || alerter.stats().delivered == 1).await;
    let stats = alerter.stats();
    assert_eq!((stats.failed_attempts, stats.abandoned, stats.delivered), (3, 1, 1));
    let last = hook.received().pop().expect("a request");
    assert_eq!(last.body["detail"], "alert 2");
    let _ = stop.send(());
    task.await.expect("no panic");
}

#[tokio::test]
async fn connection_failures_are_retried_too() {
    // A port nothing listens on: bind, note it, close.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let options = WebhookOptions {
        max_attempts: 2,
        ..fast(16)
    };
    let (alerter, task, stop) = start(&format!("http://{addr}/"), options);
    alerter.send(alert(1));
    eventually("abandoned", || alerter.stats().abandoned == 1).await;
    assert_eq!(alerter.stats().failed_attempts, 2);
    assert_eq!(alerter.stats().delivered, 0);
    let _ = stop.send(());
    task.await.expect("no panic");
}

#[tokio::test]
async fn send_returns_at_once_while_the_webhook_hangs() {
    // Accepts connections, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let accepting = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                held.lock().push(stream);
            }
        })
    };
    let (alerter, task, stop) = start(&format!("http://{addr}/"), fast(8));
    alerter.send(alert(0));
    eventually("a connection", || !held.lock().is_empty()).await;
    let began = Instant::now();
    for n in 1..=1000 {
        alerter.send(alert(n));
    }
    let took = began.elapsed();
    assert!(took < Duration::from_secs(1), "1000 sends took {took:?}");
    let stats = alerter.stats();
    assert_eq!((stats.raised, stats.delivered, stats.dropped), (1001, 0, 992));
    assert_eq!(alerter.queued(), 8);
    // Shutdown interrupts the hanging delivery.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the task stops on shutdown")
        .expect("no panic");
    accepting.abort();
}

#[tokio::test]
async fn an_https_webhook_is_reached_with_the_configured_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let (ca_path, cert_path, key_path) = (
        tmp.path().join("ca.pem"),
        tmp.path().join("leaf.pem"),
        tmp.path().join("leaf.key"),
    );
    std::fs::write(&ca_path, ca.as_ref().pem()).expect("write");
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write");
    let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            crate::tls::load_certs(&cert_path).expect("certs"),
            crate::tls::load_key(&key_path).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hook = Hook::new(&[]);
    {
        let hook = hook.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(tls) = acceptor.accept(stream).await {
                    hook.serve(tls);
                }
            }
        });
    }
    let url = format!("https://127.0.0.1:{}/hook", addr.port());

    // Without the CA the webhook's certificate is not trusted.
    let untrusted = WebhookOptions {
        max_attempts: 1,
        ..fast(4)
    };
    let (alerter, task, stop) = start(&url, untrusted);
    alerter.send(alert(1));
    eventually("abandoned", || alerter.stats().abandoned == 1).await;
    assert!(hook.received().is_empty());
    let _ = stop.send(());
    task.await.expect("no panic");

    let trusted = WebhookOptions {
        ca_file: Some(ca_path),
        ..fast(4)
    };
    let (alerter, task, stop) = start(&url, trusted);
    alerter.send(alert(2));
    eventually("delivered", || alerter.stats().delivered == 1).await;
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["detail"], "alert 2");
    let _ = stop.send(());
    task.await.expect("no panic");
}

// ---- SCIM feed health ----------------------------------------------------------

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn clients(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn feeds_go_silent_after_the_silence_and_recover_on_success() {
    let feed = FeedHealth::started_at(&clients(&["azure", "okta"]), Some(Duration::from_secs(3600)), at(0));
    let status = |now: u64| -> Vec<(String, Option<u64>, bool)> {
        feed.snapshot_at(at(now))
            .into_iter()
            .map(|s| (s.client, s.silent_for.map(|d| d.as_secs()), s.silent))
            .collect()
    };
    // Never heard from: silent once the silence has passed since start.
    assert_eq!(
        status(3599),
        [("azure".into(), Some(3599), false), ("okta".into(), Some(3599), false)]
    );
    assert_eq!(
        status(3600),
        [("azure".into(), Some(3600), true), ("okta".into(), Some(3600), true)]
    );
    feed.record_success("okta", at(3000));
    // A request completing late never moves the last success back.
    feed.record_success("okta", at(2000));
    assert_eq!(
        status(3600),
        [("azure".into(), Some(3600), true), ("okta".into(), Some(600), false)]
    );
    let okta = feed.snapshot_at(at(3600)).pop().expect("okta");
    assert_eq!(okta.last_success, Some(at(3000)));
    assert_eq!(status(6600)[1], ("okta".into(), Some(3600), true));
    // A client not configured is tracked from its first success.
    feed.record_success("google", at(100));
    let names: Vec<String> = feed.snapshot_at(at(200)).into_iter().map(|s| s.client).collect();
    assert_eq!(names, ["azure", "google", "okta"]);
    // The clock set back before the last success: not known, not silent.
    let early = feed.snapshot_at(at(50));
    assert_eq!((early[1].silent_for, early[1].silent), (None, false));
    // Shared between clones.
    feed.clone().record_success("azure", at(7000));
    assert!(!feed.snapshot_at(at(7000))[0].silent);
}

#[test]
fn without_a_silence_no_feed_is_ever_silent() {
    let feed = FeedHealth::started_at(&clients(&["okta"]), None, at(0));
    let s = feed.snapshot_at(at(10_000_000)).pop().expect("okta");
    assert!(!s.silent);
    assert_eq!(s.silent_for, Some(Duration::from_secs(10_000_000)));
    assert!(
        FeedHealth::new(&clients(&["okta"]), None)
            .snapshot()
            .iter()
            .all(|s| !s.silent)
    );
}

#[test]
fn one_alert_per_silence_period() {
    let feed = FeedHealth::started_at(&clients(&["azure", "okta"]), Some(Duration::from_secs(60)), at(0));
    feed.record_success("azure", at(0));
    let mut watch = SilenceWatch::default();
    let check = |watch: &mut SilenceWatch, now: u64| -> Vec<Alert> { watch.check(&feed.snapshot_at(at(now)), at(now)) };
    assert!(check(&mut watch, 59).is_empty());
    let alerts = check(&mut watch, 60);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let okta = &alerts[1];
    assert_eq!(okta.kind, AlertKind::ScimSilent);
    assert_eq!(okta.scim_client.as_deref(), Some("okta"));
    assert_eq!(okta.time, OffsetDateTime::from(at(60)));
    assert!(okta.detail.contains("for 1m"), "{}", okta.detail);
    assert!(okta.detail.contains("none since Portcullis started"), "{}", okta.detail);
    assert!(
        alerts[0].detail.contains("last success at 2023-11-14T22:13:20Z"),
        "{}",
        alerts[0].detail
    );
    // Still silent: nothing more.
    assert!(check(&mut watch, 120).is_empty());
    assert!(check(&mut watch, 100_000).is_empty());
    // okta recovers, then goes silent again: one more alert.
    feed.record_success("okta", at(100_000));
    assert!(check(&mut watch, 100_010).is_empty());
    assert!(check(&mut watch, 100_059).is_empty());
    let again = check(&mut watch, 100_060);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].scim_client.as_deref(), Some("okta"));
}

#[tokio::test]
async fn watch_feeds_alerts_once_per_silence_with_a_moved_clock() {
    let feed = FeedHealth::started_at(&clients(&["okta"]), Some(Duration::from_secs(60)), at(0));
    let now = Arc::new(Mutex::new(at(0)));
    let alerter = Alerter::capturing(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let (feed, alerter, now) = (feed.clone(), alerter.clone(), now.clone());
        tokio::spawn(watch_feeds_with_clock(
            feed,
            alerter,
            Duration::from_millis(5),
            move || *now.lock(),
            async {
                let _ = stopped.await;
            },
        ))
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(alerter.stats().raised, 0);
    *now.lock() = at(61);
    eventually("a silence alert", || alerter.stats().raised == 1).await;
    *now.lock() = at(1000);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(alerter.stats().raised, 1, "one alert per silence period");
    feed.record_success("okta", at(1000));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(alerter.stats().raised, 1);
    *now.lock() = at(1060);
    eventually("a second silence alert", || alerter.stats().raised == 2).await;
    let sent = alerter.queue_contents();
    assert!(
        sent.iter()
            .all(|a| a.kind == AlertKind::ScimSilent && a.scim_client.as_deref() == Some("okta"))
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("stops on shutdown")
        .expect("no panic");

    // No silence configured: nothing to watch.
    let quiet = FeedHealth::new(&clients(&["okta"]), None);
    tokio::time::timeout(
        Duration::from_secs(5),
        watch_feeds(quiet, alerter, Duration::from_millis(5), std::future::pending()),
    )
    .await
    .expect("returns at once");
}
