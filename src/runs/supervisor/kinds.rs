//! What each kind of run does, as numbered steps (what a restart resumes by): every run first
//! initialises (step 0); then a deploy applies (1, planning first, or the kept preview), marks
//! a kept preview applied (2) and reads its outputs (3); a destroy destroys (1), checks the
//! state is empty (2) and runs the operator's cleanup command (3); a plan preview plans (1),
//! reads the plan (2) and keeps it (3); a drift check plans refresh-only (1).

use super::*;
use crate::clock;
use crate::domain::{LogStream, ResourceChange, RunResult};
use crate::runs::plan;
use crate::runs::process::ProcessSpec;
use crate::runs::workspace::PLAN_FILE;
use crate::state::mask_outputs;
use crate::store::StoredPlan;

/// How long terraform waits for the state lock another run (or person) holds.
const LOCK_TIMEOUT: &str = "-lock-timeout=300s";

/// A kept plan preview a deploy applies: the preview, the plan file, its changes.
type KeptPlan = (StoredPlan, Vec<u8>, Vec<ResourceChange>);

impl Supervisor {
    pub(super) async fn steps_of(&self, ctx: &RunCtx<'_>) -> Result<Produced, Stop> {
        self.terraform(
            ctx,
            0,
            &["init", "-input=false", "-no-color", "-reconfigure"],
        )
        .await?;
        match ctx.run.kind {
            RunKind::Deploy => self.deploy(ctx).await,
            RunKind::Destroy => self.destroy(ctx).await.map(|()| Produced::default()),
            RunKind::Plan => self.plan_preview(ctx).await,
            RunKind::Drift => self.check_drift(ctx).await,
        }
    }

    /// Announces `stage` unless the step it opens was announced before the run was adopted.
    fn announce(&self, ctx: &RunCtx<'_>, index: u32, stage: Stage) {
        if !ctx.done_before(index) && !ctx.resumes_at(index) {
            self.publish(&ctx.run.id, RunEvent::Stage { stage });
        }
    }

    /// Deploy: apply the twin's kept plan preview if it is still current (so what was
    /// previewed is exactly what is applied), else plan and apply in one terraform command
    /// (its change list printed once; the stage moves to applying when the first change
    /// starts); then read the outputs.
    async fn deploy(&self, ctx: &RunCtx<'_>) -> Result<Produced, Stop> {
        let run_id = &ctx.run.id;
        self.announce(ctx, 1, Stage::Planning);
        let kept = self.plan_to_apply(ctx).await?;
        match &kept {
            Some((plan, bytes, changes)) => {
                if !ctx.done_before(1) && !ctx.resumes_at(1) {
                    tokio::fs::write(ctx.workspace.dir.join(PLAN_FILE), bytes)
                        .await
                        .map_err(|e| {
                            Stop::failed(format!("cannot write the previewed plan: {e}"))
                        })?;
                    ctx.sink.line(
                        LogStream::Stdout,
                        format!(
                            "Applying the plan previewed in run {} ({} changes).",
                            plan.run_id,
                            changes.len()
                        ),
                        clock::now(),
                    );
                }
                self.announce(ctx, 1, Stage::Applying);
                ctx.sink.expect_changes(changes);
                self.terraform(
                    ctx,
                    1,
                    &["apply", "-input=false", "-json", LOCK_TIMEOUT, PLAN_FILE],
                )
                .await?;
            }
            None => {
                ctx.sink.stage_after_plan(Stage::Applying);
                self.terraform(
                    ctx,
                    1,
                    &[
                        "apply",
                        "-auto-approve",
                        "-input=false",
                        "-json",
                        LOCK_TIMEOUT,
                    ],
                )
                .await?;
            }
        }
        self.begin(ctx, 2, "mark-applied").await?;
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
        let (exit, stdout) = self.capture(ctx, 3, &["output", "-json"]).await?;
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

    /// The kept preview this deploy applies: chosen (and recorded) when it starts; an adopted
    /// deploy applies the one it chose.
    async fn plan_to_apply(&self, ctx: &RunCtx<'_>) -> Result<Option<KeptPlan>, Stop> {
        if ctx.resume.is_none() {
            let kept = self.current_plan(ctx.twin).await;
            if let Some((plan, _, _)) = &kept {
                let (run_id, plan_run) = (ctx.run.id.clone(), plan.run_id.clone());
                run_blocking(&self.parts.store, move |s| {
                    s.set_applies_plan(&run_id, &plan_run)
                })
                .await
                .map_err(|e| Stop::failed(e.to_string()))?;
            }
            return Ok(kept);
        }
        let Some(chosen) = ctx.run.applies_plan.clone() else {
            return Ok(None);
        };
        let (state, store, twin_id) = (
            Arc::clone(&self.parts.state),
            Arc::clone(&self.parts.store),
            ctx.twin.id.clone(),
        );
        let found = tokio::task::spawn_blocking(move || -> Option<KeptPlan> {
            let (plan, bytes) = state.latest_plan(&twin_id).ok()??;
            let run = store.get_run(&chosen).ok()??;
            let changes = run.result?.changes?;
            (plan.run_id == chosen).then_some((plan, bytes, changes))
        })
        .await
        .ok()
        .flatten();
        found
            .map(Some)
            .ok_or_else(|| Stop::failed("the previewed plan this deploy applies is gone"))
    }

    async fn destroy(&self, ctx: &RunCtx<'_>) -> Result<(), Stop> {
        self.announce(ctx, 1, Stage::Destroying);
        self.terraform(
            ctx,
            1,
            &[
                "destroy",
                "-auto-approve",
                "-input=false",
                "-json",
                LOCK_TIMEOUT,
            ],
        )
        .await?;
        self.announce(ctx, 2, Stage::Cleanup);
        self.verify_destroyed(ctx).await
    }

    /// A plan preview: every resource change and the summary, and the plan kept (encrypted)
    /// for the next deploy.
    async fn plan_preview(&self, ctx: &RunCtx<'_>) -> Result<Produced, Stop> {
        self.announce(ctx, 1, Stage::Planning);
        let twin_id = ctx.twin.id.clone();
        // A plan writes no state: the serial is the one it planned against, even after a
        // restart.
        let serial = run_blocking(&self.parts.store, move |s| s.current_state(&twin_id))
            .await
            .map_err(|e| Stop::failed(e.to_string()))?
            .map_or(0, |state| state.serial);
        let out = format!("-out={PLAN_FILE}");
        self.terraform(
            ctx,
            1,
            &["plan", "-input=false", "-json", LOCK_TIMEOUT, &out],
        )
        .await?;
        let (exit, shown) = self.capture(ctx, 2, &["show", "-json", PLAN_FILE]).await?;
        if !exit.success() {
            return Err(Stop::failed("terraform show could not read the plan"));
        }
        let shown: serde_json::Value = serde_json::from_slice(&shown)
            .map_err(|e| Stop::failed(format!("terraform show printed invalid JSON: {e}")))?;
        self.begin(ctx, 3, "keep-plan").await?;
        let bytes = tokio::fs::read(ctx.workspace.dir.join(PLAN_FILE))
            .await
            .map_err(|e| Stop::failed(format!("cannot read the plan file: {e}")))?;
        let (state, run_id, twin_id, hash) = (
            Arc::clone(&self.parts.state),
            ctx.run.id.clone(),
            ctx.twin.id.clone(),
            config_hash(ctx.twin),
        );
        tokio::task::spawn_blocking(move || {
            state.save_plan(&twin_id, &run_id, &hash, serial, &bytes)
        })
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .map_err(|e| Stop::failed(format!("cannot keep the plan: {e}")))?;
        let (changes, summary) = ctx.sink.planned();
        Ok(Produced {
            outputs: None,
            result: Some(RunResult {
                changes: Some(changes),
                summary,
                resources_after: Some(plan::resources_after(&shown)),
                drifted: None,
            }),
        })
    }

    /// A drift check: a refresh-only plan; what changed or vanished outside terraform.
    async fn check_drift(&self, ctx: &RunCtx<'_>) -> Result<Produced, Stop> {
        self.announce(ctx, 1, Stage::CheckingDrift);
        self.terraform(
            ctx,
            1,
            &[
                "plan",
                "-refresh-only",
                "-input=false",
                "-json",
                LOCK_TIMEOUT,
            ],
        )
        .await?;
        let drifted = ctx.sink.drifted();
        let note = match drifted.len() {
            0 => "No drift: the infrastructure matches the state.".to_owned(),
            n => format!("Drift: {n} resources changed or were deleted outside terraform."),
        };
        ctx.sink.line(LogStream::Stdout, note, clock::now());
        Ok(Produced {
            outputs: None,
            result: Some(RunResult {
                drifted: Some(drifted),
                ..RunResult::default()
            }),
        })
    }

    /// The twin's newest plan preview if it still applies: not yet applied, made from the
    /// twin's current files and variables, against the current state. With its changes.
    pub async fn current_plan(&self, twin: &Twin) -> Option<KeptPlan> {
        let (state, twin_id, hash) = (
            Arc::clone(&self.parts.state),
            twin.id.clone(),
            config_hash(twin),
        );
        let store = Arc::clone(&self.parts.store);
        let found = tokio::task::spawn_blocking(move || -> Option<KeptPlan> {
            let (plan, bytes) = state.latest_plan(&twin_id).ok()??;
            let serial = store.current_state(&twin_id).ok()?.map_or(0, |s| s.serial);
            if plan.applied_by.is_some() || plan.config_hash != hash || plan.state_serial != serial
            {
                return None;
            }
            let run = store.get_run(&plan.run_id).ok()??;
            let changes = run.result?.changes?;
            Some((plan, bytes, changes))
        })
        .await;
        found.ok().flatten()
    }

    /// SDK cleanup: the state must be empty after a destroy (step 2); then the operator's
    /// cleanup command, if one is configured (step 3).
    async fn verify_destroyed(&self, ctx: &RunCtx<'_>) -> Result<(), Stop> {
        let (exit, stdout) = self.capture(ctx, 2, &["state", "list"]).await?;
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
        if !ctx.resumes_at(3) {
            ctx.sink.line(
                LogStream::Stdout,
                "State is empty: every resource was destroyed.".into(),
                clock::now(),
            );
        }
        if let Some(command) = &self.parts.settings.cleanup_command {
            // The operator's command runs in the run's jail too: it works in a directory of
            // the twin's files.
            let spec = self.isolated(
                ctx,
                ProcessSpec {
                    program: "/bin/sh".into(),
                    args: vec!["-c".into(), command.clone()],
                    cwd: ctx.workspace.dir.clone(),
                    env: self.env(ctx),
                    command_depth: 0,
                },
            );
            let exit = self.monitored(ctx, 3, "cleanup", spec).await?;
            if !exit.success() {
                return Err(Stop::Failed {
                    error: format!("the cleanup command failed (exit code {:?})", exit.code),
                    exit_code: exit.code,
                });
            }
        }
        Ok(())
    }
}
