//! Cost estimates: a list of resources priced with a [`PriceBook`]. Pure functions, fed from
//! a terraform state ([`resources_from_state`]), a plan ([`resources_from_plan`]) or a plan
//! run's result ([`resources_from_planned`]); a type the book does not know is listed as
//! unpriced, never guessed.

mod book;

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use crate::domain::PlannedResource;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use book::{BookError, Category, Factor, NoPrice, Price, PriceBook};

/// An amount of money in cents of the book's currency. Sums are exact; only a region factor
/// rounds, once per resource, to the cent. Shown in JSON as a number of whole units (12.34).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    pub const fn cents(self) -> i64 {
        self.0
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, other: Money) {
        *self = *self + other;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// A number of whole units with at most two decimals, as `Serialize` writes it.
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "An amount in the price book's currency (cents exact: 12.34).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Money {}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The shortest text of the nearest double to n/100 is the decimal itself: 12.34.
        #[allow(clippy::cast_precision_loss)] // exact below 2^53 cents.
        serializer.serialize_f64(self.0 as f64 / 100.0)
    }
}

/// One resource instance to price: from a state, or the before or after side of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceUse {
    /// terraform's address: `sandbox_resource.line["line-a"]`, `module.db.aws_db_instance.main`.
    pub address: String,
    /// The resource type: `aws_db_instance`, `sandbox_resource`.
    pub resource_type: String,
    /// Its attributes (or planned values), for types priced by an attribute.
    pub attributes: Value,
    /// Where it runs, when the resource says so (`region`, or Azure's `location`); otherwise the
    /// twin's region is used.
    pub region: Option<String>,
    /// How many instances this stands for (1 from a state or a plan).
    pub count: u32,
}

impl ResourceUse {
    /// One instance, its region read from its attributes.
    pub fn new(
        address: impl Into<String>,
        resource_type: impl Into<String>,
        attributes: Value,
    ) -> Self {
        let region = ["region", "location"]
            .iter()
            .find_map(|name| attributes.get(*name).and_then(Value::as_str))
            .filter(|r| !r.trim().is_empty())
            .map(str::to_owned);
        Self {
            address: address.into(),
            resource_type: resource_type.into(),
            attributes,
            region,
            count: 1,
        }
    }
}

/// Resources per category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResourceCounts {
    pub compute: u32,
    pub storage: u32,
    pub networking: u32,
    pub database: u32,
}

/// The seed's `costs` object: monthly money per category, their total and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Costs {
    pub compute: Money,
    pub storage: Money,
    pub networking: Money,
    pub database: Money,
    pub total: Money,
    pub resource_counts: ResourceCounts,
    pub currency: String,
    pub period: &'static str,
}

impl Costs {
    fn zero(currency: &str) -> Self {
        Self {
            compute: Money::ZERO,
            storage: Money::ZERO,
            networking: Money::ZERO,
            database: Money::ZERO,
            total: Money::ZERO,
            resource_counts: ResourceCounts::default(),
            currency: currency.to_owned(),
            period: "monthly",
        }
    }

    fn add(&mut self, category: Category, amount: Money, count: u32) {
        let (money, counted) = match category {
            Category::Compute => (&mut self.compute, &mut self.resource_counts.compute),
            Category::Storage => (&mut self.storage, &mut self.resource_counts.storage),
            Category::Networking => (&mut self.networking, &mut self.resource_counts.networking),
            Category::Database => (&mut self.database, &mut self.resource_counts.database),
        };
        *money += amount;
        *counted = counted.saturating_add(count);
        self.total += amount;
    }
}

/// A resource the book has no price for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Unpriced {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub reason: String,
}

/// One priced resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Line {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub category: Category,
    pub monthly: Money,
    /// The region it was priced for (its own, else the twin's); one the book does not list
    /// costs the base price.
    pub region: Option<String>,
}

/// `{"estimated": true, "costs": {...}, "unpriced": [...], "breakdown": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// Always true: list prices, not a bill.
    pub estimated: bool,
    pub costs: Costs,
    pub unpriced: Vec<Unpriced>,
    pub breakdown: Vec<Line>,
}

/// Prices `resources` with `book`. A resource's own region wins over `region` (the twin's);
/// a region the book does not list costs the base price.
pub fn estimate(book: &PriceBook, resources: &[ResourceUse], region: Option<&str>) -> Estimate {
    let mut costs = Costs::zero(&book.currency);
    let mut unpriced = Vec::new();
    let mut breakdown = Vec::new();
    for resource in resources.iter().filter(|r| r.count > 0) {
        let region = resource.region.as_deref().or(region);
        match book.price(&resource.resource_type, &resource.attributes, region) {
            Ok((price, factor)) => {
                let monthly = factor.apply(price.monthly, resource.count);
                costs.add(price.category, monthly, resource.count);
                breakdown.push(Line {
                    address: resource.address.clone(),
                    resource_type: resource.resource_type.clone(),
                    category: price.category,
                    monthly,
                    region: region.map(str::to_owned),
                });
            }
            Err(why) => unpriced.push(Unpriced {
                address: resource.address.clone(),
                resource_type: resource.resource_type.clone(),
                reason: why.to_string(),
            }),
        }
    }
    Estimate {
        estimated: true,
        costs,
        unpriced,
        breakdown,
    }
}

/// How a change moves the monthly bill: after minus before, per category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delta {
    pub compute: Money,
    pub storage: Money,
    pub networking: Money,
    pub database: Money,
    pub total: Money,
    pub currency: String,
    pub period: &'static str,
}

pub fn delta(before: &Estimate, after: &Estimate) -> Delta {
    let (b, a) = (&before.costs, &after.costs);
    Delta {
        compute: a.compute - b.compute,
        storage: a.storage - b.storage,
        networking: a.networking - b.networking,
        database: a.database - b.database,
        total: a.total - b.total,
        currency: a.currency.clone(),
        period: "monthly",
    }
}

/// terraform's address of an instance: `module.m.type.name["key"]` or `type.name[0]`.
fn instance_address(module: Option<&str>, kind: &str, name: &str, key: &Value) -> String {
    let prefix = module.map(|m| format!("{m}.")).unwrap_or_default();
    let index = match key {
        Value::Null => String::new(),
        Value::String(key) => format!("[{}]", Value::String(key.clone())),
        other => format!("[{other}]"),
    };
    format!("{prefix}{kind}.{name}{index}")
}

/// The managed resource instances of a terraform state (format version 4), one each, with
/// their attributes. Data sources cost nothing and are left out.
pub fn resources_from_state(state: &Value) -> Vec<ResourceUse> {
    let Some(resources) = state["resources"].as_array() else {
        return Vec::new();
    };
    resources
        .iter()
        .filter(|r| r["mode"] == "managed")
        .flat_map(|resource| {
            let kind = resource["type"].as_str().unwrap_or_default();
            let name = resource["name"].as_str().unwrap_or_default();
            let module = resource["module"].as_str();
            resource["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |instance| {
                    ResourceUse::new(
                        instance_address(module, kind, name, &instance["index_key"]),
                        kind,
                        instance["attributes"].clone(),
                    )
                })
        })
        .collect()
}

/// The resources a plan run keeps in its `result.resources_after`.
pub fn resources_from_planned(planned: &[PlannedResource]) -> Vec<ResourceUse> {
    planned
        .iter()
        .map(|item| ResourceUse::new(&item.address, &item.resource_type, item.attributes.clone()))
        .collect()
}

/// The two sides of a plan: what exists before it, what will exist after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlannedResources {
    pub before: Vec<ResourceUse>,
    pub after: Vec<ResourceUse>,
}

/// The sides of a plan from `terraform show -json <planfile>` (its `resource_changes`): a
/// resource is before the plan unless it is created, after it unless it is deleted. Values a
/// plan does not know yet are null, so a type priced by such an attribute is unpriced.
pub fn resources_from_plan(plan: &Value) -> PlannedResources {
    let mut sides = PlannedResources::default();
    for change in plan["resource_changes"].as_array().into_iter().flatten() {
        if change["mode"] != "managed" {
            continue;
        }
        let (Some(address), Some(kind)) = (change["address"].as_str(), change["type"].as_str())
        else {
            continue;
        };
        let actions: Vec<&str> = change["change"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let before = &change["change"]["before"];
        let after = &change["change"]["after"];
        if !before.is_null() && actions != ["create"] {
            sides
                .before
                .push(ResourceUse::new(address, kind, before.clone()));
        }
        if !after.is_null() && actions != ["delete"] && actions != ["forget"] {
            sides
                .after
                .push(ResourceUse::new(address, kind, after.clone()));
        }
    }
    sides
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests;
