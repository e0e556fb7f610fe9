//! Names and paths that come from users, checked once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// A twin's display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TwinName(String);

/// The rule of every display name (twins, credentials): `raw` trimmed, 1 to `max_chars`
/// characters, no control characters.
pub(super) fn display_name(raw: &str, max_chars: usize) -> Result<String, ValidationError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ValidationError::new("name must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(ValidationError::new(format!(
            "name must be at most {max_chars} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

impl TwinName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        display_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TwinName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TwinName> for String {
    fn from(name: TwinName) -> String {
        name.0
    }
}

impl fmt::Display for TwinName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file inside a twin's configuration, relative to the twin's working directory.
/// Nested paths such as `modules/db/main.tf` are fine; absolute paths, `..`, `.` and empty
/// segments, backslashes and names the gateway reserves for itself are not.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct FilePath(String);

impl FilePath {
    pub const MAX_LEN: usize = 255;
    /// Files the gateway writes into a working directory itself.
    pub const RESERVED_PREFIX: &'static str = "terrastream_";

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let refuse = |why: &str| {
            let shown: String = raw.chars().take(80).collect();
            Err(ValidationError::new(format!("file path '{shown}' {why}")))
        };
        if raw.is_empty() {
            return refuse("is empty");
        }
        if raw.len() > Self::MAX_LEN {
            return refuse("is too long (at most 255 bytes)");
        }
        if raw.starts_with('/') {
            return refuse("must be relative, not absolute");
        }
        if raw.contains('\\') || raw.chars().any(char::is_control) {
            return refuse("must not contain backslashes or control characters");
        }
        for segment in raw.split('/') {
            match segment {
                "" => return refuse("has an empty segment"),
                "." | ".." => return refuse("must not contain '.' or '..' segments"),
                s if s.starts_with('.') => return refuse("must not name hidden files"),
                _ => {}
            }
        }
        if raw.starts_with(Self::RESERVED_PREFIX) {
            return refuse("uses a name reserved for the gateway (terrastream_*)");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for files terraform reads as configuration.
    pub fn is_configuration(&self) -> bool {
        self.0.ends_with(".tf") || self.0.ends_with(".tf.json")
    }
}

impl TryFrom<String> for FilePath {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<FilePath> for String {
    fn from(path: FilePath) -> String {
        path.0
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            TwinName::parse("  plant 7 ").map(String::from),
            Ok("plant 7".into())
        );
        assert!(TwinName::parse("   ").is_err());
        assert!(TwinName::parse(&"x".repeat(101)).is_err());
        assert!(TwinName::parse(&"é".repeat(100)).is_ok());
        assert!(TwinName::parse("a\nb").is_err());
    }

    #[test]
    fn nested_relative_paths_are_accepted() {
        for ok in [
            "main.tf",
            "modules/db/main.tf",
            "vars.auto.tfvars",
            "a-b_c.tf.json",
        ] {
            assert!(FilePath::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn escaping_or_odd_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x.tf",
            "a/../../x.tf",
            "./main.tf",
            "a//b.tf",
            "a/",
            "a\\b.tf",
            ".terraform/x",
            "terrastream_backend.tf",
            "a\0b",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(FilePath::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn configuration_files_are_recognised() {
        assert!(FilePath::parse("main.tf").is_ok_and(|p| p.is_configuration()));
        assert!(FilePath::parse("x.tf.json").is_ok_and(|p| p.is_configuration()));
        assert!(FilePath::parse("x.tfvars").is_ok_and(|p| !p.is_configuration()));
    }
}
