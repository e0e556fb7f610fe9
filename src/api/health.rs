//! Probes and metrics: no credentials needed, nothing secret in them.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::openapi::{Health, Readiness};
use crate::metrics::Metrics;
use crate::runs::Supervisor;
use crate::store::{run_blocking, Store};

/// `GET /healthz`: the process answers and its database is reachable.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness",
    description = "The process answers and its database is reachable.",
    security(()),
    responses(
        (status = 200, description = "Alive.", body = Health),
    ),
)]
pub async fn healthz(store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    run_blocking(&store.into_inner(), |s| s.ping()).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok" })))
}

/// `GET /readyz`: ready to take runs: the database answers, the event writer is storing,
/// and the gateway is not shutting down. 503 with the reasons otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness",
    description = "Ready to take runs: the database answers, the event writer is storing, the runs a previous start left are taken over, and the gateway is not shutting down.",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready, and why.", body = Readiness),
    ),
)]
pub async fn readyz(
    store: web::Data<dyn Store>,
    supervisor: web::Data<Supervisor>,
) -> HttpResponse {
    let mut problems = Vec::new();
    if let Err(err) = run_blocking(&store.into_inner(), |s| s.ping()).await {
        problems.push(format!("database: {err}"));
    }
    if !supervisor.hub().is_healthy() {
        problems.push("event store: writes are failing (disk full?); retrying".to_owned());
    }
    if !supervisor.is_accepting() {
        problems.push("shutting down".to_owned());
    }
    if !supervisor.is_recovered() {
        problems.push("still taking over the runs a previous start left".to_owned());
    }
    let isolation = supervisor.isolation().mode().as_str();
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "run_isolation": isolation }))
    } else {
        HttpResponse::ServiceUnavailable().json(
            json!({ "status": "not_ready", "problems": problems, "run_isolation": isolation }),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics",
    security(()),
    responses(
        (status = 200, description = "The metrics in Prometheus' text format.", body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics(
    metrics: web::Data<Metrics>,
    supervisor: web::Data<Supervisor>,
) -> HttpResponse {
    // Runs this gateway works on; runs waiting in the queue for any gateway's slot.
    let active = supervisor.active_runs();
    let pending = supervisor.queued_runs().await.unwrap_or_default();
    metrics
        .runs_active
        .set(i64::try_from(active).unwrap_or(i64::MAX));
    metrics
        .runs_pending
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}
