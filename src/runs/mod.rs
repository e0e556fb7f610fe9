//! Runs: terraform as child processes, walked through their stages, streamed into the hub.

mod background;
pub mod drift;
pub mod isolation;
mod lockfile;
pub mod monitor;
mod plan;
mod process;
pub mod retention;
pub mod secrets;
pub(crate) mod sink;
mod supervisor;
pub mod tfjson;
pub mod toolchain;
pub mod validate;
mod workspace;

pub use background::Background;
pub use drift::DriftScheduler;
pub use isolation::{Isolation, IsolationMode};
pub use retention::{RetentionPolicy, RetentionSweep};
pub use supervisor::{Cancelling, RecoveryReport, RunError, Supervisor, SupervisorParts};
pub use toolchain::{Toolchain, ToolchainError};
