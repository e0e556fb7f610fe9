//! `sandbox_resource`: a pretend cloud object (IoT hub, database, function, ...) that lives as a
//! file in the sandbox directory and takes as long to create, update and destroy as it is told.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueBool, ValueEmpty, ValueNumber};
use tf_provider::{map, AttributePath, Diagnostics, Resource};

use crate::diagnostics::{attribute_error, error};
use crate::naming;
use crate::provider::SharedStore;
use crate::store::{ObjectId, ObjectStatus, SandboxObject, Store, StoreError};

/// Longest delay accepted, so a typo cannot hang an apply for days.
const MAX_DELAY_MS: i64 = 3_600_000;

type ValueText = Value<String>;
type ValueProperties = Value<BTreeMap<String, ValueText>>;

/// The resource's attributes as terraform sends and receives them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    #[serde(default)]
    pub id: ValueText,
    #[serde(default)]
    pub name: ValueText,
    #[serde(default)]
    pub kind: ValueText,
    #[serde(default)]
    pub endpoint: ValueText,
    #[serde(default)]
    pub secret: ValueText,
    #[serde(default)]
    pub properties: ValueProperties,
    #[serde(default)]
    pub create_delay_ms: ValueNumber,
    #[serde(default)]
    pub update_delay_ms: ValueNumber,
    #[serde(default)]
    pub destroy_delay_ms: ValueNumber,
    #[serde(default)]
    pub fail_on_create: ValueBool,
    #[serde(default)]
    pub fail_on_destroy: ValueBool,
}

impl ResourceState {
    /// A human name for messages: `iot_hub "plant-7"`.
    fn describe(&self) -> String {
        format!(
            "{} {:?}",
            self.kind.as_ref_option().map_or("sandbox object", |k| k),
            self.name.as_ref_option().map_or("", |n| n)
        )
    }

    fn from_object(object: SandboxObject) -> Self {
        Self {
            id: Value::Value(object.id),
            name: Value::Value(object.name),
            kind: Value::Value(object.kind),
            endpoint: Value::Value(object.endpoint),
            secret: Value::Value(object.secret),
            properties: object.properties.map_or(Value::Null, |properties| {
                Value::Value(
                    properties
                        .into_iter()
                        .map(|(key, value)| (key, Value::from(value)))
                        .collect(),
                )
            }),
            create_delay_ms: object.create_delay_ms.into(),
            update_delay_ms: object.update_delay_ms.into(),
            destroy_delay_ms: object.destroy_delay_ms.into(),
            fail_on_create: object.fail_on_create.into(),
            fail_on_destroy: object.fail_on_destroy.into(),
        }
    }

    /// The object to store for this (fully known, at apply time) state. Attributes that are
    /// still unknown are an error: terraform resolves everything but computed ones before apply.
    fn to_object(&self, id: &ObjectId, status: ObjectStatus) -> Result<SandboxObject, String> {
        let known = |field: &str, value: &ValueText| match value {
            Value::Value(text) => Ok(text.clone()),
            Value::Null => Err(format!("the attribute {field} is null")),
            Value::Unknown => Err(format!("the attribute {field} is still unknown")),
        };
        let name = known("name", &self.name)?;
        let kind = known("kind", &self.kind)?;
        let endpoint = match &self.endpoint {
            Value::Value(endpoint) => endpoint.clone(),
            _ => naming::endpoint(&kind, &name),
        };
        let secret = match &self.secret {
            Value::Value(secret) => secret.clone(),
            _ => naming::new_secret()?,
        };
        let properties = match &self.properties {
            Value::Value(properties) => Some(
                properties
                    .iter()
                    .map(|(key, value)| match value {
                        Value::Unknown => Err(format!("the property {key:?} is still unknown")),
                        other => Ok((key.clone(), other.as_ref_option().cloned())),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Null => None,
            Value::Unknown => return Err("the attribute properties is still unknown".into()),
        };
        Ok(SandboxObject {
            id: id.to_string(),
            name,
            kind,
            endpoint,
            secret,
            properties,
            create_delay_ms: known_option("create_delay_ms", self.create_delay_ms)?,
            update_delay_ms: known_option("update_delay_ms", self.update_delay_ms)?,
            destroy_delay_ms: known_option("destroy_delay_ms", self.destroy_delay_ms)?,
            fail_on_create: known_option("fail_on_create", self.fail_on_create)?,
            fail_on_destroy: known_option("fail_on_destroy", self.fail_on_destroy)?,
            status,
        })
    }
}

fn known_option<T>(field: &str, value: Value<T>) -> Result<Option<T>, String> {
    match value {
        Value::Unknown => Err(format!("the attribute {field} is still unknown")),
        other => Ok(other.as_option()),
    }
}

/// The planned endpoint: known as soon as kind and name are.
fn planned_endpoint(state: &ResourceState) -> ValueText {
    match (&state.kind, &state.name) {
        (Value::Value(kind), Value::Value(name)) => Value::Value(naming::endpoint(kind, name)),
        _ => Value::Unknown,
    }
}

fn delay(value: ValueNumber) -> Duration {
    let ms = value.as_option().unwrap_or(0).clamp(0, MAX_DELAY_MS);
    Duration::from_millis(ms.unsigned_abs())
}

/// Runs a file-store call on tokio's blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(StoreError::Write {
            path: Default::default(),
            source: std::io::Error::other(join_error.to_string()),
        }),
    }
}

/// The `sandbox_resource` resource type.
pub struct SandboxResource {
    store: SharedStore,
}

impl SandboxResource {
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }

    fn store(&self, diags: &mut Diagnostics) -> Option<Store> {
        let store = self.store.get();
        if store.is_none() {
            error(
                diags,
                "The sandbox provider is not configured",
                "Terraform called the resource before configuring the provider, so the sandbox directory is unknown.",
            );
        }
        store
    }

    fn state_id(diags: &mut Diagnostics, state: &ResourceState) -> Option<ObjectId> {
        let parsed = match &state.id {
            Value::Value(id) => ObjectId::parse(id).map_err(|err| err.to_string()),
            _ => Err("The resource has no id in the state.".to_owned()),
        };
        match parsed {
            Ok(id) => Some(id),
            Err(detail) => {
                attribute_error(diags, "id", "Invalid sandbox object id", detail);
                None
            }
        }
    }
}

fn text_attribute(description: &str, constraint: AttributeConstraint) -> Attribute {
    Attribute {
        attr_type: AttributeType::String,
        description: Description::plain(description),
        constraint,
        ..Default::default()
    }
}

fn typed_attribute(attr_type: AttributeType, description: &str) -> Attribute {
    Attribute {
        attr_type,
        description: Description::plain(description),
        constraint: AttributeConstraint::Optional,
        ..Default::default()
    }
}

#[async_trait]
impl Resource for SandboxResource {
    type State<'a> = ResourceState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, OptionalComputed, Required};
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                description: Description::plain(
                    "A pretend cloud object, stored as <id>.json in the sandbox directory while it exists.",
                ),
                attributes: map! {
                    "id" => text_attribute("Object id; also the file name in the sandbox directory.", Computed),
                    "name" => text_attribute("Name of the object. Changing it replaces the object.", Required),
                    "kind" => text_attribute("Free-text kind: iot_hub, database, function, grafana, twin, ... Changing it replaces the object.", Required),
                    "endpoint" => text_attribute("https://<kind>-<name>.sandbox.local", Computed),
                    "secret" => Attribute {
                        sensitive: true,
                        ..text_attribute("Access secret; generated when not given.", OptionalComputed)
                    },
                    "properties" => typed_attribute(
                        AttributeType::Map(Box::new(AttributeType::String)),
                        "Free-form string properties, stored with the object.",
                    ),
                    "create_delay_ms" => typed_attribute(AttributeType::Number, "How long creating takes, in milliseconds (default 0)."),
                    "update_delay_ms" => typed_attribute(AttributeType::Number, "How long an in-place update takes, in milliseconds (default 0)."),
                    "destroy_delay_ms" => typed_attribute(AttributeType::Number, "How long destroying takes, in milliseconds (default 0)."),
                    "fail_on_create" => typed_attribute(AttributeType::Bool, "When true, creating fails after its delay and leaves nothing behind (default false)."),
                    "fail_on_destroy" => typed_attribute(AttributeType::Bool, "When true, destroying fails after its delay and the object stays (default false)."),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ResourceState) -> Option<()> {
        for (field, value) in [("name", &config.name), ("kind", &config.kind)] {
            if matches!(value, Value::Value(text) if text.trim().is_empty()) {
                attribute_error(
                    diags,
                    field,
                    "Empty value",
                    format!("The attribute {field} must not be empty."),
                );
            }
        }
        for (field, value) in [
            ("create_delay_ms", config.create_delay_ms),
            ("update_delay_ms", config.update_delay_ms),
            ("destroy_delay_ms", config.destroy_delay_ms),
        ] {
            if let Value::Value(ms) = value {
                if !(0..=MAX_DELAY_MS).contains(&ms) {
                    attribute_error(
                        diags,
                        field,
                        "Delay out of range",
                        format!("The attribute {field} must be between 0 and {MAX_DELAY_MS} milliseconds; it is {ms}."),
                    );
                }
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: ResourceState,
        private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<(ResourceState, ValueEmpty)> {
        let store = self.store(diags)?;
        let id = Self::state_id(diags, &state)?;
        match blocking(move || store.load(&id)).await {
            // Gone outside terraform: dropping it from state makes the next plan create it again.
            Ok(None) => None,
            Ok(Some(object)) => Some((ResourceState::from_object(object), private_state)),
            Err(err) => {
                error(
                    diags,
                    format!("Cannot read {}", state.describe()),
                    format!("{err}."),
                );
                Some((state, private_state))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed_state: ResourceState,
        _config_state: ResourceState,
        _provider_meta_state: ValueEmpty,
    ) -> Option<(ResourceState, ValueEmpty)> {
        let mut state = proposed_state;
        state.id = Value::Unknown;
        state.endpoint = planned_endpoint(&state);
        if state.secret.is_null() {
            state.secret = Value::Unknown;
        }
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior_state: ResourceState,
        proposed_state: ResourceState,
        _config_state: ResourceState,
        prior_private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<(ResourceState, ValueEmpty, Vec<AttributePath>)> {
        let mut replace = Vec::new();
        if proposed_state.name != prior_state.name {
            replace.push(AttributePath::new("name"));
        }
        if proposed_state.kind != prior_state.kind {
            replace.push(AttributePath::new("kind"));
        }
        let mut state = proposed_state;
        if replace.is_empty() {
            state.endpoint = prior_state.endpoint;
        } else {
            state.endpoint = planned_endpoint(&state);
        }
        Some((state, prior_private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: ResourceState,
        prior_private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: ResourceState,
        _config_state: ResourceState,
        planned_private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<(ResourceState, ValueEmpty)> {
        let store = self.store(diags)?;
        let what = planned_state.describe();
        let prepared = match (&planned_state.kind, &planned_state.name) {
            (Value::Value(kind), Value::Value(name)) => naming::new_object_id(kind, name),
            _ => Err("its kind or name is still unknown".to_owned()),
        }
        .and_then(|id| {
            Ok((
                id.clone(),
                planned_state.to_object(&id, ObjectStatus::Creating)?,
            ))
        });
        let (id, mut object) = match prepared {
            Ok(prepared) => prepared,
            Err(detail) => {
                error(diags, format!("Cannot create {what}"), format!("{detail}."));
                return None;
            }
        };

        // The object exists from the moment the call is made, as in a real cloud: if terraform
        // loses this create (an interrupted apply), the file stays as a visible orphan.
        let first = object.clone();
        let saving = store.clone();
        if let Err(err) = blocking(move || saving.save(&first)).await {
            error(diags, format!("Cannot create {what}"), format!("{err}."));
            return None;
        }

        tokio::time::sleep(delay(planned_state.create_delay_ms)).await;

        if object.fail_on_create == Some(true) {
            let removing = store.clone();
            let removed = blocking(move || removing.remove(&id)).await;
            let detail = match removed {
                Ok(_) => format!(
                    "fail_on_create is set, so the object was removed again after {} ms; nothing is left behind.",
                    delay(planned_state.create_delay_ms).as_millis()
                ),
                Err(err) => format!("fail_on_create is set, and removing the object failed: {err}."),
            };
            error(diags, format!("Creating {what} failed"), detail);
            return None;
        }

        object.status = ObjectStatus::Ready;
        let ready = object.clone();
        if let Err(err) = blocking(move || store.save(&ready)).await {
            // It exists but is not marked ready: terraform keeps it in state as tainted.
            error(
                diags,
                format!("Cannot finish creating {what}"),
                format!("{err}."),
            );
        }
        Some((ResourceState::from_object(object), planned_private_state))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: ResourceState,
        planned_state: ResourceState,
        _config_state: ResourceState,
        planned_private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<(ResourceState, ValueEmpty)> {
        let store = self.store(diags)?;
        let id = Self::state_id(diags, &prior_state)?;
        let what = planned_state.describe();
        tokio::time::sleep(delay(planned_state.update_delay_ms)).await;
        let object = match planned_state.to_object(&id, ObjectStatus::Ready) {
            Ok(object) => object,
            Err(detail) => {
                error(diags, format!("Cannot update {what}"), format!("{detail}."));
                return None;
            }
        };
        let saved = object.clone();
        if let Err(err) = blocking(move || store.save(&saved)).await {
            error(diags, format!("Cannot update {what}"), format!("{err}."));
            return None;
        }
        Some((ResourceState::from_object(object), planned_private_state))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: ResourceState,
        _planned_private_state: ValueEmpty,
        _provider_meta_state: ValueEmpty,
    ) -> Option<()> {
        let store = self.store(diags)?;
        let id = Self::state_id(diags, &prior_state)?;
        let what = prior_state.describe();
        tokio::time::sleep(delay(prior_state.destroy_delay_ms)).await;
        if prior_state.fail_on_destroy == Value::Value(true) {
            error(
                diags,
                format!("Destroying {what} failed"),
                format!("fail_on_destroy is set, so the object {id} still exists. Set fail_on_destroy = false and apply before destroying it."),
            );
            return None;
        }
        match blocking(move || store.remove(&id)).await {
            Ok(_) => Some(()),
            Err(err) => {
                error(diags, format!("Cannot destroy {what}"), format!("{err}."));
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(ResourceState, ValueEmpty)> {
        let store = self.store(diags)?;
        let object_id = match ObjectId::parse(&id) {
            Ok(object_id) => object_id,
            Err(err) => {
                error(diags, "Cannot import", format!("{err}."));
                return None;
            }
        };
        let dir = store.dir().display().to_string();
        match blocking(move || store.load(&object_id)).await {
            Ok(Some(object)) => Some((ResourceState::from_object(object), ValueEmpty::default())),
            Ok(None) => {
                error(
                    diags,
                    "Cannot import",
                    format!("There is no sandbox object {id} in {dir}."),
                );
                None
            }
            Err(err) => {
                error(diags, "Cannot import", format!("{err}."));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn planned() -> ResourceState {
        ResourceState {
            id: Value::Unknown,
            name: Value::Value("Plant 7".into()),
            kind: Value::Value("iot_hub".into()),
            endpoint: Value::Unknown,
            secret: Value::Unknown,
            properties: Value::Value(BTreeMap::from([
                ("sku".to_owned(), Value::Value("S1".to_owned())),
                ("none".to_owned(), Value::Null),
            ])),
            create_delay_ms: Value::Value(10),
            ..Default::default()
        }
    }

    #[test]
    fn object_and_state_round_trip_with_generated_fields() {
        let id = ObjectId::parse("iot-hub-plant-7-00000000").unwrap();
        let object = planned().to_object(&id, ObjectStatus::Ready).unwrap();
        assert_eq!(object.endpoint, "https://iot-hub-plant-7.sandbox.local");
        assert!(object.secret.starts_with("sbx_"));
        assert_eq!(object.update_delay_ms, None);
        let state = ResourceState::from_object(object.clone());
        assert_eq!(state.id, Value::Value(id.to_string()));
        assert_eq!(state.properties, planned().properties);
        assert_eq!(state.fail_on_create, Value::Null);
        assert_eq!(state.to_object(&id, ObjectStatus::Ready).unwrap(), object);
    }

    #[test]
    fn unknown_configured_values_are_refused() {
        let id = ObjectId::parse("x").unwrap();
        let mut state = planned();
        state.name = Value::Unknown;
        let err = state.to_object(&id, ObjectStatus::Ready).unwrap_err();
        assert_eq!(err, "the attribute name is still unknown");
    }

    #[test]
    fn endpoint_is_known_at_plan_time_when_kind_and_name_are() {
        assert_eq!(
            planned_endpoint(&planned()),
            Value::Value("https://iot-hub-plant-7.sandbox.local".to_owned())
        );
        let mut state = planned();
        state.kind = Value::Unknown;
        assert_eq!(planned_endpoint(&state), Value::Unknown);
    }

    #[test]
    fn delays_default_to_zero_and_are_clamped() {
        assert_eq!(delay(Value::Null), Duration::ZERO);
        assert_eq!(delay(Value::Value(-5)), Duration::ZERO);
        assert_eq!(delay(Value::Value(250)), Duration::from_millis(250));
        assert_eq!(
            delay(Value::Value(i64::MAX)),
            Duration::from_millis(MAX_DELAY_MS as u64)
        );
    }
}
