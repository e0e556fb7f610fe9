//! An owner's cloud credentials: a named set of environment variables handed to the terraform
//! of the twins that name it. The values are secret: this type holds only their names; the
//! values travel sealed (see the vault) and reach terraform's environment only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{CredentialId, Provider, ValidationError};

/// A credential's display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(into = "String")]
pub struct CredentialName(String);

impl CredentialName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        super::names::display_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<CredentialName> for String {
    fn from(name: CredentialName) -> String {
        name.0
    }
}

/// Variables the gateway sets for every run itself (the state backend, terraform's own
/// settings, the jail's home): a credential may not replace them.
const RESERVED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "SANDBOX_DIR",
    "TF_CLI_CONFIG_FILE",
    "TF_IN_AUTOMATION",
    "TF_INPUT",
    "CHECKPOINT_DISABLE",
];
const RESERVED_PREFIXES: &[&str] = &["TF_HTTP_", "TERRASTREAM_"];

/// The environment of a credential: at least one variable, names as a shell takes them, values
/// without NUL, none of the gateway's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEnv(BTreeMap<String, String>);

impl CredentialEnv {
    pub const MAX_VARS: usize = 100;
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;

    pub fn new(vars: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        if vars.is_empty() {
            return Err(ValidationError::new("env must hold at least one variable"));
        }
        if vars.len() > Self::MAX_VARS {
            return Err(ValidationError::new(format!(
                "env may hold at most {} variables",
                Self::MAX_VARS
            )));
        }
        for (name, value) in &vars {
            let shown: String = name.chars().take(60).collect();
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ValidationError::new(format!(
                    "'{shown}' is not a valid environment variable name"
                )));
            }
            let upper = name.to_ascii_uppercase();
            if RESERVED_NAMES.contains(&upper.as_str())
                || RESERVED_PREFIXES.iter().any(|p| upper.starts_with(p))
            {
                return Err(ValidationError::new(format!(
                    "'{shown}' is set by the gateway for every run; a credential cannot replace it"
                )));
            }
            if value.contains('\0') {
                return Err(ValidationError::new(format!(
                    "the value of '{shown}' contains a NUL character"
                )));
            }
            if value.len() > Self::MAX_VALUE_BYTES {
                return Err(ValidationError::new(format!(
                    "the value of '{shown}' is longer than {} bytes",
                    Self::MAX_VALUE_BYTES
                )));
            }
        }
        Ok(Self(vars))
    }

    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_vars(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// A credential as the API shows it: everything but the values.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: CredentialId,
    pub owner: String,
    pub name: CredentialName,
    pub provider: Provider,
    /// The variable names, sorted.
    pub env_keys: Vec<String>,
    pub expires_at: Option<String>,
    /// Removed once the first deploy or destroy that used it ends.
    pub delete_after_run: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

impl Credential {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at
            .as_deref()
            .and_then(crate::clock::parse)
            .is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CredentialEnv, ValidationError> {
        CredentialEnv::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn ordinary_cloud_variables_are_accepted() {
        let env = env(&[("AWS_ACCESS_KEY_ID", "AKIA"), ("ARM_CLIENT_SECRET", "x")]);
        assert_eq!(
            env.map(|e| e.keys()).ok(),
            Some(vec!["ARM_CLIENT_SECRET".into(), "AWS_ACCESS_KEY_ID".into()])
        );
    }

    #[test]
    fn bad_names_and_the_gateways_own_variables_are_refused() {
        for bad in [
            "",
            "1ABC",
            "A-B",
            "A B",
            "PATH",
            "TF_HTTP_PASSWORD",
            "terrastream_x",
            "HOME",
        ] {
            assert!(env(&[(bad, "v")]).is_err(), "{bad}");
        }
        assert!(env(&[]).is_err());
        assert!(env(&[("A", "nul\0")]).is_err());
    }

    #[test]
    fn expiry_is_a_point_in_time() {
        let mut credential = Credential {
            id: CredentialId::generate(),
            owner: "o".into(),
            name: CredentialName::parse("n").unwrap_or_else(|e| panic!("{e}")),
            provider: Provider::Aws,
            env_keys: vec![],
            expires_at: None,
            delete_after_run: false,
            created_at: String::new(),
            updated_at: String::new(),
            last_used_at: None,
        };
        let now = Utc::now();
        assert!(!credential.is_expired(now));
        credential.expires_at = Some(crate::clock::format(now - chrono::Duration::seconds(1)));
        assert!(credential.is_expired(now));
        credential.expires_at = Some(crate::clock::format(now + chrono::Duration::hours(1)));
        assert!(!credential.is_expired(now));
    }
}
