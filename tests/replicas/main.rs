//! Several gateways on one PostgreSQL database, behind nginx (`cargo test --test replicas`):
//! real `terrastream serve` processes, a throwaway PostgreSQL and nginx started by the tests,
//! real terraform against the sandbox provider, real SSE clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/postgres.rs"]
mod postgres_cluster;

// The API suite's helpers, shared; not every one of them is used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/process_helpers.rs"]
mod process_helpers;
#[allow(dead_code)]
#[path = "../api/run_helpers.rs"]
mod run_helpers;

mod cluster;
mod nginx;
mod scenarios;
