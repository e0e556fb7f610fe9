//! The supervisor: starts runs (status move and lock in one step), walks each through its
//! stages on the runs runtime, and ends it with its outcome, final status and `done` event
//! written together.

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

use super::plan;
use super::process::{capture_stdout, Exit, LineSink, ProcessSpec, RunningProcess};
use super::secrets::{Credentials, Masker};
use super::tfjson::{self, Progress};
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
    run_blocking, LockChange, NewRun, OutputsChange, RunFinish, StatusMove, Store, StoreError,
    StoredPlan,
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

    /// Starts a run: the twin's move to deploying/destroying and its lock are one
    /// compare-and-set (a conflict when another run holds it or the move is not allowed).
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
        let change = kind.working_status().map(|to| StatusMove {
            to,
            actor: actor.to_owned(),
            reason: Some(format!("{kind} started")),
            lock: LockChange::Acquire(run_id.clone()),
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
        // A run that moved the twin says so first.
        let published = match kind.working_status() {
            Some(status) => self.parts.hub.publish(
                &run.id,
                &RunEvent::Status {
                    twin_id: twin.id.clone(),
                    status,
                },
            ),
            None => Ok(0),
        };
        let this = Arc::clone(self);
        let started = run.clone();
        let task = async move {
            // The slot is held until the run's end is recorded, so the next run in the queue
            // starts after this one has ended.
            let (result, _slot) = match published {
                Err(err) => (
                    Err(Stop::failed(format!("the event hub failed: {err}"))),
                    None,
                ),
                Ok(_) => match this.take_slot(&started.id, &stop).await {
                    Some(slot) => (this.steps(&started, &twin, &stop).await, Some(slot)),
                    None => (Err(Stop::Cancelled), None),
                },
            };
            this.conclude(&started, result).await;
        };
        self.tasks.spawn_on(task, &self.parts.runtime);
        Ok(run)
    }

    /// Waits for a free run slot (as `pending`, its queue position streamed), then marks the
    /// run processing. `None` if the run was cancelled while it waited.
    async fn take_slot(
        &self,
        run_id: &RunId,
        stop: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
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
                let acquired = tokio::select! {
                    permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
                    () = stop.cancelled() => None,
                };
                self.leave_queue(run_id);
                acquired?
            }
        };
        let id = run_id.clone();
        if let Err(err) = run_blocking(&self.parts.store, move |s| s.mark_run_processing(&id)).await
        {
            tracing::error!(%run_id, %err, "could not mark the run processing");
        }
        Some(permit)
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
        let (data_dir, owned) = (self.parts.settings.data_dir.clone(), twin.clone());
        let workspace =
            tokio::task::spawn_blocking(move || workspace::prepare(&dir, &data_dir, &owned))
                .await
                .map_err(|e| Stop::failed(e.to_string()))?
                .map_err(|e| Stop::failed(e.to_string()))?;
        let toolchain =
            Toolchain::locate(&self.parts.settings).map_err(|e| Stop::failed(e.to_string()))?;
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

    /// Deploy: apply the twin's kept plan preview if it is still current (so what was
    /// previewed is exactly what is applied), else plan now; then apply and read the outputs.
    async fn deploy(&self, step: &Step<'_>, twin: &Twin) -> Result<Produced, Stop> {
        let run_id = &step.run.id;
        self.publish(
            run_id,
            RunEvent::Stage {
                stage: Stage::Planning,
            },
        );
        let kept = self.current_plan(twin).await;
        match &kept {
            Some((plan, bytes, changes)) => {
                std::fs::write(step.workspace.dir.join(PLAN_FILE), bytes)
                    .map_err(|e| Stop::failed(format!("cannot write the previewed plan: {e}")))?;
                step.sink.expect_changes(changes);
                step.sink.line(
                    LogStream::Stdout,
                    format!(
                        "Applying the plan previewed in run {} ({} changes).",
                        plan.run_id,
                        changes.len()
                    ),
                    clock::now(),
                );
            }
            None => {
                let out = format!("-out={PLAN_FILE}");
                self.terraform(step, &["plan", "-input=false", "-json", LOCK_TIMEOUT, &out])
                    .await?;
            }
        }
        self.publish(
            run_id,
            RunEvent::Stage {
                stage: Stage::Applying,
            },
        );
        self.terraform(
            step,
            &["apply", "-input=false", "-json", LOCK_TIMEOUT, PLAN_FILE],
        )
        .await?;
        if let Some((plan, _, _)) = kept {
            let (plan_run, by) = (plan.run_id, run_id.clone());
            if let Err(err) = run_blocking(&self.parts.store, move |s| {
                s.mark_plan_applied(&plan_run, &by)
            })
            .await
            {
                tracing::warn!(%err, "could not mark the plan applied");
            }
        }
        let (exit, stdout) = self.capture(step, &["output", "-json"]).await?;
        if !exit.success() {
            return Err(Stop::failed(
                "terraform output failed after a successful apply",
            ));
        }
        let raw: serde_json::Value = serde_json::from_slice(&stdout)
            .map_err(|e| Stop::failed(format!("terraform output printed invalid JSON: {e}")))?;
        Ok(Produced {
            outputs: Some(mask_outputs(&raw)),
            result: None,
        })
    }

    async fn destroy(&self, step: &Step<'_>) -> Result<(), Stop> {
        self.publish(
            &step.run.id,
            RunEvent::Stage {
                stage: Stage::Destroying,
            },
        );
        self.terraform(
            step,
            &[
                "destroy",
                "-auto-approve",
                "-input=false",
                "-json",
                LOCK_TIMEOUT,
            ],
        )
        .await?;
        self.publish(
            &step.run.id,
            RunEvent::Stage {
                stage: Stage::Cleanup,
            },
        );
        self.verify_destroyed(step).await
    }

    /// A plan preview: every resource change and the summary, and the plan kept (encrypted)
    /// for the next deploy.
    async fn plan_preview(&self, step: &Step<'_>, twin: &Twin) -> Result<Produced, Stop> {
        self.publish(
            &step.run.id,
            RunEvent::Stage {
                stage: Stage::Planning,
            },
        );
        let twin_id = twin.id.clone();
        let serial = run_blocking(&self.parts.store, move |s| s.current_state(&twin_id))
            .await
            .map_err(|e| Stop::failed(e.to_string()))?
            .map_or(0, |state| state.serial);
        let out = format!("-out={PLAN_FILE}");
        self.terraform(step, &["plan", "-input=false", "-json", LOCK_TIMEOUT, &out])
            .await?;
        let (exit, shown) = self.capture(step, &["show", "-json", PLAN_FILE]).await?;
        if !exit.success() {
            return Err(Stop::failed("terraform show could not read the plan"));
        }
        let shown: serde_json::Value = serde_json::from_slice(&shown)
            .map_err(|e| Stop::failed(format!("terraform show printed invalid JSON: {e}")))?;
        let bytes = std::fs::read(step.workspace.dir.join(PLAN_FILE))
            .map_err(|e| Stop::failed(format!("cannot read the plan file: {e}")))?;
        let (state, run_id, twin_id, hash) = (
            Arc::clone(&self.parts.state),
            step.run.id.clone(),
            twin.id.clone(),
            config_hash(twin),
        );
        tokio::task::spawn_blocking(move || {
            state.save_plan(&twin_id, &run_id, &hash, serial, &bytes)
        })
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .map_err(|e| Stop::failed(format!("cannot keep the plan: {e}")))?;
        let (changes, summary) = step.sink.planned();
        Ok(Produced {
            outputs: None,
            result: Some(json!({
                "changes": changes,
                "summary": summary,
                "resources_after": plan::resources_after(&shown),
            })),
        })
    }

    /// A drift check: a refresh-only plan; what changed or vanished outside terraform.
    async fn check_drift(&self, step: &Step<'_>) -> Result<Produced, Stop> {
        self.publish(
            &step.run.id,
            RunEvent::Stage {
                stage: Stage::CheckingDrift,
            },
        );
        self.terraform(
            step,
            &[
                "plan",
                "-refresh-only",
                "-input=false",
                "-json",
                LOCK_TIMEOUT,
            ],
        )
        .await?;
        let drifted = step.sink.drifted();
        let note = match drifted.len() {
            0 => "No drift: the infrastructure matches the state.".to_owned(),
            n => format!("Drift: {n} resources changed or were deleted outside terraform."),
        };
        step.sink.line(LogStream::Stdout, note, clock::now());
        Ok(Produced {
            outputs: None,
            result: Some(json!({ "drifted": drifted })),
        })
    }

    /// The twin's newest plan preview if it still applies: not yet applied, made from the
    /// twin's current files and variables, against the current state. With its changes.
    pub async fn current_plan(
        &self,
        twin: &Twin,
    ) -> Option<(StoredPlan, Vec<u8>, Vec<serde_json::Value>)> {
        let (state, twin_id, hash) = (
            Arc::clone(&self.parts.state),
            twin.id.clone(),
            config_hash(twin),
        );
        let store = Arc::clone(&self.parts.store);
        let found = tokio::task::spawn_blocking(
            move || -> Option<(StoredPlan, Vec<u8>, Vec<serde_json::Value>)> {
                let (plan, bytes) = state.latest_plan(&twin_id).ok()??;
                let serial = store.current_state(&twin_id).ok()?.map_or(0, |s| s.serial);
                if plan.applied_by.is_some()
                    || plan.config_hash != hash
                    || plan.state_serial != serial
                {
                    return None;
                }
                let run = store.get_run(&plan.run_id).ok()??;
                let changes = run.result?.get("changes")?.as_array()?.clone();
                Some((plan, bytes, changes))
            },
        )
        .await;
        found.ok().flatten()
    }

    /// SDK cleanup: the state must be empty after a destroy; then the operator's cleanup
    /// command, if one is configured.
    async fn verify_destroyed(&self, step: &Step<'_>) -> Result<(), Stop> {
        let (exit, stdout) = self.capture(step, &["state", "list"]).await?;
        if !exit.success() {
            return Err(Stop::failed("terraform state list failed after destroy"));
        }
        let left: Vec<String> = String::from_utf8_lossy(&stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if !left.is_empty() {
            return Err(Stop::failed(format!(
                "resources still in state after destroy: {}",
                left.join(", ")
            )));
        }
        step.sink.line(
            LogStream::Stdout,
            "State is empty: every resource was destroyed.".into(),
            clock::now(),
        );
        if let Some(command) = &self.parts.settings.cleanup_command {
            let spec = ProcessSpec {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), command.clone()],
                cwd: step.workspace.dir.clone(),
                env: self.env(step),
            };
            let exit = self.spawn_and_wait(step, &spec).await?;
            if !exit.success() {
                return Err(Stop::Failed {
                    error: format!("the cleanup command failed (exit code {:?})", exit.code),
                    exit_code: exit.code,
                });
            }
        }
        Ok(())
    }

    fn env(&self, step: &Step<'_>) -> Vec<(OsString, OsString)> {
        let mut env = step.toolchain.base_env();
        env.extend(self.parts.credentials.env());
        env.extend(step.backend_env.iter().cloned());
        env.push((
            "SANDBOX_DIR".into(),
            step.workspace.sandbox_dir.clone().into_os_string(),
        ));
        env.push((
            "TERRASTREAM_TWIN_ID".into(),
            step.run.twin_id.to_string().into(),
        ));
        env.push(("TERRASTREAM_RUN_ID".into(), step.run.id.to_string().into()));
        env
    }

    fn spec(&self, step: &Step<'_>, args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            program: step.toolchain.terraform.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            cwd: step.workspace.dir.clone(),
            env: self.env(step),
        }
    }

    async fn terraform(&self, step: &Step<'_>, args: &[&str]) -> Result<(), Stop> {
        let spec = self.spec(step, args);
        let exit = self.spawn_and_wait(step, &spec).await?;
        if exit.success() {
            return Ok(());
        }
        let why = step.sink.last_error().unwrap_or_else(|| match exit.code {
            Some(code) => format!("exit code {code}"),
            None => "terraform was killed".into(),
        });
        Err(Stop::Failed {
            error: format!("terraform {} failed: {why}", args[0]),
            exit_code: exit.code,
        })
    }

    async fn spawn_and_wait(&self, step: &Step<'_>, spec: &ProcessSpec) -> Result<Exit, Stop> {
        if step.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let sink: Arc<dyn LineSink> = step.sink.clone();
        let process = RunningProcess::spawn(spec, sink).map_err(|e| Stop::failed(e.to_string()))?;
        let (run_id, pgid, workdir) = (
            step.run.id.clone(),
            process.pgid(),
            step.workspace.dir.display().to_string(),
        );
        let recorded = run_blocking(&self.parts.store, move |s| {
            s.record_run_process(&run_id, Some(pgid), &workdir)
        })
        .await;
        if let Err(err) = recorded {
            tracing::warn!(%err, "could not record the terraform process group");
        }
        // The stop ladder fires on cancel, on shutdown, or when the command's time is up.
        let (limit, what) = self.time_limit(&spec.args);
        let ladder = step.stop.child_token();
        let timed_out = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn({
            let (ladder, timed_out) = (ladder.clone(), Arc::clone(&timed_out));
            async move {
                tokio::time::sleep(limit).await;
                timed_out.store(true, Ordering::SeqCst);
                ladder.cancel();
            }
        });
        let watchdog = tokio::spawn(watch_silence(
            Arc::clone(step.sink),
            self.parts.settings.silence_warning,
        ));
        let exit = process
            .wait(&ladder, self.parts.settings.cancel_grace)
            .await;
        timer.abort();
        watchdog.abort();
        let exit = exit.map_err(|e| Stop::failed(e.to_string()))?;
        if exit.interrupted && timed_out.load(Ordering::SeqCst) {
            return Err(Stop::Failed {
                error: format!(
                    "terraform {what} timed out after {}; it was stopped{}",
                    humanize(limit),
                    if exit.killed {
                        " (killed after the grace period)"
                    } else {
                        " gracefully"
                    }
                ),
                exit_code: exit.code,
            });
        }
        if exit.interrupted {
            return Err(Stop::Cancelled);
        }
        Ok(exit)
    }

    /// The time limit of a command, by what it does.
    fn time_limit(&self, args: &[String]) -> (Duration, String) {
        let timeouts = &self.parts.settings.timeouts;
        let what = args.first().map_or("command", String::as_str);
        let limit = match what {
            "init" => timeouts.init,
            "apply" => timeouts.apply,
            "destroy" => timeouts.destroy,
            _ => timeouts.plan,
        };
        (limit, what.to_owned())
    }

    async fn capture(&self, step: &Step<'_>, args: &[&str]) -> Result<(Exit, Vec<u8>), Stop> {
        if step.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let sink: Arc<dyn LineSink> = step.sink.clone();
        let spec = self.spec(step, args);
        let (limit, what) = self.time_limit(&spec.args);
        match tokio::time::timeout(limit, capture_stdout(&spec, sink)).await {
            Ok(result) => result.map_err(|e| Stop::failed(e.to_string())),
            Err(_) => Err(Stop::failed(format!(
                "terraform {what} timed out after {}",
                humanize(limit)
            ))),
        }
    }

    /// Ends a run that ran here: recovers any state terraform could not save, lets go of its
    /// backend credential and state lock, then records the end.
    async fn conclude(&self, run: &Run, result: Result<Produced, Stop>) {
        let ending = match result {
            Ok(produced) => Ending {
                outcome: Outcome::Succeeded,
                error: None,
                exit_code: Some(0),
                outputs: produced.outputs,
                result: produced.result,
            },
            Err(Stop::Cancelled) => Ending {
                outcome: Outcome::Cancelled,
                error: Some("cancelled: terraform was interrupted".into()),
                exit_code: None,
                outputs: None,
                result: None,
            },
            Err(Stop::Failed { error, exit_code }) => Ending {
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

    /// After terraform is gone: push an `errored.tfstate` it left (so nothing it created is
    /// lost), release a state lock it still held, and revoke its backend credential.
    async fn collect_leftovers(&self, run_id: &RunId, twin_id: &TwinId) {
        self.parts.grants.revoke(run_id);
        let work_dir = workspace::work_dir(&self.parts.settings.data_dir, twin_id);
        // A plan file holds planned values (secrets included) in clear: never keep it.
        match std::fs::remove_file(work_dir.join(PLAN_FILE)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(%run_id, %err, "could not remove the plan file");
            }
            _ => {}
        }
        let errored = work_dir.join(ERRORED_STATE);
        let state = Arc::clone(&self.parts.state);
        let (run, twin) = (run_id.clone(), twin_id.clone());
        let recovered = tokio::task::spawn_blocking(move || -> Result<Option<i64>, String> {
            let released = state.release_run_lock(&twin, &run).map_err(|e| e.to_string())?;
            if released {
                tracing::warn!(run_id = %run, "released a state lock the run's terraform left behind");
            }
            let Ok(body) = std::fs::read(&errored) else { return Ok(None) };
            let writer = Writer { actor: format!("run {run} (recovered {ERRORED_STATE})"), run_id: Some(run.clone()) };
            let version = state.recover(&twin, &body, &writer).map_err(|e| e.to_string())?.version;
            let kept = errored.with_extension(format!("tfstate.recovered-{}", clock::now().replace(':', "")));
            std::fs::rename(&errored, kept).map_err(|e| e.to_string())?;
            Ok(Some(version))
        })
        .await;
        match recovered {
            Ok(Ok(Some(version))) => self.publish(
                run_id,
                RunEvent::Warning {
                    message: format!("terraform could not save its state; recovered {ERRORED_STATE} as state version {version}"),
                },
            ),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::error!(%run_id, %err, "could not recover the run's leftovers");
                self.publish(run_id, RunEvent::Warning { message: format!("could not recover {ERRORED_STATE}: {err}") });
            }
            Err(err) => tracing::error!(%run_id, %err, "leftover collection panicked"),
        }
    }

    /// Writes the run's end: outcome and outputs, the twin's final move releasing the lock,
    /// and the last `status` and `done` events, in one transaction.
    async fn record_end(&self, run: &Run, ending: Ending) {
        let Ending {
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
        let outputs = match (run.kind, outcome, outputs) {
            (RunKind::Deploy, Outcome::Succeeded, Some(outputs)) => {
                OutputsChange::Deployed(outputs)
            }
            (RunKind::Destroy, Outcome::Succeeded, _) => OutputsChange::Clear,
            _ => OutputsChange::Keep,
        };
        let twin_move = run.kind.final_status(outcome).map(|to| StatusMove {
            to,
            actor: run.actor.clone(),
            reason: Some(message.clone()),
            lock: LockChange::Release(run.id.clone()),
        });
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
            twin_move: twin_move.clone(),
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

    /// Ends a run that is recorded as active but has no terraform here any more (the gateway
    /// restarted, or it crashed): failed with `reason`, the twin unlocked, readers given `done`.
    pub async fn settle_dead_run(&self, run: &Run, reason: &str) -> Result<(), RunError> {
        let run_id = run.id.clone();
        let last = run_blocking(&self.parts.store, move |s| s.last_event_seq(&run_id)).await?;
        self.parts.hub.open_run(&run.id, last);
        self.collect_leftovers(&run.id, &run.twin_id).await;
        let ending = Ending {
            outcome: Outcome::Failed,
            error: Some(reason.to_owned()),
            exit_code: None,
            outputs: None,
            result: None,
        };
        self.record_end(run, ending).await;
        Ok(())
    }

    /// Graceful stop: no new runs; every run (pending or working) is asked to stop (one
    /// SIGINT, then the kill after the grace period) and its outcome stored, which sends its
    /// streams their `done`. Waits at most `limit` for that; then flushes the event writer.
    pub async fn shutdown(&self, limit: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        let tokens: Vec<CancellationToken> = self
            .active
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        if !tokens.is_empty() {
            tracing::info!(runs = tokens.len(), "stopping runs for shutdown");
        }
        for token in tokens {
            token.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "runs did not stop within the shutdown grace; the next start settles them"
            );
        }
        if let Err(err) = self.parts.hub.flush().await {
            tracing::error!(%err, "could not flush the event writer");
        }
    }

    /// At start, before serving: every run a previous life left pending or processing is
    /// settled. A terraform still alive is stopped gracefully (SIGINT to its group, then the
    /// kill), what it left (errored.tfstate, a state lock) is collected, and the run ends
    /// failed, "interrupted by a restart", with its twin unlocked and its stream ended.
    pub async fn settle_interrupted_runs(&self) -> Result<usize, RunError> {
        let runs = run_blocking(&self.parts.store, |s| s.unfinished_runs()).await?;
        // All at once: each leftover terraform may take its whole grace period to stop.
        let settled = futures_util::future::join_all(runs.iter().map(|run| async move {
            stop_leftover_processes(&run.id, self.parts.settings.cancel_grace).await;
            tracing::warn!(run_id = %run.id, twin_id = %run.twin_id, "settling a run interrupted by a restart");
            self.settle_dead_run(run, INTERRUPTED_BY_RESTART).await
        }))
        .await;
        settled.into_iter().collect::<Result<Vec<()>, RunError>>()?;
        Ok(runs.len())
    }

    /// Brings a twin's status in line with reality: clears a lock whose run is not alive, then
    /// moves draft-with-resources to deployed, and deployed/error/destroy_failed without
    /// resources to draft. Returns what it changed, in words.
    pub async fn reconcile(&self, twin: &Twin, actor: &str) -> Result<Vec<String>, RunError> {
        let store = &self.parts.store;
        let mut changes = Vec::new();
        if let Some(run_id) = twin
            .active_job_id
            .clone()
            .filter(|r| twin.is_locked && !self.is_active(r))
        {
            let lookup = run_id.clone();
            match run_blocking(store, move |s| s.get_run(&lookup)).await? {
                Some(run) if !run.status.is_finished() => {
                    self.settle_dead_run(
                        &run,
                        "the run was no longer running; its lock was cleared by a refresh",
                    )
                    .await?;
                }
                _ => {
                    let (twin_id, release) = (twin.id.clone(), run_id.clone());
                    let to = if twin.deployment_status == DeploymentStatus::Destroying {
                        DeploymentStatus::DestroyFailed
                    } else {
                        DeploymentStatus::Error
                    };
                    let change = StatusMove {
                        to,
                        actor: actor.to_owned(),
                        reason: Some(format!(
                            "lock of run {run_id} cleared by a refresh: the run is not running"
                        )),
                        lock: LockChange::Release(release),
                    };
                    run_blocking(store, move |s| s.move_status(&twin_id, change)).await?;
                }
            }
            changes.push(format!(
                "cleared the lock of run {run_id}, which was no longer running"
            ));
        }
        let twin_id = twin.id.clone();
        let Some(twin) = run_blocking(store, move |s| s.get_twin(&twin_id)).await? else {
            return Ok(changes);
        };
        if twin.is_locked || twin.is_deleted() {
            return Ok(changes);
        }
        let twin_id = twin.id.clone();
        let resources = run_blocking(store, move |s| s.current_state(&twin_id))
            .await?
            .map_or(0, |state| state.resource_count);
        let target = match (twin.deployment_status, resources) {
            (DeploymentStatus::Draft, n) if n > 0 => Some(DeploymentStatus::Deployed),
            (
                DeploymentStatus::Deployed
                | DeploymentStatus::Error
                | DeploymentStatus::DestroyFailed,
                0,
            ) => Some(DeploymentStatus::Draft),
            _ => None,
        };
        if let Some(to) = target {
            let reason = format!(
                "refresh: the stored state holds {resources} resources but the twin was {}",
                twin.deployment_status
            );
            let (twin_id, actor_owned, why) = (twin.id.clone(), actor.to_owned(), reason.clone());
            run_blocking(store, move |s| {
                s.reconcile_status(&twin_id, to, &actor_owned, &why)
            })
            .await?;
            changes.push(format!(
                "moved from {} to {to}: {reason}",
                twin.deployment_status
            ));
        }
        Ok(changes)
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

/// Turns terraform's lines into events: secrets masked, `-json` objects shown as their
/// human text and counted for progress.
struct RunSink {
    run_id: RunId,
    hub: Arc<EventHub>,
    masker: Masker,
    state: Mutex<SinkState>,
}

struct SinkState {
    progress: Progress,
    last_error: Option<String>,
    last_output: Instant,
    /// A plan's resource changes: `{"address", "type", "action"}`.
    changes: Vec<serde_json::Value>,
    /// terraform's change summary (`add`, `change`, `remove`, ...).
    summary: Option<serde_json::Value>,
    /// Resources changed or deleted outside terraform.
    drifted: Vec<serde_json::Value>,
}

impl Default for SinkState {
    fn default() -> Self {
        Self {
            progress: Progress::default(),
            last_error: None,
            last_output: Instant::now(),
            changes: Vec::new(),
            summary: None,
            drifted: Vec::new(),
        }
    }
}

impl RunSink {
    fn new(run_id: RunId, hub: Arc<EventHub>, masker: Masker) -> Self {
        Self {
            run_id,
            hub,
            masker,
            state: Mutex::default(),
        }
    }

    fn last_error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.last_error.clone())
    }

    fn publish(&self, event: &RunEvent) {
        if let Err(err) = self.hub.publish(&self.run_id, event) {
            tracing::error!(run_id = %self.run_id, %err, "event lost");
        }
    }

    /// The changes a plan announced, and its summary.
    fn planned(&self) -> (Vec<serde_json::Value>, Option<serde_json::Value>) {
        self.state
            .lock()
            .map(|s| (s.changes.clone(), s.summary.clone()))
            .unwrap_or_default()
    }

    fn drifted(&self) -> Vec<serde_json::Value> {
        self.state
            .lock()
            .map(|s| s.drifted.clone())
            .unwrap_or_default()
    }

    /// Applying a kept plan: its changes are the work the progress bar counts.
    fn expect_changes(&self, changes: &[serde_json::Value]) {
        if let Ok(mut state) = self.state.lock() {
            for change in changes {
                state.progress.expect(
                    change["address"].as_str().unwrap_or(""),
                    change["action"].as_str().unwrap_or(""),
                );
            }
        }
    }

    /// A successful run always ends its progress bar at 100, even with nothing to change.
    fn complete_progress(&self) {
        let figures = self
            .state
            .lock()
            .ok()
            .map(|s| (s.progress.percent(), s.progress.figures()));
        if let Some((percent, (done, total))) = figures {
            if percent < 100 {
                self.publish(&RunEvent::Progress {
                    percent: 100,
                    done: done.max(total),
                    total,
                });
            }
        }
    }
}

impl LineSink for RunSink {
    fn line(&self, stream: LogStream, line: String, ts: String) {
        if let Ok(mut state) = self.state.lock() {
            state.last_output = Instant::now();
        }
        let line = self.masker.mask(line);
        let mut progress = None;
        let text = match tfjson::parse(&line) {
            Some(message) => {
                let error = message.error_summary();
                if let Ok(mut state) = self.state.lock() {
                    collect(&mut state, &message);
                    if let Some(error) = &error {
                        state.last_error = Some(error.clone());
                    }
                    if let Some((done, total)) = state.progress.observe(&message) {
                        progress = Some(RunEvent::Progress {
                            percent: state.progress.percent(),
                            done,
                            total,
                        });
                    }
                }
                error.map_or(message.text, |error| format!("Error: {error}"))
            }
            None => {
                // Commands without -json (init) print diagnostics as text: keep the summary,
                // so the run's error names the problem rather than an exit code.
                if let Some(summary) = line.strip_prefix("Error: ").map(str::trim) {
                    if let Ok(mut state) = self.state.lock() {
                        state.last_error = Some(summary.to_owned());
                    }
                }
                line
            }
        };
        self.publish(&RunEvent::Log {
            stream,
            line: text,
            ts,
        });
        if let Some(progress) = progress {
            self.publish(&progress);
        }
    }
}

/// Warns (once per silence) when terraform has printed nothing for `threshold`: a hung
/// provider or a prompt nobody can answer looks exactly like a slow apply otherwise.
async fn watch_silence(sink: Arc<RunSink>, threshold: Duration) {
    let check = (threshold / 4).max(Duration::from_secs(1));
    let mut warned_at = None;
    loop {
        tokio::time::sleep(check).await;
        let Some(last) = sink.state.lock().ok().map(|s| s.last_output) else {
            return;
        };
        if last.elapsed() >= threshold && warned_at != Some(last) {
            warned_at = Some(last);
            sink.publish(&RunEvent::Warning {
                message: format!(
                    "terraform has printed nothing for {}",
                    humanize(last.elapsed())
                ),
            });
        }
    }
}

/// `90 s`, `12 min`, `3 h`: durations as people read them.
fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

/// Stops what a previous life of the gateway left running for a run: one SIGINT to each
/// terraform's group, then SIGKILL after `grace`. The processes are found by the run id each
/// one carries in its environment, not by the recorded group: a crash between spawning
/// terraform and recording its group, or a provider whose terraform is gone, are found too.
async fn stop_leftover_processes(run_id: &RunId, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let groups = leftover_groups(run_id);
    for (&pgid, &leader_alive) in &groups {
        // Without its terraform, a group's providers have nobody to finish for.
        let signal = if leader_alive {
            Signal::SIGINT
        } else {
            Signal::SIGKILL
        };
        tracing::warn!(%run_id, pgid, ?signal, "a process of the run from before the restart is still running; stopping it");
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
    let alive = |pgid: &i32| killpg(Pid::from_raw(*pgid), None).is_ok();
    let deadline = Instant::now() + grace;
    while groups.keys().any(alive) {
        if Instant::now() >= deadline {
            tracing::warn!(%run_id, "terraform did not stop within the grace period; killing it");
            for pgid in groups.keys() {
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Process groups with a process carrying `TERRASTREAM_RUN_ID=<run_id>`, each with whether
/// its leader (the terraform the gateway started) is among them.
fn leftover_groups(run_id: &RunId) -> std::collections::BTreeMap<i32, bool> {
    let marker = format!("TERRASTREAM_RUN_ID={run_id}");
    let mut groups = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = std::fs::read(entry.path().join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()));
        let pid = nix::unistd::Pid::from_raw(pid);
        if let Some(pgid) = ours.then(|| nix::unistd::getpgid(Some(pid)).ok()).flatten() {
            *groups.entry(pgid.as_raw()).or_insert(false) |= pgid == pid;
        }
    }
    groups
}

/// Keeps what a plan or drift check reports about resources.
fn collect(state: &mut SinkState, message: &tfjson::Message) {
    let change = &message.raw["change"];
    let resource = json!({
        "address": change["resource"]["addr"],
        "type": change["resource"]["resource_type"],
        "action": change["action"],
    });
    match message.kind.as_str() {
        "planned_change" => state.changes.push(resource),
        "resource_drift" => state.drifted.push(resource),
        "change_summary" => state.summary = Some(message.raw["changes"].clone()),
        _ => {}
    }
}
