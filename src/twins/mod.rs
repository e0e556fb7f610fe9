//! The twins service: the one way to change a twin. Each change reads the twin, asks the
//! domain what the new row is (or why not), and writes it only while the twin is still at the
//! version it was read at; a change that lost a race is decided again on the twin as it is
//! now. So of many racing requests exactly one wins, under SQLite's single writer and
//! PostgreSQL's concurrent ones alike, and the stores hold no rule.

use std::sync::Arc;

use crate::clock;
use crate::domain::{
    DeploymentStatus, HistoryEntry, NewHistory, NewTwin, Principal, Refusal, Run, RunId,
    StatusMove, Twin, TwinChange, TwinId, TwinUpdate,
};
use crate::state::{StateError, StateService};
use crate::store::{run_blocking, NewRun, Store, StoreError};

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
    #[error("twin {0} kept changing; try again")]
    Busy(TwinId),
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
}

impl Twins {
    pub fn new(store: Arc<dyn Store>, state: Arc<StateService>) -> Self {
        Self { store, state }
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
        let span = tracing::Span::current();
        let created = tokio::task::spawn_blocking(move || {
            span.in_scope(|| state.create_twin(new, &history, &actor))
        })
        .await
        .map_err(|e| TwinError::Store(StoreError::Task(e.to_string())))?;
        match created {
            Err(StateError::Store(StoreError::Duplicate(_))) => {
                Err(TwinError::Refused(Refusal::NameTaken { name }))
            }
            other => Ok(other?),
        }
    }

    /// Decides a change on the twin as it is and writes it, again and again while it loses
    /// races. A name taken by another live twin is a refusal like any other.
    pub async fn change<F>(&self, id: &TwinId, decide: F) -> Result<Twin, TwinError>
    where
        F: Fn(&Twin, &str) -> Result<TwinChange, Refusal>,
    {
        for _ in 0..ATTEMPTS {
            let twin = self.get(id).await?;
            let change = decide(&twin, &clock::now())?;
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

    pub async fn update(
        &self,
        id: &TwinId,
        update: TwinUpdate,
        actor: &str,
    ) -> Result<Twin, TwinError> {
        self.change(id, |twin, now| twin.edited(&update, actor, now))
            .await
    }

    pub async fn soft_delete(&self, id: &TwinId, actor: &str) -> Result<Twin, TwinError> {
        self.change(id, |twin, now| twin.soft_deleted(actor, now))
            .await
    }

    pub async fn restore(&self, id: &TwinId, actor: &str) -> Result<Twin, TwinError> {
        self.change(id, |twin, now| twin.restored(actor, now)).await
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
