//! What the gateway tells webhooks: the event types, and the outbox message each change
//! reports. The messages are decided here, with the change they report (a twin's new row, a
//! run's start or end), and a store writes them in the same transaction as that change, so a
//! crash never loses one nor invents one; the body is fixed then, and every attempt to deliver
//! it sends the same bytes under the same `webhook-id`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Value};

use super::{
    DeploymentStatus, MessageId, Outcome, Run, RunId, RunKind, RunResult, Twin, TwinChange, TwinId,
    ValidationError,
};

/// The events a webhook may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "&'static str")]
pub enum EventType {
    RunStarted,
    RunFinished,
    TwinStatusChanged,
    TwinDeleted,
    TwinRestored,
    DriftDetected,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::RunStarted,
        EventType::RunFinished,
        EventType::TwinStatusChanged,
        EventType::TwinDeleted,
        EventType::TwinRestored,
        EventType::DriftDetected,
    ];

    /// The single conversion to the text stored, subscribed to and sent as `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::RunStarted => "run.started",
            EventType::RunFinished => "run.finished",
            EventType::TwinStatusChanged => "twin.status_changed",
            EventType::TwinDeleted => "twin.deleted",
            EventType::TwinRestored => "twin.restored",
            EventType::DriftDetected => "drift.detected",
        }
    }
}

/// One of [`EventType::ALL`], as `as_str` writes it.
impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Self::ALL.iter().map(|event| event.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for EventType {}

impl From<EventType> for &'static str {
    fn from(event: EventType) -> Self {
        event.as_str()
    }
}

impl FromStr for EventType {
    type Err = ValidationError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == value)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|e| e.as_str()).collect();
                ValidationError::new(format!(
                    "unknown event '{}' (one of: {})",
                    value.chars().take(40).collect::<String>(),
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a delivery (one message to one webhook) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// Claimed by a worker that is sending it (until its lease ends).
    Sending,
    /// A 2xx answered: never sent again.
    Succeeded,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = ValidationError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| ValidationError::new(format!("unknown delivery status '{value}'")))
    }
}

/// One event for the outbox: written with the change it reports, then waiting there for its
/// deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Sent as `webhook-id`.
    pub id: MessageId,
    pub event_type: EventType,
    /// Whose twin it is about: that owner's webhooks get it, and every admin's.
    pub owner: String,
    pub twin_id: Option<TwinId>,
    /// `{"type", "timestamp", "data"}`, exactly as every attempt sends it.
    pub body: String,
    pub created_at: String,
}

impl OutboxMessage {
    pub fn new(event_type: EventType, owner: &str, twin: &TwinId, data: Value, at: &str) -> Self {
        let body = json!({ "type": event_type.as_str(), "timestamp": at, "data": data });
        Self {
            id: MessageId::generate(),
            event_type,
            owner: owner.to_owned(),
            twin_id: Some(twin.clone()),
            body: body.to_string(),
            created_at: at.to_owned(),
        }
    }
}

/// The twin's deployment status moved: `before` is the twin as it was, `row` its new row.
pub fn status_changed(
    before: &Twin,
    row: &TwinChange,
    actor: &str,
    reason: Option<&str>,
    run_id: Option<&RunId>,
) -> OutboxMessage {
    let data = json!({
        "twin_id": row.id,
        "twin_name": row.name,
        "from": before.deployment_status,
        "to": row.status,
        "actor": actor,
        "reason": reason,
        "job_id": run_id,
    });
    OutboxMessage::new(
        EventType::TwinStatusChanged,
        &before.owner,
        &row.id,
        data,
        &row.updated_at,
    )
}

/// The twin was soft-deleted (`row`: its new row).
pub fn twin_deleted(before: &Twin, row: &TwinChange, actor: &str) -> OutboxMessage {
    let data = json!({
        "twin_id": row.id,
        "twin_name": row.name,
        "actor": actor,
        "deleted_at": row.deleted_at,
    });
    OutboxMessage::new(
        EventType::TwinDeleted,
        &before.owner,
        &row.id,
        data,
        &row.updated_at,
    )
}

/// A soft delete was undone (`row`: the twin's new row).
pub fn twin_restored(before: &Twin, row: &TwinChange, actor: &str) -> OutboxMessage {
    let data = json!({
        "twin_id": row.id,
        "twin_name": row.name,
        "actor": actor,
        "deployment_status": row.status,
    });
    OutboxMessage::new(
        EventType::TwinRestored,
        &before.owner,
        &row.id,
        data,
        &row.updated_at,
    )
}

/// A run got its slot and terraform starts working, at `at`.
pub fn run_started(run: &Run, twin: &Twin, at: &str) -> OutboxMessage {
    let data = json!({
        "job_id": run.id,
        "twin_id": twin.id,
        "twin_name": twin.name,
        "kind": run.kind,
        "actor": run.actor,
        "start_time": at,
    });
    OutboxMessage::new(EventType::RunStarted, &twin.owner, &twin.id, data, at)
}

/// A run's end, as it is about to be recorded.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// The run as stored before its end.
    pub run: &'a Run,
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    pub message: &'a str,
    /// What a plan or drift check found.
    pub result: Option<&'a RunResult>,
    pub ended_at: &'a str,
}

/// What a run's end reports: `run.finished` always, and `drift.detected` for a drift check
/// that completed and found resources changed or deleted outside terraform. `twin` is the
/// twin as read, `twin_status` its status once the end is written.
pub fn run_ended(
    end: &RunEnd<'_>,
    twin: &Twin,
    twin_status: DeploymentStatus,
) -> Vec<OutboxMessage> {
    let run = end.run;
    let data = json!({
        "job_id": run.id,
        "twin_id": twin.id,
        "twin_name": twin.name,
        "kind": run.kind,
        "status": end.outcome.run_status(),
        "outcome": end.outcome,
        "error": end.error,
        "message": end.message,
        "twin_status": twin_status,
        "start_time": run.start_time,
        "end_time": end.ended_at,
    });
    let mut messages = vec![OutboxMessage::new(
        EventType::RunFinished,
        &twin.owner,
        &twin.id,
        data,
        end.ended_at,
    )];
    let drifted = end
        .result
        .and_then(|result| result.drifted.as_ref())
        .filter(|drifted| !drifted.is_empty());
    if let (RunKind::Drift, Outcome::Succeeded, Some(drifted)) = (run.kind, end.outcome, drifted) {
        let data = json!({
            "job_id": run.id,
            "twin_id": twin.id,
            "twin_name": twin.name,
            "drifted_count": drifted.len(),
            "drifted": drifted,
            "checked_at": end.ended_at,
        });
        messages.push(OutboxMessage::new(
            EventType::DriftDetected,
            &twin.owner,
            &twin.id,
            data,
            end.ended_at,
        ));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ResourceChange, RunStatus, TwinName};

    #[test]
    fn event_names_parse_back_and_unknown_ones_are_refused() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
        }
        assert!("run.exploded".parse::<EventType>().is_err());
        assert_eq!(
            serde_json::to_value(EventType::DriftDetected).ok(),
            Some(json!("drift.detected"))
        );
    }

    fn twin() -> Twin {
        Twin {
            id: TwinId::generate(),
            owner: "alice".into(),
            name: TwinName::parse("t").unwrap_or_else(|e| panic!("{e}")),
            provider: crate::domain::Provider::Sandbox,
            deployment_status: DeploymentStatus::Deployed,
            is_locked: false,
            active_job_id: None,
            last_deployed_at: None,
            terraform_outputs: None,
            files: crate::demo::files().unwrap_or_else(|e| panic!("{e}")),
            variables: Default::default(),
            secret_variables: Default::default(),
            credential_ids: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            deleted_at: None,
            version: 1,
        }
    }

    fn drift_run(twin: &Twin) -> Run {
        Run {
            id: RunId::generate(),
            twin_id: twin.id.clone(),
            kind: RunKind::Drift,
            status: RunStatus::Processing,
            stage: None,
            progress: 0,
            actor: "drift-scheduler".into(),
            created_at: String::new(),
            start_time: Some("2026-01-01T00:00:00.000000Z".into()),
            end_time: None,
            exit_code: None,
            error: None,
            message: None,
            outputs: None,
            result: None,
            step: None,
            applies_plan: None,
            owner: None,
            cancel_requested: false,
            log_level: None,
        }
    }

    #[test]
    fn only_a_completed_drift_check_that_found_something_reports_drift() {
        let twin = twin();
        let run = drift_run(&twin);
        let found = RunResult {
            drifted: Some(vec![ResourceChange {
                address: "sandbox_resource.valve".into(),
                resource_type: "sandbox_resource".into(),
                action: "delete".into(),
            }]),
            ..RunResult::default()
        };
        let nothing = RunResult {
            drifted: Some(Vec::new()),
            ..RunResult::default()
        };
        let end = |outcome, result| RunEnd {
            run: &run,
            outcome,
            error: None,
            message: "drift succeeded",
            result,
            ended_at: "2026-01-01T00:00:01.000000Z",
        };
        let types = |end: RunEnd<'_>| -> Vec<EventType> {
            run_ended(&end, &twin, DeploymentStatus::Deployed)
                .iter()
                .map(|m| m.event_type)
                .collect()
        };
        assert_eq!(
            types(end(Outcome::Succeeded, Some(&found))),
            [EventType::RunFinished, EventType::DriftDetected]
        );
        assert_eq!(
            types(end(Outcome::Succeeded, Some(&nothing))),
            [EventType::RunFinished]
        );
        assert_eq!(
            types(end(Outcome::Failed, Some(&found))),
            [EventType::RunFinished]
        );
        let finished = &run_ended(
            &end(Outcome::Succeeded, Some(&found)),
            &twin,
            DeploymentStatus::Deployed,
        )[0];
        let body: Value = serde_json::from_str(&finished.body).unwrap_or_default();
        assert_eq!(body["type"], "run.finished");
        assert_eq!(body["data"]["status"], "completed");
        assert_eq!(body["data"]["end_time"], "2026-01-01T00:00:01.000000Z");
        assert_eq!(finished.owner, "alice");
    }
}
