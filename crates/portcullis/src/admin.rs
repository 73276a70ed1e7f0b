//! The admin listener: `/healthz` (the process is up), `/readyz` (it can
//! serve: the store is healthy and a policy is loaded), and two read-only
//! views for operators and the CLI: `/v1/explain?user=&method=&url=` (the
//! decision the proxy would make now, and why) and `/v1/principal?user=`
//! (a user's groups as the directory holds them), `/v1/status` (each SCIM
//! client's last successful push), `/v1/report/access` and
//! `/v1/report/stale?days=N` (access reviews). `/readyz` also waits for
//! the OIDC issuer's keys when one is configured, and reports browser
//! sign-in's discovery without waiting for it (signed-in sessions work
//! without the IdP, so an IdP outage must not take the proxy out of its
//! load balancer). `/metrics` serves
//! Prometheus text (see `metrics`).
//!
//! Keep this listener on a private address; it is not authenticated.

use std::convert::Infallible;
use std::future::Ready;

use http::StatusCode;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::sync::Arc;

use portcullis_directory::{Directory, Health, IdentityAttr, Lookup};
use portcullis_oidc::Verifier;
use serde_json::json;

use crate::authz;
use crate::metrics::Exporter;
use crate::policy_runtime::PolicyRuntime;
use crate::routes::Router;
use crate::session::signin::SignIn;
use crate::web::{Body, json};

/// The admin service: the parts of the running server it reports on.
#[derive(Debug, Clone)]
pub struct Admin {
    pub directory: Directory,
    pub policy: Arc<PolicyRuntime>,
    pub router: Arc<Router>,
    /// The bearer-token verifier, when an OIDC issuer is configured: ready
    /// once its discovery and first key set are in.
    pub verifier: Option<Verifier>,
    pub signin: Option<Arc<SignIn>>,
    pub activity: Arc<crate::reports::Activity>,
    pub feed: crate::alerts::FeedHealth,
    pub metrics: Arc<Exporter>,
}

impl Admin {
    fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        match req.uri().path() {
            "/healthz" => json(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => self.ready(),
            "/v1/report/access" => self.report(None),
            "/v1/status" => self.status(),
            "/v1/report/stale" => match query.get("days").map(|d| d.parse::<u32>()) {
                Some(Ok(days)) => self.report(Some(days)),
                _ => json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "bad_request", "message": "give days=N"}),
                ),
            },
            "/metrics" => {
                let mut resp = Response::new(Body::from(self.metrics.render()));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/v1/explain" => {
                let (Some(method), Some(url)) = (query.get("method"), query.get("url")) else {
                    return bad_request("explain needs method and url parameters (and user, unless anonymous)");
                };
                let policy = self.policy.current();
                let e = authz::explain(
                    &policy,
                    &self.router,
                    |u| self.directory.principal_by(IdentityAttr::UserName, u),
                    query.get("user").map(String::as_str),
                    method,
                    url,
                );
                json(StatusCode::OK, &serde_json::to_value(e).unwrap_or_default())
            }
            "/v1/principal" => {
                let Some(user) = query.get("user") else {
                    return bad_request("principal needs a user parameter");
                };
                match self.directory.principal_by(IdentityAttr::UserName, user) {
                    Lookup::Found(p) => json(
                        StatusCode::OK,
                        &json!({
                            "user": &*p.user_name,
                            "active": p.active,
                            "groups": p.groups.iter().map(|g| json!({"client": &*g.owner, "displayName": g.display_name()})).collect::<Vec<_>>(),
                        }),
                    ),
                    Lookup::NotFound => json(StatusCode::NOT_FOUND, &json!({"error": "not_provisioned"})),
                    Lookup::Ambiguous(n) => json(StatusCode::CONFLICT, &json!({"error": "ambiguous", "users": n})),
                }
            }
            _ => json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    /// Operator status: each SCIM client's last successful request (a
    /// silent IdP means deprovisioning is not reaching us).
    fn status(&self) -> Response<Body> {
        let feeds: Vec<serde_json::Value> = self
            .feed
            .snapshot()
            .into_iter()
            .map(|f| {
                json!({
                    "client": f.client,
                    "last_success": f.last_success.map(|t| time::OffsetDateTime::from(t)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()),
                    "silent_for_seconds": f.silent_for.map(|d| d.as_secs()),
                    "silent": f.silent,
                })
            })
            .collect();
        json(StatusCode::OK, &json!({"scim_clients": feeds}))
    }

    /// The access report, or only the stale users when `days` is given.
    fn report(&self, days: Option<u32>) -> Response<Body> {
        let last = self.activity.all();
        let rows = crate::reports::access(&self.directory, &self.policy.current(), &last);
        let rows = match days {
            Some(days) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                crate::reports::stale(rows, &last, days, now)
            }
            None => rows,
        };
        json(StatusCode::OK, &json!(rows))
    }

    fn ready(&self) -> Response<Body> {
        let stats = self.policy.stats();
        let policy = json!({
            "generation": stats.generation,
            "reloads": stats.reloads,
            "reload_failures": stats.failures,
        });
        let oidc = match &self.verifier {
            None => "not configured",
            Some(v) if v.is_ready() => "ok",
            Some(_) => "waiting for discovery and keys",
        };
        let sign_in = match &self.signin {
            None => "not configured",
            Some(s) if s.is_ready() => "ok",
            Some(_) => "identity provider not reachable yet (new sign-ins get 503; sessions work)",
        };
        let oidc_ok = self.verifier.as_ref().is_none_or(Verifier::is_ready);
        let (status, store) = match self.directory.health() {
            Health::Ok if oidc_ok => (StatusCode::OK, "ok".to_owned()),
            Health::Ok => (StatusCode::SERVICE_UNAVAILABLE, "ok".to_owned()),
            Health::Failed(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {reason}")),
        };
        let word = if status == StatusCode::OK { "ready" } else { "not ready" };
        json(
            status,
            &json!({"status": word, "store": store, "policy": policy, "oidc": oidc, "sign_in": sign_in}),
        )
    }
}

fn bad_request(message: &str) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "message": message}),
    )
}

impl hyper::service::Service<Request<Incoming>> for Admin {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.respond(&req)))
    }
}
