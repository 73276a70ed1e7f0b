//! The PATCH engine (RFC 7644 section 3.5.2): parsing a PatchOp request and
//! applying its operations, all or nothing, to a resource's attribute
//! document (canonical names, extensions under their URN keys, as
//! [`crate::schema::normalize_write`] produces; without `id`, `meta`,
//! `groups` or a group's `members`).
//!
//! RFC semantics: `add` appends to multi-valued attributes (skipping values
//! already there) and sets single-valued ones; `add`/`replace` on a complex
//! single-valued attribute set the given sub-attributes and leave the
//! others; `replace` on a multi-valued attribute replaces all values, with a
//! filter only the matching ones (or their sub-attribute); `remove` removes
//! the attribute, the matching values or a sub-attribute; a path-less
//! `remove` is `noTarget`; setting `primary: true` on one value sets it to
//! `false` on the others; removing a required attribute is `mutability`.
//!
//! What real IdPs send, and is accepted:
//! 1. `op` in any case (`Replace`), and `Operations`/`op`/`path`/`value`
//!    keys in any case; a missing `schemas` (the URN is checked when given);
//! 2. booleans as strings (`"False"`) for boolean attributes;
//! 3. `add` on a single-valued attribute (a replace);
//! 4. path-less `add`/`replace` with an object of attributes (Okta
//!    deactivation and rename), where an `id` equal to the resource's is
//!    ignored and a different one is `mutability`;
//! 5. keys of that object that are paths (`name.givenName`,
//!    `urn:...:User:employeeNumber`, or an extension URN with an object);
//! 6. `add`/`replace` on `emails[type eq "work"].value` (any filter that is
//!    an `and` of `eq`s) matching nothing creates the value from the filter's
//!    equalities (Entra); a `remove` whose filter matches nothing does
//!    nothing (choice: a retried request must not fail);
//! 7. read-only attributes inside values (`meta`, `groups`,
//!    `manager.displayName`, `$ref: null` in members) are ignored; an
//!    explicit path to a read-only attribute is `mutability`; an immutable
//!    attribute may be set while unassigned, not changed;
//! 8. `schemas` is recomputed from the extensions present afterwards;
//! 9. a PATCH that changes nothing succeeds, with `changed: false`;
//! 10. choice: attributes in no schema are ignored (like unknown attributes
//!     in a POST) and named in [`PatchOutcome::ignored`], so that an IdP
//!     mapping an attribute Portcullis does not know keeps working;
//! 11. `remove` with a path to a multi-valued attribute and a `value`
//!     removes only the listed values (Entra); for `members` this is never
//!     "remove all".
//!
//! Group members are not in the document (they live in the directory's
//! graph): for groups, operations on `members` become [`MemberEdit`]s in
//! [`PatchOutcome::members`], in request order, for the caller to apply.
//!
//! What this module does not do: check the operation count against a limit
//! (the caller does, with [`Vec::len`] of [`parse_patch`]'s result), strip
//! `password`, or check that member ids exist.

use std::collections::HashSet;
use std::slice;

use serde_json::{Map, Value};

use crate::error::{ScimError, ScimType};
use crate::filter::{self, AttrPath, CompareOp, Filter, PatchPath, get_ci};
use crate::schema::{self, AttrType, Attribute, Mutability, ResourceKind, ResourceSchema, Schema};

#[cfg(test)]
mod tests;

/// The PatchOp message schema.
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
        }
    }
}

/// One parsed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: Op,
    pub path: Option<PatchPath>,
    /// Present for `add` and `replace`; for `remove`, only when the client
    /// sent one (Entra's member removal).
    pub value: Option<Value>,
}

/// A change to a group's members; ids are the members' `value`s.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberEdit {
    Add(Vec<String>),
    Remove(Vec<String>),
    Replace(Vec<String>),
    /// Remove the members matching this filter, whose paths are member
    /// sub-attributes (`display co "x"`, `type eq "Group"`). Filters that
    /// are `value eq` or an `or` of them become [`MemberEdit::Remove`].
    RemoveWhere(Filter),
    RemoveAll,
}

/// What a PATCH did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatchOutcome {
    /// Whether the document changed or there are member edits.
    pub changed: bool,
    /// Member edits, in request order (groups only).
    pub members: Vec<MemberEdit>,
    /// Attributes in no schema that were ignored, for logging.
    pub ignored: Vec<String>,
}

fn syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

/// A key of a JSON object, exactly or else case-insensitively.
fn get_key<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn in_operation(e: ScimError, index: usize) -> ScimError {
    ScimError {
        detail: format!("operation {}: {}", index + 1, e.detail),
        ..e
    }
}

/// Parses a PatchOp request body. `schemas`, when present, must list
/// [`PATCH_OP_URN`]; `Operations` (any case) must be a non-empty array.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let Value::Object(m) = body else {
        return Err(syntax("a PatchOp request must be a JSON object"));
    };
    if let Some(s) = get_key(m, "schemas") {
        let listed = |u: &Value| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_URN));
        let ok = match s {
            Value::Array(items) => items.iter().any(listed),
            other => listed(other),
        };
        if !ok {
            return Err(syntax(format!("a PatchOp request must list {PATCH_OP_URN} in schemas")));
        }
    }
    let ops = match get_key(m, "Operations") {
        None => return Err(syntax("a PatchOp request needs an Operations array")),
        Some(Value::Array(ops)) => ops,
        Some(_) => return Err(syntax("Operations must be an array")),
    };
    if ops.is_empty() {
        return Err(syntax("Operations must not be empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(i, o)| parse_op(o).map_err(|e| in_operation(e, i)))
        .collect()
}

fn parse_op(v: &Value) -> Result<PatchOp, ScimError> {
    let Value::Object(o) = v else {
        return Err(syntax("an operation must be a JSON object"));
    };
    let op = match get_key(o, "op").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("add") => Op::Add,
        Some(s) if s.eq_ignore_ascii_case("replace") => Op::Replace,
        Some(s) if s.eq_ignore_ascii_case("remove") => Op::Remove,
        Some(s) => return Err(syntax(format!("op must be add, replace or remove, not {s:?}"))),
        None => return Err(syntax("op must be add, replace or remove")),
    };
    let path = match get_key(o, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(filter::parse_path(s)?),
        Some(_) => return Err(ScimError::bad_request(ScimType::InvalidPath, "path must be a string")),
    };
    let mut value = get_key(o, "value").cloned();
    match (op, &path, &value) {
        (Op::Remove, None, _) => {
            return Err(ScimError::bad_request(ScimType::NoTarget, "remove needs a path"));
        }
        (Op::Add | Op::Replace, _, None) => return Err(syntax(format!("{} needs a value", op.as_str()))),
        (Op::Add | Op::Replace, None, Some(v)) => {
            // Tolerance: the object wrapped in a one-element array.
            if let Value::Array(items) = v
                && let [one @ Value::Object(_)] = items.as_slice()
            {
                value = Some(one.clone());
            }
            if !value.as_ref().is_some_and(Value::is_object) {
                return Err(syntax(format!(
                    "{} without a path needs an object of attributes as its value",
                    op.as_str()
                )));
            }
        }
        _ => {}
    }
    Ok(PatchOp { op, path, value })
}

/// Applies `ops` in order to `doc`, the attribute document of the resource
/// `id`, all or nothing: on error `doc` is left as it was. See the module
/// documentation for the semantics.
pub fn apply_patch(
    doc: &mut Map<String, Value>,
    ops: &[PatchOp],
    schema: &ResourceSchema,
    id: &str,
) -> Result<PatchOutcome, ScimError> {
    let mut work = doc.clone();
    let mut engine = Engine {
        schema,
        id,
        members: Vec::new(),
        ignored: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        engine.apply(&mut work, op).map_err(|e| in_operation(e, i))?;
    }
    for def in schema.required() {
        let holder = |d: &Map<String, Value>| -> Option<Map<String, Value>> {
            match def.extension {
                None => Some(d.clone()),
                Some(ext) => get_key(d, &ext.id).and_then(Value::as_object).cloned(),
            }
        };
        let has = |d: &Map<String, Value>| {
            holder(d).is_some_and(|h| get_key(&h, &def.attr.name).is_some_and(|v| !v.is_null()))
        };
        if has(doc) && !has(&work) && holder(&work).is_some() {
            return Err(ScimError::bad_request(
                ScimType::Mutability,
                format!("attribute {} is required and cannot be removed", def.attr.name),
            ));
        }
    }
    schema::set_schemas(&mut work, schema);
    let changed = work != *doc || !engine.members.is_empty();
    *doc = work;
    Ok(PatchOutcome {
        changed,
        members: engine.members,
        ignored: engine.ignored,
    })
}

struct Engine<'a> {
    schema: &'a ResourceSchema,
    id: &'a str,
    members: Vec<MemberEdit>,
    ignored: Vec<String>,
}

fn mutability(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::Mutability, detail)
}

/// Renames a key to its canonical case when the document has it in
/// another case.
fn canon_key(m: &mut Map<String, Value>, name: &str) {
    if m.contains_key(name) {
        return;
    }
    if let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
        && let Some(v) = m.remove(&k)
    {
        m.insert(name.to_owned(), v);
    }
}

/// Removes `name` when its value is null, `[]` or `{}`.
fn cleanup(m: &mut Map<String, Value>, name: &str) {
    let empty = match m.get(name) {
        Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        m.remove(name);
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

fn check_immutable(attr: &Attribute, old: Option<&Value>, new: Option<&Value>, shown: &str) -> Result<(), ScimError> {
    if attr.mutability == Mutability::Immutable && old.is_some_and(|o| !o.is_null()) && old != new {
        return Err(mutability(format!(
            "{shown} is immutable: it may be set once, not changed"
        )));
    }
    Ok(())
}

/// The object an `and` of `eq`s on sub-attributes describes
/// (`type eq "work"` gives `{"type": "work"}`), for creating a value no
/// filter matched.
fn equalities(f: &Filter, attr: &Attribute, out: &mut Map<String, Value>) -> bool {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.urn.is_none() && path.sub.is_none() && !value.is_null() => match attr.sub(&path.name) {
            Some(sub) => {
                out.insert(sub.name.clone(), value.clone());
                true
            }
            None => false,
        },
        Filter::And(a, b) => equalities(a, attr, out) && equalities(b, attr, out),
        _ => false,
    }
}

/// The ids of a `value eq "x"` filter or an `or` of them.
fn value_eq_ids(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(s),
        } if path.urn.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case("value") => {
            Some(vec![s.clone()])
        }
        Filter::Or(a, b) => {
            let mut ids = value_eq_ids(a)?;
            ids.extend(value_eq_ids(b)?);
            Some(ids)
        }
        _ => None,
    }
}

/// The member ids of a `members` value: `[{"value": "id", ...}, ...]` or one
/// such object; duplicates dropped, order kept.
fn member_ids(value: Option<&Value>) -> Result<Vec<String>, ScimError> {
    let items: &[Value] = match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(v @ Value::Object(_)) => slice::from_ref(v),
        Some(_) => {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                "members: expected an array of {\"value\": id} objects",
            ));
        }
    };
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(id) = get_ci(item, "value").and_then(Value::as_str) else {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("members[{i}]: each member must be an object with a string value"),
            ));
        };
        if seen.insert(id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

impl Engine<'_> {
    fn apply(&mut self, doc: &mut Map<String, Value>, op: &PatchOp) -> Result<(), ScimError> {
        match (&op.path, op.op) {
            (None, Op::Remove) => Err(ScimError::bad_request(ScimType::NoTarget, "remove needs a path")),
            (None, o) => match &op.value {
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        self.apply_key(doc, o, k, v)?;
                    }
                    Ok(())
                }
                _ => Err(syntax(format!(
                    "{} without a path needs an object of attributes",
                    o.as_str()
                ))),
            },
            (Some(path), o) => self.apply_path(doc, o, path, op.value.as_ref(), false),
        }
    }

    /// One key of a path-less value object: an attribute name, a path, or
    /// an extension URN with an object.
    fn apply_key(&mut self, doc: &mut Map<String, Value>, op: Op, key: &str, v: &Value) -> Result<(), ScimError> {
        if key.eq_ignore_ascii_case("schemas") {
            return Ok(());
        }
        if let Some(ext) = self.schema.extension(key) {
            return self.apply_extension(doc, op, ext, Some(v));
        }
        match filter::parse_path(key) {
            Ok(path) => self.apply_path(doc, op, &path, Some(v), true),
            Err(_) => {
                self.ignored.push(key.to_owned());
                Ok(())
            }
        }
    }

    /// An operation on a whole extension object: `remove` drops it; `add`
    /// and `replace` apply each attribute of the value.
    fn apply_extension(
        &mut self,
        doc: &mut Map<String, Value>,
        op: Op,
        ext: &Schema,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        match (op, value) {
            (Op::Remove, _) | (Op::Replace, Some(Value::Null)) => {
                doc.retain(|k, _| !k.eq_ignore_ascii_case(&ext.id));
                Ok(())
            }
            (_, Some(Value::Object(m))) => {
                for (k, v) in m {
                    let path = match AttrPath::parse(k) {
                        Ok(p) if p.urn.is_none() => p,
                        _ => {
                            self.ignored.push(format!("{}:{k}", ext.id));
                            continue;
                        }
                    };
                    let path = PatchPath {
                        attr: AttrPath {
                            urn: Some(ext.id.clone()),
                            ..path
                        },
                        filter: None,
                        sub: None,
                    };
                    self.apply_path(doc, op, &path, Some(v), true)?;
                }
                Ok(())
            }
            (_, Some(Value::Null)) => Ok(()),
            _ => Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("{}: expected an object of attributes", ext.id),
            )),
        }
    }

    /// An operation on a path. `lenient`: the path is a key of a path-less
    /// value object, where read-only attributes are ignored rather than
    /// refused.
    fn apply_path(
        &mut self,
        doc: &mut Map<String, Value>,
        op: Op,
        path: &PatchPath,
        value: Option<&Value>,
        lenient: bool,
    ) -> Result<(), ScimError> {
        let attr_path = &path.attr;
        let core_or_none = attr_path
            .urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(&self.schema.core().id));
        let plain = path.filter.is_none() && path.sub.is_none() && attr_path.sub.is_none();
        if plain && core_or_none && attr_path.name.eq_ignore_ascii_case("id") {
            return match (op, value) {
                (Op::Remove, _) => Err(mutability("id is read-only and cannot be removed")),
                (_, None | Some(Value::Null)) => Ok(()),
                (_, Some(Value::String(s))) if s == self.id => Ok(()),
                _ => Err(mutability(format!("id is read-only: it stays {:?}", self.id))),
            };
        }
        if attr_path.urn.is_none() && attr_path.name.eq_ignore_ascii_case("schemas") {
            return Ok(());
        }
        if path.filter.is_none()
            && path.sub.is_none()
            && let Some(ext) = self.schema.whole_extension(attr_path)
        {
            return self.apply_extension(doc, op, ext, value);
        }
        let shown = path.to_string();
        let Some(res) = self.schema.resolve(attr_path) else {
            self.ignored.push(shown);
            return Ok(());
        };
        let attr = res.def.attr;
        if attr.name == "schemas" {
            return Ok(());
        }
        if self.schema.kind() == ResourceKind::Group && res.def.extension.is_none() && attr.name == "members" {
            return self.members(op, path, res.sub.is_some(), value);
        }
        if attr.mutability == Mutability::ReadOnly {
            return if lenient {
                Ok(())
            } else {
                Err(mutability(format!("{shown} is read-only")))
            };
        }
        let sub = match (&path.sub, res.sub) {
            (None, s) => s,
            (Some(s), None) => match attr.sub(s) {
                Some(x) => Some(x),
                None => {
                    self.ignored.push(shown);
                    return Ok(());
                }
            },
            (Some(_), Some(_)) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidPath,
                    format!("{shown}: a path has at most one sub-attribute"),
                ));
            }
        };
        if let Some(s) = sub
            && s.mutability == Mutability::ReadOnly
        {
            return if lenient {
                Ok(())
            } else {
                Err(mutability(format!("{shown} is read-only")))
            };
        }
        if path.filter.is_some() && !(attr.ty == AttrType::Complex && attr.multi_valued) {
            return Err(ScimError::bad_request(
                ScimType::InvalidPath,
                format!("{shown}: a value filter needs a multi-valued complex attribute"),
            ));
        }
        let filter = path.filter.as_ref();
        let mut warnings = Vec::new();
        let result = match res.def.extension {
            None => edit(doc, op, attr, filter, sub, value, &shown, &mut warnings),
            Some(ext) => {
                let r = match extension_object(doc, ext, op != Op::Remove) {
                    Some(container) => edit(container, op, attr, filter, sub, value, &shown, &mut warnings),
                    // Removing from an extension the resource does not have.
                    None => Ok(()),
                };
                cleanup(doc, &ext.id);
                r
            }
        };
        self.ignored.extend(warnings);
        result
    }

    fn members(&mut self, op: Op, path: &PatchPath, attr_sub: bool, value: Option<&Value>) -> Result<(), ScimError> {
        if attr_sub || path.sub.is_some() {
            return Err(ScimError::bad_request(
                ScimType::InvalidPath,
                format!("{path}: members are added, replaced or removed whole; their sub-attributes cannot be patched"),
            ));
        }
        let edit = match (op, &path.filter) {
            (Op::Add, None) => {
                let ids = member_ids(value)?;
                if ids.is_empty() {
                    return Ok(());
                }
                MemberEdit::Add(ids)
            }
            (Op::Replace, None) => MemberEdit::Replace(member_ids(value)?),
            (Op::Remove, None) => match value {
                None | Some(Value::Null) => MemberEdit::RemoveAll,
                Some(v) => {
                    // Entra: remove just these, never "all".
                    let ids = member_ids(Some(v))?;
                    if ids.is_empty() {
                        return Ok(());
                    }
                    MemberEdit::Remove(ids)
                }
            },
            (Op::Remove, Some(f)) => match value_eq_ids(f) {
                Some(ids) => MemberEdit::Remove(ids),
                None => MemberEdit::RemoveWhere(f.clone()),
            },
            (Op::Add | Op::Replace, Some(_)) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidPath,
                    format!("{path}: members are selected by filter only for remove; add or replace them as a list"),
                ));
            }
        };
        self.members.push(edit);
        Ok(())
    }
}

/// The object of an extension in `doc`, created when `create`.
fn extension_object<'d>(
    doc: &'d mut Map<String, Value>,
    ext: &Schema,
    create: bool,
) -> Option<&'d mut Map<String, Value>> {
    canon_key(doc, &ext.id);
    if create {
        let slot = doc.entry(ext.id.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
    }
    doc.get_mut(&ext.id).and_then(Value::as_object_mut)
}

/// The array of a multi-valued attribute in `container`, created empty if
/// absent (a lone value becomes a one-element array).
fn array_of<'c>(container: &'c mut Map<String, Value>, name: &str) -> Option<&'c mut Vec<Value>> {
    let slot = container
        .entry(name.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        let old = slot.take();
        *slot = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
    }
    slot.as_array_mut()
}

/// Applies one operation to one attribute of `container` (the document or
/// an extension object).
#[allow(clippy::too_many_arguments)]
fn edit(
    container: &mut Map<String, Value>,
    op: Op,
    attr: &Attribute,
    filter: Option<&Filter>,
    sub: Option<&Attribute>,
    value: Option<&Value>,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = attr.name.as_str();
    canon_key(container, name);
    // Primaries before the edit: a value newly set primary wins.
    let primaries_before: Vec<Value> = match container.get(name) {
        Some(Value::Array(items)) if attr.multi_valued => items.iter().filter(|v| is_primary(v)).cloned().collect(),
        _ => Vec::new(),
    };
    match (op, value) {
        (Op::Remove, _) => remove(container, attr, filter, sub, value, warnings)?,
        (Op::Replace, None | Some(Value::Null)) if filter.is_none() => {
            remove(container, attr, None, sub, None, warnings)?;
        }
        (_, None | Some(Value::Null)) => {}
        (op, Some(v)) => match (filter, sub) {
            (None, None) => set_attribute(container, op, attr, v, shown, warnings)?,
            (None, Some(sub)) => set_sub_everywhere(container, attr, sub, v, shown, warnings)?,
            (Some(f), sub) => set_filtered(container, op, attr, f, sub, v, shown, warnings)?,
        },
    }
    if attr.multi_valued
        && let Some(Value::Array(items)) = container.get_mut(name)
    {
        let newly = items
            .iter()
            .position(|v| is_primary(v) && !primaries_before.contains(v));
        schema::one_primary(items, newly);
    }
    cleanup(container, name);
    Ok(())
}

fn remove(
    container: &mut Map<String, Value>,
    attr: &Attribute,
    filter: Option<&Filter>,
    sub: Option<&Attribute>,
    value: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = attr.name.as_str();
    match (filter, sub) {
        (None, None) => match value {
            Some(v) if attr.multi_valued && !v.is_null() => {
                // Remove only the listed values.
                let listed = match schema::normalize_value(attr, v.clone(), name, warnings)? {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                if let Some(Value::Array(items)) = container.get_mut(name) {
                    items.retain(|e| !listed.iter().any(|l| same_value(attr, e, l)));
                }
            }
            _ => {
                container.remove(name);
            }
        },
        (None, Some(sub)) => match container.get_mut(name) {
            Some(Value::Array(items)) => {
                for e in items.iter_mut() {
                    if let Value::Object(m) = e {
                        m.retain(|k, _| !k.eq_ignore_ascii_case(&sub.name));
                    }
                }
                items.retain(|e| e.as_object().is_none_or(|m| !m.is_empty()));
            }
            Some(Value::Object(m)) => m.retain(|k, _| !k.eq_ignore_ascii_case(&sub.name)),
            _ => {}
        },
        (Some(f), sub) => {
            if let Some(Value::Array(items)) = container.get_mut(name) {
                match sub {
                    None => items.retain(|e| !f.matches_element(e, attr)),
                    Some(sub) => {
                        for e in items.iter_mut() {
                            if f.matches_element(e, attr)
                                && let Value::Object(m) = e
                            {
                                m.retain(|k, _| !k.eq_ignore_ascii_case(&sub.name));
                            }
                        }
                        items.retain(|e| e.as_object().is_none_or(|m| !m.is_empty()));
                    }
                }
            }
            // A filter that matches nothing removes nothing (no error).
        }
    }
    Ok(())
}

/// Whether a stored value is the one a `remove` lists: same `value`
/// sub-attribute for complex values that have one, else equal.
fn same_value(attr: &Attribute, stored: &Value, listed: &Value) -> bool {
    let value_sub = attr.sub("value");
    match (value_sub, get_ci(listed, "value")) {
        (Some(vs), Some(Value::String(l))) => match get_ci(stored, "value") {
            Some(Value::String(s)) if vs.case_exact => s == l,
            Some(Value::String(s)) => s.to_lowercase() == l.to_lowercase(),
            _ => false,
        },
        _ => stored == listed,
    }
}

/// `add` or `replace` of a whole attribute.
fn set_attribute(
    container: &mut Map<String, Value>,
    op: Op,
    attr: &Attribute,
    v: &Value,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = attr.name.as_str();
    let new = schema::normalize_value(attr, v.clone(), shown, warnings)?;
    let Some(new) = new else {
        // `[]` or `{}`: replace clears, add does nothing.
        if op == Op::Replace {
            container.remove(name);
        }
        return Ok(());
    };
    if attr.multi_valued {
        let new_items = match new {
            Value::Array(items) => items,
            other => vec![other],
        };
        match op {
            Op::Add => {
                let Some(items) = array_of(container, name) else {
                    return Ok(());
                };
                let mut seen: HashSet<String> = items.iter().map(Value::to_string).collect();
                for n in new_items {
                    if seen.insert(n.to_string()) {
                        items.push(n);
                    }
                }
            }
            _ => {
                let new = Value::Array(new_items);
                check_immutable(attr, container.get(name), Some(&new), shown)?;
                container.insert(name.to_owned(), new);
            }
        }
        return Ok(());
    }
    match (new, container.get_mut(name)) {
        // A complex value: set the given sub-attributes, keep the others.
        (Value::Object(new), Some(Value::Object(old))) => {
            for (k, nv) in new {
                if let Some(sub) = attr.sub(&k) {
                    check_immutable(sub, old.get(&k), Some(&nv), &format!("{name}.{k}"))?;
                }
                old.insert(k, nv);
            }
        }
        (new, _) => {
            check_immutable(attr, container.get(name), Some(&new), shown)?;
            container.insert(name.to_owned(), new);
        }
    }
    Ok(())
}

/// `name.givenName` (single-valued) or `emails.display` without filter
/// (every value; one new value when there is none).
fn set_sub_everywhere(
    container: &mut Map<String, Value>,
    attr: &Attribute,
    sub: &Attribute,
    v: &Value,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = attr.name.as_str();
    let Some(new) = schema::normalize_value(sub, v.clone(), shown, warnings)? else {
        return remove(container, attr, None, Some(sub), None, warnings);
    };
    if attr.multi_valued {
        let Some(items) = array_of(container, name) else {
            return Ok(());
        };
        if items.is_empty() {
            let mut m = Map::new();
            m.insert(sub.name.clone(), new);
            items.push(Value::Object(m));
            return Ok(());
        }
        for e in items.iter_mut() {
            if let Value::Object(m) = e {
                check_immutable(sub, m.get(&sub.name), Some(&new), shown)?;
                m.insert(sub.name.clone(), new.clone());
            }
        }
        return Ok(());
    }
    let slot = container
        .entry(name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(m) = slot {
        canon_key(m, &sub.name);
        check_immutable(sub, m.get(&sub.name), Some(&new), shown)?;
        m.insert(sub.name.clone(), new);
    }
    Ok(())
}

/// `add`/`replace` on `attr[filter]` or `attr[filter].sub`.
#[allow(clippy::too_many_arguments)]
fn set_filtered(
    container: &mut Map<String, Value>,
    op: Op,
    attr: &Attribute,
    f: &Filter,
    sub: Option<&Attribute>,
    v: &Value,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = attr.name.as_str();
    // The new sub-attribute value, or the new whole value.
    let new = match sub {
        Some(s) => schema::normalize_value(s, v.clone(), shown, warnings)?,
        None => schema::normalize_single(attr, v.clone(), shown, warnings)?,
    };
    let Some(items) = array_of(container, name) else {
        return Ok(());
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, e)| f.matches_element(e, attr))
        .map(|(i, _)| i)
        .collect();
    if matched.is_empty() {
        // Entra: create the value the filter describes.
        let mut element = Map::new();
        if !equalities(f, attr, &mut element) {
            return Err(ScimError::bad_request(
                ScimType::NoTarget,
                format!("{shown}: no value matches the filter"),
            ));
        }
        match (sub, new) {
            (Some(s), Some(n)) => {
                element.insert(s.name.clone(), n);
            }
            (None, Some(Value::Object(m))) => element.extend(m),
            _ => {}
        }
        if let Some(e) = schema::normalize_single(attr, Value::Object(element), shown, warnings)? {
            items.push(e);
        }
        return Ok(());
    }
    for i in matched {
        let Some(Value::Object(m)) = items.get_mut(i) else {
            continue;
        };
        match (sub, &new) {
            (Some(s), Some(n)) => {
                canon_key(m, &s.name);
                check_immutable(s, m.get(&s.name), Some(n), shown)?;
                m.insert(s.name.clone(), n.clone());
            }
            (Some(s), None) => m.retain(|k, _| !k.eq_ignore_ascii_case(&s.name)),
            (None, Some(Value::Object(n))) => {
                for s in &attr.sub_attributes {
                    if op == Op::Replace || n.contains_key(&s.name) {
                        check_immutable(s, m.get(&s.name), n.get(&s.name), shown)?;
                    }
                }
                if op == Op::Replace {
                    m.clear();
                }
                m.extend(n.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            (None, _) => {
                if op == Op::Replace {
                    m.clear();
                }
            }
        }
    }
    items.retain(|e| e.as_object().is_none_or(|m| !m.is_empty()));
    Ok(())
}
