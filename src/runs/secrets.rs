//! Cloud credentials: read from the gateway's environment or a credentials file, handed only
//! to terraform, and masked wherever terraform might print them.

use std::ffi::OsString;
use std::path::Path;

/// Credential variables of the three clouds (and terraform's own token variables).
const CREDENTIAL_PREFIXES: &[&str] = &[
    "AWS_",
    "ARM_",
    "AZURE_",
    "GOOGLE_",
    "GCLOUD_",
    "CLOUDSDK_",
    "TF_TOKEN_",
];
/// Name fragments that mark a value as secret (masked in output).
const SECRET_MARKERS: &[&str] = &[
    "SECRET",
    "KEY",
    "TOKEN",
    "PASSWORD",
    "CREDENTIALS",
    "SESSION",
];
pub use crate::vault::Masker;

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    vars: Vec<(String, String)>,
}

impl Credentials {
    /// Credential variables from the environment, then from `file` (`NAME=value` lines,
    /// `#` comments), the file winning.
    pub fn load(file: Option<&Path>) -> std::io::Result<Self> {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| is_credential(name))
            .collect();
        if let Some(file) = file {
            for line in std::fs::read_to_string(file)?.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some((name, value)) = line.trim_start_matches("export ").split_once('=') {
                    let value = value.trim().trim_matches('"').trim_matches('\'');
                    vars.retain(|(n, _)| n != name.trim());
                    vars.push((name.trim().to_owned(), value.to_owned()));
                }
            }
        }
        Ok(Self { vars })
    }

    pub fn env(&self) -> impl Iterator<Item = (OsString, OsString)> + '_ {
        self.vars.iter().map(|(n, v)| (n.into(), v.into()))
    }

    /// The values to mask in anything terraform prints.
    pub fn secret_values(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter(|(name, _)| {
                SECRET_MARKERS
                    .iter()
                    .any(|m| name.to_ascii_uppercase().contains(m))
            })
            .map(|(_, value)| value.clone())
            .collect()
    }
}

fn is_credential(name: &str) -> bool {
    CREDENTIAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secret_looking_credentials_are_masked() {
        let creds = Credentials {
            vars: vec![
                ("AWS_REGION".into(), "eu-west-1".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "wJalrXUtnFEMI".into()),
            ],
        };
        assert_eq!(creds.secret_values(), vec!["wJalrXUtnFEMI".to_owned()]);
    }
}
