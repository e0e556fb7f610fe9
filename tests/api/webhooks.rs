//! Webhooks (issue 13), against a real receiver that verifies every request with the Standard
//! Webhooks library: signed, retried after a 500 under the same `webhook-id`, never sent
//! again after a 2xx, owners' endpoints get their own twins' events and admins' everyone's, a
//! delivery pending across a `kill -9` of the gateway is sent by the next start, and private
//! addresses are refused unless the operator allows them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_body, spawn_app, spawn_app_with};
use crate::process_helpers::start_gateway;
use crate::run_helpers::{spawn_run_app_with, PATIENCE};
use crate::webhook_helpers::{accepted_events, Answers, Receiver};

/// A twin that deploys in well under a second: one resource that needs no provider.
const QUICK: &str = "resource \"terraform_data\" \"a\" {\n  input = \"x\"\n}\n";

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(events: &[(String, Value)]) -> Vec<String> {
    let mut types: Vec<String> = events
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    types
}

#[tokio::test]
async fn deliveries_are_signed_retried_under_the_same_id_and_never_resent_after_a_2xx() {
    let receiver = Receiver::start(Answers {
        fail_first: 1,
        hold: false,
    })
    .await;
    let app = spawn_run_app_with(|settings| {
        settings.webhook_allow_private = true;
        settings.webhook_retry_unit = Duration::from_millis(200);
    })
    .await;
    let alice = app.create_user_token("alice");
    let bob = app.create_user_token("bob");
    let alice_hook = app.hook_receiver(&alice, &receiver, "alice").await;
    app.hook_receiver(&bob, &receiver, "bob").await;
    app.hook_receiver(&app.admin_token, &receiver, "admin")
        .await;
    let drift_only = app
        .create_webhook_ok(
            &alice,
            &receiver.url("drift-only"),
            Some(&["drift.detected"]),
        )
        .await;
    receiver.set_secret("drift-only", drift_only["secret"].as_str().unwrap());

    let twin_id = app.create_sandbox_twin(&alice, "hooked", QUICK).await;
    let run_id = app.run_ok(&alice, &twin_id, "deploy").await;
    wait_until("alice's four deploy events accepted", || {
        accepted_events(&receiver, "alice").len() == 4
    })
    .await;
    let alice_events = accepted_events(&receiver, "alice");
    assert_eq!(
        types(&alice_events),
        [
            "run.finished",
            "run.started",
            "twin.status_changed",
            "twin.status_changed"
        ]
    );
    let finished = alice_events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e["type"] == "run.finished")
        .unwrap();
    assert_eq!(finished["data"]["job_id"], run_id);
    assert_eq!(finished["data"]["twin_id"], twin_id);
    assert_eq!(finished["data"]["outcome"], "succeeded");
    assert_eq!(finished["data"]["twin_status"], "deployed");
    assert!(finished["timestamp"].is_string());
    let moves: BTreeSet<(String, String)> = alice_events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "twin.status_changed")
        .map(|e| {
            (
                e["data"]["from"].as_str().unwrap().to_owned(),
                e["data"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        BTreeSet::from([
            ("deploying".to_owned(), "deployed".to_owned()),
            ("draft".to_owned(), "deploying".to_owned())
        ])
    );

    // Every request verified with the library; the first was answered 500 and came again
    // under the same webhook-id, then 200.
    let arrivals = receiver.arrivals("alice");
    assert!(
        arrivals.iter().all(|a| a["verified"] == true),
        "{arrivals:#?}"
    );
    // The receiver numbers requests as they come and answers the first with 500; its
    // records of concurrent requests may be written in another order.
    let first = arrivals
        .iter()
        .find(|a| a["number"] == 1)
        .unwrap_or_else(|| panic!("no first request: {arrivals:#?}"))["webhook_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.starts_with("msg_"));
    let again: Vec<&Value> = arrivals
        .iter()
        .filter(|a| a["webhook_id"] == first.as_str())
        .collect();
    assert_eq!(again.len(), 2, "{arrivals:#?}");
    assert_eq!(again[0]["body"], again[1]["body"]);
    let deliveries = app
        .deliveries(&alice, alice_hook["id"].as_str().unwrap())
        .await;
    assert_eq!(deliveries.len(), 4, "{deliveries:#?}");
    let retried = deliveries
        .iter()
        .find(|d| d["message_id"] == first.as_str())
        .unwrap();
    assert_eq!(retried["status"], "succeeded");
    let codes: Vec<Value> = retried["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(200)]);
    for attempt in retried["attempts"].as_array().unwrap() {
        assert!(
            attempt["duration_ms"].is_u64() && attempt["at"].is_string(),
            "{attempt}"
        );
    }
    for delivery in &deliveries {
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
    }

    // The admin's endpoint got the same messages; bob's and the drift-only one got none.
    wait_until("the admin's four events", || {
        accepted_events(&receiver, "admin").len() == 4
    })
    .await;
    let ids = |name: &str| -> BTreeSet<String> {
        accepted_events(&receiver, name)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids("admin"), ids("alice"));
    assert!(receiver
        .arrivals("admin")
        .iter()
        .all(|a| a["verified"] == true));

    // Later events arrive; the earlier ones, answered 2xx, are never sent again.
    let destroy = app.run_ok(&alice, &twin_id, "destroy").await;
    wait_until("the destroy's run.finished", || {
        accepted_events(&receiver, "alice")
            .iter()
            .any(|(_, e)| e["type"] == "run.finished" && e["data"]["job_id"] == destroy.as_str())
    })
    .await;
    let accepted = receiver.accepted("alice");
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "a 2xx message was sent again: {accepted:?}"
    );
    for (id, _) in &alice_events {
        let sent = receiver
            .arrivals("alice")
            .iter()
            .filter(|a| a["webhook_id"] == id.as_str())
            .count();
        assert_eq!(sent, if *id == first { 2 } else { 1 }, "{id}");
    }
    assert!(receiver.arrivals("bob").is_empty());
    assert!(receiver.arrivals("drift-only").is_empty());
}

#[tokio::test]
async fn loopback_private_and_link_local_urls_are_refused_without_the_flag() {
    let app = spawn_app().await;
    let token = &app.admin_token;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.7/hook",
        "http://172.20.1.1/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.1.1/",
        "http://0.0.0.0/",
        "http://[::1]:9/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "ftp://example.test/",
        "http://user:secret@example.test/",
        "not a url",
    ] {
        let response = app
            .request(Method::POST, "/webhooks", token)
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
        assert!(
            error["detail"].as_str().unwrap().contains("url"),
            "{url}: {error}"
        );
    }
    let listed = app
        .request(Method::GET, "/webhooks", token)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(listed).await, json!([]));

    // With the operator's permission, the same loopback address is fine.
    let open = spawn_app_with(|settings| settings.webhook_allow_private = true).await;
    let alice = open.create_user_token("alice");
    let bob = open.create_user_token("bob");
    let hook = open
        .create_webhook_ok(
            &alice,
            "http://127.0.0.1:9/hook",
            Some(&["run.finished", "drift.detected"]),
        )
        .await;
    assert_eq!(hook["events"], json!(["run.finished", "drift.detected"]));
    let id = hook["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    for (events, status) in [
        (json!(["run.exploded"]), StatusCode::UNPROCESSABLE_ENTITY),
        (json!([]), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let response = open
            .request(Method::POST, "/webhooks", &alice)
            .json(&json!({"url": "http://127.0.0.1:9/", "events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    let unknown_field = open
        .request(Method::POST, "/webhooks", &alice)
        .json(&json!({"url": "http://127.0.0.1:9/", "secret": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);

    // The secret is shown once; lists never show it. Owners see only their own.
    let listed = open
        .request(Method::GET, "/webhooks", &alice)
        .send()
        .await
        .unwrap();
    let listed = json_body(listed).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "{listed}");
    let theirs = open
        .request(Method::GET, "/webhooks", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(theirs).await, json!([]));
    let everyone = open
        .request(Method::GET, "/webhooks", &open.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(everyone).await.as_array().unwrap().len(), 1);
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}/deliveries")),
        (Method::DELETE, format!("/webhooks/{id}")),
    ] {
        let response = open.request(method, &path, &bob).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(open.deliveries(&alice, &id).await, Vec::<Value>::new());
    let deleted = open
        .request(Method::DELETE, &format!("/webhooks/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let again = open
        .request(Method::DELETE, &format!("/webhooks/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_delivery_pending_across_a_kill_9_is_sent_after_the_restart() {
    let receiver = Receiver::start(Answers {
        fail_first: 0,
        hold: true,
    })
    .await;
    receiver.release();
    let gateway = start_gateway(&[
        "--webhook-allow-private",
        "--webhook-retry-unit-ms",
        "200",
        "--webhook-timeout-ms",
        "2000",
    ])
    .await;
    let admin = gateway.admin_token.clone();
    let hook = gateway.hook_receiver(&admin, &receiver, "ops").await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();

    // A first event, delivered (200) before the crash.
    let first = gateway.create_twin_ok(&admin, "first").await;
    let first_twin = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gateway.delete_twin(&admin, &first_twin).await.status(),
        StatusCode::OK
    );
    wait_until("the first twin.deleted accepted", || {
        receiver.accepted("ops").len() == 1
    })
    .await;
    let delivered = receiver.accepted("ops")[0].clone();

    // A second one reaches the receiver, which holds it: the gateway dies while it waits.
    receiver.hold_again();
    let second = gateway.create_twin_ok(&admin, "second").await;
    let second_twin = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gateway.delete_twin(&admin, &second_twin).await.status(),
        StatusCode::OK
    );
    let arrivals = receiver
        .wait_for("ops", |arrivals| {
            arrivals
                .iter()
                .any(|a| a["event"]["data"]["twin_id"] == second_twin.as_str())
        })
        .await;
    let pending = arrivals
        .iter()
        .find(|a| a["event"]["data"]["twin_id"] == second_twin.as_str())
        .unwrap()["webhook_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        arrivals
            .iter()
            .find(|a| a["webhook_id"] == pending.as_str())
            .unwrap()["event"]["type"],
        "twin.deleted"
    );
    let mut gateway = gateway;
    gateway.crash().await;
    receiver.release();
    let restarted_at = chrono::Utc::now();
    let (gateway, _) = gateway.start_again().await;

    // The next start sends it, under the same webhook-id; the delivered one never again.
    wait_until("the held message delivered after the restart", || {
        receiver.accepted("ops").contains(&pending)
    })
    .await;
    let accepted = receiver.accepted("ops");
    assert_eq!(accepted.iter().filter(|id| **id == delivered).count(), 1);
    assert_eq!(accepted.iter().filter(|id| **id == pending).count(), 1);
    let sent_first = receiver
        .arrivals("ops")
        .iter()
        .filter(|a| a["webhook_id"] == delivered.as_str())
        .count();
    assert_eq!(sent_first, 1, "a message answered 2xx was sent again");
    assert!(receiver
        .arrivals("ops")
        .iter()
        .all(|a| a["verified"] == true));
    let deliveries = gateway.deliveries(&admin, &hook_id).await;
    let record = deliveries
        .iter()
        .find(|d| d["message_id"] == pending.as_str())
        .unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
    let last = record["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status_code"], 200);
    let at = chrono::DateTime::parse_from_rfc3339(last["at"].as_str().unwrap()).unwrap();
    assert!(
        at >= restarted_at,
        "the successful attempt was made by the restarted gateway: {record}"
    );
}

/// The store's contract for delivery workers, on the suite's store (SQLite or PostgreSQL): a
/// message is handed out once, a due delivery is claimed by one worker at a time, another may
/// take it only when the claim's lease has ended, and then the first worker's late result is
/// refused.
#[test]
fn deliveries_are_claimed_by_one_worker_until_their_lease_ends() {
    use terrastream::domain::events::EventType;
    use terrastream::domain::{DeliveryId, NewTwin, Provider, TwinId, TwinName, WebhookId};
    use terrastream::store::{DeliveryAttempt, DeliveryNext, NewDelivery, StoredWebhook};
    let (store, _dir) = crate::store_races::fresh_store();
    let twin = store
        .create_twin(
            NewTwin {
                id: TwinId::generate(),
                owner: "alice".into(),
                name: TwinName::parse("t").unwrap(),
                provider: Provider::Sandbox,
                files: terrastream::demo::files().unwrap(),
                variables: Default::default(),
                secret_variables: Default::default(),
                credential_ids: Vec::new(),
            },
            &terrastream::twins::Twins::created("alice"),
        )
        .unwrap();
    let hook = StoredWebhook {
        id: WebhookId::generate(),
        owner: "alice".into(),
        is_admin: false,
        url: "https://receiver.test/".into(),
        events: Vec::new(),
        description: None,
        sealed_secret: vec![1, 2, 3],
        created_at: "2000-01-01T00:00:00.000000Z".into(),
    };
    store.insert_webhook(&hook).unwrap();
    // As the twins service does it: the domain decides the delete and its message, the store
    // writes both.
    let deleted = twin
        .soft_deleted("alice", &terrastream::clock::now())
        .unwrap();
    store.write_twin(&deleted).unwrap().unwrap();
    let messages = store.pending_messages(10).unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].event_type, EventType::TwinDeleted);
    assert_eq!(messages[0], deleted.messages[0]);
    let delivery = NewDelivery {
        id: DeliveryId::generate(),
        webhook_id: hook.id.clone(),
        next_attempt_at: "2000-01-01T00:00:00.000000Z".into(),
    };
    assert!(store
        .fan_out_message(&messages[0].id, std::slice::from_ref(&delivery))
        .unwrap());
    assert!(!store
        .fan_out_message(&messages[0].id, std::slice::from_ref(&delivery))
        .unwrap());
    assert!(store.pending_messages(10).unwrap().is_empty());

    let (now, lease) = ("2030-01-01T00:00:00.000000Z", "2030-01-01T00:00:30.000000Z");
    let claimed = store.claim_deliveries("a", now, lease, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, messages[0].id);
    assert_eq!(claimed[0].sealed_secret, vec![1, 2, 3]);
    assert!(store
        .claim_deliveries("b", now, lease, 10)
        .unwrap()
        .is_empty());
    // The lease ended (worker a died mid-send): b takes it over.
    let later = "2030-01-01T00:01:00.000000Z";
    let taken = store
        .claim_deliveries("b", later, "2030-01-01T00:01:30.000000Z", 10)
        .unwrap();
    assert_eq!(taken.len(), 1);
    let attempt = |worker_code| DeliveryAttempt {
        delivery_id: delivery.id.clone(),
        number: 1,
        attempted_at: later.into(),
        status_code: Some(worker_code),
        error: None,
        duration_ms: 5,
    };
    assert!(!store
        .record_attempt("a", &attempt(200), &DeliveryNext::Succeeded)
        .unwrap());
    assert!(store
        .record_attempt("b", &attempt(200), &DeliveryNext::Succeeded)
        .unwrap());
    // Succeeded: never due again.
    assert!(store
        .claim_deliveries(
            "c",
            "2099-01-01T00:00:00.000000Z",
            "2099-01-01T00:00:30.000000Z",
            10
        )
        .unwrap()
        .is_empty());
    let records = store.list_deliveries(&hook.id, 10).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].attempts.len(), 1);
    assert_eq!(records[0].attempts[0].status_code, Some(200));
}
