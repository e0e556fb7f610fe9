//! When a run's terraform is gone or must go: leftovers after a run, runs a crash left
//! unfinished, graceful shutdown, and a refresh that reconciles a twin with its state.

use super::*;

impl Supervisor {
    /// After terraform is gone: push an `errored.tfstate` it left (so nothing it created is
    /// lost), release a state lock it still held, and revoke its backend credential.
    pub(super) async fn collect_leftovers(&self, run_id: &RunId, twin_id: &TwinId) {
        self.parts.grants.revoke(run_id);
        let work_dir = workspace::work_dir(&self.parts.settings.data_dir, twin_id);
        // A plan file holds planned values (secrets included) in clear: never keep it.
        match tokio::fs::remove_file(work_dir.join(PLAN_FILE)).await {
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

    /// Ends a run that is recorded as active but has no terraform here any more (the gateway
    /// restarted, or it crashed): failed with `reason`, the twin unlocked, readers given `done`.
    pub async fn settle_dead_run(&self, run: &Run, reason: &str) -> Result<(), RunError> {
        let run_id = run.id.clone();
        let last = run_blocking(&self.parts.store, move |s| s.last_event_seq(&run_id)).await?;
        self.parts.hub.open_run(&run.id, last);
        self.collect_leftovers(&run.id, &run.twin_id).await;
        // A run that died while it waited in the queue had not moved its twin yet.
        let twin_id = run.twin_id.clone();
        let twin = run_blocking(&self.parts.store, move |s| s.get_twin(&twin_id)).await?;
        let moved = twin.is_some_and(|t| Some(t.deployment_status) == run.kind.working_status());
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
