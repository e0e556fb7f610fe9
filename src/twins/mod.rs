//! The twins service: the one way to change a twin. Each change reads the twin, asks the
//! domain what the new row is (or why not), and writes it only while the twin is still at the
//! version it was read at; a change that lost a race is decided again on the twin as it is
//! now. So of many racing requests exactly one wins, under SQLite's single writer and
//! PostgreSQL's concurrent ones alike, and the stores hold no rule. A twin's sensitive
//! variables are sealed by the vault before they reach a row, and it may name only its
//! owner's credentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock;
use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::{
    CredentialId, DeploymentStatus, HistoryEntry, NewHistory, NewTwin, Principal, Provider,
    Refusal, Run, RunId, StatusMove, Twin, TwinChange, TwinFiles, TwinId, TwinName, TwinUpdate,
    VariableInput,
};
use crate::state::{StateError, StateService};
use crate::store::{run_blocking, NewRun, Store, StoreError};
use crate::vault::{Vault, VaultError};

/// How often a change is decided again after losing a race, before it gives up (only a twin
/// changed that often in that instant gets there).
const ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Its credentials or sensitive variables refuse the change, or cannot be sealed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("twin {0} kept changing; try again")]
    Busy(TwinId),
}

/// A new twin as a caller gives it, checked; its variables as given (some marked sensitive).
#[derive(Debug, Clone)]
pub struct NewTwinInput {
    pub name: TwinName,
    pub provider: Provider,
    pub files: TwinFiles,
    pub variables: BTreeMap<String, VariableInput>,
    pub credential_ids: Vec<CredentialId>,
}

/// A change to a twin's configuration as a caller gives it; `None` keeps what is there. New
/// variables replace all of them (a sensitive one given back as the mask keeps its value).
#[derive(Debug, Clone, Default)]
pub struct TwinEdit {
    pub name: Option<TwinName>,
    pub files: Option<TwinFiles>,
    pub variables: Option<BTreeMap<String, VariableInput>>,
    pub credential_ids: Option<Vec<CredentialId>>,
}

impl TwinEdit {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.files.is_none()
            && self.variables.is_none()
            && self.credential_ids.is_none()
    }
}

impl From<StoreError> for TwinError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => TwinError::NotFound(what),
            other => TwinError::Store(other),
        }
    }
}

pub struct Twins {
    store: Arc<dyn Store>,
    state: Arc<StateService>,
    vault: Arc<Vault>,
}

impl Twins {
    pub fn new(store: Arc<dyn Store>, state: Arc<StateService>, vault: Arc<Vault>) -> Self {
        Self {
            store,
            state,
            vault,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A twin, deleted or not.
    pub async fn get(&self, id: &TwinId) -> Result<Twin, TwinError> {
        let lookup = id.clone();
        run_blocking(&self.store, move |s| s.get_twin(&lookup))
            .await?
            .ok_or_else(|| TwinError::NotFound(format!("twin {id}")))
    }

    /// A twin the caller may see; another owner's twin is as missing as one never made.
    pub async fn visible(&self, principal: &Principal, raw_id: &str) -> Result<Twin, TwinError> {
        let shown: String = raw_id.chars().take(80).collect();
        let id: TwinId = raw_id
            .parse()
            .map_err(|_| TwinError::NotFound(format!("twin '{shown}'")))?;
        let twin = self.get(&id).await?;
        if !principal.may_access(&twin.owner) {
            return Err(TwinError::NotFound(format!("twin {id}")));
        }
        Ok(twin)
    }

    pub async fn list(
        &self,
        principal: &Principal,
        include_deleted: bool,
    ) -> Result<Vec<Twin>, TwinError> {
        let principal = principal.clone();
        Ok(run_blocking(&self.store, move |s| {
            s.list_twins(&principal, include_deleted)
        })
        .await?)
    }

    /// The history row of a twin's creation.
    pub fn created(actor: &str) -> NewHistory {
        NewHistory {
            action: "created",
            from: None,
            to: Some(DeploymentStatus::Draft),
            actor: actor.to_owned(),
            reason: None,
            run_id: None,
        }
    }

    /// Creates a twin with its empty first state.
    pub async fn create(&self, new: NewTwin, actor: &str) -> Result<Twin, TwinError> {
        let name = new.name.to_string();
        let history = Self::created(actor);
        let state = Arc::clone(&self.state);
        let actor = actor.to_owned();
        let created = crate::store::blocking(move || state.create_twin(new, &history, &actor))
            .await
            .map_err(TwinError::Store)?;
        match created {
            Err(StateError::Store(StoreError::Duplicate(_))) => {
                Err(TwinError::Refused(Refusal::NameTaken { name }))
            }
            other => Ok(other?),
        }
    }

    /// Creates the caller's twin: its credentials must be the caller's, its sensitive
    /// variables are sealed.
    pub async fn create_for(
        &self,
        principal: &Principal,
        input: NewTwinInput,
    ) -> Result<Twin, TwinError> {
        let id = TwinId::generate();
        let credential_ids = self
            .checked_credentials(principal, &principal.owner, input.credential_ids)
            .await?;
        let (variables, secret_variables) =
            self.vault.seal_variables(&id, input.variables, None)?;
        let new = NewTwin {
            id,
            owner: principal.owner.clone(),
            name: input.name,
            provider: input.provider,
            files: input.files,
            variables,
            secret_variables,
            credential_ids,
        };
        let twin = self.create(new, &principal.owner).await?;
        self.audit(
            NewAudit::new(&principal.owner, AuditAction::TwinCreated, &twin.id)
                .because(format!("named '{}'", twin.name)),
        )
        .await;
        Ok(twin)
    }

    async fn audit(&self, entry: NewAudit) {
        crate::audit::record_async(&self.store, entry).await;
    }

    /// Credentials a twin of `owner` may name, checked against the store (off the runtime).
    async fn checked_credentials(
        &self,
        principal: &Principal,
        owner: &str,
        ids: Vec<CredentialId>,
    ) -> Result<Vec<CredentialId>, TwinError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let (vault, principal, owner) =
            (Arc::clone(&self.vault), principal.clone(), owner.to_owned());
        Ok(
            crate::store::blocking(move || vault.check_credentials(&principal, &owner, ids))
                .await??,
        )
    }

    /// Decides a change on the twin as it is and writes it, again and again while it loses
    /// races. A name taken by another live twin is a refusal like any other.
    pub async fn change<F, E>(&self, id: &TwinId, decide: F) -> Result<Twin, TwinError>
    where
        F: Fn(&Twin, &str) -> Result<TwinChange, E>,
        TwinError: From<E>,
    {
        for _ in 0..ATTEMPTS {
            let twin = self.get(id).await?;
            let change = decide(&twin, &clock::now()).map_err(TwinError::from)?;
            let name = change.name.to_string();
            let written = run_blocking(&self.store, move |s| s.write_twin(&change)).await;
            match written {
                Ok(Some(twin)) => return Ok(twin),
                Ok(None) => continue,
                Err(StoreError::Duplicate(_)) => {
                    return Err(TwinError::Refused(Refusal::NameTaken { name }))
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(TwinError::Busy(id.clone()))
    }

    /// A change of the twin's configuration by `principal` (who may see it): credentials
    /// must be the twin owner's; sensitive variables are sealed against the twin as it is
    /// when the change is decided, so one sent back as the mask keeps the value it has then.
    pub async fn edit(
        &self,
        principal: &Principal,
        twin: &Twin,
        edit: TwinEdit,
    ) -> Result<Twin, TwinError> {
        let changed: Vec<&str> = [
            ("name", edit.name.is_some()),
            ("files", edit.files.is_some()),
            ("variables", edit.variables.is_some()),
            ("credential_ids", edit.credential_ids.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, given)| given.then_some(field))
        .collect();
        let reason = format!("changed {}", changed.join(", "));
        let credential_ids = match edit.credential_ids {
            Some(ids) => Some(
                self.checked_credentials(principal, &twin.owner, ids)
                    .await?,
            ),
            None => None,
        };
        let actor = principal.owner.as_str();
        let edited = self
            .change(&twin.id, |current, now| -> Result<TwinChange, TwinError> {
                let variables = edit
                    .variables
                    .clone()
                    .map(|inputs| {
                        self.vault
                            .seal_variables(&current.id, inputs, Some(current))
                    })
                    .transpose()?;
                let update = TwinUpdate {
                    name: edit.name.clone(),
                    files: edit.files.clone(),
                    variables,
                    credential_ids: credential_ids.clone(),
                };
                Ok(current.edited(&update, actor, now)?)
            })
            .await?;
        self.audit(NewAudit::new(actor, AuditAction::TwinUpdated, &twin.id).because(reason))
            .await;
        Ok(edited)
    }

    pub async fn soft_delete(&self, id: &TwinId, actor: &str) -> Result<Twin, TwinError> {
        let deleted = self
            .change(id, |twin, now| twin.soft_deleted(actor, now))
            .await?;
        self.audit(NewAudit::new(actor, AuditAction::TwinDeleted, id))
            .await;
        Ok(deleted)
    }

    /// Soft-deletes each of `ids` the caller may see, by the rules of a single delete; one
    /// result per id, in order (an id given twice is already deleted the second time).
    pub async fn soft_delete_each(
        &self,
        principal: &Principal,
        ids: &[String],
    ) -> Vec<(String, Result<Twin, TwinError>)> {
        let mut results = Vec::with_capacity(ids.len());
        for raw in ids {
            let deleted = match self.visible(principal, raw).await {
                Ok(twin) => self.soft_delete(&twin.id, &principal.owner).await,
                Err(err) => Err(err),
            };
            results.push((raw.clone(), deleted));
        }
        results
    }

    pub async fn restore(&self, id: &TwinId, actor: &str) -> Result<Twin, TwinError> {
        let restored = self
            .change(id, |twin, now| twin.restored(actor, now))
            .await?;
        self.audit(NewAudit::new(actor, AuditAction::TwinRestored, id))
            .await;
        Ok(restored)
    }

    /// A status set by hand (an admin's repair, or an owner keeping resources after a failed
    /// destroy): a move of the status machine, audited.
    pub async fn set_status(&self, id: &TwinId, change: StatusMove) -> Result<Twin, TwinError> {
        let entry = NewAudit::new(&change.actor, AuditAction::TwinStatusSet, id);
        let reason = change.reason.clone().unwrap_or_default();
        let moved = self.move_status(id, change).await?;
        self.audit(entry.because(format!("{} ({reason})", moved.deployment_status)))
            .await;
        Ok(moved)
    }

    /// Removes a soft-deleted twin for good: its row, runs and their events, plans, state
    /// versions and history, while it is still as decided (deleted, unlocked, no run working,
    /// no resource in its state). Answers the removed runs' ids, whose files the caller
    /// removes. The audit entry stays.
    pub async fn purge(&self, twin: &Twin, actor: &str) -> Result<Vec<RunId>, TwinError> {
        for _ in 0..ATTEMPTS {
            let current = self.get(&twin.id).await?;
            let (id, lookup) = (current.id.clone(), current.id.clone());
            let (runs, state) = run_blocking(&self.store, move |s| {
                Ok((s.list_runs(&lookup)?, s.current_state(&lookup)?))
            })
            .await?;
            let working = runs.iter().any(|run| !run.status.is_finished());
            let resources = state.map_or(0, |version| version.resource_count);
            current.purgeable(working, resources)?;
            let version = current.version;
            if run_blocking(&self.store, move |s| s.purge_twin(&id, version)).await? {
                self.audit(
                    NewAudit::new(actor, AuditAction::TwinPurged, &twin.id).because(format!(
                        "'{}', deleted {}",
                        current.name,
                        current.deleted_at.as_deref().unwrap_or("?")
                    )),
                )
                .await;
                return Ok(runs.into_iter().map(|run| run.id).collect());
            }
        }
        Err(TwinError::Busy(twin.id.clone()))
    }

    /// A status move per the status machine, with its history row.
    pub async fn move_status(&self, id: &TwinId, change: StatusMove) -> Result<Twin, TwinError> {
        self.change(id, |twin, now| twin.moved(&change, None, now))
            .await
    }

    /// The status set to match reality (a refresh), outside the status machine.
    pub async fn reconcile(
        &self,
        id: &TwinId,
        to: DeploymentStatus,
        actor: &str,
        reason: &str,
    ) -> Result<Twin, TwinError> {
        self.change(id, |twin, now| twin.reconciled(to, actor, reason, now))
            .await
    }

    /// Creates a run, and for one that changes infrastructure moves (or reserves) the twin in
    /// the same transaction.
    pub async fn start_run(
        &self,
        run: NewRun,
        request: Option<StatusMove>,
    ) -> Result<(Run, Twin), TwinError> {
        for _ in 0..ATTEMPTS {
            let twin = self.get(&run.twin_id).await?;
            let change = match &request {
                Some(request) => Some(twin.moved(request, Some(&run.id), &clock::now())?),
                None => {
                    twin.readable()?;
                    None
                }
            };
            let new = run.clone();
            let started =
                run_blocking(&self.store, move |s| s.start_run(new, change.as_ref())).await?;
            if let Some(started) = started {
                return Ok(started);
            }
        }
        Err(TwinError::Busy(run.twin_id.clone()))
    }

    pub async fn history(&self, id: &TwinId) -> Result<Vec<HistoryEntry>, TwinError> {
        let id = id.clone();
        Ok(run_blocking(&self.store, move |s| s.history(&id)).await?)
    }

    /// A run and its twin, if the caller may see the twin.
    pub async fn visible_run(&self, principal: &Principal, raw_id: &str) -> Result<Run, TwinError> {
        let shown: String = raw_id.chars().take(80).collect();
        let missing = || TwinError::NotFound(format!("run '{shown}'"));
        let id: RunId = raw_id.parse().map_err(|_| missing())?;
        let run = run_blocking(&self.store, move |s| s.get_run(&id))
            .await?
            .ok_or_else(missing)?;
        match self.get(&run.twin_id).await {
            Ok(twin) if principal.may_access(&twin.owner) => Ok(run),
            _ => Err(missing()),
        }
    }
}
