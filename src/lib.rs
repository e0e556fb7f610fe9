//! terrastream: the gateway that runs terraform for digital twins and streams every line it
//! prints to the dashboard.
//!
//! Floors, each using only those below it: [`app`] (startup, shutdown) -> [`api`] (HTTP) ->
//! [`runs`] (terraform processes) -> [`hub`] (event sequence, storage, fan-out) and
//! [`state`] (terraform's state backend, encrypted), [`twins`] (the one way to change a
//! twin) and [`webhooks`] (signed deliveries from an outbox) -> [`vault`] (credentials and
//! sensitive variables, sealed) -> [`store`] (persistence) ->
//! [`domain`] (twins, runs and the status machine). Beside them: [`costs`] and [`catalog`]
//! (price book and provider catalog data), [`metrics`], and the sandbox provider in its own
//! crate (`sandbox-provider/`).

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod costs;
pub mod demo;
pub mod domain;
pub mod hub;
pub mod metrics;
pub mod runs;
pub mod state;
pub mod store;
pub mod twins;
pub mod vault;
pub mod webhooks;
