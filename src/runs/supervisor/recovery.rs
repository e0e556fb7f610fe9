//! When the gateway's process comes and goes while runs go on: what a run leaves behind
//! (`errored.tfstate`, a state lock, its credentials), adopting at start the runs a previous
//! life left (their monitors still working, or done meanwhile), settling the ones whose
//! monitors are gone too, starting the ones still queued, shutting down (leaving runs to
//! their monitors, or interrupting them), and a refresh that reconciles a twin with its state.

use std::time::Duration;

use super::*;
use crate::clock;
use crate::config::ShutdownMode;
use crate::domain::{RunStatus, TwinId};
use crate::runs::monitor::StepDir;
use crate::runs::process;
use crate::runs::workspace::{ERRORED_STATE, PLAN_FILE};
use crate::state::Writer;

/// What a start found of the runs a previous life left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Going on under their monitors, or finished meanwhile and completed now.
    pub adopted: usize,
    /// Their monitors were gone too: failed.
    pub settled: usize,
    /// Had a slot but had not started: started, or queued again.
    pub requeued: usize,
    /// Monitors left on this machine of runs another gateway took over meanwhile: stopped.
    pub stopped_strays: usize,
}

impl Supervisor {
    /// After terraform is gone: push an `errored.tfstate` it left (so nothing it created is
    /// lost), release a state lock it still held, revoke its backend credentials, and remove
    /// what holds planned values in clear (a plan file; a preview's whole directory).
    pub(super) async fn collect_leftovers(&self, run: &Run) {
        if let Err(err) = self.parts.grants.revoke(&run.id).await {
            tracing::error!(run_id = %run.id, %err, "could not revoke the run's credentials");
        }
        let data_dir = &self.parts.settings.data_dir;
        let work_dir = if run.kind.changes_infrastructure() {
            workspace::work_dir(data_dir, &run.twin_id)
        } else {
            workspace::preview_dir(data_dir, &run.id)
        };
        let errored = work_dir.join(ERRORED_STATE);
        let state = Arc::clone(&self.parts.state);
        let (run_id, twin) = (run.id.clone(), run.twin_id.clone());
        let recovered = tokio::task::spawn_blocking(move || -> Result<Option<i64>, String> {
            let released = state
                .release_run_lock(&twin, &run_id)
                .map_err(|e| e.to_string())?;
            if released {
                tracing::warn!(%run_id, "released a state lock the run's terraform left behind");
            }
            let Ok(body) = std::fs::read(&errored) else {
                return Ok(None);
            };
            let writer = Writer {
                actor: format!("run {run_id} (recovered {ERRORED_STATE})"),
                run_id: Some(run_id.clone()),
            };
            let version = state
                .recover(&twin, &body, &writer)
                .map_err(|e| e.to_string())?
                .version;
            let kept = errored.with_extension(format!(
                "tfstate.recovered-{}",
                clock::now().replace(':', "")
            ));
            std::fs::rename(&errored, kept).map_err(|e| e.to_string())?;
            Ok(Some(version))
        })
        .await;
        match recovered {
            Ok(Ok(Some(version))) => self.publish(
                &run.id,
                RunEvent::Warning {
                    message: format!("terraform could not save its state; recovered {ERRORED_STATE} as state version {version}"),
                },
            ),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::error!(run_id = %run.id, %err, "could not recover the run's leftovers");
                self.publish(&run.id, RunEvent::Warning { message: format!("could not recover {ERRORED_STATE}: {err}") });
            }
            Err(err) => tracing::error!(run_id = %run.id, %err, "leftover collection panicked"),
        }
        // A plan file holds planned values (secrets included) in clear: never keep it.
        let (changes, plan) = (run.kind.changes_infrastructure(), work_dir.join(PLAN_FILE));
        let removed = tokio::task::spawn_blocking(move || {
            if changes {
                std::fs::remove_file(plan)
            } else {
                std::fs::remove_dir_all(work_dir)
            }
        })
        .await;
        if let Ok(Err(err)) = removed {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(run_id = %run.id, %err, "could not remove the run's plan");
            }
        }
    }

    /// Ends a run that is recorded as active but has nothing left that works for it (its
    /// monitor is gone, or a refresh found its lock stale): failed with `reason`, what its
    /// terraform left collected, the twin unlocked, readers given `done`.
    pub async fn settle_dead_run(&self, run: &Run, reason: &str) -> Result<(), RunError> {
        // A run that died while it waited in the queue had not moved its twin yet.
        let twin_id = run.twin_id.clone();
        let twin = run_blocking(&self.parts.store, move |s| s.get_twin(&twin_id)).await?;
        let moved = twin.is_some_and(|t| works_in(run.kind, t.deployment_status));
        self.collect_leftovers(run).await;
        let ending = Ending {
            moved,
            outcome: Outcome::Failed,
            error: Some(reason.to_owned()),
            exit_code: None,
            outputs: None,
            result: None,
        };
        self.record_end(run, ending).await;
        Ok(())
    }

    /// At start, in the background once the gateway listens: every unfinished run this
    /// gateway owned in a previous life. One whose step's monitor still works, or recorded
    /// terraform's end while no gateway was up, is adopted: it goes on from that step, its
    /// spool read from where the last gateway stopped. One whose monitor is gone too is
    /// settled as failed. One that had claimed a slot but not started is started, or put back
    /// in the queue. Runs other gateways own are theirs: they are never touched here unless
    /// their gateway is lost ([`Supervisor::take_over_lost`]). Then the heartbeat starts and
    /// queued runs get the free slots.
    pub async fn recover(self: &Arc<Self>) -> Result<RecoveryReport, RunError> {
        // Alive first, so no other gateway takes over what is adopted here.
        self.beat().await?;
        let me = self.parts.replica.clone();
        let runs = run_blocking(&self.parts.store, |s| s.unfinished_runs()).await?;
        let mut report = RecoveryReport::default();
        for run in runs {
            let mine = match &run.owner {
                Some(owner) => *owner == me,
                // Recorded working with no owner: left by a gateway from before owners.
                None if run.status == RunStatus::Processing => {
                    let (id, to) = (run.id.clone(), me.clone());
                    run_blocking(&self.parts.store, move |s| {
                        s.move_run(&id, None, Some(&to), None)
                    })
                    .await?
                }
                None => false,
            };
            if !mine {
                continue;
            }
            let twin_id = run.twin_id.clone();
            let Some(twin) = run_blocking(&self.parts.store, move |s| s.get_twin(&twin_id)).await?
            else {
                continue;
            };
            if run.status == RunStatus::Pending && run.step.is_none() {
                tracing::info!(run_id = %run.id, "a run that had a slot but had not started starts again");
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(slot) => self.launch(run, twin, Some(slot), None),
                    Err(_) => {
                        let (id, from) = (run.id.clone(), me.clone());
                        run_blocking(&self.parts.store, move |s| {
                            s.move_run(&id, Some(&from), None, None)
                        })
                        .await?;
                    }
                }
                report.requeued += 1;
                continue;
            }
            match self.resume_point(&run) {
                Some(resume) => {
                    tracing::warn!(run_id = %run.id, step = resume.index, "adopting a run a previous gateway left");
                    // Already working: it takes a slot if one is free, and runs regardless.
                    let slot = Arc::clone(&self.slots).try_acquire_owned().ok();
                    self.launch(run, twin, slot, Some(resume));
                    report.adopted += 1;
                }
                None => {
                    tracing::warn!(run_id = %run.id, "the run's monitor is gone: settling it");
                    self.settle_dead_run(&run, MONITOR_LOST).await?;
                    report.settled += 1;
                }
            }
        }
        report.stopped_strays = self.stop_strays().await;
        self.recovered.store(true, Ordering::SeqCst);
        let this = Arc::clone(self);
        self.parts
            .runtime
            .spawn(async move { this.keep_alive().await });
        self.fill_slots().await;
        Ok(report)
    }

    /// Monitors on this machine of runs this gateway no longer runs (another gateway took
    /// them over while this one was away) are stopped: their terraform's backend credential
    /// was revoked, and a second terraform may already work on the twin. Their step
    /// directories go.
    async fn stop_strays(&self) -> usize {
        let runs_dir = self.parts.settings.data_dir.join("runs");
        let Ok(entries) = std::fs::read_dir(&runs_dir) else {
            return 0;
        };
        let mut stopped = 0;
        for entry in entries.flatten() {
            let Some(run_id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<RunId>().ok())
            else {
                continue;
            };
            if self.is_active(&run_id) {
                continue;
            }
            let id = run_id.clone();
            let run = match run_blocking(&self.parts.store, move |s| s.get_run(&id)).await {
                Ok(run) => run,
                Err(err) => {
                    tracing::error!(%run_id, %err, "could not look up a run directory's run");
                    continue;
                }
            };
            let mine = run.as_ref().is_some_and(|r| {
                !r.status.is_finished() && r.owner.as_ref() == Some(&self.parts.replica)
            });
            if mine {
                continue;
            }
            let steps = std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten();
            for step in steps {
                let dir = StepDir::new(step.path());
                if let Some(monitor) = dir.identity().filter(|m| process::is_alive(*m)) {
                    tracing::warn!(%run_id, pid = monitor.pid, "stopping the monitor of a run another gateway took over");
                    process::signal_monitor(monitor, nix::sys::signal::Signal::SIGUSR2);
                    stopped += 1;
                }
            }
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%run_id, %err, "could not remove the run's directory");
            }
        }
        stopped
    }

    /// This gateway is alive, at its backend address.
    async fn beat(&self) -> Result<(), RunError> {
        let me = self.parts.replica.clone();
        let address = self.backend_url.get().cloned().unwrap_or_default();
        run_blocking(&self.parts.store, move |s| s.heartbeat(&me, &address)).await?;
        Ok(())
    }

    /// Every [`HEARTBEAT`] until shutdown: the heartbeat, then the runs of lost gateways,
    /// cancels asked for through other gateways, and the queue.
    async fn keep_alive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.halt.cancelled() => return,
            }
            if let Err(err) = self.beat().await {
                tracing::error!(%err, "could not record the heartbeat");
                continue;
            }
            if let Err(err) = self.look_around().await {
                tracing::error!(%err, "could not look at other gateways' runs");
            }
            self.fill_slots().await;
        }
    }

    /// Cancels asked for elsewhere of runs working here (if their notice was missed), and
    /// the runs of lost gateways: queued ones go back to the queue, working ones are settled.
    async fn look_around(self: &Arc<Self>) -> Result<(), RunError> {
        let (replicas, runs) = run_blocking(&self.parts.store, |s| {
            Ok((s.replicas()?, s.unfinished_runs()?))
        })
        .await?;
        let lease = REPLICA_LEASE.as_secs_f64();
        let alive: Vec<&ReplicaId> = replicas
            .iter()
            .filter(|r| r.seconds_since_heartbeat < lease)
            .map(|r| &r.id)
            .collect();
        for run in runs {
            match &run.owner {
                Some(owner) if *owner == self.parts.replica && run.cancel_requested => {
                    self.cancel_here(&run.id);
                }
                Some(owner) if !alive.contains(&owner) => {
                    self.take_over_lost(run.clone(), owner.clone()).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The run's gateway is lost (its monitors with it, as far as anyone here can tell): a
    /// run that had not started goes back to the queue; a working one is taken over and
    /// settled as failed, its twin unlocked. The owner's silence is checked again in the
    /// statement that takes the run, so a gateway that comes back in time keeps it.
    async fn take_over_lost(self: &Arc<Self>, run: Run, owner: ReplicaId) -> Result<(), RunError> {
        let lease = REPLICA_LEASE.as_secs_f64();
        let (id, from) = (run.id.clone(), owner.clone());
        if run.status == RunStatus::Pending {
            let requeued = run_blocking(&self.parts.store, move |s| {
                s.move_run(&id, Some(&from), None, Some(lease))
            })
            .await?;
            if requeued {
                tracing::warn!(run_id = %run.id, replica = %owner, "the gateway that had claimed the run was lost: it is queued again");
            }
            return Ok(());
        }
        let me = self.parts.replica.clone();
        let taken = run_blocking(&self.parts.store, move |s| {
            s.move_run(&id, Some(&from), Some(&me), Some(lease))
        })
        .await?;
        if taken {
            tracing::warn!(run_id = %run.id, replica = %owner, "the gateway running it was lost: settling the run");
            self.settle_dead_run(&run, REPLICA_LOST).await?;
        }
        Ok(())
    }

    /// Where an unfinished run goes on, or `None` when its monitor is gone with terraform.
    fn resume_point(&self, run: &Run) -> Option<Resume> {
        let Some(step) = &run.step else {
            // Nothing recorded yet: it starts over.
            return Some(Resume {
                index: 0,
                attach: None,
            });
        };
        if step.dir.is_empty() {
            // A step of the gateway's own, or a captured command: done again.
            return Some(Resume {
                index: step.index,
                attach: None,
            });
        }
        let dir = StepDir::new(&step.dir);
        let monitor = step.monitor.or_else(|| dir.identity());
        let alive = monitor.is_some_and(process::is_alive);
        match (alive, dir.exit(), monitor) {
            // Working, or done while no gateway was up: followed from where it was.
            (true, _, _) | (_, Some(_), _) => Some(Resume {
                index: step.index,
                attach: Some(step.clone()),
            }),
            // The monitor never started: the step starts anew.
            (false, None, None) => Some(Resume {
                index: step.index,
                attach: None,
            }),
            (false, None, Some(_)) => None,
        }
    }

    /// Stops the gateway's part in its runs. [`ShutdownMode::Leave`] (the default): no new
    /// runs; every run is left to its monitor and adopted by the next start (its streams end
    /// without `done`, so clients reconnect); queued runs stay queued in the store.
    /// [`ShutdownMode::Interrupt`]: every run is asked to stop (one SIGINT, the kill after the
    /// grace period) and its outcome stored, within `limit`. Then the event writer is flushed.
    pub async fn shutdown(&self, mode: ShutdownMode, limit: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        self.halt.cancel();
        let tokens: Vec<CancellationToken> = self
            .active
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        match mode {
            ShutdownMode::Leave => {
                if !tokens.is_empty() {
                    tracing::info!(runs = tokens.len(), "leaving runs to their monitors");
                }
                self.detach.cancel();
            }
            ShutdownMode::Interrupt => {
                if !tokens.is_empty() {
                    tracing::info!(runs = tokens.len(), "stopping runs for shutdown");
                }
                for token in tokens {
                    token.cancel();
                }
            }
        }
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "runs did not stop within the shutdown grace; the next start adopts or settles them"
            );
        }
        if let Err(err) = self.parts.hub.flush().await {
            tracing::error!(%err, "could not flush the event writer");
        }
    }

    /// Is the unfinished run waiting in the queue, or working on a gateway that is alive?
    async fn runs_elsewhere(&self, run: &Run) -> Result<bool, RunError> {
        if run.status.is_finished() {
            return Ok(false);
        }
        let Some(owner) = run.owner.clone() else {
            return Ok(run.status == RunStatus::Pending);
        };
        if owner == self.parts.replica {
            return Ok(false);
        }
        let replicas = run_blocking(&self.parts.store, |s| s.replicas()).await?;
        let lease = REPLICA_LEASE.as_secs_f64();
        Ok(replicas
            .iter()
            .any(|r| r.id == owner && r.seconds_since_heartbeat < lease))
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
            let run = run_blocking(store, move |s| s.get_run(&lookup)).await?;
            if let Some(run) = &run {
                if self.runs_elsewhere(run).await? {
                    return Ok(changes);
                }
            }
            match run {
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
                    self.parts.twins.move_status(&twin_id, change).await?;
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
        let twin_id: TwinId = twin.id.clone();
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
            self.parts
                .twins
                .reconcile(&twin.id, to, actor, &reason)
                .await?;
            changes.push(format!(
                "moved from {} to {to}: {reason}",
                twin.deployment_status
            ));
        }
        Ok(changes)
    }
}
