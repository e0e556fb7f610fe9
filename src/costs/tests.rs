use serde_json::{json, Value};

use super::*;

/// A book written for these tests, so the figures below can be checked by hand.
const TEST_BOOK: &str = r#"{
  "description": "test prices",
  "currency": "USD",
  "region_factors": { "eu-central-1": 1.2 },
  "resources": {
    "sandbox_resource": {
      "by_attribute": {
        "attribute": "kind",
        "values": {
          "iot_hub":  { "category": "networking", "monthly": 12.34 },
          "database": { "category": "database",   "monthly": 45.67, "regions": { "frankfurt": 1.15 } },
          "function": { "category": "compute",    "monthly": 3.21 },
          "grafana":  { "category": "compute",    "monthly": 9.99 },
          "twin":     { "category": "storage",    "monthly": 0.5 }
        }
      }
    },
    "aws_db_instance": { "category": "database", "monthly": 100, "regions": { "eu-central-1": 1.1 } }
  }
}"#;

fn book() -> PriceBook {
    PriceBook::parse(TEST_BOOK, "test").unwrap()
}

fn demo_state() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/costs/demo.tfstate.json")).unwrap()
}

fn cents(c: i64) -> Money {
    Money::from_cents(c)
}

#[test]
fn the_demo_state_is_twelve_instances_with_terraform_addresses() {
    let resources = resources_from_state(&demo_state());
    assert_eq!(resources.len(), 12);
    let addresses: Vec<&str> = resources.iter().map(|r| r.address.as_str()).collect();
    assert!(
        addresses.contains(&r#"sandbox_resource.line["line-a"]"#),
        "{addresses:?}"
    );
    assert!(addresses.contains(&"sandbox_resource.iot_hub"));
    assert!(resources
        .iter()
        .all(|r| r.resource_type == "sandbox_resource"
            && r.count == 1
            && r.region.is_none()
            && r.attributes["kind"].is_string()));
}

/// By hand: networking 1 x 12.34; database 2 x 45.67 = 91.34; compute 3 x 3.21 + 2 x 9.99 =
/// 9.63 + 19.98 = 29.61; storage 4 x 0.50 = 2.00; total 12.34 + 91.34 + 29.61 + 2.00 = 135.29.
#[test]
fn the_demo_twin_costs_the_hand_computed_figure() {
    let estimate = estimate(&book(), &resources_from_state(&demo_state()), None);
    let costs = &estimate.costs;
    assert_eq!(costs.networking, cents(1234));
    assert_eq!(costs.database, cents(9134));
    assert_eq!(costs.compute, cents(2961));
    assert_eq!(costs.storage, cents(200));
    assert_eq!(costs.total, cents(13_529));
    assert_eq!(
        costs.resource_counts,
        ResourceCounts {
            compute: 5,
            storage: 4,
            networking: 1,
            database: 2
        }
    );
    assert!(estimate.unpriced.is_empty());
    assert_eq!(estimate.breakdown.len(), 12);

    let shown = serde_json::to_value(&estimate).unwrap();
    assert_eq!(
        shown["costs"],
        json!({
            "compute": 29.61, "storage": 2.0, "networking": 12.34, "database": 91.34,
            "total": 135.29,
            "resourceCounts": { "compute": 5, "storage": 4, "networking": 1, "database": 2 },
            "currency": "USD", "period": "monthly"
        })
    );
    assert_eq!(shown["estimated"], true);
    assert_eq!(shown["costs"]["total"].to_string(), "135.29");
    let line = shown["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["address"] == r#"sandbox_resource.line["line-b"]"#)
        .unwrap();
    assert_eq!(
        line,
        &json!({ "address": r#"sandbox_resource.line["line-b"]"#, "type": "sandbox_resource",
                 "category": "storage", "monthly": 0.5, "region": null })
    );
}

/// The twin's region: database 45.67 x 1.15 = 52.5205 -> 52.52 each (rounded per resource),
/// 105.04 for two; the book-wide factor does not apply to a value with its own; everything
/// else at the base price: total 12.34 + 105.04 + 29.61 + 2.00 = 148.99.
#[test]
fn a_region_factor_applies_per_resource_rounded_to_the_cent() {
    let estimate = estimate(
        &book(),
        &resources_from_state(&demo_state()),
        Some("Frankfurt"),
    );
    assert_eq!(estimate.costs.database, cents(10_504));
    assert_eq!(estimate.costs.total, cents(14_899));
    let db = estimate
        .breakdown
        .iter()
        .find(|l| l.address == "sandbox_resource.telemetry_db")
        .unwrap();
    assert_eq!(
        (db.monthly, db.region.as_deref()),
        (cents(5252), Some("Frankfurt"))
    );

    // The book-wide factor: 1.2 for every sandbox kind in eu-central-1.
    let frankfurt = super::estimate(
        &book(),
        &resources_from_state(&demo_state()),
        Some("eu-central-1"),
    );
    // Rounded per resource: 14.81 + 2 x 54.80 + 3 x 3.85 + 2 x 11.99 + 4 x 0.60 = 162.34, not
    // 135.29 x 1.2 = 162.348.
    assert_eq!(frankfurt.costs.total, cents(16_234));
    assert_eq!(frankfurt.costs.networking, cents(1481)); // 14.808
}

#[test]
fn a_resource_region_wins_over_the_twin_region() {
    let resources = [
        ResourceUse::new(
            "aws_db_instance.a",
            "aws_db_instance",
            json!({ "region": "eu-central-1" }),
        ),
        ResourceUse::new("aws_db_instance.b", "aws_db_instance", json!({})),
    ];
    let estimate = estimate(&book(), &resources, Some("us-east-1"));
    let monthly: Vec<Money> = estimate.breakdown.iter().map(|l| l.monthly).collect();
    assert_eq!(monthly, [cents(11_000), cents(10_000)]);
    assert_eq!(estimate.costs.database, cents(21_000));
}

#[test]
fn unknown_types_and_kinds_are_unpriced_not_guessed() {
    let resources = [
        ResourceUse::new("aws_db_instance.main", "aws_db_instance", json!({})),
        ResourceUse::new(
            "aws_quantum_computer.q",
            "aws_quantum_computer",
            json!({ "size": "xl" }),
        ),
        ResourceUse::new(
            "sandbox_resource.t",
            "sandbox_resource",
            json!({ "kind": "test" }),
        ),
        ResourceUse::new(
            "sandbox_resource.u",
            "sandbox_resource",
            json!({ "kind": null }),
        ),
    ];
    let estimate = estimate(&book(), &resources, None);
    assert_eq!(estimate.costs.total, cents(10_000));
    assert_eq!(estimate.costs.database, cents(10_000));
    assert_eq!(estimate.costs.resource_counts.database, 1);
    let unpriced = serde_json::to_value(&estimate.unpriced).unwrap();
    assert_eq!(
        unpriced,
        json!([
            { "address": "aws_quantum_computer.q", "type": "aws_quantum_computer",
              "reason": "the price book has no entry for this type" },
            { "address": "sandbox_resource.t", "type": "sandbox_resource",
              "reason": "the price book has no price for kind = \"test\"" },
            { "address": "sandbox_resource.u", "type": "sandbox_resource",
              "reason": "priced by its 'kind' attribute, which is missing or not known yet" },
        ])
    );
}

#[test]
fn nothing_costs_nothing() {
    let estimate = estimate(&book(), &[], None);
    let shown = serde_json::to_value(&estimate).unwrap();
    assert_eq!(shown["costs"]["total"], 0.0);
    assert_eq!(shown["costs"]["resourceCounts"]["compute"], 0);
    assert_eq!(shown["unpriced"], json!([]));
    assert!(resources_from_state(&json!({ "version": 4, "resources": [] })).is_empty());
    assert!(resources_from_state(&json!(null)).is_empty());
}

#[test]
fn data_sources_modules_and_counts_are_read_from_a_state() {
    let state = json!({
        "version": 4,
        "resources": [
            { "mode": "data", "type": "aws_ami", "name": "ubuntu", "instances": [{ "attributes": {} }] },
            { "module": "module.db", "mode": "managed", "type": "aws_db_instance", "name": "main",
              "instances": [{ "index_key": 0, "attributes": { "region": "eu-central-1" } },
                            { "index_key": 1, "attributes": {} }] },
        ]
    });
    let resources = resources_from_state(&state);
    let addresses: Vec<&str> = resources.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "module.db.aws_db_instance.main[0]",
            "module.db.aws_db_instance.main[1]"
        ]
    );
    assert_eq!(resources[0].region.as_deref(), Some("eu-central-1"));
    assert_eq!(resources[1].region, None);
}

#[test]
fn azure_location_counts_as_the_region() {
    let use_ = ResourceUse::new(
        "azurerm_iothub.hub",
        "azurerm_iothub",
        json!({ "location": "westeurope" }),
    );
    assert_eq!(use_.region.as_deref(), Some("westeurope"));
}

/// The plan adds line-c (+0.50 storage), replaces grafana (same price) and updates dashboards.
#[test]
fn a_plan_has_two_sides_and_a_monthly_delta() {
    let plan: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/costs/plan_add_line.json"
    ))
    .unwrap();
    let sides = resources_from_plan(&plan);
    assert_eq!(sides.before.len(), 12);
    assert_eq!(sides.after.len(), 13);
    assert!(sides.after.iter().any(
        |r| r.address == r#"sandbox_resource.line["line-c"]"# && r.attributes["kind"] == "twin"
    ));

    let book = book();
    let before = estimate(&book, &sides.before, None);
    let after = estimate(&book, &sides.after, None);
    assert_eq!(before.costs.total, cents(13_529));
    assert_eq!(after.costs.total, cents(13_579));
    let change = delta(&before, &after);
    assert_eq!(change.total, cents(50));
    assert_eq!(change.storage, cents(50));
    assert_eq!(change.compute, Money::ZERO);
    assert_eq!(
        serde_json::to_value(&change).unwrap(),
        json!({ "compute": 0.0, "storage": 0.5, "networking": 0.0, "database": 0.0, "total": 0.5,
                "currency": "USD", "period": "monthly" })
    );

    let destroy = delta(&after, &estimate(&book, &[], None));
    assert_eq!(destroy.total, cents(-13_579));
    assert_eq!(serde_json::to_value(&destroy).unwrap()["total"], -135.79);
}

#[test]
fn money_reads_as_decimal_text() {
    assert_eq!(cents(13_529).to_string(), "135.29");
    assert_eq!(cents(-5).to_string(), "-0.05");
    assert_eq!(serde_json::to_string(&cents(10)).unwrap(), "0.1");
    assert_eq!(
        serde_json::to_string(&cents(100_000_007)).unwrap(),
        "1000000.07"
    );
}

#[test]
fn the_bundled_book_prices_the_demo_without_unpriced_resources() {
    let estimate = estimate(
        &PriceBook::bundled().unwrap(),
        &resources_from_state(&demo_state()),
        None,
    );
    assert!(estimate.unpriced.is_empty(), "{:?}", estimate.unpriced);
    assert_eq!(estimate.breakdown.len(), 12);
    let counts = estimate.costs.resource_counts;
    assert_eq!(
        counts.compute + counts.storage + counts.networking + counts.database,
        12
    );
}

#[test]
fn a_plan_run_result_lists_resources_with_their_attributes() {
    let planned: Vec<crate::domain::PlannedResource> = serde_json::from_value(json!([
        { "address": "sandbox_resource.iot_hub", "type": "sandbox_resource",
          "actions": ["no-op"], "attributes": { "kind": "iot_hub", "secret": "********" } },
        { "address": "aws_db_instance.main", "type": "aws_db_instance",
          "actions": ["create"], "attributes": { "region": "eu-central-1" } },
    ]))
    .unwrap_or_default();
    let resources = resources_from_planned(&planned);
    assert_eq!(resources.len(), 2);
    let estimate = estimate(&book(), &resources, None);
    assert_eq!(estimate.costs.networking, cents(1234));
    assert_eq!(estimate.costs.database, cents(11_000));
    assert!(resources_from_planned(&[]).is_empty());
}
