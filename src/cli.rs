//! The command line: `terrastream serve` and `terrastream token create`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "terrastream",
    version,
    about = "Runs terraform for digital twins and streams every line"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the gateway.
    Serve(Box<ServeArgs>),
    /// Run one terraform command of a run, outliving the gateway (started by the gateway).
    #[command(hide = true)]
    Monitor {
        /// The step's directory: its spool and exit status go there.
        step_dir: PathBuf,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for an owner and print it once.
    Create {
        #[arg(long)]
        owner: String,
        /// Let the token see and manage every owner's twins.
        #[arg(long)]
        admin: bool,
        #[arg(long, env = "TERRASTREAM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The gateways' PostgreSQL database, when they use one.
        #[arg(long, env = "TERRASTREAM_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TERRASTREAM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Where the database, working directories and keys live.
    #[arg(long, env = "TERRASTREAM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Path of the terraform (or tofu) binary; default: the tools folder, then PATH.
    #[arg(long, env = "TERRASTREAM_TERRAFORM")]
    pub terraform: Option<PathBuf>,
    /// The project's tools folder (made by scripts/setup.sh); found automatically if not given.
    #[arg(long, env = "TERRASTREAM_TOOLS_DIR")]
    pub tools_dir: Option<PathBuf>,
    /// Accept HS256 JWTs signed with this secret (claim `sub` = owner, `admin` = bool).
    #[arg(long, env = "TERRASTREAM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Also accept JWTs without an `exp` claim; they then never expire.
    #[arg(long, env = "TERRASTREAM_JWT_ALLOW_NO_EXP")]
    pub jwt_allow_no_exp: bool,
    /// Origins allowed by CORS, comma-separated ("*" for any).
    #[arg(long, env = "TERRASTREAM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "TERRASTREAM_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Mark the session cookie Secure (serve over HTTPS).
    #[arg(long, env = "TERRASTREAM_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Seconds terraform gets to stop gracefully after a cancel before it is killed.
    #[arg(long, env = "TERRASTREAM_CANCEL_GRACE_SECS", default_value_t = 60)]
    pub cancel_grace_secs: u64,
    /// Shell command run in the "SDK cleanup" stage after a successful destroy.
    #[arg(long, env = "TERRASTREAM_CLEANUP_COMMAND")]
    pub cleanup_command: Option<String>,
    /// File of NAME=value cloud credentials (AWS_*, ARM_*, GOOGLE_*) handed to terraform.
    #[arg(long, env = "TERRASTREAM_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Key for terraform state at rest: 32 bytes as 64 hex digits or base64
    /// (default: <data-dir>/state.key, created on first start).
    #[arg(long, env = "TERRASTREAM_STATE_KEY", hide_env_values = true)]
    pub state_key: Option<String>,
    /// Runs that may work at once; more wait as pending (default: the number of cores).
    #[arg(long, env = "TERRASTREAM_MAX_CONCURRENT_RUNS")]
    pub max_concurrent_runs: Option<usize>,
    /// Limit for `terraform init`, in seconds.
    #[arg(long, env = "TERRASTREAM_INIT_TIMEOUT_SECS", default_value_t = 1800)]
    pub init_timeout_secs: u64,
    /// Limit for `terraform plan` (and other read-only commands), in seconds.
    #[arg(long, env = "TERRASTREAM_PLAN_TIMEOUT_SECS", default_value_t = 7200)]
    pub plan_timeout_secs: u64,
    /// Limit for `terraform apply`, in seconds.
    #[arg(long, env = "TERRASTREAM_APPLY_TIMEOUT_SECS", default_value_t = 43200)]
    pub apply_timeout_secs: u64,
    /// Limit for `terraform destroy`, in seconds.
    #[arg(
        long,
        env = "TERRASTREAM_DESTROY_TIMEOUT_SECS",
        default_value_t = 43200
    )]
    pub destroy_timeout_secs: u64,
    /// Warn (a `warning` event) when terraform prints nothing for this many seconds.
    #[arg(long, env = "TERRASTREAM_SILENCE_WARNING_SECS", default_value_t = 600)]
    pub silence_warning_secs: u64,
    /// On SIGINT/SIGTERM, seconds running terraform gets to stop gracefully.
    #[arg(long, env = "TERRASTREAM_SHUTDOWN_GRACE_SECS", default_value_t = 60)]
    pub shutdown_grace_secs: u64,
    /// Do not create the demo twin on first start.
    #[arg(long, env = "TERRASTREAM_NO_DEMO")]
    pub no_demo: bool,
    /// Price book for cost estimates (JSON; see docs/costs.md); default: the bundled one.
    #[arg(long, env = "TERRASTREAM_PRICE_BOOK")]
    pub price_book: Option<PathBuf>,
    /// Provider catalog of regions and sizes (JSON); default: the bundled one.
    #[arg(long, env = "TERRASTREAM_PROVIDER_CATALOG")]
    pub provider_catalog: Option<PathBuf>,
    /// How terraform runs are isolated: `bubblewrap` (default; the gateway refuses to start
    /// when it cannot run) or `none` (any twin's configuration can then read the gateway's
    /// secrets: its admin token, state key and database).
    #[arg(long, env = "TERRASTREAM_RUN_ISOLATION", default_value = "bubblewrap")]
    pub run_isolation: crate::runs::IsolationMode,
    /// Extra paths every run may read inside its isolation, comma-separated.
    #[arg(long, env = "TERRASTREAM_RUN_READABLE", value_delimiter = ',')]
    pub run_readable: Vec<PathBuf>,
    /// Extra paths every run may write inside its isolation, comma-separated; every twin's
    /// configuration reaches what is there.
    #[arg(long, env = "TERRASTREAM_RUN_WRITABLE", value_delimiter = ',')]
    pub run_writable: Vec<PathBuf>,
    /// What SIGINT/SIGTERM does to running terraform: `leave` it to its monitor (the next
    /// start adopts it; the default) or `interrupt` it and store the outcome.
    #[arg(long, env = "TERRASTREAM_ON_SHUTDOWN", default_value = "leave")]
    pub on_shutdown: crate::config::ShutdownMode,
    /// Where terraform reaches the state backend (default: http://<bind address>); keep it
    /// the same across restarts so runs outlive them.
    #[arg(long, env = "TERRASTREAM_BACKEND_URL")]
    pub backend_url: Option<String>,
    /// A PostgreSQL database (postgres://user:password@host/db) shared by every replica
    /// (each with its own --data-dir and the same --state-key); default: SQLite in the data
    /// directory.
    #[arg(long, env = "TERRASTREAM_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the sandbox provider keeps its objects (default: <data-dir>/sandbox); give
    /// replicas the same one, as they would share a real cloud.
    #[arg(long, env = "TERRASTREAM_SANDBOX_DIR")]
    pub sandbox_dir: Option<PathBuf>,
    /// Check every deployed twin for drift every this many seconds (off by default).
    #[arg(long, env = "TERRASTREAM_DRIFT_INTERVAL_SECS")]
    pub drift_interval_secs: Option<u64>,
    /// Let webhooks reach loopback, private and link-local addresses (refused by default).
    #[arg(long, env = "TERRASTREAM_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// The first retry delay of a webhook delivery in ms; the schedule scales with it (tests).
    #[arg(
        long,
        env = "TERRASTREAM_WEBHOOK_RETRY_UNIT_MS",
        default_value_t = 5000,
        hide = true
    )]
    pub webhook_retry_unit_ms: u64,
    /// How long one webhook attempt may take, in ms (tests).
    #[arg(
        long,
        env = "TERRASTREAM_WEBHOOK_TIMEOUT_MS",
        default_value_t = 15000,
        hide = true
    )]
    pub webhook_timeout_ms: u64,
    /// Purge soft-deleted twins this many days after their deletion (hourly; off by default).
    #[arg(long, env = "TERRASTREAM_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// The retention period in seconds instead of days (tests).
    #[arg(long, env = "TERRASTREAM_RETENTION_SECS", hide = true)]
    pub retention_secs: Option<u64>,
    /// How often the retention sweep looks, in ms (tests).
    #[arg(
        long,
        env = "TERRASTREAM_RETENTION_EVERY_MS",
        default_value_t = 3_600_000,
        hide = true
    )]
    pub retention_every_ms: u64,
}

impl ServeArgs {
    pub fn into_settings(self) -> Settings {
        let mut settings = Settings::new(self.data_dir);
        settings.bind = self.bind;
        settings.terraform = self.terraform;
        settings.tools_dir = self.tools_dir;
        settings.jwt_secret = self.jwt_secret.filter(|s| !s.is_empty());
        settings.jwt_allow_no_exp = self.jwt_allow_no_exp;
        settings.cors_origins = self
            .cors_origins
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect();
        settings.max_body_bytes = self.max_body_bytes;
        settings.secure_cookies = self.secure_cookies;
        settings.cancel_grace = std::time::Duration::from_secs(self.cancel_grace_secs);
        settings.cleanup_command = self.cleanup_command.filter(|c| !c.trim().is_empty());
        settings.credentials_file = self.credentials_file;
        settings.create_demo = !self.no_demo;
        settings.handle_signals = true;
        if let Some(limit) = self.max_concurrent_runs.filter(|n| *n > 0) {
            settings.max_concurrent_runs = limit;
        }
        let secs = std::time::Duration::from_secs;
        settings.timeouts = crate::config::Timeouts {
            init: secs(self.init_timeout_secs),
            plan: secs(self.plan_timeout_secs),
            apply: secs(self.apply_timeout_secs),
            destroy: secs(self.destroy_timeout_secs),
        };
        settings.silence_warning = secs(self.silence_warning_secs);
        settings.shutdown_grace = secs(self.shutdown_grace_secs);
        settings.state_key = self.state_key.filter(|k| !k.trim().is_empty());
        let given = |path: &PathBuf| !path.as_os_str().is_empty();
        settings.price_book = self.price_book.filter(given);
        settings.provider_catalog = self.provider_catalog.filter(given);
        settings.run_isolation = self.run_isolation;
        settings.run_readable = self.run_readable.into_iter().filter(given).collect();
        settings.run_writable = self.run_writable.into_iter().filter(given).collect();
        settings.on_shutdown = self.on_shutdown;
        settings.database_url = self.database_url.filter(|u| !u.trim().is_empty());
        settings.sandbox_dir = self.sandbox_dir.filter(given);
        settings.backend_url = self
            .backend_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        settings.drift_interval = self.drift_interval_secs.filter(|n| *n > 0).map(secs);
        settings.webhook_allow_private = self.webhook_allow_private;
        let millis = std::time::Duration::from_millis;
        settings.webhook_retry_unit = millis(self.webhook_retry_unit_ms.max(1));
        settings.webhook_timeout = millis(self.webhook_timeout_ms.max(1));
        let keep = self
            .retention_secs
            .or_else(|| self.retention_days.map(|days| days.saturating_mul(86_400)))
            .filter(|n| *n > 0);
        settings.retention = keep.map(|keep| crate::runs::RetentionPolicy {
            keep: secs(keep),
            every: millis(self.retention_every_ms.max(100)),
        });
        settings.with_absolute_paths()
    }
}
