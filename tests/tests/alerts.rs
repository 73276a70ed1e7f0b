//! High-risk alerts and SCIM feed health as the running server delivers
//! them: a SCIM change granting a sensitive group or role reaches a real
//! local webhook (after the webhook's 500s, which are retried), a policy
//! reload that widens a sensitive role does too, an ordinary grant does
//! not, and a silent SCIM client raises `scim_silent` and shows on
//! `/v1/status` and in `/metrics`.

use std::time::Duration;

use http::StatusCode;
use portcullis_tests::webhook::{Received, Webhook};
use portcullis_tests::{ENTRA_TOKEN, OKTA_TOKEN, TestServer};
use serde_json::{Value, json};

const POLICY: &str = r#"[roles.reader]
allow = [{ route = "app", methods = ["GET"], paths = ["/data/**"] }]

[roles.admin]
allow = [{ route = "app", paths = ["/**"] }]

[groups]
"readers" = ["reader"]
"platform-admins" = ["admin"]
"#;

/// The webhook path carries a secret, as real ones often do.
const HOOK_PATH: &str = "/hooks/T0KEN-not-for-logs";

fn config(hook: &Webhook, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"app\"\nupstream = \"http://127.0.0.1:9\"\n\
         [alerts]\ngroups = [\"platform-admins\"]\nroles = [\"admin\"]\nwebhook = \"{}\"\n{extra}",
        hook.url(HOOK_PATH)
    )
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Value> {
    received
        .iter()
        .filter(|r| r.body["type"] == kind)
        .map(|r| &r.body)
        .collect()
}

async fn get(url: &str) -> (StatusCode, String) {
    let client = portcullis_tests::http_client();
    let resp = client
        .request(
            http::Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("admin request");
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_sensitive_grant_over_scim_reaches_the_webhook_after_its_500s() {
    // The first two deliveries fail; the alert must still arrive, once
    // accepted, and with the same body each time.
    let hook = Webhook::start(&[500, 503]).await;
    let server = TestServer::start(&config(&hook, ""), &[("app.toml", POLICY)]).await;
    let scim = server.scim(OKTA_TOKEN);
    let alice = scim
        .create_user(json!({"userName": "alice@example.com", "active": true}))
        .await;
    let bob = scim
        .create_user(json!({"userName": "bob@example.com", "active": true}))
        .await;
    scim.add_member("readers", &alice).await;
    scim.add_member("platform-admins", &bob).await;

    let received = hook
        .wait_for("an accepted sensitive_grant", |r| {
            r.iter()
                .any(|r| r.answered == 200 && r.body["type"] == "sensitive_grant")
        })
        .await;
    assert_eq!(
        received.len(),
        3,
        "two refused deliveries and one accepted: {received:#?}"
    );
    assert!(received.iter().all(|r| r.path == HOOK_PATH));
    assert!(
        received.iter().all(|r| r.body == received[0].body),
        "a retry posts the same alert"
    );
    let alert = &received[2].body;
    assert_eq!(alert["type"], "sensitive_grant");
    assert_eq!(alert["user"], "bob@example.com");
    assert_eq!(alert["user_id"], bob.as_str());
    assert_eq!(alert["groups_added"], json!(["platform-admins"]));
    assert_eq!(alert["roles_added"], json!(["admin"]));
    assert_eq!(alert["scim_client"], "okta");
    assert!(alert["change_seq"].as_u64().is_some(), "{alert}");
    assert!(alert["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{alert}");

    // Nothing about alice's ordinary grant, even later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = hook.received();
    assert!(
        all.iter().all(|r| r.body["user"] != "alice@example.com"),
        "an ordinary grant raised an alert: {all:#?}"
    );

    // A nested grant alerts too: a group inside platform-admins gains
    // alice.
    let nested = scim
        .post(
            "/Groups",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "oncall",
                "members": [{"value": alice}],
            }),
        )
        .await;
    assert_eq!(nested.status, StatusCode::CREATED, "{}", nested.body);
    let oncall = nested.body["id"].as_str().expect("id").to_owned();
    scim.add_member("platform-admins", &oncall).await;
    let received = hook
        .wait_for("alice's alert through the nested group", |r| {
            r.iter().any(|r| r.body["user"] == "alice@example.com")
        })
        .await;
    let alice_alert = received
        .iter()
        .find(|r| r.body["user"] == "alice@example.com")
        .map(|r| &r.body)
        .expect("alert");
    assert_eq!(alice_alert["groups_added"], json!(["platform-admins"]));

    let (status, metrics) = get(&format!("http://{}/metrics", server.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).expect("metrics parse");
    let value = |name: &str| {
        scrape.samples.iter().find(|s| s.metric == name).map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    assert_eq!(value("portcullis_alerts_raised_total"), Some(2.0), "{metrics}");
    assert_eq!(value("portcullis_alerts_delivered_total"), Some(2.0), "{metrics}");
    assert_eq!(value("portcullis_alerts_undelivered_total"), Some(0.0), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_policy_reload_that_widens_a_sensitive_role_alerts() {
    let hook = Webhook::start(&[]).await;
    let server = TestServer::start(&config(&hook, ""), &[("app.toml", POLICY)]).await;
    let scim = server.scim(OKTA_TOKEN);
    let carol = scim
        .create_user(json!({"userName": "carol@example.com", "active": true}))
        .await;
    scim.add_member("readers", &carol).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.received().is_empty(), "{:#?}", hook.received());

    // Readers now also get admin.
    let widened = POLICY.replace(r#""readers" = ["reader"]"#, r#""readers" = ["reader", "admin"]"#);
    std::fs::write(server.dir().join("policies/app.toml"), widened).expect("write policy");
    let received = hook
        .wait_for("policy_widened", |r| !of_type(r, "policy_widened").is_empty())
        .await;
    let alert = of_type(&received, "policy_widened")[0];
    assert_eq!(alert["roles_added"], json!(["admin"]), "{alert}");
    assert!(
        alert["detail"]
            .as_str()
            .is_some_and(|d| d.contains("carol@example.com")),
        "the alert names who gained the role: {alert}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_silent_scim_client_raises_one_alert_and_shows_in_status_and_metrics() {
    let hook = Webhook::start(&[]).await;
    let server = TestServer::start(&config(&hook, "scim_silence = \"1s\"\n"), &[("app.toml", POLICY)]).await;
    // okta keeps pushing; entra never does.
    let okta = server.scim(OKTA_TOKEN);
    let mut received = Vec::new();
    for _ in 0..40 {
        assert_eq!(okta.get("/Users").await.status, StatusCode::OK);
        received = hook.received();
        if !of_type(&received, "scim_silent").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silent = of_type(&received, "scim_silent");
    assert_eq!(silent.len(), 1, "{received:#?}");
    assert_eq!(silent[0]["scim_client"], "entra");

    let (status, body) = get(&format!("http://{}/v1/status", server.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let status: Value = serde_json::from_str(&body).expect("status json");
    let clients = status["scim_clients"].as_array().expect("clients");
    let by_name = |name: &str| clients.iter().find(|c| c["client"] == name).expect("client listed");
    assert_eq!(by_name("entra")["silent"], true, "{status}");
    assert_eq!(by_name("entra")["last_success"], Value::Null, "{status}");
    assert_eq!(by_name("okta")["silent"], false, "{status}");
    assert!(by_name("okta")["last_success"].as_str().is_some(), "{status}");

    let (_, metrics) = get(&format!("http://{}/metrics", server.admin)).await;
    assert!(
        metrics.contains("portcullis_scim_client_silent{client=\"entra\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_scim_client_silent{client=\"okta\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_scim_client_seconds_since_success{client=\"okta\"} "),
        "{metrics}"
    );

    // entra is heard from: it recovers, and a second silence would alert
    // again only after another full window. Within the window, no repeat.
    let entra = server.scim(ENTRA_TOKEN);
    assert_eq!(entra.get("/Users").await.status, StatusCode::OK);
    let (_, body) = get(&format!("http://{}/v1/status", server.admin)).await;
    let status: Value = serde_json::from_str(&body).expect("status json");
    let entra_now = status["scim_clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client"] == "entra"))
        .expect("entra");
    assert_eq!(entra_now["silent"], false, "{status}");
    assert_eq!(of_type(&hook.received(), "scim_silent").len(), 1);
    server.stop().await;
}
