//! Change events: what the directory publishes after each durable change.
//!
//! Sessions, live connections and the audit trail subscribe to react to
//! provisioning. Events are published in sequence order, by the flusher,
//! only once the change is on disk; so a subscriber never acts on a change
//! that a crash could still undo. A subscriber that falls more than the
//! channel capacity behind receives `Lagged` and must resynchronise from the
//! directory itself (its state is always current).

use std::sync::Arc;

use time::OffsetDateTime;

use crate::model::{Group, Id, Member, Principal, User};

/// One committed change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The directory sequence number of the change (strictly increasing).
    pub seq: u64,
    /// The SCIM client that made it.
    pub actor: Id,
    pub at: OffsetDateTime,
    pub kind: ChangeKind,
    /// Every user whose authorization-relevant view (userName, active, or
    /// effective groups) changed, before and after. `None` before means the
    /// user was created; `None` after means it was deleted.
    pub principals: Vec<PrincipalChange>,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    UserCreated {
        after: Arc<User>,
    },
    UserUpdated {
        before: Arc<User>,
        after: Arc<User>,
    },
    UserDeleted {
        before: Arc<User>,
    },
    GroupCreated {
        after: Arc<Group>,
        added: Vec<Member>,
    },
    GroupUpdated {
        before: Arc<Group>,
        after: Arc<Group>,
        added: Vec<Member>,
        removed: Vec<Member>,
    },
    GroupDeleted {
        before: Arc<Group>,
        removed: Vec<Member>,
    },
}

#[derive(Debug, Clone)]
pub struct PrincipalChange {
    pub before: Option<Arc<Principal>>,
    pub after: Option<Arc<Principal>>,
}

impl PrincipalChange {
    /// True when this change takes access away wholesale: the user was
    /// deleted or deactivated.
    pub fn revokes(&self) -> bool {
        match (&self.before, &self.after) {
            (Some(b), None) => b.active,
            (Some(b), Some(a)) => b.active && !a.active,
            _ => false,
        }
    }
}
