//! What Portcullis knows and says about an authenticated user: their roles
//! under the current policy, and the identity headers and signed assertion
//! each route receives.
//!
//! All of it is derived from the directory's [`Principal`] and the policy,
//! and cached per user keyed by *both generations*: a SCIM change gives the
//! principal a new generation and a policy reload gives the policy one, so a
//! stale entry can never be used; it is recomputed on the next request.
//! That is what makes "access changes on the very next request" cheap: the
//! common request costs one map probe, not a roles computation and an ECDSA
//! signature. Assertions are re-signed when half their lifetime is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;
use parking_lot::Mutex;
use portcullis_directory::{Directory, Principal, PrincipalKey, PrincipalKeyHash};
use portcullis_oidc::{AssertionClaims, AssertionSigner};
use portcullis_policy::{GroupRef, Policy, RoleSet, Subject};

use crate::authz::PrincipalIdentity;
use crate::config::GroupScope;

/// A user as the proxy presents them, for one policy generation.
#[derive(Debug)]
pub struct Resolved {
    pub principal: Arc<Principal>,
    policy_generation: u64,
    pub roles: RoleSet,
    pub role_names: Vec<Box<str>>,
    pub email: Option<Box<str>>,
    pub display_name: Option<Box<str>>,
    /// Every effective group's display name.
    groups_all: Vec<Box<str>>,
    /// Only the groups the policy grants roles to.
    groups_policy: Vec<Box<str>>,
    pub user_header: Option<HeaderValue>,
    pub email_header: Option<HeaderValue>,
    pub roles_header: Option<HeaderValue>,
    groups_all_header: Option<HeaderValue>,
    groups_policy_header: Option<HeaderValue>,
    /// Signed assertions by route index.
    assertions: Mutex<Vec<(usize, HeaderValue, Instant)>>,
}

impl Resolved {
    pub fn groups(&self, scope: GroupScope) -> &[Box<str>] {
        match scope {
            GroupScope::All => &self.groups_all,
            GroupScope::Policy => &self.groups_policy,
            GroupScope::None => &[],
        }
    }

    pub fn groups_header(&self, scope: GroupScope) -> Option<&HeaderValue> {
        match scope {
            GroupScope::All => self.groups_all_header.as_ref(),
            GroupScope::Policy => self.groups_policy_header.as_ref(),
            GroupScope::None => None,
        }
    }
}

/// The per-user cache.
#[derive(Debug)]
pub struct Identities {
    directory: Directory,
    signer: AssertionSigner,
    ttl: Duration,
    cache: DashMap<PrincipalKey, Arc<Resolved>, PrincipalKeyHash>,
}

/// What a route's assertion should say.
#[derive(Debug, Clone, Copy)]
pub struct AssertionSpec<'a> {
    pub route: usize,
    pub audience: &'a str,
    pub groups: GroupScope,
}

impl Identities {
    pub fn new(directory: Directory, signer: AssertionSigner, ttl: Duration) -> Self {
        Identities {
            directory,
            signer,
            ttl,
            cache: DashMap::default(),
        }
    }

    pub fn signer(&self) -> &AssertionSigner {
        &self.signer
    }

    /// The user's view under `policy`, from the cache when both generations
    /// still match.
    pub fn resolve(&self, principal: &Arc<Principal>, policy: &Policy) -> Arc<Resolved> {
        if let Some(hit) = self.cache.get(&principal.key)
            && hit.principal.generation == principal.generation
            && hit.policy_generation == policy.generation()
        {
            return hit.clone();
        }
        let resolved = Arc::new(self.compute(principal, policy));
        // Entries of deleted users would otherwise stay forever; the
        // directory's size bounds the cache instead.
        if self.cache.len() > 2 * self.directory.stats().users + 1024 {
            self.cache.clear();
        }
        self.cache.insert(principal.key, resolved.clone());
        resolved
    }

    fn compute(&self, principal: &Arc<Principal>, policy: &Policy) -> Resolved {
        let roles = policy.roles_for(&PrincipalIdentity(principal));
        let mut role_names: Vec<Box<str>> = policy.role_names(&roles).map(Box::from).collect();
        role_names.sort();
        let user = self.directory.user(&principal.id);
        let email = user.as_deref().and_then(primary_email);
        let display_name = user.as_ref().and_then(|u| u.display_name().map(Box::from));
        let groups_all: Vec<Box<str>> = principal.groups.iter().map(|g| Box::from(g.display_name())).collect();
        let groups_policy: Vec<Box<str>> = principal
            .groups
            .iter()
            .filter(|g| grants_roles(policy, g))
            .map(|g| Box::from(g.display_name()))
            .collect();
        Resolved {
            user_header: header_value(&principal.user_name),
            email_header: email.as_deref().and_then(header_value),
            roles_header: header_list(&role_names),
            groups_all_header: header_list(&groups_all),
            groups_policy_header: header_list(&groups_policy),
            principal: principal.clone(),
            policy_generation: policy.generation(),
            roles,
            role_names,
            email,
            display_name,
            groups_all,
            groups_policy,
            assertions: Mutex::new(Vec::new()),
        }
    }

    /// The signed assertion for a route, re-signed when half its lifetime
    /// has passed.
    pub fn assertion(&self, resolved: &Resolved, spec: AssertionSpec<'_>) -> Option<HeaderValue> {
        let now = Instant::now();
        {
            let cached = resolved.assertions.lock();
            if let Some((_, v, refresh_at)) = cached.iter().find(|(r, _, _)| *r == spec.route)
                && now < *refresh_at
            {
                return Some(v.clone());
            }
        }
        let groups: Vec<&str> = resolved.groups(spec.groups).iter().map(|g| &**g).collect();
        let roles: Vec<&str> = resolved.role_names.iter().map(|r| &**r).collect();
        let claims = AssertionClaims {
            subject: &resolved.principal.user_name,
            audience: spec.audience,
            ttl: self.ttl,
            email: resolved.email.as_deref(),
            name: resolved.display_name.as_deref(),
            groups: &groups,
            roles: &roles,
        };
        let token = match self.signer.sign(&claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the identity assertion");
                return None;
            }
        };
        let value = HeaderValue::from_str(&token).ok()?;
        let refresh_at = now + self.ttl / 2;
        let mut cached = resolved.assertions.lock();
        cached.retain(|(r, _, _)| *r != spec.route);
        cached.push((spec.route, value.clone(), refresh_at));
        Some(value)
    }
}

/// Whether the policy grants any role to members of `group` (the groups
/// the `policy` scope passes upstream).
pub fn grants_roles(policy: &Policy, group: &portcullis_directory::Group) -> bool {
    let one = [GroupRef::new(&group.owner, group.display_name())];
    let subject = Subject {
        user_name: None,
        groups: &one,
    };
    !policy.roles_for(&subject).is_empty()
}

/// A header value for free text: printable ASCII is kept, anything else
/// (non-ASCII names, control characters) is percent-encoded so the value is
/// always valid and cannot smuggle a line break.
fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&encode(text, false)).ok()
}

/// A comma-separated list; `,` and `%` inside an item are percent-encoded
/// so items containing commas survive the split.
fn header_list(items: &[Box<str>]) -> Option<HeaderValue> {
    let joined: Vec<String> = items.iter().map(|i| encode(i, true)).collect();
    HeaderValue::from_str(&joined.join(",")).ok()
}

fn encode(text: &str, list_item: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let plain = (0x20..0x7f).contains(&b) && b != b'%' && !(list_item && b == b',');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The user's primary email (RFC 7643 `primary: true`; some IdPs send it as
/// the string `"true"`), else the first one, lower-cased as the directory
/// indexes it.
fn primary_email(user: &portcullis_directory::User) -> Option<Box<str>> {
    let doc = user.doc();
    let primary = doc
        .get("emails")
        .and_then(serde_json::Value::as_array)
        .and_then(|emails| {
            emails.iter().find_map(|e| {
                let flagged = match e.get("primary") {
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
                    _ => false,
                };
                flagged
                    .then(|| e.get("value").and_then(serde_json::Value::as_str))
                    .flatten()
            })
        });
    match primary {
        Some(p) => Some(p.to_lowercase().into()),
        None => user.emails().next().map(Box::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_always_a_valid_single_line() {
        assert_eq!(encode("alice@example.com", false), "alice@example.com");
        assert_eq!(encode("Zoë\r\nX: y", false), "Zo%C3%AB%0D%0AX: y");
        assert_eq!(encode("100%", false), "100%25");
        let list = header_list(&["a,b".into(), "c".into()]).expect("value");
        assert_eq!(list, "a%2Cb,c");
    }
}
