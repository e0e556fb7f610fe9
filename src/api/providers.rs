//! `/providers`: the provider catalog (regions and sizes) a client offers when creating a twin.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};
use crate::catalog::{ProviderCatalog, ProviderEntry};
use crate::domain::Provider;

#[utoipa::path(
    get,
    path = "/providers",
    operation_id = "list_providers",
    tag = "catalog",
    summary = "The provider catalog",
    description = "Every provider with its regions and sizes, in the catalog's order.",
    responses(
        (status = 200, description = "The providers.", body = Vec<ProviderEntry>),
    ),
)]
pub async fn list(catalog: web::Data<ProviderCatalog>) -> HttpResponse {
    HttpResponse::Ok().json(catalog.providers())
}

#[utoipa::path(
    get,
    path = "/providers/{id}",
    operation_id = "get_provider",
    tag = "catalog",
    summary = "One provider of the catalog",
    params(("id" = Provider, Path, description = "`aws`, `azure`, `gcp` or `sandbox`.")),
    responses(
        (status = 200, description = "The provider.", body = ProviderEntry),
        (status = 404, description = "The catalog does not list it.", body = ErrorBody),
    ),
)]
pub async fn get(
    catalog: web::Data<ProviderCatalog>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let shown = || path.chars().take(40).collect::<String>();
    path.parse::<Provider>()
        .ok()
        .and_then(|id| catalog.provider(id))
        .map(|entry| HttpResponse::Ok().json(entry))
        .ok_or_else(|| ApiError::NotFound(format!("provider '{}' not found", shown())))
}
