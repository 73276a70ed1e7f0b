//! The SCIM HTTP service: authentication, routing, request bodies and
//! limits, conditional requests, and every endpoint of RFC 7644 that
//! Portcullis serves (Users, Groups, `.search`, Bulk, discovery).
//!
//! Every failure is answered with the SCIM Error schema. A change is
//! durable and applied to the authorization cache before its response is
//! sent, because every write goes through `Directory`, which acknowledges
//! only durable changes.
//!
//! What this does not do: TLS or listening (the caller serves it on a
//! listener and passes requests whose path starts with the base path).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use portcullis_directory::{Directory, Group, GroupUpdate, Id, MemberKind, MembersEdit, User};
use serde_json::{Map, Value, json};

use crate::auth::{self, ClientCredential};
use crate::error::{ScimError, ScimType};
use crate::filter::{self, AttrPath, Filter};
use crate::patch::{self, MemberEdit};
use crate::render::{self, Urls};
use crate::schema::{CustomSchema, ResourceKind, Schemas};

const SCIM_JSON: &str = "application/scim+json";
const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// Sizes the service accepts; advertised in `/ServiceProviderConfig`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, in bytes (Bulk included).
    pub max_payload_bytes: usize,
    /// Most operations in one Bulk request.
    pub max_bulk_operations: usize,
    /// Most operations in one PATCH request.
    pub max_patch_operations: usize,
    /// Most resources in one list response (`count` is capped to it).
    pub max_results: usize,
    /// Page size when the client gives no `count`.
    pub default_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 8 * 1024 * 1024,
            max_bulk_operations: 1_000,
            max_patch_operations: 10_000,
            max_results: 1_000,
            default_count: 100,
        }
    }
}

/// What the SCIM service needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The path prefix, e.g. `/scim/v2`.
    pub base_path: String,
    /// The public URL of that prefix, e.g. `https://access.example.com/scim/v2`.
    pub base_url: String,
    pub clients: Vec<ClientCredential>,
    pub custom_schemas: Vec<CustomSchema>,
    pub limits: Limits,
}

/// The SCIM service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scim {
    inner: Arc<Inner>,
}

/// Set on every response to an authenticated request: the name of the SCIM
/// client that made it (for metrics and logs outside this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimCaller(pub Id);

#[derive(Debug)]
struct Inner {
    directory: Directory,
    settings: Settings,
    urls: Urls,
    schemas: Schemas,
    limiters: HashMap<Id, RateLimiter>,
    /// A client's users sorted by id, kept while the directory does not
    /// change, so that paging through a large list costs one sort, not one
    /// per page.
    sorted_users: parking_lot::Mutex<Option<SortedCache<User>>>,
    sorted_groups: parking_lot::Mutex<Option<SortedCache<Group>>>,
}

#[derive(Debug)]
struct SortedCache<T> {
    generation: u64,
    owner: Id,
    items: Arc<Vec<Arc<T>>>,
}

/// A token bucket per client: `rate` requests per second with a burst of
/// the same size.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimiter {
            rate,
            state: parking_lot::Mutex::new((rate, Instant::now())),
        }
    }

    /// `Ok` to proceed, or how long to wait.
    fn take(&self) -> Result<(), Duration> {
        let mut st = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
        st.0 = (st.0 + refill).min(self.rate);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - st.0) / self.rate))
        }
    }
}

/// A parsed request: what a handler needs beyond the client.
struct Call<'a> {
    client: &'a ClientCredential,
    method: Method,
    segments: Vec<String>,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Option<Value>,
}

type Resp = Response<Full<Bytes>>;

impl Scim {
    pub fn new(directory: Directory, settings: Settings) -> Result<Self, String> {
        let schemas = Schemas::new(&settings.custom_schemas).map_err(|e| e.to_string())?;
        let limiters = settings
            .clients
            .iter()
            .filter_map(|c| c.rate_limit.map(|r| (c.name.clone(), RateLimiter::new(r))))
            .collect();
        let urls = Urls {
            base: settings.base_url.trim_end_matches('/').to_owned(),
        };
        Ok(Scim {
            inner: Arc::new(Inner {
                directory,
                settings,
                urls,
                schemas,
                limiters,
                sorted_users: parking_lot::Mutex::new(None),
                sorted_groups: parking_lot::Mutex::new(None),
            }),
        })
    }

    /// The path prefix this service answers under.
    pub fn base_path(&self) -> &str {
        &self.inner.settings.base_path
    }

    /// Whether a request path belongs to this service.
    pub fn owns(&self, path: &str) -> bool {
        let base = self.base_path();
        path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
    }

    /// The SCIM operation a request asks for, as a fixed word for metrics
    /// and logs: `create`, `get`, `list`, `search`, `replace`, `patch`,
    /// `delete`, `bulk`, `discovery`, or `other` for anything no endpoint
    /// answers. Classifies by method and path only, as [`Self::handle`]
    /// routes (what the request then does, or whether it succeeds, is the
    /// status's business).
    pub fn operation(&self, method: &Method, path: &str) -> &'static str {
        operation(self.base_path(), method, path)
    }

    /// Answers one request. Never fails: errors become SCIM error responses.
    pub async fn handle<B>(&self, req: http::Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut caller = None;
        let result = self.handle_inner(req, &mut caller).await;
        let mut response = match result {
            Ok(r) => r,
            Err((client, e)) => {
                if e.status >= 500 {
                    tracing::error!(client = client.as_deref(), %method, %path, error = %e, "scim request failed");
                } else {
                    tracing::debug!(client = client.as_deref(), %method, %path, error = %e, "scim request refused");
                }
                error_response(&e)
            }
        };
        tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "scim");
        if let Some(name) = caller {
            response.extensions_mut().insert(ScimCaller(name));
        }
        response
    }

    async fn handle_inner<B>(
        &self,
        req: http::Request<B>,
        caller: &mut Option<Id>,
    ) -> Result<Resp, (Option<String>, ScimError)>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &self.inner;
        let (parts, body) = req.into_parts();
        let client = auth::authenticate(&inner.settings.clients, parts.headers.get(header::AUTHORIZATION))
            .map_err(|e| (None, e))?;
        *caller = Some(client.name.clone());
        let who = || Some(client.name.to_string());
        if let Some(limiter) = inner.limiters.get(&client.name)
            && let Err(wait) = limiter.take()
        {
            let mut resp = error_response(&ScimError::new(429, None, "too many requests; retry later"));
            let secs = wait.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(resp);
        }
        let path = parts.uri.path();
        let rest = path.strip_prefix(inner.settings.base_path.as_str()).unwrap_or(path);
        let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let query: HashMap<String, String> = parts.uri.query().map(parse_query).unwrap_or_default();
        let body = read_body(body, &parts.headers, inner.settings.limits.max_payload_bytes)
            .await
            .map_err(|e| (who(), e))?;
        let call = Call {
            client,
            method: parts.method,
            segments,
            query,
            headers: parts.headers,
            body,
        };
        self.route(&call).await.map_err(|e| (who(), e))
    }

    async fn route(&self, call: &Call<'_>) -> Result<Resp, ScimError> {
        let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
        let m = &call.method;
        match seg.as_slice() {
            ["ServiceProviderConfig"] if m == Method::GET => Ok(self.service_provider_config()),
            ["ResourceTypes"] if m == Method::GET => Ok(self.resource_types(None)),
            ["ResourceTypes", name] if m == Method::GET => Ok(self.resource_types(Some(name))),
            ["Schemas"] if m == Method::GET => Ok(self.schemas(None)),
            ["Schemas", id] if m == Method::GET => Ok(self.schemas(Some(id))),
            [kind @ ("Users" | "Groups")] => {
                let kind = resource_kind(kind);
                match *m {
                    Method::GET => self.list(call, kind, &call.query_params()?),
                    Method::POST => self.create(call, kind).await,
                    _ => Err(method_not_allowed()),
                }
            }
            [kind @ ("Users" | "Groups"), ".search"] if m == Method::POST => {
                let kind = resource_kind(kind);
                self.list(call, kind, &call.search_params()?)
            }
            [".search"] if m == Method::POST => self.search_all(call, &call.search_params()?),
            [kind @ ("Users" | "Groups"), id] => {
                let kind = resource_kind(kind);
                match *m {
                    Method::GET => self.get(call, kind, id),
                    Method::PUT => self.replace(call, kind, id).await,
                    Method::PATCH => self.patch(call, kind, id).await,
                    Method::DELETE => self.delete(call, kind, id).await,
                    _ => Err(method_not_allowed()),
                }
            }
            ["Bulk"] if m == Method::POST => self.bulk(call).await,
            ["Me"] => Err(ScimError::new(
                501,
                None,
                "/Me is not supported: SCIM clients are identity providers, not users",
            )),
            ["ServiceProviderConfig" | "ResourceTypes" | "Schemas" | "Bulk", ..] => Err(method_not_allowed()),
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                call.segments.join("/")
            ))),
        }
    }

    // ---- discovery ---------------------------------------------------------

    fn service_provider_config(&self) -> Resp {
        let l = &self.inner.settings.limits;
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://github.com/portcullis/portcullis/blob/main/docs/scim.md",
            "patch": {"supported": true},
            "bulk": {"supported": true, "maxOperations": l.max_bulk_operations, "maxPayloadSize": l.max_payload_bytes},
            "filter": {"supported": true, "maxResults": l.max_results},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A static bearer token per SCIM client; Portcullis stores only its SHA-256.",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{}/ServiceProviderConfig", self.inner.urls.base),
            },
        });
        json_response(StatusCode::OK, &body)
    }

    fn resource_types(&self, name: Option<&str>) -> Resp {
        let all = self.inner.schemas.resource_types_json(&self.inner.urls.base);
        match name {
            None => json_response(StatusCode::OK, &list_response(all.len(), 1, all)),
            Some(name) => match all
                .into_iter()
                .find(|rt| rt["name"].as_str() == Some(name) || rt["id"].as_str() == Some(name))
            {
                Some(rt) => json_response(StatusCode::OK, &rt),
                None => error_response(&ScimError::not_found(format!("no resource type {name}"))),
            },
        }
    }

    fn schemas(&self, id: Option<&str>) -> Resp {
        let base = &self.inner.urls.base;
        match id {
            None => {
                let all = self.inner.schemas.schemas_json(base);
                json_response(StatusCode::OK, &list_response(all.len(), 1, all))
            }
            Some(id) => match self.inner.schemas.schema_json(id, base) {
                Some(s) => json_response(StatusCode::OK, &s),
                None => error_response(&ScimError::not_found(format!("no schema {id}"))),
            },
        }
    }

    // ---- reading -----------------------------------------------------------

    fn render(&self, kind: ResourceKind, id: &str, with_members: bool) -> Option<(Value, portcullis_directory::Meta)> {
        let d = &self.inner.directory;
        match kind {
            ResourceKind::User => d.user(id).map(|u| (render::user_json(d, &u, &self.inner.urls), u.meta)),
            ResourceKind::Group => d
                .group(id)
                .map(|g| (render::group_json(d, &g, &self.inner.urls, with_members), g.meta)),
        }
    }

    fn owned(&self, call: &Call<'_>, kind: ResourceKind, id: &str) -> bool {
        let d = &self.inner.directory;
        let owner = match kind {
            ResourceKind::User => d.user(id).map(|u| u.owner.clone()),
            ResourceKind::Group => d.group(id).map(|g| g.owner.clone()),
        };
        owner.is_some_and(|o| o == call.client.name)
    }

    fn get(&self, call: &Call<'_>, kind: ResourceKind, id: &str) -> Result<Resp, ScimError> {
        let params = call.query_params()?;
        if !self.owned(call, kind, id) {
            return Err(not_found(kind, id));
        }
        let with_members = params.wants("members");
        let (doc, meta) = self.render(kind, id, with_members).ok_or_else(|| not_found(kind, id))?;
        if let Some(tag) = call.headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
            && tag.split(',').any(|t| {
                matches!(render::parse_etag(t), Some(None)) || render::parse_etag(t) == Some(Some(meta.version))
            })
        {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            set_etag(&mut resp, &meta);
            return Ok(resp);
        }
        let body = params.project_owned(&self.inner.schemas, kind, doc);
        let mut resp = json_response(StatusCode::OK, &body);
        set_etag(&mut resp, &meta);
        Ok(resp)
    }

    fn list(&self, call: &Call<'_>, kind: ResourceKind, params: &Params) -> Result<Resp, ScimError> {
        if let Some(resp) = self.list_text(call, kind, params)? {
            return Ok(resp);
        }
        let (total, page) = self.query(call, kind, params)?;
        Ok(json_response(
            StatusCode::OK,
            &list_response(total, params.start_index.max(1), page),
        ))
    }

    /// The queries identity providers make most, answered from the stored
    /// text (see [`render::write_user`]): a lookup by `userName` or `id`
    /// before every write, and paging through everything, both without
    /// `attributes`, `excludedAttributes` or `sortBy`. `None` for any
    /// other query, which [`Self::query`] answers. Both give the same
    /// resources (the tests compare them).
    fn list_text(&self, call: &Call<'_>, kind: ResourceKind, params: &Params) -> Result<Option<Resp>, ScimError> {
        let schema = self.inner.schemas.resource(kind);
        if params.attributes.is_some()
            || params.excluded.is_some()
            || params.sort_by.is_some()
            || !schema.default_view_is_stored()
        {
            return Ok(None);
        }
        let owner = &call.client.name;
        let limits = self.inner.settings.limits;
        let count = params.count.unwrap_or(limits.default_count).min(limits.max_results);
        let start = params.start_index.max(1);
        let d = &self.inner.directory;
        let urls = &self.inner.urls;
        let mut body = Vec::with_capacity(1024);
        let (total, shown) = match (&params.filter, kind) {
            (Some(f), _) if !answered_by_index(f, kind) => return Ok(None),
            (Some(f), _) => {
                f.validate(schema)?;
                // One resource at most: the index holds the whole answer,
                // so the filter needs no evaluation.
                let ids: Vec<String> = self
                    .candidates(kind, owner, Some(f))
                    .into_iter()
                    .filter(|id| self.owned(call, kind, id))
                    .collect();
                let mut shown = 0;
                for id in ids.iter().skip(start - 1).take(count) {
                    let written = match kind {
                        ResourceKind::User => d.user(id).map(|u| {
                            list_item(&mut body, shown);
                            render::write_user(&mut body, d, &u, urls);
                        }),
                        ResourceKind::Group => d.group(id).map(|g| {
                            list_item(&mut body, shown);
                            render::write_group(&mut body, d, &g, urls, true);
                        }),
                    };
                    shown += usize::from(written.is_some());
                }
                (ids.len(), shown)
            }
            (None, ResourceKind::User) => {
                let all = self.sorted(owner, &self.inner.sorted_users, |d, o| d.users_of(o), |u| &u.id);
                let page: Vec<_> = all.iter().skip(start - 1).take(count).collect();
                for (i, u) in page.iter().enumerate() {
                    list_item(&mut body, i);
                    render::write_user(&mut body, d, u, urls);
                }
                (all.len(), page.len())
            }
            (None, ResourceKind::Group) => {
                let all = self.sorted(owner, &self.inner.sorted_groups, |d, o| d.groups_of(o), |g| &g.id);
                let page: Vec<_> = all.iter().skip(start - 1).take(count).collect();
                for (i, g) in page.iter().enumerate() {
                    list_item(&mut body, i);
                    render::write_group(&mut body, d, g, urls, true);
                }
                (all.len(), page.len())
            }
        };
        let mut text = Vec::with_capacity(body.len() + 160);
        text.extend_from_slice(b"{\"schemas\":[\"");
        text.extend_from_slice(LIST_RESPONSE.as_bytes());
        text.extend_from_slice(
            format!("\"],\"totalResults\":{total},\"startIndex\":{start},\"itemsPerPage\":{shown},\"Resources\":[")
                .as_bytes(),
        );
        text.extend_from_slice(&body);
        text.extend_from_slice(b"]}");
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        Ok(Some(resp))
    }

    /// The total number of matches and the requested page of them, projected.
    fn query(&self, call: &Call<'_>, kind: ResourceKind, params: &Params) -> Result<(usize, Vec<Value>), ScimError> {
        let schema = self.inner.schemas.resource(kind);
        if let Some(f) = &params.filter {
            // gt on a boolean, eq on a complex attribute, a malformed dateTime:
            // 400 invalidFilter rather than silently matching nothing.
            f.validate(schema)?;
        }
        let with_members = params.wants("members") || params.filter.as_ref().is_some_and(|f| mentions(f, "members"));
        let owner = &call.client.name;
        let limits = self.inner.settings.limits;
        let count = match params.count {
            Some(usize::MAX) => usize::MAX,
            c => c.unwrap_or(limits.default_count).min(limits.max_results),
        };
        let start = params.start_index.max(1);

        // Without filter or sort, page straight over the id-sorted list.
        if params.filter.is_none() && params.sort_by.is_none() {
            let (total, page) = match kind {
                ResourceKind::User => {
                    let all = self.sorted(owner, &self.inner.sorted_users, |d, o| d.users_of(o), |u| &u.id);
                    let page: Vec<Value> = all
                        .iter()
                        .skip(start - 1)
                        .take(count)
                        .map(|u| render::user_json(&self.inner.directory, u, &self.inner.urls))
                        .collect();
                    (all.len(), page)
                }
                ResourceKind::Group => {
                    let all = self.sorted(owner, &self.inner.sorted_groups, |d, o| d.groups_of(o), |g| &g.id);
                    let page: Vec<Value> = all
                        .iter()
                        .skip(start - 1)
                        .take(count)
                        .map(|g| render::group_json(&self.inner.directory, g, &self.inner.urls, with_members))
                        .collect();
                    (all.len(), page)
                }
            };
            let page = page
                .into_iter()
                .map(|r| params.project_owned(&self.inner.schemas, kind, r))
                .collect();
            return Ok((total, page));
        }

        let mut matched: Vec<Value> = self
            .candidates(kind, owner, params.filter.as_ref())
            .into_iter()
            // Candidates are already the client's own; checking again keeps
            // a future index path from ever leaking another client's data.
            .filter(|id| self.owned(call, kind, id))
            .filter_map(|id| self.render(kind, &id, with_members).map(|(v, _)| v))
            .filter(|v| params.filter.as_ref().is_none_or(|f| f.matches(v, schema)))
            .collect();
        match &params.sort_by {
            Some(path) => {
                let mut keyed: Vec<(Option<filter::SortValue>, Value)> = matched
                    .into_iter()
                    .map(|v| (filter::sort_key(&v, path, schema), v))
                    .collect();
                // Resources without the attribute sort last either way (RFC 7644 3.4.2.3).
                keyed.sort_by(|(a, _), (b, _)| match (a, b) {
                    (Some(a), Some(b)) => {
                        let o = a.cmp(b);
                        if params.descending { o.reverse() } else { o }
                    }
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                });
                matched = keyed.into_iter().map(|(_, v)| v).collect();
            }
            None => matched.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str())),
        }
        let total = matched.len();
        let page: Vec<Value> = matched
            .into_iter()
            .skip(start - 1)
            .take(count)
            .map(|r| params.project_owned(&self.inner.schemas, kind, r))
            .collect();
        Ok((total, page))
    }

    /// The ids worth testing against a filter: from an index when the
    /// filter has an indexed equality conjunct, else every resource of the
    /// client.
    fn candidates(&self, kind: ResourceKind, owner: &Id, filter: Option<&Filter>) -> Vec<String> {
        let d = &self.inner.directory;
        let mine_u = |u: &Arc<User>| u.owner == *owner;
        let mine_g = |g: &Arc<Group>| g.owner == *owner;
        if let Some(f) = filter {
            for (path, value) in f.candidate_equalities() {
                let name = path.name.to_ascii_lowercase();
                let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
                let core = path.urn.as_deref().is_none_or(|u| {
                    u.to_ascii_lowercase()
                        .starts_with("urn:ietf:params:scim:schemas:core:2.0:")
                });
                if !core {
                    continue;
                }
                let ids: Option<Vec<String>> = match (kind, name.as_str(), sub.as_deref()) {
                    (ResourceKind::User, "id", None) => Some(
                        d.user(value)
                            .filter(mine_u)
                            .map(|u| u.id.to_string())
                            .into_iter()
                            .collect(),
                    ),
                    (ResourceKind::Group, "id", None) => Some(
                        d.group(value)
                            .filter(mine_g)
                            .map(|g| g.id.to_string())
                            .into_iter()
                            .collect(),
                    ),
                    (ResourceKind::User, "username", None) => Some(
                        d.user_by_name(value)
                            .filter(mine_u)
                            .map(|u| u.id.to_string())
                            .into_iter()
                            .collect(),
                    ),
                    (ResourceKind::User, "externalid", None) => Some(
                        d.users_by_external_id(value)
                            .iter()
                            .filter(|u| mine_u(u))
                            .map(|u| u.id.to_string())
                            .collect(),
                    ),
                    (ResourceKind::User, "emails", None | Some("value")) => Some(
                        d.users_by_email(value)
                            .iter()
                            .filter(|u| mine_u(u))
                            .map(|u| u.id.to_string())
                            .collect(),
                    ),
                    (ResourceKind::Group, "displayname", None) => Some(
                        d.group_by_name(owner, value)
                            .map(|g| g.id.to_string())
                            .into_iter()
                            .collect(),
                    ),
                    (ResourceKind::Group, "externalid", None) => Some(
                        d.groups_by_external_id(value)
                            .iter()
                            .filter(|g| mine_g(g))
                            .map(|g| g.id.to_string())
                            .collect(),
                    ),
                    (ResourceKind::Group, "members", None | Some("value")) => d.user(value).map(|u| {
                        d.direct_groups_of(&u.id)
                            .iter()
                            .filter(|g| mine_g(g))
                            .map(|g| g.id.to_string())
                            .collect()
                    }),
                    _ => None,
                };
                if let Some(ids) = ids {
                    return ids;
                }
            }
        }
        match kind {
            ResourceKind::User => d.users_of(owner).iter().map(|u| u.id.to_string()).collect(),
            ResourceKind::Group => d.groups_of(owner).iter().map(|g| g.id.to_string()).collect(),
        }
    }

    fn sorted<T>(
        &self,
        owner: &Id,
        cache: &parking_lot::Mutex<Option<SortedCache<T>>>,
        all: impl Fn(&Directory, &str) -> Vec<Arc<T>>,
        id: impl Fn(&T) -> &Id,
    ) -> Arc<Vec<Arc<T>>> {
        let generation = self.inner.directory.generation();
        let mut cache = cache.lock();
        if let Some(c) = cache.as_ref()
            && c.generation == generation
            && c.owner == *owner
        {
            return c.items.clone();
        }
        let mut items = all(&self.inner.directory, owner);
        items.sort_by(|a, b| id(a).cmp(id(b)));
        let items = Arc::new(items);
        *cache = Some(SortedCache {
            generation,
            owner: owner.clone(),
            items: items.clone(),
        });
        items
    }

    fn search_all(&self, call: &Call<'_>, params: &Params) -> Result<Resp, ScimError> {
        // Users then groups; the filter applies to each with its own schema.
        let everything = Params {
            count: Some(usize::MAX),
            start_index: 1,
            ..params.clone()
        };
        let (_, mut all) = self.query(call, ResourceKind::User, &everything)?;
        all.extend(self.query(call, ResourceKind::Group, &everything)?.1);
        let limits = self.inner.settings.limits;
        let count = params.count.unwrap_or(limits.default_count).min(limits.max_results);
        let start = params.start_index.max(1);
        let total = all.len();
        let page = all.into_iter().skip(start - 1).take(count).collect();
        Ok(json_response(StatusCode::OK, &list_response(total, start, page)))
    }

    // ---- writing -----------------------------------------------------------

    fn body_object(call: &Call<'_>) -> Result<Map<String, Value>, ScimError> {
        match &call.body {
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                "the request body must be a JSON object",
            )),
            None => Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                "a JSON request body is required",
            )),
        }
    }

    fn expected_version(call: &Call<'_>) -> Result<Option<u64>, ScimError> {
        match call.headers.get(header::IF_MATCH) {
            None => Ok(None),
            Some(v) => {
                let text = v
                    .to_str()
                    .map_err(|_| ScimError::new(412, None, "unreadable If-Match header"))?;
                match render::parse_etag(text) {
                    Some(version) => Ok(version),
                    None => Err(ScimError::new(
                        412,
                        None,
                        format!("If-Match {text:?} names no version of this resource"),
                    )),
                }
            }
        }
    }

    async fn create(&self, call: &Call<'_>, kind: ResourceKind) -> Result<Resp, ScimError> {
        let body = Self::body_object(call)?;
        let d = &self.inner.directory;
        let actor = &call.client.name;
        let (status, doc, meta) = match kind {
            ResourceKind::User => {
                let doc = self.normalize(kind, body)?;
                let user = d.create_user(actor, doc).await?;
                tracing::info!(client = %actor, user = %user.id, "scim user created");
                (
                    StatusCode::CREATED,
                    render::user_json(d, &user, &self.inner.urls),
                    user.meta,
                )
            }
            ResourceKind::Group => {
                let members = member_ids(body.get("members"))?;
                let doc = self.normalize(kind, body)?;
                let w = d.create_group(actor, doc, members).await?;
                log_unknown(actor, &w.group.id, &w.unknown_members);
                tracing::info!(client = %actor, group = %w.group.id, "scim group created");
                (
                    StatusCode::CREATED,
                    render::group_json(d, &w.group, &self.inner.urls, true),
                    w.group.meta,
                )
            }
        };
        let params = call.query_params()?;
        let mut resp = json_response(status, &params.project(&self.inner.schemas, kind, &doc));
        if let Some(loc) = doc["meta"]["location"]
            .as_str()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        set_etag(&mut resp, &meta);
        Ok(resp)
    }

    /// Validates and canonicalizes a written document; drops `password`
    /// (never stored: Portcullis authenticates people through their IdP).
    fn normalize(&self, kind: ResourceKind, body: Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
        let (mut doc, ignored) = crate::schema::normalize_write(kind, &self.inner.schemas, body)?;
        doc.remove("password");
        if kind == ResourceKind::Group {
            doc.remove("members");
        }
        if !ignored.is_empty() {
            tracing::debug!(attributes = ?ignored, "scim: ignored attributes not in any schema");
        }
        Ok(doc)
    }

    async fn replace(&self, call: &Call<'_>, kind: ResourceKind, id: &str) -> Result<Resp, ScimError> {
        let body = Self::body_object(call)?;
        if let Some(given) = body.get("id").and_then(Value::as_str)
            && given != id
        {
            return Err(ScimError::bad_request(ScimType::Mutability, "id cannot be changed"));
        }
        let expected = Self::expected_version(call)?;
        let d = &self.inner.directory;
        let actor = &*call.client.name;
        match kind {
            ResourceKind::User => {
                let doc = self.normalize(kind, body)?;
                let user = d.update_user(actor, id, expected, |_| Ok::<_, ScimError>(doc)).await?;
                self.written(call, kind, &user.id, user.meta, StatusCode::OK)
            }
            ResourceKind::Group => {
                let members = member_ids(body.get("members"))?;
                let doc = self.normalize(kind, body)?;
                let w = d
                    .update_group(actor, id, expected, |_, _| {
                        Ok::<_, ScimError>(GroupUpdate {
                            doc: Some(doc),
                            members: vec![MembersEdit::Replace(members)],
                        })
                    })
                    .await?;
                log_unknown(&call.client.name, &w.group.id, &w.unknown_members);
                self.written(call, kind, &w.group.id, w.group.meta, StatusCode::OK)
            }
        }
    }

    async fn patch(&self, call: &Call<'_>, kind: ResourceKind, id: &str) -> Result<Resp, ScimError> {
        let body = call
            .body
            .as_ref()
            .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "a PatchOp request body is required"))?;
        let ops = patch::parse_patch(body)?;
        let limit = self.inner.settings.limits.max_patch_operations;
        if ops.len() > limit {
            return Err(ScimError::new(
                413,
                Some(ScimType::TooMany),
                format!("at most {limit} operations per PATCH"),
            ));
        }
        let expected = Self::expected_version(call)?;
        let d = &self.inner.directory;
        let actor = &*call.client.name;
        let schema = self.inner.schemas.resource(kind);
        match kind {
            ResourceKind::User => {
                let user = d
                    .update_user(actor, id, expected, |user| {
                        let mut doc = user.doc();
                        patch::apply_patch(&mut doc, &ops, schema, &user.id)?;
                        doc.remove("password");
                        Ok::<_, ScimError>(doc)
                    })
                    .await?;
                self.written(call, kind, &user.id, user.meta, StatusCode::OK)
            }
            ResourceKind::Group => {
                let w = d
                    .update_group(actor, id, expected, |group, members| {
                        let mut doc = group.doc();
                        let outcome = patch::apply_patch(&mut doc, &ops, schema, &group.id)?;
                        let edits = outcome
                            .members
                            .into_iter()
                            .map(|e| self.member_edit(e, members, schema))
                            .collect();
                        Ok::<_, ScimError>(GroupUpdate {
                            doc: Some(doc),
                            members: edits,
                        })
                    })
                    .await?;
                log_unknown(&call.client.name, &w.group.id, &w.unknown_members);
                if call.query.contains_key("attributes") || call.query.contains_key("excludedAttributes") {
                    self.written(call, kind, &w.group.id, w.group.meta, StatusCode::OK)
                } else {
                    // Entra ID prefers 204 for group PATCH: a body with every
                    // member of a large group helps nobody.
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    set_etag(&mut resp, &w.group.meta);
                    Ok(resp)
                }
            }
        }
    }

    /// Turns the PATCH engine's membership edit into a directory edit,
    /// evaluating member filters against the current members.
    fn member_edit(
        &self,
        edit: MemberEdit,
        members: &portcullis_directory::MemberView<'_>,
        schema: &crate::schema::ResourceSchema,
    ) -> MembersEdit {
        match edit {
            MemberEdit::Add(ids) => MembersEdit::Add(ids),
            MemberEdit::Remove(ids) => MembersEdit::Remove(ids),
            MemberEdit::Replace(ids) => MembersEdit::Replace(ids),
            MemberEdit::RemoveAll => MembersEdit::Replace(Vec::new()),
            MemberEdit::RemoveWhere(filter) => {
                let d = &self.inner.directory;
                let Some(attr) = schema.top_attribute("members") else {
                    return MembersEdit::Remove(Vec::new());
                };
                let ids = members
                    .iter()
                    .filter(|m| {
                        let (kind, display) = match m.kind {
                            MemberKind::User => (
                                "User",
                                d.user(&m.id)
                                    .map(|u| u.display_name().unwrap_or(u.user_name()).to_owned()),
                            ),
                            MemberKind::Group => ("Group", d.group(&m.id).map(|g| g.display_name().to_owned())),
                        };
                        let element = json!({"value": &*m.id, "type": kind, "display": display});
                        filter.matches_element(&element, attr)
                    })
                    .map(|m| m.id.to_string())
                    .collect();
                MembersEdit::Remove(ids)
            }
        }
    }

    fn written(
        &self,
        call: &Call<'_>,
        kind: ResourceKind,
        id: &str,
        meta: portcullis_directory::Meta,
        status: StatusCode,
    ) -> Result<Resp, ScimError> {
        let params = call.query_params()?;
        let with_members = params.wants("members");
        let (doc, _) = self.render(kind, id, with_members).ok_or_else(|| not_found(kind, id))?;
        let mut resp = json_response(status, &params.project(&self.inner.schemas, kind, &doc));
        set_etag(&mut resp, &meta);
        Ok(resp)
    }

    async fn delete(&self, call: &Call<'_>, kind: ResourceKind, id: &str) -> Result<Resp, ScimError> {
        let expected = Self::expected_version(call)?;
        let d = &self.inner.directory;
        let actor = &*call.client.name;
        match kind {
            ResourceKind::User => d.delete_user(actor, id, expected).await?,
            ResourceKind::Group => d.delete_group(actor, id, expected).await?,
        }
        tracing::info!(client = actor, resource = id, "scim resource deleted");
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }

    // ---- bulk --------------------------------------------------------------

    async fn bulk(&self, call: &Call<'_>) -> Result<Resp, ScimError> {
        let body = Self::body_object(call)?;
        let ops = body
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
            .and_then(|(_, v)| v.as_array())
            .ok_or_else(|| {
                ScimError::bad_request(ScimType::InvalidSyntax, "a BulkRequest needs an Operations array")
            })?;
        let limit = self.inner.settings.limits.max_bulk_operations;
        if ops.len() > limit {
            return Err(ScimError::new(
                413,
                Some(ScimType::TooMany),
                format!("at most {limit} operations per Bulk request"),
            ));
        }
        let fail_on_errors = body.get("failOnErrors").and_then(Value::as_u64).map(|n| n as usize);
        let mut bulk_ids: HashMap<String, String> = HashMap::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut errors = 0usize;
        for op in ops {
            let outcome = self.bulk_op(call, op, &mut bulk_ids).await;
            let bulk_id = op.get("bulkId").and_then(Value::as_str);
            let method = op
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_uppercase();
            let mut entry = json!({"method": method});
            if let Some(b) = bulk_id {
                entry["bulkId"] = json!(b);
            }
            match outcome {
                Ok((status, location, version)) => {
                    entry["status"] = json!(status.as_u16().to_string());
                    if let Some(l) = location {
                        entry["location"] = json!(l);
                    }
                    if let Some(v) = version {
                        entry["version"] = json!(v);
                    }
                }
                Err(e) => {
                    errors += 1;
                    entry["status"] = json!(e.status.to_string());
                    entry["response"] = e.to_json();
                }
            }
            results.push(entry);
            if fail_on_errors.is_some_and(|n| errors >= n) {
                break;
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &Value::Object(Map::from_iter([
                ("schemas".to_string(), json!([BULK_RESPONSE])),
                ("Operations".to_string(), Value::Array(results)),
            ])),
        ))
    }

    async fn bulk_op(
        &self,
        call: &Call<'_>,
        op: &Value,
        bulk_ids: &mut HashMap<String, String>,
    ) -> Result<(StatusCode, Option<String>, Option<String>), ScimError> {
        let method = op
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "bulk operation without a method"))?
            .to_ascii_uppercase();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "bulk operation without a path"))?;
        let path = resolve_bulk_ids(path, bulk_ids)?;
        let mut data = op.get("data").cloned();
        if let Some(d) = data.as_mut() {
            substitute_bulk_ids(d, bulk_ids)?;
        }
        let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let method = match method.as_str() {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            other => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    format!("bulk method {other} is not supported"),
                ));
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(v) = op
            .get("version")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::IF_MATCH, v);
        }
        let sub = Call {
            client: call.client,
            method: method.clone(),
            segments,
            query: HashMap::new(),
            headers,
            body: data,
        };
        let seg: Vec<&str> = sub.segments.iter().map(String::as_str).collect();
        let resp = match (&method, seg.as_slice()) {
            (&Method::POST, [kind @ ("Users" | "Groups")]) => self.create(&sub, resource_kind(kind)).await?,
            (&Method::PUT, [kind @ ("Users" | "Groups"), id]) => self.replace(&sub, resource_kind(kind), id).await?,
            (&Method::PATCH, [kind @ ("Users" | "Groups"), id]) => self.patch(&sub, resource_kind(kind), id).await?,
            (&Method::DELETE, [kind @ ("Users" | "Groups"), id]) => self.delete(&sub, resource_kind(kind), id).await?,
            _ => return Err(ScimError::not_found(format!("no bulk target {path}"))),
        };
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                (method != Method::DELETE).then(|| format!("{}/{}", self.inner.urls.base, path.trim_start_matches('/')))
            });
        if method == Method::POST
            && let (Some(b), Some(loc)) = (op.get("bulkId").and_then(Value::as_str), &location)
            && let Some(id) = loc.rsplit('/').next()
        {
            bulk_ids.insert(b.to_owned(), id.to_owned());
        }
        let version = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((resp.status(), location, version))
    }
}

// ---- query parameters -------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Params {
    filter: Option<Filter>,
    sort_by: Option<AttrPath>,
    descending: bool,
    start_index: usize,
    count: Option<usize>,
    attributes: Option<Vec<AttrPath>>,
    excluded: Option<Vec<AttrPath>>,
}

impl Params {
    /// See [`filter::project_owned`].
    fn project_owned(&self, schemas: &Schemas, kind: ResourceKind, doc: Value) -> Value {
        filter::project_owned(
            doc,
            schemas.resource(kind),
            self.attributes.as_deref(),
            self.excluded.as_deref(),
        )
    }

    fn project(&self, schemas: &Schemas, kind: ResourceKind, doc: &Value) -> Value {
        filter::project(
            doc,
            schemas.resource(kind),
            self.attributes.as_deref(),
            self.excluded.as_deref(),
        )
    }

    /// Whether the response will show `attr` (used to skip computing a
    /// group's members when they would be projected away).
    fn wants(&self, attr: &str) -> bool {
        let named = |list: &Option<Vec<AttrPath>>| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|p| p.name.eq_ignore_ascii_case(attr)))
        };
        match (&self.attributes, &self.excluded) {
            (Some(_), _) => named(&self.attributes),
            (None, Some(_)) => !named(&self.excluded),
            (None, None) => true,
        }
    }
}

impl Call<'_> {
    fn query_params(&self) -> Result<Params, ScimError> {
        let q = &self.query;
        let get = |name: &str| {
            q.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        params_from(
            get("filter"),
            get("sortBy"),
            get("sortOrder"),
            get("startIndex").map(|s| number(s, "startIndex")).transpose()?,
            get("count").map(|s| number(s, "count")).transpose()?,
            get("attributes"),
            get("excludedAttributes"),
        )
    }

    fn search_params(&self) -> Result<Params, ScimError> {
        let body = match &self.body {
            Some(Value::Object(m)) => m,
            None => return params_from(None, None, None, None, None, None, None),
            Some(_) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    "a SearchRequest must be a JSON object",
                ));
            }
        };
        if let Some(schemas) = body.get("schemas").and_then(Value::as_array)
            && !schemas.iter().any(|s| s.as_str() == Some(SEARCH_REQUEST))
        {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("a search request must declare {SEARCH_REQUEST}"),
            ));
        }
        let get = |name: &str| body.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Array(items)) => Ok(Some(
                    items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                )),
                Some(_) => Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{name} must be a string"),
                )),
            }
        };
        let num = |name: &str| -> Result<Option<i64>, ScimError> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
                    ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer"))
                }),
                Some(Value::String(s)) => number(s, name).map(Some),
                Some(_) => Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{name} must be an integer"),
                )),
            }
        };
        params_from(
            text("filter")?.as_deref(),
            text("sortBy")?.as_deref(),
            text("sortOrder")?.as_deref(),
            num("startIndex")?,
            num("count")?,
            text("attributes")?.as_deref(),
            text("excludedAttributes")?.as_deref(),
        )
    }
}

fn number(s: &str, name: &str) -> Result<i64, ScimError> {
    s.trim()
        .parse()
        .map_err(|_| ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer, not {s:?}")))
}

fn params_from(
    filter: Option<&str>,
    sort_by: Option<&str>,
    sort_order: Option<&str>,
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Option<&str>,
    excluded: Option<&str>,
) -> Result<Params, ScimError> {
    let filter = filter
        .filter(|f| !f.trim().is_empty())
        .map(filter::parse_filter)
        .transpose()?;
    let sort_by = match sort_by.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => {
            let mut paths = filter::parse_attr_list(s)?;
            if paths.len() != 1 {
                return Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    "sortBy takes one attribute",
                ));
            }
            paths.pop()
        }
    };
    let descending = match sort_order.map(str::to_ascii_lowercase).as_deref() {
        None | Some("ascending") => false,
        Some("descending") => true,
        Some(other) => {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("sortOrder {other:?} is neither ascending nor descending"),
            ));
        }
    };
    // RFC 7644 3.4.2.4: startIndex < 1 is 1; a negative count is 0.
    let start_index = usize::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(1);
    let count = count.map(|c| usize::try_from(c.max(0)).unwrap_or(0));
    let list = |s: Option<&str>| {
        s.filter(|s| !s.trim().is_empty())
            .map(filter::parse_attr_list)
            .transpose()
    };
    Ok(Params {
        filter,
        sort_by,
        descending,
        start_index,
        count,
        attributes: list(attributes)?,
        excluded: list(excluded)?,
    })
}

fn mentions(f: &Filter, attr: &str) -> bool {
    match f {
        Filter::Compare { path, .. } | Filter::Present(path) | Filter::ValuePath { path, .. } => {
            path.name.eq_ignore_ascii_case(attr)
        }
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, attr) || mentions(b, attr),
        Filter::Not(a) => mentions(a, attr),
    }
}

// ---- bodies, responses, helpers -------------------------------------------------

async fn read_body<B>(body: B, headers: &HeaderMap, max: usize) -> Result<Option<Value>, ScimError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(payload_too_large(max));
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(payload_too_large(max)),
        Err(e) => {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime != SCIM_JSON && mime != "application/json" {
            return Err(ScimError::new(
                415,
                None,
                format!("send {SCIM_JSON} or application/json, not {mime}"),
            ));
        }
    }
    // serde_json refuses nesting deeper than 128 levels on its own.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

fn payload_too_large(max: usize) -> ScimError {
    ScimError::new(413, None, format!("the request body is larger than {max} bytes"))
}

fn method_not_allowed() -> ScimError {
    ScimError::new(405, None, "method not allowed on this endpoint")
}

fn not_found(kind: ResourceKind, id: &str) -> ScimError {
    let k = match kind {
        ResourceKind::User => "user",
        ResourceKind::Group => "group",
    };
    ScimError::not_found(format!("{k} {id} not found"))
}

fn resource_kind(segment: &str) -> ResourceKind {
    if segment == "Groups" {
        ResourceKind::Group
    } else {
        ResourceKind::User
    }
}

/// The ids in a `members` array (`[{"value": "id", ...}]`).
fn member_ids(members: Option<&Value>) -> Result<Vec<String>, ScimError> {
    match members {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|m| {
                m.get("value")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| ScimError::bad_request(ScimType::InvalidValue, "each member needs a string value"))
            })
            .collect(),
        Some(_) => Err(ScimError::bad_request(
            ScimType::InvalidValue,
            "members must be an array",
        )),
    }
}

fn log_unknown(actor: &str, group: &str, unknown: &[String]) {
    if !unknown.is_empty() {
        tracing::warn!(client = actor, group, unknown = ?unknown, "scim: ignored members that are not resources of this client");
    }
}

fn resolve_bulk_ids(path: &str, bulk_ids: &HashMap<String, String>) -> Result<String, ScimError> {
    let mut out = Vec::new();
    for seg in path.split('/') {
        match seg.strip_prefix("bulkId:") {
            Some(b) => {
                out.push(bulk_ids.get(b).cloned().ok_or_else(|| {
                    ScimError::new(409, Some(ScimType::InvalidValue), format!("unresolved bulkId {b}"))
                })?)
            }
            None => out.push(seg.to_owned()),
        }
    }
    Ok(out.join("/"))
}

/// Replaces every `"bulkId:x"` string in `data` with the id created for
/// bulkId `x` earlier in the request.
fn substitute_bulk_ids(data: &mut Value, bulk_ids: &HashMap<String, String>) -> Result<(), ScimError> {
    match data {
        Value::String(s) => {
            if let Some(b) = s.strip_prefix("bulkId:") {
                *s = bulk_ids.get(b).cloned().ok_or_else(|| {
                    ScimError::new(409, Some(ScimType::InvalidValue), format!("unresolved bulkId {b}"))
                })?;
            }
        }
        Value::Array(items) => {
            for i in items {
                substitute_bulk_ids(i, bulk_ids)?;
            }
        }
        Value::Object(m) => {
            for v in m.values_mut() {
                substitute_bulk_ids(v, bulk_ids)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The comma before every list item but the first.
fn list_item(body: &mut Vec<u8>, index: usize) {
    if index > 0 {
        body.push(b',');
    }
}

/// Whether an index answers `filter` exactly (no evaluation needed): an
/// equality on `id`, or on a user's `userName` (whose index folds case as
/// the filter's case-insensitive comparison does).
fn answered_by_index(filter: &Filter, kind: ResourceKind) -> bool {
    let Filter::Compare {
        path,
        op: filter::CompareOp::Eq,
        value: Value::String(_),
    } = filter
    else {
        return false;
    };
    let core = path.urn.as_deref().is_none_or(|u| {
        u.eq_ignore_ascii_case(crate::schema::USER_URN) || u.eq_ignore_ascii_case(crate::schema::GROUP_URN)
    });
    core && path.sub.is_none()
        && (path.name.eq_ignore_ascii_case("id")
            || (kind == ResourceKind::User && path.name.eq_ignore_ascii_case("userName")))
}

/// A ListResponse. The resources move into it: `json!` would serialize
/// them into a deep copy (a page of 1,000 users is tens of thousands of
/// allocations).
fn list_response(total: usize, start: usize, resources: Vec<Value>) -> Value {
    let mut out = Map::with_capacity(5);
    out.insert("schemas".into(), json!([LIST_RESPONSE]));
    out.insert("totalResults".into(), total.into());
    out.insert("startIndex".into(), start.into());
    out.insert("itemsPerPage".into(), resources.len().into());
    out.insert("Resources".into(), Value::Array(resources));
    Value::Object(out)
}

fn json_response(status: StatusCode, body: &Value) -> Resp {
    // Into a buffer sized for a typical resource, instead of a `String`
    // grown from empty through `Display`.
    let mut text = Vec::with_capacity(1024);
    if let Err(e) = serde_json::to_writer(&mut text, body) {
        // Only a non-string map key can fail, and a `Value` has none.
        tracing::error!(error = %e, "scim: response serialization failed");
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    resp
}

/// The SCIM error document with its status.
pub fn error_response(e: &ScimError) -> Resp {
    json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_json(),
    )
}

fn set_etag(resp: &mut Resp, meta: &portcullis_directory::Meta) {
    if let Ok(v) = HeaderValue::from_str(&render::etag(meta)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or_default();
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex_val(*c)),
                bytes.get(i + 2).and_then(|c| hex_val(*c)),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// See [`Scim::operation`].
fn operation(base: &str, method: &Method, path: &str) -> &'static str {
    let rest = path.strip_prefix(base).unwrap_or(path);
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (seg.as_slice(), method) {
        (["ServiceProviderConfig" | "ResourceTypes" | "Schemas", ..], &Method::GET) => "discovery",
        (["Users" | "Groups"], &Method::GET) => "list",
        (["Users" | "Groups"], &Method::POST) => "create",
        (["Users" | "Groups", ".search"] | [".search"], &Method::POST) => "search",
        (["Users" | "Groups", _], &Method::GET) => "get",
        (["Users" | "Groups", _], &Method::PUT) => "replace",
        (["Users" | "Groups", _], &Method::PATCH) => "patch",
        (["Users" | "Groups", _], &Method::DELETE) => "delete",
        (["Bulk"], &Method::POST) => "bulk",
        _ => "other",
    }
}

#[cfg(test)]
mod operation_tests {
    use super::*;

    #[test]
    fn requests_are_named_by_their_operation() {
        let check = |method: Method, path: &str, expected: &str| {
            assert_eq!(operation("/scim/v2", &method, path), expected, "{method} {path}");
        };
        check(Method::POST, "/scim/v2/Users", "create");
        check(Method::POST, "/scim/v2/Groups", "create");
        check(Method::GET, "/scim/v2/Users", "list");
        check(Method::GET, "/scim/v2/Users/", "list");
        check(Method::GET, "/scim/v2/Users/2819c223", "get");
        check(Method::PUT, "/scim/v2/Groups/e9e30dba", "replace");
        check(Method::PATCH, "/scim/v2/Users/2819c223", "patch");
        check(Method::DELETE, "/scim/v2/Users/2819c223", "delete");
        check(Method::POST, "/scim/v2/Users/.search", "search");
        check(Method::POST, "/scim/v2/.search", "search");
        check(Method::POST, "/scim/v2/Bulk", "bulk");
        check(Method::GET, "/scim/v2/ServiceProviderConfig", "discovery");
        check(
            Method::GET,
            "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            "discovery",
        );
        check(Method::GET, "/scim/v2/ResourceTypes", "discovery");
        check(Method::DELETE, "/scim/v2/Users", "other");
        check(Method::GET, "/scim/v2/Bulk", "other");
        check(Method::GET, "/scim/v2/Me", "other");
        check(Method::GET, "/scim/v2/Users/a/b", "other");
    }
}
