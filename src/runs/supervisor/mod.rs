//! The supervisor: starts runs (status move and lock in one step), walks each through its
//! stages on the runs runtime, and ends it with its outcome, final status and `done` event
//! written together.
//!
//! What each kind of run does is in [`kinds`]; running one terraform command (environment,
//! time limit, stop ladder) in [`commands`]; what happens after a crash, at shutdown and on a
//! refresh in [`recovery`].

mod commands;
mod kinds;
mod recovery;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::isolation::{Isolation, Jail};
use super::plan;
use super::process::{capture_stdout, Exit, LineSink, ProcessSpec, RunningProcess};
use super::secrets::{Credentials, Masker};
use super::sink::{humanize, watch_silence, RunSink};
use super::toolchain::Toolchain;
use super::workspace::{self, Workspace, ERRORED_STATE, PLAN_FILE};
use crate::auth::{RunGrant, RunGrants};
use crate::clock;
use crate::config::Settings;
use crate::domain::{
    DeploymentStatus, LogStream, Outcome, Run, RunEvent, RunId, RunKind, Stage, Twin, TwinId,
};
use crate::hub::{EventHub, HubError};
use crate::metrics::Metrics;
use crate::state::{mask_outputs, StateService, Writer};
use crate::store::{
    run_blocking, LockChange, NewRun, RunFinish, StatusMove, Store, StoreError, StoredPlan,
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("the gateway is shutting down and starts no new runs")]
    ShuttingDown,
}

/// Why a run was found unfinished at start: the dashboard shows this.
pub const INTERRUPTED_BY_RESTART: &str = "interrupted by a restart";

/// Why a run stopped early.
enum Stop {
    /// Ended before it moved the twin (terraform never ran): cancelled while it waited for a
    /// slot (`None`), or refused when its turn came (why).
    Unstarted(Option<String>),
    Cancelled,
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
}

/// How a run ended, before it is recorded.
struct Ending {
    /// The run moved the twin to its working status (so it moves it on at its end).
    moved: bool,
    outcome: Outcome,
    error: Option<String>,
    exit_code: Option<i32>,
    outputs: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
}

/// What a successful run produced: a deploy's outputs, a plan's or drift check's findings.
#[derive(Default)]
struct Produced {
    outputs: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
}

/// How long terraform waits for the state lock another run (or person) holds.
const LOCK_TIMEOUT: &str = "-lock-timeout=300s";

/// Identifies a configuration: the twin's files and variables.
fn config_hash(twin: &Twin) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(&(&twin.files, &twin.variables)).unwrap_or_default();
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
    pub metrics: Arc<Metrics>,
    /// How every terraform process is isolated (checked at start).
    pub isolation: Isolation,
}

pub struct Supervisor {
    parts: SupervisorParts,
    masker: Masker,
    /// How terraform reaches the gateway's state backend (`http://127.0.0.1:<port>`); known
    /// once the gateway listens, which is after interrupted runs are settled.
    backend_url: OnceLock<String>,
    active: Mutex<HashMap<RunId, CancellationToken>>,
    /// Free run slots; runs beyond the limit wait for one in arrival order.
    slots: Arc<Semaphore>,
    queue: Mutex<VecDeque<RunId>>,
    accepting: AtomicBool,
    tasks: TaskTracker,
}

impl Supervisor {
    pub fn new(parts: SupervisorParts) -> Arc<Self> {
        let masker = Masker::new(parts.credentials.secret_values());
        let slots = Arc::new(Semaphore::new(parts.settings.max_concurrent_runs.max(1)));
        Arc::new(Self {
            parts,
            masker,
            backend_url: OnceLock::new(),
            active: Mutex::default(),
            slots,
            queue: Mutex::default(),
            accepting: AtomicBool::new(true),
            tasks: TaskTracker::new(),
        })
    }

    /// Where runs reach the state backend; set once, when the gateway listens.
    pub fn set_backend_url(&self, url: String) {
        let _ = self.backend_url.set(url);
    }

    /// 1 for the next run to get a slot; `None` when the run is not waiting.
    pub fn queue_position(&self, run_id: &RunId) -> Option<usize> {
        let queue = self.queue.lock().ok()?;
        queue.iter().position(|id| id == run_id).map(|i| i + 1)
    }

    pub fn active_runs(&self) -> usize {
        self.active.lock().map_or(0, |active| active.len())
    }

    pub fn pending_runs(&self) -> usize {
        self.queue.lock().map_or(0, |queue| queue.len())
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

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.parts.hub
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.parts.store)
    }

    /// Starts a run. With a free slot, the twin's move to deploying/destroying and its lock are
    /// one compare-and-set (a conflict when another run holds it or the move is not allowed).
    /// Without one, the run waits in the queue holding the twin's lock, and the twin moves only
    /// when the run gets its slot: a run cancelled while it waits has changed nothing.
    pub async fn start(
        self: &Arc<Self>,
        twin: &Twin,
        kind: RunKind,
        actor: &str,
    ) -> Result<Run, RunError> {
        if !self.is_accepting() {
            return Err(RunError::ShuttingDown);
        }
        let run_id = RunId::generate();
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
        };
        let (run, twin) =
            run_blocking(&self.parts.store, move |s| s.start_run(new, change)).await?;
        self.parts.hub.open_run(&run.id, 0);
        let stop = CancellationToken::new();
        if let Ok(mut active) = self.active.lock() {
            active.insert(run.id.clone(), stop.clone());
        }
        if slot.is_none() {
            self.enqueue(&run.id);
        }
        let this = Arc::clone(self);
        let started = run.clone();
        let task = async move {
            // The slot is held until the run's end is recorded, so the next run in the queue
            // starts after this one has ended.
            let (result, _slot) = match this.take_slot(&started, &twin, slot, &stop).await {
                Ok(slot) => (this.steps(&started, &twin, &stop).await, Some(slot)),
                Err(stop) => (Err(stop), None),
            };
            this.conclude(&started, result).await;
        };
        self.tasks.spawn_on(task, &self.parts.runtime);
        Ok(run)
    }

    /// Puts a run at the end of the queue and tells its readers where it stands.
    fn enqueue(&self, run_id: &RunId) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push_back(run_id.clone());
        }
        self.publish(
            run_id,
            RunEvent::Stage {
                stage: Stage::Queued,
            },
        );
        if let Some(position) = self.queue_position(run_id) {
            self.publish(run_id, RunEvent::Queue { position });
        }
    }

    /// The run's slot: the one it got at start, or the next free one (waiting as `pending`,
    /// its queue position streamed). A queued run then moves the twin to its working status.
    /// Marks the run processing; [`Stop::Unstarted`] if it was cancelled while it waited.
    async fn take_slot(
        &self,
        run: &Run,
        twin: &Twin,
        slot: Option<OwnedSemaphorePermit>,
        stop: &CancellationToken,
    ) -> Result<OwnedSemaphorePermit, Stop> {
        let queued = slot.is_none();
        let permit = match slot {
            Some(permit) => permit,
            None => {
                let acquired = tokio::select! {
                    permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
                    () = stop.cancelled() => None,
                };
                self.leave_queue(&run.id);
                acquired.ok_or(Stop::Unstarted(None))?
            }
        };
        if let Some(status) = run.kind.working_status() {
            if queued {
                let change = StatusMove {
                    to: status,
                    actor: run.actor.clone(),
                    reason: Some(format!("{} started", run.kind)),
                    lock: LockChange::Keep(run.id.clone()),
                };
                let twin_id = twin.id.clone();
                run_blocking(&self.parts.store, move |s| s.move_status(&twin_id, change))
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
        let id = run.id.clone();
        if let Err(err) = run_blocking(&self.parts.store, move |s| s.mark_run_processing(&id)).await
        {
            tracing::error!(run_id = %run.id, %err, "could not mark the run processing");
        }
        Ok(permit)
    }

    /// Takes a run out of the queue and tells the runs still waiting their new positions.
    fn leave_queue(&self, run_id: &RunId) {
        let waiting: Vec<RunId> = match self.queue.lock() {
            Ok(mut queue) => {
                queue.retain(|id| id != run_id);
                queue.iter().cloned().collect()
            }
            Err(_) => return,
        };
        for (index, id) in waiting.iter().enumerate() {
            self.publish(
                id,
                RunEvent::Queue {
                    position: index + 1,
                },
            );
        }
    }

    /// Asks a run to stop: SIGINT to terraform, then SIGKILL after the grace period.
    /// Returns false if the run is not active here.
    pub fn cancel(&self, run_id: &RunId) -> bool {
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

    async fn steps(
        &self,
        run: &Run,
        twin: &Twin,
        stop: &CancellationToken,
    ) -> Result<Produced, Stop> {
        let secret = self.parts.grants.issue(RunGrant {
            run_id: run.id.clone(),
            twin_id: twin.id.clone(),
            owner: twin.owner.clone(),
        });
        let masker = self.masker.with([secret.clone()]);
        let sink = Arc::new(RunSink::new(
            run.id.clone(),
            Arc::clone(&self.parts.hub),
            masker,
        ));
        self.publish(
            &run.id,
            RunEvent::Stage {
                stage: Stage::Initializing,
            },
        );
        // Runs that only read work in a directory of their own, beside any deploy.
        let dir = if run.kind.changes_infrastructure() {
            workspace::work_dir(&self.parts.settings.data_dir, &twin.id)
        } else {
            workspace::preview_dir(&self.parts.settings.data_dir, &run.id)
        };
        let toolchain = Toolchain::find(&self.parts.settings)
            .await
            .map_err(|e| Stop::failed(e.to_string()))?;
        let (data_dir, owned, tools) = (
            self.parts.settings.data_dir.clone(),
            twin.clone(),
            toolchain.clone(),
        );
        let workspace = tokio::task::spawn_blocking(move || {
            workspace::prepare(&dir, &data_dir, &owned, &tools)
        })
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .map_err(|e| Stop::failed(e.to_string()))?;
        let backend_url = self
            .backend_url
            .get()
            .map_or("http://127.0.0.1:8080", String::as_str);
        let state_url = format!("{backend_url}/twins/{}/tfstate", twin.id);
        let backend_env: Vec<(OsString, OsString)> = [
            ("TF_HTTP_ADDRESS", state_url.clone()),
            ("TF_HTTP_LOCK_ADDRESS", format!("{state_url}/lock")),
            ("TF_HTTP_UNLOCK_ADDRESS", format!("{state_url}/lock")),
            ("TF_HTTP_USERNAME", run.id.to_string()),
            ("TF_HTTP_PASSWORD", secret),
        ]
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect();
        let step = Step {
            run,
            toolchain: &toolchain,
            workspace: &workspace,
            sink: &sink,
            stop,
            backend_env,
        };

        self.terraform(
            &step,
            &["init", "-input=false", "-no-color", "-reconfigure"],
        )
        .await?;
        let produced = match run.kind {
            RunKind::Deploy => self.deploy(&step, twin).await,
            RunKind::Destroy => self.destroy(&step).await.map(|()| Produced::default()),
            RunKind::Plan => self.plan_preview(&step, twin).await,
            RunKind::Drift => self.check_drift(&step).await,
        }?;
        sink.complete_progress();
        Ok(produced)
    }

    /// Ends a run that ran here: recovers any state terraform could not save, lets go of its
    /// backend credential and state lock, then records the end.
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
                    error: Some("cancelled: terraform was interrupted".into()),
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
            };
        if run.kind.changes_infrastructure() {
            self.collect_leftovers(&run.id, &run.twin_id).await;
        } else {
            self.parts.grants.revoke(&run.id);
            // A preview or drift check killed mid-plan (timed out) leaves terraform's state
            // lock behind, and every later run would wait for it.
            let (state, twin_id, run_id) = (
                Arc::clone(&self.parts.state),
                run.twin_id.clone(),
                run.id.clone(),
            );
            match tokio::task::spawn_blocking(move || state.release_run_lock(&twin_id, &run_id))
                .await
            {
                Ok(Ok(true)) => {
                    tracing::warn!(run_id = %run.id, "released a state lock the run's terraform left behind");
                }
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::error!(run_id = %run.id, %err, "could not release the run's state lock");
                }
                Err(err) => tracing::error!(run_id = %run.id, %err, "lock release panicked"),
            }
            let dir = workspace::preview_dir(&self.parts.settings.data_dir, &run.id);
            if let Err(err) =
                tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await
            {
                tracing::warn!(run_id = %run.id, %err, "could not remove the preview directory");
            }
        }
        if ending.outcome == Outcome::Succeeded {
            self.publish(
                &run.id,
                RunEvent::Stage {
                    stage: Stage::Complete,
                },
            );
        }
        self.record_end(run, ending).await;
        if let Ok(mut active) = self.active.lock() {
            active.remove(&run.id);
        }
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
        let release_lock = (!moved && run.kind.changes_infrastructure()).then(|| run.id.clone());
        // Runs that move nothing report the twin's status as it is.
        let twin_status = match &twin_move {
            Some(change) => Some(change.to),
            None => {
                let twin_id = run.twin_id.clone();
                run_blocking(&self.parts.store, move |s| s.get_twin(&twin_id))
                    .await
                    .ok()
                    .flatten()
                    .map(|twin| twin.deployment_status)
            }
        };
        let finish = RunFinish {
            run_id: run.id.clone(),
            twin_id: run.twin_id.clone(),
            outcome,
            exit_code,
            error: error.clone(),
            message,
            outputs,
            deployed,
            twin_move: twin_move.clone(),
            release_lock,
            result,
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
        if let Err(err) = self.parts.hub.finish(&last, finish).await {
            tracing::error!(run_id = %run.id, %err, "could not record the end of the run");
        }
        self.parts
            .metrics
            .runs
            .with_label_values(&[run.kind.as_str(), outcome.as_str()])
            .inc();
        tracing::info!(run_id = %run.id, kind = %run.kind, %outcome, "run ended");
    }
}

/// What every step of a run shares.
struct Step<'a> {
    run: &'a Run,
    toolchain: &'a Toolchain,
    workspace: &'a Workspace,
    sink: &'a Arc<RunSink>,
    stop: &'a CancellationToken,
    backend_env: Vec<(OsString, OsString)>,
}
