//! State rollback (issue 13): `POST /twins/{id}/state/versions/{n}/restore` makes an earlier
//! version's content current as a new version (a serial above, the same lineage), the twin's
//! outputs follow, a history row records it, terraform builds on it, and it is refused while
//! the twin or terraform's state lock is held.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_body};
use crate::run_helpers::{sandbox_config, spawn_run_app, Res};
use crate::state_helpers::{backend, get_ok, versions};

#[tokio::test]
async fn a_restore_makes_an_earlier_version_current_and_outputs_follow() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let twin_id = app
        .create_sandbox_twin(&alice, "rolling", &sandbox_config(&[Res::new("alpha", 0)]))
        .await;
    app.run_ok(&alice, &twin_id, "deploy").await;
    let alpha = versions(&app, &twin_id).await.last().unwrap().clone();
    let alpha_state = get_ok(&app, &twin_id, "/state").await;
    let alpha_outputs = app.get_twin_ok(&alice, &twin_id).await["terraform_outputs"].clone();
    assert!(alpha_outputs["endpoint"]["value"]
        .as_str()
        .unwrap()
        .contains("alpha"));

    let response = app
        .update_twin(
            &alice,
            &twin_id,
            &json!({"files": {"main.tf": sandbox_config(&[Res::new("beta", 0)])}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.run_ok(&alice, &twin_id, "deploy").await;
    let before = versions(&app, &twin_id).await.last().unwrap().clone();
    let twin = app.get_twin_ok(&alice, &twin_id).await;
    assert!(twin["terraform_outputs"]["endpoint"]["value"]
        .as_str()
        .unwrap()
        .contains("beta"));

    let number = alpha["version"].as_i64().unwrap();
    let path = format!("/twins/{twin_id}/state/versions/{number}/restore");
    let response = app
        .request(Method::POST, &path, &alice)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let restored = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["restored_from"], number);
    assert_eq!(restored["version"], before["version"].as_i64().unwrap() + 1);
    assert!(restored["serial"].as_i64().unwrap() > before["serial"].as_i64().unwrap());
    assert_eq!(restored["lineage"], before["lineage"]);
    assert_eq!(restored["actor"], "alice");
    assert_eq!(restored["terraform_outputs"], alpha_outputs);

    // The state and the outputs are version n's again.
    let current = get_ok(&app, &twin_id, "/state").await;
    assert_eq!(current["version"], restored["version"]);
    assert_eq!(
        current["state"]["resources"],
        alpha_state["state"]["resources"]
    );
    assert_eq!(current["state"]["outputs"], alpha_state["state"]["outputs"]);
    assert_eq!(
        app.get_twin_ok(&alice, &twin_id).await["terraform_outputs"],
        alpha_outputs
    );
    let outputs = get_ok(&app, &twin_id, "/outputs").await;
    assert_eq!(outputs["outputs"], alpha_outputs);
    let history = app.history_ok(&alice, &twin_id).await;
    let row = history.last().unwrap();
    assert_eq!(row["action"], "state_restored");
    assert_eq!(row["actor"], "alice");
    let audit = json_body(
        app.request(Method::GET, "/audit?limit=1000", &app.admin_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "state.restored"
                && e["target"] == twin_id.as_str()
                && e["actor"] == "alice"),
        "the rollback is audited: {audit}"
    );
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("state version {number}")),
        "{row}"
    );

    // terraform accepts what was restored (its serial and lineage) and builds on it.
    app.run_ok(&alice, &twin_id, "deploy").await;

    // Refused while terraform's state lock is held, and while a run locks the twin.
    let info = json!({"ID": "held-by-test", "Operation": "OperationTypeApply", "Info": "", "Who": "test", "Version": "1.15.5", "Created": "2026-12-01T00:00:00Z", "Path": ""});
    let locked = backend(
        &app,
        "LOCK",
        &twin_id,
        "/lock",
        &app.admin_token,
        Some(info.to_string().into_bytes()),
    )
    .await;
    assert_eq!(locked.status(), StatusCode::OK);
    let response = app
        .request(Method::POST, &path, &alice)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::CONFLICT, "state_locked").await;
    let unlocked = backend(
        &app,
        "UNLOCK",
        &twin_id,
        "/lock",
        &app.admin_token,
        Some(info.to_string().into_bytes()),
    )
    .await;
    assert_eq!(unlocked.status(), StatusCode::OK);
    let missing = app
        .request(
            Method::POST,
            &format!("/twins/{twin_id}/state/versions/999/restore"),
            &alice,
        )
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
    let bob = app.create_user_token("bob");
    let theirs = app.request(Method::POST, &path, &bob).send().await.unwrap();
    assert_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    let count = versions(&app, &twin_id).await.len();
    app.lock_twin(&twin_id);
    let response = app
        .request(Method::POST, &path, &alice)
        .send()
        .await
        .unwrap();
    let body: Value = assert_error(response, StatusCode::CONFLICT, "twin_locked").await;
    assert!(body["active_job_id"].is_string(), "{body}");
    assert_eq!(
        versions(&app, &twin_id).await.len(),
        count,
        "a refused restore writes nothing"
    );
}
