//! Runs against real terraform and the sandbox provider: what a deploy, destroy, failure,
//! race and cancel look like on the stream, in the API, in the sandbox and in the state.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_body};
use crate::run_helpers::{
    assert_rfc3339_micros, assert_well_formed, done, lines, log_index, sandbox_config, shown,
    spawn_run_app, spawn_run_app_with, stage_lines, stages, statuses, Cursor, RecordingTerraform,
    Res, SseEvent,
};

#[tokio::test]
async fn a_deploy_streamed_on_the_post_shows_every_step_and_reads_back_after_a_restart() {
    let terraform = RecordingTerraform::new();
    let app = spawn_run_app_with(|s| {
        s.terraform = Some(terraform.program.clone());
        // The recorder writes its copies beside itself, from inside the run's isolation.
        s.run_writable = vec![terraform.dir()];
    })
    .await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("hub", 300),
        Res::new("db", 600),
        Res::new("fn", 100),
    ];
    let main_tf = sandbox_config(&resources);
    let twin = app.create_sandbox_twin(&token, "streamed", &main_tf).await;

    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let events = stream.read_to_end().await;

    // The wire: SSE headers, and `retry:` before any event.
    assert_eq!(stream.headers["cache-control"], "no-cache");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert_eq!(
        stream.parser.fields.first().map(String::as_str),
        Some("retry")
    );

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(
        stages(&events),
        ["initializing", "planning", "applying", "complete"]
    );
    let labels: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "stage")
        .map(|e| e.json()["label"].clone())
        .collect();
    assert_eq!(
        labels,
        ["Initializing...", "Planning...", "Applying...", "Complete"]
    );
    assert_eq!(statuses(&events), ["deploying", "deployed"]);
    for status in events.iter().filter(|e| e.event == "status") {
        assert_eq!(status.json()["twin_id"], twin.as_str());
    }
    let finished = done(&events);
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["twin_status"], "deployed");
    assert!(finished.get("error").is_none(), "{finished}");

    // Every line terraform printed, in order, per stream; each command's lines within its stage.
    for log in events.iter().filter(|e| e.event == "log") {
        let data = log.json();
        assert!(data["line"].is_string(), "{data}");
        assert_rfc3339_micros(data["ts"].as_str().unwrap());
    }
    let invocations = terraform.invocations();
    let commands: Vec<&str> = invocations.iter().map(|i| i.args[0].as_str()).collect();
    // The plan and its apply are one command, so terraform prints the change list once.
    assert_eq!(commands, ["init", "apply", "output"]);
    // This configuration makes terraform print nothing on stderr; `output -json` holds clear
    // secrets, so its stdout is read by the gateway, not shown.
    assert!(
        invocations.iter().all(|i| i.stderr.is_empty()),
        "{invocations:#?}"
    );
    let streamed = &invocations[..2];
    let printed: Vec<String> = streamed
        .iter()
        .flat_map(|i| i.stdout.iter().map(|l| shown(l)))
        .collect();
    let logged: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.json())
        .collect();
    assert!(logged.iter().all(|l| l["stream"] == "stdout"));
    let logged: Vec<String> = events.iter().filter_map(SseEvent::line).collect();
    assert_eq!(
        logged, printed,
        "the log differs from what terraform printed"
    );
    let init: Vec<String> = streamed[0].stdout.iter().map(|l| shown(l)).collect();
    assert_eq!(stage_lines(&events, "initializing"), init);
    // The apply's plan is the planning stage; from its first change on, it is applying.
    let apply_printed: Vec<String> = streamed[1].stdout.iter().map(|l| shown(l)).collect();
    assert!(apply_printed
        .iter()
        .any(|l| l.starts_with("Plan: 3 to add")));
    let first_change = apply_printed
        .iter()
        .position(|l| l.ends_with(": Creating..."))
        .expect("the apply created something");
    assert_eq!(
        stage_lines(&events, "planning"),
        apply_printed[..first_change]
    );
    assert_eq!(
        stage_lines(&events, "applying"),
        apply_printed[first_change..]
    );
    let planned = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.ends_with(": Plan to create"))
            .count()
    };
    assert_eq!(planned(&logged), 3, "each change is listed once");
    // The lock file for the mirror's provider is complete: init warns about nothing a user
    // could not act on.
    for noise in [
        "Incomplete lock file information",
        "made some changes to the provider dependency selections",
    ] {
        assert!(
            !logged.iter().any(|l| l.contains(noise)),
            "{noise}: {logged:#?}"
        );
    }
    let apply = stage_lines(&events, "applying");
    for name in ["hub", "db", "fn"] {
        let creating = log_index(&events, &format!("sandbox_resource.{name}: Creating..."));
        let created = log_index(
            &events,
            &format!("sandbox_resource.{name}: Creation complete"),
        );
        assert!(creating < created, "{name} completed before it started");
    }
    // Three creates started and completed, the summary, the outputs.
    assert_eq!(apply.len(), 3 + 3 + 2, "{apply:#?}");
    // What terraform says it created is what exists in the sandbox and in its state.
    let created: BTreeSet<String> = apply
        .iter()
        .filter_map(|line| line.split_once("Creation complete after "))
        .map(|(_, rest)| {
            rest.split_once("[id=")
                .unwrap()
                .1
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    assert_eq!(created.len(), 3, "{apply:#?}");
    assert_eq!(app.sandbox_ids(&twin), created);
    assert_eq!(app.state_ids(&twin).await, created);
    assert_eq!(
        apply[6..],
        [
            "Apply complete! Resources: 3 added, 0 changed, 0 destroyed.",
            "Outputs: 2"
        ]
    );

    // Progress climbs to 100 with every planned create done.
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "progress")
        .map(|e| e.json())
        .collect();
    let percents: Vec<u64> = progress
        .iter()
        .map(|p| p["percent"].as_u64().unwrap())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    let last = progress.last().expect("progress events");
    assert_eq!(
        (
            last["percent"].as_u64(),
            last["done"].as_u64(),
            last["total"].as_u64()
        ),
        (Some(100), Some(3), Some(3))
    );

    // The API agrees with the stream.
    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["job_id"], run_id.as_str());
    assert_eq!(run["twin_id"], twin.as_str());
    assert_eq!(run["kind"], "deploy");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["progress"], 100);
    assert_eq!(run["stage"], "complete");
    assert!(run["end_time"].is_string(), "{run}");

    let deployed = app.get_twin_ok(&token, &twin).await;
    assert_eq!(deployed["deployment_status"], "deployed");
    assert_eq!(deployed["is_locked"], false);
    assert!(deployed["last_deployed_at"].is_string(), "{deployed}");
    let outputs = &deployed["terraform_outputs"];
    assert_eq!(
        outputs["endpoint"]["value"],
        "https://test-hub.sandbox.local"
    );
    assert_eq!(outputs["secret"]["value"], "********");
    assert_eq!(outputs["secret"]["sensitive"], true);
    assert_eq!(run["result"]["outputs"], *outputs);

    // The clear secret (the sandbox holds it) appears in no event and no response.
    let hub = app
        .sandbox_objects(&twin)
        .into_iter()
        .find(|o| o["name"] == "hub")
        .expect("the hub object");
    let secret = hub["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sbx_"), "{secret}");
    let leaks = |text: &str| text.contains(&secret);
    assert!(
        !events.iter().any(|e| leaks(&e.data)),
        "an event leaks the secret"
    );
    let mut responses = Vec::new();
    for path in [
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/logs"),
        format!("/twins/{twin}"),
        format!("/twins/{twin}/runs"),
        format!("/twins/{twin}/outputs"),
        format!("/twins/{twin}/state"),
        format!("/twins/{twin}/infrastructure-status"),
        format!("/twins/{twin}/history"),
        "/twins".to_owned(),
    ] {
        let response = app
            .request(Method::GET, &path, &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let text = response.text().await.unwrap();
        assert!(!leaks(&text), "{path} leaks the secret: {text}");
        responses.push(text);
    }

    // A restarted gateway on the same data directory tells the same story.
    let (run_before, twin_before) = (run, deployed);
    let app = app.restart().await;
    assert_eq!(app.get_run_ok(&token, &run_id).await, run_before);
    assert_eq!(app.get_twin_ok(&token, &twin).await, twin_before);
    let replayed = app.all_events(&token, &run_id).await;
    assert_eq!(replayed, events);
    let at_end = Cursor::Header(events.last().unwrap().seq());
    let response = app.run_events(&token, &run_id, at_end).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let logs = app.run_logs(&token, &run_id, 0, None).await;
    let logs_text = logs.text().await.unwrap();
    assert!(!leaks(&logs_text));
    assert_eq!(
        json_body_from(&logs_text),
        json_body_from(&responses[1]),
        "the stored events changed across the restart"
    );
}

fn json_body_from(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn destroy_removes_every_sandbox_object_and_returns_the_twin_to_draft() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("hub", 100).destroy_ms(300),
        Res::new("db", 200).destroy_ms(100),
        Res::new("fn", 0).destroy_ms(200),
    ];
    let twin = app
        .create_sandbox_twin(&token, "to destroy", &sandbox_config(&resources))
        .await;
    let deploy = app.run_ok(&token, &twin, "deploy").await;
    let deployed = app.sandbox_ids(&twin);
    assert_eq!(deployed.len(), 3);
    assert_eq!(
        app.state_ids(&twin).await,
        deployed,
        "sandbox and state differ after deploy"
    );

    let events = app
        .run_streamed(&token, &twin, "destroy")
        .await
        .read_to_end()
        .await;

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_ne!(run_id, deploy);
    assert_well_formed(&events, &run_id);
    assert_eq!(
        stages(&events),
        ["initializing", "destroying", "cleanup", "complete"]
    );
    assert_eq!(statuses(&events), ["destroying", "draft"]);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["twin_status"], "draft");
    let destroying = stage_lines(&events, "destroying");
    for id in &deployed {
        assert!(
            destroying
                .iter()
                .any(|l| l.contains("Destruction complete") && l.contains(id.as_str()))
                || destroying
                    .iter()
                    .any(|l| l.contains(&format!("Destroying... [id={id}]"))),
            "nothing says {id} was destroyed: {destroying:#?}"
        );
    }
    assert_eq!(
        destroying
            .iter()
            .filter(|l| l.contains("Destruction complete"))
            .count(),
        3,
        "{destroying:#?}"
    );
    assert!(destroying
        .iter()
        .any(|l| l.starts_with("Destroy complete! Resources: 3 destroyed.")));
    assert_eq!(
        stage_lines(&events, "cleanup"),
        ["State is empty: every resource was destroyed."]
    );
    let last_progress = events
        .iter()
        .rev()
        .find(|e| e.event == "progress")
        .unwrap()
        .json();
    assert_eq!(last_progress["percent"], 100);
    assert_eq!(last_progress["total"], 3);

    assert!(
        app.sandbox_ids(&twin).is_empty(),
        "objects left: {:?}",
        app.sandbox_ids(&twin)
    );
    assert!(app.state_ids(&twin).await.is_empty());
    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["kind"], "destroy");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["stage"], "complete");
    assert_eq!(run["progress"], 100);
    let draft = app.get_twin_ok(&token, &twin).await;
    assert_eq!(draft["deployment_status"], "draft");
    assert_eq!(draft["is_locked"], false);
    assert_eq!(draft["terraform_outputs"], Value::Null);
}

#[tokio::test]
async fn a_failed_create_leaves_the_twin_in_error_with_what_exists_and_destroy_cleans_up() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("hub", 0),
        Res::new("db", 100),
        Res::new("broken", 400).failing_create(),
    ];
    let twin = app
        .create_sandbox_twin(&token, "half built", &sandbox_config(&resources))
        .await;

    let events = app
        .run_streamed(&token, &twin, "deploy")
        .await
        .read_to_end()
        .await;

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(stages(&events), ["initializing", "planning", "applying"]);
    assert_eq!(statuses(&events), ["deploying", "error"]);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed");
    assert_eq!(finished["twin_status"], "error");
    let error = finished["error"].as_str().expect("a failed run says why");
    assert!(
        error.contains("broken") && error.contains("fail_on_create"),
        "{error}"
    );
    log_index(&events, "Error: ");

    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], error);
    let twin_now = app.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    // The two objects that were created exist, and terraform knows them.
    let partial = app.sandbox_ids(&twin);
    assert_eq!(partial.len(), 2, "{partial:?}");
    assert!(
        partial.iter().all(|id| !id.contains("broken")),
        "{partial:?}"
    );
    assert_eq!(app.state_ids(&twin).await, partial);

    // Cleaning up a partial deploy: error -> destroying -> draft.
    let destroy = app.start_run_ok(&token, &twin, "destroy").await;
    let events = app.all_events(&token, &destroy).await;
    assert_well_formed(&events, &destroy);
    assert_eq!(done(&events)["outcome"], "succeeded");
    assert_eq!(statuses(&events), ["destroying", "draft"]);
    assert!(app.sandbox_ids(&twin).is_empty());
    assert!(app.state_ids(&twin).await.is_empty());
    let draft = app.get_twin_ok(&token, &twin).await;
    assert_eq!(draft["deployment_status"], "draft");
    assert_eq!(draft["is_locked"], false);
}

#[tokio::test]
async fn a_failed_destroy_ends_in_destroy_failed_and_keeps_the_object() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("stubborn", 0).destroy_ms(200).failing_destroy(),
        Res::new("meek", 0).destroy_ms(100),
    ];
    let twin = app
        .create_sandbox_twin(&token, "sticky", &sandbox_config(&resources))
        .await;
    app.run_ok(&token, &twin, "deploy").await;

    let events = app
        .run_streamed(&token, &twin, "destroy")
        .await
        .read_to_end()
        .await;

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(stages(&events), ["initializing", "destroying"]);
    assert_eq!(statuses(&events), ["destroying", "destroy_failed"]);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed");
    assert_eq!(finished["twin_status"], "destroy_failed");
    let error = finished["error"].as_str().expect("a failed run says why");
    assert!(error.contains("stubborn"), "{error}");
    assert_eq!(app.get_run_ok(&token, &run_id).await["status"], "failed");
    let twin_now = app.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "destroy_failed");
    assert_eq!(twin_now["is_locked"], false);
    let left = app.sandbox_ids(&twin);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left.iter().all(|id| id.contains("stubborn")), "{left:?}");
    assert_eq!(app.state_ids(&twin).await, left);
}

#[tokio::test]
async fn twenty_simultaneous_deploys_start_one_run_and_the_rest_get_409_naming_it() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    // Long enough that every request arrives while the one run holds the lock.
    let twin = app
        .create_sandbox_twin(&token, "raced", &sandbox_config(&[Res::new("slow", 3000)]))
        .await;

    let responses =
        futures_util::future::join_all((0..20).map(|_| app.deploy(&token, &twin))).await;
    let mut accepted = Vec::new();
    let mut conflicts = Vec::new();
    for response in responses {
        let status = response.status();
        let body = json_body(response).await;
        match status {
            StatusCode::ACCEPTED => accepted.push(body),
            StatusCode::CONFLICT => conflicts.push(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }

    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(conflicts.len(), 19);
    let run_id = accepted[0]["job_id"].as_str().unwrap().to_owned();
    for conflict in &conflicts {
        assert_eq!(conflict["active_job_id"], run_id.as_str(), "{conflict}");
        assert_eq!(conflict["code"], "twin_locked", "{conflict}");
        assert!(conflict["detail"].is_string());
    }
    // The requests were all answered while that run was still going.
    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "processing", "{run}");

    let run = app.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let runs = json_body(app.twin_runs(&token, &twin).await).await;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(app.sandbox_ids(&twin).len(), 1);
}

#[tokio::test]
async fn cancel_mid_apply_stops_terraform_gracefully_and_orphans_nothing() {
    let app = spawn_run_app_with(|s| s.keep_alive = Duration::from_millis(250)).await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("a", 3000),
        Res::new("b", 3500),
        Res::new("c", 4000),
        Res::new("d", 4500),
        Res::new("e", 5000),
        Res::new("f", 5000),
    ];
    let twin = app
        .create_sandbox_twin(&token, "interrupted", &sandbox_config(&resources))
        .await;
    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = Vec::new();
    let creating = stream
        .read_until(&mut events, |e| {
            e.line().is_some_and(|l| l.ends_with(": Creating..."))
        })
        .await;
    assert!(
        creating,
        "the run ended before any create started: {:#?}",
        lines(&events)
    );

    let response = app.cancel_run(&token, &twin).await;
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "cancelling");
    events.extend(stream.read_to_end().await);

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_eq!(body["job_id"], run_id.as_str());
    assert_well_formed(&events, &run_id);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "cancelled");
    assert_eq!(finished["twin_status"], "error");
    assert_eq!(statuses(&events), ["deploying", "error"]);
    assert!(!stages(&events).contains(&"complete".to_owned()));
    // Quiet stretches (creates take seconds) carried keep-alive comments.
    assert!(stream.parser.comments > 0, "no keep-alive comment");

    assert_eq!(app.get_run_ok(&token, &run_id).await["status"], "cancelled");
    let twin_now = app.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    // Graceful: creates in flight finished and were saved; nothing exists that terraform
    // does not know about.
    let in_sandbox = app.sandbox_ids(&twin);
    assert!(!in_sandbox.is_empty(), "no create finished");
    assert_eq!(
        app.state_ids(&twin).await,
        in_sandbox,
        "orphans or ghosts after cancel"
    );
    let response = app.cancel_run(&token, &twin).await;
    assert_error(response, StatusCode::CONFLICT, "no_active_run").await;

    // What the cancelled run saved is enough to clean up.
    app.run_ok(&token, &twin, "destroy").await;
    assert!(app.sandbox_ids(&twin).is_empty());
    assert!(app.state_ids(&twin).await.is_empty());
    assert_eq!(
        app.get_twin_ok(&token, &twin).await["deployment_status"],
        "draft"
    );
}

/// A cancel interrupts terraform alone: a provisioner that traps SIGINT never gets one from
/// the gateway. terraform then stops the provisioner itself (it kills the command it runs), as
/// docs/api.md says, and the run ends cancelled.
#[tokio::test]
async fn a_cancel_interrupts_terraform_itself_not_the_provisioner_it_runs() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let config = r#"resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "trap 'echo PROVISIONER-GOT-SIGINT' INT; echo provisioning; for i in $(seq 1 100); do sleep 0.1; done; echo provisioned"
  }
}
"#;
    let twin = app.create_sandbox_twin(&token, "provisioned", config).await;
    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = Vec::new();
    let provisioning = stream
        .read_until(&mut events, |e| {
            e.line()
                .is_some_and(|l| l.ends_with("(local-exec): provisioning"))
        })
        .await;
    assert!(provisioning, "{:#?}", lines(&events));
    let response = app.cancel_run(&token, &twin).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    events.extend(stream.read_to_end().await);
    let logged = lines(&events);
    assert!(
        !logged
            .iter()
            .any(|l| l.ends_with("(local-exec): PROVISIONER-GOT-SIGINT")),
        "the gateway's SIGINT reached the provisioner: {logged:#?}"
    );
    assert!(
        !logged.iter().any(|l| l.ends_with("provisioned")),
        "{logged:#?}"
    );
    // terraform's interrupt notice is several lines: each is an event of its own.
    let notice = logged
        .iter()
        .position(|l| l == "Interrupt received.")
        .unwrap_or_else(|| panic!("{logged:#?}"));
    assert_eq!(
        logged[notice + 1],
        "Please wait for Terraform to exit or data loss may occur."
    );
    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(done(&events)["outcome"], "cancelled");
}

/// terraform 1.0.3 runs under a wrapper that ignores a SIGINT sent to it alone: the cancel
/// reaches the terraform it wraps, which stops gracefully (well within the grace period).
#[tokio::test]
async fn a_cancel_stops_terraform_1_0_3_gracefully_through_its_wrapper() {
    let old =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bin/terraform-1.0.3");
    let app = spawn_run_app_with(|s| {
        s.terraform = Some(old);
        s.cancel_grace = Duration::from_secs(60);
    })
    .await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("a", 1000),
        Res::new("b", 4000),
        Res::new("c", 4000),
    ];
    let twin = app
        .create_sandbox_twin(&token, "old interrupted", &sandbox_config(&resources))
        .await;
    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = Vec::new();
    let created = stream
        .read_until(&mut events, |e| {
            e.line()
                .is_some_and(|l| l.starts_with("sandbox_resource.a: Creation complete"))
        })
        .await;
    assert!(created, "{:#?}", lines(&events));
    let cancelled_at = std::time::Instant::now();
    assert_eq!(
        app.cancel_run(&token, &twin).await.status(),
        StatusCode::ACCEPTED
    );
    events.extend(stream.read_to_end().await);
    let took = cancelled_at.elapsed();
    let finished = done(&events);
    assert_eq!(finished["outcome"], "cancelled", "{finished}");
    assert!(
        !finished.to_string().contains("killed"),
        "terraform had to be killed: {finished}"
    );
    assert!(took < Duration::from_secs(30), "the stop took {took:?}");
    let in_sandbox = app.sandbox_ids(&twin);
    assert_eq!(app.state_ids(&twin).await, in_sandbox, "orphans or ghosts");
}

#[tokio::test]
async fn logs_page_through_every_event_runs_list_newest_first_and_strangers_see_none() {
    let app = spawn_run_app().await;
    let alice = app.create_user_token("alice");
    let mallory = app.create_user_token("mallory");
    let twin = app
        .create_sandbox_twin(
            &alice,
            "paged",
            &sandbox_config(&[Res::new("x", 0), Res::new("y", 0)]),
        )
        .await;
    let deploy = app.start_run_ok(&alice, &twin, "deploy").await;
    let events = app.all_events(&alice, &deploy).await;
    assert_well_formed(&events, &deploy);
    let destroy = app.run_ok(&alice, &twin, "destroy").await;

    // Pages of 7 from the start, and from a cursor inside the run, give the stream's events.
    for start in [0, 5] {
        let mut paged = Vec::new();
        let mut after = start;
        loop {
            let response = app.run_logs(&alice, &deploy, after, Some(7)).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page = json_body(response).await;
            assert_eq!(page["job_id"], deploy.as_str());
            assert_eq!(page["status"], "completed");
            let batch = page["events"].as_array().unwrap().clone();
            assert!(batch.len() <= 7);
            paged.extend(batch);
            after = page["next_after_event_id"].as_u64().unwrap();
            if page["has_more"] == false {
                break;
            }
        }
        assert_eq!(after, events.last().unwrap().seq());
        let expected: Vec<Value> = events[start as usize..]
            .iter()
            .map(|e| json!({ "id": e.seq(), "event": e.event, "data": e.json() }))
            .collect();
        assert_eq!(paged, expected, "pages from {start}");
    }
    // A stream resumed from a cursor agrees with the pages.
    for cursor in [Cursor::Header(5), Cursor::Query(5)] {
        let resumed = app
            .subscribe(&alice, &deploy, cursor)
            .await
            .read_to_end()
            .await;
        assert_eq!(resumed, events[5..], "{cursor:?}");
    }
    for limit in [0, 1001] {
        let response = app.run_logs(&alice, &deploy, 0, Some(limit)).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    }

    let runs = json_body(app.twin_runs(&alice, &twin).await).await;
    let listed: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["job_id"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(destroy.as_str(), "destroy"), (deploy.as_str(), "deploy")]
    );

    // Another owner cannot tell the runs exist.
    for path in [
        format!("/runs/{deploy}"),
        format!("/runs/{deploy}/events"),
        format!("/runs/{deploy}/logs"),
        format!("/twins/{twin}/runs"),
    ] {
        let response = app
            .request(Method::GET, &path, &mallory)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app.cancel_run(&mallory, &twin).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}
