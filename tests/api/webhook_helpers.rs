//! A real Standard Webhooks receiver for the webhook tests: `webhook_receiver.py`, run with the
//! tools venv's Python (where `scripts/setup.sh` installs the `standardwebhooks` library), on a
//! port of its own on 127.0.0.1. It verifies every signature itself and records every request.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{json_body, TestApp};
use crate::run_helpers::PATIENCE;

pub struct Receiver {
    _child: Child,
    pub port: u16,
    dir: TempDir,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answers {
    /// 500 to the first N requests of each path.
    pub fail_first: usize,
    /// Hold every request until [`Receiver::release`], then answer 503.
    pub hold: bool,
}

impl Receiver {
    pub async fn start(answers: Answers) -> Receiver {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("tools/venv/bin/python");
        assert!(
            python.is_file(),
            "run scripts/setup.sh first: no {}",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        let mut command = Command::new(python);
        command
            .arg(root.join("tests/api/webhook_receiver.py"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--fail-first")
            .arg(answers.fail_first.to_string());
        if answers.hold {
            command.arg("--hold");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the webhook receiver");
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut first))
            .await
            .expect("the receiver printed no port")
            .unwrap();
        let port = first
            .trim()
            .parse()
            .expect("the receiver's first line is its port");
        Receiver {
            _child: child,
            port,
            dir,
        }
    }

    /// Where webhooks of `name` are received (each name has its own secret and counts).
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn set_secret(&self, name: &str, secret: &str) {
        std::fs::write(self.dir.path().join("secrets").join(name), secret).unwrap();
    }

    /// Held requests are answered (503) and new ones are answered normally.
    pub fn release(&self) {
        std::fs::write(self.dir.path().join("release"), "").unwrap();
    }

    /// New requests are held again (until the next release).
    pub fn hold_again(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("release"));
    }

    /// Every record so far: `{"kind": "arrived" | "answered", "path", "webhook_id", ...}`.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Requests of `name` as they arrived, each with its body parsed as `"event"`.
    pub fn arrivals(&self, name: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "arrived" && r["path"] == name)
            .map(|mut r| {
                r["event"] = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                r
            })
            .collect()
    }

    /// The webhook-ids `name` answered 200 to, in order.
    pub fn accepted(&self, name: &str) -> Vec<String> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "answered" && r["path"] == name && r["status"] == 200)
            .map(|r| r["webhook_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls until `done` holds for `name`'s arrivals; returns them.
    pub async fn wait_for(&self, name: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrivals = self.arrivals(name);
            if done(&arrivals) {
                return arrivals;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver's {name} did not get what was expected within {PATIENCE:?}: {:#?}",
                self.records()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The event types of arrivals that were answered 200 at least once, one per webhook-id.
pub fn accepted_events(receiver: &Receiver, name: &str) -> Vec<(String, Value)> {
    let accepted = receiver.accepted(name);
    let mut seen = Vec::new();
    for arrival in receiver.arrivals(name) {
        let id = arrival["webhook_id"].as_str().unwrap().to_owned();
        if accepted.contains(&id) && !seen.iter().any(|(s, _): &(String, Value)| *s == id) {
            seen.push((id, arrival["event"].clone()));
        }
    }
    seen
}

impl TestApp {
    /// `POST /webhooks`, failing unless 201; returns the answer (with its `secret`).
    pub async fn create_webhook_ok(
        &self,
        token: &str,
        url: &str,
        events: Option<&[&str]>,
    ) -> Value {
        let mut body = json!({ "url": url });
        if let Some(events) = events {
            body["events"] = json!(events);
        }
        let response = self
            .request(Method::POST, "/webhooks", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let hook = json_body(response).await;
        assert_eq!(status, StatusCode::CREATED, "POST /webhooks: {hook}");
        assert!(
            hook["secret"].as_str().unwrap().starts_with("whsec_"),
            "{hook}"
        );
        hook
    }

    /// A webhook at the receiver's `name`, its secret given to the receiver.
    pub async fn hook_receiver(&self, token: &str, receiver: &Receiver, name: &str) -> Value {
        let hook = self
            .create_webhook_ok(token, &receiver.url(name), None)
            .await;
        receiver.set_secret(name, hook["secret"].as_str().unwrap());
        hook
    }

    /// `GET /webhooks/{id}/deliveries`, failing unless 200.
    pub async fn deliveries(&self, token: &str, hook_id: &str) -> Vec<Value> {
        let response = self
            .request(
                Method::GET,
                &format!("/webhooks/{hook_id}/deliveries"),
                token,
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::OK, "deliveries: {body}");
        body.as_array().unwrap().clone()
    }
}
