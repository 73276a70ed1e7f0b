//! Fuzz target for `filter`: any UTF-8 input goes through `parse_filter`;
//! a filter that parses is evaluated against fixed users and a group,
//! validated, asked for index hints, and printed and parsed back (which
//! must give the same filter). The input also goes through `parse_path` and
//! `parse_attr_list` (then `project` and `sort_key`).
//!
//! What it checks: no panic, no stack overflow, no quadratic blow-up (run
//! with `-timeout`), and the round trip. It does not check evaluation
//! results (the unit tests do).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_scim::filter::{parse_attr_list, parse_filter, parse_path, project, sort_key};
use portcullis_scim::schema::{ResourceKind, Schemas};
use serde_json::{Value, json};

static SCHEMAS: LazyLock<Option<Schemas>> = LazyLock::new(|| Schemas::new(&[]).ok());

static RESOURCES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "2819c223", "externalId": "701984", "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}, {"value": "babs@jensen.org", "type": "home"}],
            "active": true, "title": "Tour Guide",
            "groups": [{"value": "g1", "display": "Guides", "type": "direct"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tours", "manager": {"value": "m1"}},
            "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z", "lastModified": "2011-05-13T04:42:34Z", "version": "W/\"1\""}
        }),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "n0", "userName": "nobody", "emails": "odd"}),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1", "displayName": "Guides",
            "members": [{"value": "2819c223", "type": "User"}, {"value": "g2", "type": "Group"}]
        }),
        json!(null),
    ]
});

fuzz_target!(|data: &[u8]| {
    let (Ok(input), Some(schemas)) = (std::str::from_utf8(data), SCHEMAS.as_ref()) else {
        return;
    };
    let users = schemas.resource(ResourceKind::User);
    let groups = schemas.resource(ResourceKind::Group);
    if let Ok(f) = parse_filter(input) {
        for r in RESOURCES.iter() {
            f.matches(r, users);
            f.matches(r, groups);
        }
        let _ = f.validate(users);
        let _ = f.validate(groups);
        let _ = f.candidate_equalities();
        let _ = f.equality_lookup();
        // The canonical form adds parentheses, so it may exceed the nesting
        // limit; when it parses, it is the same filter.
        if let Ok(again) = parse_filter(&f.to_string()) {
            assert_eq!(again, f, "round trip of {input:?}");
        }
    }
    if let Ok(p) = parse_path(input) {
        assert!(
            parse_path(&p.to_string()).is_ok() || p.filter.is_some(),
            "path round trip of {input:?}"
        );
    }
    if let Ok(list) = parse_attr_list(input) {
        for r in RESOURCES.iter() {
            project(r, users, Some(&list), None);
            project(r, groups, None, Some(&list));
            for p in &list {
                sort_key(r, p, users);
            }
        }
    }
});
