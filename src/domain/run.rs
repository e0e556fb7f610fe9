//! Runs: one deploy or destroy of a twin, and the events it streams.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::json;

use super::{DeploymentStatus, ReplicaId, RunId, TwinId, ValidationError};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The single conversion to the text stored and sent.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == value).ok_or_else(|| {
                    ValidationError::new(format!(
                        "unknown {} '{}'",
                        stringify!($name),
                        value.chars().take(40).collect::<String>()
                    ))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// What a run does to the twin's infrastructure.
    RunKind { Deploy => "deploy", Destroy => "destroy", Plan => "plan", Drift => "drift" }
);

/// terraform's log level for a debug run (its `TF_LOG`): its debug lines are `stderr` log
/// events of the run, masked like every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
}

impl LogLevel {
    pub const ALL: &'static [LogLevel] = &[LogLevel::Trace, LogLevel::Debug, LogLevel::Info];

    /// The text stored, answered and given to terraform.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
        }
    }
}

impl LogLevel {
    /// A run's level from what its request says: `debug` alone means DEBUG, a level alone
    /// means a debug run at it; a level with `debug: false` contradicts itself.
    pub fn of_run(
        debug: Option<bool>,
        level: Option<&str>,
    ) -> Result<Option<Self>, ValidationError> {
        let level = level.map(str::parse::<LogLevel>).transpose()?;
        match (debug, level) {
            (Some(false), Some(_)) => Err(ValidationError::new(
                "log_level is for a debug run: give \"debug\": true or leave log_level out",
            )),
            (Some(true), None) => Ok(Some(LogLevel::Debug)),
            (_, level) => Ok(level),
        }
    }
}

#[cfg(test)]
mod log_level_tests {
    use super::LogLevel;

    #[test]
    fn a_runs_level_follows_debug_and_log_level() {
        assert_eq!(LogLevel::of_run(None, None), Ok(None));
        assert_eq!(LogLevel::of_run(Some(false), None), Ok(None));
        assert_eq!(
            LogLevel::of_run(Some(true), None),
            Ok(Some(LogLevel::Debug))
        );
        assert_eq!(
            LogLevel::of_run(None, Some("trace")),
            Ok(Some(LogLevel::Trace))
        );
        assert_eq!(
            LogLevel::of_run(Some(true), Some("INFO")),
            Ok(Some(LogLevel::Info))
        );
        assert!(LogLevel::of_run(Some(false), Some("TRACE")).is_err());
        assert!(LogLevel::of_run(Some(true), Some("LOUD")).is_err());
    }
}

impl FromStr for LogLevel {
    type Err = ValidationError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|level| level.as_str().eq_ignore_ascii_case(value))
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "log_level must be TRACE, DEBUG or INFO, not '{}'",
                    value.chars().take(40).collect::<String>()
                ))
            })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

text_enum!(
    RunStatus {
        Pending => "pending",
        Processing => "processing",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// How a run ended, as the `done` event says it.
    Outcome { Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled" }
);

text_enum!(
    /// The steps a run walks through; each is announced by a `stage` event.
    Stage {
        Queued => "queued",
        Initializing => "initializing",
        Planning => "planning",
        Applying => "applying",
        Destroying => "destroying",
        Cleanup => "cleanup",
        CheckingDrift => "checking_drift",
        Complete => "complete",
    }
);

impl Stage {
    /// The label the dashboard shows.
    pub const fn label(self) -> &'static str {
        match self {
            Stage::Queued => "Waiting for a free run slot...",
            Stage::Initializing => "Initializing...",
            Stage::Planning => "Planning...",
            Stage::Applying => "Applying...",
            Stage::Destroying => "Destroying resources...",
            Stage::Cleanup => "SDK cleanup...",
            Stage::CheckingDrift => "Checking for drift...",
            Stage::Complete => "Complete",
        }
    }
}

impl RunKind {
    /// The twin status while this kind of run works; `None` for runs that only read (a plan
    /// preview, a drift check), which neither move nor lock the twin.
    pub const fn working_status(self) -> Option<DeploymentStatus> {
        match self {
            RunKind::Deploy => Some(DeploymentStatus::Deploying),
            RunKind::Destroy => Some(DeploymentStatus::Destroying),
            RunKind::Plan | RunKind::Drift => None,
        }
    }

    /// The twin status a run of this kind ends in (`None`: unchanged).
    pub const fn final_status(self, outcome: Outcome) -> Option<DeploymentStatus> {
        match (self, outcome) {
            (RunKind::Deploy, Outcome::Succeeded) => Some(DeploymentStatus::Deployed),
            (RunKind::Deploy, _) => Some(DeploymentStatus::Error),
            (RunKind::Destroy, Outcome::Succeeded) => Some(DeploymentStatus::Draft),
            (RunKind::Destroy, _) => Some(DeploymentStatus::DestroyFailed),
            (RunKind::Plan | RunKind::Drift, _) => None,
        }
    }

    /// Does this kind of run change infrastructure (and so hold the twin's lock)?
    pub const fn changes_infrastructure(self) -> bool {
        self.working_status().is_some()
    }
}

impl Outcome {
    pub const fn run_status(self) -> RunStatus {
        match self {
            Outcome::Succeeded => RunStatus::Completed,
            Outcome::Failed => RunStatus::Failed,
            Outcome::Cancelled => RunStatus::Cancelled,
        }
    }
}

impl RunStatus {
    /// How a finished run ended, in the words of its `done` event.
    pub const fn outcome(self) -> Option<Outcome> {
        match self {
            RunStatus::Completed => Some(Outcome::Succeeded),
            RunStatus::Failed => Some(Outcome::Failed),
            RunStatus::Cancelled => Some(Outcome::Cancelled),
            RunStatus::Pending | RunStatus::Processing => None,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    pub twin_id: TwinId,
    pub kind: RunKind,
    pub status: RunStatus,
    pub stage: Option<Stage>,
    pub progress: u8,
    pub actor: String,
    pub created_at: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub message: Option<String>,
    pub outputs: Option<serde_json::Value>,
    /// What a plan or drift check found.
    pub result: Option<RunResult>,
    /// The step the run is on, while it works (what a restarted gateway adopts).
    pub step: Option<RunStep>,
    /// A deploy that applies a kept plan preview: that preview's run.
    pub applies_plan: Option<RunId>,
    /// The gateway that runs it; `None` while it waits in the queue for any gateway's slot.
    pub owner: Option<ReplicaId>,
    /// A cancel was asked for through a gateway other than its owner.
    pub cancel_requested: bool,
    /// A debug run's terraform log level; `None` for an ordinary run.
    pub log_level: Option<LogLevel>,
}

/// A resource terraform plans to change, or found changed outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ResourceChange {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    /// `create`, `update`, `delete`, `replace`, `read`, `no-op`.
    pub action: String,
}

/// terraform's change summary of a plan.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct ChangeSummary {
    #[serde(default)]
    pub add: u64,
    #[serde(default)]
    pub change: u64,
    #[serde(default)]
    pub import: u64,
    #[serde(default)]
    pub remove: u64,
}

/// A managed resource as it will be once a plan is applied; sensitive attributes masked.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PlannedResource {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub actions: Vec<String>,
    pub attributes: serde_json::Value,
}

/// What a plan preview or a drift check found, kept with the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunResult {
    /// A plan's resource changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<ResourceChange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ChangeSummary>,
    /// A plan's resources as they will be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_after: Option<Vec<PlannedResource>>,
    /// A drift check's resources changed or deleted outside terraform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<Vec<ResourceChange>>,
}

/// One step of a run: a terraform command (or a step of the gateway's own) in the order the
/// run's kind walks them. A command runs under a monitor process that keeps its output in a
/// spool in `dir` and its exit status beside it, so it outlives the gateway that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// 0, 1, 2 ... in the run's plan of steps.
    pub index: u32,
    /// What the step does (`init`, `apply`, `output`, ...).
    pub name: String,
    /// Where its monitor keeps its spool and exit status; empty for steps with no monitor.
    pub dir: String,
    pub started_at: String,
    /// The monitor process, once it runs.
    pub monitor: Option<MonitorId>,
    /// How much of the spool has been read into the run's stored events.
    pub spool_offset: u64,
}

/// A process as a restarted gateway can recognise it: its pid and its start time (clock ticks
/// after boot), so a reused pid is never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MonitorId {
    pub pid: i32,
    pub start_ticks: u64,
}

/// Which stream of terraform a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Something that happened in a run, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Stage {
        stage: Stage,
    },
    Log {
        stream: LogStream,
        line: String,
        ts: String,
    },
    Progress {
        percent: u8,
        done: u32,
        total: u32,
    },
    Status {
        twin_id: TwinId,
        status: DeploymentStatus,
    },
    /// A note from the gateway itself (e.g. a watchdog warning), shown like a log line.
    Warning {
        message: String,
    },
    /// The run waits for a free slot; `position` 1 is next.
    Queue {
        position: usize,
    },
    Done {
        outcome: Outcome,
        /// The twin's status as the run ends (`null` only if the twin could not be read).
        twin_status: Option<DeploymentStatus>,
        error: Option<String>,
    },
}

impl RunEvent {
    /// The SSE event name, repeated as `type` in the data.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Stage { .. } => "stage",
            RunEvent::Log { .. } => "log",
            RunEvent::Progress { .. } => "progress",
            RunEvent::Status { .. } => "status",
            RunEvent::Warning { .. } => "warning",
            RunEvent::Queue { .. } => "queue",
            RunEvent::Done { .. } => "done",
        }
    }

    /// The one-line JSON `data` of the event, as the contract gives it.
    pub fn data(&self, job_id: &RunId) -> serde_json::Value {
        let mut data = match self {
            RunEvent::Stage { stage } => {
                json!({ "job_id": job_id, "stage": stage, "label": stage.label() })
            }
            RunEvent::Log { stream, line, ts } => {
                json!({ "job_id": job_id, "stream": stream, "line": line, "ts": ts })
            }
            RunEvent::Progress {
                percent,
                done,
                total,
            } => {
                json!({ "job_id": job_id, "percent": percent, "done": done, "total": total })
            }
            RunEvent::Status { twin_id, status } => json!({ "twin_id": twin_id, "status": status }),
            RunEvent::Warning { message } => json!({ "job_id": job_id, "message": message }),
            RunEvent::Queue { position } => json!({ "job_id": job_id, "position": position }),
            RunEvent::Done {
                outcome,
                twin_status,
                error,
            } => {
                let mut done =
                    json!({ "job_id": job_id, "outcome": outcome, "twin_status": twin_status });
                if let Some(error) = error {
                    done["error"] = json!(error);
                }
                done
            }
        };
        data["type"] = json!(self.name());
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_follow_the_contract() {
        use DeploymentStatus as S;
        assert_eq!(
            RunKind::Deploy.final_status(Outcome::Succeeded),
            Some(S::Deployed)
        );
        assert_eq!(
            RunKind::Deploy.final_status(Outcome::Cancelled),
            Some(S::Error)
        );
        assert_eq!(
            RunKind::Destroy.final_status(Outcome::Succeeded),
            Some(S::Draft)
        );
        assert_eq!(
            RunKind::Destroy.final_status(Outcome::Failed),
            Some(S::DestroyFailed)
        );
        assert_eq!(RunKind::Plan.final_status(Outcome::Succeeded), None);
        for kind in RunKind::ALL {
            for outcome in Outcome::ALL {
                if let (Some(from), Some(to)) = (kind.working_status(), kind.final_status(*outcome))
                {
                    assert!(from.can_move_to(to), "{kind} {outcome}");
                }
            }
        }
    }

    #[test]
    fn event_data_repeats_the_event_name_as_type() {
        let job = RunId::generate();
        let done = RunEvent::Done {
            outcome: Outcome::Failed,
            twin_status: Some(DeploymentStatus::Error),
            error: Some("exit 1".into()),
        };
        let data = done.data(&job);
        assert_eq!(data["type"], "done");
        assert_eq!(data["outcome"], "failed");
        assert_eq!(data["twin_status"], "error");
        assert_eq!(data["error"], "exit 1");
        let stage = RunEvent::Stage {
            stage: Stage::Cleanup,
        }
        .data(&job);
        assert_eq!(stage["label"], "SDK cleanup...");
        assert_eq!(stage["stage"], "cleanup");
    }

    #[test]
    fn a_finished_status_names_the_outcome_done_said() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.run_status().outcome(), Some(*outcome));
        }
        assert_eq!(RunStatus::Pending.outcome(), None);
    }

    #[test]
    fn text_forms_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(*status));
        }
        assert!("running".parse::<RunStatus>().is_err());
    }
}
