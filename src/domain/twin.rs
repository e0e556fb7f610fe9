//! A twin: a named terraform configuration owned by someone, with its deployment status.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{DeploymentStatus, FilePath, RunId, TwinId, TwinName, ValidationError};

/// The cloud a twin's configuration targets. `sandbox` is the local provider that needs no
/// cloud account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Azure,
    Gcp,
    #[default]
    Sandbox,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Aws,
        Provider::Azure,
        Provider::Gcp,
        Provider::Sandbox,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
            Provider::Sandbox => "sandbox",
        }
    }
}

impl FromStr for Provider {
    type Err = ValidationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let lowered = value.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == lowered)
            .ok_or_else(|| {
                let shown: String = value.chars().take(40).collect();
                ValidationError::new(format!(
                    "unknown provider '{shown}' (one of: aws, azure, gcp, sandbox)"
                ))
            })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The terraform files of a twin, by path. At least one must be configuration (`.tf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<FilePath, String>",
    into = "BTreeMap<FilePath, String>"
)]
pub struct TwinFiles(BTreeMap<FilePath, String>);

impl TwinFiles {
    pub const MAX_FILES: usize = 200;

    pub fn new(files: BTreeMap<FilePath, String>) -> Result<Self, ValidationError> {
        if files.len() > Self::MAX_FILES {
            return Err(ValidationError::new(format!(
                "a twin may have at most {} files",
                Self::MAX_FILES
            )));
        }
        if !files.keys().any(FilePath::is_configuration) {
            return Err(ValidationError::new(
                "files must contain at least one terraform configuration file (*.tf or *.tf.json)",
            ));
        }
        Ok(Self(files))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FilePath, &String)> {
        self.0.iter()
    }
}

impl TryFrom<BTreeMap<FilePath, String>> for TwinFiles {
    type Error = ValidationError;
    fn try_from(files: BTreeMap<FilePath, String>) -> Result<Self, Self::Error> {
        Self::new(files)
    }
}

impl From<TwinFiles> for BTreeMap<FilePath, String> {
    fn from(files: TwinFiles) -> Self {
        files.0
    }
}

/// Terraform input variables: names to JSON values.
pub type Variables = BTreeMap<String, serde_json::Value>;

/// What a caller gives to create a twin, already validated.
#[derive(Debug, Clone)]
pub struct NewTwin {
    pub id: TwinId,
    pub owner: String,
    pub name: TwinName,
    pub provider: Provider,
    pub files: TwinFiles,
    pub variables: Variables,
}

/// A change to a twin's configuration; `None` keeps what is there.
#[derive(Debug, Clone, Default)]
pub struct TwinUpdate {
    pub name: Option<TwinName>,
    pub files: Option<TwinFiles>,
    pub variables: Option<Variables>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Twin {
    pub id: TwinId,
    pub owner: String,
    pub name: TwinName,
    pub provider: Provider,
    pub deployment_status: DeploymentStatus,
    pub is_locked: bool,
    /// The run holding the lock, while `is_locked`.
    pub active_job_id: Option<RunId>,
    pub last_deployed_at: Option<String>,
    pub terraform_outputs: Option<serde_json::Value>,
    pub files: TwinFiles,
    pub variables: Variables,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// Bumped by every change: a change decided from this twin is written only while the twin
    /// is still at this version.
    #[serde(skip)]
    pub version: i64,
}

impl Twin {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// One recorded change to a twin: a status move, or a lifecycle event such as a soft delete.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub twin_id: TwinId,
    /// `status_changed`, `created`, `updated`, `deleted`, `restored`, ...
    pub action: String,
    pub from_status: Option<DeploymentStatus>,
    pub to_status: Option<DeploymentStatus>,
    pub actor: String,
    pub reason: Option<String>,
    pub run_id: Option<RunId>,
    pub at: String,
}
