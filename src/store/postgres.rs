//! The PostgreSQL store (`--database-url postgres://...`): the same trait as SQLite, SQL only,
//! for several gateways on one database. Changes are compare-and-set on what the domain
//! decided (a twin's version, a state version's primary key, a state lock's row), so they are
//! correct under PostgreSQL's concurrent writers at READ COMMITTED. Schema migrations are
//! refinery's, from `migrations/postgres/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_postgres::postgres::fallible_iterator::FallibleIterator;
use r2d2_postgres::postgres::{self, NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    counts, Appended, ClaimedDelivery, DeliveryAttempt, DeliveryNext, DeliveryRecord, NewDelivery,
    NewEvent, NewRun, Notice, NoticeHandler, ReplicaBeat, Restored, RunCredential, RunFinish,
    RunProgress, SpoolMark, StateLock, StateVersion, Store, StoreError, StoreResult,
    StoredCredential, StoredEvent, StoredPlan, StoredWebhook,
};
use crate::clock;
use crate::domain::audit::{AuditEntry, NewAudit};
use crate::domain::events::{EventType, OutboxMessage};
use crate::domain::{
    Credential, CredentialId, CredentialName, DeploymentStatus, HistoryEntry, LogLevel, MessageId,
    MonitorId, NewHistory, NewTwin, Principal, ReplicaId, Run, RunGrant, RunId, RunKind, RunStatus,
    RunStep, SealedVariables, Twin, TwinChange, TwinId, TwinName, WebhookId,
};

/// The channel gateways tell each other on.
const CHANNEL: &str = "terrastream";

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

type Manager = PostgresConnectionManager<NoTls>;

pub struct PostgresStore {
    /// Always there but while the store is dropped (see [`Drop`]).
    pool: Option<Pool<Manager>>,
    config: postgres::Config,
    /// Names this store's notices, so its own listener can skip them.
    origin: String,
    /// Set when the store is dropped: its listener stops.
    closed: Arc<AtomicBool>,
}

impl Drop for PostgresStore {
    /// Closing a connection blocks, which a thread driving async tasks must not: the pool
    /// is dropped on a thread of its own then.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(pool) = self.pool.take() {
            if super::may_block() {
                drop(pool);
            } else {
                std::thread::spawn(move || drop(pool));
            }
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> Self {
        let constraint = err.as_db_error().and_then(|db| db.constraint());
        if err.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
            && constraint == Some("twins_owner_name")
        {
            return StoreError::Duplicate("the twin name".into());
        }
        StoreError::Postgres(match err.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => err.to_string(),
        })
    }
}

impl PostgresStore {
    /// Connects to `url` and applies pending migrations (several gateways starting at once
    /// are serialised by a session advisory lock).
    pub fn open(url: &str) -> StoreResult<Self> {
        if super::may_block() {
            return Self::connect(url);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| Self::connect(url))
                .join()
                .map_err(|_| StoreError::Task("opening the database panicked".into()))?
        })
    }

    fn connect(url: &str) -> StoreResult<Self> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Postgres(format!("bad database URL: {e}")))?;
        let manager = PostgresConnectionManager::new(config.clone(), NoTls);
        let pool = Pool::builder()
            .max_size(16)
            .min_idle(Some(2))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        let mut conn = pool.get()?;
        conn.batch_execute("SELECT pg_advisory_lock(7245118301)")?;
        let migrated = embedded::migrations::runner()
            .run(&mut *conn)
            .map_err(|e| StoreError::Migration(e.to_string()));
        conn.batch_execute("SELECT pg_advisory_unlock(7245118301)")?;
        migrated?;
        Ok(Self {
            pool: Some(pool),
            config,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn conn(&self) -> StoreResult<PooledConnection<Manager>> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| StoreError::Postgres("the store is closed".into()))?;
        Ok(pool.get()?)
    }

    /// Runs `call` where the postgres client may block: here when this thread is not
    /// driving async tasks, on a scoped thread of its own otherwise (the client runs its own
    /// small runtime, which cannot start inside another).
    fn blocking<T: Send>(&self, call: impl FnOnce() -> StoreResult<T> + Send) -> StoreResult<T> {
        if super::may_block() {
            return call();
        }
        std::thread::scope(|scope| {
            scope
                .spawn(call)
                .join()
                .map_err(|_| StoreError::Task("a database call panicked".into()))?
        })
    }

    /// Tells the other gateways, when `tx` commits.
    fn notify(&self, tx: &mut Transaction<'_>, what: &str) -> StoreResult<()> {
        let payload = format!("{} {what}", self.origin);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        Ok(())
    }
}

/// Each run of stored events with the number of its first one.
fn counts_first(events: &[StoredEvent]) -> Vec<(&RunId, u64)> {
    let mut firsts: Vec<(&RunId, u64)> = Vec::new();
    for event in events {
        if !firsts.iter().any(|(run, _)| **run == event.run_id) {
            firsts.push((&event.run_id, event.seq));
        }
    }
    firsts
}

/// A connection of its own that LISTENs and hands what other gateways wrote to the handler;
/// reconnects (and says [`Notice::Resync`]) when the connection is lost.
struct Listener {
    config: postgres::Config,
    origin: String,
    closed: Arc<AtomicBool>,
    handler: NoticeHandler,
}

impl Listener {
    fn connect(&self) -> StoreResult<postgres::Client> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(client)
    }

    fn run(self, mut client: postgres::Client) {
        while !self.closed.load(Ordering::SeqCst) {
            match self.hear(&mut client) {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(%err, "lost the database listener; reconnecting");
                    client = loop {
                        if self.closed.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        match self.connect() {
                            Ok(client) => break client,
                            Err(err) => {
                                tracing::warn!(%err, "cannot reconnect the database listener")
                            }
                        }
                    };
                    (self.handler)(Notice::Resync);
                }
            }
        }
    }

    /// Hands over what arrives for about ten seconds (looking at `closed` every second),
    /// then checks that the connection still answers.
    fn hear(&self, client: &mut postgres::Client) -> Result<(), postgres::Error> {
        for _ in 0..10 {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut notifications = client.notifications();
            let mut arriving = notifications.timeout_iter(Duration::from_secs(1));
            while let Some(note) = arriving.next()? {
                if let Some(notice) = self.parse(note.payload()) {
                    (self.handler)(notice);
                }
            }
        }
        client.is_valid(Duration::from_secs(5))
    }

    /// `<origin> e <run> <first>`, `<origin> c <run>`, `<origin> q`; its own are skipped.
    fn parse(&self, payload: &str) -> Option<Notice> {
        let mut words = payload.split(' ');
        if words.next()? == self.origin {
            return None;
        }
        match (words.next()?, words.next(), words.next()) {
            ("e", Some(run), Some(first)) => Some(Notice::Events {
                run_id: run.parse().ok()?,
                first: first.parse().ok()?,
            }),
            ("c", Some(run), None) => Some(Notice::Cancel(run.parse().ok()?)),
            ("q", None, None) => Some(Notice::Queued),
            _ => None,
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn text(row: &Row, column: &str) -> StoreResult<String> {
    Ok(row.try_get::<_, String>(column)?)
}

fn optional_text(row: &Row, column: &str) -> StoreResult<Option<String>> {
    Ok(row.try_get::<_, Option<String>>(column)?)
}

fn parsed<T>(row: &Row, column: &str) -> StoreResult<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text(row, column)?
        .parse()
        .map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn parsed_optional<T>(row: &Row, column: &str) -> StoreResult<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    optional_text(row, column)?
        .map(|t| {
            t.parse()
                .map_err(|e| corrupt(format!("column {column}: {e}")))
        })
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, column: &str) -> StoreResult<T> {
    serde_json::from_str(&text(row, column)?).map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &str,
) -> StoreResult<Option<T>> {
    optional_text(row, column)?
        .map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("column {column}: {e}"))))
        .transpose()
}

fn to_json(value: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_i64(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(corrupt)
}

const TWIN_COLUMNS: &str = "id, owner, name, provider, files, variables, deployment_status, \
     is_locked, locked_by_run, last_deployed_at, terraform_outputs, created_at, updated_at, \
     deleted_at, version, secret_variable_names, secret_variables";

fn twin_from_row(row: &Row) -> StoreResult<Twin> {
    Ok(Twin {
        id: parsed(row, "id")?,
        owner: text(row, "owner")?,
        name: TwinName::parse(&text(row, "name")?).map_err(corrupt)?,
        provider: parsed(row, "provider")?,
        deployment_status: parsed(row, "deployment_status")?,
        is_locked: row.try_get("is_locked")?,
        active_job_id: parsed_optional(row, "locked_by_run")?,
        last_deployed_at: optional_text(row, "last_deployed_at")?,
        terraform_outputs: optional_json(row, "terraform_outputs")?,
        files: json(row, "files")?,
        variables: json(row, "variables")?,
        secret_variables: SealedVariables {
            names: json(row, "secret_variable_names")?,
            sealed: row.try_get("secret_variables")?,
        },
        // Filled by the caller from twin_credentials.
        credential_ids: Vec::new(),
        created_at: text(row, "created_at")?,
        updated_at: text(row, "updated_at")?,
        deleted_at: optional_text(row, "deleted_at")?,
        version: row.try_get("version")?,
    })
}

fn history_from_row(row: &Row) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        id: row.try_get("id")?,
        twin_id: parsed(row, "twin_id")?,
        action: text(row, "action")?,
        from_status: parsed_optional(row, "from_status")?,
        to_status: parsed_optional(row, "to_status")?,
        actor: text(row, "actor")?,
        reason: optional_text(row, "reason")?,
        run_id: parsed_optional(row, "run_id")?,
        at: text(row, "at")?,
    })
}

const RUN_COLUMNS: &str =
    "id, twin_id, kind, status, stage, progress, actor, created_at, start_time, \
     end_time, exit_code, error, message, outputs, result, step_index, step_name, step_dir, \
     step_started_at, monitor_pid, monitor_start, spool_offset, applies_plan, owner_replica, \
     cancel_requested, log_level";

fn run_from_row(row: &Row) -> StoreResult<Run> {
    let progress: i32 = row.try_get("progress")?;
    let step = match row.try_get::<_, Option<i32>>("step_index")? {
        None => None,
        Some(index) => {
            let monitor = match (
                row.try_get::<_, Option<i32>>("monitor_pid")?,
                row.try_get::<_, Option<i64>>("monitor_start")?,
            ) {
                (Some(pid), Some(start)) => Some(MonitorId {
                    pid,
                    start_ticks: u64::try_from(start).map_err(corrupt)?,
                }),
                _ => None,
            };
            Some(RunStep {
                index: u32::try_from(index).map_err(corrupt)?,
                name: optional_text(row, "step_name")?.unwrap_or_default(),
                dir: optional_text(row, "step_dir")?.unwrap_or_default(),
                started_at: optional_text(row, "step_started_at")?.unwrap_or_default(),
                monitor,
                spool_offset: u64::try_from(row.try_get::<_, i64>("spool_offset")?)
                    .map_err(corrupt)?,
            })
        }
    };
    Ok(Run {
        id: parsed(row, "id")?,
        twin_id: parsed(row, "twin_id")?,
        kind: parsed(row, "kind")?,
        status: parsed(row, "status")?,
        stage: parsed_optional(row, "stage")?,
        progress: u8::try_from(progress.clamp(0, 100)).unwrap_or(0),
        actor: text(row, "actor")?,
        created_at: text(row, "created_at")?,
        start_time: optional_text(row, "start_time")?,
        end_time: optional_text(row, "end_time")?,
        exit_code: row.try_get("exit_code")?,
        error: optional_text(row, "error")?,
        message: optional_text(row, "message")?,
        outputs: optional_json(row, "outputs")?,
        result: optional_json(row, "result")?,
        step,
        applies_plan: parsed_optional(row, "applies_plan")?,
        owner: parsed_optional(row, "owner_replica")?,
        cancel_requested: row.try_get("cancel_requested")?,
        log_level: parsed_optional(row, "log_level")?,
    })
}

const STATE_COLUMNS: &str =
    "twin_id, version, serial, lineage, md5, size, resource_count, run_id, actor, created_at";

fn state_from_row(row: &Row, with_ciphertext: bool) -> StoreResult<StateVersion> {
    Ok(StateVersion {
        twin_id: parsed(row, "twin_id")?,
        version: row.try_get("version")?,
        serial: row.try_get("serial")?,
        lineage: text(row, "lineage")?,
        md5: text(row, "md5")?,
        size: row.try_get("size")?,
        resource_count: row.try_get("resource_count")?,
        run_id: parsed_optional(row, "run_id")?,
        actor: text(row, "actor")?,
        created_at: text(row, "created_at")?,
        ciphertext: if with_ciphertext {
            row.try_get("ciphertext")?
        } else {
            Vec::new()
        },
    })
}

fn lock_from_row(row: &Row) -> StoreResult<StateLock> {
    Ok(StateLock {
        lock_id: text(row, "lock_id")?,
        info: text(row, "info")?,
        run_id: parsed_optional(row, "run_id")?,
        created_at: text(row, "created_at")?,
    })
}

fn select_twin(
    client: &mut impl postgres::GenericClient,
    id: &TwinId,
) -> StoreResult<Option<Twin>> {
    let sql = format!("SELECT {TWIN_COLUMNS} FROM twins WHERE id = $1");
    let Some(row) = client.query_opt(sql.as_str(), &[&id.as_str()])? else {
        return Ok(None);
    };
    let mut twin = twin_from_row(&row)?;
    let links = client.query(
        "SELECT credential_id FROM twin_credentials WHERE twin_id = $1 ORDER BY position",
        &[&id.as_str()],
    )?;
    for row in &links {
        twin.credential_ids.push(parsed(row, "credential_id")?);
    }
    Ok(Some(twin))
}

/// Writes the twin's credential list (replacing the one it had); a credential that is gone
/// meanwhile is NotFound.
fn write_twin_credentials(
    tx: &mut Transaction<'_>,
    twin: &TwinId,
    credentials: &[CredentialId],
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM twin_credentials WHERE twin_id = $1",
        &[&twin.as_str()],
    )?;
    for (position, credential) in credentials.iter().enumerate() {
        let position = i32::try_from(position).map_err(corrupt)?;
        tx.execute(
            "INSERT INTO twin_credentials (twin_id, credential_id, position) VALUES ($1, $2, $3)",
            &[&twin.as_str(), &credential.as_str(), &position],
        )
        .map_err(|err| {
            if err.code() == Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                StoreError::NotFound(format!("credential {credential}"))
            } else {
                err.into()
            }
        })?;
    }
    Ok(())
}

/// Outbox messages, in the caller's transaction (the change they report).
fn insert_messages(tx: &mut Transaction<'_>, messages: &[OutboxMessage]) -> StoreResult<()> {
    for message in messages {
        tx.execute(
            "INSERT INTO webhook_messages (id, event_type, owner, twin_id, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &message.id.as_str(),
                &message.event_type.as_str(),
                &message.owner,
                &message.twin_id.as_ref().map(TwinId::as_str),
                &message.body,
                &message.created_at,
            ],
        )?;
    }
    Ok(())
}

/// Inserts a state version if the twin's newest is still `expected_previous`, making
/// `twin_outputs` the twin's, in the caller's transaction; false when another write came first.
fn write_state_version(
    tx: &mut Transaction<'_>,
    v: &StateVersion,
    expected_previous: i64,
    twin_outputs: Option<&serde_json::Value>,
) -> StoreResult<bool> {
    let newest: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) AS newest FROM state_versions WHERE twin_id = $1",
            &[&v.twin_id.as_str()],
        )?
        .try_get("newest")?;
    if newest != expected_previous {
        return Ok(false);
    }
    // Two writers expecting the same newest version race for the same primary key: the one
    // that loses inserts nothing and is told so.
    let inserted = tx.execute(
        "INSERT INTO state_versions (twin_id, version, serial, lineage, md5, size, resource_count, run_id, actor, created_at, ciphertext)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (twin_id, version) DO NOTHING",
        &[
            &v.twin_id.as_str(),
            &v.version,
            &v.serial,
            &v.lineage,
            &v.md5,
            &v.size,
            &v.resource_count,
            &v.run_id.as_ref().map(RunId::as_str),
            &v.actor,
            &v.created_at,
            &v.ciphertext,
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE twins SET terraform_outputs = $2 WHERE id = $1",
        &[&v.twin_id.as_str(), &twin_outputs.map(to_json).transpose()?],
    )?;
    Ok(true)
}

fn select_run(client: &mut impl postgres::GenericClient, id: &RunId) -> StoreResult<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    client
        .query_opt(sql.as_str(), &[&id.as_str()])?
        .map(|row| run_from_row(&row))
        .transpose()
}

fn runs_of(rows: Vec<Row>) -> StoreResult<Vec<Run>> {
    rows.iter().map(run_from_row).collect()
}

fn insert_history(
    tx: &mut Transaction<'_>,
    id: &TwinId,
    row: &NewHistory,
    at: &str,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO twin_history (twin_id, action, from_status, to_status, actor, reason, run_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id.as_str(),
            &row.action,
            &row.from.map(DeploymentStatus::as_str),
            &row.to.map(DeploymentStatus::as_str),
            &row.actor,
            &row.reason,
            &row.run_id.as_ref().map(RunId::as_str),
            &at,
        ],
    )?;
    Ok(())
}

/// The twin's new row and its history, if the twin is still at the expected version.
fn write_twin_row(tx: &mut Transaction<'_>, change: &TwinChange) -> StoreResult<Option<Twin>> {
    let written = tx.execute(
        "UPDATE twins SET name = $3, files = $4, variables = $5, deployment_status = $6,
                is_locked = $7, locked_by_run = $8, deleted_at = $9, last_deployed_at = $10,
                updated_at = $11, secret_variable_names = $12, secret_variables = $13,
                version = version + 1
         WHERE id = $1 AND version = $2",
        &[
            &change.id.as_str(),
            &change.expected_version,
            &change.name.as_str(),
            &to_json(&change.files)?,
            &to_json(&change.variables)?,
            &change.status.as_str(),
            &change.locked_by.is_some(),
            &change.locked_by.as_ref().map(RunId::as_str),
            &change.deleted_at,
            &change.last_deployed_at,
            &change.updated_at,
            &to_json(&change.secret_variables.names)?,
            &change.secret_variables.sealed,
        ],
    )?;
    if written == 0 {
        return Ok(None);
    }
    if let Some(credentials) = &change.credential_ids {
        write_twin_credentials(tx, &change.id, credentials)?;
    }
    for row in &change.history {
        insert_history(tx, &change.id, row, &change.updated_at)?;
    }
    insert_messages(tx, &change.messages)?;
    select_twin(tx, &change.id)
}

/// The run's end and its twin's new row; false when the twin has changed since the end was
/// decided.
fn finish_run(tx: &mut Transaction<'_>, finish: &RunFinish) -> StoreResult<bool> {
    if let Some(change) = &finish.twin {
        if write_twin_row(tx, change)?.is_none() {
            return Ok(false);
        }
    }
    let status = finish.outcome.run_status();
    tx.execute(
        "UPDATE runs SET status = $2, exit_code = $3, error = $4, message = $5, outputs = $6,
                end_time = $7, result = $8, monitor_pid = NULL, monitor_start = NULL,
                secrets = NULL, progress = CASE WHEN $9 THEN 100 ELSE progress END
         WHERE id = $1",
        &[
            &finish.run_id.as_str(),
            &status.as_str(),
            &finish.exit_code,
            &finish.error,
            &finish.message,
            &finish.outputs.as_ref().map(to_json).transpose()?,
            &finish.ended_at,
            &finish.result.as_ref().map(to_json).transpose()?,
            &(status == RunStatus::Completed),
        ],
    )?;
    for credential in &finish.delete_credentials {
        tx.execute(
            "DELETE FROM twin_credentials WHERE credential_id = $1",
            &[&credential.as_str()],
        )?;
        tx.execute(
            "DELETE FROM credentials WHERE id = $1",
            &[&credential.as_str()],
        )?;
    }
    insert_messages(tx, &finish.messages)?;
    Ok(true)
}

impl Store for PostgresStore {
    fn create_twin(&self, twin: NewTwin, history: &NewHistory) -> StoreResult<Twin> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let now = clock::now();
            tx.execute(
                "INSERT INTO twins (id, owner, name, provider, files, variables, created_at,
                                    updated_at, secret_variable_names, secret_variables)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
                &[
                    &twin.id.as_str(),
                    &twin.owner,
                    &twin.name.as_str(),
                    &twin.provider.as_str(),
                    &to_json(&twin.files)?,
                    &to_json(&twin.variables)?,
                    &now,
                    &to_json(&twin.secret_variables.names)?,
                    &twin.secret_variables.sealed,
                ],
            )?;
            write_twin_credentials(&mut tx, &twin.id, &twin.credential_ids)?;
            insert_history(&mut tx, &twin.id, history, &now)?;
            let created =
                select_twin(&mut tx, &twin.id)?.ok_or_else(|| corrupt("twin vanished"))?;
            tx.commit()?;
            Ok(created)
        })
    }

    fn list_twins(&self, principal: &Principal, include_deleted: bool) -> StoreResult<Vec<Twin>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {TWIN_COLUMNS} FROM twins
             WHERE ($1 OR owner = $2) AND ($3 OR deleted_at IS NULL)
             ORDER BY created_at, id"
            );
            let mut conn = self.conn()?;
            let rows = conn.query(
                sql.as_str(),
                &[&principal.is_admin, &principal.owner, &include_deleted],
            )?;
            let mut twins = rows
                .iter()
                .map(twin_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            let links = conn.query(
                "SELECT tc.twin_id, tc.credential_id FROM twin_credentials tc
                 JOIN twins t ON t.id = tc.twin_id
                 WHERE ($1 OR t.owner = $2) ORDER BY tc.twin_id, tc.position",
                &[&principal.is_admin, &principal.owner],
            )?;
            let mut by_twin: std::collections::HashMap<String, Vec<CredentialId>> =
                std::collections::HashMap::new();
            for row in &links {
                by_twin
                    .entry(text(row, "twin_id")?)
                    .or_default()
                    .push(parsed(row, "credential_id")?);
            }
            for twin in &mut twins {
                if let Some(ids) = by_twin.remove(twin.id.as_str()) {
                    twin.credential_ids = ids;
                }
            }
            Ok(twins)
        })
    }

    fn get_twin(&self, id: &TwinId) -> StoreResult<Option<Twin>> {
        self.blocking(|| select_twin(&mut *self.conn()?, id))
    }

    fn write_twin(&self, change: &TwinChange) -> StoreResult<Option<Twin>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let written = write_twin_row(&mut tx, change)?;
            if written.is_some() {
                tx.commit()?;
            }
            Ok(written)
        })
    }

    fn history(&self, id: &TwinId) -> StoreResult<Vec<HistoryEntry>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id, twin_id, action, from_status, to_status, actor, reason, run_id, at
             FROM twin_history WHERE twin_id = $1 ORDER BY id",
                &[&id.as_str()],
            )?;
            rows.iter().map(history_from_row).collect()
        })
    }

    fn insert_token(
        &self,
        token_hash: &str,
        principal: &Principal,
        label: Option<&str>,
    ) -> StoreResult<()> {
        self.blocking(|| {
        self.conn()?.execute(
            "INSERT INTO api_tokens (token_hash, owner, is_admin, label, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&token_hash, &principal.owner, &principal.is_admin, &label, &clock::now()],
        )?;
        Ok(())
        })
    }

    fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>> {
        self.blocking(|| {
            let row = self.conn()?.query_opt(
                "SELECT owner, is_admin FROM api_tokens WHERE token_hash = $1",
                &[&token_hash],
            )?;
            row.map(|row| {
                Ok(Principal {
                    owner: text(&row, "owner")?,
                    is_admin: row.try_get("is_admin")?,
                })
            })
            .transpose()
        })
    }

    fn has_admin_token(&self) -> StoreResult<bool> {
        self.blocking(|| {
            let row = self.conn()?.query_one(
                "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE is_admin) AS found",
                &[],
            )?;
            Ok(row.try_get("found")?)
        })
    }

    fn insert_session(
        &self,
        session_hash: &str,
        principal: &Principal,
        expires_at: &str,
    ) -> StoreResult<()> {
        self.blocking(|| {
        let mut conn = self.conn()?;
        let now = clock::now();
        conn.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now])?;
        conn.execute(
            "INSERT INTO sessions (session_hash, owner, is_admin, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&session_hash, &principal.owner, &principal.is_admin, &now, &expires_at],
        )?;
        Ok(())
        })
    }

    fn find_session(&self, session_hash: &str, now: &str) -> StoreResult<Option<Principal>> {
        self.blocking(|| {
            let row = self.conn()?.query_opt(
                "SELECT owner, is_admin FROM sessions WHERE session_hash = $1 AND expires_at > $2",
                &[&session_hash, &now],
            )?;
            row.map(|row| {
                Ok(Principal {
                    owner: text(&row, "owner")?,
                    is_admin: row.try_get("is_admin")?,
                })
            })
            .transpose()
        })
    }

    fn delete_session(&self, session_hash: &str) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "DELETE FROM sessions WHERE session_hash = $1",
                &[&session_hash],
            )?;
            Ok(())
        })
    }

    fn start_run(
        &self,
        run: NewRun,
        twin: Option<&TwinChange>,
    ) -> StoreResult<Option<(Run, Twin)>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let twin = match twin {
                Some(change) => match write_twin_row(&mut tx, change)? {
                    Some(twin) => twin,
                    None => return Ok(None),
                },
                None => select_twin(&mut tx, &run.twin_id)?
                    .ok_or_else(|| StoreError::NotFound(format!("twin {}", run.twin_id)))?,
            };
            let now = clock::now();
            tx.execute(
                "INSERT INTO runs (id, twin_id, kind, status, actor, created_at, owner_replica,
                                   secrets, log_level)
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8)",
                &[
                    &run.id.as_str(),
                    &run.twin_id.as_str(),
                    &run.kind.as_str(),
                    &run.actor,
                    &now,
                    &run.owner.as_ref().map(ReplicaId::as_str),
                    &run.secrets,
                    &run.log_level.map(LogLevel::as_str),
                ],
            )?;
            for credential in &run.credentials {
                tx.execute(
                    "INSERT INTO run_credentials (run_id, credential_id, delete_after_run)
                     VALUES ($1, $2, $3)",
                    &[
                        &run.id.as_str(),
                        &credential.id.as_str(),
                        &credential.delete_after_run,
                    ],
                )?;
                tx.execute(
                    "UPDATE credentials SET last_used_at = $2 WHERE id = $1",
                    &[&credential.id.as_str(), &now],
                )?;
            }
            if run.owner.is_none() {
                self.notify(&mut tx, "q")?;
            }
            let stored = select_run(&mut tx, &run.id)?.ok_or_else(|| corrupt("run vanished"))?;
            tx.commit()?;
            Ok(Some((stored, twin)))
        })
    }

    fn latest_finished_run(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = $1 AND kind = $2
               AND status IN ('completed', 'failed', 'cancelled')
             ORDER BY created_at DESC, id DESC LIMIT 1"
            );
            self.conn()?
                .query_opt(sql.as_str(), &[&twin_id.as_str(), &kind.as_str()])?
                .map(|row| run_from_row(&row))
                .transpose()
        })
    }

    fn insert_plan(&self, plan: &StoredPlan) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
            "INSERT INTO plans (run_id, twin_id, config_hash, state_serial, created_at, ciphertext)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id) DO UPDATE SET config_hash = excluded.config_hash,
                 state_serial = excluded.state_serial, ciphertext = excluded.ciphertext",
            &[
                &plan.run_id.as_str(),
                &plan.twin_id.as_str(),
                &plan.config_hash,
                &plan.state_serial,
                &plan.created_at,
                &plan.ciphertext,
            ],
        )?;
            Ok(())
        })
    }

    fn latest_plan(&self, twin_id: &TwinId) -> StoreResult<Option<StoredPlan>> {
        self.blocking(|| {
            let row = self.conn()?.query_opt(
            "SELECT run_id, twin_id, config_hash, state_serial, created_at, applied_by, ciphertext
             FROM plans WHERE twin_id = $1 ORDER BY created_at DESC, run_id DESC LIMIT 1",
            &[&twin_id.as_str()],
        )?;
            row.map(|row| {
                Ok(StoredPlan {
                    run_id: parsed(&row, "run_id")?,
                    twin_id: parsed(&row, "twin_id")?,
                    config_hash: text(&row, "config_hash")?,
                    state_serial: row.try_get("state_serial")?,
                    created_at: text(&row, "created_at")?,
                    applied_by: parsed_optional(&row, "applied_by")?,
                    ciphertext: row.try_get("ciphertext")?,
                })
            })
            .transpose()
        })
    }

    fn mark_plan_applied(&self, plan_run: &RunId, by: &RunId) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "UPDATE plans SET applied_by = $2 WHERE run_id = $1",
                &[&plan_run.as_str(), &by.as_str()],
            )?;
            Ok(())
        })
    }

    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>> {
        self.blocking(|| select_run(&mut *self.conn()?, id))
    }

    fn list_runs(&self, twin_id: &TwinId) -> StoreResult<Vec<Run>> {
        self.blocking(|| {
            let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = $1 ORDER BY created_at DESC, id DESC"
        );
            runs_of(self.conn()?.query(sql.as_str(), &[&twin_id.as_str()])?)
        })
    }

    fn mark_run_processing(
        &self,
        id: &RunId,
        started_at: &str,
        messages: &[OutboxMessage],
    ) -> StoreResult<()> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE runs SET status = 'processing', start_time = $2
                 WHERE id = $1 AND status = 'pending'",
                &[&id.as_str(), &started_at],
            )?;
            if changed == 1 {
                insert_messages(&mut tx, messages)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        self.blocking(|| {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('pending', 'processing') ORDER BY created_at"
        );
        runs_of(self.conn()?.query(sql.as_str(), &[])?)
        })
    }

    fn move_run(
        &self,
        id: &RunId,
        from: Option<&ReplicaId>,
        to: Option<&ReplicaId>,
        stale_after: Option<f64>,
    ) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let moved = tx.execute(
                "UPDATE runs SET owner_replica = $3
             WHERE id = $1 AND owner_replica IS NOT DISTINCT FROM $2
               AND status IN ('pending', 'processing')
               AND ($4::FLOAT8 IS NULL OR NOT EXISTS (
                   SELECT 1 FROM replicas WHERE id = $2
                      AND heartbeat_at > now() - make_interval(secs => $4)))",
                &[
                    &id.as_str(),
                    &from.map(ReplicaId::as_str),
                    &to.map(ReplicaId::as_str),
                    &stale_after,
                ],
            )?;
            if moved == 1 && to.is_none() {
                self.notify(&mut tx, "q")?;
            }
            tx.commit()?;
            Ok(moved == 1)
        })
    }

    fn claim_queued_run(&self, replica: &ReplicaId) -> StoreResult<Option<Run>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            // Gateways claiming at once skip each other's rows: each gets a different run.
            let sql = format!(
                "UPDATE runs SET owner_replica = $1
             WHERE id = (SELECT id FROM runs WHERE status = 'pending' AND owner_replica IS NULL
                         ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING {RUN_COLUMNS}"
            );
            conn.query_opt(sql.as_str(), &[&replica.as_str()])?
                .map(|row| run_from_row(&row))
                .transpose()
        })
    }

    fn queued_runs(&self) -> StoreResult<Vec<RunId>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id FROM runs WHERE status = 'pending' AND owner_replica IS NULL
             ORDER BY created_at, id",
                &[],
            )?;
            rows.iter().map(|row| parsed(row, "id")).collect()
        })
    }

    fn request_cancel(&self, id: &RunId) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let marked = tx.execute(
                "UPDATE runs SET cancel_requested = TRUE
             WHERE id = $1 AND status IN ('pending', 'processing')",
                &[&id.as_str()],
            )?;
            if marked == 1 {
                self.notify(&mut tx, &format!("c {id}"))?;
            }
            tx.commit()?;
            Ok(marked == 1)
        })
    }

    fn heartbeat(&self, replica: &ReplicaId, address: &str) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
            "INSERT INTO replicas (id, address, started_at, heartbeat_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, heartbeat_at = now()",
            &[&replica.as_str(), &address, &clock::now()],
        )?;
            Ok(())
        })
    }

    fn replicas(&self) -> StoreResult<Vec<ReplicaBeat>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id, address, started_at,
                    EXTRACT(EPOCH FROM now() - heartbeat_at)::FLOAT8 AS age
             FROM replicas ORDER BY started_at, id",
                &[],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(ReplicaBeat {
                        id: parsed(row, "id")?,
                        address: text(row, "address")?,
                        started_at: text(row, "started_at")?,
                        seconds_since_heartbeat: row.try_get("age")?,
                    })
                })
                .collect()
        })
    }

    fn listen(&self, handler: NoticeHandler) -> StoreResult<bool> {
        self.blocking(|| {
            let listener = Listener {
                config: self.config.clone(),
                origin: self.origin.clone(),
                closed: Arc::clone(&self.closed),
                handler,
            };
            // Connected before it returns, so nothing written after start goes unheard.
            let client = listener.connect()?;
            std::thread::Builder::new()
                .name("terrastream-listen".into())
                .spawn(move || listener.run(client))
                .map_err(|e| StoreError::Postgres(format!("cannot start the listener: {e}")))?;
            Ok(true)
        })
    }

    fn begin_step(&self, id: &RunId, step: &RunStep) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
            "UPDATE runs SET step_index = $2, step_name = $3, step_dir = $4, step_started_at = $5,
                    monitor_pid = NULL, monitor_start = NULL, spool_offset = $6
             WHERE id = $1",
            &[
                &id.as_str(),
                &i32::try_from(step.index).map_err(corrupt)?,
                &step.name,
                &step.dir,
                &step.started_at,
                &to_i64(step.spool_offset)?,
            ],
        )?;
            Ok(())
        })
    }

    fn record_monitor(&self, id: &RunId, step: u32, monitor: MonitorId) -> StoreResult<()> {
        self.blocking(|| {
        self.conn()?.execute(
            "UPDATE runs SET monitor_pid = $3, monitor_start = $4 WHERE id = $1 AND step_index = $2",
            &[
                &id.as_str(),
                &i32::try_from(step).map_err(corrupt)?,
                &monitor.pid,
                &to_i64(monitor.start_ticks)?,
            ],
        )?;
        Ok(())
        })
    }

    fn set_applies_plan(&self, id: &RunId, plan: &RunId) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "UPDATE runs SET applies_plan = $2 WHERE id = $1",
                &[&id.as_str(), &plan.as_str()],
            )?;
            Ok(())
        })
    }

    fn append_events(
        &self,
        events: &[NewEvent],
        marks: &[(RunId, SpoolMark)],
        progress: &[(RunId, RunProgress)],
        finish: Option<&RunFinish>,
    ) -> StoreResult<Appended> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Each run's numbers at once, its row locked until commit so two writers of one run
            // take consecutive ranges; none for a run that has ended.
            let mut next: Vec<(&RunId, u64)> = Vec::new();
            let mut ended = Vec::new();
            for (run_id, count) in counts(events) {
                let count = i64::try_from(count).map_err(corrupt)?;
                let row = tx.query_opt(
                    "UPDATE runs SET last_seq = last_seq + $2
                 WHERE id = $1 AND status IN ('pending', 'processing') RETURNING last_seq",
                    &[&run_id.as_str(), &count],
                )?;
                match row {
                    Some(row) => {
                        let last: i64 = row.try_get("last_seq")?;
                        let first = u64::try_from(last - count + 1).map_err(corrupt)?;
                        next.push((run_id, first));
                    }
                    None => ended.push(run_id.clone()),
                }
            }
            let mut stored = Vec::with_capacity(events.len());
            for event in events {
                let Some((_, seq)) = next.iter_mut().find(|(run, _)| **run == event.run_id) else {
                    continue;
                };
                stored.push(StoredEvent {
                    run_id: event.run_id.clone(),
                    seq: *seq,
                    event: event.event.clone(),
                    data: event.data.clone(),
                });
                *seq += 1;
            }
            if !stored.is_empty() {
                // The whole batch in one statement (one round trip, however many events).
                let runs: Vec<&str> = stored.iter().map(|e| e.run_id.as_str()).collect();
                let seqs = stored
                    .iter()
                    .map(|e| to_i64(e.seq))
                    .collect::<StoreResult<Vec<i64>>>()?;
                let names: Vec<&str> = stored.iter().map(|e| e.event.as_str()).collect();
                let data: Vec<&str> = stored.iter().map(|e| e.data.as_str()).collect();
                tx.execute(
                    "INSERT INTO run_events (run_id, seq, event, data)
                     SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[])",
                    &[&runs, &seqs, &names, &data],
                )?;
            }
            for (run_id, at) in marks {
                tx.execute(
                    "UPDATE runs SET spool_offset = $3 WHERE id = $1 AND step_index = $2",
                    &[
                        &run_id.as_str(),
                        &i32::try_from(at.step).map_err(corrupt)?,
                        &to_i64(at.offset)?,
                    ],
                )?;
            }
            for (run_id, update) in progress {
                if let Some(stage) = update.stage {
                    tx.execute(
                        "UPDATE runs SET stage = $2 WHERE id = $1",
                        &[&run_id.as_str(), &stage.as_str()],
                    )?;
                }
                if let Some(percent) = update.percent {
                    tx.execute(
                        "UPDATE runs SET progress = $2 WHERE id = $1",
                        &[&run_id.as_str(), &i32::from(percent.min(100))],
                    )?;
                }
            }
            if let Some(finish) = finish.filter(|f| !ended.contains(&f.run_id)) {
                if !finish_run(&mut tx, finish)? {
                    return Ok(Appended::TwinChanged);
                }
            }
            // Delivered to listeners when the transaction commits, never before.
            for (run_id, first) in counts_first(&stored) {
                self.notify(&mut tx, &format!("e {run_id} {first}"))?;
            }
            tx.commit()?;
            Ok(Appended::Stored {
                events: stored,
                ended,
            })
        })
    }

    fn insert_grant(&self, secret_hash: &str, grant: &RunGrant) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "INSERT INTO run_grants (secret_hash, run_id, twin_id, owner, created_at)
             VALUES ($1, $2, $3, $4, $5)",
                &[
                    &secret_hash,
                    &grant.run_id.as_str(),
                    &grant.twin_id.as_str(),
                    &grant.owner,
                    &clock::now(),
                ],
            )?;
            Ok(())
        })
    }

    fn find_grant(&self, secret_hash: &str) -> StoreResult<Option<RunGrant>> {
        self.blocking(|| {
            let row = self.conn()?.query_opt(
                "SELECT run_id, twin_id, owner FROM run_grants WHERE secret_hash = $1",
                &[&secret_hash],
            )?;
            row.map(|row| {
                Ok(RunGrant {
                    run_id: parsed(&row, "run_id")?,
                    twin_id: parsed(&row, "twin_id")?,
                    owner: text(&row, "owner")?,
                })
            })
            .transpose()
        })
    }

    fn revoke_grants(&self, run: &RunId) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?
                .execute("DELETE FROM run_grants WHERE run_id = $1", &[&run.as_str()])?;
            Ok(())
        })
    }

    fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.blocking(|| {
        let rows = self.conn()?.query(
            "SELECT seq, event, data FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                &run_id.as_str(),
                &i64::try_from(after).unwrap_or(i64::MAX),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    run_id: run_id.clone(),
                    seq: u64::try_from(row.try_get::<_, i64>("seq")?).map_err(corrupt)?,
                    event: text(row, "event")?,
                    data: text(row, "data")?,
                })
            })
            .collect()
        })
    }

    fn last_event_seq(&self, run_id: &RunId) -> StoreResult<u64> {
        self.blocking(|| {
            let row = self.conn()?.query_one(
                "SELECT COALESCE(MAX(seq), 0) AS last FROM run_events WHERE run_id = $1",
                &[&run_id.as_str()],
            )?;
            u64::try_from(row.try_get::<_, i64>("last")?).map_err(corrupt)
        })
    }

    fn current_state(&self, twin_id: &TwinId) -> StoreResult<Option<StateVersion>> {
        self.blocking(|| {
        let sql = format!(
            "SELECT {STATE_COLUMNS}, ciphertext FROM state_versions WHERE twin_id = $1 ORDER BY version DESC LIMIT 1"
        );
        self.conn()?
            .query_opt(sql.as_str(), &[&twin_id.as_str()])?
            .map(|row| state_from_row(&row, true))
            .transpose()
        })
    }

    fn state_version(&self, twin_id: &TwinId, version: i64) -> StoreResult<Option<StateVersion>> {
        self.blocking(|| {
        let sql = format!(
            "SELECT {STATE_COLUMNS}, ciphertext FROM state_versions WHERE twin_id = $1 AND version = $2"
        );
        self.conn()?
            .query_opt(sql.as_str(), &[&twin_id.as_str(), &version])?
            .map(|row| state_from_row(&row, true))
            .transpose()
        })
    }

    fn list_state_versions(&self, twin_id: &TwinId) -> StoreResult<Vec<StateVersion>> {
        self.blocking(|| {
            let sql = format!(
            "SELECT {STATE_COLUMNS} FROM state_versions WHERE twin_id = $1 ORDER BY version DESC"
        );
            let rows = self.conn()?.query(sql.as_str(), &[&twin_id.as_str()])?;
            rows.iter().map(|row| state_from_row(row, false)).collect()
        })
    }

    fn insert_state_version(
        &self,
        v: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
    ) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            if !write_state_version(&mut tx, v, expected_previous, twin_outputs)? {
                return Ok(false);
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn state_lock(&self, twin_id: &TwinId) -> StoreResult<Option<StateLock>> {
        self.blocking(|| {
            self.conn()?
                .query_opt(
                    "SELECT lock_id, info, run_id, created_at FROM state_locks WHERE twin_id = $1",
                    &[&twin_id.as_str()],
                )?
                .map(|row| lock_from_row(&row))
                .transpose()
        })
    }

    fn acquire_state_lock(
        &self,
        twin_id: &TwinId,
        lock: &StateLock,
    ) -> StoreResult<Result<(), StateLock>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            loop {
                // A competing insert waits here for the holder's transaction to end.
                let inserted = conn.execute(
                    "INSERT INTO state_locks (twin_id, lock_id, info, run_id, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (twin_id) DO NOTHING",
                    &[
                        &twin_id.as_str(),
                        &lock.lock_id,
                        &lock.info,
                        &lock.run_id.as_ref().map(RunId::as_str),
                        &lock.created_at,
                    ],
                )?;
                if inserted == 1 {
                    return Ok(Ok(()));
                }
                let holder = conn
                .query_opt(
                    "SELECT lock_id, info, run_id, created_at FROM state_locks WHERE twin_id = $1",
                    &[&twin_id.as_str()],
                )?
                .map(|row| lock_from_row(&row))
                .transpose()?;
                match holder {
                    Some(holder) if holder.lock_id == lock.lock_id => return Ok(Ok(())),
                    Some(holder) => return Ok(Err(holder)),
                    // Released between the two statements: try again.
                    None => continue,
                }
            }
        })
    }

    fn release_state_lock(
        &self,
        twin_id: &TwinId,
        lock_id: Option<&str>,
        history: Option<&NewHistory>,
    ) -> StoreResult<Result<Option<StateLock>, StateLock>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let released = tx
            .query_opt(
                "DELETE FROM state_locks WHERE twin_id = $1 AND ($2::TEXT IS NULL OR lock_id = $2)
                 RETURNING lock_id, info, run_id, created_at",
                &[&twin_id.as_str(), &lock_id],
            )?
            .map(|row| lock_from_row(&row))
            .transpose()?;
            let Some(released) = released else {
                let holder = tx
                .query_opt(
                    "SELECT lock_id, info, run_id, created_at FROM state_locks WHERE twin_id = $1",
                    &[&twin_id.as_str()],
                )?
                .map(|row| lock_from_row(&row))
                .transpose()?;
                return Ok(match holder {
                    Some(holder) => Err(holder),
                    None => Ok(None),
                });
            };
            if let Some(row) = history {
                insert_history(&mut tx, twin_id, row, &clock::now())?;
            }
            tx.commit()?;
            Ok(Ok(Some(released)))
        })
    }

    fn meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.blocking(|| {
            let row = self
                .conn()?
                .query_opt("SELECT value FROM gateway_meta WHERE key = $1", &[&key])?;
            row.map(|row| Ok(row.try_get("value")?)).transpose()
        })
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "INSERT INTO gateway_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    fn insert_meta(&self, key: &str, value: &[u8]) -> StoreResult<bool> {
        self.blocking(|| {
            let inserted = self.conn()?.execute(
            "INSERT INTO gateway_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )?;
            Ok(inserted == 1)
        })
    }

    fn ping(&self) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.query_one("SELECT 1", &[])?;
            Ok(())
        })
    }

    fn list_visible_runs(
        &self,
        principal: &Principal,
        statuses: &[RunStatus],
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<(Run, String)>> {
        self.blocking(|| {
            let columns = RUN_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c} AS {c}", c = c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {columns}, t.name AS twin_name FROM runs r JOIN twins t ON t.id = r.twin_id
             WHERE ($1 OR t.owner = $2)
               AND (cardinality($3::TEXT[]) = 0 OR r.status = ANY($3))
               AND ($4::TEXT IS NULL OR (r.created_at, r.id) <
                    (SELECT b.created_at, b.id FROM runs b WHERE b.id = $4))
             ORDER BY r.created_at DESC, r.id DESC
             LIMIT $5"
            );
            let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            let rows = self.conn()?.query(
                sql.as_str(),
                &[
                    &principal.is_admin,
                    &principal.owner,
                    &statuses,
                    &before.map(RunId::as_str),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?;
            rows.iter()
                .map(|row| Ok((run_from_row(row)?, text(row, "twin_name")?)))
                .collect()
        })
    }

    fn list_runs_page(
        &self,
        twin_id: &TwinId,
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = $1
               AND ($2::TEXT IS NULL OR (created_at, id) <
                    (SELECT b.created_at, b.id FROM runs b WHERE b.id = $2))
             ORDER BY created_at DESC, id DESC LIMIT $3"
            );
            runs_of(self.conn()?.query(
                sql.as_str(),
                &[
                    &twin_id.as_str(),
                    &before.map(RunId::as_str),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?)
        })
    }

    fn history_page(
        &self,
        id: &TwinId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<HistoryEntry>> {
        self.blocking(|| {
        let mut conn = self.conn()?;
        if let Some(before) = before {
            let known: bool = conn
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM twin_history WHERE twin_id = $1 AND id = $2) AS known",
                    &[&id.as_str(), &before],
                )?
                .try_get("known")?;
            if !known {
                return Err(StoreError::NotFound(format!(
                    "history entry {before} of twin {id}"
                )));
            }
        }
        let rows = conn.query(
            "SELECT id, twin_id, action, from_status, to_status, actor, reason, run_id, at
             FROM twin_history WHERE twin_id = $1 AND ($2::BIGINT IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
            &[
                &id.as_str(),
                &before,
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        rows.iter().map(history_from_row).collect()
        })
    }

    fn insert_credential(&self, stored: &StoredCredential) -> StoreResult<()> {
        self.blocking(|| {
            let c = &stored.credential;
            self.conn()?.execute(
                "INSERT INTO credentials (id, owner, name, provider, env_keys, sealed_env,
                                          expires_at, delete_after_run, created_at, updated_at,
                                          last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &c.id.as_str(),
                    &c.owner,
                    &c.name.as_str(),
                    &c.provider.as_str(),
                    &to_json(&c.env_keys)?,
                    &stored.sealed_env,
                    &c.expires_at,
                    &c.delete_after_run,
                    &c.created_at,
                    &c.updated_at,
                    &c.last_used_at,
                ],
            )?;
            Ok(())
        })
    }

    fn get_credential(&self, id: &CredentialId) -> StoreResult<Option<StoredCredential>> {
        self.blocking(|| {
            let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1");
            self.conn()?
                .query_opt(sql.as_str(), &[&id.as_str()])?
                .map(|row| credential_from_row(&row))
                .transpose()
        })
    }

    fn list_credentials(&self, owner: Option<&str>) -> StoreResult<Vec<StoredCredential>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {CREDENTIAL_COLUMNS} FROM credentials
                 WHERE ($1::TEXT IS NULL OR owner = $1) ORDER BY created_at, id"
            );
            let rows = self.conn()?.query(sql.as_str(), &[&owner])?;
            rows.iter().map(credential_from_row).collect()
        })
    }

    fn update_credential(&self, stored: &StoredCredential) -> StoreResult<()> {
        self.blocking(|| {
            let c = &stored.credential;
            let changed = self.conn()?.execute(
                "UPDATE credentials SET name = $2, provider = $3, env_keys = $4, sealed_env = $5,
                        expires_at = $6, delete_after_run = $7, updated_at = $8
                 WHERE id = $1",
                &[
                    &c.id.as_str(),
                    &c.name.as_str(),
                    &c.provider.as_str(),
                    &to_json(&c.env_keys)?,
                    &stored.sealed_env,
                    &c.expires_at,
                    &c.delete_after_run,
                    &c.updated_at,
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("credential {}", c.id)));
            }
            Ok(())
        })
    }

    fn delete_credential(
        &self,
        id: &CredentialId,
        detach: bool,
    ) -> StoreResult<Result<(), Vec<TwinId>>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Locked until commit: a twin naming it meanwhile waits, then finds it gone.
            let found = tx.query_opt(
                "SELECT id FROM credentials WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("credential {id}")));
            }
            let users = tx
                .query(
                    "SELECT t.id FROM twin_credentials tc JOIN twins t ON t.id = tc.twin_id
                     WHERE tc.credential_id = $1 AND t.deleted_at IS NULL
                     ORDER BY t.created_at, t.id",
                    &[&id.as_str()],
                )?
                .iter()
                .map(|row| parsed(row, "id"))
                .collect::<StoreResult<Vec<TwinId>>>()?;
            if !users.is_empty() && !detach {
                return Ok(Err(users));
            }
            tx.execute(
                "DELETE FROM twin_credentials WHERE credential_id = $1",
                &[&id.as_str()],
            )?;
            tx.execute("DELETE FROM credentials WHERE id = $1", &[&id.as_str()])?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    fn run_secrets(&self, run_id: &RunId) -> StoreResult<Option<Vec<u8>>> {
        self.blocking(|| {
            let row = self.conn()?.query_opt(
                "SELECT secrets FROM runs WHERE id = $1",
                &[&run_id.as_str()],
            )?;
            Ok(match row {
                Some(row) => row.try_get::<_, Option<Vec<u8>>>("secrets")?,
                None => None,
            })
        })
    }

    fn run_credentials(&self, run_id: &RunId) -> StoreResult<Vec<RunCredential>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT credential_id, delete_after_run FROM run_credentials WHERE run_id = $1
                 ORDER BY credential_id",
                &[&run_id.as_str()],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(RunCredential {
                        id: parsed(row, "credential_id")?,
                        delete_after_run: row.try_get("delete_after_run")?,
                    })
                })
                .collect()
        })
    }

    fn latest_run_of_kind(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = $1 AND kind = $2
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            );
            self.conn()?
                .query_opt(sql.as_str(), &[&twin_id.as_str(), &kind.as_str()])?
                .map(|row| run_from_row(&row))
                .transpose()
        })
    }

    fn try_lead(&self, task: &str, lease: Duration) -> StoreResult<bool> {
        self.blocking(|| {
            // A compare-and-set by the database's clock: renewed by its holder, taken over by
            // anyone once it has ended; concurrent callers serialise on the row.
            let led = self.conn()?.query_opt(
                "INSERT INTO leaders (task, holder, lease_until)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (task) DO UPDATE
                    SET holder = excluded.holder, lease_until = excluded.lease_until
                    WHERE leaders.holder = excluded.holder OR leaders.lease_until < now()
                 RETURNING holder",
                &[&task, &self.origin, &lease.as_secs_f64()],
            )?;
            Ok(led.is_some())
        })
    }

    fn restore_state_version(
        &self,
        version: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
        change: &TwinChange,
    ) -> StoreResult<Restored> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // The state lock, held for the length of this transaction: a terraform locking
            // meanwhile waits for it, and one that holds the lock refuses the rollback.
            let lock_id = format!("rollback-{}", uuid::Uuid::new_v4().simple());
            let twin_id = version.twin_id.as_str();
            let taken = tx.execute(
                "INSERT INTO state_locks (twin_id, lock_id, info, run_id, created_at)
                 VALUES ($1, $2, '{}', NULL, $3) ON CONFLICT (twin_id) DO NOTHING",
                &[&twin_id, &lock_id, &clock::now()],
            )?;
            if taken == 0 {
                let holder = tx
                    .query_opt(
                        "SELECT lock_id, info, run_id, created_at FROM state_locks
                         WHERE twin_id = $1",
                        &[&twin_id],
                    )?
                    .map(|row| lock_from_row(&row))
                    .transpose()?;
                return Ok(match holder {
                    Some(holder) => Restored::StateLocked(holder),
                    None => Restored::Changed,
                });
            }
            if write_twin_row(&mut tx, change)?.is_none()
                || !write_state_version(&mut tx, version, expected_previous, twin_outputs)?
            {
                return Ok(Restored::Changed);
            }
            tx.execute(
                "DELETE FROM state_locks WHERE twin_id = $1 AND lock_id = $2",
                &[&twin_id, &lock_id],
            )?;
            tx.commit()?;
            Ok(Restored::Written)
        })
    }

    fn insert_webhook(&self, hook: &StoredWebhook) -> StoreResult<()> {
        self.blocking(|| {
            let events: Vec<&str> = hook.events.iter().map(|e| e.as_str()).collect();
            self.conn()?.execute(
                "INSERT INTO webhooks (id, owner, is_admin, url, events, description,
                                       sealed_secret, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &hook.id.as_str(),
                    &hook.owner,
                    &hook.is_admin,
                    &hook.url,
                    &to_json(&events)?,
                    &hook.description,
                    &hook.sealed_secret,
                    &hook.created_at,
                ],
            )?;
            Ok(())
        })
    }

    fn list_webhooks(&self, owner: Option<&str>) -> StoreResult<Vec<StoredWebhook>> {
        self.blocking(|| {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ($1::TEXT IS NULL OR owner = $1)
                 ORDER BY created_at, id"
            );
            let rows = self.conn()?.query(sql.as_str(), &[&owner])?;
            rows.iter().map(webhook_from_row).collect()
        })
    }

    fn get_webhook(&self, id: &WebhookId) -> StoreResult<Option<StoredWebhook>> {
        self.blocking(|| {
            let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
            self.conn()?
                .query_opt(sql.as_str(), &[&id.as_str()])?
                .map(|row| webhook_from_row(&row))
                .transpose()
        })
    }

    fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN
                     (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
                &[&id.as_str()],
            )?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
                &[&id.as_str()],
            )?;
            let deleted = tx.execute("DELETE FROM webhooks WHERE id = $1", &[&id.as_str()])?;
            tx.commit()?;
            Ok(deleted > 0)
        })
    }

    fn pending_messages(&self, limit: usize) -> StoreResult<Vec<OutboxMessage>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id AS message_id, event_type, owner AS message_owner, twin_id, body,
                        created_at AS message_created_at
                 FROM webhook_messages WHERE NOT fanned_out ORDER BY created_at, id LIMIT $1",
                &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            )?;
            rows.iter().map(message_from_row).collect()
        })
    }

    fn fan_out_message(&self, id: &MessageId, deliveries: &[NewDelivery]) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Two workers handing out one message: the second waits for the first, then
            // finds it handed out.
            let claimed = tx.execute(
                "UPDATE webhook_messages SET fanned_out = TRUE WHERE id = $1 AND NOT fanned_out",
                &[&id.as_str()],
            )?;
            if claimed == 0 {
                return Ok(false);
            }
            let now = clock::now();
            for delivery in deliveries {
                tx.execute(
                    "INSERT INTO webhook_deliveries (id, message_id, webhook_id, status, attempts,
                                                     next_attempt_at, created_at, updated_at)
                     SELECT $1::TEXT, $2::TEXT, $3::TEXT, 'pending', 0, $4::TEXT, $5::TEXT,
                            $5::TEXT
                     WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $3::TEXT)",
                    &[
                        &delivery.id.as_str(),
                        &id.as_str(),
                        &delivery.webhook_id.as_str(),
                        &delivery.next_attempt_at,
                        &now,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn claim_deliveries(
        &self,
        worker: &str,
        now: &str,
        lease_until: &str,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.blocking(|| {
            // Workers claiming at once skip each other's rows: each delivery goes to one.
            let rows = self.conn()?.query(
                "WITH due AS (
                     SELECT id FROM webhook_deliveries
                     WHERE (status = 'pending' AND next_attempt_at <= $1)
                        OR (status = 'sending' AND claimed_until <= $1)
                     ORDER BY next_attempt_at, id
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE webhook_deliveries d
                    SET status = 'sending', claimed_by = $2, claimed_until = $3, updated_at = $1
                 FROM due, webhooks w, webhook_messages m
                 WHERE d.id = due.id AND w.id = d.webhook_id AND m.id = d.message_id
                 RETURNING d.id, d.webhook_id, d.attempts, w.url, w.sealed_secret,
                           m.id AS message_id, m.event_type, m.owner AS message_owner,
                           m.twin_id, m.body, m.created_at AS message_created_at",
                &[
                    &now,
                    &worker,
                    &lease_until,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?;
            rows.iter().map(claimed_from_row).collect()
        })
    }

    fn record_attempt(
        &self,
        worker: &str,
        attempt: &DeliveryAttempt,
        next: &DeliveryNext,
    ) -> StoreResult<bool> {
        self.blocking(|| {
            let (status, next_at) = match next {
                DeliveryNext::Succeeded => ("succeeded", None),
                DeliveryNext::Retry { at } => ("pending", Some(at.as_str())),
                DeliveryNext::Failed => ("failed", None),
            };
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE webhook_deliveries SET status = $3, attempts = $4, next_attempt_at = $5,
                        claimed_by = NULL, claimed_until = NULL, updated_at = $6
                 WHERE id = $1 AND status = 'sending' AND claimed_by = $2",
                &[
                    &attempt.delivery_id.as_str(),
                    &worker,
                    &status,
                    &i32::try_from(attempt.number).map_err(corrupt)?,
                    &next_at,
                    &clock::now(),
                ],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, number, attempted_at, status_code,
                                               error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &attempt.delivery_id.as_str(),
                    &i32::try_from(attempt.number).map_err(corrupt)?,
                    &attempt.attempted_at,
                    &attempt.status_code.map(i32::from),
                    &attempt.error,
                    &i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn append_audit(&self, entry: &NewAudit, at: &str) -> StoreResult<()> {
        self.blocking(|| {
            self.conn()?.execute(
                "INSERT INTO audit_log (at, actor, action, target, reason)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &at,
                    &entry.actor,
                    &entry.action.as_str(),
                    &entry.target,
                    &entry.reason,
                ],
            )?;
            Ok(())
        })
    }

    fn audit_page(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id, at, actor, action, target, reason FROM audit_log
                 WHERE id > $1 ORDER BY id LIMIT $2",
                &[
                    &after.unwrap_or(0),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(AuditEntry {
                        id: row.try_get("id")?,
                        at: text(row, "at")?,
                        actor: text(row, "actor")?,
                        action: text(row, "action")?,
                        target: text(row, "target")?,
                        reason: optional_text(row, "reason")?,
                    })
                })
                .collect()
        })
    }

    fn purge_twin(&self, id: &TwinId, version: i64) -> StoreResult<bool> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let current = tx.query_opt(
                "SELECT version FROM twins WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )?;
            let current: Option<i64> = current.map(|row| row.try_get("version")).transpose()?;
            if current != Some(version) {
                return Ok(false);
            }
            for sql in PURGE_TWIN {
                tx.execute(*sql, &[&id.as_str()])?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn deleted_before(&self, cutoff: &str) -> StoreResult<Vec<TwinId>> {
        self.blocking(|| {
            let rows = self.conn()?.query(
                "SELECT id FROM twins WHERE deleted_at IS NOT NULL AND deleted_at < $1
                 ORDER BY deleted_at, id",
                &[&cutoff],
            )?;
            rows.iter().map(|row| parsed(row, "id")).collect()
        })
    }

    fn list_deliveries(&self, id: &WebhookId, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        self.blocking(|| {
            let mut conn = self.conn()?;
            let rows = conn.query(
                "SELECT d.id, d.message_id, m.event_type, d.status, d.next_attempt_at,
                        d.created_at
                 FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
                 WHERE d.webhook_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
                &[&id.as_str(), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?;
            let mut deliveries = rows
                .iter()
                .map(|row| {
                    Ok(DeliveryRecord {
                        id: parsed(row, "id")?,
                        message_id: parsed(row, "message_id")?,
                        event_type: parsed(row, "event_type")?,
                        status: parsed(row, "status")?,
                        next_attempt_at: optional_text(row, "next_attempt_at")?,
                        created_at: text(row, "created_at")?,
                        attempts: Vec::new(),
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            for delivery in &mut deliveries {
                let rows = conn.query(
                    "SELECT number, attempted_at, status_code, error, duration_ms
                     FROM webhook_attempts WHERE delivery_id = $1 ORDER BY number",
                    &[&delivery.id.as_str()],
                )?;
                for row in &rows {
                    delivery.attempts.push(DeliveryAttempt {
                        delivery_id: delivery.id.clone(),
                        number: u32::try_from(row.try_get::<_, i32>("number")?).map_err(corrupt)?,
                        attempted_at: text(row, "attempted_at")?,
                        status_code: row
                            .try_get::<_, Option<i32>>("status_code")?
                            .map(u16::try_from)
                            .transpose()
                            .map_err(corrupt)?,
                        error: optional_text(row, "error")?,
                        duration_ms: u64::try_from(row.try_get::<_, i64>("duration_ms")?)
                            .map_err(corrupt)?,
                    });
                }
            }
            Ok(deliveries)
        })
    }
}

const CREDENTIAL_COLUMNS: &str = "id, owner, name, provider, env_keys, sealed_env, expires_at, \
     delete_after_run, created_at, updated_at, last_used_at";

fn credential_from_row(row: &Row) -> StoreResult<StoredCredential> {
    Ok(StoredCredential {
        credential: Credential {
            id: parsed(row, "id")?,
            owner: text(row, "owner")?,
            name: CredentialName::parse(&text(row, "name")?).map_err(corrupt)?,
            provider: parsed(row, "provider")?,
            env_keys: json(row, "env_keys")?,
            expires_at: optional_text(row, "expires_at")?,
            delete_after_run: row.try_get("delete_after_run")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
            last_used_at: optional_text(row, "last_used_at")?,
        },
        sealed_env: row.try_get("sealed_env")?,
    })
}

const WEBHOOK_COLUMNS: &str =
    "id, owner, is_admin, url, events, description, sealed_secret, created_at";

fn webhook_from_row(row: &Row) -> StoreResult<StoredWebhook> {
    let events: Vec<String> = json(row, "events")?;
    Ok(StoredWebhook {
        id: parsed(row, "id")?,
        owner: text(row, "owner")?,
        is_admin: row.try_get("is_admin")?,
        url: text(row, "url")?,
        events: events
            .iter()
            .map(|e| e.parse::<EventType>().map_err(corrupt))
            .collect::<StoreResult<_>>()?,
        description: optional_text(row, "description")?,
        sealed_secret: row.try_get("sealed_secret")?,
        created_at: text(row, "created_at")?,
    })
}

fn message_from_row(row: &Row) -> StoreResult<OutboxMessage> {
    Ok(OutboxMessage {
        id: parsed(row, "message_id")?,
        event_type: parsed(row, "event_type")?,
        owner: text(row, "message_owner")?,
        twin_id: parsed_optional(row, "twin_id")?,
        body: text(row, "body")?,
        created_at: text(row, "message_created_at")?,
    })
}

fn claimed_from_row(row: &Row) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: parsed(row, "id")?,
        message: message_from_row(row)?,
        webhook_id: parsed(row, "webhook_id")?,
        url: text(row, "url")?,
        sealed_secret: row.try_get("sealed_secret")?,
        attempts: u32::try_from(row.try_get::<_, i32>("attempts")?).map_err(corrupt)?,
    })
}

/// What a purge deletes, children first; each statement takes the twin's id as `$1`.
const PURGE_TWIN: &[&str] = &[
    "DELETE FROM run_events WHERE run_id IN (SELECT id FROM runs WHERE twin_id = $1)",
    "DELETE FROM run_credentials WHERE run_id IN (SELECT id FROM runs WHERE twin_id = $1)",
    "DELETE FROM run_grants WHERE twin_id = $1",
    "DELETE FROM plans WHERE twin_id = $1",
    "DELETE FROM runs WHERE twin_id = $1",
    "DELETE FROM state_locks WHERE twin_id = $1",
    "DELETE FROM state_versions WHERE twin_id = $1",
    "DELETE FROM twin_credentials WHERE twin_id = $1",
    "DELETE FROM twin_history WHERE twin_id = $1",
    "DELETE FROM twins WHERE id = $1",
];
