//! Startup and shutdown. Build: open the store and state, settle runs a previous life left
//! unfinished, then bind and serve. Stop (SIGINT/SIGTERM): no new
//! runs, running terraform interrupted gracefully and its outcome stored, streams ended with
//! their final event, the event writer flushed.

use std::net::TcpListener;
use std::sync::Arc;

use std::time::Duration;
use tokio::runtime::Handle;

use actix_cors::Cors;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, ErrorHandlers, Next};
use actix_web::{body::MessageBody, web, App, HttpServer};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::api::sse::StreamsEnd;
use crate::api::{self, auth::Authenticator, error};
use crate::auth::{self, RunGrants};
use crate::catalog::ProviderCatalog;
use crate::config::Settings;
use crate::config::ShutdownMode;
use crate::costs::PriceBook;
use crate::domain::ReplicaId;
use crate::hub::EventHub;
use crate::metrics::Metrics;
use crate::runs::secrets::Credentials;
use crate::runs::{
    Background, DriftScheduler, Isolation, IsolationMode, RecoveryReport, RetentionSweep,
    Supervisor, SupervisorParts, Toolchain,
};
use crate::state::{StateCipher, StateService};
use crate::store::{Notice, NoticeHandler, Store};
use crate::twins::Twins;
use crate::vault::Vault;
use crate::webhooks::worker::{WorkerHandle, WorkerSettings};
use crate::webhooks::{DeliveryWorker, WebhookService};

/// How long open connections get to finish once the server stops (event streams are ended
/// before that).
const CONNECTION_DRAIN_SECS: u64 = 1;

/// A built gateway, bound to its port and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    new_admin_token: Option<String>,
    supervisor: Arc<Supervisor>,
    settings: Settings,
    runs_runtime: RunsRuntime,
    /// Ends every open event stream at shutdown (clients reconnect to the next start).
    streams_end: web::Data<StreamsEnd>,
    /// The webhook delivery worker and the drift scheduler, stopped and awaited at shutdown.
    webhooks: WorkerHandle,
    drift: Option<Background>,
    retention: Option<Background>,
}

/// Runs and the event writer live on their own threads, so however busy the HTTP workers
/// are with streams, terraform's pipes are drained.
struct RunsRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl RunsRuntime {
    fn new(runtime: tokio::runtime::Runtime) -> Self {
        let handle = runtime.handle().clone();
        Self {
            runtime: Some(runtime),
            handle,
        }
    }
}

impl Drop for RunsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime inside async code panics; this never blocks.
            runtime.shutdown_background();
        }
    }
}

impl Application {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = settings.with_absolute_paths();
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
        // The operator's data files fail the start, naming the file and the problem, rather
        // than the first request that reads them.
        let price_book = PriceBook::load(settings.price_book.as_deref())?;
        let provider_catalog = ProviderCatalog::load(settings.provider_catalog.as_deref())?;
        let store = crate::store::open(&settings)?;
        let replica = replica_id(&settings)?;
        let new_admin_token =
            auth::ensure_admin_token(store.as_ref(), &settings.admin_token_path())
                .context("cannot create the admin token")?;
        let cipher = match &settings.state_key {
            Some(key) => StateCipher::from_key_text(key),
            None => StateCipher::load_or_create(&settings.state_key_path()),
        }
        .context("cannot load the state key")?;
        let vault = Arc::new(Vault::new(Arc::clone(&store), cipher.clone()));
        let state = Arc::new(StateService::open(
            Arc::clone(&store),
            cipher.clone(),
            Arc::clone(&vault),
        )?);
        let hooks = Arc::new(WebhookService::new(Arc::clone(&store), cipher));
        if new_admin_token.is_some() && settings.create_demo {
            let demo = crate::demo::new_twin("admin")?;
            let twin = state.create_twin(demo, &Twins::created("terrastream"), "terrastream")?;
            tracing::info!(twin_id = %twin.id, "created the demo twin; deploy it from the dashboard or POST /twins/{}/deploy", twin.id);
        }

        // Guarded at once: any early return below must not drop a runtime inside async code.
        let runs_runtime = RunsRuntime::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("terrastream-runs")
                .enable_all()
                .build()
                .context("cannot start the runs runtime")?,
        );
        let runtime = runs_runtime.handle.clone();
        let credentials = Credentials::load(settings.credentials_file.as_deref())
            .context("cannot read the credentials file")?;
        warn_if_no_terraform(&settings);
        let isolation = Isolation::start(settings.run_isolation)?;
        match isolation.mode() {
            IsolationMode::None => tracing::warn!(
                "run isolation is OFF (--run-isolation none): every twin's terraform, providers and provisioners run as the gateway's user and can read its admin token, state key, database and every other twin's files"
            ),
            mode => tracing::info!(isolation = mode.as_str(), "terraform runs are isolated"),
        }
        let metrics = Metrics::new().context("cannot register metrics")?;
        metrics
            .run_isolation
            .with_label_values(&[isolation.mode().as_str()])
            .set(1);
        let grants = Arc::new(RunGrants::new(Arc::clone(&store)));
        let twins = Arc::new(Twins::new(
            Arc::clone(&store),
            Arc::clone(&state),
            Arc::clone(&vault),
        ));
        let hub = EventHub::start(Arc::clone(&store), Arc::clone(&metrics), &runtime);
        let supervisor = Supervisor::new(SupervisorParts {
            settings: settings.clone(),
            store: Arc::clone(&store),
            hub,
            state: Arc::clone(&state),
            grants: Arc::clone(&grants),
            runtime: runtime.clone(),
            credentials,
            vault: Arc::clone(&vault),
            metrics: Arc::clone(&metrics),
            isolation,
            twins: Arc::clone(&twins),
            replica,
        });
        let shared = store
            .listen(notice_handler(&supervisor, &runtime))
            .context("cannot listen to the database")?;
        if shared {
            supervisor.hub().set_shared();
        }

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let local = listener.local_addr()?;
        let port = local.port();
        supervisor.set_backend_url(backend_url(&settings, local));

        // After listening, in the background: a terraform a previous life left running
        // reaches this gateway's backend meanwhile, and /healthz answers at once.
        let recovering = Arc::clone(&supervisor);
        runtime.spawn(async move {
            match recovering.recover().await {
                Ok(report) if report == RecoveryReport::default() => {}
                Ok(report) => tracing::warn!(
                    adopted = report.adopted,
                    settled = report.settled,
                    requeued = report.requeued,
                    stopped_strays = report.stopped_strays,
                    "took over the runs a previous start left"
                ),
                Err(err) => {
                    tracing::error!(%err, "could not look at the runs a previous start left")
                }
            }
        });
        let webhooks = DeliveryWorker::new(
            Arc::clone(&store),
            Arc::clone(&hooks),
            WorkerSettings {
                retry_unit: settings.webhook_retry_unit,
                timeout: settings.webhook_timeout,
                allow_private: settings.webhook_allow_private,
            },
        )
        .context("cannot start the webhook worker")?
        .spawn(&runtime);
        let drift = settings
            .drift_interval
            .map(|interval| DriftScheduler::spawn(Arc::clone(&supervisor), interval, &runtime));
        let retention = settings
            .retention
            .map(|policy| RetentionSweep::spawn(Arc::clone(&supervisor), policy, &runtime));
        let streams_end = web::Data::new(StreamsEnd::default());
        let streams = streams_end.clone();

        let supervisor_data = web::Data::from(Arc::clone(&supervisor));
        let state_data = web::Data::from(state);
        let metrics_data = web::Data::from(metrics);
        let settings_data = web::Data::new(settings.clone());
        let price_book_data = web::Data::new(price_book);
        let catalog_data = web::Data::new(provider_catalog);
        let store_data: web::Data<dyn Store> = web::Data::from(Arc::clone(&store));
        let twins_data = web::Data::from(twins);
        let vault_data = web::Data::from(vault);
        let hooks_data = web::Data::from(hooks);
        let audit_data = web::Data::new(crate::audit::AuditLog::new(Arc::clone(&store)));
        let authenticator =
            web::Data::new(Authenticator::new(Arc::clone(&store), grants, &settings));
        let max_body = settings.max_body_bytes;
        let cors_origins = settings.cors_origins.clone();

        let server = HttpServer::new(move || {
            App::new()
                .wrap(
                    ErrorHandlers::new()
                        .handler(StatusCode::METHOD_NOT_ALLOWED, error::method_not_allowed),
                )
                .wrap(from_fn(record_latency))
                .wrap(cors(&cors_origins))
                .wrap(TracingLogger::default())
                .app_data(store_data.clone())
                .app_data(twins_data.clone())
                .app_data(authenticator.clone())
                .app_data(supervisor_data.clone())
                .app_data(state_data.clone())
                .app_data(vault_data.clone())
                .app_data(hooks_data.clone())
                .app_data(audit_data.clone())
                .app_data(metrics_data.clone())
                .app_data(settings_data.clone())
                .app_data(price_book_data.clone())
                .app_data(catalog_data.clone())
                .app_data(streams_end.clone())
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
        .disable_signals()
        .shutdown_timeout(CONNECTION_DRAIN_SECS)
        .listen(listener)?
        .run();

        Ok(Self {
            port,
            server,
            new_admin_token,
            supervisor,
            settings,
            runs_runtime,
            streams_end: streams,
            webhooks,
            drift,
            retention,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin token created by this start, if this was the first start on the data dir.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    /// Serves until stopped by SIGINT/SIGTERM (when `handle_signals`; else until dropped),
    /// then stops gracefully. A second signal exits at once; the next start repairs.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            supervisor,
            settings,
            runs_runtime,
            streams_end,
            webhooks,
            drift,
            retention,
            ..
        } = self;
        let handle = server.handle();
        // The server future processes its own stop command: keep it polled on its own task.
        let mut server = tokio::spawn(server);
        tokio::select! {
            result = &mut server => return result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            () = stop_requested(settings.handle_signals) => {}
        }
        let mode = settings.on_shutdown;
        match mode {
            ShutdownMode::Leave => tracing::info!(
                "shutting down: no new runs; running terraform goes on under its monitors and the next start adopts it"
            ),
            ShutdownMode::Interrupt => {
                tracing::info!("shutting down: no new runs; stopping running terraform gracefully")
            }
        }
        if settings.handle_signals {
            tokio::spawn(async {
                if stop_signal().await.is_ok() {
                    tracing::warn!(
                        "second signal: exiting at once; the next start adopts or settles what was running"
                    );
                    std::process::exit(130);
                }
            });
        }
        let limit = match mode {
            ShutdownMode::Leave => Duration::from_secs(1),
            ShutdownMode::Interrupt => {
                settings.shutdown_grace.max(settings.cancel_grace) + Duration::from_secs(5)
            }
        };
        for task in [drift, retention].into_iter().flatten() {
            task.stop(Duration::from_secs(2)).await;
        }
        supervisor.shutdown(mode, limit).await;
        webhooks.stop(Duration::from_secs(2)).await;
        streams_end.0.cancel();
        handle.stop(true).await;
        let result = server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        drop(runs_runtime);
        tracing::info!("stopped");
        result
    }
}

async fn stop_requested(handle_signals: bool) {
    if !handle_signals {
        return std::future::pending().await;
    }
    if let Err(err) = stop_signal().await {
        tracing::error!(%err, "cannot listen for signals; the gateway stops only when killed");
        std::future::pending::<()>().await;
    }
}

/// The next SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Request latency by method, route pattern and status (streams: until their headers).
async fn record_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = response.status().as_u16().to_string();
        metrics
            .requests
            .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
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

/// Where terraform reaches this gateway's state backend: `--backend-url`, else the address it
/// listens on (loopback for a wildcard bind).
fn backend_url(settings: &Settings, local: std::net::SocketAddr) -> String {
    if let Some(url) = &settings.backend_url {
        return url.clone();
    }
    let host = match local.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", local.port())
}

/// This gateway's id among the gateways on one database: made on the first start in a data
/// directory and kept there, so a restarted gateway knows its own runs.
fn replica_id(settings: &Settings) -> anyhow::Result<ReplicaId> {
    let path = settings.replica_id_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a replica id", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = ReplicaId::generate();
            auth::write_private_file(&path, id.as_str().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What other gateways on the database did, to whom here it concerns: events of runs
/// followed here, cancels of runs working here, runs entering the queue.
fn notice_handler(supervisor: &Arc<Supervisor>, runtime: &Handle) -> NoticeHandler {
    let (supervisor, runtime) = (Arc::downgrade(supervisor), runtime.clone());
    Arc::new(move |notice| {
        let Some(supervisor) = supervisor.upgrade() else {
            return;
        };
        match notice {
            Notice::Events { run_id, first } => supervisor.hub().wake(&run_id, first),
            Notice::Cancel(run_id) => {
                supervisor.cancel_here(&run_id);
            }
            Notice::Queued => {
                runtime.spawn(async move { supervisor.fill_slots().await });
            }
            Notice::Resync => {
                supervisor.hub().wake_all();
                runtime.spawn(async move { supervisor.fill_slots().await });
            }
        }
    })
}
