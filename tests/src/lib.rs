//! Shared helpers for Portcullis's integration tests.
//!
//! The tests themselves live in `tests/` of this package: each file is one
//! area (crash safety, concurrency, ...). Helper binaries that tests run as
//! real child processes live in `src/bin/`.

use serde_json::{Map, Value};

/// A JSON object from a `json!` literal; panics on anything else, which in a
/// test is a bug in the test.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}
