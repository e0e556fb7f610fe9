//! Runs: start a deploy or destroy, cancel it, read its status, events and logs.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::openapi::{LogsPage, RunCancelling, RunEventFrame};
use super::sse;
use super::twins::visible_twin;
use crate::config::Settings;
use crate::domain::{LogLevel, Principal, ReplicaId, Run, RunId, RunKind, RunStatus, TwinId};
use crate::runs::{Cancelling, RunError, Supervisor};
use crate::store::run_blocking;
use crate::twins::Twins;

/// A run as the contract shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunView {
    job_id: RunId,
    twin_id: String,
    kind: RunKind,
    status: crate::domain::RunStatus,
    progress: u8,
    stage: Option<crate::domain::Stage>,
    stage_label: Option<&'static str>,
    #[schema(value_type = super::openapi::RunResultView)]
    result: serde_json::Value,
    start_time: Option<String>,
    end_time: Option<String>,
    created_at: String,
    exit_code: Option<i32>,
    error: Option<String>,
    actor: String,
    events_url: String,
    /// While pending: 1 when the run is next to get a slot.
    queue_position: Option<usize>,
    /// The gateway that runs it (`null` while it waits in the queue).
    replica: Option<ReplicaId>,
    /// A debug run: terraform's log level (its `TF_LOG`).
    debug: bool,
    log_level: Option<LogLevel>,
    /// In `GET /runs`, which spans twins: the twin's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    twin_name: Option<String>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        let events_url = format!("/runs/{}/events", run.id);
        Self {
            twin_id: run.twin_id.to_string(),
            kind: run.kind,
            status: run.status,
            progress: run.progress,
            stage: run.stage,
            stage_label: run.stage.map(|s| s.label()),
            result: run_result(run.message, run.outputs, run.result),
            start_time: run.start_time,
            end_time: run.end_time,
            created_at: run.created_at,
            exit_code: run.exit_code,
            error: run.error,
            actor: run.actor,
            job_id: run.id,
            events_url,
            queue_position: None,
            replica: run.owner,
            debug: run.log_level.is_some(),
            log_level: run.log_level,
            twin_name: None,
        }
    }
}

impl From<RunError> for ApiError {
    fn from(err: RunError) -> Self {
        match err {
            RunError::Store(err) => err.into(),
            RunError::Hub(err) => ApiError::internal(err),
            RunError::Twin(err) => err.into(),
            RunError::ShuttingDown => ApiError::Unavailable(err.to_string()),
            RunError::Secrets(err) => err.into(),
        }
    }
}

/// The optional body of a deploy, destroy or plan.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    /// A debug run: terraform gets `TF_LOG` (`log_level`, else DEBUG).
    debug: Option<bool>,
    #[schema(value_type = Option<LogLevel>)]
    log_level: Option<String>,
}

impl StartRunRequest {
    /// No body (or an empty one) is an ordinary run.
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body).map_err(|err| {
            ApiError::BadRequest(if err.is_data() {
                format!("request body does not fit: {err}")
            } else {
                format!("request body is not valid JSON: {err}")
            })
        })
    }

    /// The run's terraform log level: `None` for an ordinary run.
    fn log_level(&self) -> Result<Option<LogLevel>, ApiError> {
        Ok(LogLevel::of_run(self.debug, self.log_level.as_deref())?)
    }
}

/// `POST /twins/{id}/deploy`, `/destroy` and `/plan`: the route says which kind of run
/// ([`RunKind`] in the route's data). A plan preview neither moves nor locks the twin; its
/// result lists every resource change, and the next deploy applies exactly it while the
/// configuration and state are unchanged. `{"debug": true}` (and `"log_level"`) makes it a
/// debug run.
pub async fn start_run(
    req: HttpRequest,
    kind: web::Data<RunKind>,
    supervisor: web::Data<Supervisor>,
    settings: web::Data<Settings>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let log_level = StartRunRequest::parse(&body)?.log_level()?;
    start(
        req, supervisor, settings, principal, &path, **kind, log_level,
    )
    .await
}

/// `POST /twins/{id}/validate`: `{"valid", "errors", "warnings"}` from `terraform validate`.
#[utoipa::path(
    post,
    path = "/twins/{id}/validate",
    operation_id = "validate_twin",
    tag = "runs",
    summary = "Validate a twin's configuration",
    description = "Runs `terraform validate` (a syntax error is reported from `init`, with its location); no run, no lock.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "Whether it is valid, and terraform's diagnostics.", body = crate::runs::validate::Validation),
        (status = 503, description = "terraform cannot run, or the gateway is shutting down.", body = ErrorBody),
    ),
)]
pub async fn validate(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let validation = supervisor
        .into_inner()
        .validate(&twin)
        .await
        .map_err(|err| ApiError::Unavailable(format!("cannot validate: {err}")))?;
    Ok(HttpResponse::Ok().json(validation))
}

/// The contract's `result` (`message`, `outputs`) plus what a plan or drift check found.
fn run_result(
    message: Option<String>,
    outputs: Option<serde_json::Value>,
    found: Option<crate::domain::RunResult>,
) -> serde_json::Value {
    let mut result = json!({ "message": message, "outputs": outputs });
    let found = found.and_then(|found| serde_json::to_value(found).ok());
    if let Some(serde_json::Value::Object(found)) = found {
        for (key, value) in found {
            result[key] = value;
        }
    }
    result
}

async fn start(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    settings: web::Data<Settings>,
    principal: Principal,
    twin_id: &str,
    kind: RunKind,
    log_level: Option<LogLevel>,
) -> Result<HttpResponse, ApiError> {
    let supervisor = supervisor.into_inner();
    let twin = visible_twin(supervisor.twins(), &principal, twin_id).await?;
    let run = supervisor
        .start(&twin, kind, &principal.owner, log_level)
        .await?;
    tracing::info!(run_id = %run.id, twin_id = %twin.id, %kind, debug = log_level.is_some(), "run started");
    if sse::wants_stream(&req) {
        let subscription = supervisor.hub().subscribe(&run.id, 0);
        return Ok(sse::event_stream(subscription, settings.keep_alive, &req));
    }
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/runs/{}", run.id)))
        .json(json!({
            "job_id": run.id,
            "status": "accepted",
            "message": format!("{kind} of twin '{}' started", twin.name),
            "events_url": format!("/runs/{}/events", run.id),
        })))
}

#[utoipa::path(
    post,
    path = "/twins/{id}/cancel",
    operation_id = "cancel_twin_run",
    tag = "runs",
    summary = "Cancel a twin's active run",
    description = "terraform gets one SIGINT (it finishes operations in flight and saves the state), then, after the grace period, everything left of the run is killed. A run still waiting for a slot ends at once.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 202, description = "The cancel is under way.", body = RunCancelling),
        (status = 409, description = "`no_active_run`.", body = ErrorBody),
    ),
)]
pub async fn cancel(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let supervisor = supervisor.into_inner();
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let outcome = match &twin.active_job_id {
        Some(run_id) => supervisor.cancel_by(run_id, &principal.owner).await?,
        None => Cancelling::NotRunning,
    };
    match (twin.active_job_id, outcome) {
        (Some(run_id), Cancelling::Stopping | Cancelling::Dequeued) => Ok(cancelling(
            &run_id,
            &principal,
            outcome == Cancelling::Dequeued,
        )),
        _ => Err(ApiError::Conflict(super::error::Conflict::new(
            "no_active_run",
            format!("twin {} has no active run to cancel", twin.id),
        ))),
    }
}

/// `POST /runs/{id}/cancel`: stops any active run, including a plan preview or drift check
/// (which hold no twin lock, so the twin's cancel cannot name them).
#[utoipa::path(
    post,
    path = "/runs/{id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    summary = "Cancel a run",
    description = "Any active run, also a plan preview or drift check (which hold no twin lock), through any replica.",
    params(("id" = RunId, Path, description = "The run's id (`job_id`).")),
    responses(
        (status = 202, description = "The cancel is under way.", body = RunCancelling),
        (status = 409, description = "`no_active_run`: the run has ended.", body = ErrorBody),
    ),
)]
pub async fn cancel_run(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let supervisor = supervisor.into_inner();
    let run = visible_run(supervisor.twins(), &principal, &path).await?;
    // The store says first whether it has ended (its end and its `done` are one write): the
    // gateway that ran it lets go of it a moment after that, and a cancel in that moment would
    // reach the run's token.
    let outcome = if run.status.is_finished() {
        Cancelling::NotRunning
    } else {
        supervisor.cancel_by(&run.id, &principal.owner).await?
    };
    match outcome {
        Cancelling::NotRunning => Err(ApiError::Conflict(super::error::Conflict::new(
            "no_active_run",
            format!("run {} is not running ({})", run.id, run.status),
        ))),
        outcome => Ok(cancelling(
            &run.id,
            &principal,
            outcome == Cancelling::Dequeued,
        )),
    }
}

/// The answer to a cancel: a run still waiting for a slot ends at once having changed nothing;
/// a working one gets terraform's graceful stop.
fn cancelling(run_id: &RunId, principal: &Principal, queued: bool) -> HttpResponse {
    tracing::info!(%run_id, by = %principal.owner, queued, "run cancel requested");
    let message = if queued {
        "the run was still waiting for a slot: it ends now; terraform never ran and the twin keeps its status"
    } else {
        "terraform was asked to stop: it lets in-flight operations finish (it stops provisioners itself) and saves the state"
    };
    HttpResponse::Accepted().json(json!({
        "job_id": run_id,
        "status": "cancelling",
        "message": message,
    }))
}

/// Loads a run whose twin the caller may see.
async fn visible_run(twins: &Twins, principal: &Principal, raw_id: &str) -> Result<Run, ApiError> {
    Ok(twins.visible_run(principal, raw_id).await?)
}

/// `GET /runs/{id}`; a plan preview's result also shows its monthly cost and the change.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    operation_id = "get_run",
    tag = "runs",
    summary = "Get a run",
    description = "A plan preview's `result` also shows its monthly `cost` and the change it makes.",
    params(("id" = RunId, Path, description = "The run's id (`job_id`).")),
    responses(
        (status = 200, description = "The run.", body = RunView),
    ),
)]
pub async fn get(
    supervisor: web::Data<Supervisor>,
    state: web::Data<crate::state::StateService>,
    book: web::Data<crate::costs::PriceBook>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let run = visible_run(supervisor.twins(), &principal, &path).await?;
    let queue_position = supervisor.queue_position(&run.id).await?;
    let planned = match (&run.kind, &run.result) {
        (RunKind::Plan, Some(result)) => result.resources_after.clone(),
        _ => None,
    };
    let twin_id = run.twin_id.clone();
    let mut view = RunView::from(run);
    view.queue_position = queue_position;
    if let Some(resources_after) = planned {
        let twin = run_blocking(&store, move |s| s.get_twin(&twin_id))
            .await?
            .ok_or_else(|| ApiError::NotFound("the run's twin is gone".into()))?;
        view.result["cost"] =
            super::costs::plan_cost(state.into_inner(), &book, &twin, &resources_after).await?;
    }
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /twins/{id}/runs`: every run, or with `limit` (and `before`) one page of them.
#[utoipa::path(
    get,
    path = "/twins/{id}/runs",
    operation_id = "list_twin_runs",
    tag = "runs",
    summary = "A twin's runs",
    description = "Newest first: every run, or with `limit` (and `before`) one page of them.",
    params(("id" = TwinId, Path, description = "The twin's id."), PageQuery),
    responses(
        (status = 200, description = "Runs, newest first.", body = Vec<RunView>, headers(("X-Next-Before" = String, description = "The `before` of the next (older) page, when there is one."))),
        (status = 422, description = "`before` names a run that is not one of the twin's.", body = ErrorBody),
    ),
)]
pub async fn list_for_twin(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    if query.limit.is_none() && query.before.is_none() {
        let runs = run_blocking(&store, move |s| s.list_runs(&twin.id)).await?;
        return Ok(HttpResponse::Ok().json(runs.into_iter().map(RunView::from).collect::<Vec<_>>()));
    }
    let limit = page_limit(query.limit, DEFAULT_RUNS_PAGE)?;
    let before = before_cursor(supervisor.twins(), &principal, query.before.as_deref()).await?;
    if let Some(run) = before.as_ref().filter(|run| run.twin_id != twin.id) {
        return Err(ApiError::Unprocessable(format!(
            "before names run {}, which is not a run of twin {}",
            run.id, twin.id
        )));
    }
    let runs = run_blocking(&store, move |s| {
        s.list_runs_page(&twin.id, before.as_ref().map(|r| &r.id), limit + 1)
    })
    .await?;
    let next = runs
        .get(limit.saturating_sub(1))
        .map(|run| run.id.to_string());
    Ok(runs_page(
        runs.into_iter().map(RunView::from).collect(),
        limit,
        next,
    ))
}

/// The run's last event number and whether it has ended. The number is read first, then the
/// status: a run's end is stored in one transaction with its `done`, so a finished status
/// means `last` is that `done`, sent or not yet.
pub(super) async fn run_position(
    store: &std::sync::Arc<dyn crate::store::Store>,
    run_id: &RunId,
) -> Result<(u64, bool), ApiError> {
    let run_id = run_id.clone();
    Ok(run_blocking(store, move |s| {
        let last = s.last_event_seq(&run_id)?;
        let finished = s.get_run(&run_id)?.is_some_and(|r| r.status.is_finished());
        Ok((last, finished))
    })
    .await?)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Resume after this event (the Flutter client's cursor); `Last-Event-ID` wins when both
    /// are sent.
    #[param(value_type = Option<u64>)]
    last_event_id: Option<String>,
}

/// The resume cursor: `Last-Event-ID` (browsers) or `last_event_id` (the Flutter client).
pub(super) fn cursor(req: &HttpRequest, query: &EventsQuery) -> Result<u64, ApiError> {
    let header = req
        .headers()
        .get("Last-Event-ID")
        .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
    match header.or_else(|| query.last_event_id.clone()) {
        None => Ok(0),
        Some(raw) if raw.trim().is_empty() => Ok(0),
        Some(raw) => raw.trim().parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "the event cursor '{}' is not a sequence number",
                raw.chars().take(40).collect::<String>()
            ))
        }),
    }
}

#[utoipa::path(
    get,
    path = "/runs/{id}/events",
    operation_id = "run_events",
    tag = "runs",
    summary = "A run's event stream (SSE)",
    description = "Replays the run's events from the start, or after the cursor, then follows live, and ends after `done`. Each SSE frame is one event (`RunEventFrame`): its sequence number on the `id:` line, its name on the `event:` line and its data as one line of JSON on the `data:` line; `retry: 2000` comes first and a `: keep-alive` comment every 15 s.",
    params(("id" = RunId, Path, description = "The run's id (`job_id`)."), EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The cursor browsers send on reconnect; wins over `last_event_id`.")),
    responses(
        (status = 200, description = "The event stream.", body = RunEventFrame, content_type = "text/event-stream"),
        (status = 204, description = "The cursor is at the last event of a finished run: nothing more will come (EventSource stops reconnecting)."),
        (status = 422, description = "The cursor is beyond the run's last event.", body = ErrorBody),
    ),
)]
pub async fn events(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    settings: web::Data<Settings>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let run = visible_run(supervisor.twins(), &principal, &path).await?;
    let after = cursor(&req, &query)?;
    // Subscribe before reading the last stored number, so nothing slips between the two.
    let subscription = supervisor.hub().subscribe(&run.id, after);
    let (last, finished) = run_position(&store, &run.id).await?;
    if after > last {
        return Err(ApiError::Unprocessable(format!(
            "cursor {after} is beyond the run's last event ({last})"
        )));
    }
    if after == last && finished {
        // A finished run read to its end: 204 tells EventSource to stop reconnecting.
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(sse::event_stream(subscription, settings.keep_alive, &req))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The events after this one; 0 (the default) is from the start.
    #[serde(default)]
    after_event_id: u64,
    /// 1-1000 (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

const MAX_PAGE: usize = 1000;

#[utoipa::path(
    get,
    path = "/runs/{id}/logs",
    operation_id = "run_logs",
    tag = "runs",
    summary = "A page of a run's stored events",
    description = "For clients that catch up before they subscribe.",
    params(("id" = RunId, Path, description = "The run's id (`job_id`)."), LogsQuery),
    responses(
        (status = 200, description = "The events after `after_event_id`.", body = LogsPage),
        (status = 422, description = "`limit` out of range, or `after_event_id` beyond the run's last event.", body = ErrorBody),
    ),
)]
pub async fn logs(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let run = visible_run(supervisor.twins(), &principal, &path).await?;
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let (run_id, after) = (run.id.clone(), query.after_event_id);
    let (page, last) = run_blocking(&store, move |s| {
        Ok((
            s.events_after(&run_id, after, limit + 1)?,
            s.last_event_seq(&run_id)?,
        ))
    })
    .await?;
    // As the stream answers it: a cursor past the last stored event is a client's mistake.
    if after > last {
        return Err(ApiError::Unprocessable(format!(
            "after_event_id {after} is beyond the run's last event ({last})"
        )));
    }
    let has_more = page.len() > limit;
    let events: Vec<serde_json::Value> = page
        .into_iter()
        .take(limit)
        .map(|event| {
            let data: serde_json::Value =
                serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
            json!({ "id": event.seq, "event": event.event, "data": data })
        })
        .collect();
    let next_after = events
        .last()
        .and_then(|e| e["id"].as_u64())
        .unwrap_or(after);
    Ok(HttpResponse::Ok().json(json!({
        "job_id": run.id,
        "status": run.status,
        "events": events,
        "next_after_event_id": next_after,
        "has_more": has_more,
    })))
}

/// The paging header: present when there is more, naming the `before` of the next page.
pub const NEXT_BEFORE: &str = "X-Next-Before";
pub const DEFAULT_RUNS_PAGE: usize = 50;
const MAX_RUNS_PAGE: usize = 200;

/// `?limit=N&before=<cursor>` on a twin's runs or history.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// A page of at most this many (1-200); without `limit` or `before`, the whole list.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// The `X-Next-Before` of the previous page: entries older than it.
    pub before: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Keep these statuses, comma-separated (`pending,processing`); every status when left out.
    #[param(
        pattern = "^((pending|processing|completed|failed|cancelled)(,(pending|processing|completed|failed|cancelled))*)?$"
    )]
    status: Option<String>,
    /// 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// The `X-Next-Before` of the previous page: runs older than it.
    #[param(value_type = Option<RunId>)]
    before: Option<String>,
}

/// `limit` as asked (1 to [`MAX_RUNS_PAGE`]), or `default` when not given.
pub fn page_limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        n @ 1..=MAX_RUNS_PAGE => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_RUNS_PAGE}"
        ))),
    }
}

/// `pending,processing` -> the statuses; empty or absent is every status.
fn parse_statuses(raw: Option<&str>) -> Result<Vec<RunStatus>, ApiError> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "'{}' is not a run status (pending, processing, completed, failed, cancelled)",
                    s.chars().take(40).collect::<String>()
                ))
            })
        })
        .collect()
}

/// The run a `before` cursor names: malformed is a 400, one the caller cannot see a 422.
async fn before_cursor(
    twins: &Twins,
    principal: &Principal,
    raw: Option<&str>,
) -> Result<Option<Run>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.parse::<RunId>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "before must be a run id, not '{}'",
            raw.chars().take(80).collect::<String>()
        )));
    }
    match visible_run(twins, principal, raw).await {
        Ok(run) => Ok(Some(run)),
        Err(ApiError::NotFound(_)) => Err(ApiError::Unprocessable(format!(
            "before names run {raw}, which is not one of your runs"
        ))),
        Err(other) => Err(other),
    }
}

/// A page of runs as JSON, with `X-Next-Before` when more follow.
fn runs_page(views: Vec<RunView>, limit: usize, next: Option<String>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if views.len() > limit {
        if let Some(next) = next {
            response.insert_header((NEXT_BEFORE, next));
        }
    }
    response.json(views.into_iter().take(limit).collect::<Vec<_>>())
}

/// `GET /runs`: every run the caller may see, across twins, newest first, in pages.
#[utoipa::path(
    get,
    path = "/runs",
    operation_id = "list_runs",
    tag = "runs",
    summary = "List runs",
    description = "Every run the caller may see (an admin: all), across twins, newest first, each with `twin_name`; in pages.",
    params(RunsQuery),
    responses(
        (status = 200, description = "Runs, newest first.", body = Vec<RunView>, headers(("X-Next-Before" = String, description = "The `before` of the next (older) page, when there is one."))),
        (status = 422, description = "`before` names a run that is not one of the caller's.", body = ErrorBody),
    ),
)]
pub async fn list_visible(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let statuses = parse_statuses(query.status.as_deref())?;
    let limit = page_limit(query.limit, DEFAULT_RUNS_PAGE)?;
    let before = before_cursor(supervisor.twins(), &principal, query.before.as_deref()).await?;
    let rows = run_blocking(&store, move |s| {
        s.list_visible_runs(
            &principal,
            &statuses,
            before.as_ref().map(|r| &r.id),
            limit + 1,
        )
    })
    .await?;
    let next = rows
        .get(limit.saturating_sub(1))
        .map(|(run, _)| run.id.to_string());
    let queued = run_blocking(&store, |s| s.queued_runs()).await?;
    let views = rows
        .into_iter()
        .map(|(run, twin_name)| {
            let queue_position = queued.iter().position(|id| *id == run.id).map(|i| i + 1);
            let mut view = RunView::from(run);
            view.queue_position = queue_position;
            view.twin_name = Some(twin_name);
            view
        })
        .collect();
    Ok(runs_page(views, limit, next))
}
