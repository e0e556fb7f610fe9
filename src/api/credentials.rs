//! `/credentials`: an owner's cloud credentials. Values go in (POST, PUT) and never come out:
//! answers show the variable names only.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::error::ApiError;
use crate::domain::{Credential, CredentialEnv, CredentialId, CredentialName, Principal, Provider};
use crate::vault::{parse_expiry, CredentialChange, CredentialInput, Vault, VaultError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCredentialRequest {
    name: String,
    provider: String,
    env: BTreeMap<String, String>,
    expires_at: Option<String>,
    #[serde(default)]
    delete_after_run: bool,
}

/// `expires_at: null` clears the expiry; leaving it out keeps it.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialRequest {
    name: Option<String>,
    provider: Option<String>,
    env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    delete_after_run: Option<bool>,
}

#[derive(Deserialize)]
pub struct DeleteQuery {
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

pub async fn list(vault: web::Data<Vault>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let credentials = blocking(vault, move |v| v.list_credentials(&principal)).await?;
    Ok(HttpResponse::Ok().json(credentials.iter().map(view).collect::<Vec<_>>()))
}

pub async fn get(
    vault: web::Data<Vault>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let credential = blocking(vault, move |v| v.credential(&principal, &id)).await?;
    Ok(HttpResponse::Ok().json(view(&credential)))
}

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
