//! `/webhooks`: endpoints that get signed deliveries of the caller's twins' events (an
//! admin's: everyone's), and each delivery's attempts.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::openapi::{CreatedWebhook, Deleted, Delivery, Webhook};
use crate::config::Settings;
use crate::domain::events::EventType;
use crate::domain::{Principal, WebhookId};
use crate::store::{DeliveryRecord, StoredWebhook};
use crate::webhooks::{check_url, parse_input, WebhookError, WebhookService};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/terrastream", "events": ["run.finished"]}))]
pub struct CreateWebhookRequest {
    /// `http` or `https`, no user name or password; loopback and private addresses only with
    /// `--webhook-allow-private`.
    #[schema(format = "uri")]
    url: String,
    /// The events it gets; all of them when left out.
    #[schema(value_type = Option<Vec<EventType>>)]
    events: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

const DEFAULT_DELIVERIES: usize = 100;
const MAX_DELIVERIES: usize = 1000;

fn view(hook: &StoredWebhook) -> serde_json::Value {
    let events: Vec<&str> = if hook.events.is_empty() {
        EventType::ALL.iter().map(|e| e.as_str()).collect()
    } else {
        hook.events.iter().map(|e| e.as_str()).collect()
    };
    json!({
        "id": hook.id,
        "owner": hook.owner,
        "url": hook.url,
        "events": events,
        "description": hook.description,
        "created_at": hook.created_at,
    })
}

fn delivery_view(delivery: &DeliveryRecord) -> serde_json::Value {
    json!({
        "id": delivery.id,
        "message_id": delivery.message_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "next_attempt_at": delivery.next_attempt_at,
        "created_at": delivery.created_at,
        "attempts": delivery.attempts.iter().map(|a| json!({
            "attempt": a.number,
            "at": a.attempted_at,
            "status_code": a.status_code,
            "error": a.error,
            "duration_ms": a.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

fn parse_id(raw: &str) -> Result<WebhookId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "webhook '{}' not found",
            raw.chars().take(80).collect::<String>()
        ))
    })
}

async fn blocking<T, F>(hooks: web::Data<WebhookService>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&WebhookService) -> Result<T, WebhookError> + Send + 'static,
{
    let hooks: Arc<WebhookService> = hooks.into_inner();
    crate::store::blocking(move || work(&hooks))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// `POST /webhooks`: 201 with the signing secret, shown this once.
#[utoipa::path(
    post,
    path = "/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    summary = "Add a webhook endpoint",
    description = "Signed deliveries (Standard Webhooks) of the caller's twins' events (an admin's: every twin's).",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "The webhook and its signing secret, shown this once.", body = CreatedWebhook, headers(("Location" = String, description = "`/webhooks/{id}`"))),
        (status = 422, description = "A bad URL (or one of a private address), or an unknown event.", body = ErrorBody),
    ),
)]
pub async fn create(
    hooks: web::Data<WebhookService>,
    settings: web::Data<Settings>,
    principal: Principal,
    body: web::Json<CreateWebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = check_url(&body.url, settings.webhook_allow_private).await?;
    let input = parse_input(url, body.events, body.description)?;
    let (hook, secret) = blocking(hooks, move |h| h.create(&principal, input)).await?;
    tracing::info!(webhook_id = %hook.id, owner = %hook.owner, "webhook created");
    let mut shown = view(&hook);
    shown["secret"] = json!(secret);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/webhooks/{}", hook.id)))
        .json(shown))
}

#[utoipa::path(
    get,
    path = "/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    summary = "List webhooks",
    description = "The caller's (an admin's: everyone's), without secrets.",
    responses(
        (status = 200, description = "The webhooks.", body = Vec<Webhook>),
    ),
)]
pub async fn list(
    hooks: web::Data<WebhookService>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let list = blocking(hooks, move |h| h.list(&principal)).await?;
    Ok(HttpResponse::Ok().json(list.iter().map(view).collect::<Vec<_>>()))
}

#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    summary = "Delete a webhook",
    description = "Nothing more is sent to it, and its deliveries are removed.",
    params(("id" = WebhookId, Path, description = "The webhook's id.")),
    responses(
        (status = 200, description = "Deleted.", body = Deleted),
    ),
)]
pub async fn delete(
    hooks: web::Data<WebhookService>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let deleted = id.clone();
    blocking(hooks, move |h| h.delete(&principal, &id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": true, "id": deleted })))
}

/// `GET /webhooks/{id}/deliveries?limit=N`: newest first, each with every attempt.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    operation_id = "webhook_deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries",
    description = "Newest first, each with every attempt.",
    params(("id" = WebhookId, Path, description = "The webhook's id."), DeliveriesQuery),
    responses(
        (status = 200, description = "The deliveries.", body = Vec<Delivery>),
    ),
)]
pub async fn deliveries(
    hooks: web::Data<WebhookService>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let limit = query.limit.unwrap_or(DEFAULT_DELIVERIES);
    if !(1..=MAX_DELIVERIES).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1-{MAX_DELIVERIES}"
        )));
    }
    let list = blocking(hooks, move |h| h.deliveries(&principal, &id, limit)).await?;
    Ok(HttpResponse::Ok().json(list.iter().map(delivery_view).collect::<Vec<_>>()))
}
