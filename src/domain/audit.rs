//! The audit log: who changed what through the API or the CLI, when, and why. Entries are
//! written by the services after the change they record; a purge keeps them.

use serde::Serialize;

/// What was done. The text is what `GET /audit` answers and what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    TwinCreated,
    TwinUpdated,
    TwinDeleted,
    TwinRestored,
    TwinPurged,
    /// A status set by hand (`POST /twins/{id}/status`).
    TwinStatusSet,
    RunStarted,
    RunCancelled,
    StateUnlocked,
    StateRestored,
    TokenCreated,
    CredentialCreated,
    CredentialUpdated,
    CredentialDeleted,
    WebhookCreated,
    WebhookDeleted,
}

impl AuditAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::TwinCreated => "twin.created",
            AuditAction::TwinUpdated => "twin.updated",
            AuditAction::TwinDeleted => "twin.deleted",
            AuditAction::TwinRestored => "twin.restored",
            AuditAction::TwinPurged => "twin.purged",
            AuditAction::TwinStatusSet => "twin.status_set",
            AuditAction::RunStarted => "run.started",
            AuditAction::RunCancelled => "run.cancelled",
            AuditAction::StateUnlocked => "state.unlocked",
            AuditAction::StateRestored => "state.restored",
            AuditAction::TokenCreated => "token.created",
            AuditAction::CredentialCreated => "credential.created",
            AuditAction::CredentialUpdated => "credential.updated",
            AuditAction::CredentialDeleted => "credential.deleted",
            AuditAction::WebhookCreated => "webhook.created",
            AuditAction::WebhookDeleted => "webhook.deleted",
        }
    }
}

/// An entry to append: the store numbers and dates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub actor: String,
    pub action: AuditAction,
    /// What it was done to: a twin, run, credential, webhook or token id (or owner).
    pub target: String,
    /// A short reason, where there is one; never a secret.
    pub reason: Option<String>,
}

impl NewAudit {
    pub fn new(actor: &str, action: AuditAction, target: impl ToString) -> Self {
        Self {
            actor: actor.to_owned(),
            action,
            target: target.to_string(),
            reason: None,
        }
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// An entry as stored and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    /// `twin.created`, `run.started`, `state.restored`, ... (docs/api.md lists them).
    #[schema(example = "twin.deleted")]
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
}
