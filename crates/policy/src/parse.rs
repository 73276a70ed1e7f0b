//! Reading policy files into a located, untyped-free intermediate form.
//!
//! The TOML is parsed with `toml`'s span-preserving `DeTable` and walked by
//! hand (rather than through serde) so that *every* problem in a file — an
//! unknown key, a wrong type, a missing key — is reported with its own
//! position instead of stopping at the first one. A TOML syntax error stops
//! the file (later syntax errors are usually consequences of the first).
//! This module checks only the *shape* of the document; names, routes,
//! methods and patterns are validated by the compiler, which sees all files.

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Diagnostics, Problem};
use crate::location::FileCtx;

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<Cow<'i, str>>;

/// A value with the byte offset where it starts in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sp<T> {
    pub(crate) value: T,
    pub(crate) offset: usize,
}

/// Walks one parsed file, reporting problems into shared diagnostics.
#[derive(Debug)]
pub(crate) struct Walker<'a, 'f> {
    pub(crate) file: &'a FileCtx<'f>,
    pub(crate) diags: &'a mut Diagnostics,
}

impl<'f> Walker<'_, 'f> {
    pub(crate) fn error(&mut self, offset: usize, problem: Problem) {
        self.diags.push(self.file, offset, problem);
    }

    /// Parses the file as a TOML document; reports a syntax error and returns
    /// `None` when it is not valid TOML.
    pub(crate) fn document(&mut self) -> Option<DeTable<'f>> {
        match DeTable::parse(self.file.text) {
            Ok(table) => Some(table.into_inner()),
            Err(err) => {
                let offset = err.span().map_or(0, |s| s.start);
                let message = err.message().trim().trim_end_matches('.').to_owned();
                self.error(offset, Problem::Syntax { message });
                None
            }
        }
    }

    pub(crate) fn unknown_key(&mut self, key: &Key<'_>, context: &'static str, expected: &'static [&'static str]) {
        self.error(
            key.span().start,
            Problem::UnknownKey {
                key: key.get_ref().to_string(),
                context,
                expected,
            },
        );
    }

    fn wrong_type(&mut self, value: &Value<'_>, what: String, expected: &'static str) {
        self.error(
            value.span().start,
            Problem::WrongType {
                what,
                expected,
                found: value.get_ref().type_str(),
            },
        );
    }

    pub(crate) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        what: impl FnOnce() -> String,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(value, what(), "a table");
                None
            }
        }
    }

    /// The elements of an array of tables, each with its start offset.
    pub(crate) fn tables<'v, 'i>(&mut self, value: &'v Value<'i>, what: &str) -> Vec<(usize, &'v DeTable<'i>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, what.to_owned(), "an array of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((item.span().start, t)),
                _ => self.wrong_type(item, format!("each entry of {what}"), "a table"),
            }
        }
        out
    }

    pub(crate) fn string(&mut self, value: &Value<'_>, what: &str) -> Option<Sp<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(Sp {
                value: s.to_string(),
                offset: value.span().start,
            }),
            _ => {
                self.wrong_type(value, what.to_owned(), "a string");
                None
            }
        }
    }

    /// An array of strings (`what` is how the value is named in messages,
    /// e.g. `"paths"` with quotes). Reports every element of the wrong type
    /// and returns the others, so that they can still be checked; returns
    /// `None` if the value is not an array. (A reported element makes the
    /// whole compilation fail, so a partial list never reaches a policy.)
    pub(crate) fn strings(&mut self, value: &Value<'_>, what: &str) -> Option<Vec<Sp<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, what.to_owned(), "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Sp {
                    value: s.to_string(),
                    offset: item.span().start,
                }),
                _ => self.wrong_type(item, format!("each entry of {what}"), "a string"),
            }
        }
        Some(out)
    }

    /// A non-empty array of strings (see [`Self::strings`]).
    pub(crate) fn nonempty_strings(
        &mut self,
        value: &Value<'_>,
        key: &'static str,
        hint: &'static str,
    ) -> Option<Vec<Sp<String>>> {
        let list = self.strings(value, &format!("{key:?}"))?;
        if matches!(value.get_ref(), DeValue::Array(items) if items.is_empty()) {
            self.error(value.span().start, Problem::EmptyList { key, hint });
            return None;
        }
        Some(list)
    }
}

/// One rule as written.
#[derive(Debug, Clone)]
pub(crate) struct RawRule {
    /// Start of the rule's table (`{` of an inline table, or `[[` header).
    pub(crate) offset: usize,
    pub(crate) route: Sp<String>,
    /// `None` = any method.
    pub(crate) methods: Option<Vec<Sp<String>>>,
    pub(crate) paths: Vec<Sp<String>>,
}

/// The `allow` and `deny` lists of a role or of `[public]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawRules {
    pub(crate) allow: Vec<RawRule>,
    pub(crate) deny: Vec<RawRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawRole {
    pub(crate) name: Sp<String>,
    pub(crate) rules: RawRules,
}

/// A `[groups]` or `[users]` entry: key -> role names.
#[derive(Debug, Clone)]
pub(crate) struct RawGrant {
    pub(crate) key: Sp<String>,
    pub(crate) roles: Vec<Sp<String>>,
}

/// Everything one policy file contributes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawFile {
    pub(crate) roles: Vec<RawRole>,
    pub(crate) groups: Vec<RawGrant>,
    pub(crate) users: Vec<RawGrant>,
    pub(crate) public: Option<RawRules>,
}

const TOP_KEYS: &[&str] = &["roles", "groups", "users", "public"];
const RULES_KEYS: &[&str] = &["allow", "deny"];
const RULE_KEYS: &[&str] = &["route", "methods", "paths"];

/// Parses one policy file. Returns what could be understood; problems go to
/// the walker's diagnostics.
pub(crate) fn policy_file(w: &mut Walker<'_, '_>) -> RawFile {
    let mut raw = RawFile::default();
    let Some(doc) = w.document() else {
        return raw;
    };
    for (key, value) in doc.iter() {
        match &**key.get_ref() {
            "roles" => {
                if let Some(roles) = w.table(value, || "\"roles\"".into()) {
                    for (name, body) in roles.iter() {
                        let name = Sp {
                            value: name.get_ref().to_string(),
                            offset: name.span().start,
                        };
                        if name.value.is_empty() {
                            w.error(name.offset, Problem::EmptyName { what: "role name" });
                        }
                        let what = || format!("role {:?}", name.value);
                        if let Some(body) = w.table(body, what) {
                            let rules = rules(w, body, "in role");
                            raw.roles.push(RawRole { name, rules });
                        }
                    }
                }
            }
            "groups" => raw.groups = grants(w, value, "groups"),
            "users" => raw.users = grants(w, value, "users"),
            "public" => {
                if let Some(body) = w.table(value, || "\"public\"".into()) {
                    raw.public = Some(rules(w, body, "in [public]"));
                }
            }
            _ => w.unknown_key(key, "at top level", TOP_KEYS),
        }
    }
    raw
}

fn rules(w: &mut Walker<'_, '_>, body: &DeTable<'_>, context: &'static str) -> RawRules {
    let mut out = RawRules::default();
    for (key, value) in body.iter() {
        let list = match &**key.get_ref() {
            "allow" => &mut out.allow,
            "deny" => &mut out.deny,
            _ => {
                w.unknown_key(key, context, RULES_KEYS);
                continue;
            }
        };
        for (offset, table) in w.tables(value, &format!("{:?}", key.get_ref())) {
            if let Some(r) = rule(w, offset, table) {
                list.push(r);
            }
        }
    }
    out
}

fn rule(w: &mut Walker<'_, '_>, offset: usize, table: &DeTable<'_>) -> Option<RawRule> {
    let mut route = None;
    let mut methods = None;
    let mut paths = None;
    for (key, value) in table.iter() {
        match &**key.get_ref() {
            "route" => route = w.string(value, "\"route\""),
            "methods" => {
                methods = w.nonempty_strings(value, "methods", "; omit it to match any method");
            }
            "paths" => paths = w.nonempty_strings(value, "paths", ""),
            _ => w.unknown_key(key, "in rule", RULE_KEYS),
        }
    }
    for key in ["route", "paths"] {
        if !table.contains_key(key) {
            w.error(
                offset,
                Problem::MissingKey {
                    key,
                    context: "in rule",
                },
            );
        }
    }
    // A rule with other problems is still returned so that its route and
    // patterns get checked too; the reported problems make compilation fail,
    // so such a rule (e.g. with an invalid `methods` read as "any") never
    // reaches a policy.
    Some(RawRule {
        offset,
        route: route?,
        methods,
        paths: paths?,
    })
}

fn grants(w: &mut Walker<'_, '_>, value: &Value<'_>, section: &'static str) -> Vec<RawGrant> {
    let mut out = Vec::new();
    let Some(table) = w.table(value, || format!("{section:?}")) else {
        return out;
    };
    for (key, roles) in table.iter() {
        let key = Sp {
            value: key.get_ref().to_string(),
            offset: key.span().start,
        };
        let what = format!("{section}.{:?}", key.value);
        if let Some(roles) = w.strings(roles, &what) {
            out.push(RawGrant { key, roles });
        }
    }
    out
}
