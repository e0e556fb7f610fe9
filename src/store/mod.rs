//! Persistence behind a trait. The default implementation is SQLite; the trait is synchronous
//! (implementations block) and callers run it off the async runtime with [`run_blocking`].

mod sqlite;

use std::sync::Arc;

pub use sqlite::SqliteStore;

use crate::domain::{
    DeploymentStatus, HistoryEntry, NewTwin, Principal, RunId, Twin, TwinId, TwinUpdate,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the twin's state or lock.
    #[error("{0}")]
    Conflict(Conflict),
    #[error("database connection pool failed: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("the blocking task running a store call failed: {0}")]
    Task(String),
}

/// Why a change was refused, with a stable code and what a client needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub code: &'static str,
    pub detail: String,
    pub status: Option<DeploymentStatus>,
    pub active_job_id: Option<RunId>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Conflict {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            status: None,
            active_job_id: None,
        }
    }
}

/// What happens to the twin's run lock as part of a status move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// The twin must be unlocked; it stays unlocked.
    None,
    /// The twin must be unlocked; the run takes the lock.
    Acquire(RunId),
    /// The run must hold the lock; it lets go.
    Release(RunId),
}

/// A requested status move: compare-and-set against the status machine and the lock.
#[derive(Debug, Clone)]
pub struct StatusMove {
    pub to: DeploymentStatus,
    pub actor: String,
    pub reason: Option<String>,
    pub lock: LockChange,
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait Store: Send + Sync + 'static {
    fn create_twin(&self, twin: NewTwin, actor: &str) -> StoreResult<Twin>;
    /// Twins visible to `principal` (its own, or all for admins), oldest first.
    fn list_twins(&self, principal: &Principal, include_deleted: bool) -> StoreResult<Vec<Twin>>;
    /// A twin, deleted or not; `None` if it never existed.
    fn get_twin(&self, id: &TwinId) -> StoreResult<Option<Twin>>;
    fn update_twin(&self, id: &TwinId, update: TwinUpdate, actor: &str) -> StoreResult<Twin>;
    fn soft_delete_twin(&self, id: &TwinId, actor: &str) -> StoreResult<Twin>;
    fn restore_twin(&self, id: &TwinId, actor: &str) -> StoreResult<Twin>;
    /// Moves the twin's status per the status machine in one transaction with its history row.
    fn move_status(&self, id: &TwinId, change: StatusMove) -> StoreResult<Twin>;
    fn history(&self, id: &TwinId) -> StoreResult<Vec<HistoryEntry>>;

    fn insert_token(
        &self,
        token_hash: &str,
        principal: &Principal,
        label: Option<&str>,
    ) -> StoreResult<()>;
    fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>>;
    fn has_admin_token(&self) -> StoreResult<bool>;
    fn insert_session(
        &self,
        session_hash: &str,
        principal: &Principal,
        expires_at: &str,
    ) -> StoreResult<()>;
    /// The session's principal if it exists and has not expired at `now`.
    fn find_session(&self, session_hash: &str, now: &str) -> StoreResult<Option<Principal>>;
    fn delete_session(&self, session_hash: &str) -> StoreResult<()>;
    /// A cheap round trip, for health checks.
    fn ping(&self) -> StoreResult<()>;
}

/// Runs a store call on the blocking pool, keeping the caller's tracing span.
pub async fn run_blocking<T, F>(store: &Arc<dyn Store>, call: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
{
    let store = Arc::clone(store);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| call(store.as_ref())))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}
