//! SCIM filters and attribute paths (RFC 7644 sections 3.4.2.2, 3.4.2.3,
//! 3.4.2.5 and 3.5.2): parsing `filter`, PATCH `path`, `attributes` /
//! `excludedAttributes` and `sortBy`; evaluating a filter against a
//! resource's JSON; index hints ([`Filter::candidate_equalities`]); sort
//! keys; and projection ([`project`]).
//!
//! The parser is a hand-written recursive descent over bytes. It accepts
//! the RFC grammar plus what IdPs send: operators and keywords in any case
//! (`username Eq "x"`), a bare unquoted token as a string value
//! (`userName eq bob`), any amount of whitespace between tokens, and a
//! sub-attribute after a value filter (`emails[type eq "work"].value eq
//! "x"`, read as `emails[type eq "work" and value eq "x"]`). Nesting of
//! `(`, `not (` and `[` is bounded by [`MAX_DEPTH`] and the number of
//! comparisons by [`MAX_TERMS`]; `and`/`or` chains are folded into balanced
//! trees, so evaluation, cloning and dropping never recurse deeper than
//! about `MAX_DEPTH * log2(MAX_TERMS)` frames. Parsing is linear in the
//! input.
//!
//! Evaluation semantics (choices where RFC 7644 is silent are marked):
//! - attribute names are case-insensitive; string comparisons follow the
//!   attribute's `caseExact`; dateTime values compare as instants; numbers
//!   and booleans by value; `gt`/`ge`/`lt`/`le` on strings are
//!   lexicographic (after lower-casing when not `caseExact`);
//! - a multi-valued attribute matches when any value does; without a
//!   sub-attribute, a multi-valued complex attribute compares its `value`
//!   sub-attribute (`emails co "@x"` is `emails.value co "@x"`);
//! - `pr`: present and not null, `""`, `[]` or `{}`; `eq null` matches an
//!   absent attribute and `ne null` a present one;
//! - choice: `ne` is the negation of `eq` (it matches a resource without
//!   the attribute), as in the UnboundID SCIM 2 SDK;
//! - choice: an attribute in no schema matches nothing, with any operator
//!   (IdPs filter on attributes Portcullis may not keep); `not (...)` of it
//!   matches everything;
//! - comparisons that make no sense (`gt` on a boolean, `eq` on a complex
//!   attribute without sub-attribute) are false; [`Filter::validate`]
//!   reports them as `invalidFilter` instead.
//!
//! What this module does not do: look anything up in the directory, apply
//! PATCH operations (see [`crate::patch`]), or decide which resources a
//! client may see.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

use crate::error::{ScimError, ScimType};
use crate::schema::{AttrType, Attribute, ResourceSchema, Returned, is_attr_name, parse_datetime};

#[cfg(test)]
mod tests;

/// Deepest nesting of `(`, `not (` and `[` a filter or path may have.
pub const MAX_DEPTH: usize = 64;
/// Most comparisons (`attr op value`, `attr pr`) in one filter.
pub const MAX_TERMS: usize = 10_000;

/// An attribute path as written: `[urn:]name[.sub]`. Names are kept as
/// written; compare them case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The schema URN, for URN-qualified paths.
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// An unqualified path without sub-attribute.
    pub fn new(name: impl Into<String>) -> Self {
        AttrPath {
            urn: None,
            name: name.into(),
            sub: None,
        }
    }

    /// Parses `name`, `name.sub`, `urn:...:name` or `urn:...:name.sub`. A
    /// whole schema URN parses too (as URN plus last segment); see
    /// [`ResourceSchema::whole_extension`].
    pub fn parse(s: &str) -> Result<AttrPath, String> {
        let bad = || format!("{s:?} is not an attribute path");
        let is_urn = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
        let (urn, rest) = if is_urn {
            let (urn, rest) = s.rsplit_once(':').ok_or_else(bad)?;
            if urn.len() <= 4 {
                return Err(bad());
            }
            (Some(urn), rest)
        } else {
            (None, s)
        };
        let (name, sub) = match rest.split_once('.') {
            Some((n, sub)) => (n, Some(sub)),
            None => (rest, None),
        };
        if !valid_name(name) || !sub.is_none_or(valid_name) {
            return Err(bad());
        }
        Ok(AttrPath {
            urn: urn.map(str::to_owned),
            name: name.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

fn valid_name(s: &str) -> bool {
    is_attr_name(s) || s.eq_ignore_ascii_case("$ref")
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Lt,
    Ge,
    Le,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Lt => "lt",
            CompareOp::Ge => "ge",
            CompareOp::Le => "le",
        }
    }

    fn parse(word: &str) -> Option<CompareOp> {
        const ALL: [CompareOp; 9] = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Lt,
            CompareOp::Ge,
            CompareOp::Le,
        ];
        ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    fn is_ordering(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le)
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`; `value` is a JSON string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `path pr`.
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `path[filter]`: some value of the complex attribute `path` matches
    /// `filter`, whose paths are sub-attribute names of `path`.
    /// `emails[type eq "work"].value eq "x"` parses as
    /// `emails[type eq "work" and value eq "x"]`.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) => write!(f, "({a} and {b})"),
            Filter::Or(a, b) => write!(f, "({a} or {b})"),
            Filter::Not(a) => write!(f, "not ({a})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

/// A PATCH path (RFC 7644 3.5.2: `attrPath / valuePath [subAttr]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    /// The value filter of `attr[filter]`.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[...].value`).
    pub sub: Option<String>,
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

// ---- parsing -----------------------------------------------------------------

/// Parses a `filter` parameter. Errors are `invalidFilter` with the byte
/// position and what was expected there.
pub fn parse_filter(s: &str) -> Result<Filter, ScimError> {
    let mut p = Parser::new(s, ScimType::InvalidFilter, "filter");
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(p.pos, "a filter expression"));
    }
    let f = p.parse_or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(p.pos, "\"and\", \"or\" or the end of the filter"));
    }
    Ok(f)
}

/// Parses a PATCH `path`. Errors are `invalidPath`, except errors inside a
/// value filter (`members[...]`), which are `invalidFilter` as RFC 7644
/// table 9 lists it for PATCH path filters.
pub fn parse_path(s: &str) -> Result<PatchPath, ScimError> {
    let mut p = Parser::new(s, ScimType::InvalidPath, "path");
    p.path_mode = true;
    p.skip_ws();
    let start = p.pos;
    let token = p.take_while(is_path_byte);
    let attr = AttrPath::parse(token).map_err(|_| p.error(start, "an attribute path"))?;
    let mut filter = None;
    let mut sub = None;
    if p.peek() == Some(b'[') {
        if attr.sub.is_some() {
            return Err(p.error(
                p.pos,
                "the end of the path (a value filter applies to an attribute, not a sub-attribute)",
            ));
        }
        filter = Some(p.value_filter()?);
        if p.peek() == Some(b'.') {
            p.pos += 1;
            let at = p.pos;
            let name = p.take_while(is_path_byte);
            if !valid_name(name) {
                return Err(p.error(at, "a sub-attribute name"));
            }
            sub = Some(name.to_owned());
        }
    }
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(p.pos, "the end of the path"));
    }
    Ok(PatchPath { attr, filter, sub })
}

/// Parses a comma-separated `attributes`, `excludedAttributes` or `sortBy`
/// value. Empty items are skipped; a malformed one is `invalidValue`.
pub fn parse_attr_list(s: &str) -> Result<Vec<AttrPath>, ScimError> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            AttrPath::parse(item)
                .map_err(|e| ScimError::bad_request(ScimType::InvalidValue, format!("attribute list: {e}")))
        })
        .collect()
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'$')
}

fn is_value_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && !matches!(b, b'(' | b')' | b'[' | b']' | b'"')
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    terms: usize,
    in_brackets: bool,
    /// Parsing a PATCH path: errors inside `[...]` are `invalidFilter`.
    path_mode: bool,
    kind: ScimType,
    what: &'static str,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, kind: ScimType, what: &'static str) -> Self {
        Parser {
            src,
            pos: 0,
            depth: 0,
            terms: 0,
            in_brackets: false,
            path_mode: false,
            kind,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.src.get(start..self.pos).unwrap_or_default()
    }

    /// Whether the keyword `kw` (any case) is next, not followed by a path
    /// character (`or` is not the start of `orange`).
    fn keyword(&self, kw: &str) -> bool {
        let bytes = self.src.as_bytes();
        let end = self.pos + kw.len();
        bytes
            .get(self.pos..end)
            .is_some_and(|b| b.eq_ignore_ascii_case(kw.as_bytes()))
            && !bytes.get(end).copied().is_some_and(is_path_byte)
    }

    fn error(&self, at: usize, expected: &str) -> ScimError {
        let found = match self.src.get(at..) {
            Some("") | None if at >= self.src.len() => "the end of the input".to_owned(),
            Some(rest) => {
                let snippet: String = rest.chars().take(20).collect();
                format!("{snippet:?}")
            }
            None => "a non-ASCII character".to_owned(),
        };
        ScimError::bad_request(
            self.kind,
            format!("invalid {} at byte {at}: expected {expected}, found {found}", self.what),
        )
    }

    fn enter(&mut self, at: usize) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::bad_request(
                self.kind,
                format!(
                    "invalid {} at byte {at}: nested deeper than {MAX_DEPTH} levels",
                    self.what
                ),
            ));
        }
        Ok(())
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), ScimError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(self.pos, what))
        }
    }

    fn parse_or(&mut self) -> Result<Filter, ScimError> {
        let mut terms = vec![self.parse_and()?];
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.keyword("or") {
                self.pos += 2;
                terms.push(self.parse_and()?);
            } else {
                self.pos = save;
                break;
            }
        }
        balanced(terms, Filter::Or).ok_or_else(|| self.error(self.pos, "a filter expression"))
    }

    fn parse_and(&mut self) -> Result<Filter, ScimError> {
        let mut terms = vec![self.parse_unary()?];
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.keyword("and") {
                self.pos += 3;
                terms.push(self.parse_unary()?);
            } else {
                self.pos = save;
                break;
            }
        }
        balanced(terms, Filter::And).ok_or_else(|| self.error(self.pos, "a filter expression"))
    }

    fn parse_unary(&mut self) -> Result<Filter, ScimError> {
        self.skip_ws();
        if self.peek() == Some(b'(') {
            return self.parenthesized();
        }
        if self.keyword("not") {
            let save = self.pos;
            self.pos += 3;
            self.skip_ws();
            if self.peek() == Some(b'(') {
                return Ok(Filter::Not(Box::new(self.parenthesized()?)));
            }
            // An attribute called `not`.
            self.pos = save;
        }
        self.parse_attr_exp()
    }

    fn parenthesized(&mut self) -> Result<Filter, ScimError> {
        self.enter(self.pos)?;
        self.pos += 1;
        let f = self.parse_or()?;
        self.skip_ws();
        self.expect(b')', "\")\"")?;
        self.depth -= 1;
        Ok(f)
    }

    fn value_filter(&mut self) -> Result<Filter, ScimError> {
        let saved_kind = self.kind;
        if self.path_mode {
            self.kind = ScimType::InvalidFilter;
        }
        self.enter(self.pos)?;
        self.pos += 1;
        self.in_brackets = true;
        let inner = self.parse_or()?;
        self.skip_ws();
        self.expect(b']', "\"]\"")?;
        self.in_brackets = false;
        self.depth -= 1;
        self.kind = saved_kind;
        Ok(inner)
    }

    fn parse_attr_exp(&mut self) -> Result<Filter, ScimError> {
        let start = self.pos;
        let token = self.take_while(is_path_byte);
        if token.is_empty() {
            return Err(self.error(start, "an attribute path, \"(\" or \"not (\""));
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(ScimError::bad_request(
                self.kind,
                format!(
                    "invalid {} at byte {start}: more than {MAX_TERMS} comparisons",
                    self.what
                ),
            ));
        }
        let path = AttrPath::parse(token).map_err(|_| {
            self.error(
                start,
                "an attribute path such as userName, name.givenName or urn:...:User:userName",
            )
        })?;
        if self.in_brackets && (path.urn.is_some() || path.sub.is_some()) {
            return Err(self.error(start, "a sub-attribute name (paths inside \"[...]\" are relative)"));
        }
        if self.peek() == Some(b'[') {
            if self.in_brackets {
                return Err(self.error(self.pos, "an operator (value filters cannot be nested)"));
            }
            if path.sub.is_some() {
                return Err(self.error(
                    self.pos,
                    "an operator (a value filter applies to an attribute, not a sub-attribute)",
                ));
            }
            let inner = self.value_filter()?;
            if self.peek() == Some(b'.') {
                self.pos += 1;
                let at = self.pos;
                let name = self.take_while(is_path_byte);
                if !valid_name(name) {
                    return Err(self.error(at, "a sub-attribute name after \"].\""));
                }
                let cmp = self.parse_operation(AttrPath::new(name))?;
                return Ok(Filter::ValuePath {
                    path,
                    filter: Box::new(Filter::And(Box::new(inner), Box::new(cmp))),
                });
            }
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        self.parse_operation(path)
    }

    /// The operator and value after an attribute path.
    fn parse_operation(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        self.skip_ws();
        let at = self.pos;
        let word = self.take_while(|b| b.is_ascii_alphabetic());
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::parse(word) else {
            return Err(self.error(at, "an operator (eq, ne, co, sw, ew, gt, lt, ge, le or pr)"));
        };
        self.skip_ws();
        let value = self.parse_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn parse_value(&mut self) -> Result<Value, ScimError> {
        let start = self.pos;
        if self.peek() == Some(b'"') {
            let bytes = self.src.as_bytes();
            let mut i = start + 1;
            loop {
                match bytes.get(i) {
                    None => return Err(self.error(start, "a string with a closing quote")),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let raw = self.src.get(start..=i).unwrap_or_default();
            let s: String =
                serde_json::from_str(raw).map_err(|_| self.error(start, "a valid JSON string (check its escapes)"))?;
            self.pos = i + 1;
            return Ok(Value::String(s));
        }
        let token = self.take_while(is_value_byte);
        if token.is_empty() {
            return Err(self.error(start, "a value (a string, number, true, false or null)"));
        }
        if token.eq_ignore_ascii_case("true") {
            return Ok(Value::Bool(true));
        }
        if token.eq_ignore_ascii_case("false") {
            return Ok(Value::Bool(false));
        }
        if token.eq_ignore_ascii_case("null") {
            return Ok(Value::Null);
        }
        if token.bytes().next().is_some_and(|b| b == b'-' || b.is_ascii_digit())
            && let Some(n) = json_number(token)
        {
            return Ok(Value::Number(n));
        }
        // Tolerance: a bare token is a string (authentik, Entra examples).
        Ok(Value::String(token.to_owned()))
    }
}

/// A JSON number token as a number: integers exactly, others with the
/// standard library's correctly rounded parser (serde_json's default one is
/// not, which would make a printed filter parse back differently).
fn json_number(token: &str) -> Option<Number> {
    serde_json::from_str::<Number>(token).ok()?;
    if let Ok(i) = token.parse::<i64>() {
        return Some(Number::from(i));
    }
    if let Ok(u) = token.parse::<u64>() {
        return Some(Number::from(u));
    }
    token.parse::<f64>().ok().and_then(Number::from_f64)
}

/// Folds `terms` into a balanced tree of `ctor`, keeping their order.
fn balanced(mut terms: Vec<Filter>, ctor: fn(Box<Filter>, Box<Filter>) -> Filter) -> Option<Filter> {
    while terms.len() > 1 {
        let mut next = Vec::with_capacity(terms.len().div_ceil(2));
        let mut it = terms.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(ctor(Box::new(a), Box::new(b))),
                None => next.push(a),
            }
        }
        terms = next;
    }
    terms.pop()
}

// ---- evaluation ----------------------------------------------------------------

/// What the paths of a filter are relative to.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Resource(&'a ResourceSchema),
    /// One value of a multi-valued complex attribute (inside `[...]`).
    Element(&'a Attribute),
}

/// The values at a path, and the attribute definition that types them.
struct Found<'a, 'v> {
    leaf: &'a Attribute,
    values: Vec<&'v Value>,
}

/// A key of a JSON object, exactly or else case-insensitively.
pub(crate) fn get_ci<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    let m = v.as_object()?;
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// The attribute, sub-attribute and raw value a path names in `scope`.
fn attribute_value<'a, 'v>(
    scope: Scope<'a>,
    v: &'v Value,
    path: &AttrPath,
) -> Option<(&'a Attribute, Option<&'a Attribute>, Option<&'v Value>)> {
    match scope {
        Scope::Resource(rs) => {
            let r = rs.resolve(path)?;
            let container = match r.def.extension {
                Some(ext) => get_ci(v, &ext.id),
                None => Some(v),
            };
            let raw = container.and_then(|c| get_ci(c, &r.def.attr.name));
            Some((r.def.attr, r.sub, raw))
        }
        Scope::Element(parent) => {
            if path.urn.is_some() || path.sub.is_some() {
                return None;
            }
            let a = parent.sub(&path.name)?;
            Some((a, None, get_ci(v, &a.name)))
        }
    }
}

/// The values of an attribute: an array's elements for a multi-valued one.
fn elements<'v>(attr: &Attribute, raw: Option<&'v Value>) -> Vec<&'v Value> {
    match raw {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if attr.multi_valued => items.iter().collect(),
        Some(x) => vec![x],
    }
}

/// The values a path designates. With `default_value`, a multi-valued
/// complex attribute without sub-attribute stands for its `value`s.
fn locate<'a, 'v>(scope: Scope<'a>, v: &'v Value, path: &AttrPath, default_value: bool) -> Option<Found<'a, 'v>> {
    let (attr, sub, raw) = attribute_value(scope, v, path)?;
    let items = elements(attr, raw);
    let sub = match sub {
        Some(s) => Some(s),
        None if default_value && attr.ty == AttrType::Complex && attr.multi_valued => attr.sub("value"),
        None => None,
    };
    match sub {
        Some(sub) => Some(Found {
            leaf: sub,
            values: items.iter().filter_map(|e| get_ci(e, &sub.name)).collect(),
        }),
        None => Some(Found {
            leaf: attr,
            values: items,
        }),
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(m) => m.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// A filter value as text: strings as they are, numbers and booleans as
/// JSON (a bare `12345` compared with a string attribute).
fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<Number> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => serde_json::from_str(s.trim()).ok(),
        _ => None,
    }
}

fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn by_ordering(op: CompareOp, ord: Option<Ordering>) -> bool {
    let Some(ord) = ord else { return false };
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_strings(case_exact: bool, actual: &str, op: CompareOp, expected: &str) -> bool {
    let (a, b) = if case_exact {
        (Cow::Borrowed(actual), Cow::Borrowed(expected))
    } else {
        (Cow::Owned(actual.to_lowercase()), Cow::Owned(expected.to_lowercase()))
    };
    match op {
        CompareOp::Co => a.contains(&*b),
        CompareOp::Sw => a.starts_with(&*b),
        CompareOp::Ew => a.ends_with(&*b),
        _ => by_ordering(op, Some(a.cmp(&b))),
    }
}

/// One attribute value against a (non-null) filter value.
fn compare_value(leaf: &Attribute, actual: &Value, op: CompareOp, expected: &Value) -> bool {
    match leaf.ty {
        AttrType::Complex => false,
        AttrType::Boolean => match (as_bool(actual), as_bool(expected)) {
            (Some(a), Some(b)) => matches!(op, CompareOp::Eq | CompareOp::Ne) && by_ordering(op, Some(a.cmp(&b))),
            _ => false,
        },
        AttrType::Integer | AttrType::Decimal => match (as_number(actual), as_number(expected)) {
            (Some(a), Some(b)) => by_ordering(op, cmp_numbers(&a, &b)),
            _ => false,
        },
        AttrType::DateTime => {
            let (Some(a), Some(b)) = (actual.as_str(), text(expected)) else {
                return false;
            };
            match (parse_datetime(a), parse_datetime(&b)) {
                (Some(x), Some(y)) if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) => {
                    by_ordering(op, Some(x.cmp(&y)))
                }
                _ => compare_strings(true, a, op, &b),
            }
        }
        AttrType::String | AttrType::Reference | AttrType::Binary => match (actual, text(expected)) {
            (Value::String(a), Some(b)) => compare_strings(leaf.case_exact, a, op, &b),
            _ => false,
        },
    }
}

impl Filter {
    /// Whether `resource` (a full resource as returned to clients: `id`,
    /// `meta`, extensions under their URN keys) matches.
    pub fn matches(&self, resource: &Value, schema: &ResourceSchema) -> bool {
        self.eval(Scope::Resource(schema), resource)
    }

    /// Whether one value of the complex attribute `attr` matches, the
    /// filter's paths naming sub-attributes of `attr` (the inside of
    /// `attr[...]`).
    pub fn matches_element(&self, element: &Value, attr: &Attribute) -> bool {
        self.eval(Scope::Element(attr), element)
    }

    fn eval(&self, scope: Scope<'_>, v: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.eval(scope, v) && b.eval(scope, v),
            Filter::Or(a, b) => a.eval(scope, v) || b.eval(scope, v),
            Filter::Not(a) => !a.eval(scope, v),
            Filter::Present(path) => {
                locate(scope, v, path, false).is_some_and(|f| f.values.iter().any(|x| is_present(x)))
            }
            Filter::Compare { path, op, value } => {
                let Some(found) = locate(scope, v, path, true) else {
                    return false;
                };
                let any = |op| found.values.iter().any(|x| compare_value(found.leaf, x, op, value));
                match (op, value) {
                    (CompareOp::Eq, Value::Null) => !found.values.iter().any(|x| is_present(x)),
                    (CompareOp::Ne, Value::Null) => found.values.iter().any(|x| is_present(x)),
                    (_, Value::Null) => false,
                    (CompareOp::Ne, _) => !any(CompareOp::Eq),
                    (op, _) => any(*op),
                }
            }
            Filter::ValuePath { path, filter } => {
                let Scope::Resource(_) = scope else { return false };
                let Some((attr, None, raw)) = attribute_value(scope, v, path) else {
                    return false;
                };
                attr.ty == AttrType::Complex
                    && elements(attr, raw)
                        .into_iter()
                        .any(|e| e.is_object() && filter.eval(Scope::Element(attr), e))
            }
        }
    }

    /// Checks comparisons against the schema: `gt`/`ge`/`lt`/`le` on a
    /// boolean or binary attribute, any comparison of a complex attribute
    /// without sub-attribute (other than `pr`), ordering against `null`,
    /// a dateTime compared with something that is not one, and a value
    /// filter on an attribute that is not complex are `invalidFilter` (RFC 7644 3.4.2.2). Unknown attributes are fine: they
    /// match nothing.
    pub fn validate(&self, schema: &ResourceSchema) -> Result<(), ScimError> {
        self.check(Scope::Resource(schema))
    }

    fn check(&self, scope: Scope<'_>) -> Result<(), ScimError> {
        let bad = |detail: String| Err(ScimError::bad_request(ScimType::InvalidFilter, detail));
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.check(scope)?;
                b.check(scope)
            }
            Filter::Not(a) => a.check(scope),
            Filter::Present(_) => Ok(()),
            Filter::Compare { path, op, value } => {
                let Some(found) = locate(scope, &Value::Null, path, true) else {
                    return Ok(());
                };
                let ty = found.leaf.ty;
                if ty == AttrType::Complex {
                    return bad(format!("{path} is complex: compare one of its sub-attributes"));
                }
                if op.is_ordering() && matches!(ty, AttrType::Boolean | AttrType::Binary) {
                    return bad(format!("{path} is {}: {} does not apply", ty.as_str(), op.as_str()));
                }
                if value.is_null() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                    return bad(format!("{path} {} null: only eq and ne compare with null", op.as_str()));
                }
                let by_instant = !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
                if ty == AttrType::DateTime
                    && by_instant
                    && !value.is_null()
                    && text(value).is_none_or(|t| parse_datetime(&t).is_none())
                {
                    return bad(format!("{path} is a dateTime: {value} is not an RFC 3339 date-time"));
                }
                Ok(())
            }
            Filter::ValuePath { path, filter } => {
                let Some((attr, sub, _)) = attribute_value(scope, &Value::Null, path) else {
                    return Ok(());
                };
                if attr.ty != AttrType::Complex || sub.is_some() {
                    return bad(format!("{path}[...]: a value filter needs a complex attribute"));
                }
                filter.check(Scope::Element(attr))
            }
        }
    }

    /// The string equalities every match must satisfy (conjuncts, looking
    /// into value filters), for answering from an index: `userName eq "x"`,
    /// `id eq "x" and manager eq "y"`, `emails[type eq "work"].value eq "x"`
    /// (giving `emails.type` and `emails.value`), `members[value eq "x"]`
    /// (giving `members.value`). Paths inside a value filter come back
    /// qualified with its attribute. Ordered by likely selectivity: `id`,
    /// then `userName`, then `externalId`, then the rest as written.
    /// Equalities under `or` or `not`, and non-string values, are left out.
    pub fn candidate_equalities(&self) -> Vec<(AttrPath, &str)> {
        let mut out = Vec::new();
        self.conjuncts(None, &mut out);
        let rank = |p: &AttrPath| -> u8 {
            let core = p.urn.as_deref().is_none_or(|u| {
                u.eq_ignore_ascii_case(crate::schema::USER_URN) || u.eq_ignore_ascii_case(crate::schema::GROUP_URN)
            });
            match (core, p.sub.is_none(), p.name.to_ascii_lowercase().as_str()) {
                (true, true, "id") => 0,
                (true, true, "username") => 1,
                (true, true, "externalid") => 2,
                _ => 3,
            }
        };
        out.sort_by_key(|(p, _)| rank(p));
        out
    }

    fn conjuncts<'f>(&'f self, within: Option<&AttrPath>, out: &mut Vec<(AttrPath, &'f str)>) {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(s),
            } => match within {
                None => out.push((path.clone(), s)),
                Some(outer) if path.urn.is_none() && path.sub.is_none() => out.push((
                    AttrPath {
                        urn: outer.urn.clone(),
                        name: outer.name.clone(),
                        sub: Some(path.name.clone()),
                    },
                    s,
                )),
                Some(_) => {}
            },
            Filter::And(a, b) => {
                a.conjuncts(within, out);
                b.conjuncts(within, out);
            }
            Filter::ValuePath { path, filter } if within.is_none() && path.sub.is_none() => {
                filter.conjuncts(Some(path), out);
            }
            _ => {}
        }
    }

    /// The path and value when the whole filter is one string equality
    /// (`userName eq "x"`, `emails[value eq "x"]` as `emails.value`).
    pub fn equality_lookup(&self) -> Option<(AttrPath, &str)> {
        match self {
            Filter::Compare { .. } => {}
            Filter::ValuePath { filter, .. } if matches!(**filter, Filter::Compare { .. }) => {}
            _ => return None,
        }
        let mut all = self.candidate_equalities();
        if all.len() == 1 { all.pop() } else { None }
    }
}

// ---- sorting -------------------------------------------------------------------

/// A sort key (RFC 7644 3.4.2.3). Keys of different kinds (which only a
/// malformed document produces) order booleans, numbers, instants, strings.
#[derive(Debug, Clone)]
pub enum SortValue {
    Bool(bool),
    Number(f64),
    /// Nanoseconds since the Unix epoch.
    DateTime(i128),
    /// Lower-cased unless the attribute is `caseExact`.
    String(String),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            SortValue::Bool(_) => 0,
            SortValue::Number(_) => 1,
            SortValue::DateTime(_) => 2,
            SortValue::String(_) => 3,
        }
    }
}

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SortValue::Bool(a), SortValue::Bool(b)) => a.cmp(b),
            (SortValue::Number(a), SortValue::Number(b)) => a.total_cmp(b),
            (SortValue::DateTime(a), SortValue::DateTime(b)) => a.cmp(b),
            (SortValue::String(a), SortValue::String(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortValue {}

/// The sort key of `resource` for `sortBy=path`: for a multi-valued
/// attribute, the primary value, else the first (of `value` when no
/// sub-attribute is named). `None` when the resource has no such value.
pub fn sort_key(resource: &Value, path: &AttrPath, schema: &ResourceSchema) -> Option<SortValue> {
    let (attr, sub, raw) = attribute_value(Scope::Resource(schema), resource, path)?;
    let items = elements(attr, raw);
    let chosen = if attr.multi_valued {
        let primary = items
            .iter()
            .find(|e| get_ci(e, "primary").and_then(as_bool) == Some(true));
        *primary.or_else(|| items.first())?
    } else {
        *items.first()?
    };
    let (leaf, v) = match sub {
        Some(sub) => (sub, get_ci(chosen, &sub.name)?),
        None if attr.ty == AttrType::Complex => (attr.sub("value")?, get_ci(chosen, "value")?),
        None => (attr, chosen),
    };
    match leaf.ty {
        AttrType::Complex => None,
        AttrType::Boolean => as_bool(v).map(SortValue::Bool),
        AttrType::Integer | AttrType::Decimal => as_number(v).and_then(|n| n.as_f64()).map(SortValue::Number),
        AttrType::DateTime => {
            let s = v.as_str()?;
            Some(match parse_datetime(s) {
                Some(t) => SortValue::DateTime(t.unix_timestamp_nanos()),
                None => SortValue::String(s.to_owned()),
            })
        }
        AttrType::String | AttrType::Reference | AttrType::Binary => {
            let s = v.as_str()?;
            Some(SortValue::String(if leaf.case_exact {
                s.to_owned()
            } else {
                s.to_lowercase()
            }))
        }
    }
}

// ---- projection ----------------------------------------------------------------

/// Where an attribute lives: top level, or the extension at that index.
type Container = Option<usize>;

/// A resolved `attributes`/`excludedAttributes` list.
#[derive(Default)]
struct Selection {
    /// Whole extensions, by index.
    extensions: Vec<usize>,
    /// (container, lower-case attribute name, lower-case sub-attribute).
    attrs: Vec<(Container, String, Option<String>)>,
}

impl Selection {
    fn new(schema: &ResourceSchema, paths: &[AttrPath]) -> Self {
        let mut sel = Selection::default();
        let index = |urn: &str| schema.extensions().iter().position(|e| e.id.eq_ignore_ascii_case(urn));
        for p in paths {
            if let Some(ext) = schema.whole_extension(p)
                && let Some(i) = index(&ext.id)
            {
                sel.extensions.push(i);
                continue;
            }
            let sub = p.sub.as_deref().map(str::to_ascii_lowercase);
            match schema.attribute(p.urn.as_deref(), &p.name) {
                Some(def) => {
                    let container = def.extension.and_then(|e| index(&e.id));
                    sel.attrs.push((container, def.attr.name.to_ascii_lowercase(), sub));
                }
                // Unknown top-level keys may still be named.
                None if p.urn.is_none() => sel.attrs.push((None, p.name.to_ascii_lowercase(), sub)),
                None => {}
            }
        }
        sel
    }

    /// `None`: the attribute is not named. `Some(None)`: named whole.
    /// `Some(Some(subs))`: only these sub-attributes are named.
    fn named(&self, container: Container, name: &str) -> Option<Option<Vec<&str>>> {
        if container.is_some_and(|i| self.extensions.contains(&i)) {
            return Some(None);
        }
        let name = name.to_ascii_lowercase();
        let mut subs = Vec::new();
        let mut any = false;
        for (c, n, s) in &self.attrs {
            if *c == container && *n == name {
                any = true;
                match s {
                    None => return Some(None),
                    Some(s) => subs.push(s.as_str()),
                }
            }
        }
        any.then_some(Some(subs))
    }
}

/// Keeps (`keep = true`) or drops the named sub-attributes of a complex
/// value or of each element of a multi-valued one. `None` when nothing is
/// left.
fn filter_subs(v: &Value, subs: &[&str], keep: bool) -> Option<Value> {
    let one = |e: &Value| -> Option<Value> {
        let m = e.as_object()?;
        let out: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| subs.iter().any(|s| k.eq_ignore_ascii_case(s)) == keep)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!out.is_empty()).then_some(Value::Object(out))
    };
    match v {
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(one).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        Value::Object(_) => one(v),
        other => Some(other.clone()),
    }
}

/// Drops sub-attributes that are never returned (none among the built-ins,
/// but the rule is the schema's).
fn strip_never(attr: &Attribute, v: &Value) -> Option<Value> {
    let never: Vec<&str> = attr
        .sub_attributes
        .iter()
        .filter(|s| s.returned == Returned::Never)
        .map(|s| s.name.as_str())
        .collect();
    if never.is_empty() {
        Some(v.clone())
    } else {
        filter_subs(v, &never, false)
    }
}

fn project_attr(
    attr: Option<&Attribute>,
    name: &str,
    container: Container,
    v: &Value,
    attributes: Option<&Selection>,
    excluded: Option<&Selection>,
) -> Option<Value> {
    let returned = attr.map_or(Returned::Default, |a| a.returned);
    if returned == Returned::Never {
        return None;
    }
    let mut out = match attr {
        Some(a) => strip_never(a, v)?,
        None => v.clone(),
    };
    if returned == Returned::Always {
        return Some(out);
    }
    match attributes {
        Some(sel) => match sel.named(container, name)? {
            None => {}
            Some(subs) => out = filter_subs(&out, &subs, true)?,
        },
        None if returned == Returned::Request => return None,
        None => {}
    }
    if let Some(sel) = excluded {
        match sel.named(container, name) {
            Some(None) => return None,
            Some(Some(subs)) => out = filter_subs(&out, &subs, false)?,
            None => {}
        }
    }
    Some(out)
}

/// [`project`] for a resource the caller no longer needs: without
/// `attributes` or `excludedAttributes` (what identity providers almost
/// always send) the resource is trimmed in place, with no copy; otherwise
/// it is projected as by [`project`].
pub fn project_owned(
    resource: Value,
    schema: &ResourceSchema,
    attributes: Option<&[AttrPath]>,
    excluded: Option<&[AttrPath]>,
) -> Value {
    if attributes.is_some() || excluded.is_some() {
        return project(&resource, schema, attributes, excluded);
    }
    let Value::Object(mut obj) = resource else {
        return resource;
    };
    obj.retain(|k, v| {
        if k.eq_ignore_ascii_case("schemas") {
            return true;
        }
        if let Some(ext) = schema.extensions().iter().find(|e| e.id.eq_ignore_ascii_case(k)) {
            let Value::Object(inner) = v else {
                return false;
            };
            inner.retain(|k2, v2| keep_by_default(ext.attribute(k2), v2));
            return !inner.is_empty();
        }
        keep_by_default(schema.top_attribute(k), v)
    });
    Value::Object(obj)
}

/// What [`project_attr`] does without `attributes` and `excluded`, in
/// place: whether to keep the value, after dropping its never-returned
/// sub-attributes.
fn keep_by_default(attr: Option<&Attribute>, v: &mut Value) -> bool {
    match attr.map_or(Returned::Default, |a| a.returned) {
        Returned::Never | Returned::Request => false,
        _ => match attr {
            Some(a) if a.sub_attributes.iter().any(|s| s.returned == Returned::Never) => match strip_never(a, v) {
                Some(stripped) => {
                    *v = stripped;
                    true
                }
                None => false,
            },
            _ => true,
        },
    }
}

/// Applies `returned` and the `attributes` / `excludedAttributes`
/// parameters (RFC 7644 3.4.2.5, RFC 7643 section 7) to a full resource.
///
/// `schemas` and `returned: always` attributes (`id`) are always kept;
/// `returned: never` ones (`password`) never are. With `attributes`, only
/// the named attributes (or sub-attributes, `name.givenName`,
/// `emails.value`, or whole extensions by URN) are kept. `excluded` then
/// removes attributes, sub-attributes or whole extensions. Keys in no
/// schema count as `returned: default`.
pub fn project(
    resource: &Value,
    schema: &ResourceSchema,
    attributes: Option<&[AttrPath]>,
    excluded: Option<&[AttrPath]>,
) -> Value {
    let Value::Object(obj) = resource else {
        return resource.clone();
    };
    let attributes = attributes.map(|p| Selection::new(schema, p));
    let excluded = excluded.map(|p| Selection::new(schema, p));
    let mut out = Map::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") {
            out.insert(k.clone(), v.clone());
            continue;
        }
        if let Some(i) = schema.extensions().iter().position(|e| e.id.eq_ignore_ascii_case(k)) {
            let (Some(ext), Value::Object(inner)) = (schema.extensions().get(i), v) else {
                continue;
            };
            let mut m = Map::new();
            for (k2, v2) in inner {
                let attr = ext.attribute(k2);
                if let Some(pv) = project_attr(attr, k2, Some(i), v2, attributes.as_ref(), excluded.as_ref()) {
                    m.insert(k2.clone(), pv);
                }
            }
            if !m.is_empty() {
                out.insert(k.clone(), Value::Object(m));
            }
            continue;
        }
        let attr = schema.top_attribute(k);
        if let Some(pv) = project_attr(attr, k, None, v, attributes.as_ref(), excluded.as_ref()) {
            out.insert(k.clone(), pv);
        }
    }
    Value::Object(out)
}
