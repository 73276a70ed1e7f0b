//! Fuzz target for `patch`: the input is read as JSON; a PatchOp request
//! that parses is applied to a fixed user document and a fixed group
//! document. A failed PATCH must leave the document untouched and be a
//! 400; a successful one must leave a `schemas` array. The JSON is also
//! fed to `normalize_write` as a POST body.
//!
//! What it does not check: that the result is the right one (the unit tests
//! do).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_scim::patch::{apply_patch, parse_patch};
use portcullis_scim::schema::{ResourceKind, Schemas, normalize_write};
use serde_json::{Map, Value, json};

static SCHEMAS: LazyLock<Option<Schemas>> = LazyLock::new(|| Schemas::new(&[]).ok());

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

static DOCS: LazyLock<Vec<(ResourceKind, Map<String, Value>)>> = LazyLock::new(|| {
    vec![
        (
            ResourceKind::User,
            object(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "userName": "bjensen",
                "name": {"givenName": "Barbara", "familyName": "Jensen"},
                "active": true,
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza"}, {"type": "home", "locality": "Hollywood"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tours", "manager": {"value": "m1"}}
            })),
        ),
        (
            ResourceKind::Group,
            object(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Guides"})),
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let (Ok(body), Some(schemas)) = (serde_json::from_slice::<Value>(data), SCHEMAS.as_ref()) else {
        return;
    };
    if let Ok(ops) = parse_patch(&body) {
        for (kind, original) in DOCS.iter() {
            let mut doc = original.clone();
            match apply_patch(&mut doc, &ops, schemas.resource(*kind), "2819c223") {
                Ok(_) => assert!(doc.get("schemas").is_some_and(Value::is_array)),
                Err(e) => {
                    assert_eq!(e.status, 400, "{e}");
                    assert_eq!(&doc, original, "a failed PATCH changed the document");
                }
            }
        }
    }
    if let Value::Object(m) = body {
        let _ = normalize_write(ResourceKind::User, schemas, m.clone());
        let _ = normalize_write(ResourceKind::Group, schemas, m);
    }
});
