//! Policy tests: parsing `policies/tests/*.toml` case files and running the
//! cases against a compiled [`Policy`].
//!
//! A case names a subject (a `user` looked up in the directory, explicit
//! `groups`, both, or neither for an anonymous request), a request (`method`
//! and `url`, optionally an explicit `route`) and the expected outcome. The
//! runner does not know how URLs map to routes or users to groups: the caller
//! passes closures for both, so the binary can plug in its configuration and
//! SCIM directory. [`HostResolver`] is a minimal URL resolver for tests and
//! simple setups. The runner normalizes the resolved path exactly like the
//! proxy does; a path the proxy would reject with 400 counts as a denial.

use std::fmt;
use std::path::Path;

use crate::compile::parse_group_key;
use crate::error::{Diagnostics, PolicyError, Problem};
use crate::location::{FileCtx, Location};
use crate::method::validate_method;
use crate::normalize::{NormalizeOptions, PathError, normalize_path};
use crate::parse::Walker;
use crate::policy::{Group, GroupRef, Identity, Policy, Request};
use crate::source::{Source, read_dir};

#[cfg(test)]
mod tests;

/// The expected outcome of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The request must be allowed.
    Allow,
    /// The request must be denied (including rejected as a bad path).
    Deny,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// One `[[case]]` of a policy-test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// Optional description.
    pub name: Option<String>,
    /// The user name: looked up in the directory when `groups` is absent,
    /// and matched against `[users]` in any case.
    pub user: Option<String>,
    /// Explicit groups (`"name"` or `"client:name"`); no directory lookup.
    pub groups: Option<Vec<Group>>,
    /// The HTTP method, upper-cased.
    pub method: String,
    /// A URL (`https://host/path?query`) or a bare path.
    pub url: String,
    /// An explicit route; otherwise the resolver derives it from `url`.
    pub route: Option<String>,
    /// The expected outcome.
    pub expect: Expect,
    /// Where the case starts.
    pub location: Location,
}

impl TestCase {
    /// The name, or `METHOD url` when there is none.
    #[must_use]
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("{} {}", self.method, self.url),
        }
    }
}

const TOP_KEYS: &[&str] = &["case"];
const CASE_KEYS: &[&str] = &["name", "user", "groups", "method", "url", "route", "expect"];

/// Parses policy-test files.
///
/// # Errors
///
/// Every problem found in every file, ordered by file and position.
pub fn parse_tests(sources: &[Source]) -> Result<Vec<TestCase>, Vec<PolicyError>> {
    let mut diags = Diagnostics::default();
    let mut cases = Vec::new();
    for (order, source) in sources.iter().enumerate() {
        let file = FileCtx::new(order, &source.path, &source.text);
        let mut w = Walker {
            file: &file,
            diags: &mut diags,
        };
        let Some(doc) = w.document() else { continue };
        for (key, value) in doc.iter() {
            if &**key.get_ref() != "case" {
                w.unknown_key(key, "at top level of a test file", TOP_KEYS);
                continue;
            }
            for (offset, table) in w.tables(value, "\"case\"") {
                if let Some(case) = test_case(&mut w, offset, table) {
                    cases.push(case);
                }
            }
        }
    }
    if diags.is_empty() {
        Ok(cases)
    } else {
        Err(diags.into_sorted())
    }
}

fn test_case(w: &mut Walker<'_, '_>, offset: usize, table: &toml::de::DeTable<'_>) -> Option<TestCase> {
    let mut ok = true;
    let mut name = None;
    let mut user = None;
    let mut groups = None;
    let mut method = None;
    let mut url = None;
    let mut route = None;
    let mut expect = None;
    for (key, value) in table.iter() {
        match &**key.get_ref() {
            "name" => name = w.string(value, "\"name\"").map(|s| s.value),
            "user" => {
                user = w.string(value, "\"user\"").map(|s| s.value);
                ok &= user.is_some();
            }
            "groups" => {
                let mut list = Vec::new();
                for g in w.strings(value, "\"groups\"").into_iter().flatten() {
                    match parse_group_key(&g.value) {
                        Ok((client, display_name)) => list.push(Group {
                            client: client.map(str::to_owned),
                            display_name: display_name.to_owned(),
                        }),
                        Err(reason) => {
                            let key = g.value;
                            w.error(g.offset, Problem::BadGroupKey { key, reason });
                            ok = false;
                        }
                    }
                }
                groups = Some(list);
            }
            "method" => {
                if let Some(m) = w.string(value, "\"method\"") {
                    match validate_method(&m.value) {
                        Ok(upper) => method = Some(upper),
                        Err(reason) => {
                            let method = m.value;
                            w.error(m.offset, Problem::BadMethod { method, reason });
                        }
                    }
                }
                ok &= method.is_some();
            }
            "url" => {
                url = w.string(value, "\"url\"").map(|s| s.value);
                ok &= url.is_some();
            }
            "route" => {
                route = w.string(value, "\"route\"").map(|s| s.value);
                ok &= route.is_some();
            }
            "expect" => {
                if let Some(e) = w.string(value, "\"expect\"") {
                    match e.value.as_str() {
                        "allow" => expect = Some(Expect::Allow),
                        "deny" => expect = Some(Expect::Deny),
                        _ => {
                            let value = e.value;
                            w.error(e.offset, Problem::BadExpect { value });
                        }
                    }
                }
                ok &= expect.is_some();
            }
            _ => {
                w.unknown_key(key, "in test case", CASE_KEYS);
                ok = false;
            }
        }
    }
    for key in ["method", "url", "expect"] {
        if !table.contains_key(key) {
            w.error(
                offset,
                Problem::MissingKey {
                    key,
                    context: "in test case",
                },
            );
            ok = false;
        }
    }
    let (true, Some(method), Some(url), Some(expect)) = (ok, method, url, expect) else {
        return None;
    };
    Some(TestCase {
        name,
        user,
        groups,
        method,
        url,
        route,
        expect,
        location: w.file.location(offset),
    })
}

/// Reads and parses every `*.toml` file directly in `dir` (see
/// [`crate::read_dir`]).
///
/// # Errors
///
/// The read error, or every parse problem.
pub fn read_tests_dir(dir: &Path) -> Result<Vec<TestCase>, Vec<PolicyError>> {
    let sources = read_dir(dir).map_err(|e| vec![e])?;
    parse_tests(&sources)
}

/// Where a case's URL goes: the route and the raw (not yet normalized) path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The route name.
    pub route: String,
    /// The request path without query, as the proxy would receive it.
    pub path: String,
    /// The route's normalization options.
    pub normalize: NormalizeOptions,
}

/// What happened when a case ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The policy decided.
    Decided {
        /// Whether the request was allowed.
        allowed: bool,
        /// The decision's reason, including the deciding rule.
        explanation: String,
        /// The subject's effective roles.
        roles: Vec<String>,
    },
    /// The proxy would refuse the path (400); counts as a denial.
    BadPath {
        /// Why.
        error: PathError,
    },
    /// The case could not run (unknown user, unresolvable URL); always fails.
    Error {
        /// Why.
        message: String,
    },
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case.
    pub case: TestCase,
    /// What happened.
    pub outcome: Outcome,
}

impl CaseResult {
    /// Whether the outcome matches the expectation.
    #[must_use]
    pub fn passed(&self) -> bool {
        match &self.outcome {
            Outcome::Decided { allowed, .. } => *allowed == (self.case.expect == Expect::Allow),
            Outcome::BadPath { .. } => self.case.expect == Expect::Deny,
            Outcome::Error { .. } => false,
        }
    }
}

impl fmt::Display for CaseResult {
    /// `FAIL path:line:col: label: expected allow, got deny: <reason>; roles: a, b`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "ok  " } else { "FAIL" };
        let case = &self.case;
        write!(f, "{status} {}: {}", case.location, case.label())?;
        if case.name.is_some() {
            write!(f, " ({} {})", case.method, case.url)?;
        }
        write!(f, ": expected {}, ", case.expect)?;
        match &self.outcome {
            Outcome::Decided {
                allowed,
                explanation,
                roles,
            } => {
                let got = if *allowed { "allow" } else { "deny" };
                write!(f, "got {got}: {explanation}; roles: ")?;
                if roles.is_empty() {
                    f.write_str("(none)")
                } else {
                    f.write_str(&roles.join(", "))
                }
            }
            Outcome::BadPath { error } => write!(f, "got deny: bad path: {error}"),
            Outcome::Error { message } => write!(f, "got error: {message}"),
        }
    }
}

/// The results of a test run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// One result per case, in case order.
    pub results: Vec<CaseResult>,
}

impl TestReport {
    /// Number of passing cases.
    #[must_use]
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Number of failing cases.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether every case passed.
    #[must_use]
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The failing cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    /// Exactly `N passed, M failed`.
    #[must_use]
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

impl fmt::Display for TestReport {
    /// One line per failing case, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in self.failures() {
            writeln!(f, "{failure}")?;
        }
        f.write_str(&self.summary())
    }
}

/// An owned identity for running cases.
#[derive(Debug)]
struct CaseSubject {
    user: Option<String>,
    groups: Vec<Group>,
}

impl Identity for CaseSubject {
    fn user_name(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        self.groups.iter().map(Group::as_ref)
    }
}

/// Runs `cases` against `policy`.
///
/// `resolve_target(url, route)` maps a case's URL (and explicit route, if
/// any) to a [`Target`]; `resolve_user(user)` returns a user's effective
/// groups from the directory (called only for cases with `user` and no
/// `groups`). An `Err` from either fails that case with the message.
pub fn run_tests<R, U>(policy: &Policy, cases: &[TestCase], mut resolve_target: R, mut resolve_user: U) -> TestReport
where
    R: FnMut(&str, Option<&str>) -> Result<Target, String>,
    U: FnMut(&str) -> Result<Vec<Group>, String>,
{
    let results = cases
        .iter()
        .map(|case| CaseResult {
            case: case.clone(),
            outcome: run_case(policy, case, &mut resolve_target, &mut resolve_user),
        })
        .collect();
    TestReport { results }
}

fn run_case<R, U>(policy: &Policy, case: &TestCase, resolve_target: &mut R, resolve_user: &mut U) -> Outcome
where
    R: FnMut(&str, Option<&str>) -> Result<Target, String>,
    U: FnMut(&str) -> Result<Vec<Group>, String>,
{
    let groups = match (&case.groups, &case.user) {
        (Some(groups), _) => groups.clone(),
        (None, Some(user)) => match resolve_user(user) {
            Ok(groups) => groups,
            Err(message) => return Outcome::Error { message },
        },
        (None, None) => Vec::new(),
    };
    let anonymous = case.user.is_none() && case.groups.is_none();
    let target = match resolve_target(&case.url, case.route.as_deref()) {
        Ok(target) => target,
        Err(message) => return Outcome::Error { message },
    };
    let path = match normalize_path(&target.path, target.normalize) {
        Ok(path) => path,
        Err(error) => return Outcome::BadPath { error },
    };
    let req = Request {
        route: &target.route,
        method: &case.method,
        path: &path,
    };
    let subject = CaseSubject {
        user: case.user.clone(),
        groups,
    };
    let decision = if anonymous {
        policy.decide_public(&req)
    } else {
        policy.decide(&subject, &req)
    };
    Outcome::Decided {
        allowed: decision.allowed,
        explanation: decision.reason.to_string(),
        roles: policy.role_names(&decision.roles).map(str::to_owned).collect(),
    }
}

/// A simple URL resolver: maps host names to routes. Useful for tests and
/// for deployments where each route has its own host name.
#[derive(Debug, Clone, Default)]
pub struct HostResolver {
    hosts: Vec<(String, String)>,
}

impl HostResolver {
    /// A resolver from `(host, route)` pairs. Hosts compare
    /// ASCII-case-insensitively, ports ignored.
    pub fn new<I, H, R>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (H, R)>,
        H: Into<String>,
        R: Into<String>,
    {
        Self {
            hosts: pairs.into_iter().map(|(h, r)| (h.into(), r.into())).collect(),
        }
    }

    /// Resolves `url` (an absolute `http(s)` URL or a bare path) to a target
    /// with default normalization options. An explicit `route` wins over the
    /// host; a bare path needs one.
    ///
    /// # Errors
    ///
    /// A message when the route cannot be determined.
    pub fn resolve(&self, url: &str, route: Option<&str>) -> Result<Target, String> {
        let (host, path) = split_url(url);
        let route = match (route, host) {
            (Some(route), _) => route.to_owned(),
            (None, Some(host)) => self
                .hosts
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(host))
                .map(|(_, r)| r.clone())
                .ok_or_else(|| format!("no route for host {host:?}"))?,
            (None, None) => return Err(format!("cannot resolve a route for {url:?}: no host")),
        };
        Ok(Target {
            route,
            path: path.to_owned(),
            normalize: NormalizeOptions::default(),
        })
    }
}

/// Splits a URL into its host (if absolute) and its path (without query or
/// fragment; `/` when empty).
fn split_url(url: &str) -> (Option<&str>, &str) {
    let (host, rest) = match url.split_once("://") {
        Some((_, after_scheme)) => {
            let end = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
            let (authority, rest) = after_scheme.split_at_checked(end).unwrap_or((after_scheme, ""));
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if host_port.starts_with('[') {
                host_port.split_inclusive(']').next().unwrap_or(host_port)
            } else {
                host_port.split(':').next().unwrap_or(host_port)
            };
            (Some(host), rest)
        }
        None => (None, url),
    };
    let path = rest.split(['?', '#']).next().unwrap_or("");
    (host, if path.is_empty() { "/" } else { path })
}
