//! The HTTP face: one route table, handlers per area, errors mapped in one place.

pub mod auth;
pub mod error;
mod health;
mod runs;
pub mod sse;
mod twins;

use actix_web::middleware::from_fn;
use actix_web::web;

/// Every route the gateway serves.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
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
                .route("/{id}", web::get().to(twins::get))
                .route("/{id}", web::put().to(twins::update))
                .route("/{id}", web::delete().to(twins::delete))
                .route("/{id}/restore", web::post().to(twins::restore))
                .route("/{id}/history", web::get().to(twins::history))
                .route("/{id}/status", web::post().to(twins::set_status))
                .route("/{id}/deploy", web::post().to(runs::deploy))
                .route("/{id}/destroy", web::post().to(runs::destroy))
                .route("/{id}/cancel", web::post().to(runs::cancel))
                .route("/{id}/runs", web::get().to(runs::list_for_twin)),
        )
        .service(
            web::scope("/runs")
                .wrap(from_fn(auth::require_principal))
                .route("/{id}", web::get().to(runs::get))
                .route("/{id}/events", web::get().to(runs::events))
                .route("/{id}/logs", web::get().to(runs::logs)),
        );
}
