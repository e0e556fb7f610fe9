//! `/twins`: create, read, change, soft-delete and restore twins; their history and status.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::openapi::DeletedTwin;
use crate::catalog::{template_files, ProviderCatalog};
use crate::domain::{
    CredentialId, DeploymentStatus, FilePath, HistoryEntry, LockChange, Principal, Provider,
    StatusMove, Twin, TwinFiles, TwinId, TwinName, ValidationError, VariableInput,
};
use crate::runs::Supervisor;
use crate::store::run_blocking;
use crate::twins::{NewTwinInput, TwinEdit, Twins};

/// Variables as a request gives them: plain values, or `{"value", "sensitive": true}`.
type VariableInputs = BTreeMap<String, VariableInput>;

/// Request bodies hold raw strings: a well-formed body with a bad value is a 422 that names the
/// value, not a 400 about JSON. Their schemas say what is valid.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "A new twin: its files, or a provider whose bundled template it starts from (one of the two is required).",
    example = json!({
        "name": "plant-7",
        "provider": "sandbox",
        "files": {"main.tf": "resource \"terraform_data\" \"probe\" {\n  input = var.line\n}\n\nvariable \"line\" {\n  type = string\n}\n"},
        "variables": {"line": "packaging"}
    })
)]
pub struct CreateTwinRequest {
    /// 1-100 characters (trimmed, no control characters), unique among the owner's live twins.
    name: String,
    /// `sandbox` when left out.
    #[schema(value_type = Option<Provider>)]
    provider: Option<String>,
    /// Relative paths to contents; at least one `*.tf` or `*.tf.json`. Without files, the
    /// named provider's bundled template is the configuration.
    files: Option<BTreeMap<String, String>>,
    /// Terraform variables by name: any JSON value, or `{"value": ..., "sensitive": true}`.
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// A region and a size of the provider catalog, kept as the variables `region` and `size`.
    region: Option<String>,
    size: Option<String>,
    /// The owner's credentials the twin's runs get, in order.
    #[schema(value_type = Option<Vec<CredentialId>>)]
    credential_ids: Option<Vec<String>>,
}

/// Any of the fields; `variables` and `credential_ids` replace what the twin has.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTwinRequest {
    name: Option<String>,
    files: Option<BTreeMap<String, String>>,
    /// A sensitive variable sent back as `"********"` keeps its stored value.
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    #[schema(value_type = Option<Vec<CredentialId>>)]
    credential_ids: Option<Vec<String>>,
}

/// The twins to soft-delete, 1 to 100 ids.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteRequest {
    #[schema(value_type = Vec<TwinId>)]
    ids: Vec<String>,
}

/// The most ids one bulk delete takes.
pub const MAX_BULK_DELETE: usize = 100;

/// `DELETE /twins/{id}?purge=true`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PurgedTwin {
    purged: bool,
    twin_id: TwinId,
    message: String,
}

/// `POST /twins/bulk-delete`: one result per id given, in order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkDeleted {
    results: Vec<BulkDeleteResult>,
}

/// What `DELETE /twins/{id}` would have answered for one id: its status, and `deleted_at`
/// (200) or the error's `code` and `detail`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkDeleteResult {
    /// The id as given (cut at 80 characters).
    twin_id: String,
    #[schema(example = 200)]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// What `DELETE /twins/{id}` answers: a soft delete's answer, or a purge's.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the answer; the handler builds it.
enum DeleteAnswer {
    Deleted(DeletedTwin),
    Purged(PurgedTwin),
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Removes a soft-deleted twin for good (admins).
    #[serde(default)]
    purge: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Also list soft-deleted twins (admins only).
    #[serde(default)]
    include_deleted: bool,
}

/// A status move without a run.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "deployed", "reason": "keep the resources after a failed destroy"}))]
pub struct StatusRequest {
    #[schema(value_type = DeploymentStatus)]
    status: String,
    /// Recorded in the history; "set by hand" when left out.
    reason: Option<String>,
}

fn parse_files(raw: BTreeMap<String, String>) -> Result<TwinFiles, ValidationError> {
    let files = raw
        .into_iter()
        .map(|(path, content)| Ok((FilePath::parse(&path)?, content)))
        .collect::<Result<BTreeMap<_, _>, ValidationError>>()?;
    TwinFiles::new(files)
}

/// Variable names as terraform accepts them: a letter or underscore, then letters, digits,
/// underscores and dashes. A value may be marked sensitive: `{"value": ..., "sensitive": true}`.
fn parse_variables(
    raw: serde_json::Map<String, serde_json::Value>,
) -> Result<VariableInputs, ValidationError> {
    for name in raw.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            let shown: String = name.chars().take(60).collect();
            return Err(ValidationError::new(format!(
                "'{shown}' is not a valid terraform variable name"
            )));
        }
    }
    Ok(raw
        .into_iter()
        .map(|(name, value)| (name, VariableInput::from_json(value)))
        .collect())
}

/// Credential ids as given; one that is not an id names no credential (404).
fn parse_credential_ids(raw: Vec<String>) -> Result<Vec<CredentialId>, ApiError> {
    raw.iter()
        .map(|id| {
            id.parse().map_err(|_| {
                ApiError::NotFound(format!(
                    "credential '{}' not found",
                    id.chars().take(80).collect::<String>()
                ))
            })
        })
        .collect()
}

/// Loads a twin the caller may see; another owner's twin is as missing as one never made.
pub async fn visible_twin(
    twins: &Twins,
    principal: &Principal,
    raw_id: &str,
) -> Result<Twin, ApiError> {
    Ok(twins.visible(principal, raw_id).await?)
}

/// Sets the variable `name` to a catalog id given as a field, refusing a different value
/// given as a variable too.
fn place(
    variables: &mut VariableInputs,
    name: &str,
    value: Option<String>,
) -> Result<(), ApiError> {
    let Some(value) = value else { return Ok(()) };
    let value = VariableInput::Plain(serde_json::Value::String(value));
    match variables.get(name) {
        Some(existing) if *existing != value => Err(ApiError::Unprocessable(format!(
            "{name} is given both as a field and as a variable, differently; give it once"
        ))),
        _ => {
            variables.insert(name.to_owned(), value);
            Ok(())
        }
    }
}

/// The configuration of a new twin: its files, or the provider's template placed in a region
/// and size of the catalog (named, else the provider's first).
fn configuration(
    catalog: &ProviderCatalog,
    provider: Provider,
    files: Option<BTreeMap<String, String>>,
    (region, size): (Option<String>, Option<String>),
    variables: &mut VariableInputs,
) -> Result<TwinFiles, ApiError> {
    if let Some(files) = files {
        if region.is_some() || size.is_some() {
            catalog.check(provider, region.as_deref(), size.as_deref())?;
        }
        place(variables, "region", region)?;
        place(variables, "size", size)?;
        return Ok(parse_files(files)?);
    }
    // The template reads `region` and `size`, so variables of those names choose them too.
    let named = |field: Option<String>, name: &str| {
        field.or_else(|| match variables.get(name) {
            Some(VariableInput::Plain(value)) => value.as_str().map(str::to_owned),
            _ => None,
        })
    };
    let region = named(region, "region");
    let size = named(size, "size");
    let placement = catalog.placement(provider, region.as_deref(), size.as_deref())?;
    place(variables, "region", Some(placement.region))?;
    place(variables, "size", Some(placement.size))?;
    template_files(provider).map_err(ApiError::internal)
}

#[utoipa::path(
    post,
    path = "/twins",
    operation_id = "create_twin",
    tag = "twins",
    summary = "Create a twin",
    description = "Its configuration is `files`, or the bundled template of `provider` placed in a `region` and `size` of the provider catalog.",
    request_body = CreateTwinRequest,
    responses(
        (status = 201, description = "The twin, in `draft`.", body = Twin, headers(("Location" = String, description = "`/twins/{id}`"))),
        (status = 404, description = "A credential id that is not the caller's.", body = ErrorBody),
        (status = 409, description = "`name_taken`: the owner has a live twin of that name.", body = ErrorBody),
        (status = 422, description = "A bad name, provider, file path, variable name, region or size.", body = ErrorBody),
    ),
)]
pub async fn create(
    twins: web::Data<Twins>,
    catalog: web::Data<ProviderCatalog>,
    principal: Principal,
    body: web::Json<CreateTwinRequest>,
) -> Result<HttpResponse, ApiError> {
    let CreateTwinRequest {
        name,
        provider,
        files,
        variables,
        region,
        size,
        credential_ids,
    } = body.into_inner();
    if files.is_none() && provider.is_none() {
        // As serde would say it: a body that names neither is malformed, not invalid.
        return Err(ApiError::BadRequest(
            "request body does not fit: missing field `files` (or name a `provider` to start from its template)".into(),
        ));
    }
    let name = TwinName::parse(&name)?;
    let provider: Provider = provider
        .as_deref()
        .map(str::parse)
        .transpose()?
        .unwrap_or_default();
    let mut variables = parse_variables(variables.unwrap_or_default())?;
    let files = configuration(&catalog, provider, files, (region, size), &mut variables)?;
    let input = NewTwinInput {
        name,
        provider,
        files,
        variables,
        credential_ids: parse_credential_ids(credential_ids.unwrap_or_default())?,
    };
    let twin = twins.create_for(&principal, input).await?;
    tracing::info!(twin_id = %twin.id, owner = %twin.owner, "twin created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/twins/{}", twin.id)))
        .json(twin))
}

#[utoipa::path(
    get,
    path = "/twins",
    operation_id = "list_twins",
    tag = "twins",
    summary = "List twins",
    description = "The caller's twins (an admin's: every twin), oldest first.",
    params(ListQuery),
    responses(
        (status = 200, description = "The twins, oldest first.", body = Vec<Twin>),
        (status = 403, description = "`include_deleted` from someone who is not an admin.", body = ErrorBody),
    ),
)]
pub async fn list(
    twins: web::Data<Twins>,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.include_deleted && !principal.is_admin {
        return Err(ApiError::Forbidden(
            "only admins may list deleted twins".into(),
        ));
    }
    let listed = twins.list(&principal, query.include_deleted).await?;
    Ok(HttpResponse::Ok().json(listed))
}

#[utoipa::path(
    get,
    path = "/twins/{id}",
    operation_id = "get_twin",
    tag = "twins",
    summary = "Get a twin",
    description = "Also a soft-deleted one, so that it can be restored.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The twin.", body = Twin),
    ),
)]
pub async fn get(
    twins: web::Data<Twins>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(&twins, &principal, &path).await?;
    Ok(HttpResponse::Ok().json(twin))
}

#[utoipa::path(
    put,
    path = "/twins/{id}",
    operation_id = "update_twin",
    tag = "twins",
    summary = "Change a twin",
    description = "Any of its name, files, variables and credentials.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    request_body = UpdateTwinRequest,
    responses(
        (status = 200, description = "The changed twin.", body = Twin),
        (status = 409, description = "The twin is locked by a run (`twin_locked`) or deleted (`twin_deleted`), or the name is taken (`name_taken`).", body = ErrorBody),
        (status = 422, description = "Nothing to change, or a bad name, file path or variable name.", body = ErrorBody),
    ),
)]
pub async fn update(
    twins: web::Data<Twins>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<UpdateTwinRequest>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(&twins, &principal, &path).await?;
    let body = body.into_inner();
    let edit = TwinEdit {
        name: body.name.as_deref().map(TwinName::parse).transpose()?,
        files: body.files.map(parse_files).transpose()?,
        variables: body.variables.map(parse_variables).transpose()?,
        credential_ids: body.credential_ids.map(parse_credential_ids).transpose()?,
    };
    if edit.is_empty() {
        return Err(ApiError::Unprocessable(
            "nothing to update: give name, files, variables or credential_ids".into(),
        ));
    }
    let updated = twins.edit(&principal, &twin, edit).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// `DELETE /twins/{id}`: a soft delete; with `?purge=true` (admins), the removal for good of
/// a twin already soft-deleted, with its runs, events, state versions and files.
#[utoipa::path(
    delete,
    path = "/twins/{id}",
    operation_id = "delete_twin",
    tag = "twins",
    summary = "Delete a twin (soft), or purge a deleted one",
    description = "Only a `draft` twin that no run locks; `POST /twins/{id}/restore` undoes it. With `purge=true` (admins): removes a soft-deleted, unlocked twin with no working run and no resource in its state for good, with its runs, events, state versions, history and files.",
    params(("id" = TwinId, Path, description = "The twin's id."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted, or with `purge=true` purged.", body = inline(DeleteAnswer)),
        (status = 403, description = "`purge=true` by an owner.", body = ErrorBody),
        (status = 409, description = "Already deleted (`already_deleted`), locked (`twin_locked`), or not in `draft` (`resources_deployed`: destroy first); a purge: `not_deleted`, `twin_locked`, `run_working`, `resources_in_state`.", body = ErrorBody),
    ),
)]
pub async fn delete(
    twins: web::Data<Twins>,
    supervisor: web::Data<Supervisor>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.purge && !principal.is_admin {
        return Err(ApiError::Forbidden("only admins may purge twins".into()));
    }
    let twin = visible_twin(&twins, &principal, &path).await?;
    if query.purge {
        supervisor.purge(&twin, &principal.owner).await?;
        let message = format!(
            "twin '{}' and its runs, events, state versions and files are gone for good",
            twin.name
        );
        return Ok(HttpResponse::Ok().json(PurgedTwin {
            purged: true,
            twin_id: twin.id,
            message,
        }));
    }
    let deleted = twins.soft_delete(&twin.id, &principal.owner).await?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "twin_id": deleted.id,
        "status": "deleted",
        "deleted_at": deleted.deleted_at,
        "message": format!("twin '{}' deleted; POST /twins/{}/restore undoes it", deleted.name, deleted.id),
    })))
}

/// `POST /twins/bulk-delete`: each id soft-deleted by the rules of `DELETE /twins/{id}`, with
/// the status and detail that call would have answered; 200 however many were deleted.
#[utoipa::path(
    post,
    path = "/twins/bulk-delete",
    operation_id = "bulk_delete_twins",
    tag = "twins",
    summary = "Soft-delete several twins",
    description = "Each id by the rules of `DELETE /twins/{id}`, in order, with the status (200, 404, 409) and error that call would answer.",
    request_body = BulkDeleteRequest,
    responses(
        (status = 200, description = "One result per id.", body = BulkDeleted),
        (status = 422, description = "No ids, or more than 100.", body = ErrorBody),
    ),
)]
pub async fn bulk_delete(
    twins: web::Data<Twins>,
    principal: Principal,
    body: web::Json<BulkDeleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let ids = body.into_inner().ids;
    if ids.is_empty() || ids.len() > MAX_BULK_DELETE {
        return Err(ApiError::Unprocessable(format!(
            "ids must name 1 to {MAX_BULK_DELETE} twins, not {}",
            ids.len()
        )));
    }
    let results = twins
        .soft_delete_each(&principal, &ids)
        .await
        .into_iter()
        .map(|(id, deleted)| match deleted {
            Ok(twin) => BulkDeleteResult {
                twin_id: twin.id.to_string(),
                status: 200,
                deleted_at: twin.deleted_at,
                code: None,
                detail: None,
            },
            Err(err) => {
                let err = ApiError::from(err);
                BulkDeleteResult {
                    twin_id: id.chars().take(80).collect(),
                    status: actix_web::ResponseError::status_code(&err).as_u16(),
                    deleted_at: None,
                    code: Some(err.code()),
                    detail: Some(err.detail()),
                }
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(BulkDeleted { results }))
}

#[utoipa::path(
    post,
    path = "/twins/{id}/restore",
    operation_id = "restore_twin",
    tag = "twins",
    summary = "Restore a deleted twin",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The twin, live again.", body = Twin),
        (status = 409, description = "`not_deleted`, or `name_taken` by another live twin of the owner.", body = ErrorBody),
    ),
)]
pub async fn restore(
    twins: web::Data<Twins>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(&twins, &principal, &path).await?;
    let restored = twins.restore(&twin.id, &principal.owner).await?;
    Ok(HttpResponse::Ok().json(restored))
}

/// `GET /twins/{id}/history`: every entry, oldest first; or with `limit` (and `before`, an
/// entry id) the newest `limit` entries older than `before`, still oldest first.
#[utoipa::path(
    get,
    path = "/twins/{id}/history",
    operation_id = "twin_history",
    tag = "twins",
    summary = "A twin's history",
    description = "Every status move and lifecycle change, oldest first; with `limit` (and `before`) the newest `limit` entries older than `before`, still oldest first.",
    params(("id" = TwinId, Path, description = "The twin's id."), super::runs::PageQuery),
    responses(
        (status = 200, description = "History entries, oldest first.", body = Vec<HistoryEntry>, headers(("X-Next-Before" = String, description = "With `limit`: the `before` of the next (older) page, when there is one."))),
        (status = 422, description = "`before` names no entry of the twin.", body = ErrorBody),
    ),
)]
pub async fn history(
    twins: web::Data<Twins>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<super::runs::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(&twins, &principal, &path).await?;
    if query.limit.is_none() && query.before.is_none() {
        let entries = twins.history(&twin.id).await?;
        return Ok(HttpResponse::Ok().json(entries));
    }
    let limit = super::runs::page_limit(query.limit, super::runs::DEFAULT_RUNS_PAGE)?;
    let before = query
        .before
        .as_deref()
        .map(|raw| {
            raw.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "before must be a history entry id, not '{}'",
                    raw.chars().take(40).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let twin_id = twin.id.clone();
    let mut entries = match run_blocking(twins.store(), move |s| {
        s.history_page(&twin_id, before, limit + 1)
    })
    .await
    {
        Ok(entries) => entries,
        Err(crate::store::StoreError::NotFound(what)) => {
            return Err(ApiError::Unprocessable(format!(
                "before names {what}, which does not exist"
            )))
        }
        Err(other) => return Err(other.into()),
    };
    let mut response = HttpResponse::Ok();
    if entries.len() > limit {
        entries.truncate(limit);
        if let Some(oldest) = entries.last() {
            response.insert_header((super::runs::NEXT_BEFORE, oldest.id.to_string()));
        }
    }
    entries.reverse();
    Ok(response.json(entries))
}

/// `POST /twins/{id}/status`: a status move without a run. Owners may only keep resources
/// after a failed destroy (`destroy_failed -> deployed`); admins may make any move the machine
/// allows, to repair a twin by hand. Runs make every other move themselves.
#[utoipa::path(
    post,
    path = "/twins/{id}/status",
    operation_id = "set_twin_status",
    tag = "twins",
    summary = "Set a twin's status by hand",
    description = "A move of the status machine without a run: owners may only keep resources after a failed destroy (`destroy_failed` to `deployed`); admins may make any allowed move.",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "The moved twin.", body = Twin),
        (status = 403, description = "A move only admins may make.", body = ErrorBody),
        (status = 409, description = "`invalid_transition`, `twin_locked` or `twin_deleted`.", body = ErrorBody),
        (status = 422, description = "Not a deployment status.", body = ErrorBody),
    ),
)]
pub async fn set_status(
    twins: web::Data<Twins>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let twin = visible_twin(&twins, &principal, &path).await?;
    let body = body.into_inner();
    let to: DeploymentStatus = body.status.parse()?;
    let keeps_resources = twin.deployment_status == DeploymentStatus::DestroyFailed
        && to == DeploymentStatus::Deployed;
    if !principal.is_admin && !keeps_resources {
        return Err(ApiError::Forbidden(
            "only admins may set a status by hand; start a deploy or destroy instead".into(),
        ));
    }
    let change = StatusMove {
        to,
        actor: principal.owner.clone(),
        reason: Some(body.reason.unwrap_or_else(|| "set by hand".into())),
        lock: LockChange::None,
    };
    let moved = twins.set_status(&twin.id, change).await?;
    Ok(HttpResponse::Ok().json(moved))
}
