//! The price book: resource type -> category, monthly price and region factors, read from
//! JSON (the bundled `catalog/prices.json`, or the operator's own file) and checked whole at
//! start, so a bad book is a startup error rather than a wrong figure later.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Money;

/// The book that ships with the binary: illustrative list prices, not a quote.
const BUNDLED: &str = include_str!("../../catalog/prices.json");

/// Largest monthly price one entry may carry (catches a price typed in cents).
const MAX_MONTHLY_CENTS: i64 = 1_000_000_000; // 10 million a month
/// Region factors are kept to four decimals.
const FACTOR_SCALE: i64 = 10_000;
const MAX_FACTOR: f64 = 100.0;

/// What a resource's cost counts towards.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Compute,
    Storage,
    Networking,
    Database,
}

/// A multiplier of a base price for one region, in ten-thousandths (1.15 is 11_500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factor(i64);

impl Factor {
    pub const ONE: Factor = Factor(FACTOR_SCALE);

    /// `price * count * factor`, rounded to the cent (half away from zero).
    pub fn apply(self, price: Money, count: u32) -> Money {
        let exact = i128::from(price.cents()) * i128::from(count) * i128::from(self.0);
        let scale = i128::from(FACTOR_SCALE);
        let rounded = (exact + scale / 2).div_euclid(scale);
        Money::from_cents(i64::try_from(rounded).unwrap_or(i64::MAX))
    }
}

/// The price of one instance: its category, monthly price and the regions priced differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub category: Category,
    pub monthly: Money,
    regions: BTreeMap<String, Factor>,
}

#[derive(Debug, Clone, PartialEq)]
enum Pricing {
    Flat(Price),
    /// The price depends on the value of one attribute (`sandbox_resource`'s `kind`).
    ByAttribute {
        attribute: String,
        values: BTreeMap<String, Price>,
        /// Region factors shared by every value.
        regions: BTreeMap<String, Factor>,
    },
}

/// Why a resource could not be priced: said to the client, never papered over with a guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPrice {
    UnknownType,
    /// The type is priced by an attribute the resource does not have (or not yet: a plan may
    /// not know it).
    MissingAttribute(String),
    UnknownValue {
        attribute: String,
        value: String,
    },
}

impl std::fmt::Display for NoPrice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoPrice::UnknownType => f.write_str("the price book has no entry for this type"),
            NoPrice::MissingAttribute(attribute) => write!(
                f,
                "priced by its '{attribute}' attribute, which is missing or not known yet"
            ),
            NoPrice::UnknownValue { attribute, value } => write!(
                f,
                "the price book has no price for {attribute} = \"{value}\""
            ),
        }
    }
}

/// A validated price book.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceBook {
    pub description: String,
    /// ISO 4217 code of every price in the book.
    pub currency: String,
    region_factors: BTreeMap<String, Factor>,
    entries: BTreeMap<String, Pricing>,
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("cannot read the price book {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the price book {origin} is invalid: {problem}")]
    Invalid { origin: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBook {
    #[serde(default)]
    description: String,
    currency: String,
    #[serde(default)]
    region_factors: BTreeMap<String, f64>,
    resources: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    category: Option<Category>,
    monthly: Option<f64>,
    #[serde(default)]
    regions: BTreeMap<String, f64>,
    by_attribute: Option<RawByAttribute>,
    /// Free text for the reader of the file.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawByAttribute {
    attribute: String,
    values: BTreeMap<String, RawEntry>,
}

/// Region names as compared: `West Europe` and `westeurope` are one region.
pub(super) fn region_key(region: &str) -> String {
    region
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A decimal number as an integer count of `1/scale`, refusing finer precision than that.
fn scaled(value: f64, scale: i64, what: &str) -> Result<i64, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "{what} must be a number of at least 0, not {value}"
        ));
    }
    #[allow(clippy::cast_precision_loss)] // scale is 100 or 10_000: exact in f64.
    let exact = value * scale as f64;
    let rounded = exact.round();
    if (exact - rounded).abs() > 1e-6 {
        let decimals = scale.ilog10();
        return Err(format!(
            "{what} has more than {decimals} decimals ({value})"
        ));
    }
    #[allow(clippy::cast_possible_truncation)] // bounded by the checks of the callers.
    Ok(rounded as i64)
}

fn factors(raw: BTreeMap<String, f64>, at: &str) -> Result<BTreeMap<String, Factor>, String> {
    raw.into_iter()
        .map(|(region, value)| {
            let what = format!("{at}.{region}");
            if region.trim().is_empty() {
                return Err(format!("{at} has an empty region name"));
            }
            if value <= 0.0 || value > MAX_FACTOR {
                return Err(format!(
                    "{what} must be above 0 and at most {MAX_FACTOR}, not {value}"
                ));
            }
            Ok((
                region_key(&region),
                Factor(scaled(value, FACTOR_SCALE, &what)?),
            ))
        })
        .collect()
}

fn price(raw: RawEntry, at: &str) -> Result<Price, String> {
    if raw.by_attribute.is_some() {
        return Err(format!("{at}: by_attribute cannot be nested"));
    }
    let category = raw
        .category
        .ok_or_else(|| format!("{at} needs a category (or by_attribute)"))?;
    let monthly = raw
        .monthly
        .ok_or_else(|| format!("{at} needs a monthly price (or by_attribute)"))?;
    let cents = scaled(monthly, 100, &format!("{at}.monthly"))?;
    if cents > MAX_MONTHLY_CENTS {
        return Err(format!("{at}.monthly is implausibly large ({monthly})"));
    }
    Ok(Price {
        category,
        monthly: Money::from_cents(cents),
        regions: factors(raw.regions, &format!("{at}.regions"))?,
    })
}

fn pricing(raw: RawEntry, at: &str) -> Result<Pricing, String> {
    let Some(by) = raw.by_attribute else {
        return price(raw, at).map(Pricing::Flat);
    };
    if raw.category.is_some() || raw.monthly.is_some() {
        return Err(format!(
            "{at} has both by_attribute and a category or monthly price; give one or the other"
        ));
    }
    if by.attribute.trim().is_empty() {
        return Err(format!("{at}.by_attribute.attribute is empty"));
    }
    if by.values.is_empty() {
        return Err(format!("{at}.by_attribute.values is empty"));
    }
    let values = by
        .values
        .into_iter()
        .map(|(value, entry)| {
            let price = price(entry, &format!("{at}.by_attribute.values.{value}"))?;
            Ok((value, price))
        })
        .collect::<Result<_, String>>()?;
    Ok(Pricing::ByAttribute {
        attribute: by.attribute,
        values,
        regions: factors(raw.regions, &format!("{at}.regions"))?,
    })
}

impl PriceBook {
    /// Parses and checks a book; `origin` names it in errors (a path, or "bundled").
    pub fn parse(text: &str, origin: &str) -> Result<Self, BookError> {
        let invalid = |problem: String| BookError::Invalid {
            origin: origin.to_owned(),
            problem,
        };
        let raw: RawBook = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let currency_ok =
            raw.currency.len() == 3 && raw.currency.chars().all(|c| c.is_ascii_uppercase());
        if !currency_ok {
            return Err(invalid(format!(
                "currency must be a three-letter ISO 4217 code such as \"USD\", not {:?}",
                raw.currency
            )));
        }
        if raw.resources.is_empty() {
            return Err(invalid("resources is empty".into()));
        }
        let region_factors = factors(raw.region_factors, "region_factors").map_err(invalid)?;
        let entries = raw
            .resources
            .into_iter()
            .map(|(kind, entry)| {
                if kind.trim().is_empty() {
                    return Err("resources has an empty type name".to_owned());
                }
                let pricing = pricing(entry, &format!("resources.{kind}"))?;
                Ok((kind, pricing))
            })
            .collect::<Result<_, String>>()
            .map_err(invalid)?;
        Ok(Self {
            description: raw.description,
            currency: raw.currency,
            region_factors,
            entries,
        })
    }

    /// The operator's book at `path`, or the bundled one.
    pub fn load(path: Option<&Path>) -> Result<Self, BookError> {
        match path {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| BookError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Self::parse(&text, &shown)
            }
            None => Self::bundled(),
        }
    }

    pub fn bundled() -> Result<Self, BookError> {
        Self::parse(BUNDLED, "bundled with terrastream (catalog/prices.json)")
    }

    /// The price of one instance of `kind` with these attributes, and the factor for `region`.
    pub fn price(
        &self,
        kind: &str,
        attributes: &serde_json::Value,
        region: Option<&str>,
    ) -> Result<(&Price, Factor), NoPrice> {
        let entry = self.entries.get(kind).ok_or(NoPrice::UnknownType)?;
        let (price, shared) = match entry {
            Pricing::Flat(price) => (price, None),
            Pricing::ByAttribute {
                attribute,
                values,
                regions,
            } => {
                let value = attributes
                    .get(attribute)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| NoPrice::MissingAttribute(attribute.clone()))?;
                let price = values.get(value).ok_or_else(|| NoPrice::UnknownValue {
                    attribute: attribute.clone(),
                    value: value.to_owned(),
                })?;
                (price, Some(regions))
            }
        };
        let factor = region
            .map(region_key)
            .and_then(|key| {
                price
                    .regions
                    .get(&key)
                    .or_else(|| shared.and_then(|r| r.get(&key)))
                    .or_else(|| self.region_factors.get(&key))
                    .copied()
            })
            .unwrap_or(Factor::ONE);
        Ok((price, factor))
    }

    /// Resource types the book prices, for documentation and tests.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use serde_json::json;

    fn problem(text: &str) -> String {
        match PriceBook::parse(text, "test.json") {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn the_bundled_book_is_valid_and_prices_every_demo_kind() {
        let book = PriceBook::bundled().unwrap();
        assert_eq!(book.currency, "USD");
        assert!(book.description.contains("illustrative"));
        for kind in ["iot_hub", "database", "function", "grafana", "twin"] {
            let attributes = json!({ "kind": kind });
            assert!(
                book.price("sandbox_resource", &attributes, None).is_ok(),
                "{kind}"
            );
        }
        for kind in [
            "aws_iot_topic_rule",
            "aws_db_instance",
            "aws_lambda_function",
            "aws_grafana_workspace",
            "awscc_iottwinmaker_workspace",
            "azurerm_iothub",
            "azurerm_postgresql_flexible_server",
            "azurerm_linux_function_app",
            "azurerm_dashboard_grafana",
            "azurerm_digital_twins_instance",
            "google_pubsub_topic",
            "google_cloudiot_registry",
            "google_sql_database_instance",
            "google_cloudfunctions2_function",
        ] {
            assert!(book.price(kind, &json!({}), None).is_ok(), "{kind}");
        }
    }

    #[test]
    fn factors_round_to_the_cent_half_away_from_zero() {
        let price = Money::from_cents(4567);
        assert_eq!(Factor(11_500).apply(price, 1), Money::from_cents(5252)); // 52.5205
        assert_eq!(Factor(10_000).apply(price, 3), Money::from_cents(13_701));
        assert_eq!(
            Factor(5_000).apply(Money::from_cents(1), 1),
            Money::from_cents(1)
        ); // 0.005
        assert_eq!(
            Factor(4_999).apply(Money::from_cents(1), 1),
            Money::from_cents(0)
        );
    }

    #[test]
    fn regions_are_compared_without_case_or_spaces() {
        let book = PriceBook::parse(
            r#"{"currency": "USD", "region_factors": {"westeurope": 1.1},
                "resources": {"t": {"category": "compute", "monthly": 10, "regions": {"East US": 0.9}}}}"#,
            "test",
        )
        .unwrap();
        let factor = |region| book.price("t", &json!({}), Some(region)).unwrap().1;
        assert_eq!(factor("West Europe"), Factor(11_000));
        assert_eq!(factor("eastus"), Factor(9_000));
        assert_eq!(factor("mars-1"), Factor::ONE);
    }

    #[test]
    fn bad_books_are_refused_with_the_place_of_the_problem() {
        let cases = [
            (
                r#"{"currency": "USD", "resources": {}}"#,
                "resources is empty",
            ),
            (
                r#"{"currency": "usd", "resources": {"t": {"category": "compute", "monthly": 1}}}"#,
                "ISO 4217",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"monthly": 1}}}"#,
                "resources.t needs a category",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute"}}}"#,
                "resources.t needs a monthly price",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute", "monthly": -1}}}"#,
                "resources.t.monthly must be a number of at least 0",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute", "monthly": 1.234}}}"#,
                "resources.t.monthly has more than 2 decimals",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute", "monthly": 1, "regions": {"x": 0}}}}"#,
                "resources.t.regions.x must be above 0",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "gpu", "monthly": 1}}}"#,
                "unknown variant `gpu`",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute", "monthly": 1, "colour": 1}}}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"category": "compute", "monthly": 1, "by_attribute": {"attribute": "k", "values": {}}}}}"#,
                "both by_attribute and a category",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"by_attribute": {"attribute": "k", "values": {}}}}}"#,
                "resources.t.by_attribute.values is empty",
            ),
            (
                r#"{"currency": "USD", "resources": {"t": {"by_attribute": {"attribute": "k", "values": {"a": {"category": "compute"}}}}}}"#,
                "resources.t.by_attribute.values.a needs a monthly price",
            ),
            ("42", "invalid type"),
        ];
        for (text, expected) in cases {
            let message = problem(text);
            assert!(message.contains("test.json"), "{message}");
            assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = PriceBook::load(Some(Path::new("/nonexistent/prices.json"))).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/prices.json"),
            "{err}"
        );
    }
}
