//! Live connections: upgraded tunnels (WebSocket) and long responses of
//! authenticated users, registered so that provisioning can end them.
//!
//! A request is decided once, when it arrives; a WebSocket or a streamed
//! download may then run for hours. So every such connection is recorded
//! with its user, route, method and path, and [`watch()`] follows the
//! directory's change events: when a user is deleted or deactivated, all
//! their live connections are closed; when their groups change, each of
//! their connections is decided again under the current policy and closed
//! if it would no longer be allowed; after a policy reload, every
//! connection is decided again (within half a second). Events arrive once
//! the change is
//! durable, i.e. before the IdP gets its SCIM response, so a connection
//! closes within milliseconds of it.
//!
//! Short responses are not registered: they end on their own, and keeping
//! the registry off the common path keeps it cheap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use portcullis_directory::{Directory, PrincipalKey, PrincipalKeyHash};
use tokio::sync::{broadcast, watch};

use crate::authz::PrincipalIdentity;
use crate::policy_runtime::PolicyRuntime;

/// What a live connection was allowed to do.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    route: Arc<str>,
    method: Box<str>,
    path: Box<str>,
    close: watch::Sender<bool>,
}

/// The registry, shared by every worker.
#[derive(Debug, Default)]
pub struct Live {
    by_user: DashMap<PrincipalKey, Vec<Entry>, PrincipalKeyHash>,
    next: AtomicU64,
    closed: AtomicU64,
}

/// Held by a live connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct LiveGuard {
    live: Arc<Live>,
    user: PrincipalKey,
    id: u64,
    /// Becomes `true` when the connection must close.
    pub closed: watch::Receiver<bool>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut empty = false;
        if let Some(mut entries) = self.live.by_user.get_mut(&self.user) {
            entries.retain(|e| e.id != self.id);
            empty = entries.is_empty();
        }
        if empty {
            self.live.by_user.remove_if(&self.user, |_, entries| entries.is_empty());
        }
    }
}

impl Live {
    /// Records a connection of `user` doing `method path` on `route`.
    pub fn register(self: &Arc<Self>, user: PrincipalKey, route: Arc<str>, method: &str, path: &str) -> LiveGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        self.by_user.entry(user).or_default().push(Entry {
            id,
            route,
            method: method.into(),
            path: path.into(),
            close,
        });
        LiveGuard {
            live: self.clone(),
            user,
            id,
            closed,
        }
    }

    /// How many connections are open now, and how many were closed by
    /// provisioning so far.
    pub fn counts(&self) -> (usize, u64) {
        let open = self.by_user.iter().map(|e| e.value().len()).sum();
        (open, self.closed.load(Ordering::Relaxed))
    }

    /// Decides every connection of `user` again; closes those no longer
    /// allowed (all of them if the user is gone or deactivated).
    fn recheck(&self, user: PrincipalKey, directory: &Directory, policy: &PolicyRuntime) {
        let Some(entries) = self.by_user.get(&user).map(|e| e.value().clone()) else {
            return;
        };
        let principal = directory.principal_by_key(user).filter(|p| p.active);
        let policy = policy.current();
        let roles = principal.as_ref().map(|p| policy.roles_for(&PrincipalIdentity(p)));
        for entry in entries {
            let allowed = roles.as_ref().is_some_and(|roles| {
                let req = portcullis_policy::Request {
                    route: &entry.route,
                    method: &entry.method,
                    path: &entry.path,
                };
                policy.decide_with_roles(roles, &req).allowed || policy.decide_public(&req).allowed
            });
            if !allowed && !*entry.close.borrow() {
                let _ = entry.close.send(true);
                self.closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(route = %entry.route, "live connection closed: access was withdrawn");
            }
        }
    }

    fn recheck_all(&self, directory: &Directory, policy: &PolicyRuntime) {
        let users: Vec<PrincipalKey> = self.by_user.iter().map(|e| *e.key()).collect();
        for user in users {
            self.recheck(user, directory, policy);
        }
    }
}

/// Follows the directory's changes until `shutdown`, closing connections
/// whose access a change withdrew.
pub async fn watch(
    live: Arc<Live>,
    directory: Directory,
    policy: Arc<PolicyRuntime>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut events = directory.subscribe();
    // A policy reload can withdraw access too; it is noticed within a tick.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = policy.stats().generation;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = policy.stats().generation;
                if now != generation {
                    generation = now;
                    live.recheck_all(&directory, &policy);
                }
            }
            event = events.recv() => match event {
                Ok(change) => {
                    for p in &change.principals {
                        let key = p.after.as_ref().or(p.before.as_ref()).map(|p| p.key);
                        if let Some(key) = key {
                            live.recheck(key, &directory, &policy);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Changes were missed: the directory is current, so
                    // decide every live connection again.
                    tracing::warn!(missed, "live connection watcher fell behind; rechecking all");
                    live.recheck_all(&directory, &policy);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = &mut shutdown => return,
        }
    }
}

/// A response body that ends with an error when the guard says access was
/// withdrawn (the client sees the stream cut, not a clean end).
pub fn revocable(body: super::ProxyBody, guard: LiveGuard) -> super::ProxyBody {
    use http_body_util::BodyExt;
    let mut closed = guard.closed.clone();
    let signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> = Box::pin(async move {
        let _ = closed.wait_for(|c| *c).await;
    });
    Revocable {
        inner: body,
        signal,
        _guard: guard,
    }
    .boxed()
}

struct Revocable {
    inner: super::ProxyBody,
    signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    _guard: LiveGuard,
}

impl hyper::body::Body for Revocable {
    type Data = bytes::Bytes;
    type Error = crate::web::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.signal.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err("access was withdrawn while the response streamed".into())));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
