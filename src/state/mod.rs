//! terraform's state, kept by the gateway as terraform's `http` backend: every write a new
//! encrypted version with serial and lineage checks, one lock per twin, and summaries (resource
//! count, outputs) readable without spawning terraform.

mod cipher;

use std::sync::Arc;

use md5::{Digest, Md5};
use serde_json::{json, Value};

pub use cipher::{CipherError, StateCipher};

use crate::clock;
use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::{NewHistory, NewTwin, Refusal, RunId, Twin, TwinId};
use crate::store::{Restored, StateLock, StateVersion, Store, StoreError, StoredPlan};

const KEY_CHECK: &str = "state_key_check";

/// What a sensitive value is shown as, wherever it is shown.
pub use crate::domain::MASK;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a terraform state terraform could have written.
    #[error("{0}")]
    Invalid(String),
    /// Refused: lineage change, serial going backwards, a different state under the same serial.
    #[error("{0}")]
    Conflict(String),
    /// Someone else holds the lock.
    #[error("the state is locked by {}", .0.lock_id)]
    Locked(StateLock),
    #[error("no state version {0}")]
    NoSuchVersion(i64),
    /// The twin refuses the change (deleted, or locked by a run).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The twin kept changing under a rollback.
    #[error("the twin kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cipher(#[from] CipherError),
}

/// Who writes a state version.
#[derive(Debug, Clone)]
pub struct Writer {
    pub actor: String,
    pub run_id: Option<RunId>,
}

/// What a state says about itself, read once when it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub serial: i64,
    pub lineage: String,
    pub resource_count: i64,
    /// Its outputs, sensitive values masked; `None` when it has none. While the state is
    /// current, these are the twin's `terraform_outputs`.
    pub outputs: Option<Value>,
}

/// Reads serial, lineage and the managed resource instance count of a state document.
pub fn summarize(state: &Value) -> Result<Summary, StateError> {
    let serial = state["serial"]
        .as_i64()
        .filter(|s| *s >= 0)
        .ok_or_else(|| StateError::Invalid("state has no valid serial".into()))?;
    let lineage = state["lineage"]
        .as_str()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| StateError::Invalid("state has no lineage".into()))?
        .to_owned();
    let resource_count = state["resources"]
        .as_array()
        .map(|resources| {
            resources
                .iter()
                .filter(|r| r["mode"] == "managed")
                .map(|r| r["instances"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .unwrap_or(0);
    let outputs = Some(mask_outputs(&state["outputs"]))
        .filter(|outputs| outputs.as_object().is_some_and(|o| !o.is_empty()));
    Ok(Summary {
        serial,
        lineage,
        resource_count: i64::try_from(resource_count).unwrap_or(i64::MAX),
        outputs,
    })
}

/// A copy of the state fit to show: sensitive outputs and attributes replaced by the mask.
pub fn mask_state(state: &Value) -> Value {
    let mut masked = state.clone();
    if let Some(outputs) = masked["outputs"].as_object_mut() {
        for output in outputs.values_mut() {
            if output["sensitive"] == true {
                output["value"] = json!(MASK);
            }
        }
    }
    if let Some(resources) = masked["resources"].as_array_mut() {
        for instance in resources
            .iter_mut()
            .filter_map(|r| r["instances"].as_array_mut())
            .flatten()
        {
            let paths = instance["sensitive_attributes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for path in paths {
                mask_path(&mut instance["attributes"], &path);
            }
        }
    }
    masked
}

/// Masks the value a state's `sensitive_attributes` path points at: a list of steps
/// `{"type": "get_attr", "value": name}` or `{"type": "index", "value": {"value": key}}`. A
/// path that leads nowhere masks nothing more than what it could reach.
fn mask_path(attributes: &mut Value, path: &Value) {
    let Some(steps) = path.as_array() else { return };
    let mut target = attributes;
    for step in steps {
        let key = match step["type"].as_str() {
            Some("get_attr") => step["value"].clone(),
            Some("index") => step["value"]["value"].clone(),
            _ => return,
        };
        let next = match (&key, target) {
            (Value::String(name), Value::Object(map)) => map.get_mut(name),
            (Value::Number(n), Value::Array(items)) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(value) => target = value,
            None => return,
        }
    }
    *target = json!(MASK);
}

/// `value` with exactly what a terraform sensitivity structure marks replaced by the mask:
/// `true` marks the value at that place (at any depth); `false`, `null`, `{}` and `[]` mark
/// nothing; an object or array marks inside the value's object or array.
pub fn mask_marked(value: &Value, marks: &Value) -> Value {
    match (value, marks) {
        (_, Value::Bool(true)) => json!(MASK),
        (Value::Object(map), Value::Object(inner)) => map
            .iter()
            .map(|(key, item)| {
                let mark = inner.get(key).unwrap_or(&Value::Null);
                (key.clone(), mask_marked(item, mark))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        (Value::Array(items), Value::Array(inner)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| mask_marked(item, inner.get(i).unwrap_or(&Value::Null)))
            .collect::<Vec<_>>()
            .into(),
        _ => value.clone(),
    }
}

/// `terraform output -json` with sensitive values replaced by the mask:
/// `{name: {"value", "type", "sensitive"}}`.
pub fn mask_outputs(raw: &Value) -> Value {
    let Some(outputs) = raw.as_object() else {
        return serde_json::json!({});
    };
    outputs
        .iter()
        .map(|(name, output)| {
            let sensitive = output["sensitive"].as_bool().unwrap_or(false);
            let value = if sensitive { serde_json::json!(MASK) } else { output["value"].clone() };
            let masked = serde_json::json!({ "value": value, "type": output["type"], "sensitive": sensitive });
            (name.clone(), masked)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An empty state (serial 0, a new lineage), as a twin starts with.
fn empty_state() -> Vec<u8> {
    json!({
        "version": 4,
        "serial": 0,
        "lineage": uuid::Uuid::new_v4().to_string(),
        "outputs": {},
        "resources": [],
    })
    .to_string()
    .into_bytes()
}

pub enum Pushed {
    New(StateVersion),
    /// The same state as the newest version: nothing written.
    Unchanged(StateVersion),
}

/// How often a rollback is decided again after losing a race, before it gives up.
const ATTEMPTS: usize = 64;

pub struct StateService {
    store: Arc<dyn Store>,
    cipher: StateCipher,
    /// Masks a twin's secret values (sensitive variables, credentials) in its outputs.
    vault: Arc<crate::vault::Vault>,
}

impl StateService {
    /// Checks the key against the one the data directory was created with (a clear error,
    /// not garbage, when it differs).
    pub fn open(
        store: Arc<dyn Store>,
        cipher: StateCipher,
        vault: Arc<crate::vault::Vault>,
    ) -> Result<Self, StateError> {
        let stored = match store.meta(KEY_CHECK)? {
            Some(sealed) => Some(sealed),
            None => {
                let sealed = cipher.seal(cipher::KEY_CHECK_CONTEXT, cipher::KEY_CHECK_PLAINTEXT)?;
                // Another gateway on the same database may have set it first, with its key.
                if store.insert_meta(KEY_CHECK, &sealed)? {
                    None
                } else {
                    store.meta(KEY_CHECK)?
                }
            }
        };
        if let Some(sealed) = stored {
            cipher
                .open(cipher::KEY_CHECK_CONTEXT, &sealed)
                .map_err(|_| {
                    StateError::Invalid(
                        "the state key does not match the one this database was created with; \
                     give the original key (--state-key or <data-dir>/state.key; every \
                     replica on one database needs the same --state-key)"
                            .into(),
                    )
                })?;
        }
        Ok(Self {
            store,
            cipher,
            vault,
        })
    }

    fn decrypt(&self, version: &StateVersion) -> Result<Vec<u8>, StateError> {
        Ok(self
            .cipher
            .open(version.twin_id.as_str(), &version.ciphertext)?)
    }

    /// The newest version and its plain text.
    pub fn current(&self, twin_id: &TwinId) -> Result<Option<(StateVersion, Vec<u8>)>, StateError> {
        match self.store.current_state(twin_id)? {
            Some(version) => {
                let plain = self.decrypt(&version)?;
                Ok(Some((version, plain)))
            }
            None => Ok(None),
        }
    }

    pub fn version(
        &self,
        twin_id: &TwinId,
        number: i64,
    ) -> Result<(StateVersion, Vec<u8>), StateError> {
        let version = self
            .store
            .state_version(twin_id, number)?
            .ok_or(StateError::NoSuchVersion(number))?;
        let plain = self.decrypt(&version)?;
        Ok((version, plain))
    }

    pub fn versions(&self, twin_id: &TwinId) -> Result<Vec<StateVersion>, StateError> {
        Ok(self.store.list_state_versions(twin_id)?)
    }

    /// Creates a twin and its empty first state: every twin has a state to save into from the
    /// start.
    pub fn create_twin(
        &self,
        twin: NewTwin,
        history: &NewHistory,
        actor: &str,
    ) -> Result<Twin, StateError> {
        let twin = self.store.create_twin(twin, history)?;
        self.seed(&twin.id, actor)?;
        Ok(twin)
    }

    /// Gives a twin an empty state (serial 0, a new lineage) if it has none, so that even a
    /// first apply that is interrupted has a state to save into.
    pub fn seed(&self, twin_id: &TwinId, actor: &str) -> Result<(), StateError> {
        if self.store.current_state(twin_id)?.is_some() {
            return Ok(());
        }
        let writer = Writer {
            actor: actor.to_owned(),
            run_id: None,
        };
        self.write(twin_id, &empty_state(), &writer, 0)?;
        Ok(())
    }

    /// Starts a twin over with an empty state of a new lineage; refused while the current
    /// state still holds resources (destroy them first). Earlier versions are kept.
    pub fn reset(&self, twin_id: &TwinId, actor: &str) -> Result<(), StateError> {
        let current = self.store.current_state(twin_id)?;
        if let Some(current) = current.as_ref().filter(|c| c.resource_count > 0) {
            return Err(StateError::Conflict(format!(
                "the state still holds {} resources; destroy them first",
                current.resource_count
            )));
        }
        let writer = Writer {
            actor: actor.to_owned(),
            run_id: None,
        };
        let expected = current.map_or(0, |c| c.version);
        match self.write(twin_id, &empty_state(), &writer, expected)? {
            Some(_) => Ok(()),
            None => Err(StateError::Conflict(
                "the state changed meanwhile; try again".into(),
            )),
        }
    }

    /// terraform's POST: a new version if the state follows the newest one (same lineage,
    /// serial not going backwards), after checking the caller holds the lock if one is held.
    pub fn push(
        &self,
        twin_id: &TwinId,
        body: &[u8],
        lock_id: Option<&str>,
        writer: &Writer,
    ) -> Result<Pushed, StateError> {
        if let Some(holder) = self.store.state_lock(twin_id)? {
            if lock_id != Some(holder.lock_id.as_str()) {
                return Err(StateError::Locked(holder));
            }
        }
        self.push_unlocked(twin_id, body, writer)
    }

    /// Stores a state terraform could not save (`errored.tfstate`): it is the only record of
    /// what terraform created, so neither the lock nor the serial rules may refuse it. Its
    /// serial is raised past the stored one when needed, so the next run builds on it.
    pub fn recover(
        &self,
        twin_id: &TwinId,
        body: &[u8],
        writer: &Writer,
    ) -> Result<StateVersion, StateError> {
        let mut state: Value = serde_json::from_slice(body)
            .map_err(|e| StateError::Invalid(format!("recovered state is not valid JSON: {e}")))?;
        loop {
            let current = self.store.current_state(twin_id)?;
            let expected = current.as_ref().map_or(0, |c| c.version);
            let floor = current.as_ref().map_or(0, |c| c.serial + 1);
            if summarize(&state)?.serial < floor {
                state["serial"] = json!(floor);
            }
            let body =
                serde_json::to_vec(&state).map_err(|e| StateError::Invalid(e.to_string()))?;
            if let Some(version) = self.write(twin_id, &body, writer, expected)? {
                return Ok(version);
            }
        }
    }

    fn push_unlocked(
        &self,
        twin_id: &TwinId,
        body: &[u8],
        writer: &Writer,
    ) -> Result<Pushed, StateError> {
        let state: Value = serde_json::from_slice(body)
            .map_err(|e| StateError::Invalid(format!("state is not valid JSON: {e}")))?;
        let summary = summarize(&state)?;
        let md5 = hex::encode(Md5::digest(body));
        loop {
            let current = self.store.current_state(twin_id)?;
            let expected = current.as_ref().map_or(0, |c| c.version);
            if let Some(current) = &current {
                let is_seed =
                    current.serial == 0 && current.resource_count == 0 && current.run_id.is_none();
                if current.lineage != summary.lineage && !is_seed {
                    return Err(StateError::Conflict(format!(
                        "state lineage {} does not match the stored lineage {}",
                        summary.lineage, current.lineage
                    )));
                }
                if summary.serial < current.serial {
                    return Err(StateError::Conflict(format!(
                        "state serial {} is older than the stored serial {}",
                        summary.serial, current.serial
                    )));
                }
                if summary.serial == current.serial && current.lineage == summary.lineage {
                    if current.md5 == md5 {
                        return Ok(Pushed::Unchanged(current.clone()));
                    }
                    if !is_seed {
                        return Err(StateError::Conflict(format!(
                            "a different state was already stored under serial {}",
                            summary.serial
                        )));
                    }
                }
            }
            if let Some(version) =
                self.write_checked(twin_id, body, &summary, &md5, writer, expected)?
            {
                return Ok(Pushed::New(version));
            }
            // Another write landed between our read and our insert: check again.
        }
    }

    fn write(
        &self,
        twin_id: &TwinId,
        body: &[u8],
        writer: &Writer,
        expected: i64,
    ) -> Result<Option<StateVersion>, StateError> {
        let state: Value =
            serde_json::from_slice(body).map_err(|e| StateError::Invalid(e.to_string()))?;
        let summary = summarize(&state)?;
        let md5 = hex::encode(Md5::digest(body));
        self.write_checked(twin_id, body, &summary, &md5, writer, expected)
    }

    fn write_checked(
        &self,
        twin_id: &TwinId,
        body: &[u8],
        summary: &Summary,
        md5: &str,
        writer: &Writer,
        expected: i64,
    ) -> Result<Option<StateVersion>, StateError> {
        let version = StateVersion {
            twin_id: twin_id.clone(),
            version: expected + 1,
            serial: summary.serial,
            lineage: summary.lineage.clone(),
            md5: md5.to_owned(),
            size: i64::try_from(body.len()).unwrap_or(i64::MAX),
            resource_count: summary.resource_count,
            run_id: writer.run_id.clone(),
            actor: writer.actor.clone(),
            created_at: clock::now(),
            ciphertext: self.cipher.seal(twin_id.as_str(), body)?,
        };
        let outputs = self.masked_outputs(twin_id, summary.outputs.clone())?;
        Ok(self
            .store
            .insert_state_version(&version, expected, outputs.as_ref())?
            .then_some(version))
    }

    /// Masks the twin's own secret values (sensitive variables, credentials) in what is shown
    /// of its state, whatever the configuration declares sensitive.
    pub fn secret_masker(&self, twin: &Twin) -> Result<crate::vault::Masker, StateError> {
        self.vault
            .twin_masker(twin)
            .map_err(|e| StateError::Invalid(format!("cannot read the twin's secrets: {e}")))
    }

    /// A state's outputs as the twin keeps them: terraform's sensitive ones masked already,
    /// and any of the twin's secret values (a sensitive variable output by a configuration
    /// that does not declare it sensitive) masked too.
    fn masked_outputs(
        &self,
        twin_id: &TwinId,
        outputs: Option<Value>,
    ) -> Result<Option<Value>, StateError> {
        let Some(outputs) = outputs else {
            return Ok(None);
        };
        let Some(twin) = self.store.get_twin(twin_id)? else {
            return Ok(Some(outputs));
        };
        let masker = self
            .vault
            .twin_masker(&twin)
            .map_err(|e| StateError::Invalid(format!("cannot mask the twin's outputs: {e}")))?;
        Ok(Some(masker.mask_json(outputs)))
    }

    /// Makes version `number`'s content the current state again, as a new version: its
    /// resources and outputs with a serial above the current one and the current lineage (so
    /// terraform's next run builds on it), and a `state_restored` history row, decided by the
    /// twin (refused while it is deleted or a run locks it) and written only while nobody holds
    /// terraform's state lock.
    pub fn restore(
        &self,
        twin_id: &TwinId,
        number: i64,
        actor: &str,
    ) -> Result<StateVersion, StateError> {
        let (source, plain) = self.version(twin_id, number)?;
        let mut state: Value = serde_json::from_slice(&plain)
            .map_err(|e| StateError::Invalid(format!("stored state is not valid JSON: {e}")))?;
        for _ in 0..ATTEMPTS {
            let twin = self
                .store
                .get_twin(twin_id)?
                .ok_or_else(|| StoreError::NotFound(format!("twin {twin_id}")))?;
            let current = self
                .store
                .current_state(twin_id)?
                .ok_or(StateError::NoSuchVersion(number))?;
            state["serial"] = json!(current.serial + 1);
            state["lineage"] = json!(current.lineage);
            let body =
                serde_json::to_vec(&state).map_err(|e| StateError::Invalid(e.to_string()))?;
            let summary = summarize(&state)?;
            let now = clock::now();
            let version = StateVersion {
                twin_id: twin_id.clone(),
                version: current.version + 1,
                serial: summary.serial,
                lineage: summary.lineage.clone(),
                md5: hex::encode(Md5::digest(&body)),
                size: i64::try_from(body.len()).unwrap_or(i64::MAX),
                resource_count: summary.resource_count,
                run_id: None,
                actor: actor.to_owned(),
                created_at: now.clone(),
                ciphertext: self.cipher.seal(twin_id.as_str(), &body)?,
            };
            let reason = format!(
                "state version {number} (serial {}) restored as version {} (serial {})",
                source.serial, version.version, version.serial
            );
            let change = twin.state_restored(actor, &reason, &now)?;
            let outputs = self.masked_outputs(twin_id, summary.outputs)?;
            match self.store.restore_state_version(
                &version,
                current.version,
                outputs.as_ref(),
                &change,
            )? {
                Restored::Written => {
                    crate::audit::record(
                        self.store.as_ref(),
                        NewAudit::new(actor, AuditAction::StateRestored, twin_id).because(reason),
                    );
                    return Ok(version);
                }
                Restored::StateLocked(holder) => return Err(StateError::Locked(holder)),
                // The twin or its state changed meanwhile: decide again on what it is now.
                Restored::Changed => continue,
            }
        }
        Err(StateError::Busy)
    }

    /// terraform's LOCK: takes the lock or reports the holder.
    pub fn lock(
        &self,
        twin_id: &TwinId,
        info: &[u8],
        run_id: Option<RunId>,
    ) -> Result<(), StateError> {
        let parsed: Value = serde_json::from_slice(info)
            .map_err(|e| StateError::Invalid(format!("lock info is not valid JSON: {e}")))?;
        let lock_id = parsed["ID"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| StateError::Invalid("lock info has no ID".into()))?;
        let lock = StateLock {
            lock_id: lock_id.to_owned(),
            info: String::from_utf8_lossy(info).into_owned(),
            run_id,
            created_at: clock::now(),
        };
        self.store
            .acquire_state_lock(twin_id, &lock)?
            .map_err(StateError::Locked)
    }

    /// terraform's UNLOCK: releases the lock held under the body's ID. An empty body is
    /// `terraform force-unlock`, allowed only when `may_force`.
    pub fn unlock(
        &self,
        twin_id: &TwinId,
        info: &[u8],
        actor: &str,
        may_force: bool,
    ) -> Result<(), StateError> {
        let lock_id = if info.iter().all(u8::is_ascii_whitespace) {
            if !may_force {
                return Err(StateError::Invalid(
                    "an UNLOCK without lock info is a force-unlock".into(),
                ));
            }
            return self.force_unlock(twin_id, actor).map(|_| ());
        } else {
            let parsed: Value = serde_json::from_slice(info)
                .map_err(|e| StateError::Invalid(format!("lock info is not valid JSON: {e}")))?;
            parsed["ID"].as_str().map(str::to_owned)
        };
        self.store
            .release_state_lock(twin_id, lock_id.as_deref(), None)?
            .map(|_| ())
            .map_err(StateError::Locked)
    }

    /// Keeps a plan preview (encrypted: a plan holds planned values, secrets included).
    pub fn save_plan(
        &self,
        twin_id: &TwinId,
        run_id: &RunId,
        config_hash: &str,
        state_serial: i64,
        plan: &[u8],
    ) -> Result<(), StateError> {
        let context = format!("plan:{twin_id}");
        let stored = StoredPlan {
            run_id: run_id.clone(),
            twin_id: twin_id.clone(),
            config_hash: config_hash.to_owned(),
            state_serial,
            created_at: clock::now(),
            applied_by: None,
            ciphertext: self.cipher.seal(&context, plan)?,
        };
        Ok(self.store.insert_plan(&stored)?)
    }

    /// The twin's newest plan preview and the plan file.
    pub fn latest_plan(
        &self,
        twin_id: &TwinId,
    ) -> Result<Option<(StoredPlan, Vec<u8>)>, StateError> {
        let Some(plan) = self.store.latest_plan(twin_id)? else {
            return Ok(None);
        };
        let bytes = self
            .cipher
            .open(&format!("plan:{twin_id}"), &plan.ciphertext)?;
        Ok(Some((plan, bytes)))
    }

    /// Force-releases the lock (an admin's repair); recorded in the twin's history with the
    /// released lock's ID and age.
    pub fn force_unlock(
        &self,
        twin_id: &TwinId,
        actor: &str,
    ) -> Result<Option<StateLock>, StateError> {
        loop {
            let Some(holder) = self.store.state_lock(twin_id)? else {
                return Ok(None);
            };
            let reason = format!(
                "state lock {} force-released (held since {})",
                holder.lock_id, holder.created_at
            );
            let history = NewHistory {
                action: "state_force_unlocked",
                from: None,
                to: None,
                actor: actor.to_owned(),
                reason: Some(reason.clone()),
                run_id: None,
            };
            // Released, or taken again by someone else meanwhile: then that one is released.
            if let Ok(Some(released)) =
                self.store
                    .release_state_lock(twin_id, Some(&holder.lock_id), Some(&history))?
            {
                crate::audit::record(
                    self.store.as_ref(),
                    NewAudit::new(actor, AuditAction::StateUnlocked, twin_id).because(reason),
                );
                return Ok(Some(released));
            }
        }
    }

    /// Lets go of a lock a run's terraform left behind (it was killed before unlocking).
    pub fn release_run_lock(&self, twin_id: &TwinId, run_id: &RunId) -> Result<bool, StateError> {
        match self.store.state_lock(twin_id)? {
            Some(lock) if lock.run_id.as_ref() == Some(run_id) => {
                let released = self
                    .store
                    .release_state_lock(twin_id, Some(&lock.lock_id), None)?;
                Ok(released.is_ok())
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_outputs_are_masked_and_others_kept() {
        let raw = json!({
            "endpoint": {"sensitive": false, "type": "string", "value": "https://x"},
            "password": {"sensitive": true, "type": "string", "value": "hunter22"}
        });
        let masked = mask_outputs(&raw);
        assert_eq!(masked["endpoint"]["value"], "https://x");
        assert_eq!(masked["password"]["value"], MASK);
        assert_eq!(masked["password"]["sensitive"], true);
        assert!(!masked.to_string().contains("hunter22"));
    }

    #[test]
    fn summaries_count_managed_instances_only() {
        let state = json!({
            "serial": 3, "lineage": "l",
            "resources": [
                {"mode": "managed", "instances": [{}, {}]},
                {"mode": "data", "instances": [{}]},
                {"mode": "managed", "instances": [{}]}
            ]
        });
        assert_eq!(
            summarize(&state).ok(),
            Some(Summary {
                serial: 3,
                lineage: "l".into(),
                resource_count: 3,
                outputs: None,
            })
        );
        assert!(summarize(&json!({"lineage": "l"})).is_err());
    }

    #[test]
    fn masking_hides_sensitive_outputs_and_attributes() {
        let state = json!({
            "outputs": {"s": {"value": "topsecret", "sensitive": true}, "p": {"value": "public", "sensitive": false}},
            "resources": [{"mode": "managed", "instances": [{
                "attributes": {"secret": "topsecret", "name": "a"},
                "sensitive_attributes": [[{"type": "get_attr", "value": "secret"}]]
            }]}]
        });
        let masked = mask_state(&state);
        assert!(!masked.to_string().contains("topsecret"));
        assert_eq!(masked["outputs"]["p"]["value"], "public");
        assert_eq!(
            masked["resources"][0]["instances"][0]["attributes"]["name"],
            "a"
        );
    }

    #[test]
    fn state_masking_follows_each_sensitive_path_exactly() {
        let state = json!({
            "resources": [{"mode": "managed", "instances": [{
                "attributes": {"properties": {"tier": "gold", "token": "t0k3n"},
                               "list": ["a", "hidden"], "name": "x"},
                "sensitive_attributes": [
                    [{"type": "get_attr", "value": "properties"},
                     {"type": "index", "value": {"value": "token", "type": "string"}}],
                    [{"type": "get_attr", "value": "list"},
                     {"type": "index", "value": {"value": 1, "type": "number"}}],
                    [{"type": "get_attr", "value": "missing"}]
                ]
            }]}]
        });
        let attributes = &mask_state(&state)["resources"][0]["instances"][0]["attributes"];
        assert_eq!(attributes["properties"]["tier"], "gold");
        assert_eq!(attributes["properties"]["token"], MASK);
        assert_eq!(attributes["list"], json!(["a", MASK]));
        assert_eq!(attributes["name"], "x");
        assert!(attributes.get("missing").is_none());
    }
}
