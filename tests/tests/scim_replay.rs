//! Realistic provisioning sequences replayed over HTTP against a running
//! Portcullis, shaped as Microsoft Entra ID and Okta document and send them
//! (see `shared/reference/scim-idp-notes.md` sections 1 and 2), with the
//! effect on authorization checked after each step.

use portcullis_tests::{ENTRA_TOKEN, OKTA_TOKEN, ScimClient, TestServer, encode};
use serde_json::{Value, json};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn filter(attr_eq: &str) -> String {
    format!("filter={}", encode(attr_eq))
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

async fn groups_of(server: &TestServer, user: &str) -> Vec<String> {
    let (_, p) = server.principal(user).await;
    p["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| g["displayName"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_list(r: &portcullis_tests::ScimResponse, total: u64) {
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["totalResults"], json!(total), "{}", r.body);
    assert!(
        r.body["startIndex"].is_u64() && r.body["itemsPerPage"].is_u64(),
        "integers: {}",
        r.body
    );
    assert_eq!(r.headers["content-type"], "application/scim+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_provisioning_cycle() {
    let server = TestServer::start("", &[]).await;
    let entra = server.scim(ENTRA_TOKEN);

    // Test Connection: a filter on a random GUID must give 200 and an empty list.
    let r = entra
        .get(&format!(
            "/Users?{}",
            filter("userName eq \"b3f58a5e-6a1b-4a76-9a2d-3c2a5f1c9e11\"")
        ))
        .await;
    assert_list(&r, 0);

    // Create: look up by userName first, then POST.
    let r = entra
        .get(&format!("/Users?{}", filter("userName eq \"alice@contoso.com\"")))
        .await;
    assert_list(&r, 0);
    let r = entra
        .post(
            "/Users",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "externalId": "alice",
                "userName": "alice@contoso.com",
                "active": true,
                "displayName": "Alice Liddell",
                "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "Alice Liddell", "familyName": "Liddell", "givenName": "Alice"},
                "roles": [],
                ENTERPRISE: {"department": "Research", "employeeNumber": "1001"}
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert!(r.headers.contains_key("etag") && r.headers.contains_key("location"));
    assert_eq!(r.body[ENTERPRISE]["department"], "Research");
    assert_eq!(server.principal("alice@contoso.com").await.1["active"], true);

    // The same lookup now finds her (any case), by userName and by the work email.
    let r = entra
        .get(&format!("/Users?{}", filter("userName eq \"ALICE@contoso.com\"")))
        .await;
    assert_list(&r, 1);
    assert_eq!(r.body["Resources"][0]["id"], json!(id));
    let r = entra
        .get(&format!(
            "/Users?{}",
            filter("emails[type eq \"work\"].value eq \"alice@contoso.com\"")
        ))
        .await;
    assert_list(&r, 1);

    // Update: default mode sends capitalised ops, one per attribute, string booleans.
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([
                {"op": "Replace", "path": "displayName", "value": "Alice L."},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice.l@contoso.com"},
                {"op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Engineering"},
                {"op": "Replace", "path": "active", "value": "True"}
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "Alice L.");
    assert_eq!(r.body["emails"][0]["value"], "alice.l@contoso.com");
    assert_eq!(r.body[ENTERPRISE]["department"], "Engineering");
    assert_eq!(r.body["active"], true);

    // Flag mode (aadOptscim062020): lower-case ops, path-less replace with dotted keys.
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([{"op": "replace", "value": {"name.givenName": "Alicia", format!("{ENTERPRISE}:employeeNumber"): "1002"}}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"]["givenName"], "Alicia");
    assert_eq!(r.body[ENTERPRISE]["employeeNumber"], "1002");

    // Groups: look up, create without members, then add members by PATCH.
    let r = entra
        .get(&format!(
            "/Groups?excludedAttributes=members&{}",
            filter("displayName eq \"es-readers\"")
        ))
        .await;
    assert_list(&r, 0);
    let r = entra
        .post(
            "/Groups",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "es-readers",
                "members": []
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().expect("group id").to_owned();
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(groups_of(&server, "alice@contoso.com").await, ["es-readers"]);
    let r = entra.get(&format!("/Groups/{gid}?excludedAttributes=members")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("members").is_none(), "{}", r.body);
    let r = entra.get(&format!("/Users/{id}")).await;
    assert_eq!(r.body["groups"][0]["value"], json!(gid));

    // Removal, default mode: path "members" with a value array removes only those.
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "Remove", "path": "members", "value": [{"value": id}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(groups_of(&server, "alice@contoso.com").await.is_empty());

    // Back in, then removal in flag mode: a filter path, no value.
    entra
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "add", "path": "members", "value": [{"value": id}]}])),
        )
        .await;
    assert_eq!(groups_of(&server, "alice@contoso.com").await, ["es-readers"]);
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(groups_of(&server, "alice@contoso.com").await.is_empty());

    // Rename the group.
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "Replace", "path": "displayName", "value": "es-readers-2"}])),
        )
        .await;
    assert_eq!(r.status, 204);

    // Disable: PATCH active "False". The user is still returned by GET.
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(server.principal("alice@contoso.com").await.1["active"], false);
    assert_eq!(entra.get(&format!("/Users/{id}")).await.status, 200);

    // Hard delete.
    assert_eq!(entra.delete(&format!("/Users/{id}")).await.status, 204);
    let r = entra.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(server.principal("alice@contoso.com").await.0, 404);
    assert_eq!(entra.delete(&format!("/Groups/{gid}")).await.status, 204);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_provisioning_cycle() {
    let server = TestServer::start("", &[]).await;
    let okta = server.scim(OKTA_TOKEN);

    // Test API credentials.
    let r = okta.get("/Users?startIndex=1&count=2").await;
    assert_list(&r, 0);

    // Assign a user: filter, then POST with Okta's extras (groups:[], password).
    let r = okta
        .get("/Users?filter=userName%20eq%20%22bob%40example.com%22&startIndex=1&count=100")
        .await;
    assert_list(&r, 0);
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bob@example.com",
        "name": {"givenName": "Bob", "familyName": "Builder"},
        "emails": [{"primary": true, "value": "bob@example.com", "type": "work"}],
        "displayName": "Bob Builder",
        "locale": "en-US",
        "externalId": "00u1abcd",
        "groups": [],
        "password": "1mP0ssible!",
        "active": true
    });
    let r = okta.post("/Users", &user).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert!(
        r.body.get("password").is_none(),
        "password is never returned: {}",
        r.body
    );

    // Okta's suite checks case-insensitive userName lookup and the duplicate POST.
    let r = okta.get("/Users?filter=userName%20eq%20%22BOB%40EXAMPLE.COM%22").await;
    assert_list(&r, 1);
    let r = okta.post("/Users", &user).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["scimType"], "uniqueness");
    assert_eq!(
        okta.get("/Users/00000000-0000-4000-8000-000000000000").await.status,
        404
    );

    // Profile update: GET, modify, full PUT.
    let mut full = okta.get(&format!("/Users/{id}")).await.body;
    full["name"]["familyName"] = json!("Builds");
    let r = okta.put(&format!("/Users/{id}"), &full).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"]["familyName"], "Builds");
    assert_eq!(r.body["meta"]["version"], "W/\"2\"");

    // Group push: POST with no members, then one PATCH that renames (with id)
    // and adds a member.
    let r = okta.post("/Groups", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "es-admins", "members": []})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().expect("gid").to_owned();
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([
                {"op": "replace", "value": {"id": gid, "displayName": "es-admins"}},
                {"op": "add", "path": "members", "value": [{"value": id, "display": "Bob Builder"}]}
            ])),
        )
        .await;
    assert!(r.status == 204 || r.status == 200, "{} {}", r.status, r.body);
    assert_eq!(groups_of(&server, "bob@example.com").await, ["es-admins"]);
    let r = okta
        .get(&format!("/Groups?{}", filter(&format!("members.value eq \"{id}\""))))
        .await;
    assert_list(&r, 1);

    // Membership: remove by filter and re-add in one request, then an empty push.
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([
                {"op": "remove", "path": format!("members[value eq \"{id}\"]")},
                {"op": "add", "path": "members", "value": [{"value": id}]}
            ])),
        )
        .await;
    assert!(r.status.is_success());
    assert_eq!(groups_of(&server, "bob@example.com").await, ["es-admins"]);
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            &patch(json!([{"op": "replace", "path": "members", "value": []}])),
        )
        .await;
    assert!(r.status.is_success());
    assert!(groups_of(&server, "bob@example.com").await.is_empty());

    // AIW apps push groups with a full PUT.
    let r = okta
        .put(
            &format!("/Groups/{gid}"),
            &json!({"displayName": "es-admins", "members": [{"value": id}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(groups_of(&server, "bob@example.com").await, ["es-admins"]);

    // Deactivation: path-less replace with a value object.
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(server.principal("bob@example.com").await.1["active"], false);
    assert_eq!(okta.get(&format!("/Users/{id}")).await.status, 200);

    // Import: paging with integer totals.
    let r = okta.get("/Groups?startIndex=1&count=100").await;
    assert_list(&r, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_authenticated_and_isolated() {
    let server = TestServer::start("", &[]).await;
    let okta = server.scim(OKTA_TOKEN);
    let entra = server.scim(ENTRA_TOKEN);
    let r = okta.post("/Users", &json!({"userName": "carol@example.com"})).await;
    let id = r.body["id"].as_str().expect("id").to_owned();

    let anonymous = ScimClient {
        token: None,
        ..okta.clone()
    };
    let wrong = ScimClient {
        token: Some("nope".into()),
        ..okta.clone()
    };
    for c in [&anonymous, &wrong] {
        let r = c.get("/Users").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }
    // entra sees nothing of okta's and cannot touch it.
    assert_list(&entra.get("/Users").await, 0);
    assert_eq!(entra.get(&format!("/Users/{id}")).await.status, 404);
    assert_eq!(entra.delete(&format!("/Users/{id}")).await.status, 404);
    // Not through a filter on its id either (answered from an index).
    assert_list(
        &entra
            .get(&format!("/Users?{}", filter(&format!("id eq \"{id}\""))))
            .await,
        0,
    );
    assert_list(
        &okta
            .get(&format!("/Users?{}", filter(&format!("id eq \"{id}\""))))
            .await,
        1,
    );
    // ...but userName stays unique across clients: it is what tokens bind to.
    assert_eq!(
        entra
            .post("/Users", &json!({"userName": "CAROL@example.com"}))
            .await
            .status,
        409
    );
    assert_list(&okta.get("/Users").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_versions_bulk_and_errors() {
    let server = TestServer::start("", &[]).await;
    let okta = server.scim(OKTA_TOKEN);
    for (i, name) in ["dave", "alice", "carol", "bob"].iter().enumerate() {
        let r = okta
            .post(
                "/Users",
                &json!({"userName": format!("{name}@example.com"), "active": i % 2 == 0, "title": format!("t{i}")}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    // Filters, sorting, paging and projection.
    let r = okta
        .get(&format!(
            "/Users?{}&sortBy=userName&sortOrder=descending",
            filter("active eq true or title sw \"t3\"")
        ))
        .await;
    assert_list(&r, 3);
    let names: Vec<&str> = r.body["Resources"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    assert_eq!(names, ["dave@example.com", "carol@example.com", "bob@example.com"]);
    let r = okta
        .get("/Users?sortBy=userName&startIndex=2&count=2&attributes=userName")
        .await;
    assert_list(&r, 4);
    assert_eq!(r.body["itemsPerPage"], 2);
    let first = &r.body["Resources"][0];
    assert_eq!(first["userName"], "bob@example.com");
    assert!(first.get("title").is_none() && first.get("id").is_some(), "{first}");
    let r = okta
        .post("/Users/.search", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"a\"", "count": 10}))
        .await;
    assert_list(&r, 1);

    // Bad filters are 400 invalidFilter, never a hang or a 500.
    for bad in ["userName eq", "active gt true", "((((userName pr", "name eq \"x\""] {
        let r = okta.get(&format!("/Users?{}", filter(bad))).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["scimType"], "invalidFilter", "{bad}");
    }

    // Versions: If-None-Match gives 304, a stale If-Match gives 412.
    let r = okta
        .get(&format!("/Users?{}", filter("userName eq \"alice@example.com\"")))
        .await;
    let id = r.body["Resources"][0]["id"].as_str().expect("id").to_owned();
    let etag = okta.get(&format!("/Users/{id}")).await.headers["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let r = okta
        .send(
            http::Method::GET,
            &format!("/Users/{id}"),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    let body = patch(json!([{"op": "replace", "path": "title", "value": "x"}]));
    let r = okta
        .send(
            http::Method::PATCH,
            &format!("/Users/{id}"),
            Some(&body),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = okta
        .send(
            http::Method::PATCH,
            &format!("/Users/{id}"),
            Some(&body),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);

    // Bulk with a bulkId reference from a group to a user created in the same request.
    let r = okta
        .post(
            "/Bulk",
            &json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "failOnErrors": 1,
                "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "erin@example.com"}},
                    {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": {"displayName": "bulk", "members": [{"value": "bulkId:u1"}]}},
                    {"method": "PATCH", "path": "/Users/bulkId:u1", "data": patch(json!([{"op": "replace", "path": "active", "value": false}]))}
                ]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let statuses: Vec<&str> = r.body["Operations"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|o| o["status"].as_str())
        .collect();
    assert_eq!(statuses, ["201", "201", "200"], "{}", r.body);
    assert_eq!(groups_of(&server, "erin@example.com").await, ["bulk"]);
    assert_eq!(server.principal("erin@example.com").await.1["active"], false);

    // Malformed bodies and unsupported media.
    let r = okta.send(http::Method::POST, "/Users", None, &[]).await;
    assert_eq!(r.status, 400);
    let r = okta.post("/Users", &json!(["not", "an", "object"])).await;
    assert_eq!(r.body["scimType"], "invalidSyntax");
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([{"op": "replace", "path": "active", "value": "maybe"}])),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            &patch(json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = okta.get("/Nope").await;
    assert_eq!(r.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_schemas_and_rate_limits() {
    const ACME: &str = "urn:example:params:scim:schemas:extension:acme:2.0:User";
    let extra = format!(
        "[[scim.clients]]\nname = \"slow\"\ntoken_sha256 = \"{}\"\nrate_limit = 2\n\
         [[scim.schemas]]\nid = \"{ACME}\"\nname = \"Acme\"\nresource = \"User\"\n\
         attributes = [{{ name = \"badge\", type = \"string\" }}, {{ name = \"clearance\", type = \"integer\" }}]\n",
        portcullis_scim::auth::token_sha256_hex("slow-token")
    );
    let server = TestServer::start(&extra, &[]).await;
    let okta = server.scim(OKTA_TOKEN);

    // The extension is discoverable and validated like the built-ins.
    let r = okta.get(&format!("/Schemas/{ACME}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["attributes"].as_array().map(Vec::len), Some(2));
    let r = okta.get("/ResourceTypes/User").await;
    assert!(r.body["schemaExtensions"].to_string().contains(ACME), "{}", r.body);
    let r = okta
        .post(
            "/Users",
            &json!({"userName": "frank@example.com", ACME: {"badge": "B-7", "clearance": 3}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body[ACME]["clearance"], 3);
    assert!(r.body["schemas"].to_string().contains(ACME));
    let r = okta
        .post(
            "/Users",
            &json!({"userName": "gina@example.com", ACME: {"clearance": "high"}}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    let r = okta
        .get(&format!("/Users?{}", filter(&format!("{ACME}:badge eq \"B-7\""))))
        .await;
    assert_list(&r, 1);

    // A client over its rate limit gets 429 with Retry-After; others are unaffected.
    let slow = server.scim("slow-token");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(slow.get("/Users").await.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    let limited = slow.get("/Users").await;
    if limited.status == 429 {
        let wait: u64 = limited.headers["retry-after"]
            .to_str()
            .expect("header")
            .parse()
            .expect("seconds");
        assert!((1..=2).contains(&wait), "{wait}");
    }
    assert_eq!(okta.get("/Users").await.status, 200);
    server.stop().await;
}
