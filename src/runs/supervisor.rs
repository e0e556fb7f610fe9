//! The supervisor: starts runs (status move and lock in one step), walks each through its
//! stages on the runs runtime, and ends it with its outcome, final status and `done` event
//! written together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::process::{capture_stdout, LineSink, ProcessSpec, RunningProcess};
use super::secrets::{mask_outputs, Credentials, Masker};
use super::tfjson::{self, Progress};
use super::toolchain::Toolchain;
use super::workspace::{self, Workspace, PLAN_FILE};
use crate::config::Settings;
use crate::domain::{LogStream, Outcome, Run, RunEvent, RunId, RunKind, Stage, Twin};
use crate::hub::{EventHub, HubError};
use crate::store::{
    run_blocking, LockChange, NewRun, OutputsChange, RunFinish, StatusMove, Store, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
}

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

pub struct Supervisor {
    settings: Settings,
    store: Arc<dyn Store>,
    hub: Arc<EventHub>,
    runtime: Handle,
    credentials: Credentials,
    masker: Masker,
    active: Mutex<HashMap<RunId, CancellationToken>>,
}

impl Supervisor {
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        hub: Arc<EventHub>,
        runtime: Handle,
        credentials: Credentials,
    ) -> Arc<Self> {
        let masker = Masker::new(credentials.secret_values());
        Arc::new(Self {
            settings,
            store,
            hub,
            runtime,
            credentials,
            masker,
            active: Mutex::default(),
        })
    }

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Starts a run: the twin's move to deploying/destroying and its lock are one
    /// compare-and-set (a conflict when another run holds it or the move is not allowed).
    pub async fn start(
        self: &Arc<Self>,
        twin: &Twin,
        kind: RunKind,
        actor: &str,
    ) -> Result<Run, RunError> {
        let run_id = RunId::generate();
        let change = StatusMove {
            to: kind.working_status(),
            actor: actor.to_owned(),
            reason: Some(format!("{kind} started")),
            lock: LockChange::Acquire(run_id.clone()),
        };
        let new = NewRun {
            id: run_id.clone(),
            twin_id: twin.id.clone(),
            kind,
            actor: actor.to_owned(),
        };
        let (run, twin) = run_blocking(&self.store, move |s| s.start_run(new, change)).await?;
        self.hub.open_run(&run.id, 0);
        let stop = CancellationToken::new();
        if let Ok(mut active) = self.active.lock() {
            active.insert(run.id.clone(), stop.clone());
        }
        let status = RunEvent::Status {
            twin_id: twin.id.clone(),
            status: twin.deployment_status,
        };
        let published = self.hub.publish(&run.id, &status);
        let this = Arc::clone(self);
        let started = run.clone();
        self.runtime.spawn(async move {
            let result = match published {
                Ok(_) => this.steps(&started, &twin, &stop).await,
                Err(err) => Err(Stop::failed(format!("the event hub failed: {err}"))),
            };
            this.conclude(&started, result).await;
        });
        Ok(run)
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

    fn publish(&self, run: &Run, event: RunEvent) {
        if let Err(err) = self.hub.publish(&run.id, &event) {
            tracing::error!(run_id = %run.id, %err, "event lost");
        }
    }

    async fn steps(
        &self,
        run: &Run,
        twin: &Twin,
        stop: &CancellationToken,
    ) -> Result<Option<serde_json::Value>, Stop> {
        let sink = Arc::new(RunSink::new(
            run.id.clone(),
            Arc::clone(&self.hub),
            self.masker.clone(),
        ));
        self.publish(
            run,
            RunEvent::Stage {
                stage: Stage::Initializing,
            },
        );
        let data_dir = self.settings.data_dir.clone();
        let owned = twin.clone();
        let workspace = tokio::task::spawn_blocking(move || workspace::prepare(&data_dir, &owned))
            .await
            .map_err(|e| Stop::failed(e.to_string()))?
            .map_err(|e| Stop::failed(e.to_string()))?;
        let toolchain =
            Toolchain::locate(&self.settings).map_err(|e| Stop::failed(e.to_string()))?;
        let step = Step {
            run,
            toolchain: &toolchain,
            workspace: &workspace,
            sink: &sink,
            stop,
        };

        self.terraform(&step, &["init", "-input=false", "-no-color"])
            .await?;
        match run.kind {
            RunKind::Deploy => {
                self.publish(
                    run,
                    RunEvent::Stage {
                        stage: Stage::Planning,
                    },
                );
                let out = format!("-out={PLAN_FILE}");
                self.terraform(&step, &["plan", "-input=false", "-json", &out])
                    .await?;
                self.publish(
                    run,
                    RunEvent::Stage {
                        stage: Stage::Applying,
                    },
                );
                self.terraform(&step, &["apply", "-input=false", "-json", PLAN_FILE])
                    .await?;
                let (exit, stdout) = self.capture(&step, &["output", "-json"]).await?;
                if !exit.success() {
                    return Err(Stop::failed(
                        "terraform output failed after a successful apply",
                    ));
                }
                let raw: serde_json::Value = serde_json::from_slice(&stdout).map_err(|e| {
                    Stop::failed(format!("terraform output printed invalid JSON: {e}"))
                })?;
                sink.complete_progress();
                Ok(Some(mask_outputs(&raw)))
            }
            RunKind::Destroy => {
                self.publish(
                    run,
                    RunEvent::Stage {
                        stage: Stage::Destroying,
                    },
                );
                self.terraform(
                    &step,
                    &["destroy", "-auto-approve", "-input=false", "-json"],
                )
                .await?;
                self.publish(
                    run,
                    RunEvent::Stage {
                        stage: Stage::Cleanup,
                    },
                );
                self.verify_destroyed(&step).await?;
                sink.complete_progress();
                Ok(None)
            }
        }
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
            crate::clock::now(),
        );
        if let Some(command) = &self.settings.cleanup_command {
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

    fn env(&self, step: &Step<'_>) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut env = step.toolchain.base_env();
        env.extend(self.credentials.env());
        env.push((
            "SANDBOX_DIR".into(),
            step.workspace.sandbox_dir.clone().into_os_string(),
        ));
        env.push((
            "TERRASTREAM_TWIN_ID".into(),
            step.workspace
                .dir
                .file_name()
                .unwrap_or_default()
                .to_owned(),
        ));
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

    async fn spawn_and_wait(
        &self,
        step: &Step<'_>,
        spec: &ProcessSpec,
    ) -> Result<super::Exit, Stop> {
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
        if let Err(err) = run_blocking(&self.store, move |s| {
            s.record_run_process(&run_id, Some(pgid), &workdir)
        })
        .await
        {
            tracing::warn!(%err, "could not record the terraform process group");
        }
        let exit = process
            .wait(step.stop, self.settings.cancel_grace)
            .await
            .map_err(|e| Stop::failed(e.to_string()))?;
        if exit.interrupted {
            return Err(Stop::Cancelled);
        }
        Ok(exit)
    }

    async fn capture(
        &self,
        step: &Step<'_>,
        args: &[&str],
    ) -> Result<(super::Exit, Vec<u8>), Stop> {
        if step.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let sink: Arc<dyn LineSink> = step.sink.clone();
        capture_stdout(&self.spec(step, args), sink)
            .await
            .map_err(|e| Stop::failed(e.to_string()))
    }

    /// Ends the run: final stage and progress, then the last `status` and `done` events in
    /// the same transaction as the outcome and the twin's move (which releases the lock).
    async fn conclude(&self, run: &Run, result: Result<Option<serde_json::Value>, Stop>) {
        let (outcome, error, exit_code, outputs) = match result {
            Ok(outputs) => (Outcome::Succeeded, None, Some(0), outputs),
            Err(Stop::Cancelled) => (
                Outcome::Cancelled,
                Some("cancelled: terraform was interrupted".to_owned()),
                None,
                None,
            ),
            Err(Stop::Failed { error, exit_code }) => (
                Outcome::Failed,
                Some(self.masker.mask(error)),
                exit_code,
                None,
            ),
        };
        if outcome == Outcome::Succeeded {
            self.publish(
                run,
                RunEvent::Stage {
                    stage: Stage::Complete,
                },
            );
        }
        let twin_status = run.kind.final_status(outcome);
        let message = match &error {
            None => format!("{} succeeded", run.kind),
            Some(error) => format!("{} {}: {error}", run.kind, outcome),
        };
        let outputs_change = match (run.kind, outcome, outputs) {
            (RunKind::Deploy, Outcome::Succeeded, Some(outputs)) => {
                OutputsChange::Deployed(outputs)
            }
            (RunKind::Destroy, Outcome::Succeeded, _) => OutputsChange::Clear,
            _ => OutputsChange::Keep,
        };
        let finish = RunFinish {
            run_id: run.id.clone(),
            twin_id: run.twin_id.clone(),
            outcome,
            exit_code,
            error: error.clone(),
            message: message.clone(),
            outputs: outputs_change,
            twin_move: Some(StatusMove {
                to: twin_status,
                actor: run.actor.clone(),
                reason: Some(message),
                lock: LockChange::Release(run.id.clone()),
            }),
        };
        let last = [
            RunEvent::Status {
                twin_id: run.twin_id.clone(),
                status: twin_status,
            },
            RunEvent::Done {
                outcome,
                twin_status,
                error,
            },
        ];
        if let Err(err) = self.hub.finish(&last, finish).await {
            tracing::error!(run_id = %run.id, %err, "could not record the end of the run");
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&run.id);
        }
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
}

/// Turns terraform's lines into events: secrets masked, `-json` objects shown as their
/// human text and counted for progress.
struct RunSink {
    run_id: RunId,
    hub: Arc<EventHub>,
    masker: Masker,
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    progress: Progress,
    last_error: Option<String>,
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

    /// A successful run always ends its progress bar at 100, even with nothing to change.
    fn complete_progress(&self) {
        let figures = self
            .state
            .lock()
            .ok()
            .map(|s| (s.progress.percent(), s.progress.figures()));
        if let Some((percent, (done, total))) = figures {
            if percent < 100 {
                let event = RunEvent::Progress {
                    percent: 100,
                    done: done.max(total),
                    total,
                };
                if let Err(err) = self.hub.publish(&self.run_id, &event) {
                    tracing::error!(run_id = %self.run_id, %err, "event lost");
                }
            }
        }
    }
}

impl LineSink for RunSink {
    fn line(&self, stream: LogStream, line: String, ts: String) {
        let line = self.masker.mask(line);
        let mut progress = None;
        let text = match tfjson::parse(&line) {
            Some(message) => {
                if let Ok(mut state) = self.state.lock() {
                    if let Some(error) = message.error_summary() {
                        state.last_error = Some(error.clone());
                    }
                    if let Some((done, total)) = state.progress.observe(&message) {
                        progress = Some((state.progress.percent(), done, total));
                    }
                }
                match message.error_summary() {
                    Some(error) => format!("Error: {error}"),
                    None => message.text,
                }
            }
            None => line,
        };
        let events = std::iter::once(RunEvent::Log {
            stream,
            line: text,
            ts,
        })
        .chain(progress.map(|(percent, done, total)| RunEvent::Progress {
            percent,
            done,
            total,
        }));
        for event in events {
            if let Err(err) = self.hub.publish(&self.run_id, &event) {
                tracing::error!(run_id = %self.run_id, %err, "event lost");
            }
        }
    }
}
