//! The configurations a new twin may start from, one per provider, built into the binary. The
//! sandbox's is the demo twin plus the region and size variables every template declares.

use std::collections::BTreeMap;

use crate::domain::{FilePath, Provider, TwinFiles, ValidationError};

const AWS: &[(&str, &str)] = &[
    (
        "main.tf",
        include_str!("../../catalog/templates/aws/main.tf"),
    ),
    (
        "variables.tf",
        include_str!("../../catalog/templates/aws/variables.tf"),
    ),
    (
        "outputs.tf",
        include_str!("../../catalog/templates/aws/outputs.tf"),
    ),
];

const AZURE: &[(&str, &str)] = &[
    (
        "main.tf",
        include_str!("../../catalog/templates/azure/main.tf"),
    ),
    (
        "variables.tf",
        include_str!("../../catalog/templates/azure/variables.tf"),
    ),
    (
        "outputs.tf",
        include_str!("../../catalog/templates/azure/outputs.tf"),
    ),
];

const GCP: &[(&str, &str)] = &[
    (
        "main.tf",
        include_str!("../../catalog/templates/gcp/main.tf"),
    ),
    (
        "variables.tf",
        include_str!("../../catalog/templates/gcp/variables.tf"),
    ),
    (
        "outputs.tf",
        include_str!("../../catalog/templates/gcp/outputs.tf"),
    ),
];

const SANDBOX_EXTRA: &[(&str, &str)] = &[(
    "placement.tf",
    include_str!("../../catalog/templates/sandbox/placement.tf"),
)];

fn files(list: &[(&str, &str)]) -> Result<BTreeMap<FilePath, String>, ValidationError> {
    list.iter()
        .map(|(path, content)| Ok((FilePath::parse(path)?, (*content).to_owned())))
        .collect()
}

/// The bundled template of `provider`.
pub fn template_files(provider: Provider) -> Result<TwinFiles, ValidationError> {
    let files = match provider {
        Provider::Aws => files(AWS)?,
        Provider::Azure => files(AZURE)?,
        Provider::Gcp => files(GCP)?,
        Provider::Sandbox => {
            let mut all: BTreeMap<FilePath, String> = crate::demo::files()?.into();
            all.extend(files(SANDBOX_EXTRA)?);
            all
        }
    };
    TwinFiles::new(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn every_template_declares_region_and_size() {
        for provider in Provider::ALL {
            let files = template_files(provider).unwrap();
            let text: String = files.iter().map(|(_, t)| t.as_str()).collect();
            assert!(text.contains("variable \"region\""), "{provider}");
            assert!(text.contains("variable \"size\""), "{provider}");
        }
        let sandbox = template_files(Provider::Sandbox).unwrap();
        let names: Vec<&str> = sandbox.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["main.tf", "outputs.tf", "placement.tf", "variables.tf"]
        );
    }
}
