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
