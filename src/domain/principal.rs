/// Who is making a request: an owner name, and whether they may see every owner's twins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub owner: String,
    pub is_admin: bool,
}

impl Principal {
    /// Admins reach every twin; everyone else only their own.
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin || self.owner == owner
    }
}

/// A run's credential for terraform's http backend: it reaches only that twin's state, and
/// only while the run is active. Stored hashed, so a restarted gateway still accepts the
/// state writes of a terraform it did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunGrant {
    pub run_id: super::RunId,
    pub twin_id: super::TwinId,
    pub owner: String,
}
