//! The two ways the SCIM service renders a list answer give the same
//! resources: the text path (stored document spliced into the answer, used
//! for `userName`/`id` lookups and plain paging, the queries identity
//! providers make most) and the general path (document parsed, projected,
//! serialized), which a `sortBy` forces. Resources cover what could differ:
//! extensions, nested groups, escaping, empty lists, another client's data.

use portcullis_tests::{ENTRA_TOKEN, OKTA_TOKEN, ScimClient, TestServer, encode};
use serde_json::{Value, json};

const ACME: &str = "urn:example:params:scim:schemas:extension:acme:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// `path` as the text path answers it against the same query with a
/// `sortBy` (the general path): equal bodies, one content type.
async fn check(client: &ScimClient, path: &str, sort_by: &str, expected_total: u64) -> Value {
    let fast = client.get(path).await;
    let general = client.get(&format!("{path}&sortBy={sort_by}")).await;
    assert_eq!(fast.status, 200, "{path}: {}", fast.body);
    assert_eq!(fast.body, general.body, "{path}");
    assert_eq!(fast.headers["content-type"], "application/scim+json", "{path}");
    assert_eq!(
        fast.body["totalResults"],
        json!(expected_total),
        "{path}: {}",
        fast.body
    );
    fast.body
}

fn eq(attr: &str, value: &str) -> String {
    format!("filter={}", encode(&format!("{attr} eq \"{value}\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_general_rendering_agree() {
    let extra = format!(
        "[[scim.schemas]]\nid = \"{ACME}\"\nname = \"Acme\"\nresource = \"User\"\n\
         attributes = [{{ name = \"badge\", type = \"string\" }}, {{ name = \"clearance\", type = \"integer\" }}]\n"
    );
    let server = TestServer::start(&extra, &[]).await;
    let okta = server.scim(OKTA_TOKEN);

    let plain = okta.create_user(json!({"userName": "plain@example.com"})).await;
    let full = okta
        .create_user(json!({
            "userName": "Full.Person@Example.com",
            "externalId": "00u-full",
            "name": {"givenName": "Zoë", "familyName": "O'Brien \"Quoted\" \\ back"},
            "displayName": "Zoë \u{1F600} <b>&</b>",
            "emails": [{"value": "full@example.com", "type": "work", "primary": true},
                       {"value": "z@home.example", "type": "home"}],
            "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
            "title": "tab\there, newline\nthere",
            "active": true,
            ENTERPRISE: {"employeeNumber": "42", "department": "R&D", "manager": {"value": plain}},
            ACME: {"badge": "B-7", "clearance": 3},
        }))
        .await;
    let inactive = okta
        .create_user(json!({"userName": "gone@example.com", "active": false}))
        .await;

    // Groups: a direct one, a nested one (inherited by its members'
    // members), a name that needs escaping.
    let eng = okta
        .post(
            "/Groups",
            &json!({"displayName": "eng \"core\"", "members": [{"value": full}, {"value": plain}]}),
        )
        .await;
    assert_eq!(eng.status, 201, "{}", eng.body);
    let eng = eng.body["id"].as_str().expect("id").to_owned();
    let all = okta
        .post(
            "/Groups",
            &json!({"displayName": "all", "members": [{"value": eng, "type": "Group"}, {"value": inactive}]}),
        )
        .await;
    assert_eq!(all.status, 201, "{}", all.body);
    let all = all.body["id"].as_str().expect("id").to_owned();
    let empty = okta.post("/Groups", &json!({"displayName": "empty"})).await;
    assert_eq!(empty.status, 201, "{}", empty.body);
    let empty = empty.body["id"].as_str().expect("id").to_owned();

    // Lookups by userName (any case) and by id.
    for (user_name, id) in [
        ("plain@example.com", &plain),
        ("full.person@example.COM", &full),
        ("gone@example.com", &inactive),
    ] {
        let body = check(&okta, &format!("/Users?{}", eq("userName", user_name)), "userName", 1).await;
        let by_id = okta.get(&format!("/Users/{id}")).await;
        assert_eq!(body["Resources"][0], by_id.body, "{user_name}");
        check(&okta, &format!("/Users?{}", eq("id", id)), "userName", 1).await;
        check(
            &okta,
            &format!(
                "/Users?{}",
                eq("urn:ietf:params:scim:schemas:core:2.0:User:userName", user_name)
            ),
            "userName",
            1,
        )
        .await;
    }
    let body = check(
        &okta,
        &format!("/Users?{}", eq("userName", "full.person@example.com")),
        "id",
        1,
    )
    .await;
    let groups = &body["Resources"][0]["groups"];
    assert_eq!(
        groups.as_array().map(Vec::len),
        Some(2),
        "direct and inherited: {groups}"
    );
    assert_eq!(body["Resources"][0][ACME]["clearance"], 3);
    assert_eq!(body["Resources"][0]["name"]["familyName"], "O'Brien \"Quoted\" \\ back");

    // No match; another client's user is not there for it.
    check(
        &okta,
        &format!("/Users?{}", eq("userName", "nobody@example.com")),
        "id",
        0,
    )
    .await;
    let entra = server.scim(ENTRA_TOKEN);
    check(
        &entra,
        &format!("/Users?{}", eq("userName", "plain@example.com")),
        "id",
        0,
    )
    .await;
    check(&entra, &format!("/Users?{}", eq("id", &plain)), "id", 0).await;

    // Paging, including past the end and count=0.
    for page in [
        "startIndex=1&count=100",
        "startIndex=2&count=1",
        "startIndex=3&count=5",
        "startIndex=9&count=5",
        "count=0",
    ] {
        check(&okta, &format!("/Users?{page}"), "id", 3).await;
        check(&okta, &format!("/Groups?{page}"), "id", 3).await;
    }
    check(&entra, "/Users?startIndex=1", "id", 0).await;

    // Groups by id, with their members (users and a nested group).
    for (id, members) in [(&eng, 2), (&all, 2), (&empty, 0)] {
        let body = check(&okta, &format!("/Groups?{}", eq("id", id)), "displayName", 1).await;
        let by_id = okta.get(&format!("/Groups/{id}")).await;
        assert_eq!(body["Resources"][0], by_id.body);
        assert_eq!(
            body["Resources"][0]["members"].as_array().map(Vec::len),
            Some(members),
            "{}",
            body
        );
    }
    server.stop().await;
}
