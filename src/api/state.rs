//! State: terraform's `http` backend (`/twins/{id}/tfstate`, LOCK/UNLOCK on `.../lock`), and
//! the views the dashboard reads (masked state, outputs, versions, infrastructure status).

use std::sync::Arc;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Conflict, ErrorBody};
use super::openapi::{
    InfrastructureStatus, LockInfo, Outputs, Refreshed, RestoredState, StateVersionView, StateView,
    Unlocked,
};
use super::twins::visible_twin;
use crate::domain::{DeploymentStatus, Principal, Run, RunGrant, RunKind, Twin, TwinId};
use crate::runs::Supervisor;
use crate::state::{mask_outputs, mask_state, Pushed, StateError, StateService, Writer};
use crate::store::StateVersion;

impl From<StateError> for ApiError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Invalid(why) => ApiError::BadRequest(why),
            StateError::Conflict(why) => ApiError::Conflict(Conflict::new("state_conflict", why)),
            StateError::Locked(holder) => ApiError::Conflict(Conflict::new(
                "state_locked",
                format!(
                    "the state is locked by {} since {}",
                    holder.lock_id, holder.created_at
                ),
            )),
            StateError::NoSuchVersion(n) => {
                ApiError::NotFound(format!("state version {n} not found"))
            }
            StateError::Store(err) => err.into(),
            StateError::Cipher(err) => ApiError::internal(err),
            StateError::Refused(refusal) => refusal.into(),
            StateError::Busy => ApiError::Unavailable(err.to_string()),
        }
    }
}

/// Runs state work (SQLite and AES) off the async runtime.
async fn blocking<T, F>(state: &web::Data<StateService>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&StateService) -> Result<T, StateError> + Send + 'static,
{
    let state: Arc<StateService> = state.clone().into_inner();
    crate::store::blocking(move || work(&state))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Runs a backend operation; a lock held by someone else comes back as `Err(holder's
/// LockInfo)`, which terraform expects as the body of its answer, not as an error.
async fn lock_aware<T, F>(
    state: &web::Data<StateService>,
    work: F,
) -> Result<Result<T, String>, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&StateService) -> Result<T, StateError> + Send + 'static,
{
    blocking(state, move |s| match work(s) {
        Err(StateError::Locked(holder)) => Ok(Err(holder.info)),
        other => other.map(Ok),
    })
    .await
}

/// A lock held by someone else: 423 with the holder's LockInfo, as terraform expects.
fn locked(info: String) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::LOCKED)
        .content_type("application/json")
        .body(info)
}

async fn backend_twin(
    supervisor: &Supervisor,
    principal: &Principal,
    id: &str,
) -> Result<Twin, ApiError> {
    visible_twin(supervisor.twins(), principal, id).await
}

fn writer(principal: &Principal, grant: Option<&RunGrant>) -> Writer {
    match grant {
        Some(grant) => Writer {
            actor: format!("run {}", grant.run_id),
            run_id: Some(grant.run_id.clone()),
        },
        None => Writer {
            actor: principal.owner.clone(),
            run_id: None,
        },
    }
}

/// `GET /twins/{id}/tfstate`: the current state, plain, for terraform.
#[utoipa::path(
    get,
    path = "/twins/{id}/tfstate",
    operation_id = "backend_get_state",
    tag = "state-backend",
    summary = "Read the state (terraform's http backend)",
    description = "The current state as terraform wrote it, secrets included. The backend's lock is taken and released with the methods LOCK and UNLOCK on `/twins/{id}/tfstate/lock`, which OpenAPI 3.1 cannot describe (it has no custom methods); docs/state-backend.md does.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    security(("basic" = []), ("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The state.", body = serde_json::Value),
        (status = 404, description = "No such twin, or it has no state yet.", body = ErrorBody),
    ),
)]
pub async fn backend_get(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = backend_twin(&supervisor, &principal, &path).await?;
    let owner = principal.owner.clone();
    let current = blocking(&state, move |s| {
        s.seed(&twin.id, &owner)?;
        s.current(&twin.id)
    })
    .await?;
    match current {
        Some((_, plain)) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(plain)),
        None => Ok(HttpResponse::NotFound().finish()),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// The id of the lock the writer holds, as terraform sends it.
    #[serde(rename = "ID")]
    id: Option<String>,
}

/// `POST /twins/{id}/tfstate?ID=<lock id>`: terraform writes a state; each accepted write is
/// a new version.
#[utoipa::path(
    post,
    path = "/twins/{id}/tfstate",
    operation_id = "backend_post_state",
    tag = "state-backend",
    summary = "Write the state (terraform's http backend)",
    description = "Each accepted write is a new version; an identical re-post changes nothing.",
    params(("id" = TwinId, Path, description = "The twin's id."), PushQuery),
    security(("basic" = []), ("bearer" = []), ("session" = [])),
    request_body(content = serde_json::Value, description = "A terraform state (version 4).", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or unchanged)."),
        (status = 400, description = "Not a terraform state.", body = ErrorBody),
        (status = 409, description = "`state_conflict`: a lineage change, an older serial or a different state under the same serial; or the twin is deleted.", body = ErrorBody),
        (status = 423, description = "Someone else holds the state lock: its LockInfo.", body = LockInfo),
    ),
)]
pub async fn backend_post(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<PushQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let twin = backend_twin(&supervisor, &principal, &path).await?;
    let writer = writer(&principal, req.extensions().get::<RunGrant>());
    let lock_id = query.into_inner().id;
    let pushed = lock_aware(&state, move |s| {
        s.push(&twin.id, &body, lock_id.as_deref(), &writer)
    })
    .await?;
    match pushed {
        Ok(Pushed::New(version)) => {
            tracing::info!(twin_id = %version.twin_id, version = version.version, serial = version.serial, "state stored");
            Ok(HttpResponse::Ok().finish())
        }
        Ok(Pushed::Unchanged(_)) => Ok(HttpResponse::Ok().finish()),
        Err(holder) => Ok(locked(holder)),
    }
}

/// `LOCK /twins/{id}/tfstate/lock`: 200 when taken, 423 with the holder's LockInfo otherwise.
pub async fn backend_lock(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let twin = backend_twin(&supervisor, &principal, &path).await?;
    let run_id = req.extensions().get::<RunGrant>().map(|g| g.run_id.clone());
    let result = lock_aware(&state, move |s| s.lock(&twin.id, &body, run_id)).await?;
    match result {
        Ok(()) => Ok(HttpResponse::Ok().finish()),
        Err(holder) => Ok(locked(holder)),
    }
}

/// `UNLOCK /twins/{id}/tfstate/lock`: releases the lock; an empty body is
/// `terraform force-unlock`, which, like `POST /twins/{id}/state/unlock`, only an admin (not
/// a run, not the twin's owner) may send.
pub async fn backend_unlock(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let twin = backend_twin(&supervisor, &principal, &path).await?;
    let may_force = principal.is_admin && req.extensions().get::<RunGrant>().is_none();
    if !may_force && body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Forbidden(
            "only an admin may force-unlock a state (an UNLOCK without lock info)".into(),
        ));
    }
    let actor = principal.owner.clone();
    let result = lock_aware(&state, move |s| {
        s.unlock(&twin.id, &body, &actor, may_force)
    })
    .await?;
    match result {
        Ok(()) => Ok(HttpResponse::Ok().finish()),
        Err(holder) => Ok(HttpResponse::Conflict()
            .content_type("application/json")
            .body(holder)),
    }
}

/// `DELETE /twins/{id}/tfstate`: admins only, and only for a state that holds no resources;
/// starts the twin over with an empty state (earlier versions are kept).
#[utoipa::path(
    delete,
    path = "/twins/{id}/tfstate",
    operation_id = "backend_delete_state",
    tag = "state-backend",
    summary = "Start the state over (admins)",
    description = "An empty state as a new version; earlier versions are kept.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    security(("basic" = []), ("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The state is empty."),
        (status = 403, description = "Not an admin, or a run's credential.", body = ErrorBody),
        (status = 409, description = "`state_conflict`: the state holds resources; `state_locked`.", body = ErrorBody),
    ),
)]
pub async fn backend_delete(
    req: HttpRequest,
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !principal.is_admin || req.extensions().get::<RunGrant>().is_some() {
        return Err(ApiError::Forbidden(
            "only an admin may delete a twin's state".into(),
        ));
    }
    let twin = backend_twin(&supervisor, &principal, &path).await?;
    let actor = principal.owner.clone();
    blocking(&state, move |s| s.reset(&twin.id, &actor)).await?;
    Ok(HttpResponse::Ok().finish())
}

fn version_view(v: &StateVersion) -> serde_json::Value {
    json!({
        "version": v.version,
        "serial": v.serial,
        "lineage": v.lineage,
        "md5": v.md5,
        "size": v.size,
        "resource_count": v.resource_count,
        "run_id": v.run_id,
        "actor": v.actor,
        "created_at": v.created_at,
    })
}

/// `GET /twins/{id}/state`: the current state with sensitive values masked.
#[utoipa::path(
    get,
    path = "/twins/{id}/state",
    operation_id = "twin_state",
    tag = "state",
    summary = "The current state, masked",
    description = "Sensitive outputs and attributes masked, and every value of the twin's sensitive variables and credentials.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The state and its version's metadata.", body = StateView),
    ),
)]
pub async fn state_view(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let owned = twin.clone();
    let (current, masker) = blocking(&state, move |s| {
        Ok((s.current(&owned.id)?, s.secret_masker(&owned)?))
    })
    .await?;
    let Some((version, plain)) = current else {
        return Ok(
            HttpResponse::Ok().json(json!({ "twin_id": twin.id, "version": null, "state": null }))
        );
    };
    let parsed: serde_json::Value = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
    let mut view = version_view(&version);
    view["twin_id"] = json!(twin.id);
    view["state"] = masker.mask_json(mask_state(&parsed));
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /twins/{id}/outputs`: the outputs in the current state, sensitive values masked.
#[utoipa::path(
    get,
    path = "/twins/{id}/outputs",
    operation_id = "twin_outputs",
    tag = "state",
    summary = "The outputs of the current state",
    description = "Sensitive values masked.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The outputs by name.", body = Outputs),
    ),
)]
pub async fn outputs(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let owned = twin.clone();
    let (current, masker) = blocking(&state, move |s| {
        Ok((s.current(&owned.id)?, s.secret_masker(&owned)?))
    })
    .await?;
    let outputs = match current {
        Some((_, plain)) => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&plain).map_err(ApiError::internal)?;
            masker.mask_json(mask_outputs(&parsed["outputs"]))
        }
        None => json!({}),
    };
    Ok(HttpResponse::Ok().json(json!({ "twin_id": twin.id, "outputs": outputs })))
}

#[utoipa::path(
    get,
    path = "/twins/{id}/state/versions",
    operation_id = "state_versions",
    tag = "state",
    summary = "Every state version",
    description = "Metadata only, newest first.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The versions, newest first.", body = Vec<StateVersionView>),
    ),
)]
pub async fn versions(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let list = blocking(&state, move |s| s.versions(&twin.id)).await?;
    Ok(HttpResponse::Ok().json(list.iter().map(version_view).collect::<Vec<_>>()))
}

/// `GET /twins/{id}/state/versions/{n}`: that version as terraform wrote it (a download).
#[utoipa::path(
    get,
    path = "/twins/{id}/state/versions/{version}",
    operation_id = "download_state_version",
    tag = "state",
    summary = "Download a state version",
    description = "As terraform wrote it, secrets included, like the backend's GET.",
    params(("id" = TwinId, Path, description = "The twin's id."), ("version" = i64, Path, description = "The version number: 1, 2, 3 ... per twin.")),
    responses(
        (status = 200, description = "The state.", body = serde_json::Value, headers(("Content-Disposition" = String, description = "`attachment; filename=\"<twin id>-v<n>.tfstate\"`"))),
    ),
)]
pub async fn version_download(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (id, number) = path.into_inner();
    let twin = visible_twin(supervisor.twins(), &principal, &id).await?;
    let twin_id = twin.id.clone();
    let (_, plain) = blocking(&state, move |s| s.version(&twin_id, number)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{}-v{number}.tfstate\"", twin.id),
        ))
        .body(plain))
}

/// `POST /twins/{id}/state/versions/{n}/restore`: version `n`'s content becomes the current
/// state as a new version (a serial above the current one, the current lineage), with a
/// history row. 409 while a run locks the twin or terraform holds the state lock.
#[utoipa::path(
    post,
    path = "/twins/{id}/state/versions/{version}/restore",
    operation_id = "restore_state_version",
    tag = "state",
    summary = "Roll the state back to a version",
    description = "Version `n`'s content becomes the current state as a new version, with a serial above the current one and the current lineage; the twin's outputs follow; a `state_restored` history row.",
    params(("id" = TwinId, Path, description = "The twin's id."), ("version" = i64, Path, description = "The version number: 1, 2, 3 ... per twin.")),
    responses(
        (status = 200, description = "The new current version.", body = RestoredState),
        (status = 409, description = "`twin_locked` while a run locks the twin, `state_locked` while terraform holds the state lock, `twin_deleted`.", body = ErrorBody),
    ),
)]
pub async fn restore_version(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (id, number) = path.into_inner();
    let twin = visible_twin(supervisor.twins(), &principal, &id).await?;
    let (twin_id, actor) = (twin.id.clone(), principal.owner.clone());
    let restored = blocking(&state, move |s| s.restore(&twin_id, number, &actor)).await?;
    tracing::info!(twin_id = %twin.id, from = number, version = restored.version, "state version restored");
    let twin = supervisor.twins().get(&twin.id).await?;
    let mut answer = version_view(&restored);
    answer["twin_id"] = json!(twin.id);
    answer["restored_from"] = json!(number);
    answer["terraform_outputs"] = json!(twin.terraform_outputs);
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /twins/{id}/state/unlock`: an admin releases a stuck state lock.
#[utoipa::path(
    post,
    path = "/twins/{id}/state/unlock",
    operation_id = "force_unlock_state",
    tag = "state",
    summary = "Release a stuck state lock (admins)",
    description = "Recorded in the twin's history.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "Whether a lock was held.", body = Unlocked),
        (status = 403, description = "Not an admin.", body = ErrorBody),
    ),
)]
pub async fn force_unlock(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !principal.is_admin {
        return Err(ApiError::Forbidden(
            "only an admin may force-unlock a state".into(),
        ));
    }
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let actor = principal.owner.clone();
    let released = blocking(&state, move |s| s.force_unlock(&twin.id, &actor)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "released": released.is_some(),
        "lock_id": released.map(|l| l.lock_id),
    })))
}

/// What the dashboard needs to draw a twin's infrastructure and its buttons, from the store
/// alone (no terraform is spawned).
pub fn infrastructure_status(
    twin: &Twin,
    current: Option<&StateVersion>,
    drift: Option<&Run>,
) -> serde_json::Value {
    let allowed = |to: DeploymentStatus| {
        !twin.is_locked && !twin.is_deleted() && twin.deployment_status.can_move_to(to)
    };
    let drift = drift.map(|run| {
        let drifted = run
            .result
            .as_ref()
            .and_then(|r| r.drifted.clone())
            .unwrap_or_default();
        json!({
            "job_id": run.id,
            "checked_at": run.end_time,
            "outcome": run.status.outcome(),
            "drifted_count": drifted.len(),
            "drifted": drifted,
        })
    });
    json!({
        "twin_id": twin.id,
        "db_status": twin.deployment_status,
        "terraform_state_exists": current.is_some_and(|v| v.serial > 0 || v.resource_count > 0),
        "resource_count": current.map_or(0, |v| v.resource_count),
        "can_deploy": allowed(DeploymentStatus::Deploying),
        "can_destroy": allowed(DeploymentStatus::Destroying),
        "is_locked": twin.is_locked,
        "active_job_id": twin.active_job_id,
        "last_deployed_at": twin.last_deployed_at,
        "state_version": current.map(|v| v.version),
        "state_serial": current.map(|v| v.serial),
        "state_written_at": current.map(|v| v.created_at.clone()),
        "drift": drift,
    })
}

/// The infrastructure status from the store: the twin, its current state, its last drift
/// check. No terraform is spawned.
async fn status_of(
    store: &Arc<dyn crate::store::Store>,
    twin: &Twin,
) -> Result<serde_json::Value, ApiError> {
    let twin_id = twin.id.clone();
    let (current, drift) = crate::store::run_blocking(store, move |s| {
        Ok((
            s.current_state(&twin_id)?,
            s.latest_finished_run(&twin_id, RunKind::Drift)?,
        ))
    })
    .await?;
    Ok(infrastructure_status(
        twin,
        current.as_ref(),
        drift.as_ref(),
    ))
}

#[utoipa::path(
    get,
    path = "/twins/{id}/infrastructure-status",
    operation_id = "infrastructure_status",
    tag = "state",
    summary = "A twin's infrastructure status",
    description = "From the store alone: no terraform is spawned.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The status.", body = InfrastructureStatus),
    ),
)]
pub async fn infrastructure(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    Ok(HttpResponse::Ok().json(status_of(&store, &twin).await?))
}

/// `POST /twins/{id}/refresh`: brings the twin's status in line with its stored state, clears
/// a lock whose run is no longer alive, and, for a deployed twin, starts a drift check (a
/// streamed run whose findings show in infrastructure-status); says what it changed and why.
#[utoipa::path(
    post,
    path = "/twins/{id}/refresh",
    operation_id = "refresh_twin",
    tag = "state",
    summary = "Reconcile a twin, and check a deployed one for drift",
    description = "Clears the lock of a run that is no longer alive, brings the status in line with the stored state (each change a `reconciled` history row), and for a deployed twin starts a drift check whose findings then show in infrastructure-status.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "What changed, and the drift check started.", body = Refreshed),
        (status = 409, description = "The twin is deleted, or the reconciliation conflicts with its state.", body = ErrorBody),
        (status = 503, description = "The gateway is shutting down.", body = ErrorBody),
    ),
)]
pub async fn refresh(
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    let report = supervisor.reconcile(&twin, &principal.owner).await?;
    let twin_id = twin.id.clone();
    let twin = crate::store::run_blocking(&store, move |s| s.get_twin(&twin_id))
        .await?
        .ok_or_else(|| ApiError::NotFound("twin vanished".into()))?;
    let mut drift_skipped = None;
    let drift_run = if twin.deployment_status == DeploymentStatus::Deployed && !twin.is_locked {
        match supervisor
            .start(&twin, RunKind::Drift, &principal.owner, None)
            .await
        {
            Ok(run) => Some(run),
            // The twin is reconciled all the same; the check waits for a renewed credential.
            Err(crate::runs::RunError::Secrets(
                expired @ crate::vault::VaultError::Expired { .. },
            )) => {
                drift_skipped = Some(expired.to_string());
                None
            }
            Err(err) => return Err(err.into()),
        }
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({
        "twin_id": twin.id,
        "changed": !report.is_empty(),
        "changes": report,
        "deployment_status": twin.deployment_status,
        "drift_job_id": drift_run.as_ref().map(|run| run.id.clone()),
        "drift_skipped": drift_skipped,
        "events_url": drift_run.as_ref().map(|run| format!("/runs/{}/events", run.id)),
        "infrastructure": status_of(&store, &twin).await?,
    })))
}
