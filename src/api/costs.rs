//! `GET /twins/{id}/costs`: the twin's monthly cost, estimated with the price book from its
//! plan preview while that still applies (with the change it makes), else from its state.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::error::ApiError;
use super::openapi::TwinCosts;
use super::twins::visible_twin;
use crate::costs::{self, PriceBook, ResourceUse};
use crate::domain::{Principal, RunId, TwinId};
use crate::runs::Supervisor;
use crate::state::StateService;
use crate::store::run_blocking;

/// The resources of the twin's current state, and that state's version number.
async fn state_resources(
    state: Arc<StateService>,
    twin_id: crate::domain::TwinId,
) -> Result<(Option<i64>, Vec<ResourceUse>), ApiError> {
    let span = tracing::Span::current();
    let current = tokio::task::spawn_blocking(move || span.in_scope(|| state.current(&twin_id)))
        .await
        .map_err(ApiError::internal)??;
    let Some((version, plain)) = current else {
        return Ok((None, Vec::new()));
    };
    let parsed: Value = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
    Ok((Some(version.version), costs::resources_from_state(&parsed)))
}

/// A plan preview's monthly cost once applied, and the change from the twin's state today.
pub(super) async fn plan_cost(
    state: Arc<StateService>,
    book: &PriceBook,
    twin: &crate::domain::Twin,
    resources_after: &[crate::domain::PlannedResource],
) -> Result<Value, ApiError> {
    let (_, current) = state_resources(state, twin.id.clone()).await?;
    let region = twin.variables.get("region").and_then(Value::as_str);
    let now = costs::estimate(book, &current, region);
    let after = costs::estimate(
        book,
        &costs::resources_from_planned(resources_after),
        region,
    );
    let change = costs::delta(&now, &after);
    Ok(json!({
        "monthly_total": after.costs.total,
        "currency": after.costs.currency,
        "delta": change,
    }))
}

#[utoipa::path(
    get,
    path = "/twins/{id}/costs",
    operation_id = "twin_costs",
    tag = "costs",
    summary = "A twin's monthly cost estimate",
    description = "From its plan preview while that still applies, else from its current state, with the price book (docs/costs.md).",
    params(("id" = TwinId, Path, description = "The twin's id.")),
    responses(
        (status = 200, description = "The estimate.", body = TwinCosts),
    ),
)]
pub async fn twin_costs(
    supervisor: web::Data<Supervisor>,
    state: web::Data<StateService>,
    book: web::Data<PriceBook>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = supervisor.store();
    let twin = visible_twin(supervisor.twins(), &principal, &path).await?;
    // A preview made from the twin's current files and variables, against its current
    // state, and not applied yet: what the next deploy will build.
    let plan: Option<(RunId, Vec<ResourceUse>)> = match supervisor.current_plan(&twin).await {
        Some((stored, _, _)) => {
            let run_id = stored.run_id.clone();
            let run = run_blocking(&store, move |s| s.get_run(&run_id)).await?;
            run.and_then(|r| r.result)
                .and_then(|result| result.resources_after)
                .map(|after| (stored.run_id, costs::resources_from_planned(&after)))
        }
        None => None,
    };
    let (version, current) = state_resources(state.into_inner(), twin.id.clone()).await?;
    // The twin's region (a template twin always has one) prices resources that name none.
    let region = twin.variables.get("region").and_then(Value::as_str);
    let now = costs::estimate(&book, &current, region);
    let (estimate, source, plan_run, change) = match plan {
        Some((run_id, planned)) => {
            let after = costs::estimate(&book, &planned, region);
            let change = costs::delta(&now, &after);
            (after, "plan", Some(run_id), Some(change))
        }
        None => (now, "state", None, None),
    };
    let mut body = serde_json::to_value(&estimate).map_err(ApiError::internal)?;
    body["twin_id"] = json!(twin.id);
    body["source"] = json!(source);
    body["plan_run_id"] = json!(plan_run);
    body["state_version"] = json!(version);
    body["region"] = json!(region);
    body["delta"] = json!(change);
    Ok(HttpResponse::Ok().json(body))
}
