//! Persistence behind a trait. The default implementation is SQLite; the trait is synchronous
//! (implementations block) and callers run it off the async runtime with [`run_blocking`].

mod postgres;
mod sqlite;

use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::domain::audit::{AuditEntry, NewAudit};
use crate::domain::events::{DeliveryStatus, EventType, OutboxMessage};
use crate::domain::{
    Credential, CredentialId, DeliveryId, HistoryEntry, LogLevel, MessageId, MonitorId, NewHistory,
    NewTwin, Outcome, Principal, ReplicaId, Run, RunGrant, RunId, RunKind, RunResult, RunStatus,
    RunStep, Stage, Twin, TwinChange, TwinId, WebhookId,
};
pub use crate::domain::{LockChange, StatusMove};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A unique value (a twin's name among its owner's live twins) is taken.
    #[error("{0} is taken")]
    Duplicate(String),
    #[error("database connection pool failed: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("the blocking task running a store call failed: {0}")]
    Task(String),
}

/// What a run's events say about its stage and progress, kept on the run row with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunProgress {
    pub stage: Option<Stage>,
    pub percent: Option<u8>,
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

/// An event to store; the store gives it the run's next sequence number as it writes it, so
/// a run's sequence stays gap-free whoever writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub run_id: RunId,
    pub event: String,
    /// One-line JSON.
    pub data: String,
}

/// What [`Store::append_events`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The events stored, with their sequence numbers, in order. Nothing is appended after a
    /// run's end: events of runs that had ended before the write (`ended`) are left out, and
    /// so is a finish of one.
    Stored {
        events: Vec<StoredEvent>,
        ended: Vec<RunId>,
    },
    /// The finish was decided from a twin that has changed since: nothing written.
    TwinChanged,
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
    /// The gateway that runs it at once; `None` queues it for the first free slot anywhere.
    pub owner: Option<ReplicaId>,
    /// The run's secret environment (credentials, sensitive variables), sealed: what its steps
    /// get on whichever gateway runs, adopts or settles it. Cleared when the run ends.
    pub secrets: Option<Vec<u8>>,
    /// The credentials it uses; their `last_used_at` becomes now.
    pub credentials: Vec<RunCredential>,
    /// A debug run's terraform log level.
    pub log_level: Option<LogLevel>,
}

/// A credential a run was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCredential {
    pub id: CredentialId,
    /// The run's end removes it (a one-time credential used by a deploy or destroy).
    pub delete_after_run: bool,
}

/// A gateway's last sign of life, by the database's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaBeat {
    pub id: ReplicaId,
    /// Where it serves (its backend URL), for operators.
    pub address: String,
    pub started_at: String,
    pub seconds_since_heartbeat: f64,
}

/// What another process wrote to a shared database, as the database tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Events of the run were stored, numbered from `first`.
    Events { run_id: RunId, first: u64 },
    /// A cancel of the run was asked for.
    Cancel(RunId),
    /// A run entered the queue.
    Queued,
    /// The listener reconnected: notices may have been missed; look at everything.
    Resync,
}

/// Where notices go; called from the listener's thread.
pub type NoticeHandler = Arc<dyn Fn(Notice) + Send + Sync>;

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
    /// The twin's new row (its final move, its lock let go), decided from the twin as it was
    /// read; `None` for runs that leave the twin as it is.
    pub twin: Option<TwinChange>,
    /// What a plan or drift check found.
    pub result: Option<RunResult>,
    /// When it ended (its `end_time`).
    pub ended_at: String,
    /// One-time credentials the run used: removed (and detached from twins) with its end.
    pub delete_credentials: Vec<CredentialId>,
    /// The webhook messages reporting the end (`run.finished`, `drift.detected`), decided
    /// with `twin`; the twin's own move carries its `twin.status_changed`.
    pub messages: Vec<OutboxMessage>,
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

/// A credential as stored: what answers show, and its values sealed.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub credential: Credential,
    pub sealed_env: Vec<u8>,
}

/// A webhook endpoint as stored (its signing secret sealed).
#[derive(Debug, Clone)]
pub struct StoredWebhook {
    pub id: WebhookId,
    /// Who made it: their twins' events reach it (every twin's, for an admin).
    pub owner: String,
    pub is_admin: bool,
    pub url: String,
    /// Empty: every event.
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub sealed_secret: Vec<u8>,
    pub created_at: String,
}

/// A delivery to make: one message to one webhook.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub next_attempt_at: String,
}

/// A delivery a worker has claimed until its lease ends, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub message: OutboxMessage,
    pub webhook_id: WebhookId,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// One attempt to deliver, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub delivery_id: DeliveryId,
    /// 1, 2, 3 ... per delivery.
    pub number: u32,
    pub attempted_at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryNext {
    Succeeded,
    Retry { at: String },
    Failed,
}

/// A delivery and its attempts, as `GET /webhooks/{id}/deliveries` shows them.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub message_id: MessageId,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub attempts: Vec<DeliveryAttempt>,
}

/// What [`Store::restore_state_version`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The version and the twin's row are written.
    Written,
    /// terraform's state lock is held (by this holder): nothing written.
    StateLocked(StateLock),
    /// The twin or its newest state version changed since the decision: nothing written.
    Changed,
}

/// Persistence: SQL only. Every rule (the status machine, who may change what, when) is
/// decided above, in the domain and the services; a store writes what it is given, a twin's
/// row only while the twin is still at the version the decision was made from, and answers
/// typed results.
pub trait Store: Send + Sync + 'static {
    /// Inserts the twin and its history row; [`StoreError::Duplicate`] when the owner has a
    /// live twin of that name.
    fn create_twin(&self, twin: NewTwin, history: &NewHistory) -> StoreResult<Twin>;
    /// Twins visible to `principal` (its own, or all for admins), oldest first.
    fn list_twins(&self, principal: &Principal, include_deleted: bool) -> StoreResult<Vec<Twin>>;
    /// A twin, deleted or not; `None` if it never existed.
    fn get_twin(&self, id: &TwinId) -> StoreResult<Option<Twin>>;
    /// Writes the twin's new row and its history rows if the twin is still at
    /// `change.expected_version`; `None` (nothing written) when it has changed meanwhile.
    fn write_twin(&self, change: &TwinChange) -> StoreResult<Option<Twin>>;
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
    /// Creates the run and, with `twin`, writes the twin's new row (its move and lock) in the
    /// same transaction, if the twin is still at the version it was decided from; `None`
    /// (nothing written) otherwise.
    fn start_run(&self, run: NewRun, twin: Option<&TwinChange>)
        -> StoreResult<Option<(Run, Twin)>>;
    /// The twin's newest finished run of a kind (e.g. its last drift check).
    fn latest_finished_run(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>>;
    fn insert_plan(&self, plan: &StoredPlan) -> StoreResult<()>;
    /// The twin's newest plan preview.
    fn latest_plan(&self, twin_id: &TwinId) -> StoreResult<Option<StoredPlan>>;
    fn mark_plan_applied(&self, plan_run: &RunId, by: &RunId) -> StoreResult<()>;
    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>>;
    /// A twin's runs, newest first.
    fn list_runs(&self, twin_id: &TwinId) -> StoreResult<Vec<Run>>;
    /// The run got a slot: pending -> processing, started at `started_at`, with the messages
    /// reporting it; nothing when it was not pending.
    fn mark_run_processing(
        &self,
        id: &RunId,
        started_at: &str,
        messages: &[OutboxMessage],
    ) -> StoreResult<()>;
    /// Runs recorded as pending or processing, oldest first, whoever owns them.
    fn unfinished_runs(&self) -> StoreResult<Vec<Run>>;
    /// Gives the unfinished run to `to` (`None`: back to the queue) if `from` still owns it
    /// and, when `stale_after` is given, `from` has shown no sign of life for that many
    /// seconds by the database's clock (checked in the same statement, so a gateway that
    /// comes back in time keeps its runs). False when any of that no longer holds.
    fn move_run(
        &self,
        id: &RunId,
        from: Option<&ReplicaId>,
        to: Option<&ReplicaId>,
        stale_after: Option<f64>,
    ) -> StoreResult<bool>;
    /// The oldest run waiting in the queue (pending, owned by nobody), now owned by
    /// `replica`; several gateways claiming at once each get a different one.
    fn claim_queued_run(&self, replica: &ReplicaId) -> StoreResult<Option<Run>>;
    /// The runs waiting in the queue, oldest first.
    fn queued_runs(&self) -> StoreResult<Vec<RunId>>;
    /// Marks the unfinished run for its owner to cancel (and tells the owner); false when
    /// it has ended.
    fn request_cancel(&self, id: &RunId) -> StoreResult<bool>;
    /// The gateway is alive (its heartbeat now, by the database's clock) and serves at
    /// `address`.
    fn heartbeat(&self, replica: &ReplicaId, address: &str) -> StoreResult<()>;
    /// Every gateway that has shown a sign of life, with how long ago.
    fn replicas(&self) -> StoreResult<Vec<ReplicaBeat>>;
    /// Hears what other processes write to the database, for as long as the store lives:
    /// `handler` gets a [`Notice`] for each. False when nothing else writes to this
    /// database (an embedded one).
    fn listen(&self, handler: NoticeHandler) -> StoreResult<bool> {
        let _ = handler;
        Ok(false)
    }
    /// The run enters `step` (its spool read from `step.spool_offset`).
    fn begin_step(&self, id: &RunId, step: &RunStep) -> StoreResult<()>;
    /// The monitor of the run's step `step` runs as `monitor`.
    fn record_monitor(&self, id: &RunId, step: u32, monitor: MonitorId) -> StoreResult<()>;
    /// The deploy applies the kept plan of the preview run `plan`.
    fn set_applies_plan(&self, id: &RunId, plan: &RunId) -> StoreResult<()>;
    /// Appends events in one transaction, each run's next in order, numbered after the run's
    /// last stored event; with each run's stage and progress as its events say and its spool
    /// position at its mark (a mark of a step the run has left is ignored); with `finish`,
    /// also ends the run and writes its twin's new row in that transaction. Events of runs
    /// that have ended are left out (so is a finish of one); [`Appended::TwinChanged`]
    /// (nothing written) when the twin is no longer at the version the finish was decided
    /// from.
    fn append_events(
        &self,
        events: &[NewEvent],
        marks: &[(RunId, SpoolMark)],
        progress: &[(RunId, RunProgress)],
        finish: Option<&RunFinish>,
    ) -> StoreResult<Appended>;
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
    /// Releases the lock held under `lock_id`, or whatever holds it for `None`; writes
    /// `history` with it when given. Err(holder) when another id holds it.
    fn release_state_lock(
        &self,
        twin_id: &TwinId,
        lock_id: Option<&str>,
        history: Option<&NewHistory>,
    ) -> StoreResult<Result<Option<StateLock>, StateLock>>;
    fn meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    fn set_meta(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Sets the key only if it is not set; false when it was (several gateways starting on
    /// an empty database agree on one value).
    fn insert_meta(&self, key: &str, value: &[u8]) -> StoreResult<bool>;
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

    // --- Owners' credentials and the runs that use them ---------------------------------------

    fn insert_credential(&self, credential: &StoredCredential) -> StoreResult<()>;
    fn get_credential(&self, id: &CredentialId) -> StoreResult<Option<StoredCredential>>;
    /// An owner's credentials (every owner's for `None`), oldest first.
    fn list_credentials(&self, owner: Option<&str>) -> StoreResult<Vec<StoredCredential>>;
    /// Writes name, provider, env (keys and sealed values), expiry, `delete_after_run` and
    /// `updated_at`; NotFound when it is gone.
    fn update_credential(&self, credential: &StoredCredential) -> StoreResult<()>;
    /// Deletes the credential and detaches it from every twin, unless live twins name it and
    /// not `detach`: then nothing changes and those twins are the answer. NotFound when gone.
    fn delete_credential(
        &self,
        id: &CredentialId,
        detach: bool,
    ) -> StoreResult<Result<(), Vec<TwinId>>>;
    /// The run's sealed secret environment, while it has one.
    fn run_secrets(&self, run_id: &RunId) -> StoreResult<Option<Vec<u8>>>;
    /// The credentials the run was started with.
    fn run_credentials(&self, run_id: &RunId) -> StoreResult<Vec<RunCredential>>;

    // --- Drift checks and state rollback -------------------------------------------------------

    /// The twin's newest run of `kind`, finished or not.
    fn latest_run_of_kind(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>>;
    /// Leads the exclusive background task `task` (the drift scheduler) for `lease` from now,
    /// by the database's clock, if nobody else holds a lease on it that has not ended; true
    /// while this store does. One leader at a time among the gateways on one database; a
    /// leader that stops renewing is followed by another once its lease ends.
    fn try_lead(&self, task: &str, lease: std::time::Duration) -> StoreResult<bool>;
    /// A state rollback in one transaction: the twin's new row `change` (its history row, if
    /// it is still at the version decided from), `version` (as [`Store::insert_state_version`]
    /// with `expected_previous`, its outputs becoming the twin's), only while nobody holds
    /// terraform's state lock.
    fn restore_state_version(
        &self,
        version: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
        change: &TwinChange,
    ) -> StoreResult<Restored>;

    // --- Webhooks: endpoints, the outbox, deliveries -------------------------------------------

    fn insert_webhook(&self, webhook: &StoredWebhook) -> StoreResult<()>;
    /// An owner's webhooks (every owner's for `None`), oldest first.
    fn list_webhooks(&self, owner: Option<&str>) -> StoreResult<Vec<StoredWebhook>>;
    fn get_webhook(&self, id: &WebhookId) -> StoreResult<Option<StoredWebhook>>;
    /// Deletes the webhook with its deliveries and their attempts; false when it was gone.
    fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool>;
    /// Outbox messages not yet turned into deliveries, oldest first.
    fn pending_messages(&self, limit: usize) -> StoreResult<Vec<OutboxMessage>>;
    /// Marks the message handed out and inserts its deliveries (those of webhooks that still
    /// exist), in one transaction; false (nothing written) when another worker did it first.
    fn fan_out_message(&self, id: &MessageId, deliveries: &[NewDelivery]) -> StoreResult<bool>;
    /// Claims up to `limit` deliveries due at `now` (pending with `next_attempt_at <= now`, or
    /// sending under a lease that ended by `now`) for `worker` until `lease_until`; each is
    /// claimed by one worker only, whoever claims at once.
    fn claim_deliveries(
        &self,
        worker: &str,
        now: &str,
        lease_until: &str,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt and moves its delivery on, if `worker` still holds the claim; false
    /// when it does not (its lease ended and another took it, or the webhook is gone).
    fn record_attempt(
        &self,
        worker: &str,
        attempt: &DeliveryAttempt,
        next: &DeliveryNext,
    ) -> StoreResult<bool>;
    /// A webhook's deliveries with their attempts, newest first, at most `limit`.
    fn list_deliveries(&self, id: &WebhookId, limit: usize) -> StoreResult<Vec<DeliveryRecord>>;

    /// Appends an entry to the audit log, dated `at`.
    fn append_audit(&self, entry: &NewAudit, at: &str) -> StoreResult<()>;
    /// Up to `limit` audit entries after entry `after` (from the first without), oldest first.
    fn audit_page(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>>;
    /// Removes the twin and everything kept of it (runs, their events, grants and credentials,
    /// plans, state versions and lock, history, credential links) in one transaction, while
    /// it is still at `version`; false (nothing removed) when it changed or is gone. Webhook
    /// messages and audit entries stay.
    fn purge_twin(&self, id: &TwinId, version: i64) -> StoreResult<bool>;
    /// Soft-deleted twins deleted before `cutoff`, oldest first.
    fn deleted_before(&self, cutoff: &str) -> StoreResult<Vec<TwinId>>;
}

/// The store the settings name: the PostgreSQL database of `--database-url`, or SQLite in
/// the data directory.
pub fn open(settings: &crate::config::Settings) -> anyhow::Result<Arc<dyn Store>> {
    use anyhow::Context;
    if let Some(url) = &settings.database_url {
        // The URL may hold a password: never in an error.
        let store = PostgresStore::open(url).context("cannot open the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    let path = settings.database_path();
    let store =
        SqliteStore::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Each run of a batch with how many of the batch's events are its, in order of first
/// appearance.
fn counts(events: &[NewEvent]) -> Vec<(&RunId, usize)> {
    let mut counts: Vec<(&RunId, usize)> = Vec::new();
    for event in events {
        match counts.iter_mut().find(|(run, _)| **run == event.run_id) {
            Some((_, count)) => *count += 1,
            None => counts.push((&event.run_id, 1)),
        }
    }
    counts
}

thread_local! {
    /// This thread is one of the runtime's blocking threads (see [`run_blocking`]).
    static BLOCKING_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// May a store call block this thread? Yes outside any async runtime and on the blocking
/// threads [`run_blocking`] uses; not on a thread that drives async tasks.
fn may_block() -> bool {
    BLOCKING_THREAD.get() || tokio::runtime::Handle::try_current().is_err()
}

/// Runs blocking work that calls the store (a service's, the vault's) on the blocking pool,
/// keeping the caller's tracing span, on a thread the store may block.
pub async fn blocking<T, F>(work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        BLOCKING_THREAD.set(true);
        span.in_scope(work)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))
}

/// Runs a store call on the blocking pool, keeping the caller's tracing span.
pub async fn run_blocking<T, F>(store: &Arc<dyn Store>, call: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
{
    let store = Arc::clone(store);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        BLOCKING_THREAD.set(true);
        span.in_scope(|| call(store.as_ref()))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}
