//! Persistence behind a trait. The default implementation is SQLite; the trait is synchronous
//! (implementations block) and callers run it off the async runtime with [`run_blocking`].

mod sqlite;

use std::sync::Arc;

pub use sqlite::SqliteStore;

use crate::domain::{
    DeploymentStatus, HistoryEntry, MonitorId, NewTwin, Outcome, Principal, Run, RunGrant, RunId,
    RunKind, RunStatus, RunStep, Twin, TwinId, TwinUpdate,
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
    /// The twin must be unlocked and the move allowed; the run takes the lock but the status
    /// stays as it is until the run starts working (a run waiting in the queue).
    Reserve(RunId),
    /// The run must hold the lock (it reserved it); it keeps it.
    Keep(RunId),
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

/// One event of a run with its sequence number, as stored and as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub run_id: RunId,
    pub seq: u64,
    pub event: String,
    /// One-line JSON.
    pub data: String,
}

impl StoredEvent {
    pub fn is_done(&self) -> bool {
        self.event == "done"
    }
}

/// How far a run's current step's spool has been read: stored with the events read from it,
/// so a restarted gateway goes on after the last stored line, never before or beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolMark {
    pub step: u32,
    /// Bytes of the spool read so far.
    pub offset: u64,
}

/// One version of a twin's terraform state, as stored (encrypted).
#[derive(Debug, Clone)]
pub struct StateVersion {
    pub twin_id: TwinId,
    /// 1, 2, 3 ... per twin.
    pub version: i64,
    pub serial: i64,
    pub lineage: String,
    pub md5: String,
    pub size: i64,
    /// Managed resource instances in this state.
    pub resource_count: i64,
    pub run_id: Option<RunId>,
    pub actor: String,
    pub created_at: String,
    /// Empty in listings.
    pub ciphertext: Vec<u8>,
}

/// terraform's lock on a twin's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLock {
    pub lock_id: String,
    /// LockInfo JSON as terraform sent it; answered back to a competing locker.
    pub info: String,
    /// The run whose terraform took the lock, so the lock can be let go when the run ends.
    pub run_id: Option<RunId>,
    pub created_at: String,
}

/// A new run and the status move that starts it (taking the twin's lock).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub twin_id: TwinId,
    pub kind: RunKind,
    pub actor: String,
}

/// How a run ended; written in the same transaction as its `done` event and the twin's move.
#[derive(Debug, Clone)]
pub struct RunFinish {
    pub run_id: RunId,
    pub twin_id: TwinId,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub message: String,
    /// What the run's `terraform output` answered (masked), kept with the run. The twin's own
    /// outputs follow its current state version, not runs.
    pub outputs: Option<serde_json::Value>,
    /// A successful deploy: the twin's `last_deployed_at` becomes now.
    pub deployed: bool,
    /// `None` for runs that do not move the twin, and when the twin was moved under the run
    /// and it must end without moving it.
    pub twin_move: Option<StatusMove>,
    /// A run that ends before it moved the twin (cancelled while it waited for a slot) lets
    /// go of the lock it reserved, leaving the status as it was.
    pub release_lock: Option<RunId>,
    /// What a plan or drift check found.
    pub result: Option<serde_json::Value>,
}

/// A kept plan preview (the plan file encrypted: it holds planned values).
#[derive(Debug, Clone)]
pub struct StoredPlan {
    pub run_id: RunId,
    pub twin_id: TwinId,
    /// Of the files and variables it was made from.
    pub config_hash: String,
    /// Of the state it was made against.
    pub state_serial: i64,
    pub created_at: String,
    pub applied_by: Option<RunId>,
    pub ciphertext: Vec<u8>,
}

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
    /// Sets the status to match reality (a refresh found the twin deployed outside the UI, or
    /// its resources gone), outside the status machine; the twin must be unlocked. Recorded in
    /// history as `reconciled`.
    fn reconcile_status(
        &self,
        id: &TwinId,
        to: DeploymentStatus,
        actor: &str,
        reason: &str,
    ) -> StoreResult<Twin>;
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
    /// Creates the run and, for runs that change infrastructure, moves the twin (taking its
    /// lock) in the same transaction.
    fn start_run(&self, run: NewRun, change: Option<StatusMove>) -> StoreResult<(Run, Twin)>;
    /// The twin's newest finished run of a kind (e.g. its last drift check).
    fn latest_finished_run(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>>;
    fn insert_plan(&self, plan: &StoredPlan) -> StoreResult<()>;
    /// The twin's newest plan preview.
    fn latest_plan(&self, twin_id: &TwinId) -> StoreResult<Option<StoredPlan>>;
    fn mark_plan_applied(&self, plan_run: &RunId, by: &RunId) -> StoreResult<()>;
    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>>;
    /// A twin's runs, newest first.
    fn list_runs(&self, twin_id: &TwinId) -> StoreResult<Vec<Run>>;
    /// The run got a slot: pending -> processing, with its start time.
    fn mark_run_processing(&self, id: &RunId) -> StoreResult<()>;
    /// Runs recorded as pending or processing, oldest first (after a crash: to settle).
    fn unfinished_runs(&self) -> StoreResult<Vec<Run>>;
    /// The run enters `step` (its spool read from `step.spool_offset`).
    fn begin_step(&self, id: &RunId, step: &RunStep) -> StoreResult<()>;
    /// The monitor of the run's step `step` runs as `monitor`.
    fn record_monitor(&self, id: &RunId, step: u32, monitor: MonitorId) -> StoreResult<()>;
    /// The deploy applies the kept plan of the preview run `plan`.
    fn set_applies_plan(&self, id: &RunId, plan: &RunId) -> StoreResult<()>;
    /// Appends events (in sequence order) in one transaction, keeping the run's stage and
    /// progress in step and each run's spool position at its mark (a mark of a step the run
    /// has left is ignored); with `finish`, also ends the run and moves the twin in that
    /// transaction.
    fn append_events(
        &self,
        events: &[StoredEvent],
        marks: &[(RunId, SpoolMark)],
        finish: Option<&RunFinish>,
    ) -> StoreResult<()>;
    /// A run's backend credential, by the hash of its secret.
    fn insert_grant(&self, secret_hash: &str, grant: &RunGrant) -> StoreResult<()>;
    fn find_grant(&self, secret_hash: &str) -> StoreResult<Option<RunGrant>>;
    /// Every credential of the run stops working.
    fn revoke_grants(&self, run: &RunId) -> StoreResult<()>;
    /// Up to `limit` events of a run with `seq > after`, in order.
    fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// The highest sequence number stored for the run (0 if none).
    fn last_event_seq(&self, run_id: &RunId) -> StoreResult<u64>;
    fn current_state(&self, twin_id: &TwinId) -> StoreResult<Option<StateVersion>>;
    fn state_version(&self, twin_id: &TwinId, version: i64) -> StoreResult<Option<StateVersion>>;
    /// Every version's metadata (no ciphertext), newest first.
    fn list_state_versions(&self, twin_id: &TwinId) -> StoreResult<Vec<StateVersion>>;
    /// Inserts the version if the twin's newest version number is still `expected_previous`
    /// (0 for none), and in the same transaction makes `twin_outputs` (that state's outputs,
    /// masked; `None` for none) the twin's `terraform_outputs`; false when another write came
    /// first.
    fn insert_state_version(
        &self,
        version: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
    ) -> StoreResult<bool>;
    fn state_lock(&self, twin_id: &TwinId) -> StoreResult<Option<StateLock>>;
    /// Takes the lock if it is free (or already held under the same id); otherwise the holder.
    fn acquire_state_lock(
        &self,
        twin_id: &TwinId,
        lock: &StateLock,
    ) -> StoreResult<Result<(), StateLock>>;
    /// Releases the lock held under `lock_id`; `None` force-releases whatever holds it and
    /// records that in the twin's history. Err(holder) when another id holds it.
    fn release_state_lock(
        &self,
        twin_id: &TwinId,
        lock_id: Option<&str>,
        actor: &str,
    ) -> StoreResult<Result<Option<StateLock>, StateLock>>;
    fn meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    fn set_meta(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// A cheap round trip, for health checks.
    fn ping(&self) -> StoreResult<()>;

    /// Runs of the twins `principal` may see (every twin for admins, deleted ones included),
    /// newest first, each with its twin's name: at most `limit`, only those whose status is in
    /// `statuses` (all when empty), and only runs older than the run `before` when given.
    fn list_visible_runs(
        &self,
        principal: &Principal,
        statuses: &[RunStatus],
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<(Run, String)>>;
    /// A page of a twin's runs, newest first: at most `limit`, older than the run `before`.
    fn list_runs_page(
        &self,
        twin_id: &TwinId,
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<Run>>;
    /// A page of a twin's history, newest first: at most `limit` entries, older than the entry
    /// `before`; NotFound when `before` is not an entry of this twin.
    fn history_page(
        &self,
        id: &TwinId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<HistoryEntry>>;
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
