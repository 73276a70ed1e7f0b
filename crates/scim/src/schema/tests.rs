//! Tests for schemas: custom schema validation, attribute lookup,
//! discovery documents, and the write normalizer with the payloads IdPs
//! send (Entra ID, Okta, OneLogin templates).

use serde_json::{Map, Value, json};

use super::*;

const ACME: &str = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";
const ACME_GROUP: &str = "urn:acme:scim:GroupExtra";

fn attr(name: &str, ty: CustomType) -> CustomAttribute {
    CustomAttribute {
        name: name.into(),
        ty,
        multi_valued: false,
        required: false,
        case_exact: false,
    }
}

fn custom() -> Vec<CustomSchema> {
    vec![
        CustomSchema {
            id: ACME.into(),
            name: "AcmeUser".into(),
            resource: ResourceKind::User,
            attributes: vec![
                attr("badge", CustomType::Integer),
                attr("score", CustomType::Decimal),
                attr("hired", CustomType::DateTime),
                CustomAttribute {
                    multi_valued: true,
                    ..attr("tags", CustomType::String)
                },
                attr("isContractor", CustomType::Boolean),
                attr("homepage", CustomType::Reference),
                CustomAttribute {
                    case_exact: true,
                    ..attr("costCode", CustomType::String)
                },
            ],
        },
        CustomSchema {
            id: ACME_GROUP.into(),
            name: "AcmeGroup".into(),
            resource: ResourceKind::Group,
            attributes: vec![CustomAttribute {
                required: true,
                ..attr("owner", CustomType::String)
            }],
        },
    ]
}

fn schemas() -> Schemas {
    Schemas::new(&custom()).unwrap_or_else(|e| panic!("custom schemas: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

// ---- custom schema validation ------------------------------------------------------

fn check_custom(schema: CustomSchema, expected: Result<(), SchemaError>) {
    let got = Schemas::new(std::slice::from_ref(&schema)).map(|_| ());
    assert_eq!(got, expected, "{schema:?}");
    if let Err(e) = got {
        let text = e.to_string();
        assert!(text.starts_with("custom schema ") && !text.ends_with('.'), "{text}");
    }
}

#[test]
fn custom_schema_validation() {
    let base = CustomSchema {
        id: ACME.into(),
        name: "Acme".into(),
        resource: ResourceKind::User,
        attributes: vec![attr("badge", CustomType::Integer)],
    };
    let with_id = |id: &str| CustomSchema {
        id: id.into(),
        ..base.clone()
    };
    let with_attr = |name: &str| CustomSchema {
        attributes: vec![attr(name, CustomType::String)],
        ..base.clone()
    };
    let invalid = |id: &str| Err(SchemaError::InvalidUrn { id: id.into() });
    let table: Vec<(CustomSchema, Result<(), SchemaError>)> = vec![
        (base.clone(), Ok(())),
        (with_id("urn:acme:User"), Ok(())),
        (with_id("URN:acme:v1:Person"), Ok(())),
        (with_id("acme:User"), invalid("acme:User")),
        (with_id("urn:"), invalid("urn:")),
        (with_id("urn:acme:User:"), invalid("urn:acme:User:")),
        (with_id("urn:acme:v1.2"), invalid("urn:acme:v1.2")),
        (with_id("urn:acme user:User"), invalid("urn:acme user:User")),
        (with_id("urn:acme:\"User\""), invalid("urn:acme:\"User\"")),
        (
            with_id("https://acme.example/User"),
            invalid("https://acme.example/User"),
        ),
        (with_id(USER_URN), Err(SchemaError::Clash { id: USER_URN.into() })),
        (
            with_id("URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER"),
            Err(SchemaError::Clash {
                id: "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER".into(),
            }),
        ),
        (
            with_id("urn:ietf:params:scim:schemas:core:2.0:User:extra"),
            Err(SchemaError::Clash {
                id: "urn:ietf:params:scim:schemas:core:2.0:User:extra".into(),
            }),
        ),
        (
            CustomSchema {
                name: "  ".into(),
                ..base.clone()
            },
            Err(SchemaError::EmptyName { id: ACME.into() }),
        ),
        (
            with_attr("1st"),
            Err(SchemaError::InvalidAttributeName {
                id: ACME.into(),
                name: "1st".into(),
            }),
        ),
        (
            with_attr("has space"),
            Err(SchemaError::InvalidAttributeName {
                id: ACME.into(),
                name: "has space".into(),
            }),
        ),
        (
            with_attr("a.b"),
            Err(SchemaError::InvalidAttributeName {
                id: ACME.into(),
                name: "a.b".into(),
            }),
        ),
        (
            with_attr(""),
            Err(SchemaError::InvalidAttributeName {
                id: ACME.into(),
                name: "".into(),
            }),
        ),
        (with_attr("cost-center_2"), Ok(())),
        (
            CustomSchema {
                attributes: vec![attr("badge", CustomType::String), attr("BADGE", CustomType::Integer)],
                ..base.clone()
            },
            Err(SchemaError::DuplicateAttribute {
                id: ACME.into(),
                name: "BADGE".into(),
            }),
        ),
    ];
    for (schema, expected) in table {
        check_custom(schema, expected);
    }
    // Two custom schemas with one id clash with each other.
    let twice = Schemas::new(&[base.clone(), with_id(&ACME.to_uppercase())]);
    assert!(matches!(twice, Err(SchemaError::Clash { .. })), "{twice:?}");
}

#[test]
fn custom_schemas_deserialize_from_configuration() {
    let parsed: CustomSchema = serde_json::from_value(json!({
        "id": ACME,
        "name": "Acme",
        "resource": "User",
        "attributes": [
            {"name": "badge", "type": "integer"},
            {"name": "hired", "type": "dateTime", "required": true},
            {"name": "tags", "type": "string", "multi_valued": true, "case_exact": true}
        ]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.attributes.len(), 3);
    assert_eq!(
        parsed.attributes.get(1).map(|a| (a.ty, a.required)),
        Some((CustomType::DateTime, true))
    );
    let unknown: Result<CustomSchema, _> =
        serde_json::from_value(json!({"id": ACME, "name": "A", "resource": "User", "attributes": [], "x": 1}));
    assert!(unknown.is_err());
}

// ---- lookup ----------------------------------------------------------------------------

/// Looks `path` up in the User (or Group) schema: `Some((attribute,
/// sub-attribute, extension))`.
type Found = Option<(&'static str, Option<&'static str>, Option<&'static str>)>;

fn check_lookup(kind: ResourceKind, path: &str, expected: Found) {
    let s = schemas();
    let got = s.resource(kind).lookup(path).map(|r| {
        (
            r.def.attr.name.as_str(),
            r.sub.map(|a| a.name.as_str()),
            r.def.extension.map(|e| e.id.as_str()),
        )
    });
    assert_eq!(got, expected, "lookup {path:?} in {kind:?}");
}

#[test]
fn lookup() {
    use ResourceKind::{Group, User};
    let table: &[(ResourceKind, &str, Found)] = &[
        (User, "userName", Some(("userName", None, None))),
        (User, "USERNAME", Some(("userName", None, None))),
        (User, "name.givenName", Some(("name", Some("givenName"), None))),
        (User, "Name.GivenName", Some(("name", Some("givenName"), None))),
        (User, "emails.value", Some(("emails", Some("value"), None))),
        (User, "groups.$ref", Some(("groups", Some("$ref"), None))),
        (
            User,
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            Some(("userName", None, None)),
        ),
        (
            User,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            Some(("manager", Some("value"), Some(ENTERPRISE_URN))),
        ),
        (
            User,
            "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:department",
            Some(("department", None, Some(ENTERPRISE_URN))),
        ),
        // unqualified extension attributes (Entra's `manager`)
        (User, "manager", Some(("manager", None, Some(ENTERPRISE_URN)))),
        (User, "badge", Some(("badge", None, Some(ACME)))),
        (User, &format!("{ACME}:tags"), Some(("tags", None, Some(ACME)))),
        // common attributes and `schemas`
        (User, "id", Some(("id", None, None))),
        (User, "meta.lastModified", Some(("meta", Some("lastModified"), None))),
        (User, "externalId", Some(("externalId", None, None))),
        (User, "schemas", Some(("schemas", None, None))),
        (Group, "members.value", Some(("members", Some("value"), None))),
        (
            Group,
            "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
            Some(("displayName", None, None)),
        ),
        (Group, "owner", Some(("owner", None, Some(ACME_GROUP)))),
        // unknown
        (User, "favoriteColor", None),
        (User, "name.nonsense", None),
        (User, "urn:ietf:params:scim:schemas:core:2.0:Group:displayName", None),
        (User, "urn:x:department", None),
        (Group, "userName", None),
        (Group, "manager", None),
        (User, "a b", None),
        (User, "", None),
    ];
    for (kind, path, expected) in table {
        check_lookup(*kind, path, *expected);
    }
    let s = schemas();
    let us = s.resource(User);
    let whole = |p: &str| us.whole_extension(&crate::filter::AttrPath::parse(p).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(whole(ENTERPRISE_URN).map(|e| e.id.as_str()), Some(ENTERPRISE_URN));
    assert_eq!(
        whole(&ENTERPRISE_URN.to_lowercase()).map(|e| e.id.as_str()),
        Some(ENTERPRISE_URN)
    );
    assert_eq!(
        whole(&format!("{ENTERPRISE_URN}:department")).map(|e| e.id.as_str()),
        None
    );
    assert_eq!(whole(USER_URN).map(|e| e.id.as_str()), None);
}

// ---- discovery -------------------------------------------------------------------------

#[test]
fn discovery_documents() {
    let s = schemas();
    let base = "https://access.example.com/scim/v2";
    let all = s.schemas_json(base);
    let ids: Vec<&str> = all.iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(ids, [USER_URN, ENTERPRISE_URN, GROUP_URN, ACME, ACME_GROUP]);
    for v in &all {
        assert_eq!(v["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"]));
        assert_eq!(v["meta"]["resourceType"], "Schema");
        let id = v["id"].as_str().unwrap_or_default();
        assert_eq!(v["meta"]["location"], json!(format!("{base}/Schemas/{id}")));
    }

    let user = s
        .schema_json(&USER_URN.to_uppercase(), &format!("{base}/"))
        .unwrap_or_else(|| panic!("user schema"));
    assert_eq!(user["name"], "User");
    assert_eq!(user["meta"]["location"], json!(format!("{base}/Schemas/{USER_URN}")));
    let attribute = |name: &str| -> Value {
        user["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("attribute {name}"))
    };
    let user_name = attribute("userName");
    assert_eq!(
        (
            &user_name["type"],
            &user_name["required"],
            &user_name["caseExact"],
            &user_name["uniqueness"],
            &user_name["mutability"],
            &user_name["returned"],
            &user_name["multiValued"],
        ),
        (
            &json!("string"),
            &json!(true),
            &json!(false),
            &json!("server"),
            &json!("readWrite"),
            &json!("default"),
            &json!(false)
        )
    );
    assert!(user_name.get("subAttributes").is_none() && user_name.get("referenceTypes").is_none());
    let password = attribute("password");
    assert_eq!(
        (&password["mutability"], &password["returned"]),
        (&json!("writeOnly"), &json!("never"))
    );
    let emails = attribute("emails");
    assert_eq!(emails["multiValued"], true);
    let subs: Vec<&str> = emails["subAttributes"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(subs, ["value", "display", "type", "primary"]);
    assert_eq!(
        emails["subAttributes"][2]["canonicalValues"],
        json!(["work", "home", "other"])
    );
    let groups = attribute("groups");
    assert_eq!(groups["mutability"], "readOnly");
    assert_eq!(groups["subAttributes"][1]["referenceTypes"], json!(["Group"]));
    assert_eq!(attribute("active")["type"], "boolean");
    assert_eq!(attribute("profileUrl")["referenceTypes"], json!(["external"]));
    // common attributes are not part of any schema (RFC 7643 3.1)
    assert!(
        user["attributes"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["name"] != "id"))
    );

    let enterprise = s
        .schema_json(ENTERPRISE_URN, base)
        .unwrap_or_else(|| panic!("enterprise"));
    assert_eq!(enterprise["attributes"][5]["name"], "manager");
    assert_eq!(
        enterprise["attributes"][5]["subAttributes"][2]["mutability"],
        "readOnly"
    );
    let group = s.schema_json(GROUP_URN, base).unwrap_or_else(|| panic!("group"));
    assert_eq!(group["attributes"][1]["subAttributes"][0]["mutability"], "immutable");
    let acme = s.schema_json(ACME, base).unwrap_or_else(|| panic!("acme"));
    assert_eq!(
        acme["attributes"][2],
        json!({
            "name": "hired", "type": "dateTime", "multiValued": false,
            "description": "Custom attribute from the Portcullis configuration.",
            "required": false, "caseExact": false, "mutability": "readWrite", "returned": "default", "uniqueness": "none"
        })
    );
    assert!(s.schema_json("urn:nope", base).is_none());

    let types = s.resource_types_json(base);
    assert_eq!(
        types,
        vec![
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": "User", "name": "User", "endpoint": "/Users", "description": "User Account",
                "schema": USER_URN,
                "schemaExtensions": [{"schema": ENTERPRISE_URN, "required": false}, {"schema": ACME, "required": false}],
                "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
            }),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": "Group", "name": "Group", "endpoint": "/Groups", "description": "Group",
                "schema": GROUP_URN,
                "schemaExtensions": [{"schema": ACME_GROUP, "required": false}],
                "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
            }),
        ]
    );
    // Without custom schemas: the built-ins only.
    let plain = Schemas::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.schemas_json(base).len(), 3);
    assert_eq!(plain.resource_types_json(base)[1]["schemaExtensions"], json!([]));
}

// ---- normalize_write -------------------------------------------------------------------

/// Normalizes `input` for `kind`: the output document and the ignored
/// attributes, or the error's scimType and part of its detail.
fn check(kind: ResourceKind, input: Value, expected: Result<(Value, &[&str]), (ScimType, &str)>) {
    let s = schemas();
    let shown = input.to_string();
    match (normalize_write(kind, &s, obj(input)), expected) {
        (Ok((doc, warnings)), Ok((want, want_warnings))) => {
            assert_eq!(Value::Object(doc), want, "normalize {shown}");
            assert_eq!(warnings, want_warnings, "warnings of {shown}");
        }
        (Err(e), Err((kind, detail))) => {
            assert_eq!((e.status, e.scim_type), (400, Some(kind)), "{shown}: {e}");
            assert!(e.detail.contains(detail), "{shown}: {:?} lacks {detail:?}", e.detail);
        }
        (got, want) => panic!("normalize {shown}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn normalize_idp_payloads() {
    use ResourceKind::{Group, User};
    // Entra ID's POST /Users (meta, roles: [], the enterprise URN listed).
    check(
        User,
        json!({
            "schemas": [USER_URN, ENTERPRISE_URN],
            "externalId": "alice",
            "userName": "alice@contoso.com",
            "active": true,
            "displayName": "Alice Liddell",
            "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Alice Liddell", "familyName": "Liddell", "givenName": "Alice"},
            "roles": [],
            ENTERPRISE_URN: {"department": "Research", "employeeNumber": "1001"}
        }),
        Ok((
            json!({
                "schemas": [USER_URN, ENTERPRISE_URN],
                "externalId": "alice",
                "userName": "alice@contoso.com",
                "active": true,
                "displayName": "Alice Liddell",
                "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
                "name": {"formatted": "Alice Liddell", "familyName": "Liddell", "givenName": "Alice"},
                ENTERPRISE_URN: {"department": "Research", "employeeNumber": "1001"}
            }),
            &[],
        )),
    );
    // Okta's POST /Users (groups: [] and a password).
    check(
        User,
        json!({
            "schemas": [USER_URN],
            "userName": "bob@example.com",
            "name": {"givenName": "Bob", "familyName": "Builder"},
            "emails": [{"primary": true, "value": "bob@example.com", "type": "work"}],
            "displayName": "Bob Builder",
            "locale": "en-US",
            "externalId": "00u1abcd",
            "groups": [],
            "password": "1mP0ssible!",
            "active": true
        }),
        Ok((
            json!({
                "schemas": [USER_URN],
                "userName": "bob@example.com",
                "name": {"givenName": "Bob", "familyName": "Builder"},
                "emails": [{"primary": true, "value": "bob@example.com", "type": "work"}],
                "displayName": "Bob Builder",
                "locale": "en-US",
                "externalId": "00u1abcd",
                "password": "1mP0ssible!",
                "active": true
            }),
            &[],
        )),
    );
    // A OneLogin template: string boolean, "id": null, SCIM 1.x URN.
    check(
        User,
        json!({"schemas": ["urn:scim:schemas:core:1.0"], "id": null, "userName": "carol", "active": "false"}),
        Ok((
            json!({"schemas": [USER_URN], "userName": "carol", "active": false}),
            &[],
        )),
    );
    // Okta's GET-modify-PUT: everything the server returned comes back.
    check(
        User,
        json!({
            "schemas": [USER_URN],
            "id": "2819c223",
            "userName": "bob",
            "groups": [{"value": "g1", "display": "Admins", "type": "direct"}],
            "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z", "version": "W/\"2\""}
        }),
        Ok((json!({"schemas": [USER_URN], "userName": "bob"}), &[])),
    );
    // Entra's POST /Groups with its ADSCIM URN, and members kept for the caller.
    check(
        Group,
        json!({
            "schemas": [GROUP_URN, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "es-readers",
            "members": [{"$ref": null, "value": "u1"}, {"value": "u2", "display": "Bob"}]
        }),
        Ok((
            json!({
                "schemas": [GROUP_URN],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "es-readers",
                "members": [{"value": "u1"}, {"value": "u2"}]
            }),
            &[],
        )),
    );
    // An Okta AIW group PUT without schemas.
    check(
        Group,
        json!({"displayName": "es-admins", "members": []}),
        Ok((json!({"schemas": [GROUP_URN], "displayName": "es-admins"}), &[])),
    );
}

#[test]
fn normalize_rules() {
    use ResourceKind::{Group, User};
    type Case = (
        ResourceKind,
        Value,
        Result<(Value, &'static [&'static str]), (ScimType, &'static str)>,
    );
    let ok = |v: Value| -> Result<(Value, &'static [&'static str]), (ScimType, &'static str)> { Ok((v, &[])) };
    let value = ScimType::InvalidValue;
    let table: Vec<Case> = vec![
        // names get their schema case
        (
            User,
            json!({"USERNAME": "b", "Name": {"GIVENNAME": "B"}, "EMAILS": [{"VALUE": "b@x", "Primary": "TRUE"}]}),
            ok(
                json!({"schemas": [USER_URN], "userName": "b", "name": {"givenName": "B"}, "emails": [{"value": "b@x", "primary": true}]}),
            ),
        ),
        // extension attributes: nested, flattened, unqualified, any URN case
        (
            User,
            json!({"userName": "b", format!("{ENTERPRISE_URN}:department"): "R&D", "costCenter": "42",
                   format!("{ENTERPRISE_URN}:manager.value"): "m1"}),
            ok(json!({"schemas": [USER_URN, ENTERPRISE_URN], "userName": "b",
                      ENTERPRISE_URN: {"department": "R&D", "costCenter": "42", "manager": {"value": "m1"}}})),
        ),
        (
            User,
            json!({"userName": "b", ENTERPRISE_URN.to_uppercase(): {"DEPARTMENT": "x", "manager": {"value": "m", "displayName": "ro"}}}),
            ok(
                json!({"schemas": [USER_URN, ENTERPRISE_URN], "userName": "b", ENTERPRISE_URN: {"department": "x", "manager": {"value": "m"}}}),
            ),
        ),
        (
            User,
            json!({"userName": "b", ENTERPRISE_URN: {}}),
            ok(json!({"schemas": [USER_URN], "userName": "b"})),
        ),
        (
            User,
            json!({"userName": "b", ENTERPRISE_URN: "x"}),
            Err((value, "expected an object, got a string")),
        ),
        // dotted keys, merged with the complex value
        (
            User,
            json!({"userName": "b", "name.givenName": "B", "name": {"familyName": "J"}}),
            ok(json!({"schemas": [USER_URN], "userName": "b", "name": {"givenName": "B", "familyName": "J"}})),
        ),
        // booleans: JSON or a string in any case
        (
            User,
            json!({"userName": "b", "active": "True"}),
            ok(json!({"schemas": [USER_URN], "userName": "b", "active": true})),
        ),
        (
            User,
            json!({"userName": "b", "active": "FALSE"}),
            ok(json!({"schemas": [USER_URN], "userName": "b", "active": false})),
        ),
        (
            User,
            json!({"userName": "b", "active": "yes"}),
            Err((value, "attribute active: expected a boolean, got the string \"yes\"")),
        ),
        (
            User,
            json!({"userName": "b", "active": 1}),
            Err((value, "attribute active: expected a boolean, got a number")),
        ),
        (
            User,
            json!({"userName": 5}),
            Err((value, "attribute userName: expected a string, got a number")),
        ),
        // integers, decimals, dateTimes, references
        (
            User,
            json!({"userName": "b", ACME: {"badge": 42, "score": 4.5, "hired": "2024-02-29T12:00:00+01:00", "homepage": "https://x"}}),
            ok(
                json!({"schemas": [USER_URN, ACME], "userName": "b", ACME: {"badge": 42, "score": 4.5, "hired": "2024-02-29T12:00:00+01:00", "homepage": "https://x"}}),
            ),
        ),
        (
            User,
            json!({"userName": "b", "hired": "2024-02-29T12:00:00"}),
            ok(json!({"schemas": [USER_URN, ACME], "userName": "b", ACME: {"hired": "2024-02-29T12:00:00"}})),
        ),
        (
            User,
            json!({"userName": "b", "badge": 4.5}),
            Err((value, "attribute badge: expected an integer, got a number")),
        ),
        (
            User,
            json!({"userName": "b", "badge": "42"}),
            Err((value, "expected an integer, got a string")),
        ),
        (
            User,
            json!({"userName": "b", "score": "4.5"}),
            Err((value, "expected a decimal number")),
        ),
        (
            User,
            json!({"userName": "b", "hired": "2024-02-30T12:00:00Z"}),
            Err((value, "\"2024-02-30T12:00:00Z\" is not an RFC 3339 date-time")),
        ),
        (
            User,
            json!({"userName": "b", "hired": "yesterday"}),
            Err((value, "is not an RFC 3339 date-time")),
        ),
        (
            User,
            json!({"userName": "b", "profileUrl": false}),
            Err((value, "attribute profileUrl: expected a string")),
        ),
        // multi-valued shapes
        (
            User,
            json!({"userName": "b", "emails": {"value": "b@x"}, "tags": "one"}),
            ok(
                json!({"schemas": [USER_URN, ACME], "userName": "b", "emails": [{"value": "b@x"}], ACME: {"tags": ["one"]}}),
            ),
        ),
        (
            User,
            json!({"userName": "b", "emails": "b@x"}),
            Err((
                value,
                "attribute emails[0]: expected a complex value (an object), got a string",
            )),
        ),
        (
            User,
            json!({"userName": "b", "emails": [{"value": 5}]}),
            Err((value, "attribute emails[0].value: expected a string")),
        ),
        (
            User,
            json!({"userName": "b", "name": "Bob"}),
            Err((value, "attribute name: expected a complex value")),
        ),
        (
            User,
            json!({"userName": "b", "emails": [null, {}]}),
            ok(json!({"schemas": [USER_URN], "userName": "b"})),
        ),
        // single-valued given an array: one element is unwrapped
        (
            User,
            json!({"userName": ["b"], "displayName": []}),
            ok(json!({"schemas": [USER_URN], "userName": "b"})),
        ),
        (
            User,
            json!({"userName": "b", "displayName": ["x", "y"]}),
            Err((value, "attribute displayName: is single-valued but got an array")),
        ),
        (
            User,
            json!({"userName": "b", "manager": [{"value": "m", "$ref": "../Users/m"}]}),
            ok(
                json!({"schemas": [USER_URN, ENTERPRISE_URN], "userName": "b", ENTERPRISE_URN: {"manager": {"value": "m", "$ref": "../Users/m"}}}),
            ),
        ),
        // null, {} and [] are unassigned
        (
            User,
            json!({"userName": "b", "title": null, "name": {"givenName": null}, "roles": []}),
            ok(json!({"schemas": [USER_URN], "userName": "b"})),
        ),
        // at most one primary: the first keeps it
        (
            User,
            json!({"userName": "b", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": "true"}, {"value": "c", "primary": false}]}),
            ok(
                json!({"schemas": [USER_URN], "userName": "b", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": false}, {"value": "c", "primary": false}]}),
            ),
        ),
        // required attributes
        (
            User,
            json!({"displayName": "b"}),
            Err((value, "attribute userName is required")),
        ),
        (
            User,
            json!({"userName": null}),
            Err((value, "attribute userName is required")),
        ),
        (
            Group,
            json!({"members": []}),
            Err((value, "attribute displayName is required")),
        ),
        (
            Group,
            json!({"displayName": "g", ACME_GROUP: {"x": 1}}),
            Ok((
                json!({"schemas": [GROUP_URN], "displayName": "g"}),
                &["urn:acme:scim:GroupExtra:x"],
            )),
        ),
        (
            Group,
            json!({"displayName": "g", ACME_GROUP: {"owner": "o"}}),
            ok(json!({"schemas": [GROUP_URN, ACME_GROUP], "displayName": "g", ACME_GROUP: {"owner": "o"}})),
        ),
        // schemas
        (
            User,
            json!({"schemas": 5, "userName": "b"}),
            Err((ScimType::InvalidSyntax, "schemas must be an array of schema URIs")),
        ),
        (
            User,
            json!({"schemas": [ENTERPRISE_URN], "userName": "b"}),
            ok(json!({"schemas": [USER_URN], "userName": "b"})),
        ),
        // read-only, write-only
        (
            User,
            json!({"userName": "b", "id": "x", "meta": {}, "groups": [{"value": "g"}], "password": "p"}),
            ok(json!({"schemas": [USER_URN], "userName": "b", "password": "p"})),
        ),
        (
            Group,
            json!({"displayName": "g", "members": [{"value": "u", "type": "User", "$ref": "../Users/u"}]}),
            ok(
                json!({"schemas": [GROUP_URN], "displayName": "g", "members": [{"value": "u", "type": "User", "$ref": "../Users/u"}]}),
            ),
        ),
    ];
    for (kind, input, expected) in table {
        check(kind, input, expected);
    }
}

#[test]
fn normalize_reports_unknown_attributes() {
    check(
        ResourceKind::User,
        json!({
            "userName": "b",
            "favoriteColor": "blue",
            "emails": [{"value": "b@x", "label": "x"}],
            "name.nickname": "n",
            "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:shoeSize": 42,
            ENTERPRISE_URN: {"building": "B1"},
            "emails.value": "x",
            "weird key!": 1,
            "userName.sub": "x"
        }),
        Ok((
            json!({"schemas": [USER_URN], "userName": "b", "emails": [{"value": "b@x"}]}),
            &[
                "emails[0].label",
                "emails.value",
                "favoriteColor",
                "name.nickname",
                "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:shoeSize",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:building",
                "userName.sub",
                "weird key!",
            ],
        )),
    );
}

#[test]
fn datetimes() {
    let table: &[(&str, bool)] = &[
        ("2011-05-13T04:42:34Z", true),
        ("2011-05-13T04:42:34.123456789Z", true),
        ("2011-05-13T04:42:34+02:00", true),
        ("2011-05-13T04:42:34", true),
        ("2011-05-13T04:42:34.5", true),
        ("2011-05-13", false),
        ("2011-05-13T04:42", false),
        ("2011-13-13T04:42:34Z", false),
        ("", false),
        ("not a date", false),
    ];
    for (s, ok) in table {
        assert_eq!(parse_datetime(s).is_some(), *ok, "{s:?}");
    }
}

#[test]
fn stored_documents_are_the_default_view() {
    // The list fast path (`render::write_user`) depends on this; should a
    // schema ever return an attribute only on request, it must turn false.
    let s = schemas();
    for kind in [ResourceKind::User, ResourceKind::Group] {
        assert!(s.resource(kind).default_view_is_stored(), "{kind:?}");
    }
    let mut with_request_only = s.resource(ResourceKind::User).clone();
    if let Some(a) = with_request_only
        .extensions
        .first_mut()
        .and_then(|e| e.attributes.first_mut())
    {
        a.returned = Returned::Request;
    }
    assert!(!with_request_only.default_view_is_stored());
}
