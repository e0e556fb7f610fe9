//! The supervisor: starts runs (status move and lock in one step), walks each through its
//! steps on the runs runtime, and ends it with its outcome, final status and `done` event
//! written together. A run lives in the store and in its monitor processes, not here: every
//! step is recorded before it starts, terraform runs under a monitor that outlives this
//! process, and a restarted gateway adopts what it finds ([`recovery`]).
//!
//! What each kind of run does is in [`kinds`]; running one step (a monitored terraform
//! command, a captured one, the stop ladder and time limits) in [`steps`]; crashes, shutdown
//! and refresh in [`recovery`].

mod kinds;
mod recovery;
mod steps;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::isolation::Isolation;
use super::secrets::{Credentials, Masker};
use super::sink::RunSink;
use super::toolchain::Toolchain;
use super::workspace::{self, Workspace};
use crate::auth::RunGrants;
use crate::config::Settings;
use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::{
    DeploymentStatus, LockChange, LogLevel, Outcome, PlannedResource, ReplicaId, ResourceChange,
    Run, RunEvent, RunGrant, RunId, RunKind, RunResult, RunStep, Stage, StatusMove, Twin, TwinEnd,
};
use crate::hub::{EventHub, HubError};
use crate::metrics::Metrics;
use crate::state::StateService;
use crate::store::{run_blocking, NewRun, RunFinish, Store, StoreError};
use crate::twins::{TwinError, Twins};

pub use recovery::RecoveryReport;

use crate::runs::process::LineSink as _;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Twin(#[from] TwinError),
    #[error("the gateway is shutting down and starts no new runs")]
    ShuttingDown,
    /// The twin's secrets refuse the run (an expired credential) or cannot be read.
    #[error(transparent)]
    Secrets(#[from] crate::vault::VaultError),
}

/// Why a run whose monitor is gone too (the machine was lost) fails.
pub const MONITOR_LOST: &str =
    "the run's monitor is gone (the machine or its processes were lost) before terraform ended";

/// Why a run fails whose gateway stopped showing signs of life (another gateway settles it).
pub const REPLICA_LOST: &str =
    "the gateway running it was lost (no heartbeat within the lease) before terraform ended";

/// How often a gateway shows it is alive, and looks for work: queued runs, cancels asked for
/// elsewhere, runs of lost gateways.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// A gateway silent this long is lost: another one takes over its runs. Longer than a
/// restart takes, so an upgraded gateway adopts its own runs; short enough that a lost
/// machine's runs are settled (and its twins unlocked) within 15 s.
pub const REPLICA_LEASE: std::time::Duration = std::time::Duration::from_secs(10);

/// What became of a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelling {
    /// terraform was asked to stop (here, or by the gateway that runs it).
    Stopping,
    /// The run was still waiting for a slot: it ends now, terraform never ran.
    Dequeued,
    /// The run is not running.
    NotRunning,
}

/// Why a run stopped early.
enum Stop {
    /// Ended before it moved the twin (terraform never ran): cancelled while it waited for a
    /// slot (`None`), or refused when its turn came (why).
    Unstarted(Option<String>),
    Cancelled,
    /// The gateway stops and leaves the run to its monitor: nothing is recorded, the next
    /// gateway adopts it.
    Detached,
    Failed {
        error: String,
        exit_code: Option<i32>,
    },
}

impl Stop {
    fn failed(error: impl Into<String>) -> Self {
        Stop::Failed {
            error: error.into(),
            exit_code: None,
        }
    }

    /// The same stop with the run's secrets masked in what it says.
    fn masked(self, masker: &Masker) -> Self {
        match self {
            Stop::Failed { error, exit_code } => Stop::Failed {
                error: masker.mask(error),
                exit_code,
            },
            Stop::Unstarted(Some(why)) => Stop::Unstarted(Some(masker.mask(why))),
            other => other,
        }
    }
}

/// What a plan or drift check found, with the run's secrets masked wherever they could show
/// (addresses, and planned attribute values a configuration did not declare sensitive).
fn mask_result(masker: &Masker, result: RunResult) -> RunResult {
    let changes = |list: Option<Vec<ResourceChange>>| {
        list.map(|list| {
            list.into_iter()
                .map(|change| ResourceChange {
                    address: masker.mask(change.address),
                    resource_type: change.resource_type,
                    action: change.action,
                })
                .collect()
        })
    };
    RunResult {
        changes: changes(result.changes),
        summary: result.summary,
        resources_after: result.resources_after.map(|list| {
            list.into_iter()
                .map(|resource| PlannedResource {
                    address: masker.mask(resource.address),
                    attributes: masker.mask_json(resource.attributes),
                    ..resource
                })
                .collect()
        }),
        drifted: changes(result.drifted),
    }
}

/// How a run ended, before it is recorded.
struct Ending {
    /// The run moved the twin to its working status (so it moves it on at its end).
    moved: bool,
    outcome: Outcome,
    error: Option<String>,
    exit_code: Option<i32>,
    outputs: Option<serde_json::Value>,
    result: Option<crate::domain::RunResult>,
}

/// What a successful run produced: a deploy's outputs, a plan's or drift check's findings.
#[derive(Default)]
struct Produced {
    outputs: Option<serde_json::Value>,
    result: Option<crate::domain::RunResult>,
}

/// Where an adopted run goes on: the step it was on, and, for a monitored command whose
/// monitor is still there (or has recorded its end), that step to follow rather than start.
#[derive(Debug, Clone)]
struct Resume {
    index: u32,
    attach: Option<RunStep>,
}

/// Identifies a configuration: the twin's files and variables, its sensitive variables by
/// their sealed form (never their values) and its credentials. A twin without either hashes
/// as before they existed.
fn config_hash(twin: &Twin) -> String {
    use sha2::{Digest, Sha256};
    let sealed = twin
        .secret_variables
        .sealed
        .as_deref()
        .map(|bytes| hex::encode(Sha256::digest(bytes)));
    let text = if sealed.is_none() && twin.credential_ids.is_empty() {
        serde_json::to_string(&(&twin.files, &twin.variables))
    } else {
        serde_json::to_string(&(&twin.files, &twin.variables, &sealed, &twin.credential_ids))
    }
    .unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Everything a supervisor is built from.
pub struct SupervisorParts {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub hub: Arc<EventHub>,
    pub state: Arc<StateService>,
    pub grants: Arc<RunGrants>,
    pub runtime: Handle,
    pub credentials: Credentials,
    /// Owners' credentials and twins' sensitive variables, sealed; each run's secrets.
    pub vault: Arc<crate::vault::Vault>,
    pub metrics: Arc<Metrics>,
    /// How every terraform process is isolated (checked at start).
    pub isolation: Isolation,
    /// The one way twins change.
    pub twins: Arc<Twins>,
    /// This gateway, among the gateways on one database.
    pub replica: ReplicaId,
}

pub struct Supervisor {
    parts: SupervisorParts,
    masker: Masker,
    /// How terraform reaches the gateway's state backend; known once the gateway listens.
    backend_url: OnceLock<String>,
    /// The runs this gateway works on.
    active: Mutex<HashMap<RunId, CancellationToken>>,
    /// Free run slots; runs beyond the limit wait in the store's queue, in arrival order,
    /// for a free slot on any gateway.
    slots: Arc<Semaphore>,
    /// Validations (short `terraform validate` commands) at once.
    validations: Arc<Semaphore>,
    accepting: AtomicBool,
    /// Fired at shutdown when runs are left to their monitors: their followers stop without
    /// stopping terraform.
    detach: CancellationToken,
    /// Fired at every shutdown: validations (the gateway's own short commands) stop.
    halt: CancellationToken,
    /// Runs adopted or settled at start are done being looked at.
    recovered: AtomicBool,
    tasks: TaskTracker,
}

impl Supervisor {
    pub fn new(parts: SupervisorParts) -> Arc<Self> {
        let masker = Masker::new(parts.credentials.secret_values());
        let limit = parts.settings.max_concurrent_runs.max(1);
        Arc::new(Self {
            parts,
            masker,
            backend_url: OnceLock::new(),
            active: Mutex::default(),
            slots: Arc::new(Semaphore::new(limit)),
            validations: Arc::new(Semaphore::new(limit)),
            accepting: AtomicBool::new(true),
            detach: CancellationToken::new(),
            halt: CancellationToken::new(),
            recovered: AtomicBool::new(false),
            tasks: TaskTracker::new(),
        })
    }

    /// Where runs reach the state backend; set once, when the gateway listens.
    pub fn set_backend_url(&self, url: String) {
        let _ = self.backend_url.set(url);
    }

    /// 1 for the next run to get a slot; `None` when the run is not waiting.
    pub async fn queue_position(&self, run_id: &RunId) -> Result<Option<usize>, RunError> {
        let queued = run_blocking(&self.parts.store, |s| s.queued_runs()).await?;
        Ok(queued.iter().position(|id| id == run_id).map(|i| i + 1))
    }

    /// Runs this gateway works on.
    pub fn active_runs(&self) -> usize {
        self.active.lock().map_or(0, |active| active.len())
    }

    /// Runs waiting in the queue for a slot on any gateway.
    pub async fn queued_runs(&self) -> Result<usize, RunError> {
        Ok(run_blocking(&self.parts.store, |s| s.queued_runs())
            .await?
            .len())
    }

    /// This gateway, among the gateways on one database.
    pub fn replica(&self) -> &ReplicaId {
        &self.parts.replica
    }

    pub fn isolation(&self) -> &Isolation {
        &self.parts.isolation
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.parts.metrics
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Have the runs a previous life left been adopted or settled?
    pub fn is_recovered(&self) -> bool {
        self.recovered.load(Ordering::SeqCst)
    }

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.parts.hub
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.parts.store)
    }

    pub fn twins(&self) -> &Twins {
        &self.parts.twins
    }

    /// `terraform validate` of a twin, by the same process owner as runs: at most as many at
    /// once as runs may work, tracked so a shutdown waits for (and stops) them.
    pub async fn validate(
        self: &Arc<Self>,
        twin: &Twin,
    ) -> Result<super::validate::Validation, super::validate::ValidateError> {
        use super::validate::{validate, ValidateError};
        if !self.is_accepting() {
            return Err(ValidateError::ShuttingDown);
        }
        let permit = Arc::clone(&self.validations)
            .acquire_owned()
            .await
            .map_err(|_| ValidateError::ShuttingDown)?;
        let (this, twin) = (Arc::clone(self), twin.clone());
        let task = self.tasks.spawn_on(
            async move {
                let _permit = permit;
                let settings = &this.parts.settings;
                validate(settings, &this.parts.isolation, &twin, &this.halt).await
            },
            &self.parts.runtime,
        );
        task.await
            .map_err(|e| ValidateError::Failed(e.to_string()))?
    }

    /// Where a run keeps its steps' spools and exit statuses while it works.
    fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.parts
            .settings
            .data_dir
            .join("runs")
            .join(run_id.as_str())
    }

    /// Starts a run. With a free slot, the twin's move to deploying/destroying and its lock are
    /// one compare-and-set (a conflict when another run holds it or the move is not allowed),
    /// and the run is this gateway's. Without one, the run waits in the store's queue holding
    /// the twin's lock, and the twin moves only when a gateway with a free slot claims it: a
    /// run cancelled while it waits has changed nothing.
    pub async fn start(
        self: &Arc<Self>,
        twin: &Twin,
        kind: RunKind,
        actor: &str,
        log_level: Option<LogLevel>,
    ) -> Result<Run, RunError> {
        if !self.is_accepting() {
            return Err(RunError::ShuttingDown);
        }
        let run_id = RunId::generate();
        // Refused before anything is made when a credential has expired.
        let (vault, id, owned) = (Arc::clone(&self.parts.vault), run_id.clone(), twin.clone());
        let prepared =
            crate::store::blocking(move || vault.prepare_run(&id, &owned, kind)).await??;
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok();
        let change = kind.working_status().map(|to| StatusMove {
            to,
            actor: actor.to_owned(),
            reason: Some(format!("{kind} started")),
            lock: match slot {
                Some(_) => LockChange::Acquire(run_id.clone()),
                None => LockChange::Reserve(run_id.clone()),
            },
        });
        let new = NewRun {
            id: run_id.clone(),
            twin_id: twin.id.clone(),
            kind,
            actor: actor.to_owned(),
            owner: slot.as_ref().map(|_| self.parts.replica.clone()),
            secrets: prepared.sealed,
            credentials: prepared.credentials,
            log_level,
        };
        let (run, twin) = self.parts.twins.start_run(new, change).await?;
        let debug = log_level.map_or(String::new(), |level| format!(" (debug, TF_LOG={level})"));
        let started = NewAudit::new(actor, AuditAction::RunStarted, &run.id)
            .because(format!("{kind} of twin {}{debug}", twin.id));
        crate::audit::record_async(&self.parts.store, started).await;
        match slot {
            Some(slot) => self.launch(run.clone(), twin, Some(slot), None),
            None => {
                self.publish(
                    &run.id,
                    RunEvent::Stage {
                        stage: Stage::Queued,
                    },
                );
                if let Some(position) = self.queue_position(&run.id).await? {
                    self.publish(&run.id, RunEvent::Queue { position });
                }
                // A slot may have come free meanwhile.
                self.fill_slots().await;
            }
        }
        Ok(run)
    }

    /// Walks `run` on the runs runtime: its steps (from `resume` for an adopted run), then
    /// records its end; then the slot goes to the next queued run.
    fn launch(
        self: &Arc<Self>,
        run: Run,
        twin: Twin,
        slot: Option<OwnedSemaphorePermit>,
        resume: Option<Resume>,
    ) {
        let stop = CancellationToken::new();
        if run.cancel_requested {
            stop.cancel();
        }
        if let Ok(mut active) = self.active.lock() {
            active.insert(run.id.clone(), stop.clone());
        }
        let this = Arc::clone(self);
        let task = async move {
            let result = match resume {
                Some(resume) => this.walk(&run, &twin, &stop, Some(resume)).await,
                None => match this.take_slot(&run, &twin, &stop).await {
                    Ok(()) => this.walk(&run, &twin, &stop, None).await,
                    Err(stop) => Err(stop),
                },
            };
            match result {
                Err(Stop::Detached) => {
                    tracing::info!(run_id = %run.id, "left to its monitor; the next start adopts it");
                }
                result => this.conclude(&run, result).await,
            }
            if let Ok(mut active) = this.active.lock() {
                active.remove(&run.id);
            }
            // The slot is held until the run's end is recorded, so the next run in the queue
            // starts after this one has ended.
            drop(slot);
            this.fill_slots().await;
        };
        self.tasks.spawn_on(task, &self.parts.runtime);
    }

    /// While this gateway has a free slot, claims the oldest queued run and starts it.
    pub async fn fill_slots(self: &Arc<Self>) {
        while self.is_accepting() {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                return;
            };
            let me = self.parts.replica.clone();
            let run = match run_blocking(&self.parts.store, move |s| s.claim_queued_run(&me)).await
            {
                Ok(Some(run)) => run,
                Ok(None) => return,
                Err(err) => {
                    tracing::error!(%err, "could not look at the queue");
                    return;
                }
            };
            match self.parts.twins.get(&run.twin_id).await {
                Ok(twin) => {
                    tracing::info!(run_id = %run.id, "a queued run got a slot");
                    self.launch(run, twin, Some(slot), None);
                }
                Err(err) => {
                    tracing::error!(run_id = %run.id, %err, "a queued run's twin cannot be read");
                    self.conclude(&run, Err(Stop::Unstarted(Some(err.to_string()))))
                        .await;
                }
            }
            self.publish_positions().await;
        }
    }

    /// Tells every run still waiting where it stands.
    async fn publish_positions(&self) {
        match run_blocking(&self.parts.store, |s| s.queued_runs()).await {
            Ok(queued) => {
                for (index, id) in queued.iter().enumerate() {
                    self.publish(
                        id,
                        RunEvent::Queue {
                            position: index + 1,
                        },
                    );
                }
            }
            Err(err) => tracing::error!(%err, "could not read the queue"),
        }
    }

    /// A run that got its slot starts: a queued one moves the twin to its working status now
    /// (one that had a slot at once moved it already). Marks the run processing;
    /// [`Stop::Unstarted`] if it was cancelled before.
    async fn take_slot(
        &self,
        run: &Run,
        twin: &Twin,
        stop: &CancellationToken,
    ) -> Result<(), Stop> {
        if stop.is_cancelled() {
            return Err(Stop::Unstarted(None));
        }
        if let Some(status) = run.kind.working_status() {
            let twin_id = twin.id.clone();
            let current = run_blocking(&self.parts.store, move |s| s.get_twin(&twin_id))
                .await
                .ok()
                .flatten();
            // Moved already when it got its slot at start; a queued run moves it now.
            let moved = current.is_some_and(|t| {
                t.deployment_status == status && t.active_job_id.as_ref() == Some(&run.id)
            });
            if !moved {
                let change = StatusMove {
                    to: status,
                    actor: run.actor.clone(),
                    reason: Some(format!("{} started", run.kind)),
                    lock: LockChange::Keep(run.id.clone()),
                };
                self.parts
                    .twins
                    .move_status(&twin.id, change)
                    .await
                    .map_err(|e| {
                        Stop::Unstarted(Some(format!("the twin could not start it: {e}")))
                    })?;
            }
            // A run that moved the twin says so first.
            self.parts
                .hub
                .publish(
                    &run.id,
                    &RunEvent::Status {
                        twin_id: twin.id.clone(),
                        status,
                    },
                )
                .map_err(|err| Stop::failed(format!("the event hub failed: {err}")))?;
        }
        let (id, at) = (run.id.clone(), crate::clock::now());
        let started = [crate::domain::events::run_started(run, twin, &at)];
        if let Err(err) = run_blocking(&self.parts.store, move |s| {
            s.mark_run_processing(&id, &at, &started)
        })
        .await
        {
            tracing::error!(run_id = %run.id, %err, "could not mark the run processing");
        }
        Ok(())
    }

    /// Stops a run wherever it is: one SIGINT to terraform, then the kill after the grace
    /// period, by this gateway or (asked through the store) by the one that runs it; a run
    /// still in the queue is taken out of it and ends at once.
    pub async fn cancel(self: &Arc<Self>, run_id: &RunId) -> Result<Cancelling, RunError> {
        loop {
            // The store first: a run whose end is written is over, even while this gateway
            // is still letting go of it.
            let id = run_id.clone();
            let Some(run) = run_blocking(&self.parts.store, move |s| s.get_run(&id)).await? else {
                return Ok(Cancelling::NotRunning);
            };
            if run.status.is_finished() {
                return Ok(Cancelling::NotRunning);
            }
            if self.cancel_here(run_id) {
                return Ok(Cancelling::Stopping);
            }
            if run.owner.is_none() {
                let (id, me) = (run.id.clone(), self.parts.replica.clone());
                let taken = run_blocking(&self.parts.store, move |s| {
                    s.move_run(&id, None, Some(&me), None)
                })
                .await?;
                if !taken {
                    // A gateway claimed it meanwhile: cancel it there.
                    continue;
                }
                let this = Arc::clone(self);
                let task = async move {
                    this.conclude(&run, Err(Stop::Unstarted(None))).await;
                    this.publish_positions().await;
                };
                self.tasks.spawn_on(task, &self.parts.runtime);
                return Ok(Cancelling::Dequeued);
            }
            let id = run.id.clone();
            if !run_blocking(&self.parts.store, move |s| s.request_cancel(&id)).await? {
                continue;
            }
            // Its owner hears of it at once, or at its next heartbeat; so does this gateway
            // if the run is being started here.
            self.cancel_here(run_id);
            return Ok(Cancelling::Stopping);
        }
    }

    /// A cancel asked for by `actor` through the API: [`Supervisor::cancel`], audited when it
    /// stops or dequeues the run.
    pub async fn cancel_by(
        self: &Arc<Self>,
        run_id: &RunId,
        actor: &str,
    ) -> Result<Cancelling, RunError> {
        let outcome = self.cancel(run_id).await?;
        if outcome != Cancelling::NotRunning {
            let reason = match outcome {
                Cancelling::Dequeued => "taken out of the queue before it started",
                _ => "terraform asked to stop",
            };
            let entry = NewAudit::new(actor, AuditAction::RunCancelled, run_id).because(reason);
            crate::audit::record_async(&self.parts.store, entry).await;
        }
        Ok(outcome)
    }

    /// Removes a soft-deleted twin for good ([`Twins::purge`]), then the files its runs left:
    /// its working directory, its runs' spools and preview directories, and its directory in
    /// the sandbox provider's cloud (empty: a purged twin holds no resource).
    pub async fn purge(&self, twin: &Twin, actor: &str) -> Result<(), RunError> {
        let runs = self.parts.twins.purge(twin, actor).await?;
        let data_dir = &self.parts.settings.data_dir;
        let mut dirs = vec![workspace::work_dir(data_dir, &twin.id)];
        for run in &runs {
            dirs.push(self.run_dir(run));
            dirs.push(workspace::preview_dir(data_dir, run));
        }
        let sandbox = workspace::sandbox_dir(&self.parts.settings.sandbox_root(), &twin.id);
        let removed = tokio::task::spawn_blocking(move || {
            // Only if empty: whatever is in it is what the cloud holds.
            if let Err(err) = std::fs::remove_dir(&sandbox) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %sandbox.display(), %err, "cannot remove a purged twin's sandbox directory");
                }
            }
            for dir in dirs {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), %err, "cannot remove a purged twin's files")
                    }
                }
            }
        })
        .await;
        if let Err(err) = removed {
            tracing::warn!(%err, "cannot remove a purged twin's files");
        }
        tracing::info!(twin_id = %twin.id, runs = runs.len(), %actor, "twin purged");
        Ok(())
    }

    /// Cancels the run if this gateway works on it; false otherwise.
    pub fn cancel_here(&self, run_id: &RunId) -> bool {
        let token = self
            .active
            .lock()
            .ok()
            .and_then(|active| active.get(run_id).cloned());
        token.map(|t| t.cancel()).is_some()
    }

    pub fn is_active(&self, run_id: &RunId) -> bool {
        self.active
            .lock()
            .is_ok_and(|active| active.contains_key(run_id))
    }

    fn publish(&self, run_id: &RunId, event: RunEvent) {
        if let Err(err) = self.parts.hub.publish(run_id, &event) {
            tracing::error!(%run_id, %err, "event lost");
        }
    }

    /// The run's steps, from the start or from where an adopted run was.
    async fn walk(
        &self,
        run: &Run,
        twin: &Twin,
        stop: &CancellationToken,
        resume: Option<Resume>,
    ) -> Result<Produced, Stop> {
        let ctx = self.context(run, twin, stop, resume).await?;
        let produced = self
            .steps_of(&ctx)
            .await
            .map_err(|stop| stop.masked(&ctx.masker))?;
        ctx.sink.complete_progress();
        // terraform masks what the configuration declares sensitive; the twin's own secrets
        // are masked whatever it declares.
        Ok(Produced {
            outputs: produced.outputs.map(|o| ctx.masker.mask_json(o)),
            result: produced.result.map(|r| mask_result(&ctx.masker, r)),
        })
    }

    /// What every step of the run shares: its toolchain and working directory (prepared now
    /// for a new run; an adopted one finds them on disk), its sink, its backend credential.
    async fn context<'a>(
        &self,
        run: &'a Run,
        twin: &'a Twin,
        stop: &'a CancellationToken,
        resume: Option<Resume>,
    ) -> Result<RunCtx<'a>, Stop> {
        let secret = self
            .parts
            .grants
            .issue(RunGrant {
                run_id: run.id.clone(),
                twin_id: twin.id.clone(),
                owner: twin.owner.clone(),
            })
            .await
            .map_err(|e| Stop::failed(format!("cannot issue the run's backend credential: {e}")))?;
        // Opened from the store, so whichever gateway runs or adopts the run has them.
        let vault = Arc::clone(&self.parts.vault);
        let run_id = run.id.clone();
        let secrets = crate::store::blocking(move || vault.open_run(&run_id))
            .await
            .map_err(|e| Stop::failed(e.to_string()))?
            .map_err(|e| Stop::failed(format!("cannot open the run's secrets: {e}")))?;
        let masker = self
            .masker
            .with(std::iter::once(secret.clone()).chain(secrets.masked));
        let secret_env = secrets
            .env
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        let sink = Arc::new(RunSink::new(
            run.id.clone(),
            Arc::clone(&self.parts.hub),
            masker.clone(),
        ));
        // A run that was only looked at before its first step starts over (its stage is kept).
        let resume = resume.filter(|r| run.step.is_some() || r.attach.is_some());
        if resume.is_none() && run.stage != Some(Stage::Initializing) {
            self.publish(
                &run.id,
                RunEvent::Stage {
                    stage: Stage::Initializing,
                },
            );
        }
        let toolchain = Toolchain::find(&self.parts.settings)
            .await
            .map_err(|e| Stop::failed(e.to_string()))?;
        // Runs that only read work in a directory of their own, beside any deploy.
        let dir = if run.kind.changes_infrastructure() {
            workspace::work_dir(&self.parts.settings.data_dir, &twin.id)
        } else {
            workspace::preview_dir(&self.parts.settings.data_dir, &run.id)
        };
        let data_dir = self.parts.settings.data_dir.clone();
        let sandbox_root = self.parts.settings.sandbox_root();
        let workspace = match &resume {
            Some(_) => Workspace::existing(&dir, &sandbox_root, &twin.id),
            None => {
                let (owned, tools) = (twin.clone(), toolchain.clone());
                tokio::task::spawn_blocking(move || {
                    workspace::prepare(&dir, &data_dir, &sandbox_root, &owned, &tools)
                })
                .await
                .map_err(|e| Stop::failed(e.to_string()))?
                .map_err(|e| Stop::failed(e.to_string()))?
            }
        };
        let backend_env = self.backend_env(run, twin, secret);
        Ok(RunCtx {
            run,
            twin,
            toolchain,
            workspace,
            sink,
            masker,
            stop,
            secret_env,
            backend_env,
            resume,
            run_dir: self.run_dir(&run.id),
        })
    }

    /// terraform's `http` backend, from its environment only. The backend retries long enough
    /// (about 75 s) to ride out a gateway restart.
    fn backend_env(&self, run: &Run, twin: &Twin, secret: String) -> Vec<(OsString, OsString)> {
        let backend_url = self
            .backend_url
            .get()
            .map_or("http://127.0.0.1:8080", String::as_str);
        let state_url = format!("{backend_url}/twins/{}/tfstate", twin.id);
        [
            ("TF_HTTP_ADDRESS", state_url.clone()),
            ("TF_HTTP_LOCK_ADDRESS", format!("{state_url}/lock")),
            ("TF_HTTP_UNLOCK_ADDRESS", format!("{state_url}/lock")),
            ("TF_HTTP_USERNAME", run.id.to_string()),
            ("TF_HTTP_PASSWORD", secret),
            ("TF_HTTP_RETRY_MAX", "10".to_owned()),
            ("TF_HTTP_RETRY_WAIT_MIN", "1".to_owned()),
            ("TF_HTTP_RETRY_WAIT_MAX", "10".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect()
    }

    /// Ends a run that ran here: recovers any state terraform could not save, lets go of its
    /// backend credential and state lock, then records the end and removes its spools.
    async fn conclude(&self, run: &Run, result: Result<Produced, Stop>) {
        let ending =
            match result {
                Ok(produced) => Ending {
                    moved: true,
                    outcome: Outcome::Succeeded,
                    error: None,
                    exit_code: Some(0),
                    outputs: produced.outputs,
                    result: produced.result,
                },
                Err(Stop::Unstarted(why)) => Ending {
                    moved: false,
                    outcome: if why.is_some() {
                        Outcome::Failed
                    } else {
                        Outcome::Cancelled
                    },
                    error: Some(why.unwrap_or_else(|| {
                        "cancelled before it started: terraform never ran".into()
                    })),
                    exit_code: None,
                    outputs: None,
                    result: None,
                },
                Err(Stop::Cancelled) => Ending {
                    moved: true,
                    outcome: Outcome::Cancelled,
                    error: Some(if self.is_accepting() {
                        "cancelled: terraform was interrupted".into()
                    } else {
                        "interrupted: the gateway was shut down with --on-shutdown interrupt".into()
                    }),
                    exit_code: None,
                    outputs: None,
                    result: None,
                },
                Err(Stop::Failed { error, exit_code }) => Ending {
                    moved: true,
                    outcome: Outcome::Failed,
                    error: Some(self.masker.mask(error)),
                    exit_code,
                    outputs: None,
                    result: None,
                },
                Err(Stop::Detached) => return,
            };
        self.collect_leftovers(run).await;
        if ending.outcome == Outcome::Succeeded {
            self.publish(
                &run.id,
                RunEvent::Stage {
                    stage: Stage::Complete,
                },
            );
        }
        self.record_end(run, ending).await;
    }

    /// Writes the run's end: outcome and outputs, the twin's final move releasing the lock,
    /// and the last `status` and `done` events, in one transaction.
    async fn record_end(&self, run: &Run, ending: Ending) {
        let Ending {
            moved,
            outcome,
            error,
            exit_code,
            outputs,
            result,
        } = ending;
        let message = match &error {
            None => format!("{} succeeded", run.kind),
            Some(error) => format!("{} {outcome}: {error}", run.kind),
        };
        let deployed = run.kind == RunKind::Deploy && outcome == Outcome::Succeeded;
        let twin_move = run
            .kind
            .final_status(outcome)
            .filter(|_| moved)
            .map(|to| StatusMove {
                to,
                actor: run.actor.clone(),
                reason: Some(message.clone()),
                lock: LockChange::Release(run.id.clone()),
            });
        let release = (!moved && run.kind.changes_infrastructure()).then(|| run.id.clone());
        // A one-time credential goes with the end of the deploy or destroy that used it (the
        // vault marked which); a run that never started did not use it.
        let delete_credentials = if moved {
            let run_id = run.id.clone();
            run_blocking(&self.parts.store, move |s| s.run_credentials(&run_id))
                .await
                .unwrap_or_else(|err| {
                    tracing::error!(run_id = %run.id, %err, "cannot read the run's credentials");
                    Vec::new()
                })
                .into_iter()
                .filter(|c| c.delete_after_run)
                .map(|c| c.id)
                .collect()
        } else {
            Vec::new()
        };
        // Runs that move nothing report the twin's status as it is.
        let twin_status = match &twin_move {
            Some(change) => Some(change.to),
            None => self
                .parts
                .twins
                .get(&run.twin_id)
                .await
                .ok()
                .map(|twin| twin.deployment_status),
        };
        let finish = RunFinish {
            run_id: run.id.clone(),
            twin_id: run.twin_id.clone(),
            outcome,
            exit_code,
            error: error.clone(),
            message,
            outputs,
            twin: None,
            result,
            ended_at: crate::clock::now(),
            delete_credentials,
            // Decided with the twin's move when the end is written.
            messages: Vec::new(),
        };
        let end = TwinEnd {
            twin_move: twin_move.clone(),
            release,
            deployed,
        };
        let mut last = Vec::with_capacity(2);
        if let Some(change) = &twin_move {
            last.push(RunEvent::Status {
                twin_id: run.twin_id.clone(),
                status: change.to,
            });
        }
        last.push(RunEvent::Done {
            outcome,
            twin_status,
            error,
        });
        match self.parts.hub.finish(&last, finish, end).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(run_id = %run.id, "the run had been ended meanwhile (another gateway settled it); its end here is not recorded");
            }
            Err(err) => {
                tracing::error!(run_id = %run.id, %err, "could not record the end of the run");
            }
        }
        self.parts
            .metrics
            .runs
            .with_label_values(&[run.kind.as_str(), outcome.as_str()])
            .inc();
        tracing::info!(run_id = %run.id, kind = %run.kind, %outcome, "run ended");
        let dir = self.run_dir(&run.id);
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
            Ok(Err(err)) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(run_id = %run.id, %err, "could not remove the run's spools");
            }
            _ => {}
        }
    }
}

/// What every step of a run shares.
struct RunCtx<'a> {
    run: &'a Run,
    twin: &'a Twin,
    toolchain: Toolchain,
    workspace: Workspace,
    sink: Arc<RunSink>,
    /// The secrets the run's lines are masked with (also by its monitors, before the spool).
    masker: Masker,
    stop: &'a CancellationToken,
    /// The twin's credentials and sensitive variables (`TF_VAR_*`), on top of the operator's.
    secret_env: Vec<(OsString, OsString)>,
    backend_env: Vec<(OsString, OsString)>,
    resume: Option<Resume>,
    run_dir: PathBuf,
}

impl RunCtx<'_> {
    /// The directory of step `index` (`<run dir>/<index>-<name>`).
    fn step_dir(&self, index: u32, name: &str) -> PathBuf {
        step_dir(&self.run_dir, index, name)
    }

    /// Step `index` was done before the run was adopted.
    fn done_before(&self, index: u32) -> bool {
        self.resume.as_ref().is_some_and(|r| index < r.index)
    }

    /// The step to follow rather than start: the adopted run's current one.
    fn attached(&self, index: u32) -> Option<&RunStep> {
        self.resume
            .as_ref()
            .filter(|r| r.index == index)
            .and_then(|r| r.attach.as_ref())
    }

    /// Is this step the adopted run's current one (so its announcements were made already)?
    fn resumes_at(&self, index: u32) -> bool {
        self.resume.as_ref().is_some_and(|r| r.index == index)
    }
}

fn step_dir(run_dir: &Path, index: u32, name: &str) -> PathBuf {
    run_dir.join(format!("{index:02}-{name}"))
}

/// Is the status one a run of this kind leaves the twin in while it works?
fn works_in(kind: RunKind, status: DeploymentStatus) -> bool {
    kind.working_status() == Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CredentialId, SealedVariables, TwinId, TwinName};

    fn twin() -> Twin {
        Twin {
            id: TwinId::generate(),
            owner: "o".into(),
            name: TwinName::parse("t").unwrap_or_else(|e| panic!("{e}")),
            provider: crate::domain::Provider::Sandbox,
            deployment_status: DeploymentStatus::Draft,
            is_locked: false,
            active_job_id: None,
            last_deployed_at: None,
            terraform_outputs: None,
            files: crate::demo::files().unwrap_or_else(|e| panic!("{e}")),
            variables: Default::default(),
            secret_variables: SealedVariables::default(),
            credential_ids: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            deleted_at: None,
            version: 0,
        }
    }

    /// A kept plan applies only to the configuration it was made from: a new sensitive value
    /// (a new sealed form) or other credentials make a new configuration.
    #[test]
    fn the_configuration_hash_follows_sensitive_values_and_credentials() {
        let plain = twin();
        let mut sealed = plain.clone();
        sealed.secret_variables = SealedVariables {
            names: vec!["pw".into()],
            sealed: Some(vec![1, 2, 3]),
        };
        let mut resealed = sealed.clone();
        resealed.secret_variables.sealed = Some(vec![4, 5, 6]);
        let mut credentialed = plain.clone();
        credentialed.credential_ids = vec![CredentialId::generate()];
        let hashes = [
            config_hash(&plain),
            config_hash(&sealed),
            config_hash(&resealed),
            config_hash(&credentialed),
        ];
        let distinct: std::collections::BTreeSet<&String> = hashes.iter().collect();
        assert_eq!(distinct.len(), hashes.len());
        assert_eq!(config_hash(&sealed), config_hash(&sealed.clone()));
        // The hash is of the sealed bytes, never of a clear value.
        assert!(!config_hash(&sealed).contains("010203"));
    }

    #[test]
    fn a_runs_findings_are_masked_with_its_secrets() {
        let masker = Masker::new(["hunter2-secret".to_owned()]);
        let found = RunResult {
            resources_after: Some(vec![PlannedResource {
                address: "sandbox_resource.a".into(),
                resource_type: "sandbox_resource".into(),
                actions: vec!["create".into()],
                attributes: serde_json::json!({"note": "pw hunter2-secret"}),
            }]),
            drifted: Some(vec![ResourceChange {
                address: "sandbox_resource.hunter2-secret".into(),
                resource_type: "sandbox_resource".into(),
                action: "delete".into(),
            }]),
            ..RunResult::default()
        };
        let masked = serde_json::to_string(&mask_result(&masker, found)).unwrap_or_default();
        assert!(!masked.contains("hunter2-secret"), "{masked}");
        assert!(masked.contains("sandbox_resource.a"));
    }
}
