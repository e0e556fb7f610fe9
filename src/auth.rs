//! API tokens and sessions: generated here, stored only as hashes.

use std::io::Write;
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::{Principal, RunGrant};
use crate::store::{run_blocking, Store, StoreResult};

/// Prefix of API tokens, so a leaked one is recognisable in secret scanners.
pub const TOKEN_PREFIX: &str = "tst_";

/// A new random secret: the prefix and 256 bits as hex.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What the store keeps instead of a token or session id.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The label of the admin token a first start makes.
const FIRST_START_LABEL: &str = "first start";

/// Creates a token for `principal` and returns it; only its hash is stored.
pub fn create_token(
    store: &dyn Store,
    principal: &Principal,
    label: Option<&str>,
) -> StoreResult<String> {
    let token = generate_secret(TOKEN_PREFIX);
    store.insert_token(&hash_secret(&token), principal, label)?;
    let role = if principal.is_admin { "admin" } else { "owner" };
    crate::audit::record(
        store,
        // The first start's admin token is the gateway's own doing; every other, the CLI's.
        NewAudit::new(
            if label == Some(FIRST_START_LABEL) {
                "terrastream"
            } else {
                "cli"
            },
            AuditAction::TokenCreated,
            &principal.owner,
        )
        .because(format!("{role} token")),
    );
    Ok(token)
}

/// On first start, creates the admin token and writes it to `path` with mode 0600.
/// Returns the token when one was created (the caller prints it once).
pub fn ensure_admin_token(store: &dyn Store, path: &Path) -> anyhow::Result<Option<String>> {
    if store.has_admin_token()? {
        return Ok(None);
    }
    // Several gateways starting at once on an empty database: one of them makes it.
    if !store.insert_meta(FIRST_START, crate::clock::now().as_bytes())? {
        tracing::info!("another gateway made the first admin token (if none exists, make one with `terrastream token create --owner admin --admin`)");
        return Ok(None);
    }
    let admin = Principal {
        owner: "admin".into(),
        is_admin: true,
    };
    let token = create_token(store, &admin, Some(FIRST_START_LABEL))?;
    write_private_file(path, token.as_bytes())?;
    Ok(Some(token))
}

/// Set by the gateway that made the first admin token.
const FIRST_START: &str = "first-start";

/// Writes a file only its owner can read (0600 from creation, never world-readable).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The active runs' backend credentials, kept in the store by the hash of their secret, so
/// they outlive the gateway process that issued them.
pub struct RunGrants {
    store: std::sync::Arc<dyn Store>,
}

impl RunGrants {
    pub fn new(store: std::sync::Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A new secret for the run; valid until [`RunGrants::revoke`].
    pub async fn issue(&self, grant: RunGrant) -> StoreResult<String> {
        let secret = generate_secret("run_secret_");
        let hash = hash_secret(&secret);
        run_blocking(&self.store, move |s| s.insert_grant(&hash, &grant)).await?;
        Ok(secret)
    }

    pub async fn find(&self, secret: &str) -> StoreResult<Option<RunGrant>> {
        let hash = hash_secret(secret);
        run_blocking(&self.store, move |s| s.find_grant(&hash)).await
    }

    pub async fn revoke(&self, run_id: &crate::domain::RunId) -> StoreResult<()> {
        let run_id = run_id.clone();
        run_blocking(&self.store, move |s| s.revoke_grants(&run_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_prefixed_and_hash_stably() {
        let a = generate_secret(TOKEN_PREFIX);
        let b = generate_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("tst_") && a.len() == 4 + 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), a);
    }
}
