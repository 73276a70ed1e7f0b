//! SCIM schemas as data (RFC 7643 sections 2, 4, 7 and 8.7): the core User
//! and Group schemas, the Enterprise User extension, the common attributes
//! (`id`, `externalId`, `meta`) and custom extensions from configuration;
//! their discovery documents (`/Schemas`, `/ResourceTypes`); attribute
//! lookup by path (case-insensitive, URN-qualified or not); and
//! [`normalize_write`], which validates and canonicalizes a POST/PUT body.
//!
//! Attribute names and schema URNs are compared case-insensitively
//! (RFC 7643 section 2.1). An unqualified name is looked up in the core
//! schema, then the common attributes, then each extension in order, so
//! that `manager` (as Entra ID sends it) finds the Enterprise User
//! attribute.
//!
//! What this module does not do: parse filters or PATCH paths (see
//! [`crate::filter`]), apply PATCH operations (see [`crate::patch`]),
//! check uniqueness (the directory does), enforce `immutable` on PUT (it
//! needs the stored document, which the caller has), or strip `password`
//! (the caller does).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ScimError, ScimType};
use crate::filter::AttrPath;

#[cfg(test)]
mod tests;

/// The core User schema.
pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema.
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The Enterprise User extension.
pub const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

/// An attribute's data type (RFC 7643 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// Whether and how an attribute may be written (RFC 7643 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// When an attribute is returned (RFC 7643 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// How unique an attribute's value is (RFC 7643 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition (RFC 7643 section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: String,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: Vec<String>,
    pub reference_types: Vec<String>,
    pub sub_attributes: Vec<Attribute>,
}

impl Attribute {
    /// A sub-attribute by name, case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The RFC 7643 section 7 representation.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        m.insert("caseExact".into(), json!(self.case_exact));
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if self.ty == AttrType::Complex {
            let subs: Vec<Value> = self.sub_attributes.iter().map(Attribute::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        Value::Object(m)
    }

    // ---- builders for the built-in definitions ----

    fn new(name: &str, ty: AttrType, description: &str) -> Self {
        Attribute {
            name: name.to_owned(),
            ty,
            multi_valued: false,
            description: description.to_owned(),
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            reference_types: Vec::new(),
            sub_attributes: Vec::new(),
        }
    }

    fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }

    fn req(mut self) -> Self {
        self.required = true;
        self
    }

    fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }

    fn mutab(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }

    fn ret(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }

    fn uniq(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }

    fn canon(mut self, values: &[&str]) -> Self {
        self.canonical_values = values.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn refs(mut self, types: &[&str]) -> Self {
        self.reference_types = types.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn subs(mut self, subs: Vec<Attribute>) -> Self {
        self.sub_attributes = subs;
        self
    }

    /// Makes this attribute and every sub-attribute read-only.
    fn read_only(mut self) -> Self {
        self.mutability = Mutability::ReadOnly;
        for s in &mut self.sub_attributes {
            s.mutability = Mutability::ReadOnly;
        }
        self
    }
}

/// A schema: its URN and attribute definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub id: String,
    pub name: String,
    pub description: String,
    pub attributes: Vec<Attribute>,
}

impl Schema {
    /// An attribute by name, case-insensitively.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The RFC 7643 section 7 representation, with `meta.location` under
    /// `base_url` (the SCIM base URL, without a trailing slash).
    pub fn to_json(&self, base_url: &str) -> Value {
        let attributes: Vec<Value> = self.attributes.iter().map(Attribute::to_json).collect();
        json!({
            "schemas": [SCHEMA_URN],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": attributes,
            "meta": {
                "resourceType": "Schema",
                "location": format!("{}/Schemas/{}", base_url.trim_end_matches('/'), self.id),
            },
        })
    }
}

/// The two resource types Portcullis serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    /// The resource type name (`User`, `Group`).
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// The endpoint relative to the base URL (`/Users`, `/Groups`).
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }

    /// The core schema URN.
    pub fn core_urn(self) -> &'static str {
        match self {
            ResourceKind::User => USER_URN,
            ResourceKind::Group => GROUP_URN,
        }
    }
}

/// The type of a custom extension attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CustomType {
    String,
    Boolean,
    Integer,
    Decimal,
    DateTime,
    Reference,
}

/// One attribute of a custom extension schema.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomAttribute {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: CustomType,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
}

/// A custom extension schema from configuration, e.g.
/// `urn:ietf:params:scim:schemas:extension:acme:2.0:User`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSchema {
    /// The schema URN; must start with `urn:`.
    pub id: String,
    pub name: String,
    /// The resource type it extends.
    pub resource: ResourceKind,
    pub attributes: Vec<CustomAttribute>,
}

/// Why the custom schemas of the configuration were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "custom schema {id:?}: the id must be a URN (\"urn:\" then letters, digits, \":\", \".\", \"-\" or \"_\", ending with an attribute-like name such as \"User\")"
    )]
    InvalidUrn { id: String },
    #[error("custom schema {id:?}: the id is already used by another schema")]
    Clash { id: String },
    #[error("custom schema {id:?}: the name must not be empty")]
    EmptyName { id: String },
    #[error(
        "custom schema {id:?}: attribute name {name:?} is not a valid SCIM attribute name (a letter, then letters, digits, \"-\" or \"_\")"
    )]
    InvalidAttributeName { id: String, name: String },
    #[error("custom schema {id:?}: attribute {name:?} is declared twice (names are case-insensitive)")]
    DuplicateAttribute { id: String, name: String },
}

/// Where an attribute lives in a resource document.
#[derive(Debug, Clone, Copy)]
pub struct AttrDef<'a> {
    pub attr: &'a Attribute,
    /// The extension schema whose object (under its URN key) holds the
    /// attribute; `None` for core and common attributes (top level).
    pub extension: Option<&'a Schema>,
}

/// An attribute path resolved against a resource schema.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    pub def: AttrDef<'a>,
    /// The sub-attribute, when the path names one.
    pub sub: Option<&'a Attribute>,
}

/// A resource type's schemas: core, common attributes and extensions (none
/// of which is required).
#[derive(Debug, Clone)]
pub struct ResourceSchema {
    kind: ResourceKind,
    core: Schema,
    common: Vec<Attribute>,
    /// `schemas`, which filters may name (`schemas eq "urn:..."`).
    schemas_attr: Attribute,
    extensions: Vec<Schema>,
}

impl ResourceSchema {
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    pub fn core(&self) -> &Schema {
        &self.core
    }

    /// `id`, `externalId` and `meta`.
    pub fn common(&self) -> &[Attribute] {
        &self.common
    }

    pub fn extensions(&self) -> &[Schema] {
        &self.extensions
    }

    /// An extension by URN, case-insensitively.
    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions.iter().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Whether the default projection (no `attributes` or
    /// `excludedAttributes`) keeps every attribute a stored document can
    /// hold, so that a stored document can be returned as it is. Only a
    /// custom schema with `returned = "request"` or `"never"` attributes
    /// makes it false: `password` (never returned) is never stored, and
    /// `groups` and `members` are computed, not stored.
    pub fn default_view_is_stored(&self) -> bool {
        let computed = |a: &Attribute| {
            ["password", "groups", "members"]
                .iter()
                .any(|n| a.name.eq_ignore_ascii_case(n))
        };
        let plain = |a: &Attribute| {
            computed(a)
                || (matches!(a.returned, Returned::Default | Returned::Always)
                    && a.sub_attributes.iter().all(|s| s.returned != Returned::Never))
        };
        self.core.attributes.iter().all(plain)
            && self.common.iter().all(plain)
            && self.extensions.iter().all(|e| e.attributes.iter().all(plain))
    }

    /// A core or common attribute (the top level of a document).
    pub fn top_attribute(&self, name: &str) -> Option<&Attribute> {
        self.core
            .attribute(name)
            .or_else(|| self.common.iter().find(|a| a.name.eq_ignore_ascii_case(name)))
    }

    /// An attribute by optional schema URN and name. Without a URN the core
    /// schema, the common attributes, `schemas`, then each extension are
    /// searched in that order.
    pub fn attribute(&self, urn: Option<&str>, name: &str) -> Option<AttrDef<'_>> {
        let top = |attr| AttrDef { attr, extension: None };
        match urn {
            Some(urn) if urn.eq_ignore_ascii_case(&self.core.id) => self.top_attribute(name).map(top),
            Some(urn) => {
                let ext = self.extension(urn)?;
                ext.attribute(name).map(|attr| AttrDef {
                    attr,
                    extension: Some(ext),
                })
            }
            None => {
                if let Some(a) = self.top_attribute(name) {
                    return Some(top(a));
                }
                if name.eq_ignore_ascii_case("schemas") {
                    return Some(top(&self.schemas_attr));
                }
                self.extensions.iter().find_map(|ext| {
                    ext.attribute(name).map(|attr| AttrDef {
                        attr,
                        extension: Some(ext),
                    })
                })
            }
        }
    }

    /// Resolves a parsed attribute path; `None` when the attribute or the
    /// named sub-attribute is not defined.
    pub fn resolve(&self, path: &AttrPath) -> Option<Resolved<'_>> {
        let def = self.attribute(path.urn.as_deref(), &path.name)?;
        let sub = match &path.sub {
            None => None,
            Some(s) => Some(def.attr.sub(s)?),
        };
        Some(Resolved { def, sub })
    }

    /// Resolves a path given as text, e.g. `name.givenName` or
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
    pub fn lookup(&self, path: &str) -> Option<Resolved<'_>> {
        self.resolve(&AttrPath::parse(path).ok()?)
    }

    /// The extension a path names as a whole (`urn:...:enterprise:2.0:User`
    /// parses as URN `urn:...:2.0` and name `User`).
    pub fn whole_extension(&self, path: &AttrPath) -> Option<&Schema> {
        if path.sub.is_some() {
            return None;
        }
        let urn = path.urn.as_deref()?;
        self.extensions.iter().find(|s| {
            s.id.len() == urn.len() + 1 + path.name.len()
                && s.id.get(..urn.len()).is_some_and(|p| p.eq_ignore_ascii_case(urn))
                && s.id
                    .get(urn.len() + 1..)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&path.name))
        })
    }

    /// Every required, writable attribute of the core schema and, for those
    /// extensions present, of the extensions.
    pub(crate) fn required(&self) -> impl Iterator<Item = AttrDef<'_>> {
        let core = self
            .core
            .attributes
            .iter()
            .map(|attr| AttrDef { attr, extension: None });
        let ext = self.extensions.iter().flat_map(|e| {
            e.attributes.iter().map(move |attr| AttrDef {
                attr,
                extension: Some(e),
            })
        });
        core.chain(ext)
            .filter(|d| d.attr.required && d.attr.mutability != Mutability::ReadOnly)
    }

    /// The `/ResourceTypes` entry (RFC 7643 section 6).
    pub fn resource_type_json(&self, base_url: &str) -> Value {
        let base = base_url.trim_end_matches('/');
        let name = self.kind.name();
        let extensions: Vec<Value> = self
            .extensions
            .iter()
            .map(|e| json!({"schema": e.id, "required": false}))
            .collect();
        json!({
            "schemas": [RESOURCE_TYPE_URN],
            "id": name,
            "name": name,
            "endpoint": self.kind.endpoint(),
            "description": match self.kind {
                ResourceKind::User => "User Account",
                ResourceKind::Group => "Group",
            },
            "schema": self.core.id,
            "schemaExtensions": extensions,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base}/ResourceTypes/{name}"),
            },
        })
    }
}

/// Every schema the service knows: built-ins plus validated custom
/// extensions.
#[derive(Debug, Clone)]
pub struct Schemas {
    user: ResourceSchema,
    group: ResourceSchema,
    /// Every schema in discovery order: User, Enterprise User, Group, then
    /// custom extensions in configuration order.
    all: Vec<Schema>,
}

impl Schemas {
    /// The built-in schemas plus `custom`, which are validated: URN form, no
    /// clash with another schema, valid and distinct attribute names.
    pub fn new(custom: &[CustomSchema]) -> Result<Schemas, SchemaError> {
        let mut user = ResourceSchema {
            kind: ResourceKind::User,
            core: user_schema(),
            common: common_attributes(),
            schemas_attr: schemas_attribute(),
            extensions: vec![enterprise_schema()],
        };
        let mut group = ResourceSchema {
            kind: ResourceKind::Group,
            core: group_schema(),
            common: common_attributes(),
            schemas_attr: schemas_attribute(),
            extensions: Vec::new(),
        };
        let mut taken: Vec<String> = vec![
            USER_URN.to_owned(),
            GROUP_URN.to_owned(),
            ENTERPRISE_URN.to_owned(),
            SCHEMA_URN.to_owned(),
            RESOURCE_TYPE_URN.to_owned(),
        ];
        for c in custom {
            let schema = validate_custom(c, &taken)?;
            taken.push(schema.id.clone());
            match c.resource {
                ResourceKind::User => user.extensions.push(schema),
                ResourceKind::Group => group.extensions.push(schema),
            }
        }
        let mut all = vec![user.core.clone()];
        all.extend(user.extensions.iter().take(1).cloned());
        all.push(group.core.clone());
        let customs = user.extensions.iter().skip(1).chain(group.extensions.iter());
        let mut customs: Vec<Schema> = customs.cloned().collect();
        // Configuration order, whichever resource they extend.
        customs.sort_by_key(|s| custom.iter().position(|c| c.id.eq_ignore_ascii_case(&s.id)));
        all.extend(customs);
        Ok(Schemas { user, group, all })
    }

    pub fn resource(&self, kind: ResourceKind) -> &ResourceSchema {
        match kind {
            ResourceKind::User => &self.user,
            ResourceKind::Group => &self.group,
        }
    }

    /// Every schema, for `GET /Schemas`.
    pub fn schemas_json(&self, base_url: &str) -> Vec<Value> {
        self.all.iter().map(|s| s.to_json(base_url)).collect()
    }

    /// One schema by URN (case-insensitive), for `GET /Schemas/{id}`.
    pub fn schema_json(&self, id: &str, base_url: &str) -> Option<Value> {
        self.all
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
            .map(|s| s.to_json(base_url))
    }

    /// Both resource types, for `GET /ResourceTypes`.
    pub fn resource_types_json(&self, base_url: &str) -> Vec<Value> {
        vec![
            self.user.resource_type_json(base_url),
            self.group.resource_type_json(base_url),
        ]
    }
}

/// Whether `name` is an `ATTRNAME` (RFC 7643 section 2.1): a letter, then
/// letters, digits, `-` or `_`.
pub fn is_attr_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_custom(c: &CustomSchema, taken: &[String]) -> Result<Schema, SchemaError> {
    let id = c.id.trim();
    let urn_ok = id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        && id.len() > 4
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-' | b'_'))
        && id.rsplit(':').next().is_some_and(is_attr_name);
    if !urn_ok {
        return Err(SchemaError::InvalidUrn { id: c.id.clone() });
    }
    let clash = taken.iter().any(|t| {
        let (t, i) = (t.to_ascii_lowercase(), id.to_ascii_lowercase());
        // Equal, or one is a prefix of the other at a ':' boundary (which
        // would make `urn:a:User:x` ambiguous between schema and attribute).
        t == i || i.starts_with(&format!("{t}:")) || t.starts_with(&format!("{i}:"))
    });
    if clash {
        return Err(SchemaError::Clash { id: c.id.clone() });
    }
    if c.name.trim().is_empty() {
        return Err(SchemaError::EmptyName { id: c.id.clone() });
    }
    let mut attributes: Vec<Attribute> = Vec::with_capacity(c.attributes.len());
    for a in &c.attributes {
        if !is_attr_name(&a.name) {
            return Err(SchemaError::InvalidAttributeName {
                id: c.id.clone(),
                name: a.name.clone(),
            });
        }
        if attributes.iter().any(|b| b.name.eq_ignore_ascii_case(&a.name)) {
            return Err(SchemaError::DuplicateAttribute {
                id: c.id.clone(),
                name: a.name.clone(),
            });
        }
        let ty = match a.ty {
            CustomType::String => AttrType::String,
            CustomType::Boolean => AttrType::Boolean,
            CustomType::Integer => AttrType::Integer,
            CustomType::Decimal => AttrType::Decimal,
            CustomType::DateTime => AttrType::DateTime,
            CustomType::Reference => AttrType::Reference,
        };
        let mut attr = Attribute::new(&a.name, ty, "Custom attribute from the Portcullis configuration.");
        attr.multi_valued = a.multi_valued;
        attr.required = a.required;
        attr.case_exact = a.case_exact;
        if ty == AttrType::Reference {
            attr.reference_types = vec!["external".into()];
        }
        attributes.push(attr);
    }
    Ok(Schema {
        id: id.to_owned(),
        name: c.name.trim().to_owned(),
        description: format!("Custom {} extension", c.resource.name()),
        attributes,
    })
}

// ---- built-in definitions (RFC 7643 sections 3.1, 4 and 8.7) -------------------

fn s(name: &str, description: &str) -> Attribute {
    Attribute::new(name, AttrType::String, description)
}

/// `value`/`display`/`type`/`primary`, the usual multi-valued sub-attributes.
fn multi_subs(value: Attribute, types: &[&str]) -> Vec<Attribute> {
    vec![
        value,
        s("display", "A human-readable name, primarily used for display purposes."),
        s("type", "A label indicating the attribute's function.").canon(types),
        Attribute::new(
            "primary",
            AttrType::Boolean,
            "A Boolean value indicating the 'primary' or preferred attribute value.",
        ),
    ]
}

fn multi_complex(name: &str, description: &str, value: Attribute, types: &[&str]) -> Attribute {
    Attribute::new(name, AttrType::Complex, description)
        .multi()
        .subs(multi_subs(value, types))
}

fn user_schema() -> Schema {
    let name = Attribute::new("name", AttrType::Complex, "The components of the user's real name.").subs(vec![
        s(
            "formatted",
            "The full name, including all middle names, titles, and suffixes, formatted for display.",
        ),
        s("familyName", "The family name of the User, or last name."),
        s("givenName", "The given name of the User, or first name."),
        s("middleName", "The middle name(s) of the User."),
        s("honorificPrefix", "The honorific prefix(es) of the User, or title."),
        s("honorificSuffix", "The honorific suffix(es) of the User, or suffix."),
    ]);
    let addresses = Attribute::new(
        "addresses",
        AttrType::Complex,
        "A physical mailing address for this User.",
    )
    .multi()
    .subs(vec![
        s(
            "formatted",
            "The full mailing address, formatted for display or use with a mailing label.",
        ),
        s("streetAddress", "The full street address component."),
        s("locality", "The city or locality component."),
        s("region", "The state or region component."),
        s("postalCode", "The zip code or postal code component."),
        s("country", "The country name component."),
        s("type", "A label indicating the attribute's function.").canon(&["work", "home", "other"]),
        Attribute::new(
            "primary",
            AttrType::Boolean,
            "A Boolean value indicating the preferred address.",
        ),
    ]);
    let groups = Attribute::new(
        "groups",
        AttrType::Complex,
        "A list of groups to which the user belongs, either through direct membership or through nested groups.",
    )
    .multi()
    .subs(vec![
        s("value", "The identifier of the User's group."),
        Attribute::new(
            "$ref",
            AttrType::Reference,
            "The URI of the corresponding 'Group' resource.",
        )
        .refs(&["Group"]),
        s("display", "A human-readable name, primarily used for display purposes."),
        s("type", "A label indicating the attribute's function.").canon(&["direct", "indirect"]),
    ])
    .read_only();
    Schema {
        id: USER_URN.into(),
        name: "User".into(),
        description: "User Account".into(),
        attributes: vec![
            s(
                "userName",
                "Unique identifier for the User, typically used by the user to directly authenticate.",
            )
            .req()
            .uniq(Uniqueness::Server),
            name,
            s(
                "displayName",
                "The name of the User, suitable for display to end-users.",
            ),
            s("nickName", "The casual way to address the user in real life."),
            Attribute::new(
                "profileUrl",
                AttrType::Reference,
                "A fully qualified URL pointing to a page representing the User's online profile.",
            )
            .refs(&["external"]),
            s("title", "The user's title, such as \"Vice President\"."),
            s(
                "userType",
                "Used to identify the relationship between the organization and the user.",
            ),
            s(
                "preferredLanguage",
                "Indicates the User's preferred written or spoken language.",
            ),
            s(
                "locale",
                "Used to indicate the User's default location for localization purposes.",
            ),
            s(
                "timezone",
                "The User's time zone in the 'Olson' time zone database format.",
            ),
            Attribute::new(
                "active",
                AttrType::Boolean,
                "A Boolean value indicating the User's administrative status.",
            ),
            s("password", "The User's cleartext password.")
                .mutab(Mutability::WriteOnly)
                .ret(Returned::Never),
            multi_complex(
                "emails",
                "Email addresses for the user.",
                s("value", "Email addresses for the user."),
                &["work", "home", "other"],
            ),
            multi_complex(
                "phoneNumbers",
                "Phone numbers for the User.",
                s("value", "Phone number of the User."),
                &["work", "home", "mobile", "fax", "pager", "other"],
            ),
            multi_complex(
                "ims",
                "Instant messaging addresses for the User.",
                s("value", "Instant messaging address for the User."),
                &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
            ),
            multi_complex(
                "photos",
                "URLs of photos of the User.",
                Attribute::new("value", AttrType::Reference, "URL of a photo of the User.").refs(&["external"]),
                &["photo", "thumbnail"],
            ),
            addresses,
            groups,
            multi_complex(
                "entitlements",
                "A list of entitlements for the User that represent a thing the User has.",
                s("value", "The value of an entitlement."),
                &[],
            ),
            multi_complex(
                "roles",
                "A list of roles for the User that collectively represent who the User is.",
                s("value", "The value of a role."),
                &[],
            ),
            multi_complex(
                "x509Certificates",
                "A list of certificates issued to the User.",
                Attribute::new("value", AttrType::Binary, "The value of an X.509 certificate."),
                &[],
            ),
        ],
    }
}

fn enterprise_schema() -> Schema {
    let manager = Attribute::new("manager", AttrType::Complex, "The User's manager.").subs(vec![
        s("value", "The id of the SCIM resource representing the User's manager."),
        Attribute::new(
            "$ref",
            AttrType::Reference,
            "The URI of the SCIM resource representing the User's manager.",
        )
        .refs(&["User"]),
        s("displayName", "The displayName of the User's manager.").mutab(Mutability::ReadOnly),
    ]);
    Schema {
        id: ENTERPRISE_URN.into(),
        name: "EnterpriseUser".into(),
        description: "Enterprise User".into(),
        attributes: vec![
            s(
                "employeeNumber",
                "Numeric or alphanumeric identifier assigned to a person.",
            ),
            s("costCenter", "Identifies the name of a cost center."),
            s("organization", "Identifies the name of an organization."),
            s("division", "Identifies the name of a division."),
            s("department", "Identifies the name of a department."),
            manager,
        ],
    }
}

fn group_schema() -> Schema {
    let members = Attribute::new("members", AttrType::Complex, "A list of members of the Group.")
        .multi()
        .subs(vec![
            s("value", "Identifier of the member of this Group.").mutab(Mutability::Immutable),
            Attribute::new(
                "$ref",
                AttrType::Reference,
                "The URI corresponding to a SCIM resource that is a member of this Group.",
            )
            .refs(&["User", "Group"])
            .mutab(Mutability::Immutable),
            // Read-only and not returned: membership is stored as ids, and a
            // name copied into the group would go stale. Clients may send
            // it (ignored); member filters (`members[display co "x"]`) see
            // the member's current name.
            s(
                "display",
                "The member's current displayName (or userName); read-only, used by member filters.",
            )
            .read_only(),
            s("type", "A label indicating the type of resource.")
                .canon(&["User", "Group"])
                .mutab(Mutability::Immutable),
        ]);
    Schema {
        id: GROUP_URN.into(),
        name: "Group".into(),
        description: "Group".into(),
        attributes: vec![
            s("displayName", "A human-readable name for the Group.")
                .req()
                .uniq(Uniqueness::Server),
            members,
        ],
    }
}

fn common_attributes() -> Vec<Attribute> {
    let meta = Attribute::new("meta", AttrType::Complex, "Resource metadata.")
        .subs(vec![
            s("resourceType", "The name of the resource type of the resource.").exact(),
            Attribute::new(
                "created",
                AttrType::DateTime,
                "The date and time the resource was added to the service provider.",
            ),
            Attribute::new(
                "lastModified",
                AttrType::DateTime,
                "The most recent date and time the resource was modified.",
            ),
            Attribute::new(
                "location",
                AttrType::Reference,
                "The URI of the resource being returned.",
            )
            .refs(&["uri"])
            .exact(),
            s("version", "The version of the resource being returned.").exact(),
        ])
        .read_only();
    vec![
        s(
            "id",
            "A unique identifier for a SCIM resource as defined by the service provider.",
        )
        .exact()
        .mutab(Mutability::ReadOnly)
        .ret(Returned::Always)
        .uniq(Uniqueness::Server),
        s(
            "externalId",
            "A String that is an identifier for the resource as defined by the provisioning client.",
        )
        .exact(),
        meta,
    ]
}

fn schemas_attribute() -> Attribute {
    Attribute::new("schemas", AttrType::Reference, "The schema URIs of the resource.")
        .multi()
        .refs(&["uri"])
        .mutab(Mutability::ReadOnly)
        .ret(Returned::Always)
}

// ---- values ------------------------------------------------------------------

/// Parses an `xsd:dateTime` (RFC 3339, or without a zone, read as UTC).
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok())
}

fn invalid(path: &str, detail: impl std::fmt::Display) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, format!("attribute {path}: {detail}"))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates and canonicalizes one attribute's value. `None` means
/// unassigned (`null`, `[]`, or a complex value with nothing left).
/// Unknown sub-attributes are dropped and named in `warnings`; read-only
/// sub-attributes are dropped silently.
pub(crate) fn normalize_value(
    attr: &Attribute,
    value: Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if attr.multi_valued {
        let items = match value {
            Value::Null => return Ok(None),
            Value::Array(items) => items,
            // Tolerance: one value where an array is expected.
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            if let Some(v) = normalize_single(attr, item, &format!("{path}[{i}]"), warnings)? {
                out.push(v);
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        one_primary(&mut out, None);
        return Ok(Some(Value::Array(out)));
    }
    let value = match value {
        Value::Array(items) if items.len() <= 1 => match items.into_iter().next() {
            Some(v) => v,
            None => return Ok(None),
        },
        Value::Array(_) => return Err(invalid(path, "is single-valued but got an array of several values")),
        v => v,
    };
    normalize_single(attr, value, path, warnings)
}

/// One value of an attribute (an element, for a multi-valued one).
pub(crate) fn normalize_single(
    attr: &Attribute,
    value: Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    match attr.ty {
        AttrType::Complex => match value {
            Value::Object(m) => {
                let m = normalize_complex(attr, m, path, warnings)?;
                Ok((!m.is_empty()).then_some(Value::Object(m)))
            }
            other => Err(invalid(
                path,
                format!("expected a complex value (an object), got {}", kind_of(&other)),
            )),
        },
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            Value::String(s) => Ok(Some(Value::String(s))),
            other => Err(invalid(path, format!("expected a string, got {}", kind_of(&other)))),
        },
        AttrType::Boolean => match value {
            Value::Bool(b) => Ok(Some(Value::Bool(b))),
            // Entra ID sends "True"/"False".
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
            Value::String(s) => Err(invalid(path, format!("expected a boolean, got the string {s:?}"))),
            other => Err(invalid(path, format!("expected a boolean, got {}", kind_of(&other)))),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(Value::Number(n))),
            other => Err(invalid(path, format!("expected an integer, got {}", kind_of(&other)))),
        },
        AttrType::Decimal => match value {
            Value::Number(n) => Ok(Some(Value::Number(n))),
            other => Err(invalid(
                path,
                format!("expected a decimal number, got {}", kind_of(&other)),
            )),
        },
        AttrType::DateTime => match value {
            Value::String(s) if parse_datetime(&s).is_some() => Ok(Some(Value::String(s))),
            Value::String(s) => Err(invalid(path, format!("{s:?} is not an RFC 3339 date-time"))),
            other => Err(invalid(
                path,
                format!("expected a date-time string, got {}", kind_of(&other)),
            )),
        },
    }
}

fn normalize_complex(
    attr: &Attribute,
    m: Map<String, Value>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, v) in m {
        let Some(sub) = attr.sub(&k) else {
            warnings.push(format!("{path}.{k}"));
            continue;
        };
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        let sub_path = format!("{path}.{}", sub.name);
        if let Some(v) = normalize_value(sub, v, &sub_path, warnings)? {
            out.insert(sub.name.clone(), v);
        }
    }
    Ok(out)
}

/// At most one `primary: true` among `items`: the element at `prefer` if it
/// is primary, else the first primary one, keeps it; the others get
/// `primary: false`.
pub(crate) fn one_primary(items: &mut [Value], prefer: Option<usize>) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    let keep = prefer
        .filter(|&i| items.get(i).is_some_and(is_primary))
        .or_else(|| items.iter().position(is_primary));
    let Some(keep) = keep else { return };
    for (i, item) in items.iter_mut().enumerate() {
        if i != keep
            && is_primary(item)
            && let Value::Object(m) = item
        {
            m.insert("primary".into(), Value::Bool(false));
        }
    }
}

/// Sets the `schemas` array of a document from what it holds: the core URN
/// and every extension whose object is present and non-empty (others are
/// removed).
pub(crate) fn set_schemas(doc: &mut Map<String, Value>, schema: &ResourceSchema) {
    let mut urns = vec![Value::String(schema.core.id.clone())];
    for ext in &schema.extensions {
        let keys: Vec<String> = doc
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(&ext.id))
            .cloned()
            .collect();
        let mut present = false;
        for k in keys {
            match doc.remove(&k) {
                Some(Value::Object(m)) if !m.is_empty() && !present => {
                    doc.insert(ext.id.clone(), Value::Object(m));
                    present = true;
                }
                _ => {}
            }
        }
        if present {
            urns.push(Value::String(ext.id.clone()));
        }
    }
    doc.retain(|k, _| !k.eq_ignore_ascii_case("schemas"));
    doc.insert("schemas".into(), Value::Array(urns));
}

/// Validates and canonicalizes a POST or PUT body for `kind`.
///
/// - Attribute names get their schema case (`USERNAME` becomes `userName`).
/// - Extension attributes end up under their URN key, whether they were
///   sent nested (`{"urn:...:User": {"department": "x"}}`), flattened
///   (`"urn:...:User:department": "x"`) or unqualified (`department`).
///   Keys may also be sub-attribute paths (`name.givenName`).
/// - Values are type-checked: `"True"`/`"false"` (any case) are accepted
///   for booleans; a single value where an array is expected is wrapped; a
///   one-element array for a single-valued attribute is unwrapped.
/// - `null`, `[]` and empty objects mean unassigned and are left out.
/// - Read-only attributes (`id`, `meta`, `groups`, `manager.displayName`...)
///   are dropped silently: IdPs echo them.
/// - Attributes in no schema are dropped; their paths are returned as the
///   second element, for the caller to log (RFC 7644 3.3 lets servers ignore
///   them).
/// - Several `primary: true` values of one attribute: the first keeps it,
///   the others become `false` (rejecting them would fail whole pushes).
/// - `schemas` is rebuilt: the core URN plus every extension present;
///   unknown URNs the client listed are ignored.
/// - `password` is kept; the caller strips it.
/// - Missing required attributes (`userName`, a group's `displayName`) are
///   `invalidValue`.
pub fn normalize_write(
    kind: ResourceKind,
    schemas: &Schemas,
    doc: Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<String>), ScimError> {
    let rs = schemas.resource(kind);
    let mut out = Map::new();
    let mut warnings = Vec::new();
    for (key, value) in doc {
        if key.eq_ignore_ascii_case("schemas") {
            match &value {
                Value::Array(items) if items.iter().all(Value::is_string) => {}
                Value::String(_) | Value::Null => {}
                other => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidSyntax,
                        format!("schemas must be an array of schema URIs, got {}", kind_of(other)),
                    ));
                }
            }
            continue;
        }
        if let Some(ext) = rs.extension(&key) {
            match value {
                Value::Null => {}
                Value::Object(inner) => {
                    for (k, v) in inner {
                        assign(rs, Some(ext), &k, v, &mut out, &mut warnings)?;
                    }
                }
                other => return Err(invalid(&ext.id, format!("expected an object, got {}", kind_of(&other)))),
            }
            continue;
        }
        assign(rs, None, &key, value, &mut out, &mut warnings)?;
    }
    set_schemas(&mut out, rs);
    for def in rs.required() {
        let container = match def.extension {
            None => Some(&out),
            Some(ext) => out.get(&ext.id).and_then(Value::as_object),
        };
        if let Some(c) = container
            && !c.contains_key(&def.attr.name)
        {
            let name = match def.extension {
                None => def.attr.name.clone(),
                Some(ext) => format!("{}:{}", ext.id, def.attr.name),
            };
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("attribute {name} is required"),
            ));
        }
    }
    Ok((out, warnings))
}

/// Puts one key of a written document (an attribute name or path) where it
/// belongs in `out`.
fn assign(
    rs: &ResourceSchema,
    within: Option<&Schema>,
    key: &str,
    value: Value,
    out: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let shown = match within {
        Some(ext) => format!("{}:{key}", ext.id),
        None => key.to_owned(),
    };
    let Ok(path) = AttrPath::parse(key) else {
        warnings.push(shown);
        return Ok(());
    };
    let resolved = match within {
        Some(ext) if path.urn.is_none() => ext.attribute(&path.name).map(|attr| AttrDef {
            attr,
            extension: Some(ext),
        }),
        Some(_) => None,
        None => rs.attribute(path.urn.as_deref(), &path.name),
    };
    let Some(def) = resolved else {
        warnings.push(shown);
        return Ok(());
    };
    if def.attr.mutability == Mutability::ReadOnly || def.attr.name == "schemas" {
        return Ok(());
    }
    let container = match def.extension {
        None => out,
        Some(ext) => {
            let slot = out.entry(ext.id.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot.as_object_mut() {
                Some(m) => m,
                None => return Ok(()),
            }
        }
    };
    let attr = def.attr;
    match &path.sub {
        None => {
            let normalized = normalize_value(attr, value, &attr.name, warnings)?;
            match (normalized, container.get_mut(&attr.name)) {
                // `name` after `name.givenName`: merge.
                (Some(Value::Object(new)), Some(Value::Object(old))) if !attr.multi_valued => old.extend(new),
                (Some(v), _) => {
                    container.insert(attr.name.clone(), v);
                }
                (None, _) => {
                    container.remove(&attr.name);
                }
            }
        }
        Some(sub_name) => {
            let (Some(sub), false) = (attr.sub(sub_name), attr.multi_valued) else {
                warnings.push(shown);
                return Ok(());
            };
            if sub.mutability == Mutability::ReadOnly {
                return Ok(());
            }
            let sub_path = format!("{}.{}", attr.name, sub.name);
            let normalized = normalize_value(sub, value, &sub_path, warnings)?;
            let slot = container
                .entry(attr.name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Some(obj) = slot.as_object_mut() {
                match normalized {
                    Some(v) => {
                        obj.insert(sub.name.clone(), v);
                    }
                    None => {
                        obj.remove(&sub.name);
                    }
                }
                if obj.is_empty() {
                    container.remove(&attr.name);
                }
            }
        }
    }
    Ok(())
}
