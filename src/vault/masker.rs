//! Replaces known secret values wherever they would be shown or stored: terraform's lines (in
//! the run monitor, before the spool), a run's errors, outputs and findings, a twin's outputs.

use serde_json::Value;

use crate::domain::MASK;

/// Shorter values are not masked: they would blank out ordinary words.
const MIN_MASKED_LEN: usize = 6;

/// Replaces known secret values in text. Handed to a run's monitors (in memory, on their
/// stdin), so what reaches a spool is masked already.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    /// Each secret is also masked as JSON writes it inside a string (`"` as `\"`, a newline
    /// as `\n`, ...): terraform's `-json` lines carry values that way.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_MASKED_LEN {
                continue;
            }
            if let Ok(quoted) = serde_json::to_string(&secret) {
                let escaped = &quoted[1..quoted.len() - 1];
                if escaped != secret {
                    all.push(escaped.to_owned());
                }
            }
            all.push(secret);
        }
        // Longest first, so a secret that contains another is masked whole.
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Self { secrets: all }
    }

    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.secrets.iter().cloned().chain(more))
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn mask(&self, text: String) -> String {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return text;
        }
        self.secrets
            .iter()
            .fold(text, |acc, secret| acc.replace(secret.as_str(), MASK))
    }

    /// A JSON value with every secret masked: inside strings (and keys), and a number that is
    /// one of the secrets whole becomes the mask.
    pub fn mask_json(&self, value: Value) -> Value {
        if self.secrets.is_empty() {
            return value;
        }
        match value {
            Value::String(text) => Value::String(self.mask(text)),
            Value::Number(number) => {
                let text = number.to_string();
                if self.secrets.contains(&text) {
                    Value::String(MASK.to_owned())
                } else {
                    Value::Number(number)
                }
            }
            Value::Array(items) => items.into_iter().map(|v| self.mask_json(v)).collect(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (self.mask(k), self.mask_json(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_wherever_they_appear() {
        let masker = Masker::new(["s3cr3t-value".to_owned(), "abc".to_owned()]);
        assert_eq!(
            masker.mask("key=s3cr3t-value; again s3cr3t-value".into()),
            "key=********; again ********"
        );
        assert_eq!(
            masker.mask("abc is too short to mask".into()),
            "abc is too short to mask"
        );
    }

    #[test]
    fn json_escaped_forms_and_json_values_are_masked_too() {
        let masker = Masker::new(["pa\"ss word".to_owned(), "1234567".to_owned()]);
        let line = json!({"@message": "echo pa\"ss word"}).to_string();
        assert!(!masker.mask(line).contains("ss word"));
        let masked =
            masker.mask_json(json!({"a": ["x pa\"ss word", 1234567, 12], "pa\"ss word": true}));
        assert_eq!(masked, json!({"a": ["x ********", MASK, 12], MASK: true}));
    }

    #[test]
    fn a_secret_given_twice_is_kept_once() {
        let masker = Masker::new([
            "aaaaaa".to_owned(),
            "bbbbbb".to_owned(),
            "aaaaaa".to_owned(),
        ]);
        assert_eq!(masker.secrets.len(), 2);
    }
}
