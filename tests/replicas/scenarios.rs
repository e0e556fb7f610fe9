//! What a team running three replicas behind nginx notices: any replica answers, a run on one
//! is followed live on the others, a cancel or a deploy through any reaches the right one, a
//! lost replica's runs are settled by the others, and restarts lose nobody anything.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cluster::{follow, Replicas, PATIENCE};
use crate::helpers::{json_body, TestApp};
use crate::nginx::Nginx;
use crate::run_helpers::{
    assert_well_formed, done, sandbox_config, stages, Cursor, Res, SseEvent, SseStream,
};

fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(SseEvent::seq).collect()
}

/// The run's whole stream as stored, read through `app`.
async fn stored_events(app: &TestApp, token: &str, run_id: &str) -> Vec<SseEvent> {
    app.all_events(token, run_id).await
}

/// Reads `stream` until an event matches; the events up to it.
async fn read_until(stream: &mut SseStream, wanted: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    assert!(stream.read_until(&mut seen, wanted).await, "{seen:?}");
    seen
}

fn applying(event: &SseEvent) -> bool {
    event.event == "stage" && event.json()["stage"] == "applying"
}

#[tokio::test]
async fn a_twin_made_through_one_replica_is_seen_by_all_and_the_admin_token_is_shared() {
    let replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let twin = replicas.gateways[0]
        .create_sandbox_twin(&token, "shared", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let user = replicas.gateways[1].create_user_token("ana");
    for gateway in &replicas.gateways {
        let seen = gateway.get_twin_ok(&token, &twin).await;
        assert_eq!(seen["name"], "shared");
        // A token made through one replica works on every other.
        let listed = gateway
            .request(Method::GET, "/twins", &user)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), StatusCode::OK);
    }
    // Three gateways, three replica ids.
    let mut ids: Vec<String> = (0..3).map(|i| replicas.replica_id(i)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn a_deploy_through_a_is_followed_live_and_gap_free_through_b_and_c_to_done() {
    let replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let (a, b, c) = (
        &replicas.gateways[0],
        &replicas.gateways[1],
        &replicas.gateways[2],
    );
    let resources = [Res::new("first", 1500), Res::new("second", 3000)];
    let twin = a
        .create_sandbox_twin(&token, "followed", &sandbox_config(&resources))
        .await;
    let run_id = a.start_run_ok(&token, &twin, "deploy").await;
    let mut on_b = b.subscribe(&token, &run_id, Cursor::None).await;
    let mut on_c = c.subscribe(&token, &run_id, Cursor::None).await;

    // Live: B hears that the apply has begun while the run is still working on A.
    let mut seen_on_b = read_until(&mut on_b, applying).await;
    let run = a.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "processing", "{run}");
    assert_eq!(run["replica"], replicas.replica_id(0), "{run}");

    seen_on_b.extend(on_b.read_to_end().await);
    let seen_on_c = on_c.read_to_end().await;
    let stored = stored_events(a, &token, &run_id).await;
    assert_well_formed(&stored, &run_id);
    assert_eq!(done(&stored)["outcome"], "succeeded");
    for seen in [&seen_on_b, &seen_on_c] {
        assert_eq!(ids(seen), ids(&stored));
        assert_eq!(*seen, stored);
    }
}

#[tokio::test]
async fn a_cancel_through_c_stops_a_run_working_on_b() {
    let replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let (b, c) = (&replicas.gateways[1], &replicas.gateways[2]);
    let twin = b
        .create_sandbox_twin(
            &token,
            "cancelled",
            &sandbox_config(&[Res::new("slow", 60_000)]),
        )
        .await;
    let run_id = b.start_run_ok(&token, &twin, "deploy").await;
    let mut on_c = c.subscribe(&token, &run_id, Cursor::None).await;
    read_until(&mut on_c, |e| {
        e.line()
            .is_some_and(|l| l.contains("sandbox_resource.slow: Creating..."))
    })
    .await;

    let started = Instant::now();
    let response = c
        .request(Method::POST, &format!("/runs/{run_id}/cancel"), &token)
        .send()
        .await
        .unwrap();
    let body = json_body(response).await;
    assert_eq!(body["status"], "cancelling", "{body}");
    let rest = on_c.read_to_end().await;
    let last = rest.last().unwrap();
    assert_eq!(last.event, "done");
    assert_eq!(last.json()["outcome"], "cancelled", "{rest:?}");
    // Far sooner than the 60 s create would have taken.
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
    let run = c.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(
        run["replica"],
        replicas.replica_id(1),
        "the run was B's: {run}"
    );
    assert_eq!(c.get_twin_ok(&token, &twin).await["is_locked"], false);
}

#[tokio::test]
async fn a_hundred_deploys_raced_over_three_replicas_on_one_twin_accept_exactly_one() {
    let replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let twin = replicas.gateways[0]
        .create_sandbox_twin(&token, "raced", &sandbox_config(&[Res::new("a", 10_000)]))
        .await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let mut racers = Vec::new();
    for i in 0..100 {
        let (client, base) = (
            reqwest::Client::builder().no_proxy().build().unwrap(),
            replicas.gateways[i % 3].address.clone(),
        );
        let (token, twin, barrier) = (token.clone(), twin.clone(), barrier.clone());
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = client
                .post(format!("{base}/twins/{twin}/deploy"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (response.status(), json_body(response).await)
        }));
    }
    let mut accepted = Vec::new();
    let mut conflicts = 0;
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(body),
            StatusCode::CONFLICT => {
                assert!(body["code"].is_string(), "{body}");
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(conflicts, 99);
    let run_id = accepted[0]["job_id"].as_str().unwrap().to_owned();
    let run = replicas.wait_run(1, &run_id, finished).await;
    assert_eq!(run["status"], "completed", "{run}");
    let runs = replicas.gateways[2].twin_runs(&token, &twin).await;
    assert_eq!(json_body(runs).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn when_a_and_its_monitors_are_lost_mid_apply_b_settles_the_run_within_15_s_and_c_deploys() {
    let mut replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let resources = [Res::new("slow", 120_000)];
    let twin = replicas.gateways[0]
        .create_sandbox_twin(&token, "lost", &sandbox_config(&resources))
        .await;
    let run_id = replicas.gateways[0]
        .start_run_ok(&token, &twin, "deploy")
        .await;
    let mut on_b = replicas.gateways[1]
        .subscribe(&token, &run_id, Cursor::None)
        .await;
    read_until(&mut on_b, |e| {
        e.line()
            .is_some_and(|l| l.contains("sandbox_resource.slow: Creating..."))
    })
    .await;

    replicas.gateways[0].lose_machine().await;
    let lost_at = Instant::now();
    // B's follower gets the end without reconnecting: the settling replica writes it.
    let rest = on_b.read_to_end().await;
    let settled_after = lost_at.elapsed();
    eprintln!("the lost replica's run was settled {settled_after:?} after the loss");
    let last = rest.last().unwrap();
    assert_eq!(last.event, "done", "{rest:?}");
    assert_eq!(last.json()["outcome"], "failed");
    assert!(
        last.json()["error"]
            .as_str()
            .unwrap()
            .contains("the gateway running it was lost"),
        "{last:?}"
    );
    assert!(
        settled_after <= Duration::from_secs(15),
        "settled {settled_after:?} after the loss"
    );
    let run = replicas.gateways[1].get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "failed");
    let twin_now = replicas.gateways[1].get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["is_locked"], false, "{twin_now}");
    assert_eq!(twin_now["deployment_status"], "error", "{twin_now}");
    let stored = stored_events(&replicas.gateways[1], &token, &run_id).await;
    assert_well_formed(&stored, &run_id);

    // The twin deploys again through C (its configuration quick now).
    let c = &replicas.gateways[2];
    let update = c
        .request(Method::PUT, &format!("/twins/{twin}"), &token)
        .json(
            &serde_json::json!({ "files": { "main.tf": sandbox_config(&[Res::new("slow", 0)]) } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), StatusCode::OK);
    let again = c.run_ok(&token, &twin, "deploy").await;
    let run = c.get_run_ok(&token, &again).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        c.get_twin_ok(&token, &twin).await["deployment_status"],
        "deployed"
    );
}

#[tokio::test]
async fn a_replica_that_starts_mid_run_changes_nothing_of_the_live_run() {
    let mut replicas = Replicas::start(2).await;
    let token = replicas.token.clone();
    let resources = [Res::new("one", 3000), Res::new("two", 6000)];
    let twin = replicas.gateways[0]
        .create_sandbox_twin(&token, "undisturbed", &sandbox_config(&resources))
        .await;
    let run_id = replicas.gateways[0]
        .start_run_ok(&token, &twin, "deploy")
        .await;
    let mut on_a = replicas.gateways[0]
        .subscribe(&token, &run_id, Cursor::None)
        .await;
    let mut seen = read_until(&mut on_a, applying).await;

    // A third replica joins while the run applies, and gets ready (it has looked at every
    // run in the database).
    let joined = replicas.add().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = replicas.gateways[joined]
            .client
            .get(replicas.gateways[joined].url("/readyz"))
            .send()
            .await
            .unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joining replica never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = replicas.gateways[joined].get_run_ok(&token, &run_id).await;
    assert_eq!(during["status"], "processing", "{during}");

    seen.extend(on_a.read_to_end().await);
    assert_well_formed(&seen, &run_id);
    assert_eq!(done(&seen)["outcome"], "succeeded", "{seen:?}");
    assert_eq!(
        stages(&seen),
        ["initializing", "planning", "applying", "complete"]
    );
    let run = replicas.gateways[joined].get_run_ok(&token, &run_id).await;
    assert_eq!(run["replica"], replicas.replica_id(0), "{run}");
    assert_eq!(
        stored_events(&replicas.gateways[joined], &token, &run_id).await,
        seen
    );
}

#[tokio::test]
async fn every_replica_restarted_in_turn_while_clients_follow_through_nginx_misses_nothing() {
    let mut replicas = Replicas::start(3).await;
    let token = replicas.token.clone();
    let nginx = Nginx::start(&replicas.ports()).await;
    let resources = [
        Res::new("one", 4000),
        Res::new("two", 8000),
        Res::new("three", 12_000),
    ];
    let twin = replicas.gateways[0]
        .create_sandbox_twin(&token, "rolling", &sandbox_config(&resources))
        .await;
    // The deploy goes in through nginx too; whichever replica takes it runs it.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(format!("{}/twins/{twin}/deploy", nginx.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let run_id = json_body(response).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let followers: Vec<_> = (0..6)
        .map(|_| follow(&nginx.address, &token, &run_id))
        .collect();
    let mut on_first = replicas.gateways[0]
        .subscribe(&token, &run_id, Cursor::None)
        .await;
    read_until(&mut on_first, applying).await;
    drop(on_first);

    // One at a time: the owner among them (its run adopted from its monitor).
    for index in 0..3 {
        replicas.restart(index).await;
        let run = replicas.gateways[index].get_run_ok(&token, &run_id).await;
        assert!(!finished(&run) || run["status"] == "completed", "{run}");
    }

    let run = replicas.wait_run(0, &run_id, finished).await;
    assert_eq!(run["status"], "completed", "{run}");
    let stored = stored_events(&replicas.gateways[1], &token, &run_id).await;
    assert_well_formed(&stored, &run_id);
    let mut reconnected = 0;
    for follower in followers {
        let followed = tokio::time::timeout(PATIENCE, follower)
            .await
            .expect("a follower never saw done")
            .unwrap();
        assert_eq!(ids(&followed.events), ids(&stored));
        assert_eq!(followed.events, stored);
        if followed.connections > 1 {
            reconnected += 1;
        }
    }
    // Streams through the restarted replicas ended and were resumed through the others.
    assert!(reconnected > 0, "no follower had to reconnect");
}
