//! The deployment status machine over HTTP: exactly the contract's moves, each recorded once.

use std::collections::{HashMap, VecDeque};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::helpers::{assert_error, json_body, spawn_app, TestApp};

const STATUSES: [&str; 6] = [
    "draft",
    "deploying",
    "deployed",
    "destroying",
    "error",
    "destroy_failed",
];

/// The moves the client contract allows, written out here rather than read from the crate so
/// the test checks the contract, not the implementation's own table.
const CONTRACT_MOVES: [(&str, &str); 11] = [
    ("draft", "deploying"),
    ("deploying", "deployed"),
    ("deployed", "destroying"),
    ("destroying", "draft"),
    ("deploying", "error"),
    ("destroying", "destroy_failed"),
    ("error", "deploying"),
    ("error", "destroying"),
    ("destroy_failed", "destroying"),
    ("destroy_failed", "deployed"),
    ("deployed", "deploying"),
];

/// The shortest walk of allowed moves from `draft` to each status.
fn walks_from_draft() -> HashMap<&'static str, Vec<&'static str>> {
    let mut walks = HashMap::from([("draft", Vec::new())]);
    let mut queue = VecDeque::from(["draft"]);
    while let Some(from) = queue.pop_front() {
        for (_, to) in CONTRACT_MOVES.iter().filter(|(f, _)| *f == from) {
            if !walks.contains_key(to) {
                let mut walk = walks[from].clone();
                walk.push(*to);
                walks.insert(*to, walk);
                queue.push_back(*to);
            }
        }
    }
    assert_eq!(walks.len(), STATUSES.len(), "every status is reachable");
    walks
}

async fn new_twin(app: &TestApp, name: &str) -> String {
    app.create_twin_ok(&app.admin_token, name).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn exactly_the_contract_moves_succeed_and_each_is_recorded_once() {
    let app = spawn_app().await;
    let walks = walks_from_draft();
    let mut succeeded = 0;

    for from in STATUSES {
        for to in STATUSES {
            let id = new_twin(&app, &format!("{from} to {to}")).await;
            for step in &walks[from] {
                let response = app.set_status(&app.admin_token, &id, step, "walking").await;
                assert_eq!(response.status(), StatusCode::OK, "walk to {step}");
            }
            let before = app.history_ok(&app.admin_token, &id).await;
            assert_eq!(before.len(), 1 + walks[from].len());

            let reason = format!("test {from} -> {to}");
            let response = app.set_status(&app.admin_token, &id, to, &reason).await;

            let after = app.history_ok(&app.admin_token, &id).await;
            if CONTRACT_MOVES.contains(&(from, to)) {
                succeeded += 1;
                assert_eq!(response.status(), StatusCode::OK, "{from} -> {to}");
                let twin = json_body(response).await;
                assert_eq!(twin["deployment_status"], to);
                assert_eq!(twin["is_locked"], false);
                assert_eq!(after.len(), before.len() + 1, "{from} -> {to}");
                let entry = &after[after.len() - 1];
                assert_eq!(entry["action"], "status_changed");
                assert_eq!(entry["twin_id"], id.as_str());
                assert_eq!(entry["from_status"], from);
                assert_eq!(entry["to_status"], to);
                assert_eq!(entry["actor"], "admin");
                assert_eq!(entry["reason"], reason.as_str());
                assert_eq!(entry["run_id"], Value::Null);
                assert!(entry["at"].as_str().is_some_and(|at| at.ends_with('Z')));
            } else {
                let body = assert_error(response, StatusCode::CONFLICT, "invalid_transition").await;
                assert_eq!(body["deployment_status"], from, "{from} -> {to}");
                assert_eq!(after.len(), before.len(), "{from} -> {to} left a row");
                let twin = json_body(app.get_twin(&app.admin_token, &id).await).await;
                assert_eq!(twin["deployment_status"], from);
            }
        }
    }
    assert_eq!(succeeded, CONTRACT_MOVES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_identical_moves_succeed_exactly_once() {
    let app = spawn_app().await;
    let id = new_twin(&app, "contended").await;
    let mut racers = JoinSet::new();
    for racer in 0..16 {
        let request = app
            .request(
                reqwest::Method::POST,
                &format!("/twins/{id}/status"),
                &app.admin_token,
            )
            .json(
                &serde_json::json!({ "status": "deploying", "reason": format!("racer {racer}") }),
            );
        racers.spawn(async move { request.send().await.unwrap() });
    }

    let mut won = 0;
    while let Some(response) = racers.join_next().await {
        let response = response.unwrap();
        if response.status() == StatusCode::OK {
            won += 1;
        } else {
            assert_error(response, StatusCode::CONFLICT, "invalid_transition").await;
        }
    }

    assert_eq!(won, 1, "exactly one racer may move the twin");
    let history = app.history_ok(&app.admin_token, &id).await;
    let moves: Vec<_> = history
        .iter()
        .filter(|e| e["action"] == "status_changed")
        .collect();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0]["from_status"], "draft");
    assert_eq!(moves[0]["to_status"], "deploying");
    let twin = json_body(app.get_twin(&app.admin_token, &id).await).await;
    assert_eq!(twin["deployment_status"], "deploying");
}

#[tokio::test]
async fn owners_may_only_keep_resources_after_a_failed_destroy() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let id = app.create_twin_ok(&alice, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let refused = app.set_status(&alice, &id, "deploying", "by hand").await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden").await;

    for status in ["deploying", "deployed", "destroying", "destroy_failed"] {
        let moved = app.set_status(&app.admin_token, &id, status, "setup").await;
        assert_eq!(moved.status(), StatusCode::OK);
    }
    let retry = app.set_status(&alice, &id, "destroying", "retry").await;
    assert_error(retry, StatusCode::FORBIDDEN, "forbidden").await;

    let kept = app.set_status(&alice, &id, "deployed", "keep them").await;

    assert_eq!(kept.status(), StatusCode::OK);
    assert_eq!(json_body(kept).await["deployment_status"], "deployed");
    let history = app.history_ok(&alice, &id).await;
    let last = &history[history.len() - 1];
    assert_eq!(last["actor"], "alice");
    assert_eq!(last["reason"], "keep them");
}

#[tokio::test]
async fn a_deleted_twin_cannot_change_status() {
    let app = spawn_app().await;
    let id = new_twin(&app, "gone").await;
    assert_eq!(
        app.delete_twin(&app.admin_token, &id).await.status(),
        StatusCode::OK
    );

    let response = app
        .set_status(&app.admin_token, &id, "deploying", "ghost")
        .await;

    assert_error(response, StatusCode::CONFLICT, "twin_deleted").await;
}
