//! Resources as SCIM JSON: a directory user or group plus the attributes
//! the service computes (`id`, `meta`, a user's `groups`, a group's
//! `members`).
//!
//! What this does not do: projection (`attributes`, `excludedAttributes`),
//! which `filter::project` applies to the result.

use portcullis_directory::{Directory, Group, MemberKind, Meta, User};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

/// Where resources live, for `meta.location`, `$ref` and `Location`.
#[derive(Debug, Clone)]
pub struct Urls {
    /// The SCIM base URL, e.g. `https://access.example.com/scim/v2`.
    pub base: String,
}

impl Urls {
    pub fn user(&self, id: &str) -> String {
        format!("{}/Users/{id}", self.base)
    }

    pub fn group(&self, id: &str) -> String {
        format!("{}/Groups/{id}", self.base)
    }
}

/// The weak entity tag of a resource version (also its `meta.version`).
pub fn etag(meta: &Meta) -> String {
    format!("W/\"{}\"", meta.version)
}

/// Parses an `If-Match`/`If-None-Match` entity tag into a version; `*`
/// gives `None` (any version).
pub fn parse_etag(tag: &str) -> Option<Option<u64>> {
    let tag = tag.trim();
    if tag == "*" {
        return Some(None);
    }
    let inner = tag.strip_prefix("W/").unwrap_or(tag);
    inner.trim_matches('"').parse().ok().map(Some)
}

/// A JSON object from owned parts. Rendering is on every read's path, and
/// `json!` would serialize each value into a copy.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut out = Map::with_capacity(N);
    for (k, v) in fields {
        out.insert(k.to_string(), v);
    }
    Value::Object(out)
}

fn meta_json(resource_type: &str, meta: &Meta, location: String) -> Value {
    let time = |t: time::OffsetDateTime| Value::String(t.format(&Rfc3339).unwrap_or_default());
    object([
        ("resourceType", resource_type.into()),
        ("created", time(meta.created)),
        ("lastModified", time(meta.last_modified)),
        ("location", location.into()),
        ("version", etag(meta).into()),
    ])
}

/// The full representation of a user, with its groups (direct and
/// inherited through nested groups).
pub fn user_json(directory: &Directory, user: &User, urls: &Urls) -> Value {
    // The stored document is the resource minus what is computed here;
    // it never holds `id`, `meta`, `groups` or `members`.
    let mut out = user.doc();
    out.insert("id".into(), Value::from(&*user.id));
    let direct = directory.direct_groups_of(&user.id);
    let mut groups: Vec<Value> = direct.iter().map(|g| group_ref(g, "direct", urls)).collect();
    if let Some(p) = directory.principal(&user.id) {
        for g in p.groups.iter().filter(|g| !direct.iter().any(|d| d.id == g.id)) {
            groups.push(group_ref(g, "indirect", urls));
        }
    }
    if !groups.is_empty() {
        out.insert("groups".into(), Value::Array(groups));
    }
    out.insert("meta".into(), meta_json("User", &user.meta, urls.user(&user.id)));
    Value::Object(out)
}

fn group_ref(g: &Group, kind: &str, urls: &Urls) -> Value {
    object([
        ("value", Value::from(&*g.id)),
        ("$ref", urls.group(&g.id).into()),
        ("display", g.display_name().into()),
        ("type", kind.into()),
    ])
}

/// The full representation of a group. Members are listed only when
/// `with_members` (a group may have 100,000 of them, and Entra ID asks for
/// groups with `excludedAttributes=members`).
pub fn group_json(directory: &Directory, group: &Group, urls: &Urls, with_members: bool) -> Value {
    // The stored document is the resource minus what is computed here;
    // it never holds `id`, `meta`, `groups` or `members`.
    let mut out = group.doc();
    out.insert("id".into(), Value::from(&*group.id));
    if with_members {
        let members: Vec<Value> = directory
            .members_of(&group.id)
            .into_iter()
            .map(|m| {
                let (url, kind) = match m.kind {
                    MemberKind::User => (urls.user(&m.id), "User"),
                    MemberKind::Group => (urls.group(&m.id), "Group"),
                };
                object([
                    ("value", Value::from(&*m.id)),
                    ("$ref", url.into()),
                    ("type", kind.into()),
                ])
            })
            .collect();
        out.insert("members".into(), Value::Array(members));
    }
    out.insert("meta".into(), meta_json("Group", &group.meta, urls.group(&group.id)));
    Value::Object(out)
}

/// Writes the full representation of a user as JSON text, straight from
/// the stored document: the resource [`user_json`] builds, without parsing
/// the document into a map and serializing it again. Reads are the hot
/// path of provisioning (every IdP looks a user up before it writes), and
/// this halves their cost.
///
/// The text equals [`user_json`]'s value only where the default projection
/// keeps every stored attribute; the caller checks that with
/// [`crate::schema::ResourceSchema::default_view_is_stored`].
pub fn write_user(out: &mut Vec<u8>, directory: &Directory, user: &User, urls: &Urls) {
    open_with_doc(out, user.doc_json());
    key(out, "id");
    string(out, &user.id);
    let direct = directory.direct_groups_of(&user.id);
    let principal = directory.principal(&user.id);
    let indirect = principal
        .iter()
        .flat_map(|p| p.groups.iter())
        .filter(|g| !direct.iter().any(|d| d.id == g.id));
    let mut refs = direct
        .iter()
        .map(|g| (g, "direct"))
        .chain(indirect.map(|g| (g, "indirect")))
        .peekable();
    if refs.peek().is_some() {
        key(out, "groups");
        out.push(b'[');
        for (i, (g, kind)) in refs.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_ref(out, &g.id, &urls.group(&g.id), Some(g.display_name()), kind);
        }
        out.push(b']');
    }
    write_meta(out, "User", &user.meta, &urls.user(&user.id));
    out.push(b'}');
}

/// [`group_json`] as text, as [`write_user`] is to [`user_json`].
pub fn write_group(out: &mut Vec<u8>, directory: &Directory, group: &Group, urls: &Urls, with_members: bool) {
    open_with_doc(out, group.doc_json());
    key(out, "id");
    string(out, &group.id);
    if with_members {
        key(out, "members");
        out.push(b'[');
        for (i, m) in directory.members_of(&group.id).into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (url, kind) = match m.kind {
                MemberKind::User => (urls.user(&m.id), "User"),
                MemberKind::Group => (urls.group(&m.id), "Group"),
            };
            write_ref(out, &m.id, &url, None, kind);
        }
        out.push(b']');
    }
    write_meta(out, "Group", &group.meta, &urls.group(&group.id));
    out.push(b'}');
}

/// A reference to a resource: a user's group or a group's member.
fn write_ref(out: &mut Vec<u8>, id: &str, url: &str, display: Option<&str>, kind: &str) {
    out.extend_from_slice(b"{\"value\":");
    string(out, id);
    out.extend_from_slice(b",\"$ref\":");
    string(out, url);
    if let Some(display) = display {
        out.extend_from_slice(b",\"display\":");
        string(out, display);
    }
    out.extend_from_slice(b",\"type\":");
    string(out, kind);
    out.push(b'}');
}

/// `{` and the stored document's members. A stored document is a JSON
/// object written by `serde_json` (compact, never holding `id`, `meta`,
/// `groups` or `members`: `schema::normalize_write` drops read-only
/// attributes), so its members can be spliced in as they are.
fn open_with_doc(out: &mut Vec<u8>, doc: &str) {
    out.push(b'{');
    let inner = doc
        .trim()
        .strip_prefix('{')
        .and_then(|d| d.strip_suffix('}'))
        .map(str::trim)
        .unwrap_or_default();
    out.extend_from_slice(inner.as_bytes());
    // The next member always follows with a comma; `key` adds it.
    if inner.is_empty() {
        out.push(b' ');
    }
}

/// `,"name":`, or `"name":` right after the opening brace.
fn key(out: &mut Vec<u8>, name: &str) {
    match out.last() {
        Some(b' ') => {
            out.pop();
        }
        _ => out.push(b','),
    }
    string(out, name);
    out.push(b':');
}

/// A JSON string, escaped by `serde_json` (writing into a `Vec` cannot fail).
fn string(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

fn write_meta(out: &mut Vec<u8>, resource_type: &str, meta: &Meta, location: &str) {
    key(out, "meta");
    out.extend_from_slice(b"{\"resourceType\":");
    string(out, resource_type);
    for (name, t) in [("created", meta.created), ("lastModified", meta.last_modified)] {
        out.push(b',');
        string(out, name);
        out.extend_from_slice(b":\"");
        // An RFC 3339 timestamp needs no escaping; a year outside it gives
        // an empty string, as in `meta_json`.
        let mark = out.len();
        if t.format_into(&mut *out, &Rfc3339).is_err() {
            out.truncate(mark);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b",\"location\":");
    string(out, location);
    out.extend_from_slice(b",\"version\":");
    string(out, &etag(meta));
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag("W/\"3\""), Some(Some(3)));
        assert_eq!(parse_etag("\"3\""), Some(Some(3)));
        assert_eq!(parse_etag(" * "), Some(None));
        assert_eq!(parse_etag("W/\"x\""), None);
    }
}
