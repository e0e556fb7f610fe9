//! Reading a saved plan (`terraform show -json <plan>`): the managed resources that exist
//! after it is applied, with their planned attributes, sensitive ones masked. Costs are
//! computed from these.

use serde_json::{json, Value};

use crate::state::MASK;

/// Resources present once the plan is applied (created, updated, replaced or unchanged):
/// `[{"address", "type", "actions", "attributes"}]`.
pub fn resources_after(shown: &Value) -> Vec<Value> {
    let Some(changes) = shown["resource_changes"].as_array() else {
        return Vec::new();
    };
    changes
        .iter()
        .filter(|change| change["mode"] == "managed")
        .filter(|change| {
            let actions = &change["change"]["actions"];
            !(actions.as_array().is_some_and(|a| a.len() == 1) && actions[0] == "delete")
        })
        .map(|change| {
            let plan = &change["change"];
            json!({
                "address": change["address"],
                "type": change["type"],
                "actions": plan["actions"],
                "attributes": masked(&plan["after"], &plan["after_sensitive"]),
            })
        })
        .collect()
}

/// Top-level attributes with the ones terraform marks sensitive replaced by the mask.
fn masked(after: &Value, sensitive: &Value) -> Value {
    let Some(attributes) = after.as_object() else {
        return json!({});
    };
    attributes
        .iter()
        .map(|(name, value)| {
            let hidden = match &sensitive[name] {
                Value::Bool(flag) => *flag,
                Value::Null => false,
                // Nested sensitivity: hide the whole attribute rather than walk it.
                _ => true,
            };
            (
                name.clone(),
                if hidden { json!(MASK) } else { value.clone() },
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_resources_are_gone_and_sensitive_attributes_masked() {
        let shown = json!({
            "resource_changes": [
                {"address": "a.x", "type": "a", "mode": "managed",
                 "change": {"actions": ["create"], "after": {"kind": "database", "secret": "s3cr3t"},
                            "after_sensitive": {"secret": true}}},
                {"address": "a.y", "type": "a", "mode": "managed",
                 "change": {"actions": ["delete"], "after": null, "after_sensitive": false}},
                {"address": "data.a.z", "type": "a", "mode": "data",
                 "change": {"actions": ["read"], "after": {}, "after_sensitive": {}}}
            ]
        });
        let after = resources_after(&shown);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["address"], "a.x");
        assert_eq!(after[0]["attributes"]["kind"], "database");
        assert_eq!(after[0]["attributes"]["secret"], MASK);
    }
}
