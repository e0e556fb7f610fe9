//! A twin: a named terraform configuration owned by someone, with its deployment status.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    CredentialId, DeploymentStatus, FilePath, RunId, TwinId, TwinName, ValidationError, MASK,
};

/// The cloud a twin's configuration targets. `sandbox` is the local provider that needs no
/// cloud account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A variable's value as a caller gives it: plain, or marked sensitive with
/// `{"value": ..., "sensitive": true}`.
#[derive(Debug, Clone, PartialEq)]
pub enum VariableInput {
    Plain(serde_json::Value),
    Sensitive(serde_json::Value),
}

impl VariableInput {
    /// An object of exactly `value` and a boolean `sensitive` is the marked form (with
    /// `false`, a plain value); anything else is a plain value.
    pub fn from_json(value: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = &value {
            if map.len() == 2 && map.contains_key("value") {
                if let Some(sensitive) = map.get("sensitive").and_then(serde_json::Value::as_bool) {
                    let inner = map.get("value").cloned().unwrap_or_default();
                    return if sensitive {
                        VariableInput::Sensitive(inner)
                    } else {
                        VariableInput::Plain(inner)
                    };
                }
            }
        }
        VariableInput::Plain(value)
    }

    /// The mask an answer showed for a sensitive variable, sent back unchanged (a client
    /// that edits the other variables): "keep the stored value".
    pub fn is_mask(&self) -> bool {
        let value = match self {
            VariableInput::Plain(value) | VariableInput::Sensitive(value) => value,
        };
        value.as_str() == Some(MASK)
    }
}

/// A twin's sensitive variables as kept: their names in clear (answers show them masked),
/// their values sealed (only the vault opens them, for a run's environment).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SealedVariables {
    /// Sorted.
    pub names: Vec<String>,
    /// The sealed JSON object of names to values; `None` when there are none.
    pub sealed: Option<Vec<u8>>,
}

impl SealedVariables {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What a caller gives to create a twin, already validated (sensitive variables sealed).
#[derive(Debug, Clone)]
pub struct NewTwin {
    pub id: TwinId,
    pub owner: String,
    pub name: TwinName,
    pub provider: Provider,
    pub files: TwinFiles,
    /// The plain variables; sensitive ones are in `secret_variables` only.
    pub variables: Variables,
    pub secret_variables: SealedVariables,
    /// The owner's credentials its runs get, in order (a later one wins a shared name).
    pub credential_ids: Vec<CredentialId>,
}

/// A change to a twin's configuration; `None` keeps what is there. `variables` holds the
/// plain and the sealed sensitive ones together (a new set of variables replaces both).
#[derive(Debug, Clone, Default)]
pub struct TwinUpdate {
    pub name: Option<TwinName>,
    pub files: Option<TwinFiles>,
    pub variables: Option<(Variables, SealedVariables)>,
    pub credential_ids: Option<Vec<CredentialId>>,
}

/// A twin as stored. Answers show its sensitive variables as the mask beside the plain ones
/// (see its `Serialize`), never their values.
#[derive(Debug, Clone)]
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
    /// The plain variables, as terraform gets them in the variables file.
    pub variables: Variables,
    /// The sensitive ones: names, and values sealed.
    pub secret_variables: SealedVariables,
    /// The owner's credentials its runs get, in order.
    pub credential_ids: Vec<CredentialId>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// Bumped by every change: a change decided from this twin is written only while the twin
    /// is still at this version.
    pub version: i64,
}

impl Twin {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// Every variable as an answer shows it: plain values, and the mask for sensitive ones.
    pub fn shown_variables(&self) -> Variables {
        let mut shown = self.variables.clone();
        for name in &self.secret_variables.names {
            shown.insert(name.clone(), serde_json::Value::String(MASK.to_owned()));
        }
        shown
    }
}

/// A twin as every answer shows it: [`Twin`]'s serialization, and its schema in the API's
/// OpenAPI document. Sensitive variables show as the mask, listed in `sensitive_variables`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(
    as = Twin,
    description = "A twin: a named terraform configuration, its deployment status and its lock. Sensitive variables show as `\"********\"`."
)]
struct TwinView<'a> {
    id: &'a TwinId,
    owner: &'a str,
    name: &'a TwinName,
    provider: Provider,
    deployment_status: DeploymentStatus,
    is_locked: bool,
    /// The run holding the lock, while `is_locked`.
    active_job_id: &'a Option<RunId>,
    last_deployed_at: &'a Option<String>,
    /// The outputs of the current state version, `{name: {"value", "type", "sensitive"}}`,
    /// sensitive values masked; `null` when the state has none.
    terraform_outputs: &'a Option<serde_json::Value>,
    files: &'a TwinFiles,
    /// Every variable: plain values, and `"********"` for sensitive ones.
    #[schema(value_type = BTreeMap<String, serde_json::Value>)]
    variables: Variables,
    /// The names of the sensitive variables, sorted.
    sensitive_variables: &'a [String],
    /// The owner's credentials its runs get, in order.
    credential_ids: &'a [CredentialId],
    created_at: &'a str,
    updated_at: &'a str,
    /// Set while the twin is soft-deleted.
    deleted_at: &'a Option<String>,
}

impl Serialize for Twin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TwinView {
            id: &self.id,
            owner: &self.owner,
            name: &self.name,
            provider: self.provider,
            deployment_status: self.deployment_status,
            is_locked: self.is_locked,
            active_job_id: &self.active_job_id,
            last_deployed_at: &self.last_deployed_at,
            terraform_outputs: &self.terraform_outputs,
            files: &self.files,
            variables: self.shown_variables(),
            sensitive_variables: &self.secret_variables.names,
            credential_ids: &self.credential_ids,
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            deleted_at: &self.deleted_at,
        }
        .serialize(serializer)
    }
}

/// A twin's schema is its view's: what `Serialize` writes.
impl utoipa::PartialSchema for Twin {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <TwinView as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Twin {
    fn name() -> std::borrow::Cow<'static, str> {
        <TwinView as utoipa::ToSchema>::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <TwinView as utoipa::ToSchema>::schemas(schemas);
    }
}

/// One recorded change to a twin: a status move, or a lifecycle event such as a soft delete.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_exactly_value_and_a_boolean_sensitive_is_the_marked_form() {
        assert_eq!(
            VariableInput::from_json(json!({"value": "pw", "sensitive": true})),
            VariableInput::Sensitive(json!("pw"))
        );
        assert_eq!(
            VariableInput::from_json(json!({"value": 3, "sensitive": false})),
            VariableInput::Plain(json!(3))
        );
        for plain in [
            json!({"value": "x"}),
            json!({"value": "x", "sensitive": "yes"}),
            json!({"value": "x", "sensitive": true, "other": 1}),
            json!("text"),
        ] {
            assert_eq!(
                VariableInput::from_json(plain.clone()),
                VariableInput::Plain(plain)
            );
        }
        assert!(VariableInput::from_json(json!(MASK)).is_mask());
    }
}
