//! The provider catalog: each provider's regions and sizes, read from JSON (the bundled
//! `catalog/providers.json`, or the operator's own file) and checked at start; and the
//! bundled templates a twin may start from.

mod templates;

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::{Provider, ValidationError};

pub use templates::template_files;

const BUNDLED: &str = include_str!("../../catalog/providers.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Size {
    pub id: String,
    pub name: String,
    pub nodes: u32,
    /// An indicative figure in the price book's currency, shown to whoever picks a size.
    pub monthly_cost: f64,
}

/// One provider as `GET /providers/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub id: Provider,
    pub name: String,
    pub regions: Vec<Region>,
    pub sizes: Vec<Size>,
}

/// Where and how big a twin is to be: ids from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub region: String,
    pub size: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the provider catalog {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the provider catalog {origin} is invalid: {problem}")]
    Invalid { origin: String, problem: String },
}

/// A validated catalog, in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCatalog {
    providers: Vec<ProviderEntry>,
}

/// Ids must be present, unique and free of spaces and control characters: they are typed in
/// requests and stored as terraform variables.
fn check_ids<'a>(ids: impl Iterator<Item = &'a str>, at: &str) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{at}: {id:?} is not a valid id"));
        }
        if !seen.insert(id) {
            return Err(format!("{at}: {id:?} appears twice"));
        }
    }
    if seen.is_empty() {
        return Err(format!("{at} is empty"));
    }
    Ok(())
}

fn check(providers: &[ProviderEntry]) -> Result<(), String> {
    check_ids(
        providers.iter().map(|p| p.id.as_str()),
        "the list of providers",
    )?;
    for provider in providers {
        let at = provider.id.as_str();
        if provider.name.trim().is_empty() {
            return Err(format!("{at}: name is empty"));
        }
        check_ids(
            provider.regions.iter().map(|r| r.id.as_str()),
            &format!("{at}.regions"),
        )?;
        check_ids(
            provider.sizes.iter().map(|s| s.id.as_str()),
            &format!("{at}.sizes"),
        )?;
        for size in &provider.sizes {
            if size.nodes == 0 {
                return Err(format!("{at}.sizes.{}: nodes must be at least 1", size.id));
            }
            if !size.monthly_cost.is_finite() || size.monthly_cost < 0.0 {
                return Err(format!(
                    "{at}.sizes.{}: monthlyCost must be a number of at least 0",
                    size.id
                ));
            }
        }
    }
    Ok(())
}

impl ProviderCatalog {
    /// Parses and checks a catalog; `origin` names it in errors (a path, or "bundled").
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let invalid = |problem: String| CatalogError::Invalid {
            origin: origin.to_owned(),
            problem,
        };
        let providers: Vec<ProviderEntry> =
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        check(&providers).map_err(invalid)?;
        Ok(Self { providers })
    }

    /// The operator's catalog at `path`, or the bundled one.
    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Self::parse(&text, &shown)
            }
            None => Self::bundled(),
        }
    }

    pub fn bundled() -> Result<Self, CatalogError> {
        Self::parse(BUNDLED, "bundled with terrastream (catalog/providers.json)")
    }

    pub fn providers(&self) -> &[ProviderEntry] {
        &self.providers
    }

    pub fn provider(&self, id: Provider) -> Option<&ProviderEntry> {
        self.providers.iter().find(|p| p.id == id)
    }

    fn listed(&self, provider: Provider) -> Result<&ProviderEntry, ValidationError> {
        self.provider(provider).ok_or_else(|| {
            ValidationError::new(format!(
                "provider '{provider}' is not in the provider catalog, so it has no regions, sizes or template; give files instead"
            ))
        })
    }

    /// Checks the region and size a caller named; `None` is not checked.
    pub fn check(
        &self,
        provider: Provider,
        region: Option<&str>,
        size: Option<&str>,
    ) -> Result<(), ValidationError> {
        let entry = self.listed(provider)?;
        let shown = |s: &str| s.chars().take(64).collect::<String>();
        if let Some(region) = region {
            if !entry.regions.iter().any(|r| r.id == region) {
                let known: Vec<&str> = entry.regions.iter().map(|r| r.id.as_str()).collect();
                return Err(ValidationError::new(format!(
                    "unknown region '{}' for {provider} (one of: {})",
                    shown(region),
                    known.join(", ")
                )));
            }
        }
        if let Some(size) = size {
            if !entry.sizes.iter().any(|s| s.id == size) {
                let known: Vec<&str> = entry.sizes.iter().map(|s| s.id.as_str()).collect();
                return Err(ValidationError::new(format!(
                    "unknown size '{}' for {provider} (one of: {})",
                    shown(size),
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The region and size for a new twin: the ones named (checked), else the provider's first.
    pub fn placement(
        &self,
        provider: Provider,
        region: Option<&str>,
        size: Option<&str>,
    ) -> Result<Placement, ValidationError> {
        self.check(provider, region, size)?;
        let entry = self.listed(provider)?;
        let first_region = entry.regions.first().map(|r| r.id.as_str());
        let first_size = entry.sizes.first().map(|s| s.id.as_str());
        match (region.or(first_region), size.or(first_size)) {
            (Some(region), Some(size)) => Ok(Placement {
                region: region.to_owned(),
                size: size.to_owned(),
            }),
            // The catalog was checked at start to have both.
            _ => Err(ValidationError::new(format!(
                "provider '{provider}' has no regions or sizes in the catalog"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        match ProviderCatalog::parse(text, "test.json") {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn the_bundled_catalog_lists_every_provider_with_a_template() {
        let catalog = ProviderCatalog::bundled().unwrap();
        let ids: Vec<Provider> = catalog.providers().iter().map(|p| p.id).collect();
        assert_eq!(ids, Provider::ALL);
        for provider in Provider::ALL {
            let entry = catalog.provider(provider).unwrap();
            let files = template_files(provider).unwrap();
            assert!(files.iter().any(|(path, _)| path.as_str() == "main.tf"));
            // The template's size validation accepts every size the catalog offers.
            let sizes: String = files.iter().map(|(_, text)| text.as_str()).collect();
            for size in &entry.sizes {
                assert!(
                    provider == Provider::Sandbox || sizes.contains(&format!("\"{}\"", size.id)),
                    "{provider} template has no size {}",
                    size.id
                );
            }
        }
        let json = serde_json::to_value(catalog.provider(Provider::Sandbox).unwrap()).unwrap();
        assert_eq!(json["id"], "sandbox");
        assert_eq!(json["regions"][0]["id"], "local");
        assert_eq!(json["sizes"][0]["monthlyCost"], 0.0);
        assert_eq!(json["sizes"][0]["nodes"], 1);
    }

    #[test]
    fn placement_defaults_to_the_first_region_and_size_and_checks_named_ones() {
        let catalog = ProviderCatalog::bundled().unwrap();
        let default = catalog.placement(Provider::Aws, None, None).unwrap();
        assert_eq!(
            (default.region.as_str(), default.size.as_str()),
            ("eu-central-1", "small")
        );
        let named = catalog
            .placement(Provider::Aws, Some("us-west-2"), Some("large"))
            .unwrap();
        assert_eq!(
            (named.region.as_str(), named.size.as_str()),
            ("us-west-2", "large")
        );
        let err = catalog
            .placement(Provider::Aws, Some("westeurope"), None)
            .unwrap_err();
        assert!(
            err.0
                .contains("unknown region 'westeurope' for aws (one of: eu-central-1"),
            "{err}"
        );
        let err = catalog
            .check(Provider::Gcp, None, Some("huge"))
            .unwrap_err();
        assert!(err.0.contains("unknown size 'huge' for gcp"), "{err}");
    }

    #[test]
    fn a_provider_missing_from_the_catalog_has_no_placement() {
        let catalog = ProviderCatalog::parse(
            r#"[{"id": "sandbox", "name": "S", "regions": [{"id": "local", "name": "L"}],
                 "sizes": [{"id": "local", "name": "L", "nodes": 1, "monthlyCost": 0}]}]"#,
            "test",
        )
        .unwrap();
        let err = catalog.placement(Provider::Aws, None, None).unwrap_err();
        assert!(err.0.contains("not in the provider catalog"), "{err}");
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_place_of_the_problem() {
        let size = r#"{"id": "s", "name": "S", "nodes": 1, "monthlyCost": 1}"#;
        let region = r#"{"id": "r", "name": "R"}"#;
        let cases = [
            ("{}".to_owned(), "invalid type".to_owned()),
            ("[]".to_owned(), "the list of providers is empty".to_owned()),
            (
                format!(
                    r#"[{{"id": "ibm", "name": "I", "regions": [{region}], "sizes": [{size}]}}]"#
                ),
                "unknown variant `ibm`".to_owned(),
            ),
            (
                format!(r#"[{{"id": "aws", "name": "A", "regions": [], "sizes": [{size}]}}]"#),
                "aws.regions is empty".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "regions": [{region}, {region}], "sizes": [{size}]}}]"#
                ),
                "aws.regions: \"r\" appears twice".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "regions": [{region}], "sizes": [{{"id": "s", "name": "S", "nodes": 0, "monthlyCost": 1}}]}}]"#
                ),
                "aws.sizes.s: nodes must be at least 1".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "regions": [{region}], "sizes": [{{"id": "s", "name": "S", "nodes": 1, "monthlyCost": -1}}]}}]"#
                ),
                "monthlyCost must be a number of at least 0".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "regions": [{{"id": "eu west", "name": "R"}}], "sizes": [{size}]}}]"#
                ),
                "\"eu west\" is not a valid id".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "regions": [{region}], "sizes": [{size}]}}, {{"id": "aws", "name": "B", "regions": [{region}], "sizes": [{size}]}}]"#
                ),
                "\"aws\" appears twice".to_owned(),
            ),
            (
                format!(
                    r#"[{{"id": "aws", "name": "A", "colour": 1, "regions": [{region}], "sizes": [{size}]}}]"#
                ),
                "unknown field `colour`".to_owned(),
            ),
        ];
        for (text, expected) in cases {
            let message = problem(&text);
            assert!(message.contains("test.json"), "{message}");
            assert!(
                message.contains(&expected),
                "{expected:?} not in {message:?}"
            );
        }
    }
}
