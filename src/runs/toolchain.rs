//! Finding terraform and the environment it runs in. The gateway never trusts the caller's
//! terraform settings: it writes its own CLI config and passes only what terraform needs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Settings;

/// Where terraform finds the sandbox provider, relative to the tools folder.
const PROVIDER_MIRROR: &str = "providers";
/// Hostname of providers served from the local mirror only.
const MIRROR_HOST: &str = "terrastream.local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolchainError {
    #[error("terraform not found (tried {}); set --terraform (TERRASTREAM_TERRAFORM) or run scripts/setup.sh", list(.tried))]
    NotFound { tried: Vec<PathBuf> },
    #[error("terraform at {} is not an executable file; set --terraform to a working terraform or tofu", .0.display())]
    NotExecutable(PathBuf),
    #[error("looking for terraform failed: {0}")]
    Lookup(String),
    #[error("cannot write the terraform CLI config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A located terraform binary plus the environment every invocation gets.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub terraform: PathBuf,
    pub cli_config: PathBuf,
    pub tools_dir: Option<PathBuf>,
}

impl Toolchain {
    /// Finds terraform: `--terraform`, then the tools folder, then `terraform`/`tofu` on PATH.
    /// Writes the gateway's own CLI config into the data directory.
    pub fn locate(settings: &Settings) -> Result<Self, ToolchainError> {
        let tools_dir = find_tools_dir(settings);
        let terraform = find_terraform(settings.terraform.as_deref(), tools_dir.as_deref())?;
        let cli_config = settings.data_dir.join("terraform.rc");
        let config = cli_config_text(tools_dir.as_deref());
        let current = std::fs::read_to_string(&cli_config).ok();
        if current.as_deref() != Some(config.as_str()) {
            std::fs::write(&cli_config, config).map_err(|e| ToolchainError::Config {
                path: cli_config.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            terraform,
            cli_config,
            tools_dir,
        })
    }

    /// [`Toolchain::locate`] off the async runtime (it reads the filesystem and may write the
    /// CLI config).
    pub async fn find(settings: &Settings) -> Result<Self, ToolchainError> {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || Self::locate(&settings))
            .await
            .map_err(|e| ToolchainError::Lookup(e.to_string()))?
    }

    /// The local provider mirror, if the tools folder has one.
    pub fn mirror(&self) -> Option<PathBuf> {
        self.tools_dir
            .as_ref()
            .map(|t| t.join(PROVIDER_MIRROR))
            .filter(|m| m.is_dir())
    }

    /// A fingerprint of the local provider mirror (every file's path, size and modification
    /// time): it changes when a provider there is rebuilt.
    pub fn providers_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        if let Some(mirror) = self.tools_dir.as_ref().map(|t| t.join(PROVIDER_MIRROR)) {
            let mut pending = vec![mirror];
            let mut files = Vec::new();
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    match entry.metadata() {
                        Ok(meta) if meta.is_dir() => pending.push(path),
                        Ok(meta) => {
                            let modified = meta
                                .modified()
                                .ok()
                                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                .map_or(0, |d| d.as_nanos());
                            files.push(format!("{} {} {modified}", path.display(), meta.len()));
                        }
                        Err(_) => {}
                    }
                }
            }
            files.sort();
            for file in files {
                hash.update(file.as_bytes());
                hash.update(b"\n");
            }
        }
        hex::encode(hash.finalize())
    }

    /// What terraform needs to see, read-only, inside a run's jail: the tools folder, the
    /// program (and its interpreter, for a script) and the CLI config.
    pub fn readable_paths(&self) -> Vec<PathBuf> {
        let mut paths = super::isolation::program_paths(&self.terraform);
        if let Some(tools) = &self.tools_dir {
            paths.push(tools.clone());
            // A --terraform that wraps the tools folder's own terraform needs what it needs.
            let programs = std::fs::read_dir(tools.join("bin")).into_iter().flatten();
            for program in programs.flatten() {
                paths.extend(super::isolation::program_paths(&program.path()));
            }
        }
        paths.push(self.cli_config.clone());
        paths.sort();
        paths.dedup();
        paths
    }

    /// Environment for terraform: a clean slate plus the gateway's own settings. Nothing of the
    /// gateway's own environment (tokens, JWT secret) leaks in; credentials are added by the
    /// caller.
    pub fn base_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                PASSED_THROUGH.contains(&name.as_ref()) || name.starts_with("LC_")
            })
            .collect();
        for (name, value) in [
            ("CHECKPOINT_DISABLE", "1"),
            ("TF_IN_AUTOMATION", "1"),
            ("TF_INPUT", "0"),
        ] {
            env.push((name.into(), value.into()));
        }
        env.push((
            "TF_CLI_CONFIG_FILE".into(),
            self.cli_config.clone().into_os_string(),
        ));
        env
    }
}

/// Variables from the gateway's environment that terraform and its providers may need.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

fn find_tools_dir(settings: &Settings) -> Option<PathBuf> {
    if let Some(dir) = &settings.tools_dir {
        return Some(dir.clone());
    }
    let has_terraform = |dir: &Path| dir.join("bin").join("terraform").is_file();
    let from_cwd = std::env::current_dir().ok().map(|cwd| cwd.join("tools"));
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .map(|a| a.join("tools"))
            .find(|t| has_terraform(t))
    });
    from_cwd.filter(|t| has_terraform(t)).or(from_exe)
}

fn find_terraform(
    explicit: Option<&Path>,
    tools_dir: Option<&Path>,
) -> Result<PathBuf, ToolchainError> {
    if let Some(path) = explicit {
        return check_executable(path);
    }
    let mut tried = Vec::new();
    if let Some(tools) = tools_dir {
        let candidate = tools.join("bin").join("terraform");
        if candidate.is_file() {
            return check_executable(&candidate);
        }
        tried.push(candidate);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in ["terraform", "tofu"] {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return check_executable(&candidate);
            }
        }
        tried.push(PathBuf::from(format!("{name} on PATH")));
    }
    Err(ToolchainError::NotFound { tried })
}

fn check_executable(path: &Path) -> Result<PathBuf, ToolchainError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
            Ok(path.to_path_buf())
        }
        Ok(_) => Err(ToolchainError::NotExecutable(path.to_path_buf())),
        Err(_) => Err(ToolchainError::NotFound {
            tried: vec![path.to_path_buf()],
        }),
    }
}

/// The CLI config: providers under `terrastream.local` come only from the tools mirror and
/// are never looked up on the network (even when the mirror is missing); everything else is
/// installed as terraform normally would.
fn cli_config_text(tools_dir: Option<&Path>) -> String {
    let mirror = tools_dir
        .map(|t| t.join(PROVIDER_MIRROR))
        .filter(|m| m.is_dir())
        .map(|m| {
            m.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        });
    let mirror_block = mirror.map_or_else(String::new, |mirror| {
        format!("  filesystem_mirror {{\n    path    = \"{mirror}\"\n    include = [\"{MIRROR_HOST}/*/*\"]\n  }}\n")
    });
    format!(
        "# written by terrastream\nprovider_installation {{\n{mirror_block}  direct {{\n    exclude = [\"{MIRROR_HOST}/*/*\"]\n  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_terraform_names_the_path_and_the_flag() {
        let err = find_terraform(Some(Path::new("/nowhere/terraform")), None).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("/nowhere/terraform"), "{text}");
        assert!(text.contains("--terraform"), "{text}");
    }

    #[test]
    fn a_non_executable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("terraform");
        std::fs::write(&file, "not a program").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            find_terraform(Some(&file), None),
            Err(ToolchainError::NotExecutable(file))
        );
    }

    #[test]
    fn the_cli_config_pins_the_mirror_host_to_the_local_mirror() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("providers")).unwrap_or_else(|e| panic!("{e}"));
        let text = cli_config_text(Some(dir.path()));
        assert!(text.contains("filesystem_mirror"));
        assert!(text.contains("exclude = [\"terrastream.local/*/*\"]"));
        let without_mirror = cli_config_text(None);
        assert!(!without_mirror.contains("filesystem_mirror"));
        assert!(without_mirror.contains("exclude = [\"terrastream.local/*/*\"]"));
    }
}
