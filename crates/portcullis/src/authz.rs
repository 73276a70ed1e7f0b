//! Authorization as an operator sees it: the decision for one user, method
//! and URL, with the user's groups and roles as the directory holds them now
//! and the rule that decided. Shared by `portcullis explain` and the admin
//! listener's `/v1/explain`, so both give the same answer the proxy would.

use portcullis_directory::{Lookup, Principal};
use portcullis_policy::{GroupRef, Identity, NormalizeOptions, Policy, Request, normalize_path};
use serde::{Deserialize, Serialize};

use crate::routes::{Router, split_url};

/// A directory principal seen through the policy's eyes. Borrows, so a
/// decision copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct PrincipalIdentity<'a>(pub &'a Principal);

impl Identity for PrincipalIdentity<'_> {
    fn user_name(&self) -> Option<&str> {
        Some(&self.0.user_name)
    }

    fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        self.0.groups.iter().map(|g| GroupRef::new(&g.owner, g.display_name()))
    }
}

/// The answer to "may this user do this?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub allowed: bool,
    pub method: String,
    pub url: String,
    pub route: Option<String>,
    pub path: Option<String>,
    pub user: Option<String>,
    /// `active`, `deactivated`, `not provisioned`, `ambiguous` or
    /// `anonymous`.
    pub user_status: String,
    /// Effective groups as `client:displayName`.
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// Why, in one line: the deciding rule with its file:line:col, or the
    /// reason no rule could decide.
    pub reason: String,
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.allowed { "ALLOW" } else { "DENY" };
        writeln!(f, "{verdict} {} {}", self.method, self.url)?;
        match &self.user {
            Some(user) => writeln!(f, "  user:   {user} ({})", self.user_status)?,
            None => writeln!(f, "  user:   (anonymous)")?,
        }
        writeln!(f, "  groups: {}", list(&self.groups))?;
        writeln!(f, "  roles:  {}", list(&self.roles))?;
        match (&self.route, &self.path) {
            (Some(route), Some(path)) => writeln!(f, "  route:  {route}, path {path}")?,
            (Some(route), None) => writeln!(f, "  route:  {route}")?,
            _ => writeln!(f, "  route:  (none)")?,
        }
        write!(f, "  why:    {}", self.reason)
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// Decides `method url` for `user` (a SCIM userName, bound to a directory
/// user by `lookup`; `None` for an anonymous request) exactly as the proxy
/// would: path normalized first,
/// route chosen on the normalized path, public rules apply to anyone,
/// unknown or deactivated users get nothing else.
pub fn explain(
    policy: &Policy,
    router: &Router,
    lookup: impl FnOnce(&str) -> Lookup,
    user: Option<&str>,
    method: &str,
    url: &str,
) -> Explanation {
    let mut out = Explanation {
        allowed: false,
        method: method.to_ascii_uppercase(),
        url: url.to_owned(),
        route: None,
        path: None,
        user: user.map(str::to_owned),
        user_status: "anonymous".into(),
        groups: Vec::new(),
        roles: Vec::new(),
        reason: String::new(),
    };
    let principal = match user.map(lookup) {
        None => None,
        Some(Lookup::Found(p)) => {
            out.user_status = if p.active { "active" } else { "deactivated" }.into();
            out.groups = p
                .groups
                .iter()
                .map(|g| format!("{}:{}", g.owner, g.display_name()))
                .collect();
            Some(p)
        }
        Some(Lookup::NotFound) => {
            out.user_status = "not provisioned".into();
            None
        }
        Some(Lookup::Ambiguous(n)) => {
            out.user_status = format!("ambiguous ({n} users)");
            None
        }
    };
    let (host, raw_path) = match split_url(url) {
        Ok(parts) => parts,
        Err(e) => {
            out.reason = e;
            return out;
        }
    };
    // Routing looks at the path as normalized by default rules; the route's
    // own options then decide what it accepts (an encoded slash, say).
    let routed = match normalize_path(
        &raw_path,
        NormalizeOptions {
            allow_encoded_slash: true,
        },
    ) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            out.reason = format!("the proxy refuses this path (400): {}", e.reason());
            return out;
        }
    };
    let Some(route) = router.route(host.as_deref(), &routed) else {
        out.path = Some(routed);
        out.reason = "no route matches this host and path (404)".into();
        return out;
    };
    let path = match normalize_path(&raw_path, route.normalize_options()) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            out.route = Some(route.name.clone());
            out.reason = format!("the proxy refuses this path (400): {}", e.reason());
            return out;
        }
    };
    out.path = Some(path.clone());
    out.route = Some(route.name.clone());
    let req = Request {
        route: &route.name,
        method: &out.method,
        path: &path,
    };
    let public = policy.decide_public(&req);
    let usable = principal.as_ref().filter(|p| p.active);
    let decision = match usable {
        Some(p) => policy.decide(&PrincipalIdentity(p), &req),
        None => public,
    };
    out.allowed = decision.allowed;
    out.roles = policy.role_names(&decision.roles).map(str::to_owned).collect();
    out.reason = if decision.allowed || usable.is_some() || user.is_none() {
        decision.reason.to_string()
    } else {
        format!(
            "user is {}; only public rules apply, and none allows this",
            out.user_status
        )
    };
    out
}

#[cfg(test)]
mod tests;
