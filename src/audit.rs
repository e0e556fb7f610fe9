//! The audit log: the services record each change made through the API or the CLI right
//! after it is made (an entry that cannot be written is logged as an error; the change it
//! records stands), and admins read it page by page.

use std::sync::Arc;

use crate::clock;
use crate::domain::audit::{AuditEntry, NewAudit};
use crate::domain::Principal;
use crate::store::{run_blocking, Store, StoreError};

/// The most entries one page holds.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("only admins may read the audit log")]
    NotAdmin,
    #[error("limit must be between 1 and {MAX_PAGE}")]
    BadLimit,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reading the audit log.
pub struct AuditLog {
    store: Arc<dyn Store>,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Up to `limit` entries after entry `after`, oldest first; admins only.
    pub async fn page(
        &self,
        principal: &Principal,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        if !principal.is_admin {
            return Err(AuditError::NotAdmin);
        }
        if limit == 0 || limit > MAX_PAGE {
            return Err(AuditError::BadLimit);
        }
        Ok(run_blocking(&self.store, move |s| s.audit_page(after, limit)).await?)
    }
}

/// Appends `entry` (blocking: from a store thread or outside the runtime).
pub fn record(store: &dyn Store, entry: NewAudit) {
    if let Err(err) = store.append_audit(&entry, &clock::now()) {
        tracing::error!(
            action = entry.action.as_str(),
            target = %entry.target,
            error = %err,
            "cannot write the audit entry"
        );
    }
}

/// Appends `entry` from async code.
pub async fn record_async(store: &Arc<dyn Store>, entry: NewAudit) {
    let written = run_blocking(store, move |s| {
        record(s, entry);
        Ok(())
    })
    .await;
    if let Err(err) = written {
        tracing::error!(error = %err, "cannot write the audit entry");
    }
}
