//! A twin's working directory: its files as terraform sees them, kept between runs so
//! `.terraform` (providers, modules) and the plan survive.

use std::path::{Path, PathBuf};

use super::lockfile;
use super::toolchain::Toolchain;
use crate::domain::{RunId, Twin, TwinId};

/// Files the gateway writes itself (users cannot name files `terrastream_*`).
const MANIFEST: &str = "terrastream_files.json";
const VARIABLES: &str = "terrastream_variables.auto.tfvars.json";
/// Points terraform at the gateway's state backend; address and credentials come from
/// `TF_HTTP_*` variables, never from files.
const BACKEND_OVERRIDE: &str = "terrastream_backend_override.tf";
const BACKEND: &str = "# Written by terrastream: state is kept by the gateway.\nterraform {\n  backend \"http\" {}\n}\n";
/// Which provider packages the lock file was made from (see [`prepare`]).
const LOCK_SOURCE: &str = "terrastream_lock_source.txt";
const LOCK_FILE: &str = ".terraform.lock.hcl";
/// Where terraform leaves a state it could not save.
pub const ERRORED_STATE: &str = "errored.tfstate";
pub const PLAN_FILE: &str = "terrastream.tfplan";

pub struct Workspace {
    pub dir: PathBuf,
    /// Where the sandbox provider keeps this twin's objects.
    pub sandbox_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the working directory {}: {source}", dir.display())]
pub struct WorkspaceError {
    dir: PathBuf,
    source: std::io::Error,
}

impl Workspace {
    /// The workspace a run prepared before the gateway restarted: left as it is (terraform may
    /// be working in it).
    pub fn existing(dir: &Path, sandbox_root: &Path, twin_id: &TwinId) -> Self {
        Self {
            dir: dir.to_path_buf(),
            sandbox_dir: sandbox_dir(sandbox_root, twin_id),
        }
    }
}

pub fn work_dir(data_dir: &Path, twin_id: &TwinId) -> PathBuf {
    data_dir.join("work").join(twin_id.as_str())
}

/// Where a plan preview or drift check works: its own directory, removed when it ends, so it
/// never disturbs a deploy of the same twin.
pub fn preview_dir(data_dir: &Path, run_id: &RunId) -> PathBuf {
    data_dir.join("previews").join(run_id.as_str())
}

/// The twin's objects in the sandbox provider's "cloud" under `sandbox_root`
/// ([`crate::config::Settings::sandbox_root`]).
pub fn sandbox_dir(sandbox_root: &Path, twin_id: &TwinId) -> PathBuf {
    sandbox_root.join(twin_id.as_str())
}

/// Writes the twin's current files (removing ones an earlier configuration had) and its
/// variables, and keeps the provider lock file while it still fits the local provider mirror.
pub fn prepare(
    dir: &Path,
    data_dir: &Path,
    sandbox_root: &Path,
    twin: &Twin,
    toolchain: &Toolchain,
) -> Result<Workspace, WorkspaceError> {
    let dir = dir.to_path_buf();
    let fail = |source| WorkspaceError {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;

    let previous: Vec<String> = std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let current: Vec<String> = twin
        .files
        .iter()
        .map(|(path, _)| path.to_string())
        .collect();
    for stale in previous.iter().filter(|p| !current.contains(p)) {
        // Paths in the manifest were validated when the twin was saved.
        match std::fs::remove_file(dir.join(stale)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(fail(err)),
            _ => {}
        }
    }
    for (path, content) in twin.files.iter() {
        let target = dir.join(path.as_str());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(&target, content).map_err(fail)?;
    }
    let variables = serde_json::to_vec_pretty(&twin.variables).unwrap_or_else(|_| b"{}".to_vec());
    std::fs::write(dir.join(VARIABLES), variables).map_err(fail)?;
    std::fs::write(dir.join(BACKEND_OVERRIDE), BACKEND).map_err(fail)?;
    let manifest = serde_json::to_vec(&current).unwrap_or_else(|_| b"[]".to_vec());
    std::fs::write(dir.join(MANIFEST), manifest).map_err(fail)?;
    keep_lock_file(&dir, &work_dir(data_dir, &twin.id), twin, toolchain).map_err(fail)?;

    let sandbox_dir = sandbox_dir(sandbox_root, &twin.id);
    std::fs::create_dir_all(&sandbox_dir).map_err(|source| WorkspaceError {
        dir: sandbox_dir.clone(),
        source,
    })?;
    Ok(Workspace { dir, sandbox_dir })
}

/// The lock file pins provider checksums. It is kept between runs, and a preview or validation
/// starts from its twin's. Where there is none yet, or the mirror was rebuilt since (a new
/// sandbox provider binary under the same version would fail init on the old checksums), it
/// is written anew with the mirror's own hashes for the providers the twin names, so terraform
/// never has to make them and warn about it.
fn keep_lock_file(
    dir: &Path,
    twin_dir: &Path,
    twin: &Twin,
    toolchain: &Toolchain,
) -> std::io::Result<()> {
    let source = toolchain.providers_fingerprint();
    let fits = |dir: &Path| {
        std::fs::read_to_string(dir.join(LOCK_SOURCE)).is_ok_and(|s| s == source)
            && dir.join(LOCK_FILE).is_file()
    };
    if fits(dir) {
        return Ok(());
    }
    if dir != twin_dir && fits(twin_dir) {
        std::fs::copy(twin_dir.join(LOCK_FILE), dir.join(LOCK_FILE))?;
    } else {
        let providers = toolchain
            .mirror()
            .map(|mirror| lockfile::mirrored_providers(&mirror))
            .unwrap_or_default();
        let configuration: String = twin
            .files
            .iter()
            .filter(|(path, _)| path.is_configuration())
            .map(|(_, content)| content.as_str())
            .collect();
        match lockfile::lock_file_for(&providers, &configuration) {
            Some(text) => std::fs::write(dir.join(LOCK_FILE), text)?,
            None => match std::fs::remove_file(dir.join(LOCK_FILE)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            },
        }
    }
    std::fs::write(dir.join(LOCK_SOURCE), source)
}
