//! `/twins`: the create, read, update, delete, restore round trip and who sees what.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_body, spawn_app, twin_body};

fn ids(twins: &Value) -> Vec<&str> {
    twins
        .as_array()
        .expect("a list of twins")
        .iter()
        .map(|t| t["id"].as_str().expect("a twin id"))
        .collect()
}

#[tokio::test]
async fn create_returns_201_the_twin_and_its_location() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");

    let response = app.create_twin(&alice, &twin_body("plant 7")).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let twin = json_body(response).await;
    let id = twin["id"].as_str().unwrap();
    assert!(id.starts_with("twin_") && id.len() == 5 + 32, "{id}");
    assert_eq!(location, format!("/twins/{id}"));
    assert_eq!(twin["name"], "plant 7");
    assert_eq!(twin["owner"], "alice");
    assert_eq!(twin["provider"], "sandbox");
    assert_eq!(twin["deployment_status"], "draft");
    assert_eq!(twin["is_locked"], false);
    assert_eq!(twin["last_deployed_at"], Value::Null);
    assert_eq!(twin["terraform_outputs"], Value::Null);
    assert_eq!(twin["deleted_at"], Value::Null);
    assert_eq!(
        twin["files"],
        json!({ "main.tf": "resource \"sandbox_thing\" \"a\" {}\n" })
    );
    assert_eq!(twin["variables"], json!({ "region": "local" }));
    assert!(twin["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(twin["created_at"], twin["updated_at"]);
}

#[tokio::test]
async fn create_trims_the_name_defaults_the_provider_and_accepts_nested_files() {
    let app = spawn_app().await;
    let body = json!({
        "name": "  plant 8  ",
        "files": {
            "main.tf": "module \"db\" { source = \"./modules/db\" }",
            "modules/db/main.tf": "",
            "terraform.tfvars": "x = 1",
        },
    });

    let response = app.create_twin(&app.admin_token, &body).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let twin = json_body(response).await;
    assert_eq!(twin["name"], "plant 8");
    assert_eq!(twin["provider"], "sandbox");
    assert_eq!(twin["variables"], json!({}));
    assert_eq!(twin["files"]["modules/db/main.tf"], "");

    let upper = json!({ "name": "on aws", "provider": "AWS", "files": { "x.tf.json": "{}" } });
    let twin = json_body(app.create_twin(&app.admin_token, &upper).await).await;
    assert_eq!(twin["provider"], "aws");
}

#[tokio::test]
async fn get_returns_what_create_returned() {
    let app = spawn_app().await;
    let created = app.create_twin_ok(&app.admin_token, "plant").await;
    let id = created["id"].as_str().unwrap();

    let response = app.get_twin(&app.admin_token, id).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await, created);
}

#[tokio::test]
async fn update_replaces_what_is_given_and_keeps_the_rest() {
    let app = spawn_app().await;
    let created = app.create_twin_ok(&app.admin_token, "plant").await;
    let id = created["id"].as_str().unwrap();

    let response = app
        .update_twin(
            &app.admin_token,
            id,
            &json!({ "files": { "main.tf": "# v2", "extra.tf": "" } }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let updated = json_body(response).await;
    assert_eq!(
        updated["files"],
        json!({ "main.tf": "# v2", "extra.tf": "" })
    );
    assert_eq!(updated["name"], "plant");
    assert_eq!(updated["variables"], created["variables"]);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert!(updated["updated_at"].as_str() > created["updated_at"].as_str());

    let renamed = app
        .update_twin(
            &app.admin_token,
            id,
            &json!({ "name": "plant 2", "variables": { "size": 3 } }),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed = json_body(renamed).await;
    assert_eq!(renamed["name"], "plant 2");
    assert_eq!(renamed["variables"], json!({ "size": 3 }));
    assert_eq!(renamed["files"], updated["files"]);

    let fetched = json_body(app.get_twin(&app.admin_token, id).await).await;
    assert_eq!(fetched, renamed);
    let actions: Vec<_> = app
        .history_ok(&app.admin_token, id)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["created", "updated", "updated"]);
}

#[tokio::test]
async fn an_empty_update_is_422() {
    let app = spawn_app().await;
    let id = app.create_twin_ok(&app.admin_token, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = app.update_twin(&app.admin_token, &id, &json!({})).await;

    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
}

#[tokio::test]
async fn list_shows_only_the_callers_live_twins_oldest_first() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let a1 = app.create_twin_ok(&alice, "one").await["id"].clone();
    let b1 = app.create_twin_ok(&bob, "one").await["id"].clone();
    let a2 = app.create_twin_ok(&alice, "two").await["id"].clone();
    let a3 = app.create_twin_ok(&alice, "three").await["id"].clone();
    let deleted = app.delete_twin(&alice, a3.as_str().unwrap()).await;
    assert_eq!(deleted.status(), StatusCode::OK);

    let response = app.list_twins(&alice).await;

    assert_eq!(response.status(), StatusCode::OK);
    let twins = json_body(response).await;
    assert_eq!(ids(&twins), [a1.as_str().unwrap(), a2.as_str().unwrap()]);
    assert!(twins
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["owner"] == "alice" && t["deleted_at"].is_null()));

    let bobs = json_body(app.list_twins(&bob).await).await;
    assert_eq!(ids(&bobs), [b1.as_str().unwrap()]);

    let all = json_body(app.list_twins(&app.admin_token).await).await;
    assert_eq!(
        ids(&all),
        [
            a1.as_str().unwrap(),
            b1.as_str().unwrap(),
            a2.as_str().unwrap()
        ]
    );
}

#[tokio::test]
async fn include_deleted_is_for_admins_only() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let live = app.create_twin_ok(&alice, "live").await["id"].clone();
    let gone = app.create_twin_ok(&alice, "gone").await["id"].clone();
    app.delete_twin(&alice, gone.as_str().unwrap()).await;

    let forbidden = app.list_twins_including_deleted(&alice).await;
    assert_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;

    let response = app.list_twins_including_deleted(&app.admin_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let twins = json_body(response).await;
    assert_eq!(
        ids(&twins),
        [live.as_str().unwrap(), gone.as_str().unwrap()]
    );
    assert!(twins[1]["deleted_at"].is_string());
    assert!(twins[0]["deleted_at"].is_null());
}

#[tokio::test]
async fn delete_then_restore_round_trip() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let id = app.create_twin_ok(&alice, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = app.delete_twin(&alice, &id).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["twin_id"], id.as_str());
    assert_eq!(body["status"], "deleted");
    assert!(body["deleted_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        json_body(app.list_twins(&alice).await).await,
        json!([]),
        "a deleted twin must leave the list"
    );

    let again = app.delete_twin(&alice, &id).await;
    assert_error(again, StatusCode::CONFLICT, "already_deleted").await;
    let update = app
        .update_twin(&alice, &id, &json!({ "name": "renamed" }))
        .await;
    assert_error(update, StatusCode::CONFLICT, "twin_deleted").await;

    let restored = app.restore_twin(&alice, &id).await;
    assert_eq!(restored.status(), StatusCode::OK);
    let restored = json_body(restored).await;
    assert_eq!(restored["id"], id.as_str());
    assert_eq!(restored["deleted_at"], Value::Null);
    assert_eq!(ids(&json_body(app.list_twins(&alice).await).await), [&id]);

    let twice = app.restore_twin(&alice, &id).await;
    assert_error(twice, StatusCode::CONFLICT, "not_deleted").await;

    let actions: Vec<_> = app
        .history_ok(&alice, &id)
        .await
        .iter()
        .map(|e| (e["action"].clone(), e["actor"].clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (json!("created"), json!("alice")),
            (json!("deleted"), json!("alice")),
            (json!("restored"), json!("alice")),
        ]
    );
}

#[tokio::test]
async fn names_are_unique_per_owner_among_live_twins() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let first = app.create_twin_ok(&alice, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let duplicate = app.create_twin(&alice, &twin_body("plant")).await;
    assert_error(duplicate, StatusCode::CONFLICT, "name_taken").await;
    let other_owner = app.create_twin(&bob, &twin_body("plant")).await;
    assert_eq!(other_owner.status(), StatusCode::CREATED);

    let second = app.create_twin_ok(&alice, "other").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rename = app
        .update_twin(&alice, &second, &json!({ "name": "plant" }))
        .await;
    assert_error(rename, StatusCode::CONFLICT, "name_taken").await;

    // A deleted twin frees its name; restoring it while the name is taken again is a conflict.
    app.delete_twin(&alice, &first).await;
    app.create_twin_ok(&alice, "plant").await;
    let restore = app.restore_twin(&alice, &first).await;
    assert_error(restore, StatusCode::CONFLICT, "name_taken").await;
}

#[tokio::test]
async fn update_while_locked_is_409_and_names_the_run() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let id = app.create_twin_ok(&alice, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = app.lock_twin(&id);

    let twin = json_body(app.get_twin(&alice, &id).await).await;
    assert_eq!(twin["is_locked"], true);
    assert_eq!(twin["active_job_id"], run.as_str());

    let response = app
        .update_twin(&alice, &id, &json!({ "files": { "main.tf": "# v2" } }))
        .await;

    let body = assert_error(response, StatusCode::CONFLICT, "twin_locked").await;
    assert_eq!(body["active_job_id"], run.as_str());
    assert_eq!(body["deployment_status"], "deploying");
    let unchanged = json_body(app.get_twin(&alice, &id).await).await;
    assert_eq!(unchanged["files"], twin["files"]);

    let delete = app.delete_twin(&alice, &id).await;
    let body = assert_error(delete, StatusCode::CONFLICT, "twin_locked").await;
    assert_eq!(body["active_job_id"], run.as_str());

    let by_hand = app
        .set_status(&app.admin_token, &id, "deployed", "no lock")
        .await;
    let body = assert_error(by_hand, StatusCode::CONFLICT, "twin_locked").await;
    assert_eq!(body["active_job_id"], run.as_str());
}

#[tokio::test]
async fn delete_is_409_until_the_twin_is_destroyed() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let id = app.create_twin_ok(&alice, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for status in ["deploying", "deployed"] {
        let moved = app.set_status(&app.admin_token, &id, status, "test").await;
        assert_eq!(moved.status(), StatusCode::OK);
    }

    let response = app.delete_twin(&alice, &id).await;

    let body = assert_error(response, StatusCode::CONFLICT, "resources_deployed").await;
    assert_eq!(body["deployment_status"], "deployed");
    assert!(body["detail"].as_str().unwrap().contains("destroy"));
    assert_eq!(ids(&json_body(app.list_twins(&alice).await).await), [&id]);

    for status in ["destroying", "draft"] {
        let moved = app.set_status(&app.admin_token, &id, status, "test").await;
        assert_eq!(moved.status(), StatusCode::OK);
    }
    let deleted = app.delete_twin(&alice, &id).await;
    assert_eq!(deleted.status(), StatusCode::OK);
}

#[tokio::test]
async fn owners_cannot_reach_each_others_twins_but_admins_can() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let id = app.create_twin_ok(&alice, "private").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_error(
        app.get_twin(&bob, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let update = app.update_twin(&bob, &id, &json!({ "name": "mine" })).await;
    assert_error(update, StatusCode::NOT_FOUND, "not_found").await;
    let history = app.history(&bob, &id).await;
    assert_error(history, StatusCode::NOT_FOUND, "not_found").await;
    let status = app.set_status(&bob, &id, "deploying", "x").await;
    assert_error(status, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app.delete_twin(&bob, &id).await;
    assert_error(delete, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(json_body(app.list_twins(&bob).await).await, json!([]));

    // Another owner's deleted twin is just as missing, and cannot be restored.
    assert_eq!(app.delete_twin(&alice, &id).await.status(), StatusCode::OK);
    let restore = app.restore_twin(&bob, &id).await;
    assert_error(restore, StatusCode::NOT_FOUND, "not_found").await;

    // The twin is untouched, and the admin reaches it.
    let restored = app.restore_twin(&app.admin_token, &id).await;
    assert_eq!(restored.status(), StatusCode::OK);
    let twin = json_body(app.get_twin(&app.admin_token, &id).await).await;
    assert_eq!(twin["name"], "private");
    assert_eq!(twin["owner"], "alice");
    let all = json_body(app.list_twins(&app.admin_token).await).await;
    assert_eq!(ids(&all), [&id]);
    let history = app.history_ok(&app.admin_token, &id).await;
    assert!(history.iter().all(|e| e["actor"] != "bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_with_one_name_and_racing_deletes_each_win_once() {
    let app = spawn_app().await;
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .request(reqwest::Method::POST, "/twins", &app.admin_token)
            .json(&twin_body("double click"));
        creates.spawn(async move { request.send().await.unwrap() });
    }
    let mut created = Vec::new();
    while let Some(response) = creates.join_next().await {
        let response = response.unwrap();
        if response.status() == StatusCode::CREATED {
            created.push(json_body(response).await["id"].as_str().unwrap().to_owned());
        } else {
            assert_error(response, StatusCode::CONFLICT, "name_taken").await;
        }
    }
    assert_eq!(created.len(), 1, "exactly one twin may take the name");
    let id = &created[0];

    let mut deletes = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app.request(
            reqwest::Method::DELETE,
            &format!("/twins/{id}"),
            &app.admin_token,
        );
        deletes.spawn(async move { request.send().await.unwrap() });
    }
    let mut deleted = 0;
    while let Some(response) = deletes.join_next().await {
        let response = response.unwrap();
        if response.status() == StatusCode::OK {
            deleted += 1;
        } else {
            assert_error(response, StatusCode::CONFLICT, "already_deleted").await;
        }
    }
    assert_eq!(deleted, 1);
    let history = app.history_ok(&app.admin_token, id).await;
    let actions: Vec<_> = history.iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, [json!("created"), json!("deleted")]);
}
