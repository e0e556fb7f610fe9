//! The SQLite store: one file under the data directory, WAL, a small r2d2 pool.

use std::path::Path;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use rusqlite_migration::{Migrations, M};

use super::{
    counts, Appended, ClaimedDelivery, DeliveryAttempt, DeliveryNext, DeliveryRecord, NewDelivery,
    NewEvent, NewRun, ReplicaBeat, Restored, RunCredential, RunFinish, RunProgress, SpoolMark,
    StateLock, StateVersion, Store, StoreError, StoreResult, StoredCredential, StoredEvent,
    StoredPlan, StoredWebhook,
};
use crate::clock;
use crate::domain::audit::{AuditEntry, NewAudit};
use crate::domain::events::{EventType, OutboxMessage};
use crate::domain::{
    Credential, CredentialId, CredentialName, DeploymentStatus, HistoryEntry, LogLevel, MessageId,
    MonitorId, NewHistory, NewTwin, Principal, ReplicaId, Run, RunGrant, RunId, RunKind, RunStatus,
    RunStep, SealedVariables, Twin, TwinChange, TwinId, TwinName, WebhookId,
};

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("../../migrations/001_foundation.sql")),
    M::up(include_str!("../../migrations/002_runs.sql")),
    M::up(include_str!("../../migrations/003_state.sql")),
    M::up(include_str!("../../migrations/004_plans.sql")).foreign_key_check(),
    M::up(include_str!("../../migrations/005_run_monitor.sql")),
    M::up(include_str!("../../migrations/006_twin_version.sql")),
    M::up(include_str!("../../migrations/007_event_seq.sql")),
    M::up(include_str!("../../migrations/008_replicas.sql")),
    M::up(include_str!("../../migrations/009_team.sql")),
    M::up(include_str!("../../migrations/010_lifecycle.sql")),
];

const TWIN_COLUMNS: &str = "id, owner, name, provider, files, variables, deployment_status, \
     is_locked, locked_by_run, last_deployed_at, terraform_outputs, created_at, updated_at, \
     deleted_at, version, secret_variable_names, secret_variables";

pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    /// Names this store as the holder of the leases it takes.
    holder: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        // WAL is a property of the file: set once below, not by every pooled connection (a
        // burst of new connections would contend for the lock that switching needs).
        let manager = SqliteConnectionManager::file(path).with_init(|conn| {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(())
        });
        let pool = Pool::builder()
            .max_size(16)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        let mut conn = pool.get()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self {
            pool,
            holder: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    fn conn(&self) -> StoreResult<PooledConnection<SqliteConnectionManager>> {
        Ok(self.pool.get()?)
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Reads a text column and parses it with `FromStr`, so a bad stored value is a clear error.
fn parse_column<T>(row: &Row<'_>, column: &str) -> StoreResult<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn parse_optional_column<T>(row: &Row<'_>, column: &str) -> StoreResult<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = row.get(column)?;
    text.map(|t| {
        t.parse()
            .map_err(|e| corrupt(format!("column {column}: {e}")))
    })
    .transpose()
}

fn parse_json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    column: &str,
) -> StoreResult<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn twin_from_row(row: &Row<'_>) -> StoreResult<Twin> {
    let outputs: Option<String> = row.get("terraform_outputs")?;
    Ok(Twin {
        id: parse_column(row, "id")?,
        owner: row.get("owner")?,
        name: TwinName::parse(&row.get::<_, String>("name")?).map_err(corrupt)?,
        provider: parse_column(row, "provider")?,
        deployment_status: parse_column(row, "deployment_status")?,
        is_locked: row.get("is_locked")?,
        active_job_id: parse_optional_column(row, "locked_by_run")?,
        last_deployed_at: row.get("last_deployed_at")?,
        terraform_outputs: outputs
            .map(|text| serde_json::from_str(&text).map_err(corrupt))
            .transpose()?,
        files: parse_json_column(row, "files")?,
        variables: parse_json_column(row, "variables")?,
        secret_variables: SealedVariables {
            names: parse_json_column(row, "secret_variable_names")?,
            sealed: row.get("secret_variables")?,
        },
        // Filled by the caller from twin_credentials.
        credential_ids: Vec::new(),
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        deleted_at: row.get("deleted_at")?,
        version: row.get("version")?,
    })
}

fn history_from_row(row: &Row<'_>) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        id: row.get("id")?,
        twin_id: parse_column(row, "twin_id")?,
        action: row.get("action")?,
        from_status: parse_optional_column(row, "from_status")?,
        to_status: parse_optional_column(row, "to_status")?,
        actor: row.get("actor")?,
        reason: row.get("reason")?,
        run_id: parse_optional_column(row, "run_id")?,
        at: row.get("at")?,
    })
}

fn to_json(value: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn select_twin(tx: &rusqlite::Connection, id: &TwinId) -> StoreResult<Option<Twin>> {
    let sql = format!("SELECT {TWIN_COLUMNS} FROM twins WHERE id = ?1");
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut twin = twin_from_row(row)?;
    let mut links = tx.prepare_cached(
        "SELECT credential_id FROM twin_credentials WHERE twin_id = ?1 ORDER BY position",
    )?;
    let mut rows = links.query(params![id.as_str()])?;
    while let Some(row) = rows.next()? {
        twin.credential_ids
            .push(parse_column(row, "credential_id")?);
    }
    Ok(Some(twin))
}

/// Writes the twin's credential list (replacing the one it had); a credential that is gone
/// meanwhile is NotFound.
fn write_twin_credentials(
    tx: &Transaction<'_>,
    twin: &TwinId,
    credentials: &[CredentialId],
) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM twin_credentials WHERE twin_id = ?1")?
        .execute(params![twin.as_str()])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO twin_credentials (twin_id, credential_id, position) VALUES (?1, ?2, ?3)",
    )?;
    for (position, credential) in credentials.iter().enumerate() {
        let position = i64::try_from(position).map_err(corrupt)?;
        insert
            .execute(params![twin.as_str(), credential.as_str(), position])
            .map_err(|e| match &e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NotFound(format!("credential {credential}"))
                }
                _ => StoreError::Sqlite(e),
            })?;
    }
    Ok(())
}

/// Outbox messages, in the caller's transaction (the change they report).
fn insert_messages(tx: &rusqlite::Connection, messages: &[OutboxMessage]) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO webhook_messages (id, event_type, owner, twin_id, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for message in messages {
        insert.execute(params![
            message.id.as_str(),
            message.event_type.as_str(),
            message.owner,
            message.twin_id.as_ref().map(TwinId::as_str),
            message.body,
            message.created_at,
        ])?;
    }
    Ok(())
}

fn require_twin(tx: &rusqlite::Connection, id: &TwinId) -> StoreResult<Twin> {
    select_twin(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("twin {id}")))
}

fn insert_history(
    tx: &Transaction<'_>,
    id: &TwinId,
    row: &NewHistory,
    at: &str,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO twin_history (twin_id, action, from_status, to_status, actor, reason, run_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id.as_str(),
        row.action,
        row.from.map(DeploymentStatus::as_str),
        row.to.map(DeploymentStatus::as_str),
        row.actor,
        row.reason,
        row.run_id.as_ref().map(RunId::as_str),
        at,
    ])?;
    Ok(())
}

/// A uniqueness violation on (owner, name) as the typed result it is.
fn duplicate_name(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::SqliteFailure(e, Some(msg))
            if e.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("twins.name") =>
        {
            StoreError::Duplicate("the twin name".into())
        }
        _ => StoreError::Sqlite(err),
    }
}

/// The twin's new row and its history, if the twin is still at the expected version.
fn write_twin_row(tx: &Transaction<'_>, change: &TwinChange) -> StoreResult<Option<Twin>> {
    let written = tx
        .prepare_cached(
            "UPDATE twins SET name = ?3, files = ?4, variables = ?5, deployment_status = ?6,
                    is_locked = ?7, locked_by_run = ?8, deleted_at = ?9, last_deployed_at = ?10,
                    updated_at = ?11, secret_variable_names = ?12, secret_variables = ?13,
                    version = version + 1
             WHERE id = ?1 AND version = ?2",
        )?
        .execute(params![
            change.id.as_str(),
            change.expected_version,
            change.name.as_str(),
            to_json(&change.files)?,
            to_json(&change.variables)?,
            change.status.as_str(),
            change.locked_by.is_some(),
            change.locked_by.as_ref().map(RunId::as_str),
            change.deleted_at,
            change.last_deployed_at,
            change.updated_at,
            to_json(&change.secret_variables.names)?,
            change.secret_variables.sealed,
        ])
        .map_err(duplicate_name)?;
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

impl Store for SqliteStore {
    fn create_twin(&self, twin: NewTwin, history: &NewHistory) -> StoreResult<Twin> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = clock::now();
        tx.execute(
            "INSERT INTO twins (id, owner, name, provider, files, variables, created_at, updated_at,
                                secret_variable_names, secret_variables)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            params![
                twin.id.as_str(),
                twin.owner,
                twin.name.as_str(),
                twin.provider.as_str(),
                to_json(&twin.files)?,
                to_json(&twin.variables)?,
                now,
                to_json(&twin.secret_variables.names)?,
                twin.secret_variables.sealed,
            ],
        )
        .map_err(duplicate_name)?;
        write_twin_credentials(&tx, &twin.id, &twin.credential_ids)?;
        insert_history(&tx, &twin.id, history, &now)?;
        let created = require_twin(&tx, &twin.id)?;
        tx.commit()?;
        Ok(created)
    }

    fn list_twins(&self, principal: &Principal, include_deleted: bool) -> StoreResult<Vec<Twin>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {TWIN_COLUMNS} FROM twins
             WHERE (?1 OR owner = ?2) AND (?3 OR deleted_at IS NULL)
             ORDER BY created_at, id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            principal.is_admin,
            principal.owner,
            include_deleted
        ])?;
        let mut twins = Vec::new();
        while let Some(row) = rows.next()? {
            twins.push(twin_from_row(row)?);
        }
        let mut links = conn.prepare_cached(
            "SELECT tc.twin_id, tc.credential_id FROM twin_credentials tc
             JOIN twins t ON t.id = tc.twin_id
             WHERE (?1 OR t.owner = ?2) ORDER BY tc.twin_id, tc.position",
        )?;
        let mut rows = links.query(params![principal.is_admin, principal.owner])?;
        let mut by_twin: std::collections::HashMap<String, Vec<CredentialId>> =
            std::collections::HashMap::new();
        while let Some(row) = rows.next()? {
            by_twin
                .entry(row.get("twin_id")?)
                .or_default()
                .push(parse_column(row, "credential_id")?);
        }
        for twin in &mut twins {
            if let Some(ids) = by_twin.remove(twin.id.as_str()) {
                twin.credential_ids = ids;
            }
        }
        Ok(twins)
    }

    fn get_twin(&self, id: &TwinId) -> StoreResult<Option<Twin>> {
        let conn = self.conn()?;
        select_twin(&conn, id)
    }

    fn write_twin(&self, change: &TwinChange) -> StoreResult<Option<Twin>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = write_twin_row(&tx, change)?;
        if written.is_some() {
            tx.commit()?;
        }
        Ok(written)
    }

    fn history(&self, id: &TwinId) -> StoreResult<Vec<HistoryEntry>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, twin_id, action, from_status, to_status, actor, reason, run_id, at
             FROM twin_history WHERE twin_id = ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query(params![id.as_str()])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(history_from_row(row)?);
        }
        Ok(entries)
    }

    fn insert_token(
        &self,
        token_hash: &str,
        principal: &Principal,
        label: Option<&str>,
    ) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO api_tokens (token_hash, owner, is_admin, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, principal.owner, principal.is_admin, label, clock::now()],
        )?;
        Ok(())
    }

    fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT owner, is_admin FROM api_tokens WHERE token_hash = ?1")?;
        Ok(stmt
            .query_row(params![token_hash], |row| {
                Ok(Principal {
                    owner: row.get(0)?,
                    is_admin: row.get(1)?,
                })
            })
            .optional()?)
    }

    fn has_admin_token(&self) -> StoreResult<bool> {
        let conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE is_admin = 1)",
            [],
            |row| row.get(0),
        )?)
    }

    fn insert_session(
        &self,
        session_hash: &str,
        principal: &Principal,
        expires_at: &str,
    ) -> StoreResult<()> {
        let conn = self.conn()?;
        let now = clock::now();
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])?;
        conn.execute(
            "INSERT INTO sessions (session_hash, owner, is_admin, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session_hash, principal.owner, principal.is_admin, now, expires_at],
        )?;
        Ok(())
    }

    fn find_session(&self, session_hash: &str, now: &str) -> StoreResult<Option<Principal>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT owner, is_admin FROM sessions WHERE session_hash = ?1 AND expires_at > ?2",
        )?;
        Ok(stmt
            .query_row(params![session_hash, now], |row| {
                Ok(Principal {
                    owner: row.get(0)?,
                    is_admin: row.get(1)?,
                })
            })
            .optional()?)
    }

    fn delete_session(&self, session_hash: &str) -> StoreResult<()> {
        self.conn()?.execute(
            "DELETE FROM sessions WHERE session_hash = ?1",
            params![session_hash],
        )?;
        Ok(())
    }

    fn start_run(
        &self,
        run: NewRun,
        twin: Option<&TwinChange>,
    ) -> StoreResult<Option<(Run, Twin)>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let twin = match twin {
            Some(change) => match write_twin_row(&tx, change)? {
                Some(twin) => twin,
                None => return Ok(None),
            },
            None => require_twin(&tx, &run.twin_id)?,
        };
        let now = clock::now();
        tx.execute(
            "INSERT INTO runs (id, twin_id, kind, status, actor, created_at, owner_replica, secrets,
                               log_level)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8)",
            params![
                run.id.as_str(),
                run.twin_id.as_str(),
                run.kind.as_str(),
                run.actor,
                now,
                run.owner.as_ref().map(ReplicaId::as_str),
                run.secrets,
                run.log_level.map(LogLevel::as_str),
            ],
        )?;
        for credential in &run.credentials {
            tx.execute(
                "INSERT INTO run_credentials (run_id, credential_id, delete_after_run)
                 VALUES (?1, ?2, ?3)",
                params![
                    run.id.as_str(),
                    credential.id.as_str(),
                    credential.delete_after_run
                ],
            )?;
            tx.execute(
                "UPDATE credentials SET last_used_at = ?2 WHERE id = ?1",
                params![credential.id.as_str(), now],
            )?;
        }
        let stored = select_run(&tx, &run.id)?.ok_or_else(|| corrupt("run vanished"))?;
        tx.commit()?;
        Ok(Some((stored, twin)))
    }

    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>> {
        let conn = self.conn()?;
        select_run(&conn, id)
    }

    fn list_runs(&self, twin_id: &TwinId) -> StoreResult<Vec<Run>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = ?1 ORDER BY created_at DESC, id DESC"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![twin_id.as_str()])?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push(run_from_row(row)?);
        }
        Ok(runs)
    }

    fn latest_finished_run(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = ?1 AND kind = ?2
               AND status IN ('completed', 'failed', 'cancelled')
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![twin_id.as_str(), kind.as_str()])?;
        match rows.next()? {
            Some(row) => Ok(Some(run_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn insert_plan(&self, plan: &StoredPlan) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO plans (run_id, twin_id, config_hash, state_serial, created_at, ciphertext)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (run_id) DO UPDATE SET config_hash = excluded.config_hash,
                 state_serial = excluded.state_serial, ciphertext = excluded.ciphertext",
            params![
                plan.run_id.as_str(),
                plan.twin_id.as_str(),
                plan.config_hash,
                plan.state_serial,
                plan.created_at,
                plan.ciphertext
            ],
        )?;
        Ok(())
    }

    fn latest_plan(&self, twin_id: &TwinId) -> StoreResult<Option<StoredPlan>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, twin_id, config_hash, state_serial, created_at, applied_by, ciphertext
             FROM plans WHERE twin_id = ?1 ORDER BY created_at DESC, run_id DESC LIMIT 1",
        )?;
        let mut rows = stmt.query(params![twin_id.as_str()])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(StoredPlan {
            run_id: parse_column(row, "run_id")?,
            twin_id: parse_column(row, "twin_id")?,
            config_hash: row.get("config_hash")?,
            state_serial: row.get("state_serial")?,
            created_at: row.get("created_at")?,
            applied_by: parse_optional_column(row, "applied_by")?,
            ciphertext: row.get("ciphertext")?,
        }))
    }

    fn mark_plan_applied(&self, plan_run: &RunId, by: &RunId) -> StoreResult<()> {
        self.conn()?.execute(
            "UPDATE plans SET applied_by = ?2 WHERE run_id = ?1",
            params![plan_run.as_str(), by.as_str()],
        )?;
        Ok(())
    }

    fn mark_run_processing(
        &self,
        id: &RunId,
        started_at: &str,
        messages: &[OutboxMessage],
    ) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE runs SET status = 'processing', start_time = ?2 WHERE id = ?1 AND status = 'pending'",
            params![id.as_str(), started_at],
        )?;
        if changed == 1 {
            insert_messages(&tx, messages)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('pending', 'processing') ORDER BY created_at"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push(run_from_row(row)?);
        }
        Ok(runs)
    }

    fn move_run(
        &self,
        id: &RunId,
        from: Option<&ReplicaId>,
        to: Option<&ReplicaId>,
        stale_after: Option<f64>,
    ) -> StoreResult<bool> {
        let moved = self.conn()?.execute(
            "UPDATE runs SET owner_replica = ?3
             WHERE id = ?1 AND owner_replica IS ?2 AND status IN ('pending', 'processing')
               AND (?4 IS NULL OR NOT EXISTS (
                   SELECT 1 FROM replicas WHERE id = ?2
                      AND (julianday('now') - julianday(heartbeat_at)) * 86400.0 < ?4))",
            params![
                id.as_str(),
                from.map(ReplicaId::as_str),
                to.map(ReplicaId::as_str),
                stale_after
            ],
        )?;
        Ok(moved == 1)
    }

    fn claim_queued_run(&self, replica: &ReplicaId) -> StoreResult<Option<Run>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed: Option<String> = tx
            .query_row(
                "UPDATE runs SET owner_replica = ?1
                 WHERE id = (SELECT id FROM runs
                             WHERE status = 'pending' AND owner_replica IS NULL
                             ORDER BY created_at, id LIMIT 1)
                 RETURNING id",
                params![replica.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        let run = match claimed {
            Some(id) => select_run(&tx, &id.parse().map_err(corrupt)?)?,
            None => None,
        };
        tx.commit()?;
        Ok(run)
    }

    fn queued_runs(&self) -> StoreResult<Vec<RunId>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM runs WHERE status = 'pending' AND owner_replica IS NULL
             ORDER BY created_at, id",
        )?;
        let mut rows = stmt.query([])?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(parse_column(row, "id")?);
        }
        Ok(ids)
    }

    fn request_cancel(&self, id: &RunId) -> StoreResult<bool> {
        let marked = self.conn()?.execute(
            "UPDATE runs SET cancel_requested = 1
             WHERE id = ?1 AND status IN ('pending', 'processing')",
            params![id.as_str()],
        )?;
        Ok(marked == 1)
    }

    fn heartbeat(&self, replica: &ReplicaId, address: &str) -> StoreResult<()> {
        let now = clock::now();
        self.conn()?.execute(
            "INSERT INTO replicas (id, address, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                                            heartbeat_at = excluded.heartbeat_at",
            params![replica.as_str(), address, now],
        )?;
        Ok(())
    }

    fn replicas(&self) -> StoreResult<Vec<ReplicaBeat>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, address, started_at,
                    (julianday('now') - julianday(heartbeat_at)) * 86400.0 AS age
             FROM replicas ORDER BY started_at, id",
        )?;
        let mut rows = stmt.query([])?;
        let mut replicas = Vec::new();
        while let Some(row) = rows.next()? {
            replicas.push(ReplicaBeat {
                id: parse_column(row, "id")?,
                address: row.get("address")?,
                started_at: row.get("started_at")?,
                seconds_since_heartbeat: row.get("age")?,
            });
        }
        Ok(replicas)
    }

    fn begin_step(&self, id: &RunId, step: &RunStep) -> StoreResult<()> {
        self.conn()?.execute(
            "UPDATE runs SET step_index = ?2, step_name = ?3, step_dir = ?4, step_started_at = ?5,
                    monitor_pid = NULL, monitor_start = NULL, spool_offset = ?6
             WHERE id = ?1",
            params![
                id.as_str(),
                step.index,
                step.name,
                step.dir,
                step.started_at,
                i64::try_from(step.spool_offset).map_err(corrupt)?,
            ],
        )?;
        Ok(())
    }

    fn record_monitor(&self, id: &RunId, step: u32, monitor: MonitorId) -> StoreResult<()> {
        self.conn()?.execute(
            "UPDATE runs SET monitor_pid = ?3, monitor_start = ?4 WHERE id = ?1 AND step_index = ?2",
            params![
                id.as_str(),
                step,
                monitor.pid,
                i64::try_from(monitor.start_ticks).map_err(corrupt)?
            ],
        )?;
        Ok(())
    }

    fn set_applies_plan(&self, id: &RunId, plan: &RunId) -> StoreResult<()> {
        self.conn()?.execute(
            "UPDATE runs SET applies_plan = ?2 WHERE id = ?1",
            params![id.as_str(), plan.as_str()],
        )?;
        Ok(())
    }

    fn append_events(
        &self,
        events: &[NewEvent],
        marks: &[(RunId, SpoolMark)],
        progress: &[(RunId, RunProgress)],
        finish: Option<&RunFinish>,
    ) -> StoreResult<Appended> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Vec::with_capacity(events.len());
        let mut ended = Vec::new();
        {
            // Each run's numbers at once; none for a run that has ended.
            let mut take = tx.prepare_cached(
                "UPDATE runs SET last_seq = last_seq + ?2
                 WHERE id = ?1 AND status IN ('pending', 'processing') RETURNING last_seq",
            )?;
            let mut next: Vec<(&RunId, u64)> = Vec::new();
            for (run_id, count) in counts(events) {
                let count = i64::try_from(count).map_err(corrupt)?;
                let last: Option<i64> = take
                    .query_row(params![run_id.as_str(), count], |row| row.get(0))
                    .optional()?;
                match last {
                    Some(last) => {
                        let first = u64::try_from(last - count + 1).map_err(corrupt)?;
                        next.push((run_id, first));
                    }
                    None => ended.push(run_id.clone()),
                }
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO run_events (run_id, seq, event, data) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in events {
                let Some((_, seq)) = next.iter_mut().find(|(run, _)| **run == event.run_id) else {
                    continue;
                };
                let number = i64::try_from(*seq).map_err(corrupt)?;
                insert.execute(params![
                    event.run_id.as_str(),
                    number,
                    event.event,
                    event.data
                ])?;
                stored.push(StoredEvent {
                    run_id: event.run_id.clone(),
                    seq: *seq,
                    event: event.event.clone(),
                    data: event.data.clone(),
                });
                *seq += 1;
            }
            let mut mark = tx.prepare_cached(
                "UPDATE runs SET spool_offset = ?3 WHERE id = ?1 AND step_index = ?2",
            )?;
            for (run_id, at) in marks {
                let offset = i64::try_from(at.offset).map_err(corrupt)?;
                mark.execute(params![run_id.as_str(), at.step, offset])?;
            }
            let mut stage = tx.prepare_cached("UPDATE runs SET stage = ?2 WHERE id = ?1")?;
            let mut percent = tx.prepare_cached("UPDATE runs SET progress = ?2 WHERE id = ?1")?;
            for (run_id, update) in progress {
                if let Some(to) = update.stage {
                    stage.execute(params![run_id.as_str(), to.as_str()])?;
                }
                if let Some(to) = update.percent {
                    percent.execute(params![run_id.as_str(), to.min(100)])?;
                }
            }
        }
        if let Some(finish) = finish.filter(|f| !ended.contains(&f.run_id)) {
            if !finish_run(&tx, finish)? {
                return Ok(Appended::TwinChanged);
            }
        }
        tx.commit()?;
        Ok(Appended::Stored {
            events: stored,
            ended,
        })
    }

    fn insert_grant(&self, secret_hash: &str, grant: &RunGrant) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO run_grants (secret_hash, run_id, twin_id, owner, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                secret_hash,
                grant.run_id.as_str(),
                grant.twin_id.as_str(),
                grant.owner,
                clock::now()
            ],
        )?;
        Ok(())
    }

    fn find_grant(&self, secret_hash: &str) -> StoreResult<Option<RunGrant>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, twin_id, owner FROM run_grants WHERE secret_hash = ?1",
        )?;
        let mut rows = stmt.query(params![secret_hash])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(RunGrant {
            run_id: parse_column(row, "run_id")?,
            twin_id: parse_column(row, "twin_id")?,
            owner: row.get("owner")?,
        }))
    }

    fn revoke_grants(&self, run: &RunId) -> StoreResult<()> {
        self.conn()?.execute(
            "DELETE FROM run_grants WHERE run_id = ?1",
            params![run.as_str()],
        )?;
        Ok(())
    }

    fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, event, data FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![run_id.as_str(), after, limit])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            events.push(StoredEvent {
                run_id: run_id.clone(),
                seq: u64::try_from(seq).map_err(corrupt)?,
                event: row.get(1)?,
                data: row.get(2)?,
            });
        }
        Ok(events)
    }

    fn last_event_seq(&self, run_id: &RunId) -> StoreResult<u64> {
        let conn = self.conn()?;
        let seq: i64 = conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = ?1",
            params![run_id.as_str()],
            |row| row.get(0),
        )?;
        u64::try_from(seq).map_err(corrupt)
    }

    fn current_state(&self, twin_id: &TwinId) -> StoreResult<Option<StateVersion>> {
        let conn = self.conn()?;
        select_state(
            &conn,
            "WHERE twin_id = ?1 ORDER BY version DESC LIMIT 1",
            params![twin_id.as_str()],
        )
    }

    fn state_version(&self, twin_id: &TwinId, version: i64) -> StoreResult<Option<StateVersion>> {
        let conn = self.conn()?;
        select_state(
            &conn,
            "WHERE twin_id = ?1 AND version = ?2",
            params![twin_id.as_str(), version],
        )
    }

    fn list_state_versions(&self, twin_id: &TwinId) -> StoreResult<Vec<StateVersion>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM state_versions WHERE twin_id = ?1 ORDER BY version DESC"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![twin_id.as_str()])?;
        let mut versions = Vec::new();
        while let Some(row) = rows.next()? {
            versions.push(state_from_row(row, false)?);
        }
        Ok(versions)
    }

    fn insert_state_version(
        &self,
        v: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !write_state_version(&tx, v, expected_previous, twin_outputs)? {
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    fn state_lock(&self, twin_id: &TwinId) -> StoreResult<Option<StateLock>> {
        let conn = self.conn()?;
        select_state_lock(&conn, twin_id)
    }

    fn acquire_state_lock(
        &self,
        twin_id: &TwinId,
        lock: &StateLock,
    ) -> StoreResult<Result<(), StateLock>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO state_locks (twin_id, lock_id, info, run_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (twin_id) DO NOTHING",
            params![
                twin_id.as_str(),
                lock.lock_id,
                lock.info,
                lock.run_id.as_ref().map(RunId::as_str),
                lock.created_at
            ],
        )?;
        let answer = if inserted == 1 {
            Ok(())
        } else {
            match select_state_lock(&tx, twin_id)? {
                Some(holder) if holder.lock_id == lock.lock_id => Ok(()),
                Some(holder) => Err(holder),
                None => Ok(()),
            }
        };
        tx.commit()?;
        Ok(answer)
    }

    fn release_state_lock(
        &self,
        twin_id: &TwinId,
        lock_id: Option<&str>,
        history: Option<&NewHistory>,
    ) -> StoreResult<Result<Option<StateLock>, StateLock>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(holder) = select_state_lock(&tx, twin_id)? else {
            return Ok(Ok(None));
        };
        if lock_id.is_some_and(|id| id != holder.lock_id) {
            return Ok(Err(holder));
        }
        tx.execute(
            "DELETE FROM state_locks WHERE twin_id = ?1 AND lock_id = ?2",
            params![twin_id.as_str(), holder.lock_id],
        )?;
        if let Some(row) = history {
            insert_history(&tx, twin_id, row, &clock::now())?;
        }
        tx.commit()?;
        Ok(Ok(Some(holder)))
    }

    fn meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT value FROM gateway_meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO gateway_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn insert_meta(&self, key: &str, value: &[u8]) -> StoreResult<bool> {
        let inserted = self.conn()?.execute(
            "INSERT INTO gateway_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, value],
        )?;
        Ok(inserted == 1)
    }

    fn ping(&self) -> StoreResult<()> {
        self.conn()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn list_visible_runs(
        &self,
        principal: &Principal,
        statuses: &[RunStatus],
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<(Run, String)>> {
        let conn = self.conn()?;
        let columns = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c} AS {c}", c = c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns}, t.name AS twin_name FROM runs r JOIN twins t ON t.id = r.twin_id
             WHERE (?1 OR t.owner = ?2)
               AND (?3 = '[]' OR r.status IN (SELECT value FROM json_each(?3)))
               AND (?4 IS NULL OR (r.created_at, r.id) <
                    (SELECT b.created_at, b.id FROM runs b WHERE b.id = ?4))
             ORDER BY r.created_at DESC, r.id DESC
             LIMIT ?5"
        );
        let statuses = to_json(&statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            principal.is_admin,
            principal.owner,
            statuses,
            before.map(RunId::as_str),
            limit
        ])?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push((run_from_row(row)?, row.get("twin_name")?));
        }
        Ok(runs)
    }

    fn list_runs_page(
        &self,
        twin_id: &TwinId,
        before: Option<&RunId>,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = ?1
               AND (?2 IS NULL OR (created_at, id) <
                    (SELECT b.created_at, b.id FROM runs b WHERE b.id = ?2))
             ORDER BY created_at DESC, id DESC LIMIT ?3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![twin_id.as_str(), before.map(RunId::as_str), limit])?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push(run_from_row(row)?);
        }
        Ok(runs)
    }

    fn history_page(
        &self,
        id: &TwinId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let conn = self.conn()?;
        if let Some(before) = before {
            let known: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM twin_history WHERE twin_id = ?1 AND id = ?2)",
                params![id.as_str(), before],
                |row| row.get(0),
            )?;
            if !known {
                return Err(StoreError::NotFound(format!(
                    "history entry {before} of twin {id}"
                )));
            }
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT id, twin_id, action, from_status, to_status, actor, reason, run_id, at
             FROM twin_history WHERE twin_id = ?1 AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![id.as_str(), before, limit])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(history_from_row(row)?);
        }
        Ok(entries)
    }

    fn insert_credential(&self, stored: &StoredCredential) -> StoreResult<()> {
        let c = &stored.credential;
        self.conn()?.execute(
            "INSERT INTO credentials (id, owner, name, provider, env_keys, sealed_env, expires_at,
                                      delete_after_run, created_at, updated_at, last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                c.id.as_str(),
                c.owner,
                c.name.as_str(),
                c.provider.as_str(),
                to_json(&c.env_keys)?,
                stored.sealed_env,
                c.expires_at,
                c.delete_after_run,
                c.created_at,
                c.updated_at,
                c.last_used_at,
            ],
        )?;
        Ok(())
    }

    fn get_credential(&self, id: &CredentialId) -> StoreResult<Option<StoredCredential>> {
        let conn = self.conn()?;
        let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?1");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id.as_str()])?;
        match rows.next()? {
            Some(row) => Ok(Some(credential_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn list_credentials(&self, owner: Option<&str>) -> StoreResult<Vec<StoredCredential>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE (?1 IS NULL OR owner = ?1)
             ORDER BY created_at, id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![owner])?;
        let mut credentials = Vec::new();
        while let Some(row) = rows.next()? {
            credentials.push(credential_from_row(row)?);
        }
        Ok(credentials)
    }

    fn update_credential(&self, stored: &StoredCredential) -> StoreResult<()> {
        let c = &stored.credential;
        let changed = self.conn()?.execute(
            "UPDATE credentials SET name = ?2, provider = ?3, env_keys = ?4, sealed_env = ?5,
                    expires_at = ?6, delete_after_run = ?7, updated_at = ?8
             WHERE id = ?1",
            params![
                c.id.as_str(),
                c.name.as_str(),
                c.provider.as_str(),
                to_json(&c.env_keys)?,
                stored.sealed_env,
                c.expires_at,
                c.delete_after_run,
                c.updated_at,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("credential {}", c.id)));
        }
        Ok(())
    }

    fn delete_credential(
        &self,
        id: &CredentialId,
        detach: bool,
    ) -> StoreResult<Result<(), Vec<TwinId>>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM credentials WHERE id = ?1)",
            params![id.as_str()],
            |row| row.get(0),
        )?;
        if !exists {
            return Err(StoreError::NotFound(format!("credential {id}")));
        }
        let mut users = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT t.id FROM twin_credentials tc JOIN twins t ON t.id = tc.twin_id
                 WHERE tc.credential_id = ?1 AND t.deleted_at IS NULL
                 ORDER BY t.created_at, t.id",
            )?;
            let mut rows = stmt.query(params![id.as_str()])?;
            while let Some(row) = rows.next()? {
                users.push(parse_column(row, "id")?);
            }
        }
        if !users.is_empty() && !detach {
            return Ok(Err(users));
        }
        tx.execute(
            "DELETE FROM twin_credentials WHERE credential_id = ?1",
            params![id.as_str()],
        )?;
        tx.execute(
            "DELETE FROM credentials WHERE id = ?1",
            params![id.as_str()],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    fn run_secrets(&self, run_id: &RunId) -> StoreResult<Option<Vec<u8>>> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT secrets FROM runs WHERE id = ?1",
                params![run_id.as_str()],
                |row| row.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten())
    }

    fn run_credentials(&self, run_id: &RunId) -> StoreResult<Vec<RunCredential>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT credential_id, delete_after_run FROM run_credentials WHERE run_id = ?1
             ORDER BY credential_id",
        )?;
        let mut rows = stmt.query(params![run_id.as_str()])?;
        let mut credentials = Vec::new();
        while let Some(row) = rows.next()? {
            credentials.push(RunCredential {
                id: parse_column(row, "credential_id")?,
                delete_after_run: row.get("delete_after_run")?,
            });
        }
        Ok(credentials)
    }

    fn latest_run_of_kind(&self, twin_id: &TwinId, kind: RunKind) -> StoreResult<Option<Run>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE twin_id = ?1 AND kind = ?2
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![twin_id.as_str(), kind.as_str()])?;
        match rows.next()? {
            Some(row) => Ok(Some(run_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn try_lead(&self, task: &str, lease: Duration) -> StoreResult<bool> {
        let led: Option<String> = self
            .conn()?
            .query_row(
                "INSERT INTO leaders (task, holder, lease_until)
                 VALUES (?1, ?2, julianday('now') + ?3 / 86400.0)
                 ON CONFLICT (task) DO UPDATE
                    SET holder = excluded.holder, lease_until = excluded.lease_until
                    WHERE leaders.holder = excluded.holder
                       OR leaders.lease_until < julianday('now')
                 RETURNING holder",
                params![task, self.holder, lease.as_secs_f64()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(led.is_some())
    }

    fn restore_state_version(
        &self,
        version: &StateVersion,
        expected_previous: i64,
        twin_outputs: Option<&serde_json::Value>,
        change: &TwinChange,
    ) -> StoreResult<Restored> {
        let mut conn = self.conn()?;
        // One writer at a time: nobody takes the state lock between the look and the write.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(holder) = select_state_lock(&tx, &version.twin_id)? {
            return Ok(Restored::StateLocked(holder));
        }
        if write_twin_row(&tx, change)?.is_none()
            || !write_state_version(&tx, version, expected_previous, twin_outputs)?
        {
            return Ok(Restored::Changed);
        }
        tx.commit()?;
        Ok(Restored::Written)
    }

    fn insert_webhook(&self, hook: &StoredWebhook) -> StoreResult<()> {
        let events: Vec<&str> = hook.events.iter().map(|e| e.as_str()).collect();
        self.conn()?.execute(
            "INSERT INTO webhooks (id, owner, is_admin, url, events, description, sealed_secret, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                hook.id.as_str(),
                hook.owner,
                hook.is_admin,
                hook.url,
                to_json(&events)?,
                hook.description,
                hook.sealed_secret,
                hook.created_at,
            ],
        )?;
        Ok(())
    }

    fn list_webhooks(&self, owner: Option<&str>) -> StoreResult<Vec<StoredWebhook>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE (?1 IS NULL OR owner = ?1)
             ORDER BY created_at, id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![owner])?;
        let mut hooks = Vec::new();
        while let Some(row) = rows.next()? {
            hooks.push(webhook_from_row(row)?);
        }
        Ok(hooks)
    }

    fn get_webhook(&self, id: &WebhookId) -> StoreResult<Option<StoredWebhook>> {
        let conn = self.conn()?;
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id.as_str()])?;
        match rows.next()? {
            Some(row) => Ok(Some(webhook_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN
                 (SELECT id FROM webhook_deliveries WHERE webhook_id = ?1)",
            params![id.as_str()],
        )?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook_id = ?1",
            params![id.as_str()],
        )?;
        let deleted = tx.execute("DELETE FROM webhooks WHERE id = ?1", params![id.as_str()])?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    fn pending_messages(&self, limit: usize) -> StoreResult<Vec<OutboxMessage>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id AS message_id, event_type, owner AS message_owner, twin_id, body,
                    created_at AS message_created_at
             FROM webhook_messages WHERE fanned_out = 0 ORDER BY created_at, id LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![limit])?;
        let mut messages = Vec::new();
        while let Some(row) = rows.next()? {
            messages.push(message_from_row(row)?);
        }
        Ok(messages)
    }

    fn fan_out_message(&self, id: &MessageId, deliveries: &[NewDelivery]) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = tx.execute(
            "UPDATE webhook_messages SET fanned_out = 1 WHERE id = ?1 AND fanned_out = 0",
            params![id.as_str()],
        )?;
        if claimed == 0 {
            return Ok(false);
        }
        let now = clock::now();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO webhook_deliveries (id, message_id, webhook_id, status, attempts,
                                                 next_attempt_at, created_at, updated_at)
                 SELECT ?1, ?2, ?3, 'pending', 0, ?4, ?5, ?5
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?3)",
            )?;
            for delivery in deliveries {
                insert.execute(params![
                    delivery.id.as_str(),
                    id.as_str(),
                    delivery.webhook_id.as_str(),
                    delivery.next_attempt_at,
                    now,
                ])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    fn claim_deliveries(
        &self,
        worker: &str,
        now: &str,
        lease_until: &str,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A look without the write lock first: most polls find nothing due.
        let any_due: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE {DELIVERY_DUE})"),
            params![now],
            |row| row.get(0),
        )?;
        if !any_due {
            return Ok(Vec::new());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let due: Vec<String> = {
            let sql = format!(
                "SELECT id FROM webhook_deliveries WHERE {DELIVERY_DUE}
                 ORDER BY next_attempt_at, id LIMIT ?2"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![now, limit], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut claimed = Vec::new();
        for id in due {
            let sql = format!(
                "UPDATE webhook_deliveries SET status = 'sending', claimed_by = ?2,
                        claimed_until = ?3, updated_at = ?1
                 WHERE id = ?4 AND {DELIVERY_DUE}"
            );
            if tx.execute(&sql, params![now, worker, lease_until, id])? == 0 {
                continue;
            }
            let sql = format!("{CLAIMED_SELECT} WHERE d.id = ?1");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![id])?;
            if let Some(row) = rows.next()? {
                claimed.push(claimed_from_row(row)?);
            }
        }
        tx.commit()?;
        Ok(claimed)
    }

    fn record_attempt(
        &self,
        worker: &str,
        attempt: &DeliveryAttempt,
        next: &DeliveryNext,
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (status, next_at) = match next {
            DeliveryNext::Succeeded => ("succeeded", None),
            DeliveryNext::Retry { at } => ("pending", Some(at.as_str())),
            DeliveryNext::Failed => ("failed", None),
        };
        let changed = tx.execute(
            "UPDATE webhook_deliveries SET status = ?3, attempts = ?4, next_attempt_at = ?5,
                    claimed_by = NULL, claimed_until = NULL, updated_at = ?6
             WHERE id = ?1 AND status = 'sending' AND claimed_by = ?2",
            params![
                attempt.delivery_id.as_str(),
                worker,
                status,
                attempt.number,
                next_at,
                clock::now(),
            ],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, number, attempted_at, status_code, error, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                attempt.delivery_id.as_str(),
                attempt.number,
                attempt.attempted_at,
                attempt.status_code,
                attempt.error,
                i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn append_audit(&self, entry: &NewAudit, at: &str) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                at,
                entry.actor,
                entry.action.as_str(),
                entry.target,
                entry.reason
            ],
        )?;
        Ok(())
    }

    fn audit_page(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, reason FROM audit_log
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after.unwrap_or(0), limit])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(AuditEntry {
                id: row.get("id")?,
                at: row.get("at")?,
                actor: row.get("actor")?,
                action: row.get("action")?,
                target: row.get("target")?,
                reason: row.get("reason")?,
            });
        }
        Ok(entries)
    }

    fn purge_twin(&self, id: &TwinId, version: i64) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM twins WHERE id = ?1",
                params![id.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        if current != Some(version) {
            return Ok(false);
        }
        for sql in PURGE_TWIN {
            tx.execute(sql, params![id.as_str()])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn deleted_before(&self, cutoff: &str) -> StoreResult<Vec<TwinId>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM twins WHERE deleted_at IS NOT NULL AND deleted_at < ?1
             ORDER BY deleted_at, id",
        )?;
        let mut rows = stmt.query(params![cutoff])?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(parse_column(row, "id")?);
        }
        Ok(ids)
    }

    fn list_deliveries(&self, id: &WebhookId, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        let conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.message_id, m.event_type, d.status, d.next_attempt_at, d.created_at
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
             WHERE d.webhook_id = ?1 ORDER BY d.created_at DESC, d.id DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![id.as_str(), limit])?;
        let mut deliveries = Vec::new();
        while let Some(row) = rows.next()? {
            deliveries.push(DeliveryRecord {
                id: parse_column(row, "id")?,
                message_id: parse_column(row, "message_id")?,
                event_type: parse_column(row, "event_type")?,
                status: parse_column(row, "status")?,
                next_attempt_at: row.get("next_attempt_at")?,
                created_at: row.get("created_at")?,
                attempts: Vec::new(),
            });
        }
        let mut attempts = conn.prepare_cached(
            "SELECT number, attempted_at, status_code, error, duration_ms FROM webhook_attempts
             WHERE delivery_id = ?1 ORDER BY number",
        )?;
        for delivery in &mut deliveries {
            let mut rows = attempts.query(params![delivery.id.as_str()])?;
            while let Some(row) = rows.next()? {
                delivery.attempts.push(DeliveryAttempt {
                    delivery_id: delivery.id.clone(),
                    number: row.get("number")?,
                    attempted_at: row.get("attempted_at")?,
                    status_code: row.get("status_code")?,
                    error: row.get("error")?,
                    duration_ms: u64::try_from(row.get::<_, i64>("duration_ms")?)
                        .map_err(corrupt)?,
                });
            }
        }
        Ok(deliveries)
    }
}

const RUN_COLUMNS: &str =
    "id, twin_id, kind, status, stage, progress, actor, created_at, start_time, \
     end_time, exit_code, error, message, outputs, result, step_index, step_name, step_dir, \
     step_started_at, monitor_pid, monitor_start, spool_offset, applies_plan, owner_replica, \
     cancel_requested, log_level";

fn run_from_row(row: &Row<'_>) -> StoreResult<Run> {
    let outputs: Option<String> = row.get("outputs")?;
    let progress: i64 = row.get("progress")?;
    Ok(Run {
        id: parse_column(row, "id")?,
        twin_id: parse_column(row, "twin_id")?,
        kind: parse_column(row, "kind")?,
        status: parse_column(row, "status")?,
        stage: parse_optional_column(row, "stage")?,
        progress: u8::try_from(progress.clamp(0, 100)).unwrap_or(0),
        actor: row.get("actor")?,
        created_at: row.get("created_at")?,
        start_time: row.get("start_time")?,
        end_time: row.get("end_time")?,
        exit_code: row.get("exit_code")?,
        error: row.get("error")?,
        message: row.get("message")?,
        outputs: outputs
            .map(|text| serde_json::from_str(&text).map_err(corrupt))
            .transpose()?,
        result: row
            .get::<_, Option<String>>("result")?
            .map(|text| serde_json::from_str(&text).map_err(corrupt))
            .transpose()?,
        step: step_from_row(row)?,
        applies_plan: parse_optional_column(row, "applies_plan")?,
        owner: parse_optional_column(row, "owner_replica")?,
        cancel_requested: row.get("cancel_requested")?,
        log_level: parse_optional_column(row, "log_level")?,
    })
}

fn step_from_row(row: &Row<'_>) -> StoreResult<Option<RunStep>> {
    let Some(index) = row.get::<_, Option<u32>>("step_index")? else {
        return Ok(None);
    };
    let monitor = match (
        row.get::<_, Option<i32>>("monitor_pid")?,
        row.get::<_, Option<i64>>("monitor_start")?,
    ) {
        (Some(pid), Some(start)) => Some(MonitorId {
            pid,
            start_ticks: u64::try_from(start).map_err(corrupt)?,
        }),
        _ => None,
    };
    Ok(Some(RunStep {
        index,
        name: row
            .get::<_, Option<String>>("step_name")?
            .unwrap_or_default(),
        dir: row
            .get::<_, Option<String>>("step_dir")?
            .unwrap_or_default(),
        started_at: row
            .get::<_, Option<String>>("step_started_at")?
            .unwrap_or_default(),
        monitor,
        spool_offset: u64::try_from(row.get::<_, i64>("spool_offset")?).map_err(corrupt)?,
    }))
}

fn select_run(conn: &rusqlite::Connection, id: &RunId) -> StoreResult<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(run_from_row(row)?)),
        None => Ok(None),
    }
}

/// The run's end and its twin's new row; false when the twin has changed since the end was
/// decided (the caller decides again).
fn finish_run(tx: &Transaction<'_>, finish: &RunFinish) -> StoreResult<bool> {
    if let Some(change) = &finish.twin {
        if write_twin_row(tx, change)?.is_none() {
            return Ok(false);
        }
    }
    let outputs_json = finish.outputs.as_ref().map(to_json).transpose()?;
    tx.execute(
        "UPDATE runs SET status = ?2, exit_code = ?3, error = ?4, message = ?5, outputs = ?6,
                end_time = ?7, result = ?8, monitor_pid = NULL, monitor_start = NULL,
                secrets = NULL,
                progress = CASE WHEN ?2 = 'completed' THEN 100 ELSE progress END
         WHERE id = ?1",
        params![
            finish.run_id.as_str(),
            finish.outcome.run_status().as_str(),
            finish.exit_code,
            finish.error,
            finish.message,
            outputs_json,
            finish.ended_at,
            finish.result.as_ref().map(to_json).transpose()?,
        ],
    )?;
    for credential in &finish.delete_credentials {
        tx.execute(
            "DELETE FROM twin_credentials WHERE credential_id = ?1",
            params![credential.as_str()],
        )?;
        tx.execute(
            "DELETE FROM credentials WHERE id = ?1",
            params![credential.as_str()],
        )?;
    }
    insert_messages(tx, &finish.messages)?;
    Ok(true)
}

/// Inserts a state version if the twin's newest is still `expected_previous`, making
/// `twin_outputs` the twin's, in the caller's transaction; false when another write came first.
fn write_state_version(
    tx: &Transaction<'_>,
    v: &StateVersion,
    expected_previous: i64,
    twin_outputs: Option<&serde_json::Value>,
) -> StoreResult<bool> {
    // Version n+1 exists only if version n was the newest: the primary key makes a racing
    // writer's insert a no-op, and a stale expectation one too.
    let newest: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM state_versions WHERE twin_id = ?1",
        params![v.twin_id.as_str()],
        |row| row.get(0),
    )?;
    if newest != expected_previous {
        return Ok(false);
    }
    let inserted = tx.execute(
        "INSERT INTO state_versions (twin_id, version, serial, lineage, md5, size, resource_count, run_id, actor, created_at, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (twin_id, version) DO NOTHING",
        params![
            v.twin_id.as_str(),
            v.version,
            v.serial,
            v.lineage,
            v.md5,
            v.size,
            v.resource_count,
            v.run_id.as_ref().map(RunId::as_str),
            v.actor,
            v.created_at,
            v.ciphertext,
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE twins SET terraform_outputs = ?2 WHERE id = ?1",
        params![v.twin_id.as_str(), twin_outputs.map(to_json).transpose()?],
    )?;
    Ok(true)
}

const STATE_COLUMNS: &str =
    "twin_id, version, serial, lineage, md5, size, resource_count, run_id, actor, created_at";

fn state_from_row(row: &Row<'_>, with_ciphertext: bool) -> StoreResult<StateVersion> {
    Ok(StateVersion {
        twin_id: parse_column(row, "twin_id")?,
        version: row.get("version")?,
        serial: row.get("serial")?,
        lineage: row.get("lineage")?,
        md5: row.get("md5")?,
        size: row.get("size")?,
        resource_count: row.get("resource_count")?,
        run_id: parse_optional_column(row, "run_id")?,
        actor: row.get("actor")?,
        created_at: row.get("created_at")?,
        ciphertext: if with_ciphertext {
            row.get("ciphertext")?
        } else {
            Vec::new()
        },
    })
}

fn select_state(
    conn: &rusqlite::Connection,
    sql_tail: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Option<StateVersion>> {
    let sql = format!("SELECT {STATE_COLUMNS}, ciphertext FROM state_versions {sql_tail}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    match rows.next()? {
        Some(row) => Ok(Some(state_from_row(row, true)?)),
        None => Ok(None),
    }
}

fn select_state_lock(
    conn: &rusqlite::Connection,
    twin_id: &TwinId,
) -> StoreResult<Option<StateLock>> {
    let mut stmt = conn.prepare_cached(
        "SELECT lock_id, info, run_id, created_at FROM state_locks WHERE twin_id = ?1",
    )?;
    let row = stmt
        .query_row(params![twin_id.as_str()], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get(3)?,
            ))
        })
        .optional()?;
    row.map(|(lock_id, info, run_id, created_at)| {
        let run_id = run_id.map(|r| r.parse().map_err(corrupt)).transpose()?;
        Ok(StateLock {
            lock_id,
            info,
            run_id,
            created_at,
        })
    })
    .transpose()
}

const CREDENTIAL_COLUMNS: &str = "id, owner, name, provider, env_keys, sealed_env, expires_at, \
     delete_after_run, created_at, updated_at, last_used_at";

fn credential_from_row(row: &Row<'_>) -> StoreResult<StoredCredential> {
    Ok(StoredCredential {
        credential: Credential {
            id: parse_column(row, "id")?,
            owner: row.get("owner")?,
            name: CredentialName::parse(&row.get::<_, String>("name")?).map_err(corrupt)?,
            provider: parse_column(row, "provider")?,
            env_keys: parse_json_column(row, "env_keys")?,
            expires_at: row.get("expires_at")?,
            delete_after_run: row.get("delete_after_run")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            last_used_at: row.get("last_used_at")?,
        },
        sealed_env: row.get("sealed_env")?,
    })
}

const WEBHOOK_COLUMNS: &str =
    "id, owner, is_admin, url, events, description, sealed_secret, created_at";

fn webhook_from_row(row: &Row<'_>) -> StoreResult<StoredWebhook> {
    let events: Vec<String> = parse_json_column(row, "events")?;
    Ok(StoredWebhook {
        id: parse_column(row, "id")?,
        owner: row.get("owner")?,
        is_admin: row.get("is_admin")?,
        url: row.get("url")?,
        events: events
            .iter()
            .map(|e| e.parse::<EventType>().map_err(corrupt))
            .collect::<StoreResult<_>>()?,
        description: row.get("description")?,
        sealed_secret: row.get("sealed_secret")?,
        created_at: row.get("created_at")?,
    })
}

fn message_from_row(row: &Row<'_>) -> StoreResult<OutboxMessage> {
    Ok(OutboxMessage {
        id: parse_column(row, "message_id")?,
        event_type: parse_column(row, "event_type")?,
        owner: row.get("message_owner")?,
        twin_id: parse_optional_column(row, "twin_id")?,
        body: row.get("body")?,
        created_at: row.get("message_created_at")?,
    })
}

/// A claimed delivery with its webhook and message.
const CLAIMED_SELECT: &str = "SELECT d.id, d.webhook_id, d.attempts, w.url, w.sealed_secret,
        m.id AS message_id, m.event_type, m.owner AS message_owner, m.twin_id, m.body,
        m.created_at AS message_created_at
     FROM webhook_deliveries d
     JOIN webhooks w ON w.id = d.webhook_id
     JOIN webhook_messages m ON m.id = d.message_id";

fn claimed_from_row(row: &Row<'_>) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id: parse_column(row, "id")?,
        message: message_from_row(row)?,
        webhook_id: parse_column(row, "webhook_id")?,
        url: row.get("url")?,
        sealed_secret: row.get("sealed_secret")?,
        attempts: row.get("attempts")?,
    })
}

/// A due delivery: waiting for its next attempt, or claimed under a lease that ended (its
/// worker died mid-send).
const DELIVERY_DUE: &str = "((status = 'pending' AND next_attempt_at <= ?1)
     OR (status = 'sending' AND claimed_until <= ?1))";

/// What a purge deletes, children first; each statement takes the twin's id as `?1`.
const PURGE_TWIN: &[&str] = &[
    "DELETE FROM run_events WHERE run_id IN (SELECT id FROM runs WHERE twin_id = ?1)",
    "DELETE FROM run_credentials WHERE run_id IN (SELECT id FROM runs WHERE twin_id = ?1)",
    "DELETE FROM run_grants WHERE twin_id = ?1",
    "DELETE FROM plans WHERE twin_id = ?1",
    "DELETE FROM runs WHERE twin_id = ?1",
    "DELETE FROM state_locks WHERE twin_id = ?1",
    "DELETE FROM state_versions WHERE twin_id = ?1",
    "DELETE FROM twin_credentials WHERE twin_id = ?1",
    "DELETE FROM twin_history WHERE twin_id = ?1",
    "DELETE FROM twins WHERE id = ?1",
];
