//! The HTTP face: one route table, handlers per area, errors mapped in one place.

mod audit;
pub mod auth;
mod costs;
mod credentials;
mod dashboard;
pub mod error;
mod health;
mod openapi;
mod providers;
mod runs;
pub mod sse;
mod state;
mod templates;
mod twins;
mod webhooks;
mod ws;

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::web;

use crate::domain::RunKind;

/// Largest state terraform may POST (states grow with the infrastructure).
const STATE_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The LOCK and UNLOCK methods terraform's http backend uses.
#[allow(clippy::expect_used)] // A constant, valid method token: checked by every test run.
fn backend_method(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("LOCK and UNLOCK are valid method names")
}

/// A route that starts a run of `kind`.
fn run_route(path: &str, kind: RunKind) -> actix_web::Resource {
    web::resource(path)
        .app_data(web::Data::new(kind))
        .route(web::post().to(runs::start_run))
}

/// Every route the gateway serves.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::index))
        .route("/ui/{file}", web::get().to(dashboard::asset))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/openapi.json", web::get().to(openapi::document))
        .service(
            web::scope("/auth")
                .route("/login", web::post().to(auth::login))
                .route("/logout", web::post().to(auth::logout))
                .service(
                    web::resource("/whoami")
                        .wrap(from_fn(auth::require_principal))
                        .route(web::get().to(auth::whoami)),
                ),
        )
        .service(
            web::scope("/twins")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(twins::list))
                .route("", web::post().to(twins::create))
                .route("/bulk-delete", web::post().to(twins::bulk_delete))
                .route("/{id}", web::get().to(twins::get))
                .route("/{id}", web::put().to(twins::update))
                .route("/{id}", web::delete().to(twins::delete))
                .route("/{id}/restore", web::post().to(twins::restore))
                .route("/{id}/history", web::get().to(twins::history))
                .route("/{id}/status", web::post().to(twins::set_status))
                .service(run_route("/{id}/deploy", RunKind::Deploy))
                .service(run_route("/{id}/destroy", RunKind::Destroy))
                .route("/{id}/cancel", web::post().to(runs::cancel))
                .service(run_route("/{id}/plan", RunKind::Plan))
                .route("/{id}/validate", web::post().to(runs::validate))
                .route("/{id}/runs", web::get().to(runs::list_for_twin))
                .route("/{id}/state", web::get().to(state::state_view))
                .route("/{id}/state/versions", web::get().to(state::versions))
                .route(
                    "/{id}/state/versions/{version}",
                    web::get().to(state::version_download),
                )
                .route(
                    "/{id}/state/versions/{version}/restore",
                    web::post().to(state::restore_version),
                )
                .route("/{id}/state/unlock", web::post().to(state::force_unlock))
                .route("/{id}/outputs", web::get().to(state::outputs))
                .route(
                    "/{id}/infrastructure-status",
                    web::get().to(state::infrastructure),
                )
                .route("/{id}/refresh", web::post().to(state::refresh))
                .route("/{id}/costs", web::get().to(costs::twin_costs))
                .service(
                    web::resource("/{id}/tfstate")
                        .app_data(web::PayloadConfig::new(STATE_BODY_LIMIT))
                        .route(web::get().to(state::backend_get))
                        .route(web::post().to(state::backend_post))
                        .route(web::delete().to(state::backend_delete)),
                )
                .service(
                    web::resource("/{id}/tfstate/lock")
                        .app_data(web::PayloadConfig::new(STATE_BODY_LIMIT))
                        .route(web::method(backend_method("LOCK")).to(state::backend_lock))
                        .route(web::method(backend_method("UNLOCK")).to(state::backend_unlock)),
                ),
        )
        .service(
            web::scope("/audit")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(audit::list)),
        )
        .service(
            web::scope("/credentials")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(credentials::list))
                .route("", web::post().to(credentials::create))
                .route("/{id}", web::get().to(credentials::get))
                .route("/{id}", web::put().to(credentials::update))
                .route("/{id}", web::delete().to(credentials::delete)),
        )
        .service(
            web::scope("/webhooks")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(webhooks::list))
                .route("", web::post().to(webhooks::create))
                .route("/{id}", web::delete().to(webhooks::delete))
                .route("/{id}/deliveries", web::get().to(webhooks::deliveries)),
        )
        .service(
            web::scope("/templates")
                .wrap(from_fn(auth::require_principal))
                .route("/demo", web::get().to(templates::demo)),
        )
        .service(
            web::scope("/providers")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(providers::list))
                .route("/{id}", web::get().to(providers::get)),
        )
        .service(
            web::scope("/runs")
                .wrap(from_fn(auth::require_principal))
                .route("", web::get().to(runs::list_visible))
                .route("/{id}", web::get().to(runs::get))
                .route("/{id}/events", web::get().to(runs::events))
                .route("/{id}/ws", web::get().to(ws::run_events))
                .route("/{id}/logs", web::get().to(runs::logs))
                .route("/{id}/cancel", web::post().to(runs::cancel_run)),
        );
}
