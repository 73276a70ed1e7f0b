//! Hot-reload primitive: a shared, atomically swappable current policy.
//!
//! Request handlers call [`PolicyHandle::load`] once per request and evaluate
//! against that snapshot, so a request never sees half of an old policy and
//! half of a new one. Reloads compile the new policy completely before
//! swapping it in; if compilation fails, the old policy stays in force. Each
//! successful store gets the next generation number, recorded *inside* the
//! stored [`Policy`] so it can never disagree with the snapshot it labels.
//! This module does not watch files or handle signals; the binary wires
//! those to [`PolicyHandle::reload`].

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::compile::compile;
use crate::error::{PolicyError, Warning};
use crate::policy::{Policy, RouteSet};
use crate::source::{Source, read_dir};

#[cfg(test)]
mod tests;

/// The current policy, shared between request handlers and the reloader.
#[derive(Debug)]
pub struct PolicyHandle {
    current: ArcSwap<Policy>,
    /// Serializes stores so generations increase in store order.
    writer: Mutex<()>,
}

impl PolicyHandle {
    /// Installs `policy` as generation 1.
    #[must_use]
    pub fn new(mut policy: Policy) -> Self {
        policy.generation = 1;
        Self {
            current: ArcSwap::from_pointee(policy),
            writer: Mutex::new(()),
        }
    }

    /// A snapshot of the current policy: one atomic reference-count
    /// increment, no lock. Keep it for the whole request.
    #[must_use]
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// The generation of the current policy.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Atomically replaces the current policy; returns its new generation.
    pub fn store(&self, mut policy: Policy) -> u64 {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.current.load().generation.saturating_add(1);
        policy.generation = generation;
        self.current.store(Arc::new(policy));
        generation
    }

    /// Compiles `sources` and, if that succeeds, swaps the result in.
    ///
    /// # Errors
    ///
    /// The compile errors; the current policy is then left untouched.
    pub fn reload(&self, sources: &[Source], routes: &RouteSet) -> Result<Vec<Warning>, Vec<PolicyError>> {
        match compile(sources, routes) {
            Ok(compiled) => {
                let rules = compiled.policy.rule_count();
                let generation = self.store(compiled.policy);
                tracing::info!(generation, rules, warnings = compiled.warnings.len(), "policy reloaded");
                Ok(compiled.warnings)
            }
            Err(errors) => {
                tracing::warn!(
                    generation = self.generation(),
                    errors = errors.len(),
                    "policy reload failed; keeping the current policy"
                );
                Err(errors)
            }
        }
    }

    /// [`crate::read_dir`] followed by [`Self::reload`].
    ///
    /// # Errors
    ///
    /// The read or compile errors; the current policy is then left untouched.
    pub fn reload_dir(&self, dir: &Path, routes: &RouteSet) -> Result<Vec<Warning>, Vec<PolicyError>> {
        let sources = read_dir(dir).map_err(|e| vec![e])?;
        self.reload(&sources, routes)
    }
}
