//! Owners' cloud credentials and sensitive variables (issue 13): their values reach terraform's
//! environment, masked in every line it prints, and appear in no answer, event, log line,
//! webhook body or file under the data directory; owners cannot see or attach each other's;
//! an expired credential refuses a run before anything is made; a one-time credential is gone
//! after the run that used it.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::database_helpers::database_bytes;
use crate::helpers::{assert_error, json_body, spawn_app, TestApp};
use crate::process_helpers::start_gateway;
use crate::run_helpers::{lines, spawn_run_app};
use crate::webhook_helpers::{accepted_events, Answers, Receiver};

/// A configuration whose only resource needs no provider and whose provisioner prints the
/// credential's variable and the sensitive variable, each in clear and as its SHA-256 (which
/// proves the value reached it even though the clear one is masked).
const PROBE: &str = r#"variable "db_password" {
  type = string
}

variable "region" {
  type = string
}

resource "terraform_data" "probe" {
  input = var.region

  provisioner "local-exec" {
    command = "echo cred=$PROBE_TOKEN; printf %s \"$PROBE_TOKEN\" | sha256sum; echo pw=${var.db_password}; printf %s '${var.db_password}' | sha256sum"
  }
}

output "where" {
  value = var.region
}

output "greeting" {
  value = "hello ${var.db_password}"
}
"#;

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A value no other test uses, long enough to be masked.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub async fn create_credential(&self, token: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, "/credentials", token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /credentials`, failing unless 201; returns the answer.
    pub async fn create_credential_ok(&self, token: &str, body: &Value) -> Value {
        let response = self.create_credential(token, body).await;
        let status = response.status();
        let credential = json_body(response).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "POST /credentials: {credential}"
        );
        credential
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// An answer's body as text, failing unless 200.
    pub async fn text_ok(&self, token: &str, path: &str) -> String {
        let response = self.call(Method::GET, path, token, None).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        text
    }
}

/// Every regular file under `dir` (symbolic links are not followed) that holds one of `needles`.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                for needle in needles {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push((path.clone(), (*needle).to_owned()));
                    }
                }
            }
        }
    }
    found
}

/// The database holds none of `needles` in clear: on SQLite its file and log (under the data
/// directory, so `files_holding` looked already), on PostgreSQL every row of every table.
fn assert_database_hides(app: &TestApp, needles: &[&str]) {
    let bytes = database_bytes(app);
    for needle in needles {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the database holds a secret in clear"
        );
    }
}

#[tokio::test]
async fn a_credential_and_a_sensitive_variable_reach_terraform_masked_and_appear_nowhere_else() {
    let receiver = Receiver::start(Answers::default()).await;
    let gateway = start_gateway(&["--webhook-allow-private"]).await;
    let alice = gateway.create_user_token("alice");
    gateway.hook_receiver(&alice, &receiver, "alice").await;
    let token_value = unique("tok");
    let password = unique("pw");

    let credential = gateway
        .create_credential_ok(
            &alice,
            &json!({"name": "probe cloud", "provider": "aws", "env": {"PROBE_TOKEN": token_value}}),
        )
        .await;
    assert_eq!(credential["env_keys"], json!(["PROBE_TOKEN"]));
    assert!(credential["id"].as_str().unwrap().starts_with("cred_"));
    assert_eq!(credential["last_used_at"], Value::Null);
    let credential_id = credential["id"].as_str().unwrap().to_owned();

    let body = json!({
        "name": "probe",
        "provider": "sandbox",
        "files": {"main.tf": PROBE},
        "variables": {"region": "local", "db_password": {"value": password, "sensitive": true}},
        "credential_ids": [credential_id],
    });
    let response = gateway.create_twin(&alice, &body).await;
    let created = response.text().await.unwrap();
    let twin: Value = serde_json::from_str(&created).unwrap();
    let twin_id = twin["id"].as_str().expect("a twin").to_owned();
    assert_eq!(
        twin["variables"],
        json!({"region": "local", "db_password": "********"})
    );
    assert_eq!(twin["sensitive_variables"], json!(["db_password"]));
    assert_eq!(twin["credential_ids"], json!([credential_id]));

    let run_id = gateway.run_ok(&alice, &twin_id, "deploy").await;
    let events = gateway.all_events(&alice, &run_id).await;
    let shown = lines(&events);
    // Both values reached terraform's provisioner (their digests are printed) ...
    for digest in [sha256(&token_value), sha256(&password)] {
        assert!(
            shown.iter().any(|l| l.contains(&digest)),
            "{digest} not printed: {shown:#?}"
        );
    }
    // ... and where it printed them, the stream shows the mask.
    assert!(
        shown.iter().any(|l| l.contains("cred=********")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|l| l.contains("pw=********")),
        "{shown:#?}"
    );

    let used = gateway
        .text_ok(&alice, &format!("/credentials/{credential_id}"))
        .await;
    let used: Value = serde_json::from_str(&used).unwrap();
    assert!(used["last_used_at"].is_string(), "{used}");

    // The twin's outputs follow its state; the sensitive value in one of them is masked.
    let twin = gateway.get_twin_ok(&alice, &twin_id).await;
    assert_eq!(
        twin["terraform_outputs"]["greeting"]["value"],
        "hello ********"
    );
    assert_eq!(twin["terraform_outputs"]["where"]["value"], "local");

    // Every answer about the twin, its run and the credential.
    let mut answers = vec![created];
    for path in [
        "/twins".to_owned(),
        format!("/twins/{twin_id}"),
        format!("/twins/{twin_id}/history"),
        format!("/twins/{twin_id}/runs"),
        format!("/twins/{twin_id}/state"),
        format!("/twins/{twin_id}/outputs"),
        format!("/twins/{twin_id}/infrastructure-status"),
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/logs"),
        "/runs".to_owned(),
        "/credentials".to_owned(),
        format!("/credentials/{credential_id}"),
    ] {
        answers.push(gateway.text_ok(&alice, &path).await);
    }
    let updated = gateway
        .update_twin(&alice, &twin_id, &json!({"name": "probe renamed"}))
        .await
        .text()
        .await
        .unwrap();
    answers.push(updated);
    answers.extend(events.iter().map(|e| e.data.clone()));
    let bodies = receiver
        .wait_for("alice", |arrivals| {
            arrivals
                .iter()
                .any(|a| a["event"]["type"] == "run.finished")
        })
        .await;
    answers.extend(
        bodies
            .iter()
            .map(|a| a["body"].as_str().unwrap().to_owned()),
    );
    assert!(accepted_events(&receiver, "alice").len() >= 3);
    answers.push(gateway.log());
    for (index, text) in answers.iter().enumerate() {
        for secret in [&token_value, &password] {
            assert!(
                !text.contains(secret.as_str()),
                "answer {index} shows a secret: {text}"
            );
        }
    }
    // Nothing under the data directory holds either value in clear: not the database (nor
    // its write-ahead log), not the working directory, not a spool.
    let leaks = files_holding(&gateway.settings.data_dir, &[&token_value, &password]);
    assert!(leaks.is_empty(), "files hold a secret: {leaks:?}");
    assert_database_hides(&gateway, &[&token_value, &password]);

    // Once the credential has expired, the deployed twin's runs are refused; a refresh still
    // reconciles it and says why it started no drift check.
    let expired = gateway
        .call(
            Method::PUT,
            &format!("/credentials/{credential_id}"),
            &alice,
            Some(&json!({"expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(expired.status(), StatusCode::OK);
    let refused = gateway
        .call(
            Method::POST,
            &format!("/twins/{twin_id}/deploy"),
            &alice,
            None,
        )
        .await;
    assert_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let refreshed = gateway
        .call(
            Method::POST,
            &format!("/twins/{twin_id}/refresh"),
            &alice,
            None,
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed = json_body(refreshed).await;
    assert_eq!(refreshed["drift_job_id"], Value::Null);
    assert!(
        refreshed["drift_skipped"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refreshed}"
    );
}

#[tokio::test]
async fn owners_cannot_see_or_attach_each_others_credentials() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let secret = unique("alice-secret");
    let credential = app
        .create_credential_ok(
            &alice,
            &json!({"name": "alice aws", "provider": "aws", "env": {"AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "eu-west-1"}}),
        )
        .await;
    let id = credential["id"].as_str().unwrap().to_owned();
    assert_eq!(
        credential["env_keys"],
        json!(["AWS_REGION", "AWS_SECRET_ACCESS_KEY"])
    );
    assert_eq!(credential["expired"], false);
    assert_eq!(credential["delete_after_run"], false);
    assert!(!credential.to_string().contains(&secret));

    // Another owner: as if it did not exist.
    let path = format!("/credentials/{id}");
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({"name": "mine now"}))),
        (Method::DELETE, None),
    ] {
        let response = app.call(method.clone(), &path, &bob, body.as_ref()).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let listed: Value = serde_json::from_str(&app.text_ok(&bob, "/credentials").await).unwrap();
    assert_eq!(listed, json!([]));
    let mut stolen = crate::helpers::twin_body("bobs");
    stolen["credential_ids"] = json!([id]);
    assert_error(
        app.create_twin(&bob, &stolen).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let bobs = app.create_twin_ok(&bob, "bobs").await;
    let bobs_id = bobs["id"].as_str().unwrap();
    let response = app
        .update_twin(&bob, bobs_id, &json!({"credential_ids": [id]}))
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    // An admin sees it, but cannot give it to a twin of someone else.
    let seen = app.text_ok(&app.admin_token, &path).await;
    assert!(!seen.contains(&secret));
    let response = app
        .update_twin(&app.admin_token, bobs_id, &json!({"credential_ids": [id]}))
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let malformed = app
        .update_twin(&alice, bobs_id, &json!({"credential_ids": ["cred_nope"]}))
        .await;
    assert_error(malformed, StatusCode::NOT_FOUND, "not_found").await;

    // Its owner attaches it; it is then in use.
    let mut body = crate::helpers::twin_body("alices");
    body["credential_ids"] = json!([id, id]);
    let response = app.create_twin(&alice, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let twin = json_body(response).await;
    assert_eq!(twin["credential_ids"], json!([id]));
    let twin_id = twin["id"].as_str().unwrap().to_owned();
    let listed: Value = serde_json::from_str(&app.text_ok(&alice, "/twins").await).unwrap();
    assert_eq!(listed[0]["credential_ids"], json!([id]));
    let refused = app.call(Method::DELETE, &path, &alice, None).await;
    let body = assert_error(refused, StatusCode::CONFLICT, "credential_in_use").await;
    assert!(
        body["detail"].as_str().unwrap().contains(&twin_id),
        "{body}"
    );

    // A change replaces what it names; values stay hidden; a null expiry clears it.
    let rotated = unique("rotated");
    let response = app
        .call(
            Method::PUT,
            &path,
            &alice,
            Some(&json!({"env": {"AWS_SECRET_ACCESS_KEY": rotated}, "expires_at": "2030-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let changed = json_body(response).await;
    assert_eq!(changed["env_keys"], json!(["AWS_SECRET_ACCESS_KEY"]));
    assert_eq!(changed["expires_at"], "2030-01-01T00:00:00.000000Z");
    assert!(!changed.to_string().contains(&rotated));
    let cleared = app
        .call(
            Method::PUT,
            &path,
            &alice,
            Some(&json!({"expires_at": null})),
        )
        .await;
    assert_eq!(json_body(cleared).await["expires_at"], Value::Null);

    // Forced, it goes and the twin no longer names it.
    let forced = app
        .call(Method::DELETE, &format!("{path}?force=true"), &alice, None)
        .await;
    assert_eq!(forced.status(), StatusCode::OK);
    let twin = app.get_twin_ok(&alice, &twin_id).await;
    assert_eq!(twin["credential_ids"], json!([]));
    assert_error(
        app.call(Method::GET, &path, &alice, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Neither value was ever stored in clear.
    let leaks = files_holding(app.data_dir.path(), &[&secret, &rotated]);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_database_hides(&app, &[&secret, &rotated]);
}

#[tokio::test]
async fn credentials_are_checked_when_made() {
    let app = spawn_app().await;
    let token = &app.admin_token;
    for (body, status, code) in [
        (
            json!({"name": "x", "provider": "aws", "env": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"1BAD": "v"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"TF_HTTP_PASSWORD": "v"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"PATH": "/evil"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "mars", "env": {"A": "v"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": " ", "provider": "aws", "env": {"A": "v"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"A": "v"}, "expires_at": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"A": 1}}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"name": "x", "provider": "aws", "env": {"A": "v"}, "extra": 1}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let response = app.create_credential(token, &body).await;
        assert_error(response, status, code).await;
    }
    let response = app
        .call(Method::GET, "/credentials/cred_nope", token, None)
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let anonymous = app
        .client
        .get(app.url("/credentials"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_credential_refuses_a_run_before_anything_is_made() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let credential = app
        .create_credential_ok(
            &alice,
            &json!({"name": "old", "provider": "gcp", "env": {"GOOGLE_CREDENTIALS": unique("gcp")}, "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(credential["expired"], true);
    let mut body = crate::helpers::twin_body("expiring");
    body["credential_ids"] = json!([credential["id"]]);
    let response = app.create_twin(&alice, &body).await;
    let twin = json_body(response).await;
    let twin_id = twin["id"].as_str().unwrap().to_owned();
    for action in ["deploy", "plan"] {
        let response = app
            .call(
                Method::POST,
                &format!("/twins/{twin_id}/{action}"),
                &alice,
                None,
            )
            .await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
        assert!(
            error["detail"].as_str().unwrap().contains("expired"),
            "{error}"
        );
    }
    let runs: Value =
        serde_json::from_str(&app.text_ok(&alice, &format!("/twins/{twin_id}/runs")).await)
            .unwrap();
    assert_eq!(runs, json!([]), "no run may be made");
    let twin = app.get_twin_ok(&alice, &twin_id).await;
    assert_eq!(twin["deployment_status"], "draft");
    assert_eq!(twin["is_locked"], false);
    let history = app.history_ok(&alice, &twin_id).await;
    assert_eq!(history.len(), 1, "only its creation: {history:?}");
}

#[tokio::test]
async fn a_one_time_credential_is_gone_after_the_run_that_used_it() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let value = unique("once");
    let credential = app
        .create_credential_ok(
            &alice,
            &json!({"name": "installer", "provider": "azure", "env": {"PROBE_TOKEN": value}, "delete_after_run": true}),
        )
        .await;
    let id = credential["id"].as_str().unwrap().to_owned();
    assert_eq!(credential["delete_after_run"], true);
    let body = json!({
        "name": "installed",
        "provider": "sandbox",
        "files": {"main.tf": PROBE},
        "variables": {"region": "local", "db_password": {"value": unique("pw"), "sensitive": true}},
        "credential_ids": [id],
    });
    let response = app.create_twin(&alice, &body).await;
    let twin_id = json_body(response).await["id"].as_str().unwrap().to_owned();
    let run_id = app.run_ok(&alice, &twin_id, "deploy").await;
    let shown = lines(&app.all_events(&alice, &run_id).await);
    assert!(
        shown.iter().any(|l| l.contains(&sha256(&value))),
        "{shown:#?}"
    );
    let gone = app
        .call(Method::GET, &format!("/credentials/{id}"), &alice, None)
        .await;
    assert_error(gone, StatusCode::NOT_FOUND, "not_found").await;
    let twin = app.get_twin_ok(&alice, &twin_id).await;
    assert_eq!(twin["credential_ids"], json!([]));
    let listed: Value = serde_json::from_str(&app.text_ok(&alice, "/credentials").await).unwrap();
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn sensitive_variables_are_masked_in_every_answer_and_kept_through_edits() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let password = unique("pw");
    let body = json!({
        "name": "secretive",
        "provider": "sandbox",
        "files": {"main.tf": "variable \"db\" {\n  type = any\n}\n"},
        "variables": {
            "db": {"value": {"user": "admin", "password": password}, "sensitive": true},
            "plain": {"value": "shown", "sensitive": false},
            "size": "small",
        },
    });
    let response = app.create_twin(&alice, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let twin = json_body(response).await;
    let twin_id = twin["id"].as_str().unwrap().to_owned();
    assert_eq!(
        twin["variables"],
        json!({"db": "********", "plain": "shown", "size": "small"})
    );
    let sealed = |app: &TestApp| {
        app.store()
            .get_twin(&twin_id.parse().unwrap())
            .unwrap()
            .unwrap()
            .secret_variables
            .sealed
            .expect("sealed variables")
    };
    let first = sealed(&app);

    // Sent back as the mask (a client editing the others), it keeps its value: the sealed
    // bytes are the very same.
    let response = app
        .update_twin(
            &alice,
            &twin_id,
            &json!({"variables": {"db": "********", "plain": "edited"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated = json_body(response).await;
    assert_eq!(
        updated["variables"],
        json!({"db": "********", "plain": "edited"})
    );
    assert_eq!(sealed(&app), first);
    // A new value seals anew.
    let response = app
        .update_twin(
            &alice,
            &twin_id,
            &json!({"variables": {"db": {"value": unique("new"), "sensitive": true}, "plain": "edited"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(sealed(&app), first);
    for path in [
        "/twins".to_owned(),
        format!("/twins/{twin_id}"),
        format!("/twins/{twin_id}/history"),
    ] {
        assert!(!app.text_ok(&alice, &path).await.contains(&password));
    }
    let leaks = files_holding(app.data_dir.path(), &[&password]);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_database_hides(&app, &[&password]);
}
