//! The policy compiler: merges all parsed policy files, validates every name,
//! route, method and pattern (collecting *all* problems), computes warnings,
//! and builds the evaluation indexes of [`Policy`].
//!
//! Merging rules: a role may be defined in only one file (a second definition
//! is an error naming both places); `[groups]` keys and `[users]` keys that
//! appear in several files (users compared case-insensitively) get the union
//! of their role lists; `[public]` rules from all files are combined. The
//! compiler does not read files ([`crate::read_dir`] does) and does not
//! evaluate requests ([`Policy`] does).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Diagnostics, PolicyError, Problem, Warning, WarningKind};
use crate::hash::{StrTable, U64Table, hash_lowercase};
use crate::location::{FileCtx, Location};
use crate::method::{MethodSet, validate_method};
use crate::parse::{self, RawFile, RawRule, RawRules, Sp, Walker};
use crate::pattern::Pattern;
use crate::policy::{
    ClientRoles, Effect, GroupEntry, Head, Level, Policy, RoleInfo, RoleRule, RouteSet, RouteTable, Rule, RuleRef,
    UserEntry,
};
use crate::roles::{MAX_ROLES, RoleId, RoleList};
use crate::source::Source;

#[cfg(test)]
mod tests;

/// A successfully compiled policy and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The policy, ready to evaluate.
    pub policy: Policy,
    /// Legal but suspicious things, ordered by file and position.
    pub warnings: Vec<Warning>,
}

/// Compiles policy sources against the routes the proxy knows.
///
/// `sources` are merged in the order given (which is also the order of role
/// ids and of "first matching rule"); use [`crate::read_dir`] to get them
/// sorted by file name.
///
/// # Errors
///
/// Every problem found in every file, ordered by file and position. The
/// policy is all-or-nothing: there is no partial result.
pub fn compile(sources: &[Source], routes: &RouteSet) -> Result<Compiled, Vec<PolicyError>> {
    let files: Vec<FileCtx<'_>> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| FileCtx::new(i, &s.path, &s.text))
        .collect();
    let mut diags = Diagnostics::default();
    let raws: Vec<RawFile> = files
        .iter()
        .map(|file| {
            parse::policy_file(&mut Walker {
                file,
                diags: &mut diags,
            })
        })
        .collect();
    let mut c = Compiler {
        files: &files,
        diags,
        routes,
        route_index: routes.iter().enumerate().map(|(i, r)| (r, i)).collect(),
        roles: Vec::new(),
        role_index: HashMap::new(),
    };
    c.define_roles(&raws);
    let groups = c.groups(&raws);
    let users = c.users(&raws);
    let drafts = c.rules(&raws);
    if !c.diags.is_empty() {
        return Err(c.diags.into_sorted());
    }
    let warnings = c.warnings(&drafts);
    let policy = c.build(drafts, groups, users);
    Ok(Compiled { policy, warnings })
}

/// A role definition being compiled.
#[derive(Debug)]
struct RoleDef<'r> {
    name: &'r str,
    file: usize,
    offset: usize,
    location: Location,
    rules: &'r RawRules,
    used: bool,
}

/// A validated rule before indexing.
#[derive(Debug)]
struct Draft {
    owner: Option<RoleId>,
    effect: Effect,
    route: usize,
    methods: MethodSet,
    patterns: Vec<Pattern>,
    file: usize,
    offset: usize,
    info: Arc<RuleRef>,
}

impl Draft {
    /// Evaluation order: deny before allow, then source position.
    fn order_key(&self) -> (Option<RoleId>, bool, usize, usize) {
        (self.owner, self.effect == Effect::Allow, self.file, self.offset)
    }

    fn sorted_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.patterns.iter().map(Pattern::as_str).collect();
        paths.sort_unstable();
        paths.dedup();
        paths
    }
}

/// Accumulated `[groups]`: (displayName, client) -> roles.
type GroupGrants = BTreeMap<(String, Option<String>), Vec<RoleId>>;
/// Accumulated `[users]`: lower-cased name -> (name as first written, roles).
type UserGrants = BTreeMap<String, (String, Vec<RoleId>)>;

#[derive(Debug)]
struct Compiler<'a, 'f> {
    files: &'a [FileCtx<'f>],
    diags: Diagnostics,
    routes: &'a RouteSet,
    route_index: HashMap<&'a str, usize>,
    roles: Vec<RoleDef<'a>>,
    role_index: HashMap<&'a str, RoleId>,
}

impl<'a> Compiler<'a, '_> {
    fn error(&mut self, file: usize, offset: usize, problem: Problem) {
        if let Some(f) = self.files.get(file) {
            self.diags.push(f, offset, problem);
        }
    }

    fn location(&self, file: usize, offset: usize) -> Option<Location> {
        self.files.get(file).map(|f| f.location(offset))
    }

    /// Assigns role ids in definition order and reports duplicates.
    fn define_roles(&mut self, raws: &'a [RawFile]) {
        let mut defs: Vec<(usize, &'a parse::RawRole)> = raws
            .iter()
            .enumerate()
            .flat_map(|(f, raw)| raw.roles.iter().map(move |r| (f, r)))
            .collect();
        defs.sort_by_key(|(f, r)| (*f, r.name.offset));
        let mut too_many = false;
        for (file, raw) in defs {
            let name = raw.name.value.as_str();
            if let Some(&id) = self.role_index.get(name) {
                if let Some(first) = self.roles.get(id.index()).map(|d| d.location.clone()) {
                    let role = name.to_owned();
                    self.error(file, raw.name.offset, Problem::DuplicateRole { role, first });
                }
                continue;
            }
            let Some(id) = RoleId::new(self.roles.len()) else {
                if !too_many {
                    too_many = true;
                    let max = MAX_ROLES;
                    self.error(file, raw.name.offset, Problem::TooManyRoles { max });
                }
                continue;
            };
            let Some(location) = self.location(file, raw.name.offset) else {
                continue;
            };
            self.role_index.insert(name, id);
            self.roles.push(RoleDef {
                name,
                file,
                offset: raw.name.offset,
                location,
                rules: &raw.rules,
                used: false,
            });
        }
    }

    fn defined_roles(&self) -> String {
        describe(
            "defined roles",
            "no roles are defined",
            self.roles.iter().map(|r| r.name),
        )
    }

    /// Resolves role references, reporting unknown ones.
    fn resolve_roles(&mut self, file: usize, refs: &[Sp<String>]) -> Vec<RoleId> {
        let mut out = Vec::new();
        for r in refs {
            match self.role_index.get(r.value.as_str()) {
                Some(&id) => {
                    if let Some(def) = self.roles.get_mut(id.index()) {
                        def.used = true;
                    }
                    out.push(id);
                }
                None => {
                    let defined = self.defined_roles();
                    let role = r.value.clone();
                    self.error(file, r.offset, Problem::UnknownRole { role, defined });
                }
            }
        }
        out
    }

    fn groups(&mut self, raws: &[RawFile]) -> GroupGrants {
        let mut out = GroupGrants::new();
        for (file, raw) in raws.iter().enumerate() {
            for grant in &raw.groups {
                let roles = self.resolve_roles(file, &grant.roles);
                let (client, name) = match parse_group_key(&grant.key.value) {
                    Ok(parts) => parts,
                    Err(reason) => {
                        let key = grant.key.value.clone();
                        self.error(file, grant.key.offset, Problem::BadGroupKey { key, reason });
                        continue;
                    }
                };
                let entry = out.entry((name.to_owned(), client.map(str::to_owned))).or_default();
                entry.extend(roles);
                entry.sort_unstable();
                entry.dedup();
            }
        }
        out
    }

    fn users(&mut self, raws: &[RawFile]) -> UserGrants {
        let mut out = UserGrants::new();
        for (file, raw) in raws.iter().enumerate() {
            for grant in &raw.users {
                let roles = self.resolve_roles(file, &grant.roles);
                if grant.key.value.is_empty() {
                    self.error(file, grant.key.offset, Problem::EmptyName { what: "user name" });
                    continue;
                }
                let lower: String = grant.key.value.chars().flat_map(char::to_lowercase).collect();
                let entry = out
                    .entry(lower)
                    .or_insert_with(|| (grant.key.value.clone(), Vec::new()));
                entry.1.extend(roles);
                entry.1.sort_unstable();
                entry.1.dedup();
            }
        }
        out
    }

    /// Validates every rule of every role and of `[public]`.
    fn rules(&mut self, raws: &[RawFile]) -> Vec<Draft> {
        let mut drafts = Vec::new();
        let roles: Vec<(RoleId, usize, &'a RawRules, &'a str)> = self
            .roles
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((RoleId::new(i)?, d.file, d.rules, d.name)))
            .collect();
        for (id, file, rules, name) in roles {
            self.rule_list(&mut drafts, file, rules, Some((id, name)));
        }
        for (file, raw) in raws.iter().enumerate() {
            if let Some(public) = &raw.public {
                self.rule_list(&mut drafts, file, public, None);
            }
        }
        drafts
    }

    fn rule_list(&mut self, drafts: &mut Vec<Draft>, file: usize, rules: &RawRules, owner: Option<(RoleId, &str)>) {
        for (effect, list) in [(Effect::Allow, &rules.allow), (Effect::Deny, &rules.deny)] {
            for raw in list {
                if let Some(d) = self.rule(file, raw, effect, owner) {
                    drafts.push(d);
                }
            }
        }
    }

    fn rule(&mut self, file: usize, raw: &RawRule, effect: Effect, owner: Option<(RoleId, &str)>) -> Option<Draft> {
        let mut ok = true;
        let route = self.route_index.get(raw.route.value.as_str()).copied();
        if route.is_none() {
            let known = describe("known routes", "no routes are configured", self.routes.iter());
            let route = raw.route.value.clone();
            self.error(file, raw.route.offset, Problem::UnknownRoute { route, known });
            ok = false;
        }
        let mut method_names = None;
        if let Some(methods) = &raw.methods {
            let mut names = Vec::new();
            for m in methods {
                match validate_method(&m.value) {
                    Ok(upper) => names.push(upper),
                    Err(reason) => {
                        let method = m.value.clone();
                        self.error(file, m.offset, Problem::BadMethod { method, reason });
                        ok = false;
                    }
                }
            }
            method_names = Some(names);
        }
        let mut patterns = Vec::new();
        for p in &raw.paths {
            match Pattern::parse(&p.value) {
                Ok(pattern) => patterns.push(pattern),
                Err(reason) => {
                    let pattern = p.value.clone();
                    self.error(file, p.offset, Problem::BadPattern { pattern, reason });
                    ok = false;
                }
            }
        }
        let location = self.location(file, raw.offset)?;
        let route = route.filter(|_| ok)?;
        let methods = match &method_names {
            Some(names) => MethodSet::from_validated(names.iter().map(String::as_str)),
            None => MethodSet::any(),
        };
        let info = Arc::new(RuleRef {
            location,
            effect,
            role: owner.map(|(_, name)| name.to_owned()),
            route: raw.route.value.clone(),
            methods: method_names,
            paths: raw.paths.iter().map(|p| p.value.clone()).collect(),
        });
        Some(Draft {
            owner: owner.map(|(id, _)| id),
            effect,
            route,
            methods,
            patterns,
            file,
            offset: raw.offset,
            info,
        })
    }

    fn warnings(&self, drafts: &[Draft]) -> Vec<Warning> {
        let mut out: Vec<(usize, usize, Warning)> = Vec::new();
        for role in self.roles.iter().filter(|r| !r.used) {
            out.push((
                role.file,
                role.offset,
                Warning {
                    location: role.location.clone(),
                    kind: WarningKind::UnusedRole {
                        role: role.name.to_owned(),
                    },
                },
            ));
        }
        // Rules that can shadow each other: same owner and route.
        let mut groups: BTreeMap<(Option<RoleId>, usize), Vec<&Draft>> = BTreeMap::new();
        for d in drafts {
            groups.entry((d.owner, d.route)).or_default().push(d);
        }
        for group in groups.values() {
            for (j, later) in group.iter().enumerate() {
                let first = group.iter().take(j).find(|earlier| {
                    earlier.effect == later.effect
                        && earlier.methods == later.methods
                        && earlier.sorted_paths() == later.sorted_paths()
                });
                if let Some(first) = first {
                    out.push(warning(
                        later,
                        WarningKind::DuplicateRule {
                            first: first.info.location.clone(),
                        },
                    ));
                }
                if later.effect == Effect::Allow
                    && let Some(deny) = covering_deny(group, later)
                {
                    out.push(warning(
                        later,
                        WarningKind::UnreachableRule {
                            covered_by: deny.info.location.clone(),
                        },
                    ));
                }
            }
        }
        out.sort_by_key(|&(file, offset, _)| (file, offset));
        out.into_iter().map(|(_, _, w)| w).collect()
    }

    fn build(&self, mut drafts: Vec<Draft>, groups: GroupGrants, users: UserGrants) -> Policy {
        // Role rules in evaluation order, then public rules.
        drafts.sort_by_key(|d| (d.owner.is_none(), d.order_key()));
        let route_count = self.routes.len();
        let mut tables: Vec<TableBuilder> = (0..route_count).map(|_| TableBuilder::default()).collect();
        for d in &drafts {
            if let Some(t) = tables.get_mut(d.route) {
                let rule = Rule {
                    head: Head::of(&d.patterns),
                    methods: d.methods.clone(),
                    patterns: d.patterns.clone().into(),
                    info: Arc::clone(&d.info),
                };
                match (d.owner, d.effect) {
                    (Some(role), effect) => t.roles.push((role, effect, rule)),
                    (None, Effect::Deny) => t.public_deny.push(rule),
                    (None, Effect::Allow) => t.public_allow.push(rule),
                }
            }
        }
        let tables: Box<[RouteTable]> = tables.into_iter().map(TableBuilder::finish).collect();

        let mut by_name: BTreeMap<String, (Vec<RoleId>, Vec<ClientRoles>)> = BTreeMap::new();
        for ((name, client), roles) in groups {
            let entry = by_name.entry(name).or_default();
            match client {
                None => entry.0.extend(roles),
                Some(client) => entry.1.push((client.into(), RoleList::new(&roles))),
            }
        }
        let group_map = StrTable::new(by_name.into_iter().map(|(name, (any, by_client))| {
            let entry = GroupEntry {
                any_client: RoleList::new(&any),
                by_client: by_client.into(),
            };
            (name.into_boxed_str(), entry)
        }));

        let mut users: Vec<UserEntry> = users
            .into_values()
            .map(|(name, roles)| UserEntry {
                hash: hash_lowercase(&name),
                name: name.into(),
                roles: roles.into(),
            })
            .collect();
        users.sort_by_key(|u| u.hash);

        Policy {
            generation: 0,
            routes: StrTable::new(self.routes.iter().enumerate().map(|(i, r)| (Box::from(r), i))),
            route_names: self.routes.iter().map(Box::from).collect(),
            tables,
            roles: self
                .roles
                .iter()
                .map(|r| RoleInfo {
                    name: r.name.into(),
                    location: r.location.clone(),
                })
                .collect(),
            groups: group_map,
            users: users.into(),
            rules: drafts.iter().map(|d| Arc::clone(&d.info)).collect(),
        }
    }
}

/// Rules of one route before indexing.
#[derive(Debug, Default)]
struct TableBuilder {
    /// In evaluation order (drafts arrive sorted).
    roles: Vec<(RoleId, Effect, Rule)>,
    public_deny: Vec<Rule>,
    public_allow: Vec<Rule>,
}

impl TableBuilder {
    fn finish(self) -> RouteTable {
        let mut grouped: BTreeMap<(u32, u64), Vec<RoleRule>> = BTreeMap::new();
        for (order, (role, effect, rule)) in self.roles.into_iter().enumerate() {
            let order = u32::try_from(order).unwrap_or(u32::MAX);
            grouped.entry(rule.head.key()).or_default().push(RoleRule {
                rule,
                role,
                effect,
                order,
            });
        }
        let mut rules = Vec::new();
        let mut per_len: BTreeMap<u32, Vec<(u64, u32, u32)>> = BTreeMap::new();
        let len = |rules: &Vec<RoleRule>| u32::try_from(rules.len()).unwrap_or(u32::MAX);
        for ((prefix_len, value), group) in grouped {
            let start = len(&rules);
            rules.extend(group);
            per_len.entry(prefix_len).or_default().push((value, start, len(&rules)));
        }
        let levels = per_len
            .into_iter()
            .map(|(prefix_len, entries)| Level {
                mask: Head::mask(prefix_len),
                buckets: U64Table::new(&entries),
            })
            .collect();
        RouteTable {
            levels,
            rules: rules.into(),
            public_deny: self.public_deny.into(),
            public_allow: self.public_allow.into(),
        }
    }
}

fn warning(d: &Draft, kind: WarningKind) -> (usize, usize, Warning) {
    (
        d.file,
        d.offset,
        Warning {
            location: d.info.location.clone(),
            kind,
        },
    )
}

/// A deny rule in `group` (same owner and route as `allow`) that, for every
/// method of `allow`, covers its first path pattern — provided every other
/// path of `allow` is covered by some such deny too. Conservative: only
/// single deny rules with a superset of methods are considered per path.
fn covering_deny<'d>(group: &[&'d Draft], allow: &Draft) -> Option<&'d Draft> {
    let denies: Vec<&'d Draft> = group
        .iter()
        .copied()
        .filter(|d| d.effect == Effect::Deny && d.methods.is_superset_of(&allow.methods))
        .collect();
    let covering = |p: &Pattern| {
        denies
            .iter()
            .copied()
            .find(|d| d.patterns.iter().any(|dp| dp.covers(p)))
    };
    let mut first = None;
    for p in &allow.patterns {
        let deny = covering(p)?;
        first.get_or_insert(deny);
    }
    first
}

/// Splits a `[groups]` key into (client, displayName).
pub(crate) fn parse_group_key(key: &str) -> Result<(Option<&str>, &str), &'static str> {
    if key.is_empty() {
        return Err("group name is empty");
    }
    match key.split_once(':') {
        Some(("", _)) => Err("client name before \":\" is empty"),
        Some((_, "")) => Err("display name after \":\" is empty"),
        Some((client, name)) => Ok((Some(client), name)),
        None => Ok((None, key)),
    }
}

/// `"label: a, b, c"` (at most 20 names), or `none` when there are none.
fn describe<'n>(label: &str, none: &str, names: impl Iterator<Item = &'n str>) -> String {
    const LIMIT: usize = 20;
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        return none.to_owned();
    }
    let shown = names.iter().take(LIMIT).copied().collect::<Vec<_>>().join(", ");
    if names.len() > LIMIT {
        format!("{label}: {shown}, and {} more", names.len() - LIMIT)
    } else {
        format!("{label}: {shown}")
    }
}
