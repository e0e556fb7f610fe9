//! `/templates`: ready-made twin configurations a client can offer when creating a twin.

use actix_web::HttpResponse;
use serde_json::json;

use super::error::ApiError;
use super::openapi::DemoTemplate;
use crate::domain::Provider;

/// `GET /templates/demo`: the demo twin's files, a body `POST /twins` accepts as it is.
#[utoipa::path(
    get,
    path = "/templates/demo",
    operation_id = "demo_template",
    tag = "catalog",
    summary = "The demo twin",
    description = "The sandbox configuration a first start creates, as a body `POST /twins` takes unchanged.",
    responses(
        (status = 200, description = "The demo twin's body.", body = DemoTemplate),
    ),
)]
pub async fn demo() -> Result<HttpResponse, ApiError> {
    let files = crate::demo::files().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({
        "name": crate::demo::NAME,
        "provider": Provider::Sandbox,
        "files": files,
        "variables": {},
    })))
}
