//! `GET /audit`: who changed what, for admins.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::audit::{AuditError, AuditLog};
use crate::domain::audit::AuditEntry;
use crate::domain::Principal;

/// A page, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; `null` on the last one.
    next_after: Option<i64>,
}

/// Entries per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The last entry id already read.
    after: Option<i64>,
    /// 1-1000, default 100.
    limit: Option<usize>,
}

impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::NotAdmin => ApiError::Forbidden(err.to_string()),
            AuditError::BadLimit => ApiError::Unprocessable(err.to_string()),
            AuditError::Store(err) => err.into(),
        }
    }
}

/// Oldest first; `after` the last id read pages on (`{"entries", "next_after"}`, the latter
/// `null` on the last page).
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "list_audit",
    tag = "audit",
    summary = "The audit log (admins)",
    description = "Who changed what through the API or the CLI, oldest first; `after` the last id read pages on.",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries.", body = AuditPage),
        (status = 403, description = "Not an admin.", body = super::error::ErrorBody),
        (status = 422, description = "`limit` outside 1-1000.", body = super::error::ErrorBody),
    ),
)]
pub async fn list(
    log: web::Data<AuditLog>,
    principal: Principal,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    let entries = log.page(&principal, query.after, limit).await?;
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_after,
    }))
}
