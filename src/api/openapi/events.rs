//! The schemas of a run's events: SSE frames (`id:`, `event:`, `data:`), WebSocket messages
//! and pages of `GET /runs/{id}/logs` (`{"id", "event", "data"}`) carry the same events.
//! [`RunEvent::data`](crate::domain::RunEvent::data) builds their `data`; the test below holds
//! every kind of event to its schema.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use crate::domain::{DeploymentStatus, LogStream, Outcome, RunId, Stage, TwinId};

/// One event of a run as JSON (a WebSocket message, an entry of a logs page): its sequence
/// number, its name and its data. Its schema is [`event_schema`]'s, one object per kind.
#[derive(Serialize, Deserialize)]
pub struct RunEventMessage {
    id: u64,
    #[serde(flatten)]
    event: RunEventData,
}

/// The event's name and its data (whose `type` repeats the name); the test's view of
/// [`RunEvent::data`](crate::domain::RunEvent::data).
#[derive(Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum RunEventData {
    Stage(StageEvent),
    Log(LogEvent),
    Progress(ProgressEvent),
    Status(StatusEvent),
    Warning(WarningEvent),
    Queue(QueueEvent),
    Done(DoneEvent),
}

/// Adds a schema, and those it refers to, to the document's components.
type Collect = fn(&mut Vec<(String, RefOr<Schema>)>);

/// Each event's name, the name of its data's schema, and how to collect that schema.
fn events() -> [(&'static str, String, Collect); 7] {
    fn event<T: ToSchema>(name: &'static str) -> (&'static str, String, Collect) {
        let collect: Collect = |schemas| {
            schemas.push((T::name().into_owned(), T::schema()));
            T::schemas(schemas);
        };
        (name, T::name().into_owned(), collect)
    }
    [
        event::<StageEvent>("stage"),
        event::<LogEvent>("log"),
        event::<ProgressEvent>("progress"),
        event::<StatusEvent>("status"),
        event::<WarningEvent>("warning"),
        event::<QueueEvent>("queue"),
        event::<DoneEvent>("done"),
    ]
}

/// `oneOf` an object per kind of event: `id`, `event` (its name) and `data` as `data_field`
/// makes it from the data's schema name.
fn event_schema(
    id: impl Fn() -> ObjectBuilder,
    data_field: impl Fn(&str) -> RefOr<Schema>,
    description: &str,
) -> RefOr<Schema> {
    events()
        .iter()
        .map(|(name, data, _)| {
            ObjectBuilder::new()
                .property("id", id())
                .required("id")
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([*name])),
                )
                .required("event")
                .property("data", data_field(data))
                .required("data")
        })
        .fold(OneOfBuilder::new(), OneOfBuilder::item)
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for RunEventMessage {
    fn schema() -> RefOr<Schema> {
        event_schema(
            || {
                ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .description(Some("1, 2, 3 ... per run, without gaps: the resume cursor."))
            },
            |data| Ref::from_schema_name(data).into(),
            "One event of a run: its sequence number, its name and its data (whose `type` repeats the name).",
        )
    }
}

impl ToSchema for RunEventMessage {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (_, _, collect) in events() {
            collect(schemas);
        }
    }
}

/// One frame of the `text/event-stream` of a run, as an SSE parser reads it: the fields `id`,
/// `event` and `data` as text, `data` holding the event's JSON (the event-stream convention of
/// OpenAPI 3.2: `contentMediaType` and `contentSchema`, JSON Schema keywords utoipa has no
/// builder for, so they ride in the extension map, which is written unprefixed).
pub struct RunEventFrame;

impl utoipa::PartialSchema for RunEventFrame {
    fn schema() -> RefOr<Schema> {
        event_schema(
            || {
                ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]+$"))
                .description(Some("The event's sequence number: 1, 2, 3 ... per run."))
            },
            |data| {
                let content = [
                    ("contentMediaType", json!("application/json")),
                    (
                        "contentSchema",
                        json!({ "$ref": format!("#/components/schemas/{data}") }),
                    ),
                ];
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .extensions(Some(content.into_iter().collect()))
                    .into()
            },
            "One SSE frame: `id:` the sequence number, `event:` the name, `data:` one line of JSON whose `type` repeats the name.",
        )
    }
}

impl ToSchema for RunEventFrame {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <RunEventMessage as ToSchema>::schemas(schemas);
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

    use super::{events, RunEventMessage};
    use crate::domain::{DeploymentStatus, LogStream, Outcome, RunEvent, RunId, Stage, TwinId};

    /// Every kind of event, as the gateway stores and sends it, fits its schema exactly: no
    /// field the schema lacks (`deny_unknown_fields`), none it drops (the round trip).
    #[test]
    fn every_event_fits_its_schema() {
        let run = RunId::generate();
        let samples = [
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
        for (seq, event) in samples.iter().enumerate() {
            let message = json!({ "id": seq + 1, "event": event.name(), "data": event.data(&run) });
            let parsed: RunEventMessage = serde_json::from_value(message.clone())
                .unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", event.name()));
            let back: Value = serde_json::to_value(&parsed).unwrap_or_default();
            assert_eq!(back, message, "{} lost something", event.name());
            assert!(
                events().iter().any(|(name, _, _)| *name == event.name()),
                "the SSE frames have no {}",
                event.name()
            );
        }
    }
}
