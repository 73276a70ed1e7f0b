//! The live policy: loaded at start, swapped atomically on a change under
//! the policy directory (file watcher) or on SIGHUP.
//!
//! A reload parses and validates every file first and swaps only a policy
//! that compiled; in-flight requests keep the snapshot they started with. A
//! failed reload keeps the old policy, logs every error with its location,
//! and is counted.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use portcullis_policy::{Policy, PolicyError, PolicyHandle, RouteSet, Source, Warning};

use crate::config::Config;

/// How long to wait for a burst of file events (an editor's write, rename
/// and chmod) to settle before reloading once.
const DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct PolicyRuntime {
    handle: PolicyHandle,
    dir: PathBuf,
    routes: RouteSet,
    reloads: AtomicU64,
    failures: AtomicU64,
    /// A digest of the policy files last compiled, so that events that do
    /// not change any file (an editor touching it) do not swap the policy.
    fingerprint: Mutex<u64>,
    /// Called with the old and new policy after each reload that took
    /// effect (high-risk alerts); set once at start.
    on_reload: Hook,
}

#[derive(Default)]
struct Hook(std::sync::OnceLock<ReloadHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Hook(set)"
        } else {
            "Hook(none)"
        })
    }
}

/// What runs after a reload: `(old, new)`.
pub type ReloadHook = Box<dyn Fn(&Arc<Policy>, &Arc<Policy>) + Send + Sync>;

/// Reload counters, for readiness output and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadStats {
    pub generation: u64,
    pub reloads: u64,
    pub failures: u64,
}

/// The route names a configuration declares, for checking policy rules.
pub fn route_set(config: &Config) -> RouteSet {
    RouteSet::new(config.routes.iter().map(|r| r.name.clone()))
}

impl PolicyRuntime {
    /// Loads the policy directory named by the configuration.
    pub fn load(config: &Config) -> Result<(PolicyRuntime, Vec<Warning>), Vec<PolicyError>> {
        let routes = route_set(config);
        let sources = portcullis_policy::read_dir(&config.policy.dir).map_err(|e| vec![e])?;
        let compiled = portcullis_policy::compile(&sources, &routes)?;
        Ok((
            PolicyRuntime {
                handle: PolicyHandle::new(compiled.policy),
                dir: config.policy.dir.clone(),
                routes,
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                fingerprint: Mutex::new(fingerprint(&sources)),
                on_reload: Hook::default(),
            },
            compiled.warnings,
        ))
    }

    /// Sets what runs after each reload that takes effect. Only the first
    /// hook set is kept.
    pub fn on_reload(&self, hook: ReloadHook) {
        let _ = self.on_reload.0.set(hook);
    }

    /// The current policy snapshot.
    pub fn current(&self) -> Arc<Policy> {
        self.handle.load()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            generation: self.handle.generation(),
            reloads: self.reloads.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Re-reads the policy directory and swaps in the new policy if the files
    /// changed and compile; returns whether the files' policy is live.
    pub fn reload(&self, trigger: &str) -> bool {
        let before = self.current();
        let result = portcullis_policy::read_dir(&self.dir)
            .map_err(|e| vec![e])
            .and_then(|sources| {
                let print = fingerprint(&sources);
                if *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) == print {
                    return Ok(None);
                }
                let warnings = self.handle.reload(&sources, &self.routes)?;
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = print;
                Ok(Some(warnings))
            });
        match result {
            Ok(None) => {
                tracing::debug!(trigger, "policy files unchanged");
                true
            }
            Ok(Some(warnings)) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                for w in &warnings {
                    tracing::warn!(warning = %w, "policy warning");
                }
                tracing::info!(trigger, generation = self.handle.generation(), "policy reloaded");
                if let Some(hook) = self.on_reload.0.get() {
                    hook(&before, &self.current());
                }
                true
            }
            Err(errors) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                for e in &errors {
                    tracing::error!(error = %e, "policy error");
                }
                tracing::error!(
                    trigger,
                    errors = errors.len(),
                    generation = self.handle.generation(),
                    "policy reload rejected; the previous policy stays in force"
                );
                false
            }
        }
    }
}

fn fingerprint(sources: &[Source]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for s in sources {
        s.path.hash(&mut h);
        s.text.hash(&mut h);
    }
    h.finish()
}

/// Reloads the policy on file changes under its directory and on SIGHUP,
/// until `shutdown` resolves. If the directory cannot be watched, SIGHUP
/// still works (and a warning says so).
pub async fn watch(runtime: Arc<PolicyRuntime>, shutdown: impl std::future::Future<Output = ()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let file_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full queue already has a reload pending; dropping is fine.
            let _ = file_tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(runtime.dir(), RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %runtime.dir().display(), error = %e, "cannot watch the policy directory; reload with SIGHUP");
            None
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    // Catch up with any change made between the initial load and the
    // watcher starting (a no-op when nothing changed).
    reload_off_thread(&runtime, "watcher start").await;
    tokio::pin!(shutdown);
    loop {
        let trigger = tokio::select! {
            () = &mut shutdown => return,
            Some(()) = rx.recv() => "file change",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
        };
        if trigger == "file change" {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
        }
        reload_off_thread(&runtime, trigger).await;
    }
}

/// Reading and compiling files is blocking work.
async fn reload_off_thread(runtime: &Arc<PolicyRuntime>, trigger: &'static str) {
    let runtime = runtime.clone();
    let _ = tokio::task::spawn_blocking(move || runtime.reload(trigger)).await;
}
