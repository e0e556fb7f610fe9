//! Startup: open the store, make sure an admin token exists, bind, and serve.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::api::{self, auth::Authenticator, error};
use crate::auth;
use crate::auth::RunGrants;
use crate::config::Settings;
use crate::hub::EventHub;
use crate::runs::secrets::Credentials;
use crate::runs::{Supervisor, SupervisorParts, Toolchain};
use crate::state::{StateCipher, StateService};
use crate::store::{SqliteStore, Store};

/// A built gateway, bound to its port and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    new_admin_token: Option<String>,
    runs_runtime: RunsRuntime,
}

/// Runs and the event writer live on their own threads, so however busy the HTTP workers
/// are with streams, terraform's pipes are drained.
struct RunsRuntime(Option<tokio::runtime::Runtime>);

impl Drop for RunsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Dropping a runtime inside async code panics; this never blocks.
            runtime.shutdown_background();
        }
    }
}

impl Application {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        // Working directories hold twin variables and provider caches: owner only.
        std::fs::set_permissions(
            &settings.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .with_context(|| format!("cannot restrict {}", settings.data_dir.display()))?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&settings.database_path())
                .with_context(|| format!("cannot open {}", settings.database_path().display()))?,
        );
        let new_admin_token =
            auth::ensure_admin_token(store.as_ref(), &settings.admin_token_path())
                .context("cannot create the admin token")?;
        let cipher = match &settings.state_key {
            Some(key) => StateCipher::from_key_text(key),
            None => StateCipher::load_or_create(&settings.state_key_path()),
        }
        .context("cannot load the state key")?;
        let state = Arc::new(StateService::open(Arc::clone(&store), cipher)?);
        if new_admin_token.is_some() && settings.create_demo {
            let demo = crate::demo::new_twin("admin")?;
            let twin = store.create_twin(demo, "terrastream")?;
            state.seed(&twin.id, "terrastream")?;
            tracing::info!(twin_id = %twin.id, "created the demo twin; deploy it from the dashboard or POST /twins/{}/deploy", twin.id);
        }

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("terrastream-runs")
            .enable_all()
            .build()
            .context("cannot start the runs runtime")?;
        let credentials = Credentials::load(settings.credentials_file.as_deref())
            .context("cannot read the credentials file")?;
        warn_if_no_terraform(&settings);
        let grants = Arc::new(RunGrants::default());
        let hub = EventHub::start(Arc::clone(&store), runtime.handle());
        let supervisor = web::Data::from(Supervisor::new(SupervisorParts {
            settings: settings.clone(),
            store: Arc::clone(&store),
            hub,
            state: Arc::clone(&state),
            grants: Arc::clone(&grants),
            runtime: runtime.handle().clone(),
            credentials,
            backend_url: format!("http://127.0.0.1:{port}"),
        }));
        let state_data = web::Data::from(state);
        let settings_data = web::Data::new(settings.clone());

        let store_data: web::Data<dyn Store> = web::Data::from(Arc::clone(&store));
        let authenticator = web::Data::new(Authenticator::new(
            Arc::clone(&store),
            Arc::clone(&grants),
            &settings,
        ));
        let max_body = settings.max_body_bytes;
        let cors_origins = settings.cors_origins.clone();

        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&cors_origins))
                .wrap(TracingLogger::default())
                .app_data(store_data.clone())
                .app_data(authenticator.clone())
                .app_data(supervisor.clone())
                .app_data(state_data.clone())
                .app_data(settings_data.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(error::json_payload_error),
                )
                .app_data(web::PayloadConfig::default().limit(max_body))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(api::routes)
                .default_service(web::to(error::no_route))
        })
        .listen(listener)?
        .run();

        Ok(Self {
            port,
            server,
            new_admin_token,
            runs_runtime: RunsRuntime(Some(runtime)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin token created by this start, if this was the first start on the data dir.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            runs_runtime,
            ..
        } = self;
        let result = server.await;
        drop(runs_runtime);
        result
    }
}

/// A missing terraform is not fatal at start (twins can still be edited), but say so now.
fn warn_if_no_terraform(settings: &Settings) {
    match Toolchain::locate(settings) {
        Ok(toolchain) => {
            tracing::info!(terraform = %toolchain.terraform.display(), "terraform found")
        }
        Err(err) => tracing::warn!("{err}; runs will fail until this is fixed"),
    }
}

fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| {
            if origin == "*" {
                cors.allow_any_origin()
            } else {
                cors.allowed_origin(origin)
            }
        })
        .allow_any_method()
        .allow_any_header()
        .expose_headers(["Location", "X-Request-Id"])
        .supports_credentials()
        .max_age(3600)
}
