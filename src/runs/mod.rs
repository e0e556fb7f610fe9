//! Runs: terraform as child processes, walked through their stages, streamed into the hub.

mod plan;
mod process;
pub mod secrets;
mod sink;
mod supervisor;
pub mod tfjson;
pub mod toolchain;
pub mod validate;
mod workspace;

pub use process::{decode_line, Exit, LineSink, ProcessSpec, RunningProcess, MAX_LINE_BYTES};
pub use supervisor::{RunError, Supervisor, SupervisorParts, INTERRUPTED_BY_RESTART};
pub use toolchain::{Toolchain, ToolchainError};
pub use workspace::{preview_dir, sandbox_dir, work_dir, ERRORED_STATE};
