//! How sandbox objects are named: readable ids, fake endpoints and generated secrets.

use crate::store::ObjectId;

/// Lower-case ASCII letters and digits, every other run of characters turned into one `-`,
/// at most `max` characters; `x` when nothing is left. "IoT Hub" -> "iot-hub".
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The endpoint an object of this kind and name answers on, e.g.
/// `https://iot-hub-plant-7.sandbox.local`.
pub fn endpoint(kind: &str, name: &str) -> String {
    format!(
        "https://{}-{}.sandbox.local",
        slug(kind, 24),
        slug(name, 32)
    )
}

/// A fresh id: `<kind>-<name>-<8 random hex digits>`, readable in a directory listing.
pub fn new_object_id(kind: &str, name: &str) -> Result<ObjectId, String> {
    let id = format!("{}-{}-{}", slug(kind, 24), slug(name, 40), random_hex(4)?);
    // Slugs, '-' and hex digits within the length limit: parse cannot fail, but stays the gate.
    ObjectId::parse(&id).map_err(|err| err.to_string())
}

/// A fresh secret: `sbx_` and 32 random hex digits.
pub fn new_secret() -> Result<String, String> {
    Ok(format!("sbx_{}", random_hex(16)?))
}

fn random_hex(len: usize) -> Result<String, String> {
    let mut random = vec![0u8; len];
    getrandom::fill(&mut random)
        .map_err(|err| format!("the operating system gave no random bytes: {err}"))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn slug_keeps_letters_and_digits_only() {
        assert_eq!(slug("iot_hub", 24), "iot-hub");
        assert_eq!(slug("  Plant 7 / Line B  ", 40), "plant-7-line-b");
        assert_eq!(slug("___", 10), "x");
        assert_eq!(slug("Überwachung", 20), "berwachung");
        assert_eq!(slug("abcdef", 3), "abc");
        assert_eq!(slug("ab-cdef", 3), "ab");
    }

    #[test]
    fn endpoint_is_a_plausible_url() {
        assert_eq!(
            endpoint("iot_hub", "Plant 7"),
            "https://iot-hub-plant-7.sandbox.local"
        );
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = new_object_id("grafana", "ops dashboards").unwrap();
        let b = new_object_id("grafana", "ops dashboards").unwrap();
        assert!(a.as_str().starts_with("grafana-ops-dashboards-"));
        assert_eq!(a.as_str().len(), "grafana-ops-dashboards-".len() + 8);
        assert_ne!(a, b);
    }

    #[test]
    fn long_names_still_give_valid_ids() {
        let id = new_object_id(&"k".repeat(500), &"n".repeat(500)).unwrap();
        assert!(id.as_str().len() <= ObjectId::MAX_LEN);
    }

    #[test]
    fn secrets_are_random() {
        let a = new_secret().unwrap();
        assert!(a.starts_with("sbx_") && a.len() == 36);
        assert_ne!(a, new_secret().unwrap());
    }
}
