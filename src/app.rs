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
use crate::config::Settings;
use crate::store::{SqliteStore, Store};

/// A built gateway, bound to its port and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    new_admin_token: Option<String>,
}

impl Application {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&settings.database_path())
                .with_context(|| format!("cannot open {}", settings.database_path().display()))?,
        );
        let new_admin_token =
            auth::ensure_admin_token(store.as_ref(), &settings.admin_token_path())
                .context("cannot create the admin token")?;

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();

        let store_data: web::Data<dyn Store> = web::Data::from(Arc::clone(&store));
        let authenticator = web::Data::new(Authenticator::new(Arc::clone(&store), &settings));
        let max_body = settings.max_body_bytes;
        let cors_origins = settings.cors_origins.clone();

        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&cors_origins))
                .wrap(TracingLogger::default())
                .app_data(store_data.clone())
                .app_data(authenticator.clone())
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
        self.server.await
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
