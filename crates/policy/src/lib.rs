//! Portcullis authorization policy: parser, compiler, evaluator, request-path
//! normalizer and policy-test runner.
//!
//! Authorization maps a user's SCIM groups to roles (`[groups]`, or
//! `[users]` for direct grants) and roles to allow/deny rules on routes.
//! Deny wins over allow, and anything not allowed is denied. The format and
//! semantics are documented in `docs/policy.md` at the repository root.
//!
//! ```
//! use portcullis_policy::{GroupRef, Request, RouteSet, Source, Subject, compile};
//!
//! let text = r#"
//! [roles.reader]
//! allow = [{ route = "es", methods = ["GET"], paths = ["/logs-*/_search"] }]
//! [groups]
//! "readers" = ["reader"]
//! "#;
//! let compiled = compile(&[Source::new("policies/es.toml", text)], &RouteSet::new(["es"]))
//!     .map_err(|errors| errors[0].to_string())?;
//! let groups = [GroupRef::new("okta", "readers")];
//! let subject = Subject::new("alice@example.com", &groups);
//! let req = Request { route: "es", method: "GET", path: "/logs-1/_search" };
//! assert!(compiled.policy.decide(&subject, &req).allowed);
//! # Ok::<(), String>(())
//! ```
//!
//! What this crate deliberately does not do: read configuration, resolve
//! URLs to routes, talk to the SCIM directory, watch files or handle
//! signals. Those belong to the proxy binary, which plugs them in through
//! [`RouteSet`], [`Identity`], the closures of [`run_tests`] and
//! [`PolicyHandle`].

mod compile;
mod error;
mod handle;
mod hash;
mod location;
mod method;
mod normalize;
mod parse;
mod pattern;
mod policy;
mod roles;
mod source;
mod testing;

pub use compile::{Compiled, compile};
pub use error::{PolicyError, Problem, Warning, WarningKind};
pub use handle::PolicyHandle;
pub use location::Location;
pub use method::MethodError;
pub use normalize::{NormalizeOptions, PathError, normalize_path};
pub use pattern::PatternError;
pub use policy::{Decision, Effect, Group, GroupRef, Identity, Policy, Reason, Request, RouteSet, RuleRef, Subject};
pub use roles::{MAX_ROLES, RoleId, RoleSet, RoleSetIter};
pub use source::{Source, load_dir, read_dir};
pub use testing::{
    CaseResult, Expect, HostResolver, Outcome, Target, TestCase, TestReport, parse_tests, read_tests_dir, run_tests,
};
