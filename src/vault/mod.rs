//! Secrets at rest: owners' cloud credentials, twins' sensitive variables and each run's secret
//! environment, sealed with the state key (AES-256-GCM, each kind under its own context) before
//! they reach the store, and opened only to hand them to terraform's environment. Answers show
//! names, never values; [`Masker`] hides the values wherever terraform might print them.

mod masker;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use masker::Masker;

use crate::clock;
use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::{
    Credential, CredentialEnv, CredentialId, CredentialName, Principal, Provider, RunId, RunKind,
    SealedVariables, Twin, TwinId, VariableInput, Variables,
};
use crate::state::{CipherError, StateCipher};
use crate::store::{RunCredential, Store, StoreError, StoredCredential};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Well-formed but not acceptable (a 422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Live twins name the credential.
    #[error("credential {id} is used by {}; detach it from them first, or delete with ?force=true", twins.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))]
    InUse {
        id: CredentialId,
        twins: Vec<TwinId>,
    },
    /// A run of a twin whose credential has expired is refused before anything starts.
    #[error("credential {id} ('{name}') expired at {expires_at}; renew it (PUT /credentials/{id}) or detach it from the twin")]
    Expired {
        id: CredentialId,
        name: String,
        expires_at: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealed secrets cannot be opened: {0}")]
    Cipher(#[from] CipherError),
    #[error("sealed secrets are damaged: {0}")]
    Corrupt(String),
}

/// A new credential, checked.
#[derive(Debug, Clone)]
pub struct CredentialInput {
    pub name: CredentialName,
    pub provider: Provider,
    pub env: CredentialEnv,
    pub expires_at: Option<String>,
    pub delete_after_run: bool,
}

/// A change to a credential; `None` keeps what is there (`expires_at: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct CredentialChange {
    pub name: Option<CredentialName>,
    pub provider: Option<Provider>,
    pub env: Option<CredentialEnv>,
    pub expires_at: Option<Option<String>>,
    pub delete_after_run: Option<bool>,
}

/// What a run gets on top of the operator's credentials: its twin's credentials and sensitive
/// variables (`TF_VAR_<name>`), and every value to mask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSecrets {
    pub env: Vec<(String, String)>,
    pub masked: Vec<String>,
}

/// A run's secrets made at its start: sealed for the store (so a restart can open them again),
/// and the credentials it uses.
#[derive(Debug, Clone, Default)]
pub struct PreparedSecrets {
    pub sealed: Option<Vec<u8>>,
    pub credentials: Vec<RunCredential>,
}

/// An expiry as given (any RFC 3339 time), as stored.
pub fn parse_expiry(raw: &str) -> Result<String, VaultError> {
    clock::parse(raw.trim()).map(clock::format).ok_or_else(|| {
        VaultError::Invalid(format!(
            "expires_at '{}' is not an RFC 3339 time (like 2027-01-31T00:00:00Z)",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

/// A value as terraform reads it from `TF_VAR_<name>`: a string as it is, anything else as
/// JSON (which terraform parses as an HCL expression for lists, maps and objects).
pub fn tf_var_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Every text by which a sensitive value may show: its `TF_VAR_` form and each string and
/// number inside it.
fn masked_forms(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.push(text.clone()),
        Value::Number(number) => into.push(number.to_string()),
        Value::Array(items) => items.iter().for_each(|v| masked_forms(v, into)),
        Value::Object(map) => map.values().for_each(|v| masked_forms(v, into)),
        _ => {}
    }
    if !value.is_string() {
        into.push(tf_var_value(value));
    }
}

fn credential_context(id: &CredentialId) -> String {
    format!("credential:{id}")
}

fn variables_context(twin: &TwinId) -> String {
    format!("variables:{twin}")
}

fn run_context(run: &RunId) -> String {
    format!("run-secrets:{run}")
}

pub struct Vault {
    store: Arc<dyn Store>,
    cipher: StateCipher,
}

impl Vault {
    pub fn new(store: Arc<dyn Store>, cipher: StateCipher) -> Self {
        Self { store, cipher }
    }

    /// The cipher, for other secrets kept under their own contexts (webhook secrets).
    pub fn cipher(&self) -> &StateCipher {
        &self.cipher
    }

    fn seal_json(&self, context: &str, value: &impl Serialize) -> Result<Vec<u8>, VaultError> {
        let plain = serde_json::to_vec(value).map_err(|e| VaultError::Corrupt(e.to_string()))?;
        Ok(self.cipher.seal(context, &plain)?)
    }

    fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<T, VaultError> {
        let plain = self.cipher.open(context, sealed)?;
        serde_json::from_slice(&plain).map_err(|e| VaultError::Corrupt(e.to_string()))
    }

    // --- credentials -------------------------------------------------------------------------

    fn audit(&self, principal: &Principal, action: AuditAction, id: &CredentialId) {
        crate::audit::record(
            self.store.as_ref(),
            NewAudit::new(&principal.owner, action, id),
        );
    }

    pub fn create_credential(
        &self,
        principal: &Principal,
        input: CredentialInput,
    ) -> Result<Credential, VaultError> {
        let id = CredentialId::generate();
        let now = clock::now();
        let credential = Credential {
            id: id.clone(),
            owner: principal.owner.clone(),
            name: input.name,
            provider: input.provider,
            env_keys: input.env.keys(),
            expires_at: input.expires_at,
            delete_after_run: input.delete_after_run,
            created_at: now.clone(),
            updated_at: now,
            last_used_at: None,
        };
        let sealed_env = self.seal_json(&credential_context(&id), input.env.vars())?;
        self.store.insert_credential(&StoredCredential {
            credential: credential.clone(),
            sealed_env,
        })?;
        self.audit(principal, AuditAction::CredentialCreated, &id);
        Ok(credential)
    }

    /// The caller's credentials (an admin's: everyone's).
    pub fn list_credentials(&self, principal: &Principal) -> Result<Vec<Credential>, VaultError> {
        let owner = (!principal.is_admin).then_some(principal.owner.as_str());
        Ok(self
            .store
            .list_credentials(owner)?
            .into_iter()
            .map(|stored| stored.credential)
            .collect())
    }

    /// A credential the caller may see; another owner's is as missing as one never made.
    fn visible(
        &self,
        principal: &Principal,
        id: &CredentialId,
    ) -> Result<StoredCredential, VaultError> {
        self.store
            .get_credential(id)?
            .filter(|stored| principal.may_access(&stored.credential.owner))
            .ok_or_else(|| VaultError::NotFound(format!("credential {id} not found")))
    }

    pub fn credential(
        &self,
        principal: &Principal,
        id: &CredentialId,
    ) -> Result<Credential, VaultError> {
        Ok(self.visible(principal, id)?.credential)
    }

    pub fn update_credential(
        &self,
        principal: &Principal,
        id: &CredentialId,
        change: CredentialChange,
    ) -> Result<Credential, VaultError> {
        let mut stored = self.visible(principal, id)?;
        let credential = &mut stored.credential;
        if let Some(name) = change.name {
            credential.name = name;
        }
        if let Some(provider) = change.provider {
            credential.provider = provider;
        }
        if let Some(expires_at) = change.expires_at {
            credential.expires_at = expires_at;
        }
        if let Some(once) = change.delete_after_run {
            credential.delete_after_run = once;
        }
        if let Some(env) = change.env {
            credential.env_keys = env.keys();
            stored.sealed_env = self.seal_json(&credential_context(id), env.vars())?;
        }
        stored.credential.updated_at = clock::now();
        self.store.update_credential(&stored)?;
        self.audit(principal, AuditAction::CredentialUpdated, id);
        Ok(stored.credential)
    }

    /// Deletes a credential; while live twins name it only with `force` (which detaches it).
    pub fn delete_credential(
        &self,
        principal: &Principal,
        id: &CredentialId,
        force: bool,
    ) -> Result<(), VaultError> {
        self.visible(principal, id)?;
        match self.store.delete_credential(id, force)? {
            Ok(()) => {
                self.audit(principal, AuditAction::CredentialDeleted, id);
                Ok(())
            }
            Err(twins) => Err(VaultError::InUse {
                id: id.clone(),
                twins,
            }),
        }
    }

    /// Credentials a twin of `twin_owner` may name, as `principal` names them: each must be
    /// visible to the caller and belong to the twin's owner. Duplicates are dropped.
    pub fn check_credentials(
        &self,
        principal: &Principal,
        twin_owner: &str,
        ids: Vec<CredentialId>,
    ) -> Result<Vec<CredentialId>, VaultError> {
        let mut checked: Vec<CredentialId> = Vec::with_capacity(ids.len());
        for id in ids {
            if checked.contains(&id) {
                continue;
            }
            let stored = self.visible(principal, &id)?;
            if stored.credential.owner != twin_owner {
                return Err(VaultError::Invalid(format!(
                    "credential {id} belongs to {}, not to the twin's owner {twin_owner}",
                    stored.credential.owner
                )));
            }
            checked.push(id);
        }
        Ok(checked)
    }

    fn credential_env(
        &self,
        stored: &StoredCredential,
    ) -> Result<BTreeMap<String, String>, VaultError> {
        self.open_json(
            &credential_context(&stored.credential.id),
            &stored.sealed_env,
        )
    }

    // --- sensitive variables -----------------------------------------------------------------

    /// Splits variables as given into the plain ones and the sensitive ones (sealed). A
    /// sensitive variable of `current` given back as the mask keeps its stored value; the
    /// stored ciphertext is kept as it is when the sensitive values do not change (so a kept
    /// plan's configuration hash only changes when they do).
    pub fn seal_variables(
        &self,
        twin_id: &TwinId,
        inputs: BTreeMap<String, VariableInput>,
        current: Option<&Twin>,
    ) -> Result<(Variables, SealedVariables), VaultError> {
        let stored_secrets = match current {
            Some(twin) => self.open_variables(twin)?,
            None => BTreeMap::new(),
        };
        let mut plain = Variables::new();
        let mut secret: BTreeMap<String, Value> = BTreeMap::new();
        for (name, input) in inputs {
            if input.is_mask() {
                if let Some(kept) = stored_secrets.get(&name) {
                    secret.insert(name, kept.clone());
                    continue;
                }
            }
            match input {
                VariableInput::Plain(value) => {
                    plain.insert(name, value);
                }
                VariableInput::Sensitive(value) => {
                    secret.insert(name, value);
                }
            }
        }
        let names: Vec<String> = secret.keys().cloned().collect();
        let unchanged = current.is_some_and(|twin| twin.secret_variables.names == names)
            && secret == stored_secrets;
        let sealed = match (unchanged, current) {
            (true, Some(twin)) => twin.secret_variables.sealed.clone(),
            _ if secret.is_empty() => None,
            _ => Some(self.seal_json(&variables_context(twin_id), &secret)?),
        };
        Ok((plain, SealedVariables { names, sealed }))
    }

    /// A twin's sensitive variables in clear (for its runs' environment only).
    fn open_variables(&self, twin: &Twin) -> Result<BTreeMap<String, Value>, VaultError> {
        match &twin.secret_variables.sealed {
            Some(sealed) => self.open_json(&variables_context(&twin.id), sealed),
            None => Ok(BTreeMap::new()),
        }
    }

    // --- runs ----------------------------------------------------------------------------------

    /// What a run of `twin` gets: its credentials' variables (in the twin's order, a later one
    /// winning a shared name) and its sensitive variables as `TF_VAR_<name>`, sealed for the
    /// store. Refused when a credential has expired. A one-time credential is removed by the
    /// end of a deploy or destroy that used it (plan previews and drift checks only read).
    pub fn prepare_run(
        &self,
        run_id: &RunId,
        twin: &Twin,
        kind: RunKind,
    ) -> Result<PreparedSecrets, VaultError> {
        let now = chrono::Utc::now();
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut masked = Vec::new();
        let mut credentials = Vec::new();
        for id in &twin.credential_ids {
            let Some(stored) = self.store.get_credential(id)? else {
                return Err(VaultError::NotFound(format!(
                    "credential {id} of twin {} is gone",
                    twin.id
                )));
            };
            let credential = &stored.credential;
            if credential.is_expired(now) {
                return Err(VaultError::Expired {
                    id: id.clone(),
                    name: credential.name.as_str().to_owned(),
                    expires_at: credential.expires_at.clone().unwrap_or_default(),
                });
            }
            for (name, value) in self.credential_env(&stored)? {
                masked.push(value.clone());
                order.retain(|n| *n != name);
                order.push(name.clone());
                env.insert(name, value);
            }
            credentials.push(RunCredential {
                id: id.clone(),
                delete_after_run: credential.delete_after_run && kind.changes_infrastructure(),
            });
        }
        for (name, value) in self.open_variables(twin)? {
            masked_forms(&value, &mut masked);
            let key = format!("TF_VAR_{name}");
            order.retain(|n| *n != key);
            order.push(key.clone());
            env.insert(key, tf_var_value(&value));
        }
        if order.is_empty() {
            return Ok(PreparedSecrets {
                sealed: None,
                credentials,
            });
        }
        let secrets = RunSecrets {
            env: order
                .into_iter()
                .filter_map(|name| env.remove(&name).map(|value| (name, value)))
                .collect(),
            masked,
        };
        Ok(PreparedSecrets {
            sealed: Some(self.seal_json(&run_context(run_id), &secrets)?),
            credentials,
        })
    }

    /// The secrets a run was started with, from the store (also after a restart).
    pub fn open_run(&self, run_id: &RunId) -> Result<RunSecrets, VaultError> {
        match self.store.run_secrets(run_id)? {
            Some(sealed) => self.open_json(&run_context(run_id), &sealed),
            None => Ok(RunSecrets::default()),
        }
    }

    /// Every secret value of a twin (its sensitive variables, its credentials' values), to
    /// mask in what is shown or kept about it (its outputs).
    pub fn twin_masker(&self, twin: &Twin) -> Result<Masker, VaultError> {
        let mut values = Vec::new();
        for (_, value) in self.open_variables(twin)? {
            masked_forms(&value, &mut values);
        }
        for id in &twin.credential_ids {
            if let Some(stored) = self.store.get_credential(id)? {
                values.extend(self.credential_env(&stored)?.into_values());
            }
        }
        Ok(Masker::new(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terraform_gets_strings_as_they_are_and_everything_else_as_json() {
        assert_eq!(tf_var_value(&json!("p@ss")), "p@ss");
        assert_eq!(tf_var_value(&json!(42)), "42");
        assert_eq!(tf_var_value(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
    }

    #[test]
    fn every_form_of_a_sensitive_value_is_masked() {
        let mut forms = Vec::new();
        masked_forms(&json!({"user": "admin-user", "port": 5432}), &mut forms);
        assert!(forms.contains(&"admin-user".to_owned()));
        assert!(forms.contains(&"5432".to_owned()));
        assert!(forms.contains(&r#"{"port":5432,"user":"admin-user"}"#.to_owned()));
    }

    #[test]
    fn expiries_are_rfc3339_and_stored_in_one_form() {
        assert_eq!(
            parse_expiry("2027-01-31T01:00:00+01:00").ok().as_deref(),
            Some("2027-01-31T00:00:00.000000Z")
        );
        assert!(parse_expiry("tomorrow").is_err());
    }
}
