//! `/credentials`: an owner's cloud credentials. Values go in (POST, PUT) and never come out:
//! answers show the variable names only.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::openapi::{CredentialView, Deleted};
use crate::domain::{Credential, CredentialEnv, CredentialId, CredentialName, Principal, Provider};
use crate::vault::{parse_expiry, CredentialChange, CredentialInput, Vault, VaultError};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "aws dev",
    "provider": "aws",
    "env": {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret"},
    "expires_at": "2027-01-31T00:00:00Z"
}))]
pub struct CreateCredentialRequest {
    /// 1-100 characters.
    name: String,
    #[schema(value_type = Provider)]
    provider: String,
    /// 1-100 variables, names `[A-Za-z_][A-Za-z0-9_]*`, values strings (no NUL, at most
    /// 64 KiB); the names the gateway sets for every run are refused.
    env: BTreeMap<String, String>,
    /// An RFC 3339 time; a run of a twin naming an expired credential is refused.
    expires_at: Option<String>,
    /// A one-time credential: deleted when the first deploy or destroy using it ends.
    #[serde(default)]
    delete_after_run: bool,
}

/// `expires_at: null` clears the expiry; leaving it out keeps it.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Any of the fields; `env` replaces all the variables.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialRequest {
    name: Option<String>,
    #[schema(value_type = Option<Provider>)]
    provider: Option<String>,
    env: Option<BTreeMap<String, String>>,
    /// `null` clears the expiry; left out, it is kept.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    delete_after_run: Option<bool>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Detach it from the live twins that name it instead of refusing (409).
    #[serde(default)]
    force: bool,
}

/// A credential as answers show it: never its values.
fn view(credential: &Credential) -> serde_json::Value {
    let mut shown = json!(credential);
    shown["expired"] = json!(credential.is_expired(chrono::Utc::now()));
    shown
}

fn parse_id(raw: &str) -> Result<CredentialId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "credential '{}' not found",
            raw.chars().take(80).collect::<String>()
        ))
    })
}

/// Runs vault work (the store and AES) off the async runtime.
async fn blocking<T, F>(vault: web::Data<Vault>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Vault) -> Result<T, VaultError> + Send + 'static,
{
    let vault: Arc<Vault> = vault.into_inner();
    crate::store::blocking(move || work(&vault))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

#[utoipa::path(
    post,
    path = "/credentials",
    operation_id = "create_credential",
    tag = "credentials",
    summary = "Store a credential",
    description = "A named set of environment variables the runs of the twins naming it get. Values go in and never come out.",
    request_body = CreateCredentialRequest,
    responses(
        (status = 201, description = "The credential, without its values.", body = CredentialView, headers(("Location" = String, description = "`/credentials/{id}`"))),
        (status = 422, description = "A bad name, provider, variable name or value, or expiry.", body = ErrorBody),
    ),
)]
pub async fn create(
    vault: web::Data<Vault>,
    principal: Principal,
    body: web::Json<CreateCredentialRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let input = CredentialInput {
        name: CredentialName::parse(&body.name)?,
        provider: body.provider.parse::<Provider>()?,
        env: CredentialEnv::new(body.env)?,
        expires_at: body.expires_at.as_deref().map(parse_expiry).transpose()?,
        delete_after_run: body.delete_after_run,
    };
    let credential = blocking(vault, move |v| v.create_credential(&principal, input)).await?;
    tracing::info!(credential_id = %credential.id, owner = %credential.owner, "credential created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/credentials/{}", credential.id)))
        .json(view(&credential)))
}

#[utoipa::path(
    get,
    path = "/credentials",
    operation_id = "list_credentials",
    tag = "credentials",
    summary = "List credentials",
    description = "The caller's (an admin's: everyone's), oldest first.",
    responses(
        (status = 200, description = "The credentials.", body = Vec<CredentialView>),
    ),
)]
pub async fn list(vault: web::Data<Vault>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let credentials = blocking(vault, move |v| v.list_credentials(&principal)).await?;
    Ok(HttpResponse::Ok().json(credentials.iter().map(view).collect::<Vec<_>>()))
}

#[utoipa::path(
    get,
    path = "/credentials/{id}",
    operation_id = "get_credential",
    tag = "credentials",
    summary = "Get a credential",
    params(("id" = CredentialId, Path, description = "The credential's id.")),
    responses(
        (status = 200, description = "The credential, without its values.", body = CredentialView),
    ),
)]
pub async fn get(
    vault: web::Data<Vault>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let credential = blocking(vault, move |v| v.credential(&principal, &id)).await?;
    Ok(HttpResponse::Ok().json(view(&credential)))
}

#[utoipa::path(
    put,
    path = "/credentials/{id}",
    operation_id = "update_credential",
    tag = "credentials",
    summary = "Change a credential",
    params(("id" = CredentialId, Path, description = "The credential's id.")),
    request_body = UpdateCredentialRequest,
    responses(
        (status = 200, description = "The changed credential.", body = CredentialView),
        (status = 422, description = "A bad name, provider, variable name or value, or expiry.", body = ErrorBody),
    ),
)]
pub async fn update(
    vault: web::Data<Vault>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<UpdateCredentialRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let body = body.into_inner();
    let change = CredentialChange {
        name: body
            .name
            .as_deref()
            .map(CredentialName::parse)
            .transpose()?,
        provider: body
            .provider
            .as_deref()
            .map(str::parse::<Provider>)
            .transpose()?,
        env: body.env.map(CredentialEnv::new).transpose()?,
        expires_at: body
            .expires_at
            .map(|at| at.as_deref().map(parse_expiry).transpose())
            .transpose()?,
        delete_after_run: body.delete_after_run,
    };
    let credential = blocking(vault, move |v| v.update_credential(&principal, &id, change)).await?;
    Ok(HttpResponse::Ok().json(view(&credential)))
}

#[utoipa::path(
    delete,
    path = "/credentials/{id}",
    operation_id = "delete_credential",
    tag = "credentials",
    summary = "Delete a credential",
    params(("id" = CredentialId, Path, description = "The credential's id."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted.", body = Deleted),
        (status = 409, description = "`credential_in_use`: live twins name it (unless `force`).", body = ErrorBody),
    ),
)]
pub async fn delete(
    vault: web::Data<Vault>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let force = query.force;
    let deleted = id.clone();
    blocking(vault, move |v| v.delete_credential(&principal, &id, force)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": true, "id": deleted })))
}
