//! One step of a run: its environment and isolation, a terraform command run under a monitor
//! (started, or followed after an adoption) with its time limit, silence watchdog and stop
//! ladder, a short command whose stdout the gateway reads itself, and the record each step
//! leaves in the store before it starts.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::*;
use crate::clock;
use crate::domain::{MonitorId, RunStep};
use crate::runs::isolation::Jail;
use crate::runs::monitor::{MonitorInput, SpoolReader, StepDir, POLL};
use crate::runs::process::{self, capture_stdout, Exit, LineSink, ProcessError, ProcessSpec};
use crate::runs::sink::{humanize, watch_silence};
use crate::store::SpoolMark;

impl Supervisor {
    pub(super) fn env(&self, ctx: &RunCtx<'_>) -> Vec<(OsString, OsString)> {
        let mut env = ctx.toolchain.base_env();
        env.extend(self.parts.credentials.env());
        env.extend(ctx.secret_env.iter().cloned());
        env.extend(ctx.backend_env.iter().cloned());
        env.push((
            "SANDBOX_DIR".into(),
            ctx.workspace.sandbox_dir.clone().into_os_string(),
        ));
        env.push((
            "TERRASTREAM_TWIN_ID".into(),
            ctx.run.twin_id.to_string().into(),
        ));
        env.push(("TERRASTREAM_RUN_ID".into(), ctx.run.id.to_string().into()));
        // A debug run: terraform's own log on stderr, which streams as the run's stderr lines.
        if let Some(level) = ctx.run.log_level {
            env.push(("TF_LOG".into(), level.as_str().into()));
        }
        env
    }

    /// `terraform <args>` in the run's working directory and jail.
    pub(super) fn spec(&self, ctx: &RunCtx<'_>, args: &[&str]) -> ProcessSpec {
        self.isolated(
            ctx,
            ProcessSpec {
                program: ctx.toolchain.terraform.clone(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                cwd: ctx.workspace.dir.clone(),
                env: self.env(ctx),
                command_depth: 0,
            },
        )
    }

    /// `spec` as it runs in the run's jail: its working and sandbox directories writable, the
    /// toolchain readable, nothing else of the gateway's.
    pub(super) fn isolated(&self, ctx: &RunCtx<'_>, spec: ProcessSpec) -> ProcessSpec {
        let settings = &self.parts.settings;
        let mut writable = vec![ctx.workspace.dir.clone(), ctx.workspace.sandbox_dir.clone()];
        writable.extend(settings.run_writable.iter().cloned());
        let mut readable = ctx.toolchain.readable_paths();
        readable.extend(settings.run_readable.iter().cloned());
        let jail = Jail { writable, readable };
        self.parts.isolation.wrap(spec, &jail)
    }

    /// Step `index`: `terraform <args>` under a monitor; fails the run unless it exits 0.
    pub(super) async fn terraform(
        &self,
        ctx: &RunCtx<'_>,
        index: u32,
        args: &[&str],
    ) -> Result<(), Stop> {
        let spec = self.spec(ctx, args);
        let exit = self.monitored(ctx, index, args[0], spec).await?;
        if exit.success() {
            return Ok(());
        }
        let why = ctx.sink.last_error().unwrap_or_else(|| match exit.code {
            Some(code) => format!("exit code {code}"),
            None => "terraform was killed".into(),
        });
        Err(Stop::Failed {
            error: format!("terraform {} failed: {why}", args[0]),
            exit_code: exit.code,
        })
    }

    /// Runs `spec` (terraform's `what`, or another command of the run) as step `index` under
    /// a monitor, under the stop ladder and the time limit of `what`. A step an adopted run did
    /// before is not run again (its spool rebuilds what the run knew); the step it was on is
    /// followed where its monitor left off.
    pub(super) async fn monitored(
        &self,
        ctx: &RunCtx<'_>,
        index: u32,
        what: &str,
        spec: ProcessSpec,
    ) -> Result<Exit, Stop> {
        let dir = ctx.step_dir(index, what);
        if ctx.done_before(index) {
            self.replay(ctx, &dir, None).await;
            return Ok(Exit {
                code: Some(0),
                interrupted: false,
                killed: false,
            });
        }
        if ctx.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let followed = ctx.attached(index).and_then(|step| {
            let at = StepDir::new(&dir);
            // A monitor that never said who it is and left no exit never ran: start it anew.
            let monitor = step.monitor.or_else(|| at.identity());
            (monitor.is_some() || at.exit().is_some()).then(|| (step.clone(), monitor))
        });
        let (monitor, offset, started_at) = match followed {
            Some((step, monitor)) => {
                self.replay(ctx, &dir, Some(step.spool_offset)).await;
                (monitor, step.spool_offset, step.started_at)
            }
            None => {
                let started_at = clock::now();
                let monitor = self
                    .start_monitor(ctx, index, what, &dir, spec, &started_at)
                    .await?;
                (Some(monitor), 0, started_at)
            }
        };
        let limit = self.time_limit(what);
        let exit = self
            .follow(ctx, index, &dir, monitor, offset, &started_at, limit)
            .await?;
        if exit.interrupted && exit.timed_out {
            return Err(Stop::Failed {
                error: format!(
                    "terraform {what} timed out after {}; it was stopped{}",
                    humanize(limit),
                    if exit.exit.killed {
                        " (killed after the grace period)"
                    } else {
                        " gracefully"
                    }
                ),
                exit_code: exit.exit.code,
            });
        }
        if exit.interrupted {
            return Err(Stop::Cancelled);
        }
        Ok(exit.exit)
    }

    /// Records the step, then starts its monitor in a fresh directory, handing it the command
    /// on its stdin. The events of the step before are stored first, so a restart never
    /// resumes past lines it has not stored.
    async fn start_monitor(
        &self,
        ctx: &RunCtx<'_>,
        index: u32,
        what: &str,
        dir: &Path,
        spec: ProcessSpec,
        started_at: &str,
    ) -> Result<MonitorId, Stop> {
        let failed =
            |e: &dyn std::fmt::Display| Stop::failed(format!("cannot start terraform {what}: {e}"));
        self.parts.hub.flush().await.map_err(|e| failed(&e))?;
        let step = RunStep {
            index,
            name: what.to_owned(),
            dir: dir.display().to_string(),
            started_at: started_at.to_owned(),
            monitor: None,
            spool_offset: 0,
        };
        let (run_id, recorded) = (ctx.run.id.clone(), step.clone());
        run_blocking(&self.parts.store, move |s| s.begin_step(&run_id, &recorded))
            .await
            .map_err(|e| failed(&e))?;
        let target = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&target) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
            std::fs::create_dir_all(&target)
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
        let input = MonitorInput {
            spec,
            masker: ctx.masker.clone(),
        };
        let input = serde_json::to_vec(&input).map_err(|e| failed(&e))?;
        let program = match &self.parts.settings.monitor_program {
            Some(program) => program.clone(),
            None => std::env::current_exe().map_err(|e| failed(&e))?,
        };
        let mut child = tokio::process::Command::new(&program)
            .arg("monitor")
            .arg(dir)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // It must outlive this process: never killed with it.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| failed(&e))?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(&input).await.map_err(|e| failed(&e))?;
        }
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Stop::failed(format!("the monitor of terraform {what} exited at once"))
            })?;
        let monitor = MonitorId {
            pid,
            start_ticks: process::start_ticks(pid).unwrap_or(0),
        };
        // Reaped here while this gateway lives; after that, by whoever inherits it.
        self.parts.runtime.spawn(async move {
            let _ = child.wait().await;
        });
        let run_id = ctx.run.id.clone();
        if let Err(err) = run_blocking(&self.parts.store, move |s| {
            s.record_monitor(&run_id, index, monitor)
        })
        .await
        {
            tracing::warn!(%err, "could not record the monitor (its step directory names it)");
        }
        Ok(monitor)
    }

    /// Reads the step's spool into the run's events from `offset` until its monitor records
    /// terraform's end, driving the stop ladder (SIGINT through the monitor on cancel or when
    /// the time is up, the kill after the grace) and the silence watchdog meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        ctx: &RunCtx<'_>,
        index: u32,
        dir: &Path,
        monitor: Option<MonitorId>,
        offset: u64,
        started_at: &str,
        limit: Duration,
    ) -> Result<Followed, Stop> {
        let step = StepDir::new(dir);
        let mut reader = SpoolReader::new(step.spool(), offset);
        // File events wake the follower at once; a slow poll catches anything they miss.
        let mut events = inotify::Inotify::init().ok().and_then(|watcher| {
            let mask = inotify::WatchMask::MODIFY
                | inotify::WatchMask::CREATE
                | inotify::WatchMask::MOVED_TO
                | inotify::WatchMask::CLOSE_WRITE;
            watcher.watches().add(dir, mask).ok()?;
            watcher.into_event_stream([0u8; 4096]).ok()
        });
        let elapsed = clock::parse(started_at)
            .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default())
            .unwrap_or_default();
        let deadline = Instant::now() + limit.saturating_sub(elapsed);
        let grace = self.parts.settings.cancel_grace;
        let watchdog = tokio::spawn(watch_silence(
            Arc::clone(&ctx.sink),
            self.parts.settings.silence_warning,
        ));
        let ask = |signal: Signal| monitor.is_some_and(|m| process::signal_monitor(m, signal));
        let (mut interrupted_at, mut timed_out, mut killed) = (None::<Instant>, false, false);
        let result = loop {
            let exit = step.exit();
            match reader.read_available() {
                Ok(records) => {
                    for (record, after) in records {
                        let mark = SpoolMark {
                            step: index,
                            offset: after,
                        };
                        ctx.sink.record(record, Some(mark));
                    }
                }
                Err(err) => break Err(Stop::failed(format!("cannot read the run's spool: {err}"))),
            }
            if let Some(exit) = exit {
                // Everything before the exit record was read above.
                break Ok(Followed {
                    exit: Exit {
                        code: exit.code,
                        interrupted: interrupted_at.is_some() || exit.interrupted,
                        killed: killed || exit.killed,
                    },
                    interrupted: interrupted_at.is_some(),
                    timed_out,
                });
            }
            if !monitor.is_some_and(process::is_alive) && step.exit().is_none() {
                let why = step.problem().unwrap_or_default();
                break Err(Stop::failed(format!(
                    "{MONITOR_LOST}{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.trim())
                    }
                )));
            }
            let kill_at = interrupted_at.map(|at| at + grace);
            tokio::select! {
                _ = async { match events.as_mut() { Some(e) => e.next().await, None => std::future::pending().await } } => {}
                () = tokio::time::sleep(POLL) => {}
                () = ctx.stop.cancelled(), if interrupted_at.is_none() => {
                    interrupted_at = Some(Instant::now());
                    ask(Signal::SIGUSR1);
                }
                () = tokio::time::sleep_until(deadline), if interrupted_at.is_none() => {
                    timed_out = true;
                    interrupted_at = Some(Instant::now());
                    ask(Signal::SIGUSR1);
                }
                () = sleep_until_some(kill_at), if !killed => {
                    killed = true;
                    ask(Signal::SIGUSR2);
                }
                () = self.detach.cancelled() => break Err(Stop::Detached),
            }
        };
        watchdog.abort();
        result
    }

    /// Rebuilds what the run knew from a step's spool (planned changes, progress, the last
    /// error), without publishing: up to `upto` bytes, or all of it.
    async fn replay(&self, ctx: &RunCtx<'_>, dir: &Path, upto: Option<u64>) {
        let spool = StepDir::new(dir).spool();
        let records =
            tokio::task::spawn_blocking(move || SpoolReader::new(spool, 0).read_available()).await;
        let Ok(Ok(records)) = records else { return };
        for (record, after) in records {
            if upto.is_some_and(|limit| after > limit) {
                break;
            }
            ctx.sink.replay(record);
        }
    }

    /// Records step `index` (a step of the gateway's own, or a captured command) before it
    /// runs, so a restart knows where the run was.
    pub(super) async fn begin(&self, ctx: &RunCtx<'_>, index: u32, name: &str) -> Result<(), Stop> {
        if ctx.resumes_at(index) || ctx.done_before(index) {
            return Ok(());
        }
        self.parts
            .hub
            .flush()
            .await
            .map_err(|e| Stop::failed(e.to_string()))?;
        let step = RunStep {
            index,
            name: name.to_owned(),
            dir: String::new(),
            started_at: clock::now(),
            monitor: None,
            spool_offset: 0,
        };
        let run_id = ctx.run.id.clone();
        run_blocking(&self.parts.store, move |s| s.begin_step(&run_id, &step))
            .await
            .map_err(|e| Stop::failed(e.to_string()))
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

    /// Step `index`: `terraform <args>`, its stdout read by the gateway (never streamed: it
    /// may hold secrets), its stderr in the run's log. Run again when a restart finds the run
    /// on it: these commands only read.
    pub(super) async fn capture(
        &self,
        ctx: &RunCtx<'_>,
        index: u32,
        args: &[&str],
    ) -> Result<(Exit, Vec<u8>), Stop> {
        if ctx.stop.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.begin(ctx, index, args[0]).await?;
        let sink: Arc<dyn LineSink> = ctx.sink.clone();
        let spec = self.spec(ctx, args);
        let limit = self.time_limit(args[0]);
        let captured = tokio::select! {
            captured = capture_stdout(&spec, sink, limit, ctx.stop) => captured,
            () = self.detach.cancelled() => return Err(Stop::Detached),
        };
        match captured {
            Ok(captured) => Ok(captured),
            Err(ProcessError::Stopped { .. }) => Err(Stop::Cancelled),
            Err(err) => Err(Stop::failed(err.to_string())),
        }
    }
}

/// How a followed command ended, and what the gateway did to it.
pub(super) struct Followed {
    exit: Exit,
    /// The stop ladder was used (a cancel, or the time limit).
    interrupted: bool,
    timed_out: bool,
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
