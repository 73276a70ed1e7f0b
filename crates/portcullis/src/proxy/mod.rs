//! The reverse proxy: every request that is not SCIM goes through four
//! phases, in order, with one [`RequestContext`] carried through them.
//!
//! 1. **route**: the path is normalized (refused with 400 if it cannot be
//!    read one way only) and matched to a configured route by host and
//!    longest prefix (404 otherwise).
//! 2. **authenticate**: a request that a `[public]` rule allows goes on
//!    anonymously. Anything else needs `Authorization: Bearer <jwt>` from
//!    the configured OIDC issuer, or a browser session (see [`browser`]);
//!    either must name one active directory user (403 otherwise). Without
//!    either, a browser navigation is sent to sign in and anything else
//!    gets 401.
//! 3. **authorize**: the policy decides on the user's roles, computed from
//!    the groups the directory holds *now*, for the route, method and
//!    normalized path (403 with the reason when denied).
//! 4. **forward**: headers are cleaned (see [`headers`]), identity headers
//!    and the signed assertion are added, and the request streams to the
//!    upstream at the normalized path; upgrades (WebSocket) are tunnelled.
//!
//! Failures from any phase become responses in one place,
//! [`ProxyError::into_response`]. Every response carries `x-request-id`.
//!
//! Not here: SCIM (routed before the proxy), the audit trail.

pub mod browser;
pub mod context;
pub mod error;
pub mod headers;
pub mod identity;
pub mod live;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use portcullis_directory::{Directory, Lookup};
use portcullis_oidc::{AssertionSigner, Verifier, VerifyError};
use portcullis_policy::{NormalizeOptions, Reason, normalize_path};

pub use context::RequestContext;
pub use error::{Forbidden, ProxyError};

use crate::config::{Config, Credentials, IdentityBinding, Route};
use crate::policy_runtime::PolicyRuntime;
use crate::routes::Router;
use crate::web::{BoxError, ConnInfo};
use identity::{AssertionSpec, Identities};
use upstream::Upstream;

/// The body of every proxied response.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// An empty body; boxing it allocates nothing.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Every response carries the request's id.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How a path is normalized to pick its route; the route's own options
/// then apply.
const ROUTING: NormalizeOptions = NormalizeOptions {
    allow_encoded_slash: true,
};

/// At most how many headers [`Inner::outgoing`] adds to a request.
const ADDED_HEADERS: usize = 13;

/// Where Portcullis's own endpoints live on the proxy listener.
pub const RESERVED_PREFIX: &str = "/.portcullis/";

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStartError {
    #[error("route {route}: {source}")]
    Upstream {
        route: String,
        source: crate::tls::TlsError,
    },
    #[error("route {route}: credentials: {source}")]
    Credentials { route: String, source: CredError },
}

/// One route, ready to serve.
#[derive(Debug)]
struct RouteRuntime {
    config: Route,
    name: Arc<str>,
    /// `Authorization` for the upstream from the route's credentials.
    credentials: Option<HeaderValue>,
    /// Every header this route sets, for stripping client copies.
    managed: headers::Managed,
    metrics: crate::metrics::RouteMetrics,
}

/// The proxy service state, shared by every connection. Upstream
/// connection pools are per [`Proxy::fork`], so that each worker thread
/// reuses connections its own runtime drives.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    /// One per route, in configuration order.
    upstreams: Arc<[Upstream]>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    routes: Vec<RouteRuntime>,
    policy: Arc<PolicyRuntime>,
    directory: Directory,
    verifier: Option<Verifier>,
    binding: IdentityBinding,
    identities: Identities,
    trusted_proxies: Vec<ipnet::IpNet>,
    jwks: Bytes,
    live: Arc<live::Live>,
    metrics: crate::metrics::Metrics,
    browser: Option<browser::Browser>,
    audit: Option<Arc<crate::audit::Audit>>,
    activity: Option<Arc<crate::reports::Activity>>,
}

/// What the proxy works with besides its configuration.
#[derive(Debug)]
pub struct ProxyParts {
    pub policy: Arc<PolicyRuntime>,
    pub directory: Directory,
    /// Bearer tokens; none accepted without it.
    pub verifier: Option<Verifier>,
    /// Browser sign-in and sessions, when configured.
    pub browser: Option<browser::Browser>,
    pub signer: AssertionSigner,
    pub metrics: crate::metrics::Metrics,
    /// The audit trail, when configured.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Users' last access, for stale-access reports.
    pub activity: Option<Arc<crate::reports::Activity>>,
}

/// One client connection as the proxy sees it: its peer, and the
/// forwarding headers made once for all its requests.
#[derive(Debug)]
pub struct ClientConn {
    pub forwarding: headers::ConnForwarding,
}

impl Proxy {
    pub fn new(
        config: &Config,
        parts: ProxyParts,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ProxyStartError> {
        let ProxyParts {
            policy,
            directory,
            verifier,
            browser,
            signer,
            metrics,
            audit,
            activity,
        } = parts;
        let mut routes = Vec::with_capacity(config.routes.len());
        let upstreams = upstreams(&config.routes, &metrics)?;
        for route in &config.routes {
            let credentials = match &route.credentials {
                None => None,
                Some(c) => Some(
                    credentials_header(c, env).map_err(|source| ProxyStartError::Credentials {
                        route: route.name.clone(),
                        source,
                    })?,
                ),
            };
            let mut managed: Vec<HeaderName> = route.headers.names().cloned().collect();
            managed.extend(route.run_as_header.clone());
            managed.retain(|h| h != header::AUTHORIZATION);
            let name: Arc<str> = Arc::from(route.name.as_str());
            routes.push(RouteRuntime {
                metrics: metrics.route(&name),
                name,
                config: route.clone(),
                credentials,
                managed: headers::Managed::new(managed),
            });
        }
        let jwks = signer.jwks_json();
        Ok(Proxy {
            inner: Arc::new(Inner {
                router: Router::new(&config.routes),
                routes,
                policy,
                identities: Identities::new(directory.clone(), signer, config.assertion.ttl),
                directory,
                verifier,
                binding: config.identity.clone(),
                trusted_proxies: config.server.trusted_proxies.clone(),
                jwks,
                live: Arc::default(),
                metrics,
                browser,
                audit,
                activity,
            }),
            upstreams,
        })
    }

    /// The registry of live connections, for [`live::watch`].
    pub fn live(&self) -> Arc<live::Live> {
        self.inner.live.clone()
    }

    /// The same proxy with its own, empty upstream connection pools.
    pub fn fork(&self) -> Result<Proxy, ProxyStartError> {
        Ok(Proxy {
            inner: self.inner.clone(),
            upstreams: upstreams(self.inner.routes.iter().map(|r| &r.config), &self.inner.metrics)?,
        })
    }

    /// What the proxy keeps about one client connection, shared by its
    /// requests (made when the connection is accepted).
    pub fn client_conn(&self, info: ConnInfo) -> Arc<ClientConn> {
        Arc::new(ClientConn {
            forwarding: headers::ConnForwarding::new(info.peer.ip(), info.tls, &self.inner.trusted_proxies),
        })
    }

    /// Serves one request through the phases. Never fails: every failure
    /// is a response; the `Result` is the shape hyper's service wants.
    ///
    /// Takes the proxy by value so that this future is all that is
    /// allocated per request, with no wrapper around it: its size is
    /// copied on every request, so the phases that do not wait are plain
    /// functions and only what lives across an await is in it.
    /// The request comes boxed: an `async fn` keeps a copy of each
    /// argument in every layer, and a request is 264 bytes.
    pub async fn handle(
        self,
        req: Box<Request<Incoming>>,
        conn: Arc<ClientConn>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let inner = &*self.inner;
        let client_ip = if conn.forwarding.trusted() {
            headers::client_ip(req.headers(), conn.forwarding.peer(), &inner.trusted_proxies)
        } else {
            conn.forwarding.peer()
        };
        let mut ctx = RequestContext::new(conn, client_ip, req.method(), req.headers());
        let raw_path = inner.audit.as_ref().map(|_| req.uri().path().to_owned());
        let result = match own_endpoint(req.uri().path()) {
            Some(OwnEndpoint::Me) => Box::pin(inner.me(&mut ctx, &req)).await,
            Some(endpoint @ (OwnEndpoint::Callback | OwnEndpoint::Logout)) => {
                Box::pin(inner.browser_endpoint(endpoint, &mut ctx, *req)).await
            }
            Some(endpoint) => inner.own(endpoint, &req),
            None => inner.proxy(&self.upstreams, &mut ctx, req).await,
        };
        Ok(inner.log(&mut ctx, result, raw_path.as_deref()))
    }
}

/// Portcullis's own endpoints under [`RESERVED_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnEndpoint {
    Jwks,
    Me,
    Callback,
    SignIn,
    Logout,
    SignedOut,
    Unknown,
}

fn own_endpoint(path: &str) -> Option<OwnEndpoint> {
    let rest = path.strip_prefix(RESERVED_PREFIX)?;
    Some(match rest {
        "jwks.json" => OwnEndpoint::Jwks,
        "me" => OwnEndpoint::Me,
        "callback" => OwnEndpoint::Callback,
        "signin" => OwnEndpoint::SignIn,
        "logout" => OwnEndpoint::Logout,
        "signed-out" => OwnEndpoint::SignedOut,
        _ => OwnEndpoint::Unknown,
    })
}

impl Inner {
    /// The log phase: the response for the result, with the request id;
    /// metrics, the audit record and the log line.
    fn log(
        &self,
        ctx: &mut RequestContext,
        result: Result<Response<ProxyBody>, ProxyError>,
        raw_path: Option<&str>,
    ) -> Response<ProxyBody> {
        let mut resp = result.unwrap_or_else(|e| {
            ctx.reason = Some(e.code());
            e.into_response(ctx)
        });
        resp.headers_mut().insert(X_REQUEST_ID, ctx.id_header.clone());
        if ctx.clear_redirect_count
            && let Some(browser) = &self.browser
        {
            resp.headers_mut()
                .append(header::SET_COOKIE, browser.clear_redirect_count());
        }
        let status = resp.status().as_u16();
        let decision = ctx.decision.unwrap_or(match status {
            // Portcullis's own public endpoints (the JWKS).
            0..=399 => "public",
            401 => "unauthenticated",
            403 => "deny",
            _ => "error",
        });
        let route = ctx.route.and_then(|i| self.routes.get(i)).map(|r| &r.metrics);
        self.metrics.request(route, decision, status, ctx.started.elapsed());
        if let Some(audit) = &self.audit {
            self.record(audit, ctx, decision, status, raw_path.unwrap_or("-"));
        }
        tracing::debug!(
            request_id = %ctx.id,
            client = %ctx.client_ip,
            route = ctx.route_name(),
            user = ctx.principal.as_ref().map(|p| &*p.user_name),
            status = resp.status().as_u16(),
            micros = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
        resp
    }

    /// The audit record of a request: every decision on a route and every
    /// refusal; allowed requests sampled by the route's `audit_allowed`.
    fn record(&self, audit: &crate::audit::Audit, ctx: &RequestContext, decision: &str, status: u16, raw_path: &str) {
        let allowed = matches!(decision, "allow" | "public");
        if ctx.route.is_none() && allowed {
            // Portcullis's own public endpoints (the JWKS, pages).
            return;
        }
        if allowed
            && let Some(route) = ctx.route.and_then(|i| self.routes.get(i))
            && route.config.audit_allowed < 1.0
            && rand::random::<f64>() >= route.config.audit_allowed
        {
            return;
        }
        let rule = ctx.rule.as_ref().map(ToString::to_string);
        audit.access(&crate::audit::Access {
            request_id: ctx.id.as_str(),
            user: ctx.principal.as_ref().map(|p| &*p.user_name),
            client_ip: ctx.client_ip,
            route: ctx.route_name.as_deref(),
            method: ctx.method.as_str(),
            path: ctx.path.as_deref().unwrap_or(raw_path),
            decision,
            reason: ctx.reason,
            rule: rule.as_deref(),
            roles: ctx.resolved.as_ref().map(|r| &r.role_names[..]),
            status,
            upstream: ctx.upstream,
            total: ctx.started.elapsed(),
        });
    }

    fn own(&self, endpoint: OwnEndpoint, req: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        match (endpoint, &self.browser) {
            (OwnEndpoint::SignIn, Some(browser)) => return browser.signin_endpoint(req),
            (OwnEndpoint::SignedOut, Some(browser)) => return Ok(browser.signed_out()),
            _ => {}
        }
        match endpoint {
            OwnEndpoint::Jwks => {
                let mut resp = Response::new(full(self.jwks.clone()));
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
                Ok(resp)
            }
            _ => Err(ProxyError::NoRoute),
        }
    }

    /// The sign-in callback and logout, which need the request body or the
    /// directory.
    async fn browser_endpoint(
        &self,
        endpoint: OwnEndpoint,
        ctx: &mut RequestContext,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(browser) = &self.browser else {
            return Err(ProxyError::NoRoute);
        };
        // These pages are for people; errors are shown as pages.
        ctx.wants_html = true;
        match endpoint {
            OwnEndpoint::Callback => {
                let (resp, principal) = browser.callback(&req, |claims| self.bind(claims)).await?;
                ctx.principal = Some(principal);
                ctx.decision = Some("sign_in");
                Ok(resp)
            }
            _ => {
                let post = req.method() == http::Method::POST;
                let resp = browser.logout(req).await?;
                if post && resp.status() == StatusCode::FOUND {
                    ctx.decision = Some("sign_out");
                }
                Ok(resp)
            }
        }
    }

    /// `/.portcullis/me`: who the caller is to Portcullis right now: the
    /// directory user, their effective groups and their roles under the
    /// current policy. The first thing to look at after a 403.
    async fn me(&self, ctx: &mut RequestContext, req: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let principal = self.authenticate(req, ctx).await?;
        ctx.principal = Some(principal.clone());
        ctx.decision = Some("allow");
        let policy = self.policy.current();
        let resolved = self.identities.resolve(&principal, &policy);
        let groups: Vec<serde_json::Value> = principal
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.display_name(),
                    "client": &*g.owner,
                    "grants_roles": identity::grants_roles(&policy, g),
                })
            })
            .collect();
        let body = serde_json::json!({
            "user": &*principal.user_name,
            "id": &*principal.id,
            "active": principal.active,
            "email": resolved.email.as_deref(),
            "display_name": resolved.display_name.as_deref(),
            "groups": groups,
            "roles": resolved.role_names.iter().map(|r| &**r).collect::<Vec<_>>(),
            "policy_generation": policy.generation(),
        });
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// The phases for a request on a route. Only authentication (a token
    /// not seen before) and the upstream exchange wait; everything else is
    /// done by plain functions, so this future holds little besides the
    /// upstream's.
    async fn proxy(
        &self,
        upstreams: &[Upstream],
        ctx: &mut RequestContext,
        req: Box<Request<Incoming>>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let index = self.route(ctx, &req)?;
        let (Some(route), Some(upstream)) = (self.routes.get(index), upstreams.get(index)) else {
            return Err(ProxyError::NoRoute);
        };
        // One policy for the whole decision, even if it is reloaded while
        // the request waits for authentication.
        let policy = self.policy.current();
        let identity = if self.is_public(&policy, ctx, route) {
            None
        } else {
            let principal = self.authenticate(&req, ctx).await?;
            Some(self.authorize(&policy, ctx, route, principal)?)
        };
        drop(policy);
        let (up, client_upgrade) = self.outgoing(ctx, route, upstream, index, *req, identity.as_deref())?;
        let sent = std::time::Instant::now();
        let result = upstream.send(up).await;
        self.incoming(ctx, route, result, sent, client_upgrade, identity.as_deref())
    }

    /// Route: the normalized path matched to a route; its index.
    fn route(&self, ctx: &mut RequestContext, req: &Request<Incoming>) -> Result<usize, ProxyError> {
        let raw_path = req.uri().path();
        let routed = normalize_path(raw_path, ROUTING).map_err(|e| ProxyError::bad_request("bad_path", e.reason()))?;
        let host = request_host(req)?;
        let index = self.router.route_index(host, &routed).ok_or(ProxyError::NoRoute)?;
        let route = self.routes.get(index).ok_or(ProxyError::NoRoute)?;
        ctx.route = Some(index);
        ctx.route_name = Some(route.name.clone());
        // Routing accepts encoded slashes so that the route can decide on
        // them; a path without any `%` reads the same either way.
        let options = route.config.normalize_options();
        let path = if options == ROUTING || !raw_path.contains('%') {
            routed.into_owned()
        } else {
            normalize_path(raw_path, options)
                .map_err(|e| ProxyError::bad_request("bad_path", e.reason()))?
                .into_owned()
        };
        ctx.path = Some(path);
        if let Some(limit) = route.config.max_request_body
            && content_length(req.headers()).is_some_and(|n| n > limit)
        {
            return Err(ProxyError::PayloadTooLarge { limit });
        }
        Ok(index)
    }

    /// Whether a `public` rule lets the request through unauthenticated.
    fn is_public(&self, policy: &portcullis_policy::Policy, ctx: &mut RequestContext, route: &RouteRuntime) -> bool {
        let public = policy.decide_public(&policy_request(ctx, route));
        if public.allowed {
            ctx.decision = Some("public");
            ctx.rule = public.reason.rule().map(|r| r.location().clone());
        }
        public.allowed
    }

    /// Authorize: the policy's decision on the user's roles as the
    /// directory holds them now.
    fn authorize(
        &self,
        policy: &portcullis_policy::Policy,
        ctx: &mut RequestContext,
        route: &RouteRuntime,
        principal: Arc<portcullis_directory::Principal>,
    ) -> Result<Arc<identity::Resolved>, ProxyError> {
        let resolved = self.identities.resolve(&principal, policy);
        let request = policy_request(ctx, route);
        let decision = policy.decide_with_roles(&resolved.roles, &request);
        let refused = (!decision.allowed).then(|| denied(&decision.reason, &resolved.role_names, &request));
        ctx.rule = decision.reason.rule().map(|r| r.location().clone());
        if refused.is_none() {
            ctx.decision = Some("allow");
            if let Some(activity) = &self.activity {
                activity.touch(&principal, unix_now());
            }
        }
        ctx.principal = Some(principal);
        ctx.resolved = Some(resolved.clone());
        refused.map_or(Ok(resolved), Err)
    }

    /// Bearer token -> verified claims -> one active directory user; or,
    /// without a token, the browser session's user.
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        ctx: &mut RequestContext,
    ) -> Result<Arc<portcullis_directory::Principal>, ProxyError> {
        let token = bearer_token(req.headers())?;
        if token.is_none()
            && let Some(browser) = &self.browser
        {
            return self.authenticate_session(browser, req, ctx);
        }
        let Some(verifier) = &self.verifier else {
            return Err(ProxyError::Unauthenticated {
                code: "no_identity_provider",
                message: "this address needs sign-in, and no identity provider is configured".into(),
                token_given: token.is_some(),
            });
        };
        let Some(token) = token else {
            return Err(ProxyError::Unauthenticated {
                code: "missing_token",
                message: "sign in: send Authorization: Bearer <token> from the identity provider".into(),
                token_given: false,
            });
        };
        // A token seen before is answered without a future; the slow path
        // (signature check, maybe a key fetch) is boxed to keep this
        // function's state small.
        let verified = match verifier.cached(token) {
            Some(answer) => answer,
            None => {
                let token = std::str::from_utf8(token).map_err(|_| ProxyError::Unauthenticated {
                    code: "malformed_authorization",
                    message: "the Authorization header is not valid".into(),
                    token_given: true,
                })?;
                Box::pin(verifier.verify(token)).await
            }
        };
        let verified = verified.map_err(|e| match e {
            VerifyError::KeysUnavailable => ProxyError::Unavailable {
                code: "idp_unavailable",
                message: "the identity provider's signing keys are not available yet; retry shortly".into(),
            },
            e => ProxyError::Unauthenticated {
                code: e.reason(),
                message: Cow::Owned(format!(
                    "the bearer token was refused: {}",
                    e.reason().replace('_', " ")
                )),
                token_given: true,
            },
        })?;
        self.bind(verified.claims())
    }

    fn authenticate_session(
        &self,
        browser: &browser::Browser,
        req: &Request<Incoming>,
        ctx: &mut RequestContext,
    ) -> Result<Arc<portcullis_directory::Principal>, ProxyError> {
        let state = browser.session(req.headers());
        let browser::SessionState::Valid { session, secret } = &state else {
            return Err(browser.challenge(req, ctx, &state));
        };
        ctx.clear_redirect_count = browser.has_redirect_count(req.headers());
        browser.maybe_refresh(session, secret);
        // The session names a user; whether they may still act is the
        // directory's answer now, not the one at sign-in.
        match self.directory.principal(&session.user_id) {
            Some(p) if p.active => Ok(p),
            Some(_) => Err(ProxyError::Forbidden {
                reason: Forbidden::Deactivated,
                message: "your account is deactivated".into(),
            }),
            None => Err(ProxyError::Forbidden {
                reason: Forbidden::NotProvisioned,
                message: "your account is no longer provisioned here".into(),
            }),
        }
    }

    /// A verified token's claims -> one active directory user, by the
    /// identity claim's value.
    fn bind(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<portcullis_directory::Principal>, ProxyError> {
        let claim = &self.binding.claim;
        // An email the IdP has not verified can be anyone's (self-service
        // sign-up, an editable profile field): binding by it would let them
        // act as the directory user who owns that address. Absent means the
        // IdP did not say (access tokens often leave it out); only an
        // explicit false refuses. Some IdPs send the boolean as a string.
        let unverified = match claims.get("email_verified") {
            Some(serde_json::Value::Bool(verified)) => !verified,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("false"),
            _ => false,
        };
        if self.binding.require_verified_email && claim == "email" && unverified {
            return Err(ProxyError::Forbidden {
                reason: Forbidden::EmailUnverified,
                message: "your identity provider says the email address in your token is not verified".into(),
            });
        }
        let Some(value) = claims.get(claim).and_then(serde_json::Value::as_str) else {
            return Err(ProxyError::Forbidden {
                reason: Forbidden::NotProvisioned,
                message: format!("your identity provider did not send a {claim:?} claim to identify you by"),
            });
        };
        match self.directory.principal_by(self.binding.attribute, value) {
            Lookup::Found(p) if p.active => Ok(p),
            Lookup::Found(_) => Err(ProxyError::Forbidden {
                reason: Forbidden::Deactivated,
                message: "your account is deactivated".into(),
            }),
            Lookup::NotFound => Err(ProxyError::Forbidden {
                reason: Forbidden::NotProvisioned,
                message: "your account is not provisioned here; ask for access through your identity provider".into(),
            }),
            Lookup::Ambiguous(_) => Err(ProxyError::Forbidden {
                reason: Forbidden::Ambiguous,
                message: "several accounts match your identity; ask an administrator to resolve it".into(),
            }),
        }
    }

    /// Forward, first half: the upstream request, with cleaned headers,
    /// the identity headers and the assertion; and the client's side of an
    /// upgrade it asks for.
    fn outgoing(
        &self,
        ctx: &RequestContext,
        route: &RouteRuntime,
        upstream: &Upstream,
        index: usize,
        mut req: Request<Incoming>,
        identity: Option<&identity::Resolved>,
    ) -> Result<(Request<ProxyBody>, Option<hyper::upgrade::OnUpgrade>), ProxyError> {
        let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let path = ctx.path.as_deref().unwrap_or("/");
        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let uri = upstream.uri(path, req.uri_mut())?;

        let mut headers = std::mem::take(req.headers_mut());
        headers::strip_hop_by_hop(&mut headers, upgrade);
        headers::strip_identity(&mut headers, &route.managed);
        let cfg = &route.config;
        if !cfg.forward_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some(browser) = &self.browser
            && !cfg.forward_session_cookie
        {
            headers::strip_cookies(&mut headers, |name| browser.is_own_cookie(name));
        }
        // Room for what is added below (forwarding, host, request id,
        // credentials, identity, assertion) at once: growing as they come
        // would rehash every header two or three times per request.
        let _ = headers.try_reserve(ADDED_HEADERS);
        ctx.conn.forwarding.apply(&mut headers, original_host.as_ref());
        headers.insert(header::HOST, upstream.host_header.clone());
        if let Some(h) = &cfg.headers.request_id {
            headers.insert(h.clone(), ctx.id_header.clone());
        }
        if let Some(auth) = &route.credentials {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        if let Some(id) = identity {
            let h = &cfg.headers;
            let set = |headers: &mut http::HeaderMap, name: &Option<HeaderName>, value: Option<&HeaderValue>| {
                if let (Some(name), Some(value)) = (name, value) {
                    headers.insert(name.clone(), value.clone());
                }
            };
            set(&mut headers, &h.user, id.user_header.as_ref());
            set(&mut headers, &h.email, id.email_header.as_ref());
            set(&mut headers, &h.roles, id.roles_header.as_ref());
            set(&mut headers, &h.groups, id.groups_header(cfg.assertion_groups));
            if let Some(run_as) = &cfg.run_as_header {
                set(&mut headers, &Some(run_as.clone()), id.user_header.as_ref());
            }
            if let Some(name) = &h.assertion {
                let spec = AssertionSpec {
                    route: index,
                    audience: &cfg.assertion_audience,
                    groups: cfg.assertion_groups,
                };
                if let Some(jwt) = self.identities.assertion(id, spec) {
                    let value = if name == header::AUTHORIZATION {
                        let mut v = Vec::with_capacity(jwt.len() + 7);
                        v.extend_from_slice(b"Bearer ");
                        v.extend_from_slice(jwt.as_bytes());
                        HeaderValue::from_bytes(&v).ok()
                    } else {
                        Some(jwt)
                    };
                    set(&mut headers, &Some(name.clone()), value.as_ref());
                }
            }
        }

        let (parts, body) = req.into_parts();
        let body: ProxyBody = if body.is_end_stream() {
            // Most requests (GET, HEAD) carry no body: an empty body boxes
            // as a zero-sized value, which allocates nothing.
            empty()
        } else {
            match cfg.max_request_body {
                Some(limit) => http_body_util::Limited::new(body, limit as usize).boxed(),
                None => body.map_err(BoxError::from).boxed(),
            }
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method;
        *up.uri_mut() = uri;
        *up.headers_mut() = headers;
        *up.version_mut() = if upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if upstream.http2 {
            // HTTP/2 carries the authority in the URI; a Host header
            // alongside it is redundant and some servers refuse it.
            up.headers_mut().remove(header::HOST);
        }
        Ok((up, client_upgrade))
    }

    /// Forward, second half: the upstream's answer (or failure) measured,
    /// cleaned, and made revocable when it may stream for long; an upgrade
    /// tunnelled.
    fn incoming(
        &self,
        ctx: &mut RequestContext,
        route: &RouteRuntime,
        result: Result<Response<ProxyBody>, ProxyError>,
        sent: std::time::Instant,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        identity: Option<&identity::Resolved>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut resp = match result {
            Ok(resp) => {
                let took = sent.elapsed();
                self.metrics.upstream(&route.metrics, took);
                ctx.upstream = Some(took);
                resp
            }
            Err(e) => {
                match &e {
                    ProxyError::GatewayTimeout { .. } => self.metrics.upstream_error(&route.metrics, "timeout"),
                    ProxyError::BadGateway { .. } => self.metrics.upstream_error(&route.metrics, "connect"),
                    _ => {}
                }
                return Err(e);
            }
        };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
        // What may run for long is registered, so that provisioning can
        // end it (see `live`).
        let register = || {
            identity.map(|id| {
                self.live.register(
                    id.principal.key,
                    route.name.clone(),
                    ctx.method.as_str(),
                    ctx.path.as_deref().unwrap_or("/"),
                )
            })
        };
        if !switching
            && is_long(&resp)
            && let Some(guard) = register()
        {
            resp = resp.map(|body| live::revocable(body, guard));
        }
        if switching {
            match client_upgrade {
                Some(client) => {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(upstream::tunnel(client, upstream_side, register()));
                }
                None => {
                    return Err(ProxyError::BadGateway {
                        detail: "upstream switched protocols without being asked".into(),
                    });
                }
            }
        }
        Ok(resp)
    }
}

/// What the policy decides on: the route, the method and the normalized
/// path.
fn policy_request<'a>(ctx: &'a RequestContext, route: &'a RouteRuntime) -> portcullis_policy::Request<'a> {
    portcullis_policy::Request {
        route: &route.config.name,
        method: ctx.method.as_str(),
        path: ctx.path.as_deref().unwrap_or("/"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn upstreams<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    metrics: &crate::metrics::Metrics,
) -> Result<Arc<[Upstream]>, ProxyStartError> {
    routes
        .into_iter()
        .map(|route| {
            let upstream = Upstream::new(route).map_err(|source| ProxyStartError::Upstream {
                route: route.name.clone(),
                source,
            })?;
            Ok(upstream.counting_retries(metrics.upstream_retries(&Arc::from(route.name.as_str()))))
        })
        .collect()
}

/// The request's host: the URI authority (HTTP/2, absolute-form), else the
/// `Host` header. Several `Host` headers are refused.
fn request_host(req: &Request<Incoming>) -> Result<Option<&str>, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.as_str()));
    }
    let mut values = req.headers().get_all(header::HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ProxyError::bad_request("bad_host", "more than one Host header"));
    }
    match first {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ProxyError::bad_request("bad_host", "the Host header is not valid")),
    }
}

/// A response that may stream for long: no length, or more than 1 MiB.
fn is_long(resp: &Response<ProxyBody>) -> bool {
    let body = resp.body();
    if body.is_end_stream() {
        return false;
    }
    // The body knows its length when the upstream declared one (hyper
    // decodes by it): no need to find and parse the header again.
    body.size_hint().exact().is_none_or(|n| n > 1 << 20)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The bearer token, if any, as the header's bytes. More than one
/// `Authorization` header, or one that is not a bearer token, is an error
/// rather than a guess. The bytes are not checked here: a cached token is
/// compared byte for byte, and any other is checked (UTF-8 first) by the
/// token's own parser.
fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&[u8]>, ProxyError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProxyError::bad_request(
            "bad_authorization",
            "more than one Authorization header",
        ));
    }
    let mut parts = value.as_bytes().splitn(2, |&b| b == b' ');
    match (parts.next(), parts.next().map(<[u8]>::trim_ascii)) {
        (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty() => Ok(Some(token)),
        _ => Err(ProxyError::Unauthenticated {
            code: "unsupported_scheme",
            message: "only Authorization: Bearer <token> is accepted".into(),
            token_given: false,
        }),
    }
}

fn denied(reason: &Reason<'_>, roles: &[Box<str>], req: &portcullis_policy::Request<'_>) -> ProxyError {
    let what = format!("{} {} on {}", req.method, req.path, req.route);
    match reason {
        Reason::Denied { rule } => ProxyError::Forbidden {
            reason: Forbidden::DeniedByRule,
            message: match rule.role() {
                Some(role) => format!("{what} is denied by a rule of your role {role:?}"),
                None => format!("{what} is denied"),
            },
        },
        _ if roles.is_empty() => ProxyError::Forbidden {
            reason: Forbidden::NoRoleAllows,
            message: format!("{what}: you have no role here; your groups grant none"),
        },
        _ => ProxyError::Forbidden {
            reason: Forbidden::NoRoleAllows,
            message: format!(
                "{what}: none of your roles ({}) allows it",
                roles.iter().map(|r| &**r).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// Why a route's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    #[error(transparent)]
    Secret(crate::secret::SecretError),
    #[error("{0}")]
    Bad(String),
}

/// The `Authorization` value for a route's credentials.
pub fn credentials_header(c: &Credentials, env: &dyn Fn(&str) -> Option<String>) -> Result<HeaderValue, CredError> {
    use base64::Engine;
    let (scheme, secret) = match c {
        Credentials::Basic(s) => ("Basic", s),
        Credentials::Bearer(s) => ("Bearer", s),
    };
    let value = secret.resolve(env).map_err(CredError::Secret)?;
    let value = value.trim();
    let encoded = match c {
        Credentials::Basic(_) => {
            if !value.contains(':') {
                return Err(CredError::Bad("basic credentials must be user:password".into()));
            }
            base64::engine::general_purpose::STANDARD.encode(value)
        }
        Credentials::Bearer(_) => value.to_owned(),
    };
    let mut v = HeaderValue::from_str(&format!("{scheme} {encoded}"))
        .map_err(|_| CredError::Bad("the secret contains characters not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what a function returns, without calling it.
    fn returned_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request allocates this future and copies it into place: kept
    /// under 1 KiB, the allocator serves it from its per-thread cache
    /// (glibc's tcache takes up to 1,032 bytes). It was 4,864 bytes.
    #[test]
    fn the_per_request_future_stays_small() {
        let size = returned_size(Proxy::handle);
        assert!(size <= 1024, "the per-request future is {size} bytes");
    }

    /// Which responses may stream for long, and so are made revocable:
    /// those of unknown length or over 1 MiB.
    #[test]
    fn long_responses_are_those_of_unknown_or_large_size() {
        fn check(body: ProxyBody, expected: bool) {
            assert_eq!(is_long(&Response::new(body)), expected);
        }
        check(empty(), false);
        check(full(Bytes::new()), false);
        check(full(vec![0u8; 1 << 20]), false);
        check(full(vec![0u8; (1 << 20) + 1]), true);
        let stream = futures_util::stream::iter([Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from("x")))]);
        check(http_body_util::StreamBody::new(stream).boxed(), true);
    }

    /// `check(Authorization values, expected)`: the token's bytes, or the
    /// error code.
    #[test]
    fn the_bearer_token_is_taken_from_one_authorization_header() {
        fn check(values: &[&[u8]], expected: Result<Option<&[u8]>, &str>) {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
            }
            let got = bearer_token(&headers).map_err(|e| e.code());
            assert_eq!(got, expected, "Authorization: {values:?}");
        }
        check(&[], Ok(None));
        check(&[b"Bearer abc.def.ghi"], Ok(Some(b"abc.def.ghi")));
        check(&[b"bearer  abc.def.ghi "], Ok(Some(b"abc.def.ghi")));
        check(&[b"BEARER x"], Ok(Some(b"x")));
        // Not checked here: a token that is not UTF-8 is refused by the
        // verifier's path, never found in the cache.
        check(&[b"Bearer \xff\xfe"], Ok(Some(b"\xff\xfe")));
        check(&[b"Bearer "], Err("unsupported_scheme"));
        check(&[b"Bearer"], Err("unsupported_scheme"));
        check(&[b"Basic YWxpY2U6cHc="], Err("unsupported_scheme"));
        check(&[b"Bearerabc"], Err("unsupported_scheme"));
        check(&[b"Bearer a", b"Bearer b"], Err("bad_authorization"));
    }
}
