//! The schemas of a run's events: SSE frames (`id:`, `event:`, `data:`), WebSocket messages
//! and pages of `GET /runs/{id}/logs` (`{"id", "event", "data"}`) carry the same events.
//! [`RunEvent::data`](crate::domain::RunEvent::data) builds their `data`; the test below holds
//! every kind of event to its schema.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::domain::{DeploymentStatus, LogStream, Outcome, RunId, Stage, TwinId};

/// One event of a run: its sequence number, its name and its data.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunEventMessage {
    /// 1, 2, 3 ... per run, without gaps: the SSE `id:` and the resume cursor.
    id: u64,
    #[serde(flatten)]
    event: RunEventData,
}

/// The event's name (`event`, the SSE `event:` line) and its data (the SSE `data:` line, one
/// line of JSON whose `type` repeats the name).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum RunEventData {
    Stage(StageEvent),
    Log(LogEvent),
    Progress(ProgressEvent),
    Status(StatusEvent),
    Warning(WarningEvent),
    Queue(QueueEvent),
    /// Always the last event of a run.
    Done(DoneEvent),
}

/// Each event's name and the schema of its data, as [`RunEventData`] tags them.
const EVENTS: [(&str, &str); 7] = [
    ("stage", "StageEvent"),
    ("log", "LogEvent"),
    ("progress", "ProgressEvent"),
    ("status", "StatusEvent"),
    ("warning", "WarningEvent"),
    ("queue", "QueueEvent"),
    ("done", "DoneEvent"),
];

/// One frame of the `text/event-stream` of a run, as an SSE parser reads it: the fields `id`,
/// `event` and `data` as text, `data` holding the event's JSON (the event-stream convention of
/// OpenAPI 3.2: `contentMediaType` and `contentSchema`, JSON Schema keywords utoipa has no
/// builder for, so they ride in the extension map, which is written unprefixed).
pub struct RunEventFrame;

impl utoipa::PartialSchema for RunEventFrame {
    fn schema() -> RefOr<Schema> {
        let frames = EVENTS.iter().map(|(name, data)| {
            let content = [
                ("contentMediaType", json!("application/json")),
                (
                    "contentSchema",
                    json!({ "$ref": format!("#/components/schemas/{data}") }),
                ),
            ];
            ObjectBuilder::new()
                .property(
                    "id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$"))
                        .description(Some("The event's sequence number: 1, 2, 3 ... per run.")),
                )
                .required("id")
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([*name])),
                )
                .required("event")
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .extensions(Some(content.into_iter().collect())),
                )
                .required("data")
        });
        frames
            .fold(OneOfBuilder::new(), OneOfBuilder::item)
            .description(Some(
                "One SSE frame: `id:` the sequence number, `event:` the name, `data:` one line of JSON whose `type` repeats the name.",
            ))
            .into()
    }
}

impl ToSchema for RunEventFrame {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        // The data schemas the frames point at.
        <RunEventData as ToSchema>::schemas(schemas);
    }
}

/// The run moves to a stage.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageEvent {
    job_id: RunId,
    stage: Stage,
    /// What the dashboard shows: `Initializing...`, `Planning...`, `Applying...`, ...
    label: String,
    /// `stage`.
    #[serde(rename = "type")]
    kind: String,
}

/// One line terraform printed, in order; secrets masked.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEvent {
    job_id: RunId,
    stream: LogStream,
    line: String,
    /// When the line was read: RFC 3339 with microseconds.
    ts: String,
    /// `log`.
    #[serde(rename = "type")]
    kind: String,
}

/// Completed resource actions over planned ones (a replace counts 2).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressEvent {
    job_id: RunId,
    #[schema(maximum = 100)]
    percent: u8,
    done: u32,
    total: u32,
    /// `progress`.
    #[serde(rename = "type")]
    kind: String,
}

/// The twin's deployment status changed.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusEvent {
    twin_id: TwinId,
    status: DeploymentStatus,
    /// `status`.
    #[serde(rename = "type")]
    kind: String,
}

/// A note from the gateway itself (silence watchdog, recovered state).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningEvent {
    job_id: RunId,
    message: String,
    /// `warning`.
    #[serde(rename = "type")]
    kind: String,
}

/// The run waits for a free slot.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueEvent {
    job_id: RunId,
    /// 1 is next.
    position: u64,
    /// `queue`.
    #[serde(rename = "type")]
    kind: String,
}

/// How the run ended.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoneEvent {
    job_id: RunId,
    outcome: Outcome,
    /// Where the run left the twin (unchanged by a plan or drift check).
    twin_status: Option<DeploymentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `done`.
    #[serde(rename = "type")]
    kind: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{RunEventMessage, EVENTS};
    use crate::domain::{DeploymentStatus, LogStream, Outcome, RunEvent, RunId, Stage, TwinId};

    /// Every kind of event, as the gateway stores and sends it, fits its schema exactly: no
    /// field the schema lacks (`deny_unknown_fields`), none it drops (the round trip).
    #[test]
    fn every_event_fits_its_schema() {
        let run = RunId::generate();
        let events = [
            RunEvent::Stage {
                stage: Stage::Applying,
            },
            RunEvent::Log {
                stream: LogStream::Stderr,
                line: "Error: boom".into(),
                ts: "2026-11-22T07:47:41.576421Z".into(),
            },
            RunEvent::Progress {
                percent: 50,
                done: 1,
                total: 2,
            },
            RunEvent::Status {
                twin_id: TwinId::generate(),
                status: DeploymentStatus::Deploying,
            },
            RunEvent::Warning {
                message: "terraform printed nothing for 60 s".into(),
            },
            RunEvent::Queue { position: 2 },
            RunEvent::Done {
                outcome: Outcome::Failed,
                twin_status: Some(DeploymentStatus::Error),
                error: Some("exit 1".into()),
            },
            RunEvent::Done {
                outcome: Outcome::Succeeded,
                twin_status: None,
                error: None,
            },
        ];
        for (seq, event) in events.iter().enumerate() {
            let message = json!({ "id": seq + 1, "event": event.name(), "data": event.data(&run) });
            let parsed: RunEventMessage = serde_json::from_value(message.clone())
                .unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", event.name()));
            let back: Value = serde_json::to_value(&parsed).unwrap_or_default();
            assert_eq!(back, message, "{} lost something", event.name());
            assert!(
                EVENTS.iter().any(|(name, _)| *name == event.name()),
                "the SSE frames have no {}",
                event.name()
            );
        }
    }
}
