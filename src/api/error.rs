//! The one place where errors become HTTP responses: `{"detail", "code", ...}` JSON with a
//! status code a client can act on. Internal causes are logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::{DeploymentStatus, IdError, Refusal, RunId, ValidationError};
use crate::store::StoreError;
use crate::twins::TwinError;

/// A request that conflicts with the twin's state or lock (or another stored state), with a
/// stable code and what a client needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub code: &'static str,
    pub detail: String,
    pub status: Option<DeploymentStatus>,
    pub active_job_id: Option<RunId>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Conflict {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            status: None,
            active_job_id: None,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Conflict(Conflict {
            code: refusal.code(),
            detail: refusal.to_string(),
            status: refusal.status(),
            active_job_id: refusal.active_job_id().cloned(),
        })
    }
}

impl From<TwinError> for ApiError {
    fn from(err: TwinError) -> Self {
        match err {
            TwinError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            TwinError::Refused(refusal) => refusal.into(),
            TwinError::Store(err) => err.into(),
            TwinError::State(err) => err.into(),
            TwinError::Vault(err) => err.into(),
            TwinError::Busy(_) => ApiError::Unavailable(err.to_string()),
        }
    }
}

impl From<crate::vault::VaultError> for ApiError {
    fn from(err: crate::vault::VaultError) -> Self {
        use crate::vault::VaultError as E;
        match err {
            E::Invalid(why) => ApiError::Unprocessable(why),
            E::NotFound(what) => ApiError::NotFound(what),
            in_use @ E::InUse { .. } => {
                ApiError::Conflict(Conflict::new("credential_in_use", in_use.to_string()))
            }
            expired @ E::Expired { .. } => ApiError::Unprocessable(expired.to_string()),
            E::Store(err) => err.into(),
            other @ (E::Cipher(_) | E::Corrupt(_)) => ApiError::internal(other),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(err: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError as E;
        match err {
            E::Invalid(why) => ApiError::Unprocessable(why),
            E::NotFound(what) => ApiError::NotFound(what),
            E::Store(err) => err.into(),
            E::Cipher(err) => ApiError::internal(err),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A sentence for people.
    detail: String,
    /// A stable code for programs: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `payload_too_large`, `unprocessable`, `unavailable`, `internal`, or for a 409 what
    /// it conflicts with (`invalid_transition`, `twin_locked`, `state_locked`, ...).
    #[schema(value_type = String, example = "not_found")]
    code: &'static str,
    /// For a conflict with a twin's state: the twin's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_status: Option<DeploymentStatus>,
    /// For a conflict with a run's lock: that run.
    #[serde(skip_serializing_if = "Option::is_none")]
    active_job_id: Option<RunId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The gateway is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(Conflict),
    /// The route exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Something broke on our side; the cause is logged, the client gets a generic sentence.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Conflict(conflict) => conflict.code,
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// The `detail` a client reads: an internal error's cause is logged, not answered.
    pub fn detail(&self) -> String {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "request failed");
                "the gateway hit an internal error; it has been logged".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let detail = self.detail();
        let (deployment_status, active_job_id) = match self {
            ApiError::Conflict(conflict) => (conflict.status, conflict.active_job_id.clone()),
            _ => (None, None),
        };
        let body = ErrorBody {
            detail,
            code: self.code(),
            deployment_status,
            active_job_id,
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(body)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::Unprocessable(err.0)
    }
}

impl From<IdError> for ApiError {
    fn from(err: IdError) -> Self {
        ApiError::NotFound(err.to_string())
    }
}

/// actix's own extractor errors (bad JSON, bad query, oversized bodies) in our JSON shape.
pub fn json_payload_error(
    err: actix_web::error::JsonPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge(
            format!("request body is larger than the limit of {limit} bytes"),
        ),
        E::ContentType => ApiError::BadRequest(
            "request body must be JSON (Content-Type: application/json)".into(),
        ),
        E::Deserialize(inner) if inner.is_data() => {
            ApiError::BadRequest(format!("request body does not fit: {inner}"))
        }
        E::Deserialize(inner) => {
            ApiError::BadRequest(format!("request body is not valid JSON: {inner}"))
        }
        other => ApiError::BadRequest(format!("could not read the request body: {other}")),
    };
    api.into()
}

pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("bad path: {err}")).into()
}

/// A route asked with a method it does not take: actix answers an empty 405 with `Allow`;
/// this gives it the JSON every error has, keeping the status and `Allow`.
pub fn method_not_allowed<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    let (req, res) = res.into_parts();
    let allow = res.headers().get(actix_web::http::header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let error = ApiError::MethodNotAllowed(format!(
        "{} {} is not a route; this path takes {allowed}",
        req.method(),
        req.path()
    ));
    let mut json = error.error_response();
    if let Some(allow) = allow {
        json.headers_mut()
            .insert(actix_web::http::header::ALLOW, allow);
    }
    Ok(actix_web::middleware::ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, json).map_into_right_body(),
    ))
}

/// Routes that do not exist, as JSON.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
