//! What the state backend tests share: a terraform CLI of one's own pointed at a twin through
//! the gateway's `http` backend (as an admin would run it), raw backend requests with basic
//! auth, and readers of state versions, infrastructure status and the database files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{json_body, TestApp};
use crate::run_helpers::PATIENCE;

/// The repository's terraform 1.15.5 and its CLI config (the provider mirror).
fn tools() -> (PathBuf, PathBuf) {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools");
    let terraform = tools.join("bin").join("terraform");
    assert!(
        terraform.is_file() && tools.join("providers").is_dir(),
        "run scripts/setup.sh first: no {} or no provider mirror",
        terraform.display()
    );
    (terraform, tools.join("terraformrc"))
}

/// What one terraform command did.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// An admin's own terraform CLI on a twin: a temporary directory with a copy of the twin's
/// configuration and variables plus `terraform { backend "http" {} }` in an override file, and
/// the backend given only by `TF_HTTP_*` variables, as docs/state-backend.md tells an admin
/// to do.
pub struct Cli {
    /// Where the recipe ran; the CLI works in its `twin/`.
    _root: TempDir,
    pub dir: PathBuf,
    terraform: PathBuf,
    env: Vec<(String, String)>,
}

/// The first `sh` block of docs/state-backend.md's "Pointing your own terraform at a twin",
/// without the indentation it has inside its list item.
fn documented_recipe() -> String {
    let docs = include_str!("../../docs/state-backend.md");
    let section = docs
        .split("## Pointing your own terraform at a twin")
        .nth(1)
        .expect("docs/state-backend.md has the CLI section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a sh block");
    let indent = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    block
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Cli {
    /// A CLI on `twin_id` of `app`, authenticating with `password` (an API token), in a
    /// directory made by docs/state-backend.md's own recipe (the twin's files and variables
    /// from `GET /twins/{id}`, and the backend override), run as written.
    pub async fn new(app: &TestApp, twin_id: &str, password: &str) -> Cli {
        let (terraform, cli_config) = tools();
        let dir = tempfile::tempdir().unwrap();
        let recipe = documented_recipe().replace("http://127.0.0.1:8080", &app.address);
        let output = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &recipe])
            .current_dir(dir.path())
            .env("TWIN", twin_id)
            .env("TOKEN", password)
            .output()
            .await
            .expect("cannot run the documented recipe");
        assert!(
            output.status.success(),
            "docs/state-backend.md's recipe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (twin_dir, root) = (dir.path().join("twin"), dir);
        let dir = twin_dir;
        let state = app.url(&format!("/twins/{twin_id}/tfstate"));
        let sandbox = app.settings.data_dir.join("sandbox").join(twin_id);
        let mut env = vec![
            ("TF_HTTP_ADDRESS".to_owned(), state.clone()),
            ("TF_HTTP_LOCK_ADDRESS".to_owned(), format!("{state}/lock")),
            ("TF_HTTP_UNLOCK_ADDRESS".to_owned(), format!("{state}/lock")),
            ("TF_HTTP_USERNAME".to_owned(), "admin-cli".to_owned()),
            ("TF_HTTP_PASSWORD".to_owned(), password.to_owned()),
            ("SANDBOX_DIR".to_owned(), sandbox.display().to_string()),
            (
                "TF_CLI_CONFIG_FILE".to_owned(),
                cli_config.display().to_string(),
            ),
            ("CHECKPOINT_DISABLE".to_owned(), "1".to_owned()),
            ("TF_IN_AUTOMATION".to_owned(), "1".to_owned()),
            ("TF_INPUT".to_owned(), "0".to_owned()),
        ];
        for name in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_owned(), value));
            }
        }
        Cli {
            _root: root,
            dir,
            terraform,
            env,
        }
    }

    /// Runs `terraform <args>` in the CLI's directory (a clean environment, stdin closed).
    pub async fn run(&self, args: &[&str]) -> CliOutput {
        let child = tokio::process::Command::new(&self.terraform)
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start terraform");
        let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("terraform {args:?} did not end within {PATIENCE:?}"))
            .expect("terraform failed to run");
        CliOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its output.
    pub async fn ok(&self, args: &[&str]) -> CliOutput {
        let output = self.run(args).await;
        assert!(output.success(), "terraform {args:?} failed: {output:#?}");
        output
    }

    pub async fn init(&self) {
        self.ok(&["init", "-input=false", "-no-color"]).await;
    }

    pub async fn apply(&self) {
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
            .await;
    }

    pub async fn destroy(&self) {
        self.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"])
            .await;
    }

    /// `terraform state list` through the backend.
    pub async fn state_list(&self) -> BTreeSet<String> {
        self.ok(&["state", "list", "-no-color"])
            .await
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The addresses terraform would give the sandbox objects of a twin (`sandbox_resource.<name>`:
/// the test configurations name each resource after its object).
pub fn sandbox_addresses(app: &TestApp, twin_id: &str) -> BTreeSet<String> {
    app.sandbox_objects(twin_id)
        .iter()
        .map(|o| format!("sandbox_resource.{}", o["name"].as_str().unwrap()))
        .collect()
}

/// Every sandbox object's generated secret.
pub fn sandbox_secrets(app: &TestApp, twin_id: &str) -> Vec<String> {
    let secrets: Vec<String> = app
        .sandbox_objects(twin_id)
        .iter()
        .map(|o| o["secret"].as_str().expect("a sandbox secret").to_owned())
        .collect();
    assert!(secrets.iter().all(|s| s.starts_with("sbx_")), "{secrets:?}");
    secrets
}

/// One request to the state backend with HTTP basic auth, as terraform sends it. `path` is
/// `""` for `/tfstate` or `"/lock"`.
pub async fn backend(
    app: &TestApp,
    method: &str,
    twin_id: &str,
    path: &str,
    password: &str,
    body: Option<Vec<u8>>,
) -> Response {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .client
        .request(method, app.url(&format!("/twins/{twin_id}/tfstate{path}")))
        .basic_auth("terraform", Some(password));
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    request.send().await.expect("the request failed to send")
}

/// `GET /twins/{id}/tfstate` as terraform reads it, failing unless 200.
pub async fn backend_state(app: &TestApp, twin_id: &str, password: &str) -> Value {
    let response = backend(app, "GET", twin_id, "", password, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    json_body(response).await
}

/// An admin `GET` of a twin route as JSON, failing unless 200.
pub async fn get_ok(app: &TestApp, twin_id: &str, route: &str) -> Value {
    let path = format!("/twins/{twin_id}{route}");
    let response = app
        .request(Method::GET, &path, &app.admin_token)
        .send()
        .await
        .expect("the request failed to send");
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// The twin's state versions, oldest first.
pub async fn versions(app: &TestApp, twin_id: &str) -> Vec<Value> {
    let mut list = get_ok(app, twin_id, "/state/versions")
        .await
        .as_array()
        .expect("versions are a list")
        .clone();
    list.sort_by_key(|v| v["version"].as_i64().unwrap());
    list
}

pub async fn infrastructure(app: &TestApp, twin_id: &str) -> Value {
    get_ok(app, twin_id, "/infrastructure-status").await
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
