//! `GET /openapi.json`: the API as an OpenAPI 3.1 document, generated from the handlers'
//! annotations and the types they take and answer. The route table (`super::routes`) stays
//! the one place routes are made; `tests/api/openapi.rs` proves the two agree both ways.
//!
//! Left out, because OpenAPI 3.1 cannot say them: the methods LOCK and UNLOCK of terraform's
//! http backend on `/twins/{id}/tfstate/lock` (OpenAPI has no custom methods; docs/state-backend.md
//! describes them). A WebSocket (`/runs/{id}/ws`) is described by its handshake.

mod events;
mod shapes;

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

pub use events::{RunEventFrame, RunEventMessage};
pub use shapes::*;

use super::auth::SESSION_COOKIE;
use super::error::{ApiError, ErrorBody};
use crate::domain::TwinId;

/// The document, as served.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "terrastream",
        description = "Runs terraform for digital twins and streams its output. docs/api.md is the \
            reference in prose; this document is generated from the gateway's own handlers and \
            types. Not described here, because OpenAPI 3.1 has no custom methods: `LOCK` and \
            `UNLOCK /twins/{id}/tfstate/lock`, the state lock of terraform's http backend \
            (docs/state-backend.md)."
    ),
    paths(
        super::dashboard::index,
        super::dashboard::asset,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        document,
        super::auth::login,
        super::auth::logout,
        super::auth::whoami,
        super::twins::list,
        super::twins::create,
        super::twins::get,
        super::twins::update,
        super::twins::delete,
        super::twins::bulk_delete,
        super::twins::restore,
        super::twins::history,
        super::twins::set_status,
        deploy_twin,
        destroy_twin,
        plan_twin,
        super::runs::cancel,
        super::runs::validate,
        super::runs::list_for_twin,
        super::state::state_view,
        super::state::versions,
        super::state::version_download,
        super::state::restore_version,
        super::state::force_unlock,
        super::state::outputs,
        super::state::infrastructure,
        super::state::refresh,
        super::costs::twin_costs,
        super::state::backend_get,
        super::state::backend_post,
        super::state::backend_delete,
        super::credentials::list,
        super::credentials::create,
        super::credentials::get,
        super::credentials::update,
        super::credentials::delete,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::templates::demo,
        super::providers::list,
        super::providers::get,
        super::runs::list_visible,
        super::runs::get,
        super::runs::events,
        super::ws::run_events,
        super::runs::logs,
        super::runs::cancel_run,
        super::audit::list,
    ),
    components(schemas(RunEventMessage, RunEventFrame, ErrorBody)),
    security(("bearer" = []), ("session" = [])),
    modifiers(&Conventions),
    tags(
        (name = "twins", description = "Twins: a named terraform configuration and its deployment status."),
        (name = "runs", description = "Deploys, destroys, plan previews and drift checks, and their events."),
        (name = "state", description = "The twins' terraform state as the gateway keeps it."),
        (name = "state-backend", description = "terraform's http backend (`backend \"http\"`), for the gateway's own runs and an admin's terraform CLI."),
        (name = "costs", description = "Monthly cost estimates from the price book."),
        (name = "credentials", description = "An owner's cloud credentials; values go in and never come out."),
        (name = "webhooks", description = "Signed deliveries of events (Standard Webhooks)."),
        (name = "catalog", description = "The provider catalog and ready-made configurations."),
        (name = "auth", description = "Sessions for browsers, and who is calling."),
        (name = "audit", description = "Who changed what, for admins."),
        (name = "health", description = "Probes and metrics; no credential."),
        (name = "meta", description = "This document."),
        (name = "dashboard", description = "The browser dashboard; no credential."),
    ),
)]
pub struct ApiDoc;

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    summary = "This document",
    security(()),
    responses((status = 200, description = "The API as OpenAPI 3.1.", body = serde_json::Value)),
)]
pub async fn document() -> Result<HttpResponse, ApiError> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    let json = DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));
    match json {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.clone())),
        Err(cause) => Err(ApiError::internal(cause)),
    }
}

// The three run routes share one handler (`runs::start_run`, the kind in the route's data);
// each gets its operation here.

/// The answers of deploy, destroy and plan: a stream with `Accept: text/event-stream`, else 202.
macro_rules! run_operation {
    ($name:ident, $path:literal, $summary:literal, $description:literal) => {
        #[utoipa::path(
            post,
            path = $path,
            operation_id = stringify!($name),
            tag = "runs",
            summary = $summary,
            description = $description,
            params(("id" = TwinId, Path, description = "The twin's id.")),
            request_body(content = Option<super::runs::StartRunRequest>, description = "None for an ordinary run; `{\"debug\": true}` (and `log_level`) for a debug run, whose terraform gets `TF_LOG`."),
            responses(
                (status = 200, description = "With `Accept: text/event-stream`: the run's event stream on this response (see `GET /runs/{id}/events`).",
                    body = RunEventFrame, content_type = "text/event-stream"),
                (status = 202, description = "Started.", body = RunAccepted,
                    headers(("Location" = String, description = "`/runs/{job_id}`"))),
                (status = 409, description = "Another run holds the twin's lock (`twin_locked`, with `active_job_id`), the status does not allow it (`invalid_transition`), or the twin is deleted (`twin_deleted`).", body = ErrorBody),
                (status = 422, description = "A credential of the twin has expired, or a bad `log_level` (or one with `\"debug\": false`).", body = ErrorBody),
                (status = 503, description = "The gateway is shutting down and starts no runs.", body = ErrorBody),
            ),
        )]
        #[allow(dead_code)] // Documents a route of `runs::start_run`.
        fn $name() {}
    };
}

run_operation!(
    deploy_twin,
    "/twins/{id}/deploy",
    "Deploy a twin",
    "`terraform init`, then one `apply -auto-approve -json` (or the kept plan preview while it still applies); success moves the twin to `deployed`, failure to `error`. The twin is locked while the run waits or works."
);
run_operation!(
    destroy_twin,
    "/twins/{id}/destroy",
    "Destroy a twin's resources",
    "`terraform init`, `destroy -json`, then the cleanup; success moves the twin to `draft`, failure to `destroy_failed`."
);
run_operation!(
    plan_twin,
    "/twins/{id}/plan",
    "Preview a deploy (plan)",
    "A plan preview: its result lists every resource change, and the next deploy applies exactly it while the configuration and state are unchanged. It neither moves nor locks the twin."
);

/// What every operation shares, added here once: the security schemes, and the error answers
/// that follow from an operation's shape (a credential: 401; a path parameter: 404; a query
/// or header parameter: 400; a body: 400 and 413; any: 500).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API token (tst_...) or HS256 JWT")
                    .description(Some(
                        "An API token (`<data-dir>/admin-token`, `terrastream token create`) or, with `--jwt-secret`, a JWT whose `sub` is the owner.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The session cookie from `POST /auth/login` (browsers: EventSource cannot send headers).",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "terraform's http backend: the password is a run's backend secret, or an API token (or JWT) for an admin's own terraform CLI.",
                    ))
                    .build(),
            ),
        );
        for (status, description) in ERRORS {
            components.responses.insert(
                status.name.to_owned(),
                RefOr::T(error_response(description)),
            );
        }
        let secured_by_default = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                add_error_answers(operation, secured_by_default);
            }
        }
    }
}

/// An error status every operation of some shape can answer.
struct Common {
    status: &'static str,
    name: &'static str,
}

const UNAUTHORIZED: Common = Common {
    status: "401",
    name: "Unauthorized",
};
const NOT_FOUND: Common = Common {
    status: "404",
    name: "NotFound",
};
const BAD_REQUEST: Common = Common {
    status: "400",
    name: "BadRequest",
};
const TOO_LARGE: Common = Common {
    status: "413",
    name: "PayloadTooLarge",
};
const INTERNAL: Common = Common {
    status: "500",
    name: "Internal",
};

const ERRORS: [(Common, &str); 5] = [
    (
        UNAUTHORIZED,
        "`unauthorized`: a missing, malformed or unknown credential (with `WWW-Authenticate: Bearer`).",
    ),
    (
        NOT_FOUND,
        "`not_found`: no such object, a malformed id, or another owner's.",
    ),
    (
        BAD_REQUEST,
        "`bad_request`: malformed JSON, wrong types, unknown fields, or a bad query or cursor.",
    ),
    (
        TOO_LARGE,
        "`payload_too_large`: a body over `--max-body-bytes`.",
    ),
    (
        INTERNAL,
        "`internal`: a fault of the gateway, never bad input; the cause is logged, not sent.",
    ),
];

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn add_error_answers(operation: &mut Operation, secured_by_default: bool) {
    // An operation's own `security` wins over the document's; `[{}]` is "no credential".
    let secured = match &operation.security {
        None => secured_by_default,
        Some(requirements) => requirements
            .iter()
            .any(|r| serde_json::to_value(r).is_ok_and(|v| v != serde_json::json!({}))),
    };
    let params_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| std::mem::discriminant(&p.parameter_in) == std::mem::discriminant(&place))
    };
    let mut common = Vec::new();
    if secured {
        common.push(UNAUTHORIZED);
    }
    if params_in(ParameterIn::Path) {
        common.push(NOT_FOUND);
    }
    if params_in(ParameterIn::Query)
        || params_in(ParameterIn::Header)
        || operation.request_body.is_some()
    {
        common.push(BAD_REQUEST);
    }
    if operation.request_body.is_some() {
        common.push(TOO_LARGE);
    }
    common.push(INTERNAL);
    let responses = &mut operation.responses.responses;
    for error in common {
        responses
            .entry(error.status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(error.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::ApiDoc;
    use utoipa::OpenApi;

    #[test]
    fn the_document_is_built() {
        let document = ApiDoc::openapi();
        assert!(document.paths.paths.contains_key("/twins/{id}/deploy"));
        assert!(document.to_json().is_ok());
    }
}
