//! The audit trail as the running server writes it: one record per access
//! decision with exact fields (allow, deny, unauthenticated, public), one
//! per SCIM change with the attributes, memberships and resulting role
//! changes, allowed requests sampled per route while denials never are, and
//! a chain that `portcullis_audit::verify` accepts.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use portcullis_oidc::testing::{Alg, TestIssuer};
use portcullis_tests::jar::CookieClient;
use portcullis_tests::upstream::Upstream;
use portcullis_tests::{OKTA_TOKEN, TestServer};
use serde_json::{Value, json};

const POLICY: &str = r#"[roles.reader]
allow = [{ route = "app", methods = ["GET"], paths = ["/data/**"] }]
deny = [{ route = "app", paths = ["/data/secret/**"] }]

[roles.quiet]
allow = [{ route = "quiet", paths = ["/**"] }]

[public]
allow = [{ route = "app", methods = ["GET"], paths = ["/public/**"] }]

[groups]
"readers" = ["reader", "quiet"]
"#;

/// Every record in the audit file so far, once at least `n` are there.
async fn records(path: &Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if all.len() >= n || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last<'a>(records: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    records
        .iter()
        .rev()
        .find(|r| r["kind"] == kind && pred(r))
        .unwrap_or_else(|| panic!("no such {kind} record in {records:#?}"))
}

#[tokio::test]
async fn access_decisions_and_scim_changes_are_recorded_with_their_reasons() {
    let idp = TestIssuer::start().await;
    let app = Upstream::start("app").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [audit]\npath = \"audit/audit.log\"\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"quiet\"\npath_prefix = \"/quiet\"\nupstream = \"{}\"\naudit_allowed = 0.0\n",
        idp.issuer(),
        app.url(),
        app.url()
    );
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;
    let audit = server.dir().join("audit/audit.log");
    let scim = server.scim(OKTA_TOKEN);
    let alice = scim
        .create_user(json!({"userName": "alice@example.com", "displayName": "Alice", "active": true}))
        .await;
    scim.add_member("readers", &alice).await;
    let token = idp.mint(Alg::Es256, json!({"sub": "a", "email": "alice@example.com"}));
    let client = CookieClient::new();
    let get = |path: &str, token: Option<&str>| {
        let url = format!("{}{path}", server.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let client = &client;
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            client.send(Method::GET, &url, &headers, Bytes::new()).await
        }
    };

    let ok = get("/data/x/../report", Some(&token)).await;
    assert_eq!(ok.status, StatusCode::OK);
    let request_id = ok.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(get("/data/secret/k", Some(&token)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get("/data/x", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get("/public/p", None).await.status, StatusCode::OK);
    // Sampled out: allowed requests on "quiet" are not recorded...
    for _ in 0..5 {
        assert_eq!(get("/quiet/q", Some(&token)).await.status, StatusCode::OK);
    }
    // ...but its denials always are.
    assert_eq!(get("/quiet/q", None).await.status, StatusCode::UNAUTHORIZED);
    scim.remove_member("readers", &alice).await;
    scim.set_active(&alice, false).await;

    let all = records(&audit, 9).await;
    let allow = last(&all, "access", |r| r["request_id"] == request_id.as_str());
    assert_eq!(allow["user"], "alice@example.com");
    assert_eq!(allow["client_ip"], "127.0.0.1");
    assert_eq!(allow["route"], "app");
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["path"], "/data/report", "the normalized path");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["roles"], json!(["quiet", "reader"]));
    assert!(allow["rule"].as_str().unwrap().contains("app.toml:2:"), "{allow}");
    assert!(allow["upstream_ms"].as_f64().unwrap() > 0.0, "{allow}");
    assert!(allow["total_ms"].as_f64().unwrap() >= allow["upstream_ms"].as_f64().unwrap());
    assert!(allow["time"].as_str().unwrap().ends_with('Z'));

    let deny = last(&all, "access", |r| r["path"] == "/data/secret/k");
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["reason"], "denied_by_rule");
    assert_eq!(deny["status"], 403);
    assert!(deny["rule"].as_str().unwrap().contains("app.toml:3:"), "{deny}");

    let anon = last(&all, "access", |r| r["path"] == "/data/x");
    assert_eq!(anon["decision"], "unauthenticated");
    assert_eq!(anon["reason"], "missing_token");
    assert_eq!(anon["user"], Value::Null);
    let public = last(&all, "access", |r| r["path"] == "/public/p");
    assert_eq!(public["decision"], "public");
    assert!(public["rule"].as_str().unwrap().contains("app.toml"), "{public}");
    let quiet: Vec<_> = all.iter().filter(|r| r["route"] == "quiet").collect();
    assert_eq!(quiet.len(), 1, "only the refusal on the sampled-out route: {quiet:#?}");
    assert_eq!(quiet[0]["decision"], "unauthenticated");

    // SCIM: the user's creation, the membership that granted roles, its
    // removal, and the deactivation.
    let created = last(&all, "scim", |r| {
        r["operation"] == "create" && r["resource_type"] == "User"
    });
    assert_eq!(created["scim_client"], "okta");
    assert_eq!(created["resource_id"], alice.as_str());
    assert_eq!(created["detail"]["after"]["userName"], "alice@example.com");
    let granted = last(&all, "scim", |r| {
        r["resource_type"] == "Group" && r["access_changes"][0]["roles_added"] != json!([])
    });
    assert_eq!(granted["detail"]["display_name"], "readers");
    assert_eq!(granted["access_changes"][0]["user"], "alice@example.com");
    assert_eq!(granted["access_changes"][0]["roles_added"], json!(["quiet", "reader"]));
    let removed = last(&all, "scim", |r| r["detail"]["members_removed"].is_array());
    assert_eq!(removed["detail"]["members_removed"][0]["id"], alice.as_str());
    assert_eq!(
        removed["access_changes"][0]["roles_removed"],
        json!(["quiet", "reader"])
    );
    let deactivated = last(&all, "scim", |r| {
        r["operation"] == "update" && r["resource_type"] == "User"
    });
    assert_eq!(
        deactivated["detail"]["changed"]["active"],
        json!({"before": true, "after": false})
    );
    assert_eq!(deactivated["access_changes"][0]["active_after"], false);

    // Access reviews see alice's use just now.
    let access = client
        .send(
            Method::GET,
            &format!("http://{}/v1/report/access", server.admin),
            &[],
            Bytes::new(),
        )
        .await
        .json();
    assert_eq!(access[0]["user"], "alice@example.com");
    assert!(access[0]["last_access"].as_str().is_some(), "{access}");
    assert_eq!(access[0]["roles"], json!([]), "deactivated: no roles now");
    let stale = client
        .send(
            Method::GET,
            &format!("http://{}/v1/report/stale?days=1", server.admin),
            &[],
            Bytes::new(),
        )
        .await
        .json();
    assert_eq!(stale, json!([]), "alice was here today");

    // The chain holds.
    let report = portcullis_audit::verify(&portcullis_audit::files_of(&audit).unwrap()).unwrap();
    assert!(report.broken.is_none(), "{:?}", report.broken);
    assert_eq!(report.records as usize, records(&audit, 0).await.len());
}
