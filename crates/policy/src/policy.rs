//! The compiled policy and its evaluator: who is asking ([`Identity`]), what
//! they ask for ([`Request`]) and the answer ([`Decision`]).
//!
//! Evaluation order for [`Policy::decide`]:
//!
//! 1. **Public access**, independent of identity: if a `[public]` allow rule
//!    matches and no `[public]` deny rule does, the request is allowed
//!    ([`Reason::Public`]). Role deny rules do not take public access away —
//!    an anonymous request would be allowed anyway.
//! 2. **Deny rules** of all the subject's roles: the first match denies.
//! 3. **Allow rules** of all the subject's roles: the first match allows.
//! 4. Otherwise **default deny** ([`Reason::NoRuleMatched`]).
//!
//! "First" means roles in definition order (files in the order given to the
//! compiler, roles in file order), then rules in file order. `[public]` deny
//! rules only restrict public access: for a signed-in subject they never
//! produce a denial by themselves.
//!
//! The hot path never allocates: roles are a stack bitset, group and route
//! names are found in flat open-addressing tables, each route's rules are
//! bucketed by their literal path prefix (so only rules whose prefix the path
//! has are looked at, whatever the number of roles), and path patterns are
//! matched in place. The path must already be normalized with
//! [`crate::normalize_path`]; this module does no normalization.

use std::fmt;
use std::sync::Arc;

use crate::hash::{StrTable, U64Table, eq_lowercase, hash_lowercase, word};
use crate::location::Location;
use crate::method::{MethodKey, MethodSet};
use crate::pattern::Pattern;
use crate::roles::{RoleId, RoleList, RoleSet};

#[cfg(test)]
mod tests;

/// The route names the proxy configuration defines. Rules naming any other
/// route are compile errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet {
    names: Vec<String>,
}

impl RouteSet {
    /// A route set from names; duplicates are ignored, order is kept (it is
    /// the order used in error messages).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Self::default();
        for name in names {
            let name = name.into();
            if !out.names.contains(&name) {
                out.names.push(name);
            }
        }
        out
    }

    /// Whether `name` is a known route.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The route names, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Number of routes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no routes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl<S: Into<String>> FromIterator<S> for RouteSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::new(iter)
    }
}

/// A SCIM group as seen by the policy: the SCIM client that owns it and its
/// `displayName`. Both are compared exactly (case-sensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupRef<'a> {
    /// The owning SCIM client's name; `None` when unknown (then only
    /// unqualified policy keys can match).
    pub client: Option<&'a str>,
    /// The group's `displayName`.
    pub display_name: &'a str,
}

impl<'a> GroupRef<'a> {
    /// A group owned by `client`.
    #[must_use]
    pub fn new(client: &'a str, display_name: &'a str) -> Self {
        Self {
            client: Some(client),
            display_name,
        }
    }

    /// Parses the policy notation: `"client:displayName"` (split at the first
    /// `:`) or `"displayName"` (no client).
    #[must_use]
    pub fn parse(key: &'a str) -> Self {
        match key.split_once(':') {
            Some((client, display_name)) => Self {
                client: Some(client),
                display_name,
            },
            None => Self {
                client: None,
                display_name: key,
            },
        }
    }
}

impl fmt::Display for GroupRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(client) => write!(f, "{client}:{}", self.display_name),
            None => f.write_str(self.display_name),
        }
    }
}

/// An owned [`GroupRef`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// The owning SCIM client's name, if known.
    pub client: Option<String>,
    /// The group's `displayName`.
    pub display_name: String,
}

impl Group {
    /// Parses `"client:displayName"` or `"displayName"` (see [`GroupRef::parse`]).
    #[must_use]
    pub fn parse(key: &str) -> Self {
        let g = GroupRef::parse(key);
        Self {
            client: g.client.map(str::to_owned),
            display_name: g.display_name.to_owned(),
        }
    }

    /// Borrows this group.
    #[must_use]
    pub fn as_ref(&self) -> GroupRef<'_> {
        GroupRef {
            client: self.client.as_deref(),
            display_name: &self.display_name,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// Who is making a request. Implement this for the directory's user type to
/// evaluate without copying its groups (the iterator should not allocate, to
/// keep [`Policy::decide`] allocation-free); [`Subject`] is a ready-made
/// borrowed implementation.
pub trait Identity {
    /// The SCIM `userName`, or `None` for an anonymous request.
    fn user_name(&self) -> Option<&str>;
    /// The user's effective groups.
    fn groups(&self) -> impl Iterator<Item = GroupRef<'_>>;
}

/// A borrowed [`Identity`]: a user name and a slice of groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The SCIM `userName`; `None` for anonymous requests.
    pub user_name: Option<&'a str>,
    /// The user's effective groups.
    pub groups: &'a [GroupRef<'a>],
}

impl<'a> Subject<'a> {
    /// A signed-in user.
    #[must_use]
    pub fn new(user_name: &'a str, groups: &'a [GroupRef<'a>]) -> Self {
        Self {
            user_name: Some(user_name),
            groups,
        }
    }

    /// Nobody: only `[public]` rules can allow.
    #[must_use]
    pub const fn anonymous() -> Self {
        Self {
            user_name: None,
            groups: &[],
        }
    }
}

impl Identity for Subject<'_> {
    fn user_name(&self) -> Option<&str> {
        self.user_name
    }

    fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        self.groups.iter().copied()
    }
}

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The route name from the proxy configuration.
    pub route: &'a str,
    /// The HTTP method (compared ASCII-case-insensitively).
    pub method: &'a str,
    /// The request path, already normalized with [`crate::normalize_path`].
    pub path: &'a str,
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// An `allow` rule.
    Allow,
    /// A `deny` rule.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// A rule as written, for explaining decisions: where it is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub(crate) location: Location,
    pub(crate) effect: Effect,
    pub(crate) role: Option<String>,
    pub(crate) route: String,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) paths: Vec<String>,
}

impl RuleRef {
    /// Where the rule's table starts (`file:line:column`).
    #[must_use]
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Allow or deny.
    #[must_use]
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// The role the rule belongs to; `None` for `[public]` rules.
    #[must_use]
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The route the rule applies to.
    #[must_use]
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The methods (upper-cased), or `None` for any method.
    #[must_use]
    pub fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }

    /// The path patterns as written.
    #[must_use]
    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

impl fmt::Display for RuleRef {
    /// `deny rule of role "es-reader" at policies/es.toml:7:5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Some(role) => write!(f, "{} rule of role {role:?}", self.effect)?,
            None => write!(f, "{} rule of [public]", self.effect)?,
        }
        write!(f, " at {}", self.location)
    }
}

/// Why a [`Decision`] came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'p> {
    /// An allow rule of one of the subject's roles matched.
    Allowed {
        /// The deciding rule.
        rule: &'p RuleRef,
    },
    /// A deny rule matched (of one of the subject's roles, or — only from
    /// [`Policy::decide_public`] — of `[public]`).
    Denied {
        /// The deciding rule.
        rule: &'p RuleRef,
    },
    /// Nothing matched: default deny.
    NoRuleMatched,
    /// A `[public]` allow rule matched; no identity needed.
    Public {
        /// The deciding rule.
        rule: &'p RuleRef,
    },
}

impl<'p> Reason<'p> {
    /// The deciding rule, if any.
    #[must_use]
    pub fn rule(&self) -> Option<&'p RuleRef> {
        match *self {
            Self::Allowed { rule } | Self::Denied { rule } | Self::Public { rule } => Some(rule),
            Self::NoRuleMatched => None,
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed { rule } => write!(f, "allowed by {rule}"),
            Self::Denied { rule } => write!(f, "denied by {rule}"),
            Self::NoRuleMatched => f.write_str("no rule matched (default deny)"),
            Self::Public { rule } => write!(f, "public: allowed by {rule}"),
        }
    }
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason<'p>,
    /// The subject's effective roles (empty for [`Policy::decide_public`]);
    /// names via [`Policy::role_names`].
    pub roles: RoleSet,
}

impl<'p> Decision<'p> {
    fn new(reason: Reason<'p>, roles: RoleSet) -> Self {
        Self {
            allowed: matches!(reason, Reason::Allowed { .. } | Reason::Public { .. }),
            reason,
            roles,
        }
    }
}

/// The first (up to) 8 bytes of a path as a little-endian word, zero-padded.
#[inline]
fn path_head(path: &str) -> u64 {
    let bytes = path.as_bytes();
    word(bytes.get(..8).unwrap_or(bytes))
}

/// A one-instruction pre-filter: the literal prefix (up to 8 bytes) shared by
/// all of a rule's patterns. Pattern characters are never NUL, so the zero
/// padding of a short path cannot fake a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    value: u64,
    mask: u64,
}

impl Head {
    pub(crate) fn of(patterns: &[Pattern]) -> Self {
        let mut common: Option<&[u8]> = None;
        for p in patterns {
            let prefix = p.literal_prefix().as_bytes();
            common = Some(match common {
                None => prefix,
                Some(c) => {
                    let n = c.iter().zip(prefix).take_while(|(a, b)| a == b).count();
                    c.get(..n).unwrap_or(c)
                }
            });
        }
        let common = common.unwrap_or(&[]);
        let common = common.get(..8).unwrap_or(common);
        let mask = match common.len() {
            8 => u64::MAX,
            n => (1u64 << (8 * n)) - 1,
        };
        Self {
            value: word(common),
            mask,
        }
    }

    #[inline]
    fn admits(self, head: u64) -> bool {
        head & self.mask == self.value
    }

    /// Number of prefix bytes (0 to 8) and their value.
    pub(crate) fn key(self) -> (u32, u64) {
        (self.mask.count_ones() / 8, self.value)
    }

    /// The mask for a prefix of `len` bytes.
    pub(crate) fn mask(len: u32) -> u64 {
        match len {
            0 => 0,
            1..8 => (1u64 << (8 * len)) - 1,
            _ => u64::MAX,
        }
    }
}

/// A compiled rule on the hot path. Its route and role are implied by where
/// it is stored; the fields are ordered by how early the match reads them.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) head: Head,
    pub(crate) methods: MethodSet,
    pub(crate) patterns: Box<[Pattern]>,
    /// What the rule says and where, for decisions.
    pub(crate) info: Arc<RuleRef>,
}

impl Rule {
    #[inline(always)]
    fn matches(&self, probe: &Probe<'_>) -> bool {
        self.head.admits(probe.head) && self.matches_after_head(probe)
    }

    /// Matches a request already known to pass the [`Head`] filter.
    #[inline(always)]
    fn matches_after_head(&self, probe: &Probe<'_>) -> bool {
        self.methods.matches(probe.method) && self.patterns.iter().any(|p| p.matches(probe.path))
    }
}

/// A role's rule on a route, with its place in evaluation order.
#[derive(Debug, Clone)]
pub(crate) struct RoleRule {
    pub(crate) rule: Rule,
    pub(crate) role: RoleId,
    pub(crate) effect: Effect,
    /// Lower is earlier: role definition order, deny before allow, then
    /// position in the files.
    pub(crate) order: u32,
}

/// The rules whose [`Head`] has one particular length.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    /// [`Head::mask`] of the length.
    pub(crate) mask: u64,
    /// Masked path head -> range of [`RouteTable::rules`].
    pub(crate) buckets: U64Table,
}

/// A request prepared once per decision.
#[derive(Debug, Clone, Copy)]
struct Probe<'a> {
    method: MethodKey<'a>,
    path: &'a str,
    head: u64,
}

impl<'a> Probe<'a> {
    #[inline]
    fn new(req: &Request<'a>) -> Self {
        Self {
            method: MethodKey::classify(req.method),
            path: req.path,
            head: path_head(req.path),
        }
    }
}

/// The rules of one route. Role rules are bucketed by their literal path
/// prefix ([`Head`]): for each prefix length present, one table lookup with
/// the request path's first bytes yields exactly the rules whose prefix the
/// path has, so a decision does not scan rules (or roles) that cannot match.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    /// One level per distinct prefix length (0 to 8 bytes).
    pub(crate) levels: Box<[Level]>,
    /// Role rules grouped by (prefix length, prefix), each group in
    /// evaluation order.
    pub(crate) rules: Box<[RoleRule]>,
    pub(crate) public_deny: Box<[Rule]>,
    pub(crate) public_allow: Box<[Rule]>,
}

/// Roles granted to a group `displayName`: to any owner, and per owner.
#[derive(Debug, Clone)]
pub(crate) struct GroupEntry {
    pub(crate) any_client: RoleList,
    pub(crate) by_client: Box<[ClientRoles]>,
}

/// Roles granted to a group of one owning SCIM client.
pub(crate) type ClientRoles = (Box<str>, RoleList);

/// Roles granted directly to a user name (stored lower-cased).
#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub(crate) hash: u64,
    pub(crate) name: Box<str>,
    pub(crate) roles: Box<[RoleId]>,
}

/// A defined role.
#[derive(Debug, Clone)]
pub(crate) struct RoleInfo {
    pub(crate) name: Box<str>,
    pub(crate) location: Location,
}

/// A compiled, immutable policy. Cheap to share behind an `Arc` (see
/// [`crate::PolicyHandle`]); all evaluation methods take `&self`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub(crate) generation: u64,
    pub(crate) routes: StrTable<usize>,
    pub(crate) route_names: Box<[Box<str>]>,
    pub(crate) tables: Box<[RouteTable]>,
    pub(crate) roles: Box<[RoleInfo]>,
    pub(crate) groups: StrTable<GroupEntry>,
    /// Sorted by hash.
    pub(crate) users: Box<[UserEntry]>,
    pub(crate) rules: Box<[Arc<RuleRef>]>,
}

impl Policy {
    /// A policy without rules: everything is denied.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Group displayNames granted roles without a SCIM client qualifier,
    /// sorted. Such a grant matches a group of that name from *any* client,
    /// which is worth a warning when several clients provision users.
    #[must_use]
    pub fn unqualified_groups(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .groups
            .iter()
            .filter(|(_, entry)| !entry.any_client.as_slice().is_empty())
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        names
    }

    /// The reload generation: 0 for a policy not installed in a
    /// [`crate::PolicyHandle`], then 1, 2, … for each successful store.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of rules (including `[public]` rules).
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// All rules: per role in definition order (deny rules first), then
    /// `[public]` rules.
    pub fn rules(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.iter().map(|r| &**r)
    }

    /// Number of defined roles.
    #[must_use]
    pub fn role_count(&self) -> usize {
        self.roles.len()
    }

    /// The name of a role.
    #[must_use]
    pub fn role_name(&self, role: RoleId) -> Option<&str> {
        self.roles.get(role.index()).map(|r| &*r.name)
    }

    /// Where a role is defined.
    #[must_use]
    pub fn role_location(&self, role: RoleId) -> Option<&Location> {
        self.roles.get(role.index()).map(|r| &r.location)
    }

    /// Looks up a role by name.
    #[must_use]
    pub fn role_id(&self, name: &str) -> Option<RoleId> {
        self.roles.iter().position(|r| &*r.name == name).and_then(RoleId::new)
    }

    /// The names of the roles in `roles`, in definition order.
    pub fn role_names<'s>(&'s self, roles: &RoleSet) -> impl Iterator<Item = &'s str> + use<'s> {
        roles.iter().filter_map(|r| self.role_name(r))
    }

    /// The routes this policy was compiled against.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.route_names.iter().map(|r| &**r)
    }

    /// The subject's effective roles: roles of its `[users]` entry (user name
    /// compared case-insensitively) and of every `[groups]` key matching one
    /// of its groups. Never allocates.
    pub fn roles_for<S: Identity + ?Sized>(&self, subject: &S) -> RoleSet {
        let mut set = RoleSet::new();
        if let Some(user) = subject.user_name() {
            self.add_user_roles(&mut set, user);
        }
        if !self.groups.is_empty() {
            for group in subject.groups() {
                self.add_group_roles(&mut set, group);
            }
        }
        set
    }

    #[inline]
    fn add_user_roles(&self, set: &mut RoleSet, user: &str) {
        if self.users.is_empty() {
            return;
        }
        let hash = hash_lowercase(user);
        let start = self.users.partition_point(|u| u.hash < hash);
        for entry in self.users.get(start..).unwrap_or(&[]) {
            if entry.hash != hash {
                break;
            }
            if eq_lowercase(&entry.name, user) {
                for &role in &entry.roles {
                    set.insert(role);
                }
            }
        }
    }

    #[inline]
    fn add_group_roles(&self, set: &mut RoleSet, group: GroupRef<'_>) {
        let Some(entry) = self.groups.get(group.display_name) else {
            return;
        };
        for &role in entry.any_client.as_slice() {
            set.insert(role);
        }
        if let Some(client) = group.client {
            for (owner, roles) in &*entry.by_client {
                if **owner == *client {
                    for &role in roles.as_slice() {
                        set.insert(role);
                    }
                }
            }
        }
    }

    /// Decides a request by a subject (see the module documentation for the
    /// order of evaluation). Never allocates.
    pub fn decide<S: Identity + ?Sized>(&self, subject: &S, req: &Request<'_>) -> Decision<'_> {
        let roles = self.roles_for(subject);
        self.decide_with_roles(&roles, req)
    }

    /// Like [`Self::decide`] with roles computed earlier by
    /// [`Self::roles_for`] *on this same policy* (role ids are per policy).
    pub fn decide_with_roles(&self, roles: &RoleSet, req: &Request<'_>) -> Decision<'_> {
        let Some(table) = self.table(req.route) else {
            return Decision::new(Reason::NoRuleMatched, *roles);
        };
        let probe = Probe::new(req);
        if let Some(Reason::Public { rule }) = self.public(table, &probe) {
            return Decision::new(Reason::Public { rule }, *roles);
        }
        // The earliest matching deny rule, else the earliest matching allow
        // rule, among the candidates whose literal prefix the path has.
        let mut deny: Option<&RoleRule> = None;
        let mut allow: Option<&RoleRule> = None;
        for level in &*table.levels {
            let Some((start, end)) = level.buckets.get(probe.head & level.mask) else {
                continue;
            };
            for candidate in table.rules.get(start as usize..end as usize).unwrap_or(&[]) {
                if !roles.contains(candidate.role) {
                    continue;
                }
                let best = match candidate.effect {
                    Effect::Deny => &mut deny,
                    Effect::Allow if deny.is_some() => continue,
                    Effect::Allow => &mut allow,
                };
                if best.is_some_and(|b| b.order < candidate.order) {
                    continue;
                }
                if candidate.rule.matches_after_head(&probe) {
                    *best = Some(candidate);
                }
            }
        }
        if let Some(rule) = deny {
            return Decision::new(Reason::Denied { rule: &rule.rule.info }, *roles);
        }
        if let Some(rule) = allow {
            return Decision::new(Reason::Allowed { rule: &rule.rule.info }, *roles);
        }
        Decision::new(Reason::NoRuleMatched, *roles)
    }

    /// Decides an unauthenticated request using `[public]` rules only: a
    /// matching public deny rule gives [`Reason::Denied`], a matching public
    /// allow rule [`Reason::Public`], otherwise [`Reason::NoRuleMatched`]
    /// (the proxy should then ask the user to sign in). Never allocates.
    pub fn decide_public(&self, req: &Request<'_>) -> Decision<'_> {
        let reason = self
            .table(req.route)
            .and_then(|table| self.public(table, &Probe::new(req)))
            .unwrap_or(Reason::NoRuleMatched);
        Decision::new(reason, RoleSet::new())
    }

    #[inline]
    fn table(&self, route: &str) -> Option<&RouteTable> {
        self.routes.get(route).and_then(|&i| self.tables.get(i))
    }

    /// Public evaluation: `Denied`, `Public` or `None` when no public rule matches.
    #[inline]
    fn public<'s>(&'s self, table: &'s RouteTable, probe: &Probe<'_>) -> Option<Reason<'s>> {
        if let Some(rule) = first_match(&table.public_deny, probe) {
            return Some(Reason::Denied { rule: self.rule(rule) });
        }
        first_match(&table.public_allow, probe).map(|rule| Reason::Public { rule: self.rule(rule) })
    }

    #[inline]
    fn rule<'s>(&'s self, rule: &'s Rule) -> &'s RuleRef {
        &rule.info
    }
}

#[inline]
fn first_match<'r>(rules: &'r [Rule], probe: &Probe<'_>) -> Option<&'r Rule> {
    rules.iter().find(|r| r.matches(probe))
}
