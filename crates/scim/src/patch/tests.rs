//! Tests for the PATCH engine: request parsing, every example of RFC 7644
//! 3.5.2.1-3, each IdP tolerance, group member edits, atomicity,
//! performance of large member lists, and a seeded random smoke test.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::*;
use crate::filter::parse_filter;
use crate::schema::{ENTERPRISE_URN, GROUP_URN, ResourceKind, Schemas, USER_URN};

const ID: &str = "2819c223-7f76-453a-919d-413861904646";
const GID: &str = "acbf3ae7-8463-4692-b4fd-9b4da3f908ce";
const BABS: &str = "2819c223-7f76-453a-919d-413861904646";
const JAMES: &str = "08e1d05d-121c-4561-8b96-473d93df9210";

fn schemas() -> Schemas {
    Schemas::new(&[]).unwrap_or_else(|e| panic!("schemas: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Barbara Jensen's attribute document, as `normalize_write` stores it.
fn user_doc() -> Map<String, Value> {
    obj(json!({
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "bjensen",
        "externalId": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs Jensen",
        "active": true,
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "addresses": [
            {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
             "region": "CA", "postalCode": "91608", "country": "USA", "primary": true},
            {"type": "home", "streetAddress": "456 Hollywood Blvd", "locality": "Hollywood",
             "region": "CA", "postalCode": "91608", "country": "USA"}
        ],
        ENTERPRISE_URN: {"department": "Tour Operations", "employeeNumber": "701984"}
    }))
}

fn group_doc() -> Map<String, Value> {
    obj(json!({"schemas": [GROUP_URN], "displayName": "Tour Guides", "externalId": "tg"}))
}

fn body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP_URN], "Operations": ops})
}

fn run(kind: ResourceKind, doc: &mut Map<String, Value>, ops: &Value) -> Result<PatchOutcome, ScimError> {
    let s = schemas();
    let id = if kind == ResourceKind::User { ID } else { GID };
    let parsed = parse_patch(&body(ops.clone()))?;
    apply_patch(doc, &parsed, s.resource(kind), id)
}

fn expect_error(result: Result<PatchOutcome, ScimError>, kind: ScimType, detail: &str, shown: &Value) {
    match result {
        Ok(o) => panic!("{shown}: expected {kind:?}, got {o:?}"),
        Err(e) => {
            assert_eq!((e.status, e.scim_type), (400, Some(kind)), "{shown}: {e}");
            assert!(e.detail.contains(detail), "{shown}: {:?} lacks {detail:?}", e.detail);
        }
    }
}

/// Applies `ops` to the user document. On success each `(JSON pointer,
/// value)` probe must hold (`null` meaning absent); on failure the error
/// must have that scimType and detail, and the document must be unchanged.
fn check(ops: Value, expected: Expect) {
    let mut doc = user_doc();
    let result = run(ResourceKind::User, &mut doc, &ops);
    match expected {
        Ok(probes) => {
            let outcome = result.unwrap_or_else(|e| panic!("{ops}: {e}"));
            assert!(outcome.members.is_empty(), "{ops}");
            let doc = Value::Object(doc);
            for (pointer, want) in &probes {
                let got = doc.pointer(pointer).cloned().unwrap_or(Value::Null);
                assert_eq!(&got, want, "{pointer} after {ops}\n{doc:#}");
            }
        }
        Err((kind, detail)) => {
            expect_error(result, kind, detail, &ops);
            assert_eq!(doc, user_doc(), "{ops}: the document must be left untouched");
        }
    }
}

/// `(JSON pointer, value)` checks on a document; `null` means absent.
type Probes = Vec<(&'static str, Value)>;
type Expect = Result<Probes, (ScimType, &'static str)>;
type GroupExpect = Result<(Vec<MemberEdit>, Probes), (ScimType, &'static str)>;
type ParseExpect = Result<usize, (ScimType, &'static str)>;

const ENT: &str = "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const ENT_DEPARTMENT: &str = "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/department";
const ENT_EMPLOYEENUMBER: &str = "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/employeeNumber";
const ENT_COSTCENTER: &str = "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/costCenter";
const ENT_MANAGER: &str = "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager";

// ---- RFC 7644 3.5.2 examples -----------------------------------------------------

#[test]
fn rfc7644_user_examples() {
    // 3.5.2.1: path-less add of emails and nickname.
    check(
        json!([{"op": "add", "value": {"emails": [{"value": "babs@jensen.org", "type": "home"}], "nickname": "Babs"}}]),
        Ok(vec![
            ("/emails/0/value", json!("bjensen@example.com")),
            ("/emails/1", json!({"value": "babs@jensen.org", "type": "home"})),
            ("/nickName", json!("Babs")),
            ("/nickname", Value::Null),
        ]),
    );
    // 3.5.2.2: remove values matching a filter.
    check(
        json!([{"op": "remove", "path": "emails[type eq \"work\" and value ew \"example.com\"]"}]),
        Ok(vec![("/emails", Value::Null), ("/userName", json!("bjensen"))]),
    );
    // 3.5.2.3: replace a whole matching value.
    let work = json!({
        "type": "work",
        "streetAddress": "911 Universal City Plaza",
        "locality": "Hollywood",
        "region": "CA",
        "postalCode": "91608",
        "country": "US",
        "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
        "primary": true
    });
    check(
        json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": work}]),
        Ok(vec![
            ("/addresses/0", work.clone()),
            ("/addresses/1/type", json!("home")),
            ("/addresses/2", Value::Null),
        ]),
    );
    // 3.5.2.3: replace a sub-attribute of matching values.
    check(
        json!([{"op": "replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1010 Broadway Ave"}]),
        Ok(vec![
            ("/addresses/0/streetAddress", json!("1010 Broadway Ave")),
            ("/addresses/0/locality", json!("Hollywood")),
            ("/addresses/1/streetAddress", json!("456 Hollywood Blvd")),
        ]),
    );
    // 3.5.2.3: path-less replace of emails (all values) and nickname.
    check(
        json!([{"op": "replace", "value": {
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "nickname": "Babs"
        }}]),
        Ok(vec![
            (
                "/emails",
                json!([{"value": "bjensen@example.com", "type": "work", "primary": true}, {"value": "babs@jensen.org", "type": "home"}]),
            ),
            ("/nickName", json!("Babs")),
        ]),
    );
    // 3.5.2: sub-attribute paths.
    check(
        json!([{"op": "replace", "path": "name.familyName", "value": "Jensen-Smith"}]),
        Ok(vec![(
            "/name",
            json!({"givenName": "Barbara", "familyName": "Jensen-Smith"}),
        )]),
    );
}

/// Applies `ops` to the group document: the member edits in order, and
/// `(pointer, value)` probes on the document; or an error (document
/// unchanged).
fn check_group(ops: Value, expected: GroupExpect) {
    let mut doc = group_doc();
    let result = run(ResourceKind::Group, &mut doc, &ops);
    match expected {
        Ok((edits, probes)) => {
            let outcome = result.unwrap_or_else(|e| panic!("{ops}: {e}"));
            assert_eq!(outcome.members, edits, "{ops}");
            assert!(doc.get("members").is_none(), "{ops}: members never enter the document");
            let doc = Value::Object(doc);
            for (pointer, want) in &probes {
                assert_eq!(
                    &doc.pointer(pointer).cloned().unwrap_or(Value::Null),
                    want,
                    "{pointer} after {ops}"
                );
            }
        }
        Err((kind, detail)) => {
            expect_error(result, kind, detail, &ops);
            assert_eq!(doc, group_doc(), "{ops}: the document must be left untouched");
        }
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn rfc7644_group_examples() {
    use MemberEdit::{Add, Remove, RemoveAll, Replace};
    let babs = json!({"display": "Babs Jensen", "$ref": format!("https://example.com/v2/Users/{BABS}"), "value": BABS});
    let james =
        json!({"display": "James Smith", "$ref": format!("https://example.com/v2/Users/{JAMES}"), "value": JAMES});
    // 3.5.2.1
    check_group(
        json!([{"op": "add", "path": "members", "value": [babs]}]),
        Ok((vec![Add(ids(&[BABS]))], vec![])),
    );
    // 3.5.2.2: one member, all members, and replace-all by remove then add
    check_group(
        json!([{"op": "remove", "path": format!("members[value eq \"{BABS}\"]")}]),
        Ok((vec![Remove(ids(&[BABS]))], vec![])),
    );
    check_group(
        json!([{"op": "remove", "path": "members"}]),
        Ok((vec![RemoveAll], vec![])),
    );
    check_group(
        json!([{"op": "remove", "path": "members"}, {"op": "add", "path": "members", "value": [babs, james]}]),
        Ok((vec![RemoveAll, Add(ids(&[BABS, JAMES]))], vec![])),
    );
    // 3.5.2.3
    check_group(
        json!([{"op": "replace", "path": "members", "value": [babs, james]}]),
        Ok((vec![Replace(ids(&[BABS, JAMES]))], vec![])),
    );
}

// ---- IdP tolerances -----------------------------------------------------------------

#[test]
fn tolerances() {
    let mutability = ScimType::Mutability;
    let value = ScimType::InvalidValue;
    let table: Vec<(Value, Expect)> = vec![
        // 1. op names in any case
        (
            json!([{"op": "Replace", "path": "displayName", "value": "B"}]),
            Ok(vec![("/displayName", json!("B"))]),
        ),
        (
            json!([{"op": "ADD", "path": "title", "value": "T"}]),
            Ok(vec![("/title", json!("T"))]),
        ),
        (
            json!([{"op": "Remove", "path": "title"}]),
            Ok(vec![("/title", Value::Null)]),
        ),
        // 2. booleans as strings for boolean attributes only
        (
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            Ok(vec![("/active", json!(false))]),
        ),
        (
            json!([{"op": "Replace", "path": "active", "value": "true"}]),
            Ok(vec![("/active", json!(true))]),
        ),
        (
            json!([{"op": "add", "path": "active", "value": "FALSE"}]),
            Ok(vec![("/active", json!(false))]),
        ),
        (
            json!([{"op": "replace", "value": {"active": "False"}}]),
            Ok(vec![("/active", json!(false))]),
        ),
        (
            json!([{"op": "Replace", "path": "active", "value": "no"}]),
            Err((
                value,
                "operation 1: attribute active: expected a boolean, got the string \"no\"",
            )),
        ),
        (
            json!([{"op": "Replace", "path": "active", "value": 0}]),
            Err((value, "expected a boolean, got a number")),
        ),
        (
            json!([{"op": "Replace", "path": "displayName", "value": true}]),
            Err((value, "expected a string")),
        ),
        // 3. add on a single-valued attribute replaces it
        (
            json!([{"op": "Add", "path": "displayName", "value": "Barbara"}]),
            Ok(vec![("/displayName", json!("Barbara"))]),
        ),
        (
            json!([{"op": "Add", "path": "nickName", "value": "Babs"}]),
            Ok(vec![("/nickName", json!("Babs"))]),
        ),
        // 4. path-less replace (Okta deactivation), id equal ignored, different refused
        (
            json!([{"op": "replace", "value": {"active": false}}]),
            Ok(vec![("/active", json!(false))]),
        ),
        (
            json!([{"op": "replace", "value": {"id": ID, "displayName": "New"}}]),
            Ok(vec![("/displayName", json!("New")), ("/id", Value::Null)]),
        ),
        (
            json!([{"op": "replace", "value": {"id": null, "title": "T"}}]),
            Ok(vec![("/title", json!("T"))]),
        ),
        (
            json!([{"op": "replace", "value": {"id": "other", "displayName": "New"}}]),
            Err((mutability, "id is read-only")),
        ),
        (
            json!([{"op": "replace", "path": "id", "value": ID}]),
            Ok(vec![("/id", Value::Null)]),
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "other"}]),
            Err((mutability, "operation 1: id is read-only")),
        ),
        (
            json!([{"op": "remove", "path": "id"}]),
            Err((mutability, "id is read-only and cannot be removed")),
        ),
        // 5. keys that are paths: sub-attributes, URN-qualified, extension objects, filters
        (
            json!([{"op": "replace", "value": {
                "name.givenName": "Alicia",
                format!("{ENTERPRISE_URN}:employeeNumber"): "1002",
                "urn:ietf:params:scim:schemas:core:2.0:User:title": "Dr",
                "emails[type eq \"work\"].value": "a@x"
            }}]),
            Ok(vec![
                ("/name/givenName", json!("Alicia")),
                ("/name/familyName", json!("Jensen")),
                (ENT_EMPLOYEENUMBER, json!("1002")),
                (ENT_DEPARTMENT, json!("Tour Operations")),
                ("/title", json!("Dr")),
                ("/emails/0/value", json!("a@x")),
            ]),
        ),
        (
            json!([{"op": "add", "value": {ENTERPRISE_URN: {"costCenter": "4130", "manager": {"value": "m1", "displayName": "ro"}}}}]),
            Ok(vec![
                (ENT_COSTCENTER, json!("4130")),
                (ENT_MANAGER, json!({"value": "m1"})),
                (ENT_DEPARTMENT, json!("Tour Operations")),
            ]),
        ),
        // 6. filter paths matching nothing create the value (Entra) ...
        (
            json!([{"op": "Replace", "path": "emails[type eq \"home\"].value", "value": "b@home"}]),
            Ok(vec![
                ("/emails/0/type", json!("work")),
                ("/emails/1", json!({"type": "home", "value": "b@home"})),
            ]),
        ),
        (
            json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-1"}]),
            Ok(vec![("/phoneNumbers", json!([{"type": "mobile", "value": "555-1"}]))]),
        ),
        (
            json!([{"op": "replace", "path": "addresses[type eq \"other\" and country eq \"NL\"].formatted", "value": "Dam 1"}]),
            Ok(vec![(
                "/addresses/2",
                json!({"type": "other", "country": "NL", "formatted": "Dam 1"}),
            )]),
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "b@home", "primary": true}}]),
            Ok(vec![
                ("/emails/1", json!({"type": "home", "value": "b@home", "primary": true})),
                ("/emails/0/primary", json!(false)),
            ]),
        ),
        // ... unless the filter does not say what to create
        (
            json!([{"op": "replace", "path": "emails[value co \"nothing\"].type", "value": "home"}]),
            Err((
                ScimType::NoTarget,
                "operation 1: emails[value co \"nothing\"].type: no value matches the filter",
            )),
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq \"x\" or type eq \"y\"].value", "value": "v"}]),
            Err((ScimType::NoTarget, "no value matches")),
        ),
        // a remove matching nothing does nothing
        (
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
            Ok(vec![("/emails/0/type", json!("work"))]),
        ),
        (
            json!([{"op": "remove", "path": "phoneNumbers[type eq \"other\"]"}]),
            Ok(vec![("/phoneNumbers", Value::Null)]),
        ),
        // 7. read-only attributes inside values are ignored, explicit paths refused
        (
            json!([{"op": "replace", "value": {"meta": {"version": "W/\"9\""}, "groups": [{"value": "g"}], "schemas": ["x"], "title": "T"}}]),
            Ok(vec![
                ("/title", json!("T")),
                ("/meta", Value::Null),
                ("/groups", Value::Null),
            ]),
        ),
        (
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
            Err((mutability, "operation 1: groups is read-only")),
        ),
        (
            json!([{"op": "replace", "path": "meta.lastModified", "value": "2011-05-13T04:42:34Z"}]),
            Err((mutability, "meta.lastModified is read-only")),
        ),
        (
            json!([{"op": "add", "path": format!("{ENTERPRISE_URN}:manager.displayName"), "value": "x"}]),
            Err((mutability, "manager.displayName is read-only")),
        ),
        (
            json!([{"op": "add", "path": "schemas", "value": ["urn:x"]}]),
            Ok(vec![("/schemas/0", json!(USER_URN))]),
        ),
        // 8. schemas follow the extensions present
        (
            json!([{"op": "remove", "path": ENTERPRISE_URN}]),
            Ok(vec![("/schemas", json!([USER_URN])), (ENT, Value::Null)]),
        ),
        (
            json!([{"op": "remove", "path": format!("{ENTERPRISE_URN}:department")}, {"op": "remove", "path": format!("{ENTERPRISE_URN}:employeeNumber")}]),
            Ok(vec![("/schemas", json!([USER_URN])), (ENT, Value::Null)]),
        ),
        // 10. attributes in no schema are ignored
        (
            json!([{"op": "add", "path": "favoriteColor", "value": "blue"}]),
            Ok(vec![("/favoriteColor", Value::Null)]),
        ),
        (
            json!([{"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:Custom:2.0:User:shoeSize": 42, "title": "T"}}]),
            Ok(vec![("/title", json!("T"))]),
        ),
        (
            json!([{"op": "add", "path": "name.nickname", "value": "x"}]),
            Ok(vec![("/name/nickname", Value::Null)]),
        ),
        (
            json!([{"op": "remove", "path": "emails[type eq \"work\"].label"}]),
            Ok(vec![("/emails/0/value", json!("bjensen@example.com"))]),
        ),
        // 11. remove with a value removes just those values (Entra)
        (
            json!([{"op": "add", "path": "emails", "value": [{"value": "b@home", "type": "home"}]},
                   {"op": "Remove", "path": "emails", "value": [{"value": "BJENSEN@example.com"}]}]),
            Ok(vec![("/emails", json!([{"value": "b@home", "type": "home"}]))]),
        ),
        // Entra's remove of a filtered sub-attribute carrying a value
        (
            json!([{"op": "Remove", "path": "emails[type eq \"work\"].value", "value": "bjensen@example.com"}]),
            Ok(vec![("/emails", json!([{"type": "work", "primary": true}]))]),
        ),
        // Entra's manager: an array of one reference for a single-valued complex attribute
        (
            json!([{"op": "Add", "path": "manager", "value": [{"$ref": "https://x/Users/m1", "value": "m1"}]}]),
            Ok(vec![(
                ENT_MANAGER,
                json!({"$ref": "https://x/Users/m1", "value": "m1"}),
            )]),
        ),
        (
            json!([{"op": "Add", "path": format!("{ENTERPRISE_URN}:department"), "value": "Engineering"}]),
            Ok(vec![(ENT_DEPARTMENT, json!("Engineering"))]),
        ),
    ];
    for (ops, expected) in table {
        check(ops, expected);
    }
}

#[test]
fn semantics() {
    let table: Vec<(Value, Expect)> = vec![
        // add to multi-valued appends, skipping identical values
        (
            json!([{"op": "add", "path": "emails", "value": [{"value": "bjensen@example.com", "type": "work", "primary": true}, {"value": "b@x"}]}]),
            Ok(vec![("/emails/1", json!({"value": "b@x"})), ("/emails/2", Value::Null)]),
        ),
        (
            json!([{"op": "add", "path": "emails", "value": {"value": "b@x", "primary": true}}]),
            Ok(vec![
                ("/emails/0/primary", json!(false)),
                ("/emails/1/primary", json!(true)),
            ]),
        ),
        // primary moves to the value set primary
        (
            json!([{"op": "add", "path": "addresses[type eq \"home\"].primary", "value": true}]),
            Ok(vec![
                ("/addresses/0/primary", json!(false)),
                ("/addresses/1/primary", json!(true)),
            ]),
        ),
        (
            json!([{"op": "replace", "path": "addresses", "value": [{"type": "a", "primary": true}, {"type": "b", "primary": true}]}]),
            Ok(vec![
                ("/addresses/0/primary", json!(true)),
                ("/addresses/1/primary", json!(false)),
            ]),
        ),
        // add/replace on a complex single-valued attribute merges
        (
            json!([{"op": "add", "path": "name", "value": {"middleName": "Jane"}}]),
            Ok(vec![(
                "/name",
                json!({"givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane"}),
            )]),
        ),
        (
            json!([{"op": "replace", "path": "name", "value": {"givenName": "B"}}]),
            Ok(vec![("/name", json!({"givenName": "B", "familyName": "Jensen"}))]),
        ),
        // add with a filter merges into matching values
        (
            json!([{"op": "add", "path": "addresses[type eq \"home\"]", "value": {"region": "NY"}}]),
            Ok(vec![
                ("/addresses/1/region", json!("NY")),
                ("/addresses/1/streetAddress", json!("456 Hollywood Blvd")),
            ]),
        ),
        // sub-attribute of every value, without filter
        (
            json!([{"op": "replace", "path": "addresses.country", "value": "US"}]),
            Ok(vec![
                ("/addresses/0/country", json!("US")),
                ("/addresses/1/country", json!("US")),
            ]),
        ),
        (
            json!([{"op": "add", "path": "ims.value", "value": "aim1"}]),
            Ok(vec![("/ims", json!([{"value": "aim1"}]))]),
        ),
        (
            json!([{"op": "remove", "path": "addresses.region"}]),
            Ok(vec![
                ("/addresses/0/region", Value::Null),
                ("/addresses/1/locality", json!("Hollywood")),
            ]),
        ),
        // removals
        (
            json!([{"op": "remove", "path": "name.givenName"}]),
            Ok(vec![("/name", json!({"familyName": "Jensen"}))]),
        ),
        (
            json!([{"op": "remove", "path": "name.givenName"}, {"op": "remove", "path": "name.familyName"}]),
            Ok(vec![("/name", Value::Null)]),
        ),
        (
            json!([{"op": "remove", "path": "addresses"}]),
            Ok(vec![("/addresses", Value::Null)]),
        ),
        (
            json!([{"op": "remove", "path": "addresses[type eq \"home\"].region"}]),
            Ok(vec![
                ("/addresses/1/region", Value::Null),
                ("/addresses/0/region", json!("CA")),
            ]),
        ),
        (
            json!([{"op": "remove", "path": "title"}]),
            Ok(vec![("/title", Value::Null)]),
        ),
        (
            json!([{"op": "remove", "path": "userName"}]),
            Err((
                ScimType::Mutability,
                "attribute userName is required and cannot be removed",
            )),
        ),
        (
            json!([{"op": "replace", "path": "userName", "value": null}]),
            Err((ScimType::Mutability, "userName is required")),
        ),
        // replace with [] or null clears
        (
            json!([{"op": "replace", "path": "emails", "value": []}]),
            Ok(vec![("/emails", Value::Null)]),
        ),
        (
            json!([{"op": "replace", "path": "displayName", "value": null}]),
            Ok(vec![("/displayName", Value::Null)]),
        ),
        (
            json!([{"op": "add", "path": "emails", "value": []}]),
            Ok(vec![("/emails/0/type", json!("work"))]),
        ),
        // the whole extension by URN
        (
            json!([{"op": "replace", "path": ENTERPRISE_URN, "value": {"department": "R&D"}}]),
            Ok(vec![
                (ENT_DEPARTMENT, json!("R&D")),
                (ENT_EMPLOYEENUMBER, json!("701984")),
            ]),
        ),
        (
            json!([{"op": "add", "path": ENTERPRISE_URN, "value": "x"}]),
            Err((ScimType::InvalidValue, "expected an object of attributes")),
        ),
        // wrong shapes and paths
        (
            json!([{"op": "replace", "path": "emails", "value": "b@x"}]),
            Err((ScimType::InvalidValue, "emails[0]: expected a complex value")),
        ),
        (
            json!([{"op": "replace", "path": "name", "value": "B"}]),
            Err((ScimType::InvalidValue, "attribute name: expected a complex value")),
        ),
        (
            json!([{"op": "replace", "path": "displayName[value eq \"x\"]", "value": "y"}]),
            Err((
                ScimType::InvalidPath,
                "a value filter needs a multi-valued complex attribute",
            )),
        ),
        (
            json!([{"op": "replace", "path": "name[givenName eq \"x\"]", "value": {}}]),
            Err((ScimType::InvalidPath, "needs a multi-valued complex")),
        ),
        (
            json!([{"op": "add", "path": "emails[type eq \"work\"].value", "value": 5}]),
            Err((ScimType::InvalidValue, "expected a string")),
        ),
        // atomicity: a later failing operation undoes the earlier ones
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"}, {"op": "replace", "path": "active", "value": "maybe"}]),
            Err((ScimType::InvalidValue, "operation 2: attribute active")),
        ),
        // case of stored keys does not matter
        (
            json!([{"op": "replace", "path": "DISPLAYNAME", "value": "X"}]),
            Ok(vec![("/displayName", json!("X"))]),
        ),
        (
            json!([{"op": "replace", "path": "emails[TYPE eq \"WORK\"].VALUE", "value": "X"}]),
            Ok(vec![("/emails/0/value", json!("X"))]),
        ),
    ];
    for (ops, expected) in table {
        check(ops, expected);
    }
}

#[test]
fn group_members() {
    use MemberEdit::{Add, Remove, RemoveWhere, Replace};
    let value = ScimType::InvalidValue;
    let filter = |s: &str| parse_filter(s).unwrap_or_else(|e| panic!("{e}"));
    let table: Vec<(Value, GroupExpect)> = vec![
        // Okta: rename with the group's id, then add, in one request
        (
            json!([{"op": "replace", "value": {"id": GID, "displayName": "es-admins"}},
                   {"op": "add", "path": "members", "value": [{"value": "u1", "display": "Bob"}]}]),
            Ok((
                vec![Add(ids(&["u1"]))],
                vec![("/displayName", json!("es-admins")), ("/id", Value::Null)],
            )),
        ),
        (
            json!([{"op": "replace", "value": {"id": "another", "displayName": "x"}}]),
            Err((ScimType::Mutability, "id is read-only")),
        ),
        // Okta: remove by filter and re-add; the empty push
        (
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}, {"op": "add", "path": "members", "value": [{"value": "u1"}]}]),
            Ok((vec![Remove(ids(&["u1"])), Add(ids(&["u1"]))], vec![])),
        ),
        (
            json!([{"op": "replace", "path": "members", "value": []}]),
            Ok((vec![Replace(vec![])], vec![])),
        ),
        // Entra: $ref null; removal with a value array is never "remove all"
        (
            json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}]}]),
            Ok((vec![Add(ids(&["u1"]))], vec![])),
        ),
        (
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]),
            Ok((vec![Remove(ids(&["u1", "u2"]))], vec![])),
        ),
        (
            json!([{"op": "Remove", "path": "members", "value": []}]),
            Ok((vec![], vec![])),
        ),
        (
            json!([{"op": "Remove", "path": "members", "value": {"value": "u1"}}]),
            Ok((vec![Remove(ids(&["u1"]))], vec![])),
        ),
        // filters: value eq (or an or of them) becomes ids, anything else a filter
        (
            json!([{"op": "remove", "path": "members[value eq \"a\" or value eq \"b\" or VALUE eq \"c\"]"}]),
            Ok((vec![Remove(ids(&["a", "b", "c"]))], vec![])),
        ),
        (
            json!([{"op": "remove", "path": "members[display co \"x\"]"}]),
            Ok((vec![RemoveWhere(filter("display co \"x\""))], vec![])),
        ),
        (
            json!([{"op": "remove", "path": "members[value eq \"a\" and type eq \"User\"]"}]),
            Ok((vec![RemoveWhere(filter("value eq \"a\" and type eq \"User\""))], vec![])),
        ),
        (
            json!([{"op": "remove", "path": "members[type eq \"Group\" or value eq \"b\"]"}]),
            Ok((vec![RemoveWhere(filter("type eq \"Group\" or value eq \"b\""))], vec![])),
        ),
        // path-less add and replace with members
        (
            json!([{"op": "add", "value": {"members": [{"value": "a"}, {"value": "b"}, {"value": "a"}]}}]),
            Ok((vec![Add(ids(&["a", "b"]))], vec![])),
        ),
        (
            json!([{"op": "replace", "value": {"displayName": "n", "members": []}}]),
            Ok((vec![Replace(vec![])], vec![("/displayName", json!("n"))])),
        ),
        (
            json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members", "value": [{"value": "a"}]}]),
            Ok((vec![Add(ids(&["a"]))], vec![])),
        ),
        (
            json!([{"op": "add", "path": "members", "value": []}]),
            Ok((vec![], vec![])),
        ),
        // malformed members
        (
            json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]),
            Err((value, "members[0]: each member must be an object with a string value")),
        ),
        (
            json!([{"op": "add", "path": "members", "value": ["u1"]}]),
            Err((value, "members[0]")),
        ),
        (
            json!([{"op": "add", "path": "members", "value": [{"value": 5}]}]),
            Err((value, "members[0]")),
        ),
        (
            json!([{"op": "add", "path": "members", "value": "u1"}]),
            Err((value, "expected an array")),
        ),
        (
            json!([{"op": "replace", "value": {"members": [{"value": null}]}}]),
            Err((value, "members[0]")),
        ),
        // member paths that make no sense
        (
            json!([{"op": "add", "path": "members[value eq \"x\"]", "value": {"value": "y"}}]),
            Err((ScimType::InvalidPath, "only for remove")),
        ),
        (
            json!([{"op": "remove", "path": "members[value eq \"x\"].display"}]),
            Err((ScimType::InvalidPath, "sub-attributes cannot be patched")),
        ),
        (
            json!([{"op": "replace", "path": "members.value", "value": "x"}]),
            Err((ScimType::InvalidPath, "sub-attributes cannot be patched")),
        ),
        // group attributes
        (
            json!([{"op": "Replace", "path": "displayName", "value": "es-readers-2"}]),
            Ok((vec![], vec![("/displayName", json!("es-readers-2"))])),
        ),
        (
            json!([{"op": "remove", "path": "displayName"}]),
            Err((ScimType::Mutability, "displayName is required")),
        ),
        (
            json!([{"op": "add", "path": "members", "value": [{"value": "a"}]}, {"op": "remove", "path": "displayName"}]),
            Err((
                ScimType::Mutability,
                "attribute displayName is required and cannot be removed",
            )),
        ),
    ];
    for (ops, expected) in table {
        check_group(ops, expected);
    }
}

#[test]
fn outcome() {
    let s = schemas();
    let us = s.resource(ResourceKind::User);
    // A no-op PATCH succeeds and says so.
    let mut doc = user_doc();
    let ops = parse_patch(&body(json!([
        {"op": "replace", "path": "active", "value": "True"},
        {"op": "add", "path": "emails", "value": [{"value": "bjensen@example.com", "type": "work", "primary": true}]},
        {"op": "remove", "path": "title"},
        {"op": "remove", "path": "emails[type eq \"other\"]"},
        {"op": "add", "path": "favoriteColor", "value": "blue"},
        {"op": "replace", "value": {"id": ID, "meta": {}, "name.familyName": "Jensen"}}
    ])))
    .unwrap_or_else(|e| panic!("{e}"));
    let outcome = apply_patch(&mut doc, &ops, us, ID).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        outcome,
        PatchOutcome {
            changed: false,
            members: vec![],
            ignored: vec!["favoriteColor".into()]
        }
    );
    assert_eq!(doc, user_doc());
    // A change says so, and schemas are recomputed (here: added).
    let mut doc = obj(json!({"userName": "x"}));
    let ops = parse_patch(&body(json!([{"op": "add", "path": "department", "value": "R&D"}])))
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = apply_patch(&mut doc, &ops, us, ID).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.changed);
    assert_eq!(
        Value::Object(doc),
        json!({"schemas": [USER_URN, ENTERPRISE_URN], "userName": "x", ENTERPRISE_URN: {"department": "R&D"}})
    );
    // Member edits count as changes.
    let mut doc = group_doc();
    let ops = parse_patch(&body(json!([{"op": "remove", "path": "members"}]))).unwrap_or_else(|e| panic!("{e}"));
    let outcome = apply_patch(&mut doc, &ops, s.resource(ResourceKind::Group), GID).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.changed);
    assert_eq!(doc, group_doc());
}

// ---- parsing -------------------------------------------------------------------------

/// Parses a PatchOp body: the number of operations, or the error.
fn check_parse(input: Value, expected: ParseExpect) {
    match (parse_patch(&input), expected) {
        (Ok(ops), Ok(n)) => assert_eq!(ops.len(), n, "{input}"),
        (Err(e), Err((kind, detail))) => {
            assert_eq!((e.status, e.scim_type), (400, Some(kind)), "{input}: {e}");
            assert!(e.detail.contains(detail), "{input}: {:?} lacks {detail:?}", e.detail);
        }
        (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn parsing() {
    let syntax = ScimType::InvalidSyntax;
    let add = json!({"op": "add", "path": "title", "value": "T"});
    let table: Vec<(Value, ParseExpect)> = vec![
        (body(json!([add, add])), Ok(2)),
        (json!({"Operations": [add]}), Ok(1)),
        (json!({"schemas": PATCH_OP_URN, "operations": [add]}), Ok(1)),
        (
            json!({"SCHEMAS": [PATCH_OP_URN.to_uppercase()], "OPERATIONS": [add]}),
            Ok(1),
        ),
        (body(json!([{"Op": "Add", "Path": "title", "Value": "T"}])), Ok(1)),
        (body(json!([{"op": "add", "value": [{"title": "T"}]}])), Ok(1)),
        (
            body(json!([{"op": "remove", "path": "members", "value": [{"value": "x"}]}])),
            Ok(1),
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [add]}),
            Err((syntax, "must list urn:ietf:params:scim:api:messages:2.0:PatchOp")),
        ),
        (json!([add]), Err((syntax, "must be a JSON object"))),
        (
            json!({"schemas": [PATCH_OP_URN]}),
            Err((syntax, "needs an Operations array")),
        ),
        (
            json!({"schemas": [PATCH_OP_URN], "Operations": add}),
            Err((syntax, "Operations must be an array")),
        ),
        (body(json!([])), Err((syntax, "Operations must not be empty"))),
        (
            body(json!(["add"])),
            Err((syntax, "operation 1: an operation must be a JSON object")),
        ),
        (
            body(json!([add, {"path": "title", "value": "T"}])),
            Err((syntax, "operation 2: op must be add, replace or remove")),
        ),
        (
            body(json!([{"op": "copy", "path": "title", "value": "T"}])),
            Err((syntax, "op must be add, replace or remove, not \"copy\"")),
        ),
        (
            body(json!([{"op": "add", "path": "title"}])),
            Err((syntax, "operation 1: add needs a value")),
        ),
        (
            body(json!([{"op": "replace", "value": "T"}])),
            Err((syntax, "replace without a path needs an object of attributes")),
        ),
        (
            body(json!([{"op": "remove"}])),
            Err((ScimType::NoTarget, "operation 1: remove needs a path")),
        ),
        (
            body(json!([{"op": "remove", "path": ""}])),
            Err((ScimType::NoTarget, "remove needs a path")),
        ),
        (
            body(json!([{"op": "add", "path": 5, "value": 1}])),
            Err((ScimType::InvalidPath, "path must be a string")),
        ),
        (
            body(json!([{"op": "add", "path": "a b", "value": 1}])),
            Err((ScimType::InvalidPath, "operation 1: invalid path at byte 2")),
        ),
        (
            body(json!([{"op": "remove", "path": "emails[type eq]"}])),
            Err((
                ScimType::InvalidFilter,
                "operation 1: invalid path at byte 14: expected a value",
            )),
        ),
    ];
    for (input, expected) in table {
        check_parse(input, expected);
    }
    let ops = parse_patch(&body(
        json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x"}]),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ops.first().map(|o| (o.op, o.path.as_ref().map(ToString::to_string))),
        Some((Op::Replace, Some("emails[type eq \"work\"].value".into())))
    );
}

// ---- scale and robustness -------------------------------------------------------------------

#[test]
fn large_member_lists_are_linear() {
    let s = schemas();
    let gs = s.resource(ResourceKind::Group);
    let members: Vec<Value> = (0..100_000)
        .map(|i| json!({"value": format!("user-{i}"), "display": "x"}))
        .collect();
    let started = Instant::now();
    let ops = parse_patch(&body(json!([
        {"op": "add", "path": "members", "value": members},
        {"op": "Remove", "path": "members", "value": members},
        {"op": "replace", "value": {"members": members}}
    ])))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut doc = group_doc();
    let outcome = apply_patch(&mut doc, &ops, gs, GID).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.members.len(), 3);
    assert!(outcome.members.iter().all(|m| match m {
        MemberEdit::Add(v) | MemberEdit::Remove(v) | MemberEdit::Replace(v) => v.len() == 100_000,
        _ => false,
    }));
    // Adding many values to a user's multi-valued attribute dedupes in linear time too.
    let emails: Vec<Value> = (0..20_000)
        .map(|i| json!({"value": format!("u{}@x", i % 10_000)}))
        .collect();
    let ops =
        parse_patch(&body(json!([{"op": "add", "path": "emails", "value": emails}]))).unwrap_or_else(|e| panic!("{e}"));
    let mut doc = user_doc();
    apply_patch(&mut doc, &ops, s.resource(ResourceKind::User), ID).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.get("emails").and_then(Value::as_array).map(Vec::len), Some(10_001));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

use crate::test_util::Rng;

const PATHS: &[&str] = &[
    "",
    "members",
    "members[value eq \"u1\"]",
    "members[display co \"x\"]",
    "members[value eq \"a\" or value eq \"b\"]",
    "members.value",
    "displayName",
    "userName",
    "active",
    "emails",
    "emails[type eq \"work\"]",
    "emails[type eq \"work\"].value",
    "emails[value co \"x\"].type",
    "emails.primary",
    "name",
    "name.givenName",
    "addresses[type eq \"home\"].streetAddress",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    "manager.value",
    "department",
    "id",
    "meta",
    "groups",
    "schemas",
    "externalId",
    "favoriteColor",
    "emails[",
    "a b",
    "roles",
    "x509Certificates.value",
];

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let leaf = |rng: &mut Rng| match rng.below(8) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!("True"),
        3 => json!(rng.below(1000)),
        4 => json!("u1"),
        5 => json!("2011-05-13T04:42:34Z"),
        6 => json!(""),
        _ => json!(rng.pick(PATHS)),
    };
    if depth == 0 {
        return leaf(rng);
    }
    match rng.below(4) {
        0 => leaf(rng),
        1 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                let key = rng.pick(&[
                    "value",
                    "type",
                    "primary",
                    "display",
                    "$ref",
                    "givenName",
                    "id",
                    "members",
                    "active",
                    "emails",
                    "name.givenName",
                    "department",
                    "x",
                ]);
                m.insert(key.to_owned(), random_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

#[test]
fn fuzz_smoke() {
    let s = schemas();
    let mut rng = Rng::new(0x00de_c0de_5c1a);
    let started = Instant::now();
    let (mut ok, mut err) = (0, 0);
    for i in 0..3000 {
        let ops: Vec<Value> = (0..=rng.below(4))
            .map(|_| {
                let mut op = Map::new();
                op.insert(
                    "op".into(),
                    json!(rng.pick(&["add", "Replace", "remove", "REMOVE", "copy"])),
                );
                let path = rng.pick(PATHS);
                if !path.is_empty() {
                    op.insert("path".into(), json!(path));
                }
                if rng.below(4) != 0 {
                    op.insert("value".into(), random_value(&mut rng, 3));
                }
                Value::Object(op)
            })
            .collect();
        let request = if i % 50 == 0 {
            random_value(&mut rng, 4)
        } else {
            body(Value::Array(ops))
        };
        let Ok(parsed) = parse_patch(&request) else {
            err += 1;
            continue;
        };
        for (kind, original) in [(ResourceKind::User, user_doc()), (ResourceKind::Group, group_doc())] {
            let mut doc = original.clone();
            match apply_patch(&mut doc, &parsed, s.resource(kind), ID) {
                Ok(_) => {
                    ok += 1;
                    assert!(doc.get("schemas").is_some_and(Value::is_array), "{request}");
                }
                Err(e) => {
                    err += 1;
                    assert_eq!(e.status, 400, "{request}: {e}");
                    assert_eq!(doc, original, "{request}: a failed PATCH must not change the document");
                }
            }
        }
    }
    assert!(
        ok > 100 && err > 100,
        "the generator should produce both: {ok} applied, {err} refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
