//! Typed, prefixed identifiers: a run id can never be passed where a twin id is expected, and an
//! id from a URL is checked once, when it is parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind} id (expected {prefix}<32 hex digits>)")]
pub struct IdError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $kind:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id; time-ordered (UUIDv7) so ids sort by creation.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, Uuid::now_v7().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                let valid = value
                    .strip_prefix($prefix)
                    .is_some_and(|hex| {
                        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    });
                if valid {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(IdError {
                        kind: $kind,
                        prefix: $prefix,
                        value: value.chars().take(80).collect(),
                    })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// A string of the prefix and 32 lowercase hex digits, as `FromStr` accepts it.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("A ", $kind, " id: `", $prefix, "` and 32 lowercase hex digits.")))
                    .pattern(Some(concat!("^", $prefix, "[0-9a-f]{32}$")))
                    .examples([concat!($prefix, "0192f4c3a1b27d5e8f0a1b2c3d4e5f60")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(TwinId, "twin_", "twin");
prefixed_id!(RunId, "run_", "run");
prefixed_id!(ReplicaId, "replica_", "replica");
prefixed_id!(CredentialId, "cred_", "credential");
prefixed_id!(WebhookId, "wh_", "webhook");
// A webhook message: its `webhook-id`, the same on every attempt to deliver it.
prefixed_id!(MessageId, "msg_", "message");
// One message's delivery to one webhook.
prefixed_id!(DeliveryId, "dlv_", "delivery");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = TwinId::generate();
        assert_eq!(id.as_str().parse::<TwinId>(), Ok(id.clone()));
        assert!(id.as_str().starts_with("twin_"));
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_refused() {
        let run = RunId::generate();
        assert!(run.as_str().parse::<TwinId>().is_err());
        for bad in [
            "",
            "twin_",
            "twin_xyz",
            "twin_0123456789ABCDEF0123456789abcdef",
            "1",
        ] {
            assert!(bad.parse::<TwinId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_kind_has_its_own_prefix() {
        let credential = CredentialId::generate();
        assert!(credential.as_str().starts_with("cred_"));
        assert_eq!(
            credential.as_str().parse::<CredentialId>(),
            Ok(credential.clone())
        );
        assert!(credential.as_str().parse::<TwinId>().is_err());
        assert!(WebhookId::generate().as_str().starts_with("wh_"));
        assert!(MessageId::generate().as_str().starts_with("msg_"));
        assert!(DeliveryId::generate()
            .as_str()
            .parse::<MessageId>()
            .is_err());
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let first = RunId::generate();
        let second = RunId::generate();
        assert!(first < second);
    }
}
