//! Reading a saved plan (`terraform show -json <plan>`): the managed resources that exist
//! after it is applied, with their planned attributes, sensitive ones masked. Costs are
//! computed from these.

use serde_json::{json, Value};

use crate::domain::PlannedResource;

/// Resources present once the plan is applied (created, updated, replaced or unchanged).
pub fn resources_after(shown: &Value) -> Vec<PlannedResource> {
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
            let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
            PlannedResource {
                address: text(&change["address"]),
                resource_type: text(&change["type"]),
                actions: plan["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect(),
                attributes: masked(&plan["after"], &plan["after_sensitive"]),
            }
        })
        .collect()
}

/// The planned attributes with exactly what terraform's `after_sensitive` marks replaced by
/// the mask. `after_sensitive` mirrors the value's shape: `true` marks a value (at any depth),
/// `false`, `{}` or `[]` mark nothing, an object or array marks inside it.
fn masked(after: &Value, sensitive: &Value) -> Value {
    if after.is_object() {
        crate::state::mask_marked(after, sensitive)
    } else {
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MASK;

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
        assert_eq!(after[0].address, "a.x");
        assert_eq!(after[0].attributes["kind"], "database");
        assert_eq!(after[0].attributes["secret"], MASK);
    }

    /// As terraform marks the sandbox provider's resources: `properties` is a map with nothing
    /// sensitive in it (`{}`), `secret` is sensitive.
    #[test]
    fn an_empty_sensitivity_structure_hides_nothing_and_nested_marks_hide_exactly_themselves() {
        let shown = json!({
            "resource_changes": [
                {"address": "s.a", "type": "s", "mode": "managed",
                 "change": {"actions": ["create"],
                            "after": {"name": "a", "properties": {"tier": "gold", "token": "t0k3n-value"},
                                      "tags": ["x", "hidden-one"], "secret": "s3cr3t"},
                            "after_sensitive": {"properties": {"token": true}, "tags": [false, true],
                                                "secret": true}}},
                {"address": "s.b", "type": "s", "mode": "managed",
                 "change": {"actions": ["create"],
                            "after": {"name": "b", "properties": {"tier": "silver"}, "secret": "x"},
                            "after_sensitive": {"properties": {}, "secret": true}}}
            ]
        });
        let after = resources_after(&shown);
        let a = &after[0].attributes;
        assert_eq!(a["properties"]["tier"], "gold");
        assert_eq!(a["properties"]["token"], MASK);
        assert_eq!(a["tags"], json!(["x", MASK]));
        assert_eq!(a["secret"], MASK);
        let b = &after[1].attributes;
        assert_eq!(b["properties"], json!({"tier": "silver"}));
        assert_eq!(b["name"], "b");
        assert!(!after
            .iter()
            .any(|r| r.attributes.to_string().contains("t0k3n-value")));
    }
}
