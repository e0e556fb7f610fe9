//! What may happen to a twin, decided here and nowhere else: a status move (the status
//! machine plus the run lock), an edit, a soft delete, a restore. Each decision reads the twin
//! as it is and answers either the whole new row ([`TwinChange`], written by a store only if the
//! twin is still at the version it was read at) or why not ([`Refusal`]). A change carries the
//! webhook messages that report it ([`events`]), written in its transaction. The stores hold
//! SQL only, so SQLite and PostgreSQL cannot disagree about a rule.

use std::fmt;

use super::events::{self, OutboxMessage};
use super::{
    CredentialId, DeploymentStatus, RunId, SealedVariables, Twin, TwinFiles, TwinId, TwinName,
    TwinUpdate, Variables,
};

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

/// A requested status move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMove {
    pub to: DeploymentStatus,
    pub actor: String,
    pub reason: Option<String>,
    pub lock: LockChange,
}

/// A history row to write with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHistory {
    pub action: &'static str,
    pub from: Option<DeploymentStatus>,
    pub to: Option<DeploymentStatus>,
    pub actor: String,
    pub reason: Option<String>,
    pub run_id: Option<RunId>,
}

/// A twin's new row, decided from the twin at `expected_version`. Outputs are not part of it:
/// they follow the twin's state versions.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinChange {
    pub id: TwinId,
    pub expected_version: i64,
    pub name: TwinName,
    pub files: TwinFiles,
    pub variables: Variables,
    pub secret_variables: SealedVariables,
    /// `Some`: the twin's credentials become these, in order; `None` leaves them as they are.
    pub credential_ids: Option<Vec<CredentialId>>,
    pub status: DeploymentStatus,
    /// The run holding the lock (locked while `Some`).
    pub locked_by: Option<RunId>,
    pub deleted_at: Option<String>,
    pub last_deployed_at: Option<String>,
    pub updated_at: String,
    pub history: Vec<NewHistory>,
    /// The webhook messages reporting the change.
    pub messages: Vec<OutboxMessage>,
}

/// How a run's end moves its twin: its final status move (letting go of the lock), or only
/// letting go of a lock it reserved, and whether it deployed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwinEnd {
    pub twin_move: Option<StatusMove>,
    pub release: Option<RunId>,
    pub deployed: bool,
}

impl TwinEnd {
    /// The twin's new row at the end of `run`, decided from the twin as it is now; `None` when
    /// nothing changes.
    pub fn decide(
        &self,
        twin: &Twin,
        run: &RunId,
        now: &str,
    ) -> Result<Option<TwinChange>, Refusal> {
        if let Some(request) = &self.twin_move {
            let change = twin.moved(request, Some(run), now)?;
            return Ok(Some(if self.deployed {
                Twin::deployed(change, now)
            } else {
                change
            }));
        }
        Ok(self
            .release
            .as_ref()
            .and_then(|holder| twin.released(holder, now)))
    }
}

/// Why a change was refused, in a client's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Deleted {
        twin: TwinId,
    },
    AlreadyDeleted {
        twin: TwinId,
    },
    NotDeleted {
        twin: TwinId,
    },
    Locked {
        twin: TwinId,
        by: Option<RunId>,
        status: DeploymentStatus,
        action: &'static str,
    },
    LockNotHeld {
        twin: TwinId,
        status: DeploymentStatus,
    },
    InvalidTransition {
        twin: TwinId,
        from: DeploymentStatus,
        to: DeploymentStatus,
    },
    ResourcesDeployed {
        twin: TwinId,
        status: DeploymentStatus,
    },
    NameTaken {
        name: String,
    },
    /// Its state still holds resources (a purge would forget what exists in the cloud).
    ResourcesInState {
        twin: TwinId,
        resources: i64,
    },
    /// A run of it is still working.
    RunWorking {
        twin: TwinId,
    },
}

impl Refusal {
    /// A stable code a client can act on.
    pub const fn code(&self) -> &'static str {
        match self {
            Refusal::Deleted { .. } => "twin_deleted",
            Refusal::AlreadyDeleted { .. } => "already_deleted",
            Refusal::NotDeleted { .. } => "not_deleted",
            Refusal::Locked { .. } => "twin_locked",
            Refusal::LockNotHeld { .. } => "lock_not_held",
            Refusal::InvalidTransition { .. } => "invalid_transition",
            Refusal::ResourcesDeployed { .. } => "resources_deployed",
            Refusal::NameTaken { .. } => "name_taken",
            Refusal::ResourcesInState { .. } => "resources_in_state",
            Refusal::RunWorking { .. } => "run_working",
        }
    }

    /// The twin's status, where the refusal is about it.
    pub const fn status(&self) -> Option<DeploymentStatus> {
        match self {
            Refusal::Locked { status, .. }
            | Refusal::LockNotHeld { status, .. }
            | Refusal::ResourcesDeployed { status, .. } => Some(*status),
            Refusal::InvalidTransition { from, .. } => Some(*from),
            _ => None,
        }
    }

    /// The run holding the lock, for a refusal because of it.
    pub fn active_job_id(&self) -> Option<&RunId> {
        match self {
            Refusal::Locked { by, .. } => by.as_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Deleted { twin } => write!(f, "twin {twin} is deleted; restore it first"),
            Refusal::AlreadyDeleted { twin } => write!(f, "twin {twin} is already deleted"),
            Refusal::NotDeleted { twin } => write!(f, "twin {twin} is not deleted"),
            Refusal::Locked {
                twin, by, action, ..
            } => {
                let holder = by.as_ref().map(RunId::to_string).unwrap_or_default();
                write!(
                    f,
                    "twin {twin} is locked by run {holder}; cannot {action} it now"
                )
            }
            Refusal::LockNotHeld { twin, .. } => write!(f, "twin {twin} is not locked by this run"),
            Refusal::InvalidTransition { twin, from, to } => {
                write!(f, "twin {twin} cannot move from {from} to {to}")
            }
            Refusal::ResourcesDeployed { twin, status } => write!(
                f,
                "twin {twin} is {status} and may still own cloud resources; destroy it first"
            ),
            Refusal::NameTaken { name } => write!(f, "you already have a twin named '{name}'"),
            Refusal::ResourcesInState { twin, resources } => write!(
                f,
                "twin {twin}'s state still holds {resources} resource(s); restore it and destroy them first"
            ),
            Refusal::RunWorking { twin } => {
                write!(f, "a run of twin {twin} is still working; wait for it or cancel it")
            }
        }
    }
}

impl std::error::Error for Refusal {}

impl Twin {
    /// The twin's row as it is, to change from.
    fn change(&self, now: &str) -> TwinChange {
        TwinChange {
            id: self.id.clone(),
            expected_version: self.version,
            name: self.name.clone(),
            files: self.files.clone(),
            variables: self.variables.clone(),
            secret_variables: self.secret_variables.clone(),
            credential_ids: None,
            status: self.deployment_status,
            locked_by: self.active_job_id.clone(),
            deleted_at: self.deleted_at.clone(),
            last_deployed_at: self.last_deployed_at.clone(),
            updated_at: now.to_owned(),
            history: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn check_live(&self) -> Result<(), Refusal> {
        if self.is_deleted() {
            return Err(Refusal::Deleted {
                twin: self.id.clone(),
            });
        }
        Ok(())
    }

    fn check_unlocked(&self, action: &'static str) -> Result<(), Refusal> {
        if self.is_locked {
            return Err(Refusal::Locked {
                twin: self.id.clone(),
                by: self.active_job_id.clone(),
                status: self.deployment_status,
                action,
            });
        }
        Ok(())
    }

    /// A status move: allowed by the status machine, with the lock as `change.lock` expects.
    /// `run_id` names the run in the history row when the lock change does not.
    pub fn moved(
        &self,
        change: &StatusMove,
        run_id: Option<&RunId>,
        now: &str,
    ) -> Result<TwinChange, Refusal> {
        self.check_live()?;
        let lock_ok = match &change.lock {
            LockChange::None | LockChange::Acquire(_) | LockChange::Reserve(_) => !self.is_locked,
            LockChange::Release(run) | LockChange::Keep(run) => {
                self.active_job_id.as_ref() == Some(run)
            }
        };
        if !lock_ok {
            return Err(if self.is_locked {
                Refusal::Locked {
                    twin: self.id.clone(),
                    by: self.active_job_id.clone(),
                    status: self.deployment_status,
                    action: "move",
                }
            } else {
                Refusal::LockNotHeld {
                    twin: self.id.clone(),
                    status: self.deployment_status,
                }
            });
        }
        if !self.deployment_status.can_move_to(change.to) {
            return Err(Refusal::InvalidTransition {
                twin: self.id.clone(),
                from: self.deployment_status,
                to: change.to,
            });
        }
        let mut row = self.change(now);
        let run_id = run_id.cloned().or(match &change.lock {
            LockChange::None => None,
            LockChange::Acquire(run)
            | LockChange::Release(run)
            | LockChange::Reserve(run)
            | LockChange::Keep(run) => Some(run.clone()),
        });
        row.locked_by = match &change.lock {
            LockChange::None | LockChange::Release(_) => None,
            LockChange::Acquire(run) | LockChange::Reserve(run) | LockChange::Keep(run) => {
                Some(run.clone())
            }
        };
        // A reservation checks the move and takes the lock; the status moves later.
        if !matches!(change.lock, LockChange::Reserve(_)) {
            row.status = change.to;
            row.history.push(NewHistory {
                action: "status_changed",
                from: Some(self.deployment_status),
                to: Some(change.to),
                actor: change.actor.clone(),
                reason: change.reason.clone(),
                run_id: run_id.clone(),
            });
        }
        if row.status != self.deployment_status {
            let message = events::status_changed(
                self,
                &row,
                &change.actor,
                change.reason.as_deref(),
                run_id.as_ref(),
            );
            row.messages.push(message);
        }
        Ok(row)
    }

    /// A run that ends without having moved the twin lets go of the lock it reserved.
    pub fn released(&self, run: &RunId, now: &str) -> Option<TwinChange> {
        (self.active_job_id.as_ref() == Some(run)).then(|| {
            let mut row = self.change(now);
            row.locked_by = None;
            row
        })
    }

    /// A successful deploy ended now: `last_deployed_at` moves with its final status move.
    pub fn deployed(mut change: TwinChange, now: &str) -> TwinChange {
        change.last_deployed_at = Some(now.to_owned());
        change
    }

    /// New name, files or variables; not while deleted or locked.
    pub fn edited(
        &self,
        update: &TwinUpdate,
        actor: &str,
        now: &str,
    ) -> Result<TwinChange, Refusal> {
        self.check_live()?;
        self.check_unlocked("update")?;
        let mut row = self.change(now);
        if let Some(name) = &update.name {
            row.name = name.clone();
        }
        if let Some(files) = &update.files {
            row.files = files.clone();
        }
        if let Some((variables, secret_variables)) = &update.variables {
            row.variables = variables.clone();
            row.secret_variables = secret_variables.clone();
        }
        if let Some(credentials) = &update.credential_ids {
            row.credential_ids = Some(credentials.clone());
        }
        row.history.push(NewHistory {
            action: "updated",
            from: None,
            to: None,
            actor: actor.to_owned(),
            reason: Some("configuration changed".into()),
            run_id: None,
        });
        Ok(row)
    }

    /// A soft delete: only of a live, unlocked draft (it surely owns no cloud resources).
    pub fn soft_deleted(&self, actor: &str, now: &str) -> Result<TwinChange, Refusal> {
        if self.is_deleted() {
            return Err(Refusal::AlreadyDeleted {
                twin: self.id.clone(),
            });
        }
        self.check_unlocked("delete")?;
        if self.deployment_status.may_own_resources() {
            return Err(Refusal::ResourcesDeployed {
                twin: self.id.clone(),
                status: self.deployment_status,
            });
        }
        let mut row = self.change(now);
        row.deleted_at = Some(now.to_owned());
        row.history.push(NewHistory {
            action: "deleted",
            from: None,
            to: None,
            actor: actor.to_owned(),
            reason: None,
            run_id: None,
        });
        let message = events::twin_deleted(self, &row, actor);
        row.messages.push(message);
        Ok(row)
    }

    /// Whether the twin may be removed for good: only once soft-deleted, unlocked, with no run
    /// working and no resource left in its state.
    pub fn purgeable(&self, run_working: bool, resources: i64) -> Result<(), Refusal> {
        if !self.is_deleted() {
            return Err(Refusal::NotDeleted {
                twin: self.id.clone(),
            });
        }
        self.check_unlocked("purge")?;
        if run_working {
            return Err(Refusal::RunWorking {
                twin: self.id.clone(),
            });
        }
        if resources > 0 {
            return Err(Refusal::ResourcesInState {
                twin: self.id.clone(),
                resources,
            });
        }
        Ok(())
    }

    pub fn restored(&self, actor: &str, now: &str) -> Result<TwinChange, Refusal> {
        if !self.is_deleted() {
            return Err(Refusal::NotDeleted {
                twin: self.id.clone(),
            });
        }
        let mut row = self.change(now);
        row.deleted_at = None;
        row.history.push(NewHistory {
            action: "restored",
            from: None,
            to: None,
            actor: actor.to_owned(),
            reason: None,
            run_id: None,
        });
        let message = events::twin_restored(self, &row, actor);
        row.messages.push(message);
        Ok(row)
    }

    /// The status set to match reality (a refresh), outside the status machine; the twin must
    /// be live and unlocked.
    pub fn reconciled(
        &self,
        to: DeploymentStatus,
        actor: &str,
        reason: &str,
        now: &str,
    ) -> Result<TwinChange, Refusal> {
        self.check_live()?;
        self.check_unlocked("reconcile")?;
        let mut row = self.change(now);
        row.status = to;
        row.history.push(NewHistory {
            action: "reconciled",
            from: Some(self.deployment_status),
            to: Some(to),
            actor: actor.to_owned(),
            reason: Some(reason.to_owned()),
            run_id: None,
        });
        if to != self.deployment_status {
            let message = events::status_changed(self, &row, actor, Some(reason), None);
            row.messages.push(message);
        }
        Ok(row)
    }

    /// A state rollback, recorded as `state_restored` with what was restored (`reason`): not
    /// while deleted or locked by a run (terraform's own state lock is the store's to check,
    /// in the same write).
    pub fn state_restored(
        &self,
        actor: &str,
        reason: &str,
        now: &str,
    ) -> Result<TwinChange, Refusal> {
        self.check_live()?;
        self.check_unlocked("restore a state version of")?;
        let mut row = self.change(now);
        row.history.push(NewHistory {
            action: "state_restored",
            from: None,
            to: None,
            actor: actor.to_owned(),
            reason: Some(reason.to_owned()),
            run_id: None,
        });
        Ok(row)
    }

    /// A run may start on it (a plan preview or drift check: live, whatever its lock).
    pub fn readable(&self) -> Result<(), Refusal> {
        self.check_live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Provider, TwinFiles};
    use std::collections::BTreeMap;

    fn twin(status: DeploymentStatus, locked_by: Option<RunId>) -> Twin {
        let files = TwinFiles::new(BTreeMap::from([(
            crate::domain::FilePath::parse("main.tf").unwrap_or_else(|e| panic!("{e}")),
            String::new(),
        )]))
        .unwrap_or_else(|e| panic!("{e}"));
        Twin {
            id: TwinId::generate(),
            owner: "o".into(),
            name: TwinName::parse("t").unwrap_or_else(|e| panic!("{e}")),
            provider: Provider::Sandbox,
            deployment_status: status,
            is_locked: locked_by.is_some(),
            active_job_id: locked_by,
            last_deployed_at: None,
            terraform_outputs: None,
            files,
            variables: Variables::new(),
            secret_variables: SealedVariables::default(),
            credential_ids: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            deleted_at: None,
            version: 7,
        }
    }

    fn request(to: DeploymentStatus, lock: LockChange) -> StatusMove {
        StatusMove {
            to,
            actor: "a".into(),
            reason: None,
            lock,
        }
    }

    /// Every (from, to) pair with every lock situation: allowed exactly when the status machine
    /// allows the move and the lock is as the request expects.
    #[test]
    fn every_move_is_decided_by_the_table_and_the_lock() {
        use DeploymentStatus as S;
        let run = RunId::generate();
        for from in S::ALL {
            for to in S::ALL {
                let free = twin(from, None);
                let decided = free.moved(&request(to, LockChange::Acquire(run.clone())), None, "t");
                assert_eq!(decided.is_ok(), from.can_move_to(to), "{from} -> {to}");
                if let Ok(row) = decided {
                    assert_eq!(row.status, to);
                    assert_eq!(row.locked_by, Some(run.clone()));
                    assert_eq!(row.expected_version, 7);
                    assert_eq!(row.history.len(), 1);
                }
                let held = twin(from, Some(RunId::generate()));
                let refused = held.moved(&request(to, LockChange::Acquire(run.clone())), None, "t");
                assert!(
                    matches!(refused, Err(Refusal::Locked { .. })),
                    "{from} -> {to}"
                );
                let ours = twin(from, Some(run.clone()));
                let released =
                    ours.moved(&request(to, LockChange::Release(run.clone())), None, "t");
                assert_eq!(released.is_ok(), from.can_move_to(to));
                if let Ok(row) = released {
                    assert_eq!(row.locked_by, None);
                }
            }
        }
    }

    #[test]
    fn a_reservation_locks_without_moving_and_writes_no_history() {
        let run = RunId::generate();
        let draft = twin(DeploymentStatus::Draft, None);
        let row = draft
            .moved(
                &request(
                    DeploymentStatus::Deploying,
                    LockChange::Reserve(run.clone()),
                ),
                None,
                "t",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.status, DeploymentStatus::Draft);
        assert_eq!(row.locked_by, Some(run));
        assert!(row.history.is_empty());
        assert!(row.messages.is_empty(), "nothing moved, nothing to report");
    }

    #[test]
    fn a_status_move_a_delete_and_a_restore_carry_the_message_that_reports_them() {
        use crate::domain::events::EventType;
        let run = RunId::generate();
        let draft = twin(DeploymentStatus::Draft, None);
        let moved = draft
            .moved(
                &request(
                    DeploymentStatus::Deploying,
                    LockChange::Acquire(run.clone()),
                ),
                None,
                "now",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(moved.messages.len(), 1);
        let message = &moved.messages[0];
        assert_eq!(message.event_type, EventType::TwinStatusChanged);
        assert_eq!(message.owner, "o");
        let body: serde_json::Value =
            serde_json::from_str(&message.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["data"]["from"], "draft");
        assert_eq!(body["data"]["to"], "deploying");
        assert_eq!(body["data"]["job_id"], run.as_str());
        assert_eq!(body["timestamp"], "now");
        let deleted = draft
            .soft_deleted("a", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deleted.messages[0].event_type, EventType::TwinDeleted);
        let mut gone = draft.clone();
        gone.deleted_at = Some("then".into());
        let restored = gone.restored("a", "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored.messages[0].event_type, EventType::TwinRestored);
        let edited = draft
            .edited(&TwinUpdate::default(), "a", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(edited.messages.is_empty());
        assert_eq!(edited.credential_ids, None, "credentials kept as they are");
    }

    #[test]
    fn a_state_rollback_needs_a_live_unlocked_twin() {
        let held = twin(DeploymentStatus::Deployed, Some(RunId::generate()));
        assert!(matches!(
            held.state_restored("a", "why", "t"),
            Err(Refusal::Locked { .. })
        ));
        let free = twin(DeploymentStatus::Deployed, None);
        let row = free
            .state_restored("a", "why", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.history[0].action, "state_restored");
        assert_eq!(row.status, DeploymentStatus::Deployed);
    }

    #[test]
    fn deletes_need_an_unlocked_draft_and_restores_a_deleted_twin() {
        let deployed = twin(DeploymentStatus::Deployed, None);
        assert!(matches!(
            deployed.soft_deleted("a", "t"),
            Err(Refusal::ResourcesDeployed { .. })
        ));
        let draft = twin(DeploymentStatus::Draft, None);
        let row = draft
            .soft_deleted("a", "now")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.deleted_at.as_deref(), Some("now"));
        assert!(matches!(
            draft.restored("a", "t"),
            Err(Refusal::NotDeleted { .. })
        ));
        let mut gone = draft.clone();
        gone.deleted_at = Some("then".into());
        assert!(matches!(
            gone.soft_deleted("a", "t"),
            Err(Refusal::AlreadyDeleted { .. })
        ));
        assert!(matches!(
            gone.edited(&TwinUpdate::default(), "a", "t"),
            Err(Refusal::Deleted { .. })
        ));
    }
}
