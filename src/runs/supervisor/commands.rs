//! Running one terraform command for a run: its environment, its time limit, the stop ladder
//! on cancel or timeout, and the process group recorded so a restart can find it.

use super::*;

impl Supervisor {
    pub(super) fn env(&self, step: &Step<'_>) -> Vec<(OsString, OsString)> {
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

    pub(super) fn spec(&self, step: &Step<'_>, args: &[&str]) -> ProcessSpec {
        self.isolated(
            step,
            ProcessSpec {
                program: step.toolchain.terraform.clone(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                cwd: step.workspace.dir.clone(),
                env: self.env(step),
                command_depth: 0,
            },
        )
    }

    /// `spec` as it runs in the run's jail: its working and sandbox directories writable, the
    /// toolchain readable, nothing else of the gateway's.
    pub(super) fn isolated(&self, step: &Step<'_>, spec: ProcessSpec) -> ProcessSpec {
        let settings = &self.parts.settings;
        let mut writable = vec![
            step.workspace.dir.clone(),
            step.workspace.sandbox_dir.clone(),
        ];
        writable.extend(settings.run_writable.iter().cloned());
        let mut readable = step.toolchain.readable_paths();
        readable.extend(settings.run_readable.iter().cloned());
        let jail = Jail { writable, readable };
        self.parts.isolation.wrap(spec, &jail)
    }

    pub(super) async fn terraform(&self, step: &Step<'_>, args: &[&str]) -> Result<(), Stop> {
        let spec = self.spec(step, args);
        let exit = self.spawn_and_wait(step, &spec, args[0]).await?;
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

    /// Runs `spec` (whose command is terraform's `what`, or another step of the run) under
    /// the stop ladder and the time limit of `what`.
    pub(super) async fn spawn_and_wait(
        &self,
        step: &Step<'_>,
        spec: &ProcessSpec,
        what: &str,
    ) -> Result<Exit, Stop> {
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
        let limit = self.time_limit(what);
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

    /// The time limit of a terraform command, by what it does; the cleanup step of a destroy
    /// counts as the destroy.
    pub(super) fn time_limit(&self, what: &str) -> Duration {
        let timeouts = &self.parts.settings.timeouts;
        match what {
            "init" => timeouts.init,
            "apply" => timeouts.apply,
            "destroy" | "cleanup" => timeouts.destroy,
            _ => timeouts.plan,
        }
    }

    pub(super) async fn capture(
        &self,
        step: &Step<'_>,
        args: &[&str],
    ) -> Result<(Exit, Vec<u8>), Stop> {
        if step.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let sink: Arc<dyn LineSink> = step.sink.clone();
        let spec = self.spec(step, args);
        let what = args[0];
        let limit = self.time_limit(what);
        match tokio::time::timeout(limit, capture_stdout(&spec, sink)).await {
            Ok(result) => result.map_err(|e| Stop::failed(e.to_string())),
            Err(_) => Err(Stop::failed(format!(
                "terraform {what} timed out after {}",
                humanize(limit)
            ))),
        }
    }
}
