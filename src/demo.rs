//! The demo twin: the configuration under `examples/demo`, built into the binary so a new
//! user can deploy something real (to the sandbox provider) on first start.

use std::collections::BTreeMap;

use crate::domain::{FilePath, NewTwin, Provider, TwinFiles, TwinId, TwinName, ValidationError};

pub const NAME: &str = "demo";

const FILES: &[(&str, &str)] = &[
    ("main.tf", include_str!("../examples/demo/main.tf")),
    (
        "variables.tf",
        include_str!("../examples/demo/variables.tf"),
    ),
    ("outputs.tf", include_str!("../examples/demo/outputs.tf")),
];

/// The demo configuration's files, by path.
pub fn files() -> Result<TwinFiles, ValidationError> {
    let files = FILES
        .iter()
        .map(|(path, content)| Ok((FilePath::parse(path)?, (*content).to_owned())))
        .collect::<Result<BTreeMap<_, _>, ValidationError>>()?;
    TwinFiles::new(files)
}

pub fn new_twin(owner: &str) -> Result<NewTwin, ValidationError> {
    Ok(NewTwin {
        id: TwinId::generate(),
        owner: owner.to_owned(),
        name: TwinName::parse(NAME)?,
        provider: Provider::Sandbox,
        files: files()?,
        variables: BTreeMap::new(),
        secret_variables: Default::default(),
        credential_ids: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_is_a_valid_twin() {
        let twin = super::new_twin("admin").map_err(|e| e.to_string());
        assert!(twin.is_ok_and(|t| t.files.iter().count() == 3));
    }
}
