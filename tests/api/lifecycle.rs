//! Issue 14's lifecycle: debug runs (`TF_LOG`), bulk delete, purge, retention and the audit
//! log, against real terraform and the real store.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_body};
use crate::run_helpers::{sandbox_config, spawn_run_app, spawn_run_app_with, Res, PATIENCE};

/// A configuration that hands a sensitive variable to a resource, so terraform's own debug
/// log has the value to print.
const SECRETIVE: &str = r#"variable "api_key" {
  type      = string
  sensitive = true
}

resource "terraform_data" "keeper" {
  input = var.api_key
}
"#;

impl crate::helpers::TestApp {
    async fn deploy_with(&self, token: &str, twin_id: &str, body: &Value) -> reqwest::Response {
        self.call(
            Method::POST,
            &format!("/twins/{twin_id}/deploy"),
            token,
            Some(body),
        )
        .await
    }

    /// Every audit entry, paging through `GET /audit` with `after`.
    async fn audit_entries(&self) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let path = match after {
                Some(id) => format!("/audit?limit=5&after={id}"),
                None => "/audit?limit=5".to_owned(),
            };
            let response = self.call(Method::GET, &path, &self.admin_token, None).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page = json_body(response).await;
            let got = page["entries"].as_array().unwrap().clone();
            assert!(got.len() <= 5, "{page}");
            entries.extend(got);
            match page["next_after"].as_i64() {
                Some(id) => after = Some(id),
                None => return entries,
            }
        }
    }
}

fn has_entry(entries: &[Value], action: &str, target: &str, actor: &str) -> bool {
    entries
        .iter()
        .any(|e| e["action"] == action && e["target"] == target && e["actor"] == actor)
}

#[tokio::test]
async fn a_debug_run_streams_terraforms_own_log_masked_and_says_it_was_one() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let body = json!({
        "name": "debugged",
        "provider": "sandbox",
        "files": {"main.tf": SECRETIVE},
        "variables": {"api_key": {"value": key, "sensitive": true}},
    });
    let twin = json_body(app.create_twin(&alice, &body).await).await;
    let twin_id = twin["id"].as_str().unwrap().to_owned();

    let response = app
        .deploy_with(
            &alice,
            &twin_id,
            &json!({"debug": true, "log_level": "TRACE"}),
        )
        .await;
    let status = response.status();
    let accepted = json_body(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run_id = accepted["job_id"].as_str().unwrap().to_owned();
    let run = app.wait_for_run(&alice, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["debug"], true);
    assert_eq!(run["log_level"], "TRACE");

    let events = app.all_events(&alice, &run_id).await;
    let debug_lines: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.json())
        .filter(|log| log["line"].as_str().unwrap().contains("[TRACE]"))
        .collect();
    assert!(
        debug_lines.len() > 10,
        "a TRACE run streams terraform's log: {} lines",
        debug_lines.len()
    );
    assert!(debug_lines.iter().all(|log| log["stream"] == "stderr"));
    let everything: String = events.iter().map(|e| e.data.clone()).collect();
    assert!(
        !everything.contains(&key),
        "the sensitive value was streamed"
    );

    // The next deploy of the same twin is an ordinary one again.
    let ordinary = app.run_ok(&alice, &twin_id, "deploy").await;
    let run = app.get_run_ok(&alice, &ordinary).await;
    assert_eq!(run["debug"], false);
    assert_eq!(run["log_level"], Value::Null);
    let events = app.all_events(&alice, &ordinary).await;
    assert!(!events
        .iter()
        .filter_map(|e| e.line())
        .any(|line| line.contains("[TRACE]") || line.contains("[DEBUG]")));
}

#[tokio::test]
async fn a_run_body_that_does_not_fit_is_refused_before_anything_starts() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let twin_id = app
        .create_sandbox_twin(&alice, "careful", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let cases = [
        (
            json!({"debug": true, "log_level": "LOUD"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"debug": false, "log_level": "TRACE"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"debug": "yes"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"verbose": true}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(app.deploy_with(&alice, &twin_id, &body).await, status, code).await;
    }
    let response = app
        .request(Method::POST, &format!("/twins/{twin_id}/plan"), &alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let runs = json_body(app.twin_runs(&alice, &twin_id).await).await;
    assert_eq!(runs, json!([]), "no run was made");
    assert_eq!(
        app.get_twin_ok(&alice, &twin_id).await["deployment_status"],
        "draft"
    );
}

#[tokio::test]
async fn bulk_delete_answers_each_id_as_a_delete_would() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let first = app.create_twin_ok(&alice, "bulk-one").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.create_twin_ok(&alice, "bulk-two").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployed = app
        .create_sandbox_twin(&alice, "bulk-live", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    app.run_ok(&alice, &deployed, "deploy").await;
    let bobs = app.create_twin_ok(&bob, "bulk-bob").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let ids = json!([first, "twin_nope", deployed, bobs, second, first]);
    let response = app
        .call(
            Method::POST,
            "/twins/bulk-delete",
            &alice,
            Some(&json!({"ids": ids})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let results = json_body(response).await["results"]
        .as_array()
        .unwrap()
        .clone();
    let statuses: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["twin_id"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (first.clone(), 200),
            ("twin_nope".to_owned(), 404),
            (deployed.clone(), 409),
            (bobs.clone(), 404),
            (second.clone(), 200),
            (first.clone(), 409),
        ]
    );
    assert_eq!(results[2]["code"], "resources_deployed");
    assert_eq!(results[5]["code"], "already_deleted");
    assert!(results[1]["detail"].as_str().unwrap().contains("not found"));
    assert!(results[0]["deleted_at"].is_string());

    // What the answers say is what happened: bob's twin and the deployed one are untouched.
    assert_eq!(
        app.get_twin_ok(&bob, &bobs).await["deleted_at"],
        Value::Null
    );
    assert_eq!(
        app.get_twin_ok(&alice, &deployed).await["deployment_status"],
        "deployed"
    );
    let listed = json_body(app.list_twins(&alice).await).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bulk-live"]);

    for ids in [
        json!([]),
        json!((0..101).map(|n| format!("twin_{n}")).collect::<Vec<_>>()),
    ] {
        let response = app
            .call(
                Method::POST,
                "/twins/bulk-delete",
                &alice,
                Some(&json!({ "ids": ids })),
            )
            .await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    }
}

#[tokio::test]
async fn a_purge_removes_a_deleted_twin_for_good_and_the_audit_keeps_it() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let admin = app.admin_token.clone();
    let twin_id = app
        .create_sandbox_twin(&alice, "ephemeral", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let deploy = app.run_ok(&alice, &twin_id, "deploy").await;
    let purge = format!("/twins/{twin_id}?purge=true");

    // Owners may not purge; a live twin, or one whose state holds resources, is not purged.
    let response = app.call(Method::DELETE, &purge, &alice, None).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app.call(Method::DELETE, &purge, &admin, None).await;
    assert_error(response, StatusCode::CONFLICT, "not_deleted").await;
    let destroy = app.run_ok(&alice, &twin_id, "destroy").await;
    assert!(app.work_dir(&twin_id).exists());
    assert!(app.sandbox_dir(&twin_id).exists());
    let response = app.delete_twin(&alice, &twin_id).await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = app.call(Method::DELETE, &purge, &admin, None).await;
    let status = response.status();
    let purged = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["purged"], true);

    for path in [
        format!("/twins/{twin_id}"),
        format!("/twins/{twin_id}/history"),
        format!("/twins/{twin_id}/runs"),
        format!("/twins/{twin_id}/state/versions"),
        format!("/runs/{deploy}"),
        format!("/runs/{destroy}/events"),
        format!("/runs/{destroy}/logs"),
    ] {
        let response = app.call(Method::GET, &path, &admin, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app
        .call(
            Method::POST,
            &format!("/twins/{twin_id}/restore"),
            &admin,
            None,
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let everything = json_body(app.list_twins_including_deleted(&admin).await).await;
    assert_eq!(everything, json!([]));
    assert!(!app.work_dir(&twin_id).exists(), "its files are gone");
    assert!(
        !app.sandbox_dir(&twin_id).exists(),
        "and its empty place in the sandbox"
    );
    assert!(!app.data_dir.path().join("runs").join(&deploy).exists());
    // The same purge again: nothing there.
    let response = app.call(Method::DELETE, &purge, &admin, None).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    let entries = app.audit_entries().await;
    assert!(
        has_entry(&entries, "twin.created", &twin_id, "alice"),
        "{entries:#?}"
    );
    assert!(has_entry(&entries, "twin.deleted", &twin_id, "alice"));
    assert!(has_entry(&entries, "twin.purged", &twin_id, "admin"));
    assert!(has_entry(&entries, "run.started", &deploy, "alice"));
}

#[tokio::test]
async fn retention_purges_twins_deleted_longer_ago_than_the_period() {
    let app = spawn_run_app_with(|settings| {
        settings.retention = Some(terrastream::runs::RetentionPolicy {
            keep: Duration::from_secs(2),
            every: Duration::from_millis(200),
        });
    })
    .await;
    let alice = app.create_user_token("alice");
    let old = app.create_twin_ok(&alice, "old-news").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = app.create_twin_ok(&alice, "still-here").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.delete_twin(&alice, &old).await.status(), StatusCode::OK);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = app.get_twin(&app.admin_token, &old).await;
        if response.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A live twin is never the sweep's business, however old.
    assert_eq!(
        app.get_twin_ok(&alice, &kept).await["deleted_at"],
        Value::Null
    );
    let entries = app.audit_entries().await;
    assert!(
        has_entry(&entries, "twin.purged", &old, "retention"),
        "{entries:#?}"
    );
}

#[tokio::test]
async fn the_audit_log_records_every_change_in_order_for_admins_only() {
    // The webhook below points at a closed port here: nothing leaves the machine.
    let app = spawn_run_app_with(|settings| settings.webhook_allow_private = true).await;
    let alice = app.create_user_token("alice");
    let twin_id = app
        .create_sandbox_twin(&alice, "audited", &sandbox_config(&[Res::new("a", 60_000)]))
        .await;
    let response = app
        .update_twin(&alice, &twin_id, &json!({"variables": {"x": "1"}}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let run_id = app.start_run_ok(&alice, &twin_id, "deploy").await;
    assert_eq!(
        app.cancel_run(&alice, &twin_id).await.status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_run(&alice, &run_id).await;

    let other = app.create_twin_ok(&alice, "repaired").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.delete_twin(&alice, &other).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.restore_twin(&alice, &other).await.status(),
        StatusCode::OK
    );
    let response = app
        .set_status(
            &app.admin_token,
            &other,
            "deploying",
            "a run the gateway lost",
        )
        .await;
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{}", json_body(response).await);
    let credential = app
        .create_credential_ok(
            &alice,
            &json!({"name": "ci", "provider": "sandbox", "env": {"SECRET_TOKEN": "s3cr3t-value"}}),
        )
        .await;
    let credential_id = credential["id"].as_str().unwrap().to_owned();
    let response = app
        .call(
            Method::DELETE,
            &format!("/credentials/{credential_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let hook = "http://127.0.0.1:9/audited";
    let response = app
        .call(
            Method::POST,
            "/webhooks",
            &alice,
            Some(&json!({ "url": hook })),
        )
        .await;
    let status = response.status();
    let webhook = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let response = app
        .call(
            Method::DELETE,
            &format!("/webhooks/{webhook_id}"),
            &alice,
            None,
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let entries = app.audit_entries().await;
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let actions_on = |targets: &[&str]| -> Vec<String> {
        entries
            .iter()
            .filter(|e| targets.iter().any(|t| e["target"] == *t))
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        actions_on(&[&twin_id, &run_id]),
        [
            "twin.created",
            "twin.updated",
            "run.started",
            "run.cancelled"
        ]
    );
    assert_eq!(
        actions_on(&[&other]),
        [
            "twin.created",
            "twin.deleted",
            "twin.restored",
            "twin.status_set"
        ]
    );
    let repair = entries
        .iter()
        .find(|e| e["action"] == "twin.status_set")
        .unwrap();
    assert_eq!(repair["actor"], "admin");
    assert!(
        repair["reason"]
            .as_str()
            .unwrap()
            .contains("a run the gateway lost"),
        "{repair}"
    );
    assert!(has_entry(&entries, "token.created", "admin", "terrastream"));
    assert!(has_entry(&entries, "token.created", "alice", "cli"));
    assert!(has_entry(
        &entries,
        "credential.created",
        &credential_id,
        "alice"
    ));
    assert!(has_entry(&entries, "webhook.created", &webhook_id, "alice"));
    assert!(has_entry(&entries, "webhook.deleted", &webhook_id, "alice"));
    assert!(has_entry(
        &entries,
        "credential.deleted",
        &credential_id,
        "alice"
    ));
    assert!(entries.iter().all(|e| e["at"].is_string()));
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains("s3cr3t-value"), "no secret in the audit log");
    assert!(
        !text.contains(&secret),
        "no webhook secret in the audit log"
    );

    let response = app.call(Method::GET, "/audit", &alice, None).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .call(Method::GET, "/audit?limit=0", &app.admin_token, None)
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let response = app
        .call(Method::GET, "/audit?after=x", &app.admin_token, None)
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}
