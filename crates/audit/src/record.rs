//! [`Fields`]: a record's own fields, already in their JSON form.
//!
//! A record is built on the caller's thread and crosses to the writer
//! thread as one buffer. A map of owned strings would cost an allocation
//! per key and per value on a proxy worker, each freed on the writer
//! thread (measured on the proxy benchmark: the allocator's cross-thread
//! frees and the map's inserts were most of what the audit trail cost).
//!
//! The buffer holds `,"key":value` pairs; the writer puts them between its
//! own `seq`/`time` and `prev`. Keys are written as given, except that
//! `seq`, `time` and `prev` get a `_` prefix, so a caller can never pass for
//! the writer. Keys are not checked for duplicates: each caller names its
//! fields once ([`From<Map>`](Fields#impl-From<Map<String,+Value>>-for-Fields)
//! renames collisions until unique, as maps allow any key).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::fields::{PREV, SEQ, TIME};

/// A record's fields, serialized as they are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    json: Vec<u8>,
}

impl Fields {
    /// No fields yet, with room for `bytes` of JSON.
    pub fn with_capacity(bytes: usize) -> Fields {
        Fields {
            json: Vec::with_capacity(bytes),
        }
    }

    /// The pairs written so far (`,"key":value...`).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    fn key(&mut self, key: &str) {
        self.json.push(b',');
        if key == SEQ || key == TIME || key == PREV {
            let _ = serde_json::to_writer(&mut self.json, &format!("_{key}"));
        } else {
            let _ = serde_json::to_writer(&mut self.json, key);
        }
        self.json.push(b':');
    }

    /// Adds `key` with any serializable value. A value that cannot be
    /// serialized (a map with non-string keys) is written as `null`.
    pub fn add(&mut self, key: &str, value: &(impl Serialize + ?Sized)) -> &mut Fields {
        let start = self.json.len();
        self.key(key);
        let at = self.json.len();
        if serde_json::to_writer(&mut self.json, value).is_err() {
            self.json.truncate(at);
            self.json.extend_from_slice(b"null");
        }
        debug_assert!(self.json.len() > start);
        self
    }

    /// Adds `key` with a string value, or `null`.
    pub fn str(&mut self, key: &str, value: Option<&str>) -> &mut Fields {
        self.add(key, &value)
    }

    /// Adds `key` with a list of strings.
    pub fn strs<'a>(&mut self, key: &str, values: impl IntoIterator<Item = &'a str>) -> &mut Fields {
        self.key(key);
        self.json.push(b'[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.json.push(b',');
            }
            let _ = serde_json::to_writer(&mut self.json, v);
        }
        self.json.push(b']');
        self
    }
}

impl From<Map<String, Value>> for Fields {
    /// The map's fields in the order it yields them; a key that collides
    /// with a writer field is prefixed with `_` as many times as needed to
    /// be unique in the record.
    fn from(map: Map<String, Value>) -> Fields {
        let mut fields = Fields::with_capacity(32 * map.len());
        for (key, value) in &map {
            if key == SEQ || key == TIME || key == PREV {
                let mut renamed = format!("_{key}");
                while map.contains_key(&renamed) {
                    renamed.insert(0, '_');
                }
                // `renamed` starts with `_`, so `add` keeps it as it is.
                fields.add(&renamed, value);
            } else {
                fields.add(key, value);
            }
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(f: &Fields) -> Map<String, Value> {
        let text = format!("{{\"w\":0{}}}", String::from_utf8_lossy(f.as_bytes()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn fields_are_json_pairs_in_the_order_added() {
        let mut f = Fields::default();
        f.str("user", Some("al\"ice\n"))
            .str("route", None)
            .add("status", &403)
            .add("total_ms", &1.25)
            .strs("roles", ["a", "b\\c"])
            .strs("none", []);
        let o = object(&f);
        assert_eq!(
            Value::Object(o.clone()),
            json!({"w": 0, "user": "al\"ice\n", "route": null, "status": 403, "total_ms": 1.25, "roles": ["a", "b\\c"], "none": []})
        );
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        assert!(keys.contains(&"roles"));
    }

    #[test]
    fn writer_fields_cannot_be_passed_for() {
        let mut f = Fields::default();
        f.add("seq", &1).add("time", &"t").add("prev", &"p");
        let o = object(&f);
        assert_eq!(o.get("_seq"), Some(&json!(1)));
        assert_eq!(o.get("_time"), Some(&json!("t")));
        assert_eq!(o.get("_prev"), Some(&json!("p")));
        assert!(!o.contains_key("seq") && !o.contains_key("prev"));
    }

    #[test]
    fn maps_convert_with_collisions_renamed_until_unique() {
        let map = match json!({"seq": 9, "_seq": 8, "user": "u"}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let o = object(&Fields::from(map));
        assert_eq!(o.get("__seq"), Some(&json!(9)));
        assert_eq!(o.get("_seq"), Some(&json!(8)));
        assert_eq!(o.get("user"), Some(&json!("u")));
    }
}
