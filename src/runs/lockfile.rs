//! The dependency lock file for providers of the local mirror. When terraform has to make lock
//! entries for a mirrored provider itself, it warns that the lock file is "incomplete" and asks
//! for `terraform providers lock -platform=...`, which no twin's owner can act on. The gateway
//! writes those entries itself, with the `h1:` hash terraform would compute (the "dirhash" of
//! the unpacked package: SHA-256 over `"<sha256 hex>  <relative path>\n"` lines of its files
//! in path order, base64), so init reuses them and says nothing.

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

/// One provider package of the mirror for this platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredProvider {
    /// `HOST/NAMESPACE/TYPE`.
    pub source: String,
    pub version: String,
    pub hash: String,
}

/// terraform's name for this machine's platform (`linux_amd64`).
fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

/// Every provider package in `mirror` (laid out `HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/`) built
/// for this platform, with its hash.
pub fn mirrored_providers(mirror: &Path) -> Vec<MirroredProvider> {
    let platform = platform();
    let mut found = Vec::new();
    let children = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    for host in children(mirror) {
        for namespace in children(&host) {
            for kind in children(&namespace) {
                for version in children(&kind) {
                    let package = version.join(&platform);
                    let (Some(h), Some(n), Some(t), Some(v)) =
                        (name(&host), name(&namespace), name(&kind), name(&version))
                    else {
                        continue;
                    };
                    if let Some(hash) = package.is_dir().then(|| dirhash(&package)).flatten() {
                        found.push(MirroredProvider {
                            source: format!("{h}/{n}/{t}"),
                            version: v,
                            hash,
                        });
                    }
                }
            }
        }
    }
    found
}

/// terraform's `h1:` hash of an unpacked provider package.
pub fn dirhash(dir: &Path) -> Option<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
                files.push((relative, path));
            }
        }
    }
    files.sort();
    let mut summary = String::new();
    for (relative, path) in files {
        let digest = Sha256::digest(std::fs::read(&path).ok()?);
        summary.push_str(&format!("{}  {relative}\n", hex::encode(digest)));
    }
    let digest = Sha256::digest(summary.as_bytes());
    Some(format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// A lock file with an entry for each of `providers` whose source the configuration names
/// (only those: an entry for a provider it does not use makes init report changed selections).
pub fn lock_file_for(providers: &[MirroredProvider], configuration: &str) -> Option<String> {
    let used: Vec<&MirroredProvider> = providers
        .iter()
        .filter(|p| configuration.contains(&p.source))
        .collect();
    if used.is_empty() {
        return None;
    }
    let mut text = String::from(
        "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n",
    );
    for provider in used {
        text.push_str(&format!(
            "\nprovider \"{}\" {{\n  version = \"{}\"\n  hashes = [\n    \"{}\",\n  ]\n}}\n",
            provider.source, provider.version, provider.hash
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_terraforms_dirhash() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("a"), "hello\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("sub/b"), "world").unwrap_or_else(|e| panic!("{e}"));
        // Computed independently (Python's hashlib) for the same two files.
        assert_eq!(
            dirhash(dir.path()).as_deref(),
            Some("h1:hgAXz5TjW6PxYB6YngJYmNgOgaX9JBqkmhWthoVaup0=")
        );
    }

    #[test]
    fn only_providers_the_configuration_names_are_locked() {
        let providers = vec![
            MirroredProvider {
                source: "terrastream.local/terrastream/sandbox".into(),
                version: "0.1.0".into(),
                hash: "h1:x".into(),
            },
            MirroredProvider {
                source: "terrastream.local/terrastream/other".into(),
                version: "1.0.0".into(),
                hash: "h1:y".into(),
            },
        ];
        let config = r#"sandbox = { source = "terrastream.local/terrastream/sandbox" }"#;
        let text = lock_file_for(&providers, config).unwrap_or_default();
        assert!(text.contains("provider \"terrastream.local/terrastream/sandbox\""));
        assert!(text.contains("\"h1:x\""));
        assert!(!text.contains("other"));
        assert_eq!(
            lock_file_for(&providers, "resource \"terraform_data\" \"x\" {}"),
            None
        );
    }
}
