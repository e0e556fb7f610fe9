//! What each kind of run does once terraform is initialised: deploy (applying a kept preview
//! when it still holds), destroy and its cleanup check, plan preview, drift check.

use super::*;

impl Supervisor {
    /// Deploy: apply the twin's kept plan preview if it is still current (so what was
    /// previewed is exactly what is applied), else plan and apply in one terraform command
    /// (its change list printed once; the stage moves to applying when the plan is made);
    /// then read the outputs.
    pub(super) async fn deploy(&self, step: &Step<'_>, twin: &Twin) -> Result<Produced, Stop> {
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
                tokio::fs::write(step.workspace.dir.join(PLAN_FILE), bytes)
                    .await
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
            }
            None => {
                step.sink.stage_after_plan(Stage::Applying);
                self.terraform(
                    step,
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

    pub(super) async fn destroy(&self, step: &Step<'_>) -> Result<(), Stop> {
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
    pub(super) async fn plan_preview(
        &self,
        step: &Step<'_>,
        twin: &Twin,
    ) -> Result<Produced, Stop> {
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
        let bytes = tokio::fs::read(step.workspace.dir.join(PLAN_FILE))
            .await
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
    pub(super) async fn check_drift(&self, step: &Step<'_>) -> Result<Produced, Stop> {
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
    pub(super) async fn verify_destroyed(&self, step: &Step<'_>) -> Result<(), Stop> {
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
            // The operator's command runs in the run's jail too: it works in a directory of the
            // twin's files.
            let spec = self.isolated(
                step,
                ProcessSpec {
                    program: "/bin/sh".into(),
                    args: vec!["-c".into(), command.clone()],
                    cwd: step.workspace.dir.clone(),
                    env: self.env(step),
                    command_depth: 0,
                },
            );
            let exit = self.spawn_and_wait(step, &spec, "cleanup").await?;
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
