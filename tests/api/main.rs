//! The gateway over real HTTP: one test binary so it builds once (`cargo test --test api`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/postgres.rs"]
mod postgres_cluster;

mod adoption;
mod auth;
mod costs;
mod credentials;
mod dashboard;
mod database_helpers;
mod drift_schedule;
mod errors;
mod first_start;
mod fuzz;
mod health;
mod helpers;
mod isolation;
mod lifecycle;
mod openapi;
mod preview;
mod process_helpers;
mod resilience;
mod rollback;
mod run_helpers;
mod run_lists;
mod runs;
mod state_backend;
mod state_helpers;
mod status_machine;
mod store_races;
mod streams;
mod twins;
mod webhook_helpers;
mod webhooks;
mod websocket;
