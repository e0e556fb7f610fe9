//! `spawn_app()` and `TestApp`: a real gateway on a free port with a fresh data directory, and
//! one method per endpoint so tests read like a client's calls.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use terrastream::app::Application;
use terrastream::auth;
use terrastream::config::Settings;
use terrastream::domain::{DeploymentStatus, Principal, ReplicaId, RunId, Twin, TwinId};
use terrastream::store::{LockChange, StatusMove, Store};

/// A fresh PostgreSQL database when the suite runs on PostgreSQL
/// (`TERRASTREAM_TEST_STORE=postgres`; scripts/test.sh runs it both ways), else `None`: SQLite
/// in the data directory.
pub fn test_database_url() -> Option<String> {
    match std::env::var("TERRASTREAM_TEST_STORE").as_deref() {
        Ok("postgres") => Some(crate::postgres_cluster::cluster().new_database()),
        Ok("sqlite") | Ok("") | Err(_) => None,
        Ok(other) => panic!("TERRASTREAM_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The admin token the first start created.
    pub admin_token: String,
    /// A client without a cookie jar: tests that need cookies send them explicitly.
    pub client: reqwest::Client,
    pub settings: Settings,
    /// Kept so the data directory lives as long as the app.
    pub data_dir: TempDir,
    /// The test's own connection to the app's database, opened on first use.
    pub store: std::sync::OnceLock<std::sync::Arc<dyn Store>>,
}

/// A gateway with the defaults `terrastream serve` would use.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway whose settings `configure` may change first (a small body limit, a JWT secret...).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("cannot create a temporary data directory");
    let mut settings = Settings::new(data_dir.path());
    settings.bind = "127.0.0.1:0".into();
    // Runs' monitors are the gateway binary (this test binary is not one).
    settings.monitor_program = Some(env!("CARGO_BIN_EXE_terrastream").into());
    // Tests start from a gateway without twins, whatever the default for the demo twin.
    settings.create_demo = false;
    settings.database_url = test_database_url();
    configure(&mut settings);

    let application =
        Application::build(settings.clone()).expect("the application failed to build");
    let port = application.port();
    let admin_token = application
        .new_admin_token()
        .expect("a fresh data directory must get an admin token")
        .to_owned();
    tokio::spawn(application.run_until_stopped());

    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_token,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("cannot build the HTTP client"),
        settings,
        data_dir,
        store: std::sync::OnceLock::new(),
    }
}

/// A minimal valid body for `POST /twins`.
pub fn twin_body(name: &str) -> Value {
    json!({
        "name": name,
        "provider": "sandbox",
        "files": { "main.tf": "resource \"sandbox_thing\" \"a\" {}\n" },
        "variables": { "region": "local" }
    })
}

/// Reads a response body as JSON, failing the test with the body text if it is not.
pub async fn json_body(response: Response) -> Value {
    let text = response
        .text()
        .await
        .expect("cannot read the response body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts the status and the error shape `{"detail": string, "code": string}`; returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    let actual = response.status();
    let body = json_body(response).await;
    assert_eq!(actual, status, "unexpected status; body: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "error without a detail sentence: {body}"
    );
    assert_eq!(body["code"], code, "unexpected error code; body: {body}");
    body
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with `Authorization: Bearer <token>`.
    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    async fn send(builder: RequestBuilder) -> Response {
        builder.send().await.expect("the request failed to send")
    }

    /// The store behind the running app, opened on the same database (SQLite's WAL allows a
    /// second connection to the file).
    pub fn store(&self) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::clone(self.store.get_or_init(|| {
            terrastream::store::open(&self.settings).expect("cannot open the app's database")
        }))
    }

    /// The gateway's replica id (kept in its data directory).
    pub fn replica(&self) -> ReplicaId {
        std::fs::read_to_string(self.settings.replica_id_path())
            .expect("the gateway has no replica id")
            .trim()
            .parse()
            .expect("not a replica id")
    }

    /// A new API token for a non-admin `owner`.
    pub fn create_user_token(&self, owner: &str) -> String {
        let principal = Principal {
            owner: owner.into(),
            is_admin: false,
        };
        auth::create_token(self.store().as_ref(), &principal, Some("test"))
            .expect("cannot create a token")
    }

    /// Locks a draft twin as a run starting a deploy would, returning the run that holds it.
    pub fn lock_twin(&self, twin_id: &str) -> RunId {
        let id: TwinId = twin_id.parse().expect("not a twin id");
        let run = RunId::generate();
        let change = StatusMove {
            to: DeploymentStatus::Deploying,
            actor: "test-runner".into(),
            reason: Some("locked by a test".into()),
            lock: LockChange::Acquire(run.clone()),
        };
        // As the twins service does it: the domain decides, the store writes.
        let store = self.store();
        let current = store
            .get_twin(&id)
            .expect("cannot read the twin")
            .expect("no such twin");
        let decided = current
            .moved(&change, None, &terrastream::clock::now())
            .expect("the twin cannot be locked");
        let twin: Twin = store
            .write_twin(&decided)
            .expect("cannot lock the twin")
            .expect("the twin changed meanwhile");
        assert!(twin.is_locked);
        run
    }

    pub async fn health_check(&self) -> Response {
        Self::send(self.client.get(self.url("/healthz"))).await
    }

    pub async fn create_twin(&self, token: &str, body: &Value) -> Response {
        Self::send(self.request(Method::POST, "/twins", token).json(body)).await
    }

    /// Creates a twin and returns its JSON, failing the test unless it was a 201.
    pub async fn create_twin_ok(&self, token: &str, name: &str) -> Value {
        let response = self.create_twin(token, &twin_body(name)).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {body}");
        body
    }

    pub async fn list_twins(&self, token: &str) -> Response {
        Self::send(self.request(Method::GET, "/twins", token)).await
    }

    pub async fn list_twins_including_deleted(&self, token: &str) -> Response {
        Self::send(self.request(Method::GET, "/twins?include_deleted=true", token)).await
    }

    pub async fn get_twin(&self, token: &str, id: &str) -> Response {
        Self::send(self.request(Method::GET, &format!("/twins/{id}"), token)).await
    }

    pub async fn update_twin(&self, token: &str, id: &str, body: &Value) -> Response {
        Self::send(
            self.request(Method::PUT, &format!("/twins/{id}"), token)
                .json(body),
        )
        .await
    }

    pub async fn delete_twin(&self, token: &str, id: &str) -> Response {
        Self::send(self.request(Method::DELETE, &format!("/twins/{id}"), token)).await
    }

    pub async fn restore_twin(&self, token: &str, id: &str) -> Response {
        Self::send(self.request(Method::POST, &format!("/twins/{id}/restore"), token)).await
    }

    pub async fn history(&self, token: &str, id: &str) -> Response {
        Self::send(self.request(Method::GET, &format!("/twins/{id}/history"), token)).await
    }

    /// The twin's history as JSON, failing the test unless it was a 200.
    pub async fn history_ok(&self, token: &str, id: &str) -> Vec<Value> {
        let response = self.history(token, id).await;
        assert_eq!(response.status(), StatusCode::OK);
        match json_body(response).await {
            Value::Array(entries) => entries,
            other => panic!("history is not a list: {other}"),
        }
    }

    pub async fn set_status(&self, token: &str, id: &str, status: &str, reason: &str) -> Response {
        Self::send(
            self.request(Method::POST, &format!("/twins/{id}/status"), token)
                .json(&json!({ "status": status, "reason": reason })),
        )
        .await
    }

    pub async fn login(&self, token: &str) -> Response {
        Self::send(
            self.client
                .post(self.url("/auth/login"))
                .json(&json!({ "token": token })),
        )
        .await
    }

    /// `POST /auth/logout` with the session cookie `cookie` (`name=value`).
    pub async fn logout(&self, cookie: &str) -> Response {
        Self::send(
            self.client
                .post(self.url("/auth/logout"))
                .header(reqwest::header::COOKIE, cookie),
        )
        .await
    }

    pub async fn whoami(&self, token: &str) -> Response {
        Self::send(self.request(Method::GET, "/auth/whoami", token)).await
    }

    /// Any method and path with a raw body and content type, for malformed-input tests.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut builder = self.client.request(method, self.url(path)).body(body);
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        Self::send(builder).await
    }
}
