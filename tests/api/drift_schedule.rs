//! Scheduled drift checks (issue 13): with `--drift-interval-secs`, a deployed twin is checked
//! on its own; a change made behind terraform's back (a sandbox object deleted) shows in its
//! infrastructure-status and fires `drift.detected` to its owner's webhook.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run_helpers::{sandbox_config, spawn_run_app_with, Res, PATIENCE};
use crate::state_helpers::infrastructure;
use crate::webhook_helpers::{accepted_events, Answers, Receiver};

#[tokio::test]
async fn scheduled_drift_checks_find_a_deleted_object_and_tell_the_webhook() {
    let receiver = Receiver::start(Answers::default()).await;
    let app = spawn_run_app_with(|settings| {
        settings.drift_interval = Some(Duration::from_secs(1));
        settings.webhook_allow_private = true;
        settings.webhook_retry_unit = Duration::from_millis(200);
    })
    .await;
    let alice = app.create_user_token("alice");
    app.hook_receiver(&alice, &receiver, "alice").await;
    let config = sandbox_config(&[Res::new("pump", 0), Res::new("valve", 0)]);
    let twin_id = app.create_sandbox_twin(&alice, "watched", &config).await;
    // A twin that is not deployed is never checked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs: Value = app.twin_runs(&alice, &twin_id).await.json().await.unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
    app.run_ok(&alice, &twin_id, "deploy").await;

    // Behind terraform's back: one object is gone.
    let objects = app.sandbox_objects(&twin_id);
    let victim = objects
        .iter()
        .find(|o| o["name"] == "valve")
        .expect("the valve object");
    let file = app
        .sandbox_dir(&twin_id)
        .join(format!("{}.json", victim["id"].as_str().unwrap()));
    std::fs::remove_file(&file).unwrap();

    let deadline = Instant::now() + PATIENCE;
    let drift = loop {
        let status = infrastructure(&app, &twin_id).await;
        let drift = status["drift"].clone();
        if drift["drifted_count"].as_u64().unwrap_or(0) > 0 {
            break drift;
        }
        assert!(Instant::now() < deadline, "no drift found: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        drift["drifted"]
            .to_string()
            .contains("sandbox_resource.valve"),
        "{drift}"
    );
    let check = app
        .get_run_ok(&alice, drift["job_id"].as_str().unwrap())
        .await;
    assert_eq!(check["kind"], "drift");
    assert_eq!(check["actor"], "drift-scheduler");

    let arrivals = receiver
        .wait_for("alice", |arrivals| {
            arrivals
                .iter()
                .any(|a| a["event"]["type"] == "drift.detected")
        })
        .await;
    let detected = arrivals
        .iter()
        .find(|a| a["event"]["type"] == "drift.detected")
        .unwrap();
    assert_eq!(detected["verified"], true);
    let data = &detected["event"]["data"];
    assert_eq!(data["twin_id"], twin_id.as_str());
    assert!(data["drifted_count"].as_u64().unwrap() >= 1, "{data}");
    assert!(data["drifted"].to_string().contains("valve"), "{data}");
    // Checks never overlap: at most one drift run of the twin is ever unfinished.
    let runs: Value = app.twin_runs(&alice, &twin_id).await.json().await.unwrap();
    let unfinished = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["kind"] == "drift" && (r["status"] == "pending" || r["status"] == "processing")
        })
        .count();
    assert!(unfinished <= 1, "{runs}");
    // The twin stays deployed and unlocked: a drift check only reads.
    let twin = app.get_twin_ok(&alice, &twin_id).await;
    assert_eq!(twin["deployment_status"], "deployed");
    assert!(accepted_events(&receiver, "alice")
        .iter()
        .any(|(_, e)| e["type"] == "drift.detected"));
}
