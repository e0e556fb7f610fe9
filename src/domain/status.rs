//! The deployment status machine from the client contract, as data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Where a twin is in its life; [`ALLOWED_MOVES`] says how it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    description = "Where a twin is in its life: draft, deploying, deployed, destroying, error or destroy_failed (docs/api.md has the moves)."
)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Draft,
    Deploying,
    Deployed,
    Destroying,
    Error,
    DestroyFailed,
}

use DeploymentStatus::*;

/// Every allowed move `(from, to)`; any other move is a conflict. The API, the store's
/// compare-and-set and the dashboard's buttons all read this one table.
pub const ALLOWED_MOVES: [(DeploymentStatus, DeploymentStatus); 11] = [
    (Draft, Deploying),
    (Deploying, Deployed),
    (Deploying, Error),
    (Deployed, Destroying),
    (Deployed, Deploying),
    (Destroying, Draft),
    (Destroying, DestroyFailed),
    (Error, Deploying),
    (Error, Destroying),
    (DestroyFailed, Destroying),
    (DestroyFailed, Deployed),
];

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 6] =
        [Draft, Deploying, Deployed, Destroying, Error, DestroyFailed];

    /// The single conversion between the enum and its stored/serialised text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Draft => "draft",
            Deploying => "deploying",
            Deployed => "deployed",
            Destroying => "destroying",
            Error => "error",
            DestroyFailed => "destroy_failed",
        }
    }

    pub fn can_move_to(self, to: DeploymentStatus) -> bool {
        ALLOWED_MOVES.contains(&(self, to))
    }

    /// The statuses from which a move to `to` is allowed.
    pub fn allowed_sources(to: DeploymentStatus) -> Vec<DeploymentStatus> {
        ALLOWED_MOVES
            .iter()
            .filter(|(_, target)| *target == to)
            .map(|(from, _)| *from)
            .collect()
    }

    /// Draft is the only status in which the twin surely owns no cloud resources.
    pub fn may_own_resources(self) -> bool {
        self != Draft
    }
}

impl FromStr for DeploymentStatus {
    type Err = ValidationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                let shown: String = value.chars().take(40).collect();
                ValidationError::new(format!(
                    "unknown deployment status '{shown}' (one of: {})",
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_text_and_json() {
        for status in DeploymentStatus::ALL {
            assert_eq!(status.as_str().parse::<DeploymentStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert!("Deployed".parse::<DeploymentStatus>().is_err());
    }

    #[test]
    fn exactly_the_contract_moves_are_allowed() {
        let allowed: Vec<_> = DeploymentStatus::ALL
            .iter()
            .flat_map(|from| DeploymentStatus::ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from.can_move_to(*to))
            .collect();
        assert_eq!(allowed.len(), 11);
        assert!(Draft.can_move_to(Deploying));
        assert!(DestroyFailed.can_move_to(Deployed));
        assert!(!Draft.can_move_to(Destroying));
        assert!(!Deployed.can_move_to(Draft));
        assert!(!Error.can_move_to(Draft));
    }

    #[test]
    fn sources_of_deploying_are_draft_deployed_and_error() {
        let mut sources = DeploymentStatus::allowed_sources(Deploying);
        sources.sort_by_key(|s| s.as_str());
        assert_eq!(sources, vec![Deployed, Draft, Error]);
    }
}
