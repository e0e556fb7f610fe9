use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use crate::store::{run_blocking, Store};

/// `GET /healthz`: the process answers and its database is reachable.
pub async fn healthz(store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    run_blocking(&store.into_inner(), |s| s.ping()).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok" })))
}
