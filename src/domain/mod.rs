//! The domain: twins, their names and files, the deployment status machine, and who is asking.
//! Nothing here knows about HTTP or SQL.

pub mod audit;
mod changes;
mod credential;
pub mod events;
mod ids;
mod names;
mod principal;
mod run;
mod status;
mod twin;

pub use changes::{LockChange, NewHistory, Refusal, StatusMove, TwinChange, TwinEnd};
pub use credential::{Credential, CredentialEnv, CredentialName};
pub use ids::{CredentialId, DeliveryId, IdError, MessageId, ReplicaId, RunId, TwinId, WebhookId};
pub use names::{FilePath, TwinName};
pub use principal::{Principal, RunGrant};
pub use run::{
    ChangeSummary, LogLevel, LogStream, MonitorId, Outcome, PlannedResource, ResourceChange, Run,
    RunEvent, RunKind, RunResult, RunStatus, RunStep, Stage,
};
pub use status::{DeploymentStatus, ALLOWED_MOVES};
pub use twin::{
    HistoryEntry, NewTwin, Provider, SealedVariables, Twin, TwinFiles, TwinUpdate, VariableInput,
    Variables,
};

/// What a secret or sensitive value is shown as, wherever it is shown.
pub const MASK: &str = "********";

/// Input that is well-formed but breaks a rule of the domain (a 422 at the HTTP face).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
