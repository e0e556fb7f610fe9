//! Settings the gateway runs with, whatever parsed them (the CLI, or tests).

use std::path::PathBuf;
use std::time::Duration;

use crate::runs::IsolationMode;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    pub data_dir: PathBuf,
    /// Explicit terraform (or tofu) binary; otherwise the tools folder, then PATH.
    pub terraform: Option<PathBuf>,
    /// The project's tools folder (terraform launcher, provider mirror); found automatically
    /// when not given.
    pub tools_dir: Option<PathBuf>,
    /// Accept HS256 JWTs signed with this secret (`sub` = owner).
    pub jwt_secret: Option<String>,
    /// Also accept JWTs without an `exp` claim (they never expire).
    pub jwt_allow_no_exp: bool,
    /// Origins allowed by CORS (the Flutter web build); empty allows none.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a dashboard session cookie lasts.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (when served over HTTPS).
    pub secure_cookies: bool,
    /// After SIGINT, how long terraform gets to finish in-flight work before it is killed.
    pub cancel_grace: Duration,
    /// A shell command run after a successful destroy (the "SDK cleanup" stage).
    pub cleanup_command: Option<String>,
    /// `NAME=value` lines of cloud credentials handed to terraform (and masked in output).
    pub credentials_file: Option<PathBuf>,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    /// On first start, give the admin the demo twin (sandbox provider, no cloud needed).
    pub create_demo: bool,
    /// Runs that may work at once; more wait as `pending`, first come first served.
    pub max_concurrent_runs: usize,
    /// Longest each terraform command may take before the stop ladder ends it.
    pub timeouts: Timeouts,
    /// A `warning` event when terraform has printed nothing for this long.
    pub silence_warning: Duration,
    /// On SIGINT/SIGTERM, how long running terraform gets to stop gracefully.
    pub shutdown_grace: Duration,
    /// Stop gracefully on SIGINT/SIGTERM (the binary does; in-process tests do not).
    pub handle_signals: bool,
    /// Key for state at rest (32 bytes, hex or base64); default `<data-dir>/state.key`,
    /// created on first start.
    pub state_key: Option<String>,
    /// The operator's price book (JSON, see docs/costs.md); default: the bundled one.
    pub price_book: Option<PathBuf>,
    /// The operator's provider catalog (JSON); default: the bundled one.
    pub provider_catalog: Option<PathBuf>,
    /// How terraform runs are isolated from the gateway and from each other.
    pub run_isolation: IsolationMode,
    /// Extra paths every run may read (say, a CA bundle or a provider plugin cache).
    pub run_readable: Vec<PathBuf>,
    /// Extra paths every run may write. Whatever is here, every twin's configuration reaches.
    pub run_writable: Vec<PathBuf>,
    /// The program started as `<program> monitor <step dir>` for each terraform command;
    /// default: this binary.
    pub monitor_program: Option<PathBuf>,
    /// What SIGINT/SIGTERM does to running runs.
    pub on_shutdown: ShutdownMode,
    /// Where terraform reaches the gateway's state backend (default: the address it listens
    /// on). Must stay the same across restarts for runs to outlive one.
    pub backend_url: Option<String>,
    /// A PostgreSQL database (`postgres://...`) shared by every replica; default: SQLite in
    /// the data directory.
    pub database_url: Option<String>,
    /// Where the sandbox provider keeps its objects (its "cloud"); default
    /// `<data-dir>/sandbox`. Replicas share one, as they would share a real cloud.
    pub sandbox_dir: Option<PathBuf>,
    /// Check every deployed twin for drift this often; off when `None`.
    pub drift_interval: Option<Duration>,
    /// Let webhooks reach loopback, private and link-local addresses.
    pub webhook_allow_private: bool,
    /// The first retry delay of a webhook delivery (5 s); the rest of the schedule scales with
    /// it. Tests shorten it.
    pub webhook_retry_unit: Duration,
    /// How long one webhook attempt may take.
    pub webhook_timeout: Duration,
    /// Purge soft-deleted twins past a retention period; off when `None`.
    pub retention: Option<crate::runs::RetentionPolicy>,
}

/// What a graceful stop does to the runs that are working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Leave them to their monitors; the next start adopts them (the default: upgrades and
    /// restarts do not end runs).
    #[default]
    Leave,
    /// Interrupt terraform (one SIGINT, the kill after the grace) and store each outcome.
    Interrupt,
}

impl std::str::FromStr for ShutdownMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "leave" => Ok(ShutdownMode::Leave),
            "interrupt" => Ok(ShutdownMode::Interrupt),
            other => Err(format!(
                "unknown shutdown mode '{other}' (one of: leave, interrupt)"
            )),
        }
    }
}

/// Time limits per terraform command. Generous by default: a hard limit that kills a long
/// apply does more harm than a slow one.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub init: Duration,
    pub plan: Duration,
    pub apply: Duration,
    pub destroy: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            init: Duration::from_secs(30 * 60),
            plan: Duration::from_secs(2 * 3600),
            apply: Duration::from_secs(12 * 3600),
            destroy: Duration::from_secs(12 * 3600),
        }
    }
}

impl Settings {
    /// Defaults for a gateway under `data_dir`, as `terrastream serve` would start.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: absolute(data_dir.into()),
            terraform: None,
            tools_dir: None,
            jwt_secret: None,
            jwt_allow_no_exp: false,
            cors_origins: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            cancel_grace: Duration::from_secs(60),
            cleanup_command: None,
            credentials_file: None,
            keep_alive: Duration::from_secs(15),
            create_demo: false,
            state_key: None,
            handle_signals: false,
            max_concurrent_runs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            timeouts: Timeouts::default(),
            silence_warning: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(60),
            price_book: None,
            provider_catalog: None,
            run_isolation: IsolationMode::default(),
            run_readable: Vec::new(),
            run_writable: Vec::new(),
            monitor_program: None,
            on_shutdown: ShutdownMode::default(),
            backend_url: None,
            database_url: None,
            sandbox_dir: None,
            drift_interval: None,
            webhook_allow_private: false,
            webhook_retry_unit: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(15),
            retention: None,
        }
    }

    /// Every path setting made absolute against the current directory, once, so that nothing
    /// downstream (terraform runs in another directory) can see a relative one. A bare
    /// `--terraform` name (no `/`) is looked up on PATH.
    pub fn with_absolute_paths(mut self) -> Self {
        self.data_dir = absolute(self.data_dir);
        self.tools_dir = self.tools_dir.map(absolute);
        self.credentials_file = self.credentials_file.map(absolute);
        self.price_book = self.price_book.map(absolute);
        self.provider_catalog = self.provider_catalog.map(absolute);
        self.run_readable = self.run_readable.into_iter().map(absolute).collect();
        self.run_writable = self.run_writable.into_iter().map(absolute).collect();
        self.monitor_program = self.monitor_program.map(absolute);
        self.sandbox_dir = self.sandbox_dir.map(absolute);
        self.terraform = self.terraform.map(|program| {
            let bare = program.components().count() == 1 && !program.is_absolute();
            match bare.then(|| on_path(&program)).flatten() {
                Some(found) => found,
                None => absolute(program),
            }
        });
        self
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("terrastream.db")
    }

    /// The sandbox provider's "cloud": every twin's objects, a directory each.
    pub fn sandbox_root(&self) -> PathBuf {
        self.sandbox_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("sandbox"))
    }

    pub fn replica_id_path(&self) -> PathBuf {
        self.data_dir.join("replica-id")
    }

    pub fn state_key_path(&self) -> PathBuf {
        self.data_dir.join("state.key")
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }
}

/// `path` made absolute against the current directory (symlinks and `..` are kept as given).
/// A current directory that cannot be read leaves the path as it is; the first use of it then
/// names the problem.
pub fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::path::absolute(&path).unwrap_or(path)
}

/// The first `name` on PATH that is a file.
fn on_path(name: &std::path::Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .map(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_setting_becomes_absolute() {
        let mut settings = Settings::new("relative/data");
        settings.tools_dir = Some("tools".into());
        settings.credentials_file = Some("creds.env".into());
        settings.price_book = Some("my book.json".into());
        settings.provider_catalog = Some("./catalog.json".into());
        settings.terraform = Some("bin/terraform".into());
        let settings = settings.with_absolute_paths();
        let cwd = std::env::current_dir().unwrap_or_default();
        assert_eq!(settings.data_dir, cwd.join("relative/data"));
        assert_eq!(settings.tools_dir, Some(cwd.join("tools")));
        assert_eq!(settings.credentials_file, Some(cwd.join("creds.env")));
        assert_eq!(settings.price_book, Some(cwd.join("my book.json")));
        assert!(settings.provider_catalog.is_some_and(|p| p.is_absolute()));
        assert_eq!(settings.terraform, Some(cwd.join("bin/terraform")));
    }

    #[test]
    fn a_bare_terraform_name_is_looked_up_on_path() {
        let settings = Settings {
            terraform: Some("sh".into()),
            ..Settings::new("/data")
        }
        .with_absolute_paths();
        assert!(
            settings
                .terraform
                .as_ref()
                .is_some_and(|p| p.is_absolute() && p.ends_with("sh")),
            "{:?}",
            settings.terraform
        );
    }
}
