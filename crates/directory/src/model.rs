//! The identity model: users, groups, memberships and the [`Principal`] the
//! proxy authorizes.
//!
//! Resources are immutable snapshots behind `Arc`: a change builds a new
//! value and swaps it into the cache, so a reader holding an `Arc<User>` never
//! sees a half-applied update. This module knows nothing about SCIM wire
//! format beyond the handful of attributes the directory indexes: the rest of
//! a resource is an opaque JSON object (`doc`) that the SCIM layer owns.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::DirectoryError;
use crate::key::{Key, key_of};

/// A resource id, or the name of the SCIM client that owns a resource.
///
/// `Arc<str>` so that the many maps and membership sets that mention an id
/// share one allocation and clone without copying.
pub type Id = Arc<str>;

/// Resource metadata kept by the directory (SCIM `meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    /// Incremented on every change of the resource, including a change of a
    /// group's members. The SCIM layer derives `meta.version` and `ETag`.
    pub version: u64,
}

impl Meta {
    pub(crate) fn new(now: OffsetDateTime) -> Self {
        Meta {
            created: now,
            last_modified: now,
            version: 1,
        }
    }

    pub(crate) fn bumped(&self, now: OffsetDateTime) -> Self {
        Meta {
            created: self.created,
            last_modified: now.max(self.last_modified),
            version: self.version + 1,
        }
    }
}

/// A user as provisioned by a SCIM client.
///
/// `doc` is the canonical attribute document (everything but `id`, `meta` and
/// the computed `groups`). The typed fields are derived from it once, when
/// the value is built, so they can never disagree with it.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: Id,
    key: Key,
    /// The SCIM client that created the user; only it may see or change it.
    pub owner: Id,
    pub meta: Meta,
    user_name: Box<str>,
    external_id: Option<Box<str>>,
    display_name: Option<Box<str>>,
    active: bool,
    emails: Box<[Box<str>]>,
    doc: Box<str>,
}

impl User {
    /// Builds a user from its attribute document, checking the attributes the
    /// directory relies on. `active` defaults to true when absent.
    pub fn new(id: Id, owner: Id, meta: Meta, doc: Map<String, Value>) -> Result<Self, DirectoryError> {
        let key = id_key(&id)?;
        let user_name = required_string(&doc, "userName")?;
        let external_id = optional_string(&doc, "externalId")?;
        let display_name = optional_string(&doc, "displayName")?;
        let active = match doc.get("active") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid("active", format!("expected a boolean, got {}", kind(other))));
            }
        };
        let emails = match doc.get("emails") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut emails = Vec::with_capacity(items.len());
                for item in items {
                    match item.get("value") {
                        Some(Value::String(v)) if !v.is_empty() => emails.push(v.to_lowercase().into_boxed_str()),
                        None | Some(Value::Null) => {}
                        Some(other) => {
                            return Err(invalid(
                                "emails.value",
                                format!("expected a string, got {}", kind(other)),
                            ));
                        }
                    }
                }
                emails
            }
            Some(other) => return Err(invalid("emails", format!("expected an array, got {}", kind(other)))),
        };
        Ok(User {
            id,
            key,
            owner,
            meta,
            user_name,
            external_id,
            display_name,
            active,
            emails: emails.into_boxed_slice(),
            doc: Value::Object(doc).to_string().into_boxed_str(),
        })
    }

    /// Rebuilds a user from a document this directory wrote earlier, reading
    /// only the indexed attributes instead of the whole document.
    pub(crate) fn from_stored(id: Id, owner: Id, meta: Meta, doc_json: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Email<'a> {
            #[serde(borrow, default)]
            value: Option<Cow<'a, str>>,
        }
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            #[serde(rename = "userName", borrow)]
            user_name: Cow<'a, str>,
            #[serde(rename = "externalId", borrow, default)]
            external_id: Option<Cow<'a, str>>,
            #[serde(rename = "displayName", borrow, default)]
            display_name: Option<Cow<'a, str>>,
            #[serde(default)]
            active: Option<bool>,
            #[serde(borrow, default)]
            emails: Option<Vec<Email<'a>>>,
        }
        let key = id_key(&id).map_err(|e| e.to_string())?;
        let s: Stored<'_> = serde_json::from_str(doc_json).map_err(|e| e.to_string())?;
        let emails = s
            .emails
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                e.value
                    .filter(|v| !v.is_empty())
                    .map(|v| v.to_lowercase().into_boxed_str())
            })
            .collect();
        Ok(User {
            id,
            key,
            owner,
            meta,
            user_name: s.user_name.into(),
            external_id: s.external_id.map(Into::into),
            display_name: s.display_name.map(Into::into),
            active: s.active.unwrap_or(true),
            emails,
            doc: doc_json.into(),
        })
    }

    pub(crate) fn key(&self) -> Key {
        self.key
    }

    pub fn user_name(&self) -> &str {
        &self.user_name
    }

    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// Email addresses, lower-cased (the index key form).
    pub fn emails(&self) -> impl Iterator<Item = &str> {
        self.emails.iter().map(|e| &**e)
    }

    /// The attribute document as JSON text.
    pub fn doc_json(&self) -> &str {
        &self.doc
    }

    /// The attribute document, parsed.
    pub fn doc(&self) -> Map<String, Value> {
        parse_doc(&self.doc)
    }
}

/// A group as provisioned by a SCIM client. Its members live in the
/// directory's membership graph, not in this value, so that changing one
/// member of a large group does not copy the whole member list.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: Id,
    key: Key,
    pub owner: Id,
    pub meta: Meta,
    display_name: Box<str>,
    external_id: Option<Box<str>>,
    doc: Box<str>,
}

impl Group {
    /// Builds a group from its attribute document (without `members`).
    pub fn new(id: Id, owner: Id, meta: Meta, mut doc: Map<String, Value>) -> Result<Self, DirectoryError> {
        doc.remove("members");
        let key = id_key(&id)?;
        let display_name = required_string(&doc, "displayName")?;
        let external_id = optional_string(&doc, "externalId")?;
        Ok(Group {
            id,
            key,
            owner,
            meta,
            display_name,
            external_id,
            doc: Value::Object(doc).to_string().into_boxed_str(),
        })
    }

    /// Rebuilds a group from a document this directory wrote earlier.
    pub(crate) fn from_stored(id: Id, owner: Id, meta: Meta, doc_json: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            #[serde(rename = "displayName", borrow)]
            display_name: Cow<'a, str>,
            #[serde(rename = "externalId", borrow, default)]
            external_id: Option<Cow<'a, str>>,
        }
        let key = id_key(&id).map_err(|e| e.to_string())?;
        let s: Stored<'_> = serde_json::from_str(doc_json).map_err(|e| e.to_string())?;
        Ok(Group {
            id,
            key,
            owner,
            meta,
            display_name: s.display_name.into(),
            external_id: s.external_id.map(Into::into),
            doc: doc_json.into(),
        })
    }

    pub(crate) fn key(&self) -> Key {
        self.key
    }

    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    pub fn doc_json(&self) -> &str {
        &self.doc
    }

    pub fn doc(&self) -> Map<String, Value> {
        parse_doc(&self.doc)
    }
}

/// What a group member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKind {
    User,
    Group,
}

/// One direct member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub kind: MemberKind,
    pub id: Id,
}

/// A compact handle on a user for the authorization hot path: the proxy
/// binds a token to a user once, keeps this, and looks the principal up by
/// it on every request without parsing or hashing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrincipalKey(pub(crate) Key);

/// The hasher for maps keyed by [`PrincipalKey`] (the proxy keeps several,
/// read on every request): the key is a random UUID the directory made, so
/// folding its halves spreads keys as well as a keyed hash does, in a few
/// instructions instead of a SipHash round, and nobody outside can choose a
/// key to aim collisions.
pub type PrincipalKeyHash = std::hash::BuildHasherDefault<crate::key::KeyHasher>;

/// What the proxy needs to authorize a request for one user, precomputed on
/// every change so that an authorization lookup is a single map read.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub key: PrincipalKey,
    pub id: Id,
    pub owner: Id,
    pub user_name: Box<str>,
    pub active: bool,
    /// Every group the user belongs to, directly or through nested groups,
    /// sorted by owner then display name.
    pub groups: Box<[Arc<Group>]>,
    /// The directory sequence number at which this principal was computed;
    /// it grows with every change, so caches can key derived data on it.
    pub generation: u64,
}

impl Principal {
    /// Whether the user is a member (direct or nested) of a group with this
    /// display name, owned by `owner` when given.
    pub fn in_group(&self, owner: Option<&str>, display_name: &str) -> bool {
        self.groups
            .iter()
            .any(|g| g.display_name() == display_name && owner.is_none_or(|o| &*g.owner == o))
    }
}

fn id_key(id: &str) -> Result<Key, DirectoryError> {
    key_of(id).ok_or_else(|| invalid("id", format!("{id:?} is not an id this directory issued")))
}

fn parse_doc(doc: &str) -> Map<String, Value> {
    // The text was produced by serializing a `Map`, so parsing cannot fail;
    // an empty document is the harmless answer if it ever did.
    serde_json::from_str(doc).unwrap_or_default()
}

fn required_string(doc: &Map<String, Value>, attr: &'static str) -> Result<Box<str>, DirectoryError> {
    match doc.get(attr) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.as_str().into()),
        Some(Value::String(_)) => Err(invalid(attr, "must not be empty".into())),
        None | Some(Value::Null) => Err(invalid(attr, "is required".into())),
        Some(other) => Err(invalid(attr, format!("expected a string, got {}", kind(other)))),
    }
}

fn optional_string(doc: &Map<String, Value>, attr: &'static str) -> Result<Option<Box<str>>, DirectoryError> {
    match doc.get(attr) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str().into())),
        Some(other) => Err(invalid(attr, format!("expected a string, got {}", kind(other)))),
    }
}

fn invalid(attribute: &'static str, reason: String) -> DirectoryError {
    DirectoryError::InvalidAttribute { attribute, reason }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
