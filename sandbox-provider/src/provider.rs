//! The provider itself: where the sandbox directory is, and which resource types exist.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{map, Diagnostics, DynamicResource, Provider};

use crate::diagnostics::{attribute_error, error};
use crate::resource::SandboxResource;
use crate::store::Store;

/// Environment variable naming the sandbox directory when the provider block does not.
pub const SANDBOX_DIR_ENV: &str = "SANDBOX_DIR";

/// The store, known once terraform has configured the provider; shared with every resource.
#[derive(Clone, Default)]
pub struct SharedStore(Arc<RwLock<Option<Store>>>);

impl SharedStore {
    pub fn get(&self) -> Option<Store> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, store: Store) {
        match self.0.write() {
            Ok(mut guard) => *guard = Some(store),
            Err(poisoned) => *poisoned.into_inner() = Some(store),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    #[serde(default)]
    pub directory: Value<String>,
}

/// Where the sandbox lives: the provider block's `directory`, else `$SANDBOX_DIR`.
pub fn sandbox_dir(
    configured: &Value<String>,
    env_value: Option<String>,
) -> Result<PathBuf, (&'static str, String)> {
    match configured {
        Value::Value(dir) if dir.trim().is_empty() => Err((
            "Empty sandbox directory",
            "The provider's directory attribute must not be empty.".to_owned(),
        )),
        Value::Value(dir) => Ok(PathBuf::from(dir)),
        Value::Unknown => Err((
            "Sandbox directory not known yet",
            "The provider's directory attribute must be known when terraform plans; do not derive it from a resource.".to_owned(),
        )),
        Value::Null => match env_value {
            Some(dir) if !dir.trim().is_empty() => Ok(PathBuf::from(dir)),
            _ => Err((
                "No sandbox directory",
                format!("Set directory in the provider \"sandbox\" block or {SANDBOX_DIR_ENV} in terraform's environment."),
            )),
        },
    }
}

#[derive(Clone, Default)]
pub struct SandboxProvider {
    store: SharedStore,
}

impl SandboxProvider {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Provider for SandboxProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::plain(
                    "Pretend cloud whose objects are JSON files in a local directory.",
                ),
                attributes: map! {
                    "directory" => Attribute {
                        attr_type: AttributeType::String,
                        description: Description::plain(format!(
                            "Directory holding the sandbox objects; defaults to ${SANDBOX_DIR_ENV}. Created when missing."
                        )),
                        constraint: AttributeConstraint::Optional,
                        ..Default::default()
                    },
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ProviderConfig) -> Option<()> {
        if matches!(&config.directory, Value::Value(dir) if dir.trim().is_empty()) {
            attribute_error(
                diags,
                "directory",
                "Empty sandbox directory",
                "The provider's directory attribute must not be empty.",
            );
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: ProviderConfig,
    ) -> Option<()> {
        let dir = match sandbox_dir(&config.directory, std::env::var(SANDBOX_DIR_ENV).ok()) {
            Ok(dir) => dir,
            Err((summary, detail)) => {
                error(diags, summary, detail);
                return None;
            }
        };
        match tokio::task::spawn_blocking(move || Store::open(dir)).await {
            Ok(Ok(store)) => {
                self.store.set(store);
                Some(())
            }
            Ok(Err(err)) => {
                error(diags, "Cannot open the sandbox", format!("{err}."));
                None
            }
            Err(join_error) => {
                error(diags, "Cannot open the sandbox", join_error.to_string());
                None
            }
        }
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(map! {
            "resource" => SandboxResource::new(self.store.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn configured_directory_wins_over_the_environment() {
        let dir = sandbox_dir(&Value::Value("/a".into()), Some("/b".into())).unwrap();
        assert_eq!(dir, PathBuf::from("/a"));
    }

    #[test]
    fn environment_is_the_fallback() {
        let dir = sandbox_dir(&Value::Null, Some("/b".into())).unwrap();
        assert_eq!(dir, PathBuf::from("/b"));
    }

    #[test]
    fn neither_is_a_clear_error() {
        for env in [None, Some(String::new()), Some("  ".into())] {
            let (summary, detail) = sandbox_dir(&Value::Null, env).unwrap_err();
            assert_eq!(summary, "No sandbox directory");
            assert!(detail.contains("SANDBOX_DIR"), "{detail}");
        }
    }

    #[test]
    fn empty_or_unknown_directory_is_refused() {
        assert!(sandbox_dir(&Value::Value(String::new()), Some("/b".into())).is_err());
        assert!(sandbox_dir(&Value::Unknown, Some("/b".into())).is_err());
    }

    #[test]
    fn resources_see_the_store_once_configured() {
        let shared = SharedStore::default();
        assert!(shared.get().is_none());
        let tmp = tempfile::tempdir().unwrap();
        shared.clone().set(Store::open(tmp.path()).unwrap());
        assert_eq!(shared.get().unwrap().dir(), tmp.path());
    }
}
