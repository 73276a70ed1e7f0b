//! Resources as SCIM JSON: a directory user or group plus the attributes
//! the service computes (`id`, `meta`, a user's `groups`, a group's
//! `members`).
//!
//! What this does not do: projection (`attributes`, `excludedAttributes`),
//! which `filter::project` applies to the result.

use portcullis_directory::{Directory, Group, MemberKind, Meta, User};
use serde_json::{Map, Value, json};
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

fn meta_json(resource_type: &str, meta: &Meta, location: String) -> Value {
    let time = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    json!({
        "resourceType": resource_type,
        "created": time(meta.created),
        "lastModified": time(meta.last_modified),
        "location": location,
        "version": etag(meta),
    })
}

/// The full representation of a user, with its groups (direct and
/// inherited through nested groups).
pub fn user_json(directory: &Directory, user: &User, urls: &Urls) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(&*user.id));
    for (k, v) in user.doc() {
        out.insert(k, v);
    }
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
    json!({"value": &*g.id, "$ref": urls.group(&g.id), "display": g.display_name(), "type": kind})
}

/// The full representation of a group. Members are listed only when
/// `with_members` (a group may have 100,000 of them, and Entra ID asks for
/// groups with `excludedAttributes=members`).
pub fn group_json(directory: &Directory, group: &Group, urls: &Urls, with_members: bool) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(&*group.id));
    for (k, v) in group.doc() {
        out.insert(k, v);
    }
    if with_members {
        let members: Vec<Value> = directory
            .members_of(&group.id)
            .into_iter()
            .map(|m| match m.kind {
                MemberKind::User => json!({"value": &*m.id, "$ref": urls.user(&m.id), "type": "User"}),
                MemberKind::Group => json!({"value": &*m.id, "$ref": urls.group(&m.id), "type": "Group"}),
            })
            .collect();
        out.insert("members".into(), Value::Array(members));
    }
    out.insert("meta".into(), meta_json("Group", &group.meta, urls.group(&group.id)));
    Value::Object(out)
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
