//! A terraform provider (`terrastream.local/terrastream/sandbox`) whose resources are JSON files
//! in a local directory: enough of a cloud to deploy, break and destroy digital twins without one.

mod diagnostics;
pub mod naming;
pub mod provider;
pub mod resource;
pub mod store;

pub use provider::{SandboxProvider, SANDBOX_DIR_ENV};
pub use store::{ObjectId, ObjectStatus, SandboxObject, Store, StoreError};

/// Name under which terraform knows the provider; resource types are `sandbox_<name>`.
pub const PROVIDER_NAME: &str = "sandbox";
