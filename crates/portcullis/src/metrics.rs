//! Prometheus metrics, served as text at the admin listener's `/metrics`.
//!
//! Two kinds: counters and histograms updated on the request path (requests
//! by route, decision and status; total and upstream latency; upstream
//! errors; SCIM requests), and values read from their owners at scrape time
//! (directory sizes, policy reloads, JWKS fetches, live connections, TLS
//! certificate reloads), so the owners keep a single source of truth and
//! the hot path pays nothing for them.
//!
//! Label values are bounded: route names come from the configuration,
//! decisions and error kinds are fixed words, statuses are HTTP codes. No
//! user, path or client address is ever a label.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use portcullis_directory::Directory;
use portcullis_oidc::Verifier;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::policy_runtime::PolicyRuntime;
use crate::proxy::live::Live;
use crate::tls::ServerCert;

/// A configured name (route, SCIM client) as a label value, shared rather
/// than copied per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteName(pub Arc<str>);

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RouteName,
    /// `allow`, `public`, `deny` (403), `unauthenticated` (401), `error`.
    decision: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: RouteName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: RouteName,
    /// `connect` (502) or `timeout` (504).
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScimLabels {
    /// The configured client name; `-` when the token was not accepted.
    client: RouteName,
    /// `create`, `get`, `list`, `search`, `replace`, `patch`, `delete`,
    /// `bulk`, `discovery` or `other` (see `Scim::operation`).
    operation: &'static str,
    method: &'static str,
    status: u16,
}

/// The request-path metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    upstream_seconds: Family<RouteLabels, Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_retries: Family<RouteLabels, Counter>,
    scim_requests: Family<ScimLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            upstream_retries: Family::default(),
            scim_requests: Family::default(),
        }
    }
}

/// One route's request-path series, looked up once when the proxy starts:
/// a family lookup hashes its labels and takes the family's lock, and the
/// proxy would otherwise make three per request.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    name: RouteName,
    request_seconds: Histogram,
    upstream_seconds: Histogram,
    /// The commonest outcome, `allow` with 200; the others are looked up.
    allowed_ok: Counter,
}

impl Metrics {
    /// The series of the route named `name` (created at zero).
    pub fn route(&self, name: &Arc<str>) -> RouteMetrics {
        let name = RouteName(name.clone());
        let labels = RouteLabels { route: name.clone() };
        RouteMetrics {
            request_seconds: self.request_seconds.get_or_create(&labels).clone(),
            upstream_seconds: self.upstream_seconds.get_or_create(&labels).clone(),
            allowed_ok: self
                .requests
                .get_or_create(&RequestLabels {
                    route: name.clone(),
                    decision: "allow",
                    status: 200,
                })
                .clone(),
            name,
        }
    }

    /// One proxied request, at its end; `route` is `None` for requests
    /// that matched no route (and Portcullis's own endpoints).
    pub fn request(&self, route: Option<&RouteMetrics>, decision: &'static str, status: u16, total: Duration) {
        let Some(route) = route else {
            let route = RouteName(Arc::from("-"));
            self.request_seconds
                .get_or_create(&RouteLabels { route: route.clone() })
                .observe(total.as_secs_f64());
            self.requests
                .get_or_create(&RequestLabels {
                    route,
                    decision,
                    status,
                })
                .inc();
            return;
        };
        route.request_seconds.observe(total.as_secs_f64());
        if decision == "allow" && status == 200 {
            route.allowed_ok.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.name.clone(),
                    decision,
                    status,
                })
                .inc();
        }
    }

    /// The counter of the route's requests sent again on a new upstream
    /// connection after a pooled one closed under them, for its pools.
    pub fn upstream_retries(&self, route: &Arc<str>) -> Counter {
        self.upstream_retries
            .get_or_create(&RouteLabels {
                route: RouteName(route.clone()),
            })
            .clone()
    }

    /// Time to the upstream's response headers.
    pub fn upstream(&self, route: &RouteMetrics, took: Duration) {
        route.upstream_seconds.observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, route: &RouteMetrics, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                route: route.name.clone(),
                kind,
            })
            .inc();
    }

    pub fn scim_request(&self, client: Option<&Arc<str>>, operation: &'static str, method: &http::Method, status: u16) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            _ => "other",
        };
        let client = RouteName(client.cloned().unwrap_or_else(|| Arc::from("-")));
        self.scim_requests
            .get_or_create(&ScimLabels {
                client,
                operation,
                method,
                status,
            })
            .inc();
    }
}

/// What is read from its owner at scrape time.
#[derive(Debug)]
pub struct Sources {
    pub directory: Directory,
    pub policy: Arc<PolicyRuntime>,
    pub verifier: Option<Verifier>,
    pub live: Arc<Live>,
    pub cert: Option<Arc<ServerCert>>,
    pub sessions: Option<Arc<crate::session::Sessions>>,
    pub audit: Option<Arc<crate::audit::Audit>>,
    pub alerts: Option<(crate::alerts::Alerter, crate::alerts::FeedHealth)>,
    /// The main listener's client connections.
    pub connections: Arc<crate::web::ConnStats>,
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = self.directory.stats();
        let conns = self.connections.counts();
        for (name, help, value) in [
            (
                "client_connections",
                "Client connections open on the main listener.",
                conns.open,
            ),
            (
                "client_connections_parked",
                "Idle HTTP/1.1 client connections held without their HTTP state.",
                conns.parked,
            ),
            ("directory_users", "Users in the identity directory.", stats.users),
            ("directory_groups", "Groups in the identity directory.", stats.groups),
            (
                "directory_memberships",
                "Direct group memberships in the identity directory.",
                stats.memberships,
            ),
            (
                "live_connections",
                "Open WebSockets and long responses of signed-in users.",
                self.live.counts().0,
            ),
        ] {
            gauge(&mut encoder, name, help, value as i64)?;
        }
        counter(
            &mut encoder,
            "client_connections_parks",
            "Times an idle HTTP/1.1 client connection was parked.",
            conns.parks,
        )?;
        let policy = self.policy.stats();
        counter(
            &mut encoder,
            "policy_reloads",
            "Policy reloads that took effect.",
            policy.reloads,
        )?;
        counter(
            &mut encoder,
            "policy_reload_failures",
            "Policy reloads refused because the new policy did not compile.",
            policy.failures,
        )?;
        gauge(
            &mut encoder,
            "policy_generation",
            "Generation of the policy in force.",
            policy.generation as i64,
        )?;
        counter(
            &mut encoder,
            "live_connections_closed",
            "Live connections closed because provisioning withdrew access.",
            self.live.counts().1,
        )?;
        if let Some(v) = &self.verifier {
            let s = v.stats();
            counter(
                &mut encoder,
                "jwks_fetches",
                "Successful fetches of the issuer's keys.",
                s.jwks_fetches_ok,
            )?;
            counter(
                &mut encoder,
                "jwks_fetch_failures",
                "Failed fetches of the issuer's keys.",
                s.jwks_fetches_failed,
            )?;
            counter(
                &mut encoder,
                "jwt_signature_checks",
                "Bearer tokens whose signature was checked (cache misses).",
                s.signature_checks,
            )?;
            gauge(
                &mut encoder,
                "jwt_cache_entries",
                "Verified tokens cached.",
                s.cache_entries as i64,
            )?;
        }
        if let Some(sessions) = &self.sessions {
            use std::sync::atomic::Ordering::Relaxed;
            let c = &sessions.counters;
            counter(
                &mut encoder,
                "sessions_created",
                "Browser sessions created (sign-ins).",
                c.created.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "sessions_revoked",
                "Browser sessions ended by logout, deprovisioning or the IdP.",
                c.revoked.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "sessions_expired",
                "Browser sessions ended by their idle or absolute lifetime.",
                c.expired.load(Relaxed),
            )?;
        }
        if let Some(audit) = &self.audit {
            let s = audit.stats();
            counter(&mut encoder, "audit_records", "Audit records written.", s.written)?;
            counter(
                &mut encoder,
                "audit_write_errors",
                "Failed writes to the audit trail (retried).",
                s.write_errors,
            )?;
            counter(&mut encoder, "audit_dropped", "Audit records dropped.", s.dropped)?;
            counter(&mut encoder, "audit_rotations", "Audit file rotations.", s.rotations)?;
        }
        if let Some((alerter, feed)) = &self.alerts {
            let s = alerter.stats();
            counter(&mut encoder, "alerts_raised", "High-risk alerts raised.", s.raised)?;
            counter(
                &mut encoder,
                "alerts_delivered",
                "Alerts delivered to the webhook.",
                s.delivered,
            )?;
            counter(
                &mut encoder,
                "alerts_undelivered",
                "Alerts dropped from a full queue or given up on after retries.",
                s.dropped + s.abandoned,
            )?;
            let feeds = feed.snapshot();
            let now = std::time::SystemTime::now();
            let silent = feeds.iter().map(|f| (f.client.clone(), i64::from(f.silent)));
            labelled_gauge(
                &mut encoder,
                "scim_client_silent",
                "1 while this SCIM client has had no successful request for longer than alerts.scim_silence.",
                silent,
            )?;
            let since = feeds.iter().filter_map(|f| {
                let at = f.last_success?;
                Some((
                    f.client.clone(),
                    now.duration_since(at).map_or(0, |d| d.as_secs() as i64),
                ))
            });
            labelled_gauge(
                &mut encoder,
                "scim_client_seconds_since_success",
                "Seconds since this SCIM client's last successful request (absent until its first).",
                since,
            )?;
        }
        if let Some(cert) = &self.cert {
            let (ok, failed) = cert.stats();
            counter(&mut encoder, "tls_certificate_reloads", "TLS certificate reloads.", ok)?;
            counter(
                &mut encoder,
                "tls_certificate_reload_failures",
                "TLS certificate reloads refused (the old one stays).",
                failed,
            )?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One gauge per SCIM client, labelled `client`.
fn labelled_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (client, value) in values {
        let labels = [("client", client)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The registry: request-path metrics plus the scrape-time sources, all
/// prefixed `portcullis_`.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(metrics: &Metrics, sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        registry.register(
            "requests",
            "Proxied requests by route, decision and status.",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route.",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending to the upstream to its response headers, by route.",
            metrics.upstream_seconds.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by route and kind (connect, timeout).",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "upstream_retries",
            "Requests sent again on a new upstream connection after a pooled one closed under them, by route.",
            metrics.upstream_retries.clone(),
        );
        registry.register(
            "scim_requests",
            "SCIM requests by client, operation, method and status.",
            metrics.scim_requests.clone(),
        );
        registry.register_collector(Box::new(sources));
        Exporter { registry }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics could not be encoded");
        }
        out
    }
}
