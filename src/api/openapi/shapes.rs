//! The schemas of answers whose handlers build them with `json!` (each names its handler).
//! They are never serialized: the handlers' JSON is the answer, and these say what it is.
//! `scripts/fuzz.sh` checks every answer schemathesis gets against them, so a field a handler
//! adds, drops or retypes fails CI until its shape here follows.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::events::RunEventMessage;
use crate::costs::{Delta, Estimate, Money};
use crate::domain::events::DeliveryStatus;
use crate::domain::events::EventType;
use crate::domain::{
    Credential, DeliveryId, DeploymentStatus, MessageId, Outcome, Provider, ResourceChange, RunId,
    RunResult, RunStatus, TwinFiles, TwinId, WebhookId,
};

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `GET /readyz`: ready (200) or not (503, with the problems).
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// How runs are isolated: `bubblewrap` or `none` (docs/security.md).
    run_isolation: String,
    /// Why it is not ready (503 only).
    problems: Option<Vec<String>>,
}

/// `POST /auth/login`: the session's owner; the cookie comes in `Set-Cookie`.
#[derive(Serialize, ToSchema)]
pub struct Session {
    owner: String,
    is_admin: bool,
    expires_at: String,
}

/// `GET /auth/whoami`.
#[derive(Serialize, ToSchema)]
pub struct Caller {
    owner: String,
    is_admin: bool,
}

/// `POST /auth/logout`.
#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    success: bool,
}

/// `DELETE /twins/{id}`: soft-deleted; `POST /twins/{id}/restore` undoes it.
#[derive(Serialize, ToSchema)]
pub struct DeletedTwin {
    success: bool,
    twin_id: TwinId,
    #[schema(value_type = String, example = "deleted")]
    status: &'static str,
    deleted_at: Option<String>,
    message: String,
}

/// `GET /templates/demo`: a body `POST /twins` takes as it is.
#[derive(Serialize, ToSchema)]
pub struct DemoTemplate {
    name: String,
    provider: Provider,
    files: TwinFiles,
    variables: BTreeMap<String, serde_json::Value>,
}

/// A run started without `Accept: text/event-stream` (202).
#[derive(Serialize, ToSchema)]
pub struct RunAccepted {
    job_id: RunId,
    #[schema(value_type = String, example = "accepted")]
    status: &'static str,
    message: String,
    /// Its event stream: `/runs/{job_id}/events`.
    events_url: String,
}

/// A cancel that was taken (202).
#[derive(Serialize, ToSchema)]
pub struct RunCancelling {
    job_id: RunId,
    #[schema(value_type = String, example = "cancelling")]
    status: &'static str,
    message: String,
}

/// A run's `result`: the contract's `message` and `outputs`, what a plan preview or drift
/// check found, and a plan preview's monthly `cost` (`GET /runs/{id}` only).
#[derive(Serialize, ToSchema)]
pub struct RunResultView {
    message: Option<String>,
    /// The outputs the run left, sensitive values masked.
    outputs: Option<serde_json::Value>,
    #[serde(flatten)]
    found: RunResult,
    cost: Option<PlanCost>,
}

/// What a plan preview costs a month once applied, and what it changes.
#[derive(Serialize, ToSchema)]
pub struct PlanCost {
    monthly_total: Money,
    currency: String,
    delta: Delta,
}

/// `GET /runs/{id}/logs`: a page of stored events.
#[derive(Serialize, ToSchema)]
pub struct LogsPage {
    job_id: RunId,
    status: RunStatus,
    events: Vec<RunEventMessage>,
    /// The cursor of the next page (the last event's id, or the one asked for).
    next_after_event_id: u64,
    has_more: bool,
}

/// A credential as answers show it: never its values.
#[derive(Serialize, ToSchema)]
pub struct CredentialView {
    #[serde(flatten)]
    credential: Credential,
    /// `expires_at` has passed: runs of twins naming it are refused.
    expired: bool,
}

/// A credential or webhook deleted.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    deleted: bool,
    /// The credential's or webhook's id.
    id: String,
}

/// A webhook endpoint (the secret is shown only when it is made).
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    id: WebhookId,
    owner: String,
    url: String,
    events: Vec<EventType>,
    description: Option<String>,
    created_at: String,
}

/// `POST /webhooks`: the webhook and its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: Webhook,
    /// `whsec_<base64>`: the Standard Webhooks signing secret.
    secret: String,
}

/// One message's delivery to a webhook, with every attempt.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    id: DeliveryId,
    /// Sent as `webhook-id`.
    message_id: MessageId,
    event_type: EventType,
    status: DeliveryStatus,
    next_attempt_at: Option<String>,
    created_at: String,
    attempts: Vec<DeliveryAttempt>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryAttempt {
    attempt: u32,
    at: String,
    /// When the endpoint answered.
    status_code: Option<u16>,
    /// When it did not (timed out, connection refused, ...).
    error: Option<String>,
    duration_ms: u64,
}

/// A state version's metadata.
#[derive(Serialize, ToSchema)]
pub struct StateVersionView {
    version: i64,
    serial: i64,
    lineage: String,
    md5: String,
    size: i64,
    resource_count: i64,
    /// The run whose terraform wrote it; `null` for a person's own terraform.
    run_id: Option<RunId>,
    actor: String,
    created_at: String,
}

/// `GET /twins/{id}/state`: the current state, sensitive values masked. A twin without a
/// state has only `twin_id`, `version: null` and `state: null`.
#[derive(Serialize, ToSchema)]
pub struct StateView {
    twin_id: TwinId,
    version: Option<i64>,
    serial: Option<i64>,
    lineage: Option<String>,
    md5: Option<String>,
    size: Option<i64>,
    resource_count: Option<i64>,
    run_id: Option<RunId>,
    actor: Option<String>,
    created_at: Option<String>,
    /// The state as terraform wrote it, with sensitive values masked.
    state: Option<serde_json::Value>,
}

/// `POST /twins/{id}/state/versions/{version}/restore`: the new current version.
#[derive(Serialize, ToSchema)]
pub struct RestoredState {
    twin_id: TwinId,
    /// The version whose content it is.
    restored_from: i64,
    #[serde(flatten)]
    version: StateVersionView,
    terraform_outputs: Option<serde_json::Value>,
}

/// `POST /twins/{id}/state/unlock`.
#[derive(Serialize, ToSchema)]
pub struct Unlocked {
    /// A lock was held, and is released.
    released: bool,
    lock_id: Option<String>,
}

/// An output as answers show it.
#[derive(Serialize, ToSchema)]
pub struct OutputView {
    /// `"********"` when sensitive.
    value: serde_json::Value,
    /// terraform's type of the value.
    #[serde(rename = "type")]
    output_type: serde_json::Value,
    sensitive: bool,
}

/// `GET /twins/{id}/outputs`.
#[derive(Serialize, ToSchema)]
pub struct Outputs {
    twin_id: TwinId,
    outputs: BTreeMap<String, OutputView>,
}

/// What the last drift check of a twin found.
#[derive(Serialize, ToSchema)]
pub struct DriftFinding {
    job_id: RunId,
    checked_at: Option<String>,
    outcome: Option<Outcome>,
    drifted_count: u64,
    /// Resources changed (`update`) or deleted (`delete`) outside terraform.
    drifted: Vec<ResourceChange>,
}

/// `GET /twins/{id}/infrastructure-status`: from the store alone, no terraform spawned.
#[derive(Serialize, ToSchema)]
pub struct InfrastructureStatus {
    twin_id: TwinId,
    db_status: DeploymentStatus,
    terraform_state_exists: bool,
    resource_count: i64,
    can_deploy: bool,
    can_destroy: bool,
    is_locked: bool,
    active_job_id: Option<RunId>,
    last_deployed_at: Option<String>,
    state_version: Option<i64>,
    state_serial: Option<i64>,
    state_written_at: Option<String>,
    drift: Option<DriftFinding>,
}

/// `POST /twins/{id}/refresh`: what reconciling changed, and the drift check it started.
#[derive(Serialize, ToSchema)]
pub struct Refreshed {
    twin_id: TwinId,
    changed: bool,
    /// Each change, in words (each also a `reconciled` history row).
    changes: Vec<String>,
    deployment_status: DeploymentStatus,
    drift_job_id: Option<RunId>,
    /// Why no drift check started (a credential of the twin has expired).
    drift_skipped: Option<String>,
    events_url: Option<String>,
    infrastructure: InfrastructureStatus,
}

/// Where an estimate comes from.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // A schema only: `twin_costs` writes the text.
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The twin's plan preview, while it still applies.
    Plan,
    /// The twin's current state.
    State,
}

/// `GET /twins/{id}/costs`: the monthly estimate, from the price book.
#[derive(Serialize, ToSchema)]
pub struct TwinCosts {
    twin_id: TwinId,
    source: CostSource,
    plan_run_id: Option<RunId>,
    state_version: Option<i64>,
    region: Option<String>,
    #[serde(flatten)]
    estimate: Estimate,
    /// With `source: plan`: what the plan changes a month (after minus before).
    delta: Option<Delta>,
}

/// terraform's LockInfo, as it sends it to LOCK and as a held lock answers it (423, 409).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct LockInfo {
    #[serde(rename = "ID")]
    id: String,
    operation: Option<String>,
    info: Option<String>,
    who: Option<String>,
    version: Option<String>,
    created: Option<String>,
    path: Option<String>,
}
