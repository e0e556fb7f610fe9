//! `/providers`: the provider catalog (regions and sizes) a client offers when creating a twin.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::catalog::ProviderCatalog;
use crate::domain::Provider;

pub async fn list(catalog: web::Data<ProviderCatalog>) -> HttpResponse {
    HttpResponse::Ok().json(catalog.providers())
}

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
