//! What goes wrong around a run, with real terraform: the gateway killed mid-apply (the real
//! process, `kill -9`) and restarted, SIGTERM during an apply, a command past its time limit,
//! the run queue, a missing or broken terraform, an unwritable working directory, a
//! configuration that does not parse, a busy or failing database, a silent terraform, and the
//! probes and metrics that tell an operator about it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{json_body, TestApp};
use crate::process_helpers::{processes_of_run, start_gateway, GatewayProcess};
use crate::run_helpers::{
    assert_well_formed, done, lines, sandbox_config, spawn_run_app, spawn_run_app_with, stages,
    statuses, Res, RunApp, SseEvent, PATIENCE,
};

/// Stops a gateway gracefully and checks it exits 0.
async fn stop(mut gateway: GatewayProcess) {
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "{status}:\n{}", gateway.log());
}

/// `--on-shutdown interrupt`: a SIGTERM interrupts running terraform (the way it was before
/// runs outlived the gateway), stores the outcome and then exits 0.
#[tokio::test]
async fn with_on_shutdown_interrupt_sigterm_stops_terraform_stores_cancelled_and_exits_0() {
    let mut gateway = start_gateway(&[
        "--cancel-grace-secs",
        "120",
        "--shutdown-grace-secs",
        "120",
        "--on-shutdown",
        "interrupt",
    ])
    .await;
    let token = gateway.admin_token.clone();
    // The signal comes seconds before the apply could end.
    let resources = [Res::new("a", 1500), Res::new("b", 5000)];
    let twin = gateway
        .create_sandbox_twin(&token, "terminated", &sandbox_config(&resources))
        .await;
    let mut stream = gateway.run_streamed(&token, &twin, "deploy").await;
    let mut events = Vec::new();
    let creating = stream
        .read_until(&mut events, |e| {
            e.line().is_some_and(|l| l.ends_with(": Creating..."))
        })
        .await;
    assert!(creating, "no create started: {:#?}", lines(&events));

    gateway.signal(Signal::SIGTERM);

    // The client streaming the run is told how it ended, then the process exits 0.
    events.extend(stream.read_to_end().await);
    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "cancelled", "{finished}");
    assert_eq!(finished["twin_status"], "error", "{finished}");
    // Not a user's cancel: the reader is told the gateway stopped it.
    assert!(
        finished["error"]
            .as_str()
            .is_some_and(|e| e.contains("the gateway was shut down")),
        "{finished}"
    );
    let status = gateway.wait_exit(Duration::from_secs(300)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gateway.log());
    assert!(
        processes_of_run(&run_id).is_empty(),
        "terraform outlived the gateway"
    );

    // The outcome was stored: the next start has nothing to take over and tells the story.
    let (gateway, _) = gateway.start_again().await;
    assert!(
        !gateway.log().contains("took over the runs"),
        "{}",
        gateway.log()
    );
    let run = gateway.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let twin_now = gateway.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    assert_eq!(gateway.all_events(&token, &run_id).await, events);
    // Gracefully: the creates in flight finished and were saved.
    let in_sandbox = gateway.sandbox_ids(&twin);
    assert!(!in_sandbox.is_empty(), "no create finished");
    assert_eq!(gateway.state_ids(&twin).await, in_sandbox);
    stop(gateway).await;
}

#[tokio::test]
async fn an_apply_past_its_time_limit_is_stopped_and_the_run_fails_saying_so() {
    let app = spawn_run_app_with(|s| s.timeouts.apply = Duration::from_secs(3)).await;
    let token = app.admin_token.clone();
    let resources = [Res::new("quick", 0), Res::new("slow", 10_000)];
    let twin = app
        .create_sandbox_twin(&token, "too slow", &sandbox_config(&resources))
        .await;

    let events = app
        .run_streamed(&token, &twin, "deploy")
        .await
        .read_to_end()
        .await;

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(stages(&events), ["initializing", "planning", "applying"]);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed", "{finished}");
    assert_eq!(finished["twin_status"], "error");
    let error = finished["error"].as_str().unwrap();
    assert!(
        error.contains("terraform apply timed out after 3 s") && error.contains("gracefully"),
        "{error}"
    );
    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], error);
    let twin_now = app.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
}

/// A terraform that waits while `gate` exists, then runs the real one: holds a run in its
/// slot for as long as a test needs.
fn gated_terraform(dir: &Path, gate: &Path) -> PathBuf {
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bin/terraform");
    let program = dir.join("terraform");
    let script = format!(
        "#!/bin/bash\nwhile [ -e '{gate}' ]; do sleep 0.05; done\nexec '{real}' \"$@\"\n",
        gate = gate.display(),
        real = real.display()
    );
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

/// A gateway with one run slot whose terraform waits while `gate` exists, and two twins.
struct OneSlot {
    _tools: tempfile::TempDir,
    gate: PathBuf,
    app: RunApp,
    token: String,
    first: String,
    second: String,
}

async fn one_slot() -> OneSlot {
    let tools = tempfile::tempdir().unwrap();
    let gate = tools.path().join("hold");
    std::fs::write(&gate, "").unwrap();
    let terraform = gated_terraform(tools.path(), &gate);
    let app = spawn_run_app_with(|s| {
        s.max_concurrent_runs = 1;
        s.terraform = Some(terraform);
    })
    .await;
    let token = app.admin_token.clone();
    let first = app
        .create_sandbox_twin(&token, "first", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let second = app
        .create_sandbox_twin(&token, "second", &sandbox_config(&[Res::new("b", 0)]))
        .await;
    OneSlot {
        _tools: tools,
        gate,
        app,
        token,
        first,
        second,
    }
}

#[tokio::test]
async fn with_one_slot_a_second_deploy_waits_as_pending_then_runs_after_the_first() {
    let OneSlot {
        _tools,
        gate,
        app,
        token,
        first,
        second,
    } = one_slot().await;

    // The first run takes the only slot; its terraform waits at the gate.
    let mut first_stream = app.run_streamed(&token, &first, "deploy").await;
    let mut first_events = Vec::new();
    let initializing = first_stream
        .read_until(&mut first_events, |e| {
            e.event == "stage" && e.json()["stage"] == "initializing"
        })
        .await;
    assert!(initializing, "{first_events:?}");

    let second_run = app.start_run_ok(&token, &second, "deploy").await;
    let mut second_stream = app
        .subscribe(&token, &second_run, crate::run_helpers::Cursor::None)
        .await;
    let mut second_events = Vec::new();
    let queued = second_stream
        .read_until(&mut second_events, |e| e.event == "queue")
        .await;
    assert!(queued, "{second_events:?}");
    // Waiting in the queue, the run holds the twin's lock but has not moved it yet.
    assert_eq!(statuses(&second_events), Vec::<String>::new());
    assert_eq!(stages(&second_events), ["queued"]);
    assert_eq!(second_events.last().unwrap().json()["position"], 1);
    let waiting = app.get_run_ok(&token, &second_run).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["queue_position"], 1, "{waiting}");
    let second_twin = app.get_twin_ok(&token, &second).await;
    assert_eq!(
        second_twin["is_locked"], true,
        "a waiting run holds its twin"
    );
    assert_eq!(second_twin["deployment_status"], "draft", "{second_twin}");
    let first_run = first_events.last().unwrap().json()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let working = app.get_run_ok(&token, &first_run).await;
    assert_eq!(working["status"], "processing", "{working}");
    assert_eq!(working["queue_position"], Value::Null, "{working}");
    // One works, one waits: the metrics count them apart.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("terrastream_runs_active 1\n"), "{metrics}");
    assert!(
        metrics.contains("terrastream_runs_pending 1\n"),
        "{metrics}"
    );

    std::fs::remove_file(&gate).unwrap();
    first_events.extend(first_stream.read_to_end().await);
    second_events.extend(second_stream.read_to_end().await);

    assert_eq!(done(&first_events)["outcome"], "succeeded");
    assert_well_formed(&second_events, &second_run);
    assert_eq!(done(&second_events)["outcome"], "succeeded");
    assert_eq!(
        stages(&second_events),
        ["queued", "initializing", "planning", "applying", "complete"]
    );
    // The second terraform printed its first line after the first run's last one.
    let log_times = |events: &[SseEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.event == "log")
            .map(|e| e.json()["ts"].as_str().unwrap().to_owned())
            .collect()
    };
    let (first_times, second_times) = (log_times(&first_events), log_times(&second_events));
    assert!(
        first_times.last().unwrap() < second_times.first().unwrap(),
        "{first_times:?} {second_times:?}"
    );
    let ran = app.get_run_ok(&token, &second_run).await;
    assert_eq!(ran["status"], "completed");
    assert_eq!(ran["queue_position"], Value::Null);
    assert_eq!(statuses(&second_events), ["deploying", "deployed"]);
    assert_eq!(app.sandbox_ids(&second).len(), 1);
}

/// A run cancelled while it waits for a slot never ran terraform, so it changes nothing: the
/// twin stays where it was (draft, no history move), unlocked, and the answer says so.
#[tokio::test]
async fn cancelling_a_queued_run_ends_it_at_once_and_leaves_the_twin_as_it_was() {
    let OneSlot {
        _tools,
        gate,
        app,
        token,
        first,
        second,
    } = one_slot().await;
    let first_run = app.start_run_ok(&token, &first, "deploy").await;
    let second_run = app.start_run_ok(&token, &second, "deploy").await;
    let queued = app.get_run_ok(&token, &second_run).await;
    assert_eq!(queued["status"], "pending", "{queued}");

    let response = app.cancel_run(&token, &second).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer = json_body(response).await;
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("waiting for a slot"), "{answer}");
    assert!(!message.contains("asked to stop"), "{answer}");

    let events = app.all_events(&token, &second_run).await;
    assert_eq!(statuses(&events), Vec::<String>::new());
    let finished = done(&events);
    assert_eq!(finished["outcome"], "cancelled", "{finished}");
    assert_eq!(finished["twin_status"], "draft", "{finished}");
    assert!(
        finished["error"]
            .as_str()
            .is_some_and(|e| e.contains("before it started")),
        "{finished}"
    );
    let twin = app.get_twin_ok(&token, &second).await;
    assert_eq!(twin["deployment_status"], "draft", "{twin}");
    assert_eq!(twin["is_locked"], false, "{twin}");
    let history = app.history_ok(&token, &second).await;
    assert!(
        history.iter().all(|row| row["action"] != "status_changed"),
        "{history:#?}"
    );
    assert!(app.sandbox_ids(&second).is_empty());

    // The twin can be deployed at once, and the first run was never disturbed.
    std::fs::remove_file(&gate).unwrap();
    let first = app.wait_for_run(&token, &first_run).await;
    assert_eq!(first["status"], "completed", "{first}");
    app.run_ok(&token, &second, "deploy").await;
}

/// Deploys `twin` to its end and returns the events, failing unless the run failed; the twin
/// must be left in error and unlocked.
async fn failed_deploy(app: &TestApp, twin: &str) -> (Vec<SseEvent>, String) {
    let token = &app.admin_token;
    let events = app
        .run_streamed(token, twin, "deploy")
        .await
        .read_to_end()
        .await;
    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed", "{finished}");
    assert_eq!(finished["twin_status"], "error", "{finished}");
    let error = finished["error"].as_str().expect("an error").to_owned();
    let run = app.get_run_ok(token, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"], error.as_str(), "{run}");
    let twin_now = app.get_twin_ok(token, twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    (events, error)
}

#[tokio::test]
async fn a_missing_terraform_fails_the_run_naming_the_path_and_the_flag() {
    let app = spawn_run_app_with(|s| s.terraform = Some("/nonexistent".into())).await;
    let twin = app
        .create_sandbox_twin(
            &app.admin_token,
            "no terraform",
            &sandbox_config(&[Res::new("a", 0)]),
        )
        .await;

    let (_, error) = failed_deploy(&app, &twin).await;

    assert!(error.contains("/nonexistent"), "{error}");
    assert!(error.contains("--terraform"), "{error}");
}

#[tokio::test]
async fn a_terraform_that_is_not_executable_fails_the_run_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let terraform = dir.path().join("terraform");
    std::fs::write(&terraform, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&terraform, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = terraform.display().to_string();
    let app = spawn_run_app_with(|s| s.terraform = Some(terraform)).await;
    let twin = app
        .create_sandbox_twin(
            &app.admin_token,
            "not executable",
            &sandbox_config(&[Res::new("a", 0)]),
        )
        .await;

    let (_, error) = failed_deploy(&app, &twin).await;

    assert!(error.contains(&path), "{error}");
    assert!(error.contains("not an executable file"), "{error}");
}

#[tokio::test]
async fn an_unwritable_working_directory_fails_the_run_saying_so() {
    let app = spawn_run_app().await;
    let twin = app
        .create_sandbox_twin(
            &app.admin_token,
            "no room",
            &sandbox_config(&[Res::new("a", 0)]),
        )
        .await;
    // A file where the twin's working directory belongs (tests run as root, which file modes
    // would not stop).
    let work = app.work_dir(&twin);
    std::fs::create_dir_all(work.parent().unwrap()).unwrap();
    std::fs::write(&work, "in the way").unwrap();

    let (events, error) = failed_deploy(&app, &twin).await;

    assert!(
        error.contains("cannot prepare the working directory"),
        "{error}"
    );
    assert!(error.contains(&twin), "{error}");
    assert_eq!(stages(&events), ["initializing"]);
    assert!(app.sandbox_ids(&twin).is_empty());
}

#[tokio::test]
async fn a_configuration_that_does_not_parse_fails_the_run_naming_the_problem() {
    let app = spawn_run_app().await;
    let broken = "resource \"sandbox_resource\" \"x\" {\n  name = \n}\n";
    let twin = app
        .create_sandbox_twin(&app.admin_token, "unparsable", broken)
        .await;

    let (events, error) = failed_deploy(&app, &twin).await;

    // The summary of terraform init's diagnostic, not just its exit code.
    assert_eq!(error, "terraform init failed: Invalid expression");
    crate::run_helpers::log_index(&events, "Error: Invalid expression");
    assert_eq!(stages(&events), ["initializing"]);
}

#[tokio::test]
async fn a_database_held_busy_during_a_deploy_delays_it_and_loses_nothing() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [Res::new("a", 300), Res::new("b", 600)];
    let twin = app
        .create_sandbox_twin(&token, "busy", &sandbox_config(&resources))
        .await;
    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = Vec::new();
    let planning = stream
        .read_until(&mut events, |e| {
            e.event == "stage" && e.json()["stage"] == "planning"
        })
        .await;
    assert!(planning, "{events:?}");

    // Another process's write transaction holds the database for two seconds, while terraform
    // plans and applies (taking and writing its state through the gateway).
    let holder = crate::database_helpers::hold_writes(&app, Duration::from_secs(2)).await;
    events.extend(stream.read_to_end().await);
    holder.await.unwrap();

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(
        done(&events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&events)
    );
    assert_eq!(
        stages(&events),
        ["initializing", "planning", "applying", "complete"]
    );
    assert_eq!(app.all_events(&token, &run_id).await, events);
    assert_eq!(app.sandbox_ids(&twin).len(), 2);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
}

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    let status = response.status();
    (status, json_body(response).await)
}

#[tokio::test]
async fn while_events_cannot_be_stored_readyz_is_503_and_the_run_keeps_every_event() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [Res::new("a", 200), Res::new("b", 400)];
    let twin = app
        .create_sandbox_twin(&token, "disk full", &sandbox_config(&resources))
        .await;
    assert_eq!(readiness(&app).await.0, StatusCode::OK);

    // Simulates a full disk for the event store only: a trigger (made on this test's own
    // connection to the gateway's database) makes every insert into run_events fail with the
    // database's "disk is full" error, as a full filesystem would, while the rest of the
    // database (runs, twins, terraform state) keeps working.
    let failing = crate::database_helpers::fail_event_inserts(&app);

    let run_id = app.start_run_ok(&token, &twin, "deploy").await;
    let deadline = Instant::now() + PATIENCE;
    let problems = loop {
        let (status, body) = readiness(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(problems["status"], "not_ready");
    assert!(
        problems["problems"].to_string().contains("event store"),
        "{problems}"
    );
    assert_eq!(app.health_check().await.status(), StatusCode::OK);
    // The rest of the database still answers; the run cannot end before its end is stored.
    let run = app.get_run_ok(&token, &run_id).await;
    assert!(
        run["status"] == "pending" || run["status"] == "processing",
        "{run}"
    );

    // Space again: the writer's retries store everything it kept.
    failing.heal();
    let events = app.all_events(&token, &run_id).await;
    assert_well_formed(&events, &run_id);
    assert_eq!(
        done(&events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&events)
    );
    assert_eq!(
        stages(&events),
        ["initializing", "planning", "applying", "complete"]
    );
    assert_eq!(statuses(&events), ["deploying", "deployed"]);
    for name in ["a", "b"] {
        crate::run_helpers::log_index(
            &events,
            &format!("sandbox_resource.{name}: Creation complete"),
        );
    }
    assert_eq!(readiness(&app).await.0, StatusCode::OK);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
}

#[tokio::test]
async fn a_silent_terraform_gets_a_warning_on_the_stream() {
    let app = spawn_run_app_with(|s| s.silence_warning = Duration::from_secs(2)).await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "quiet", &sandbox_config(&[Res::new("quiet", 8000)]))
        .await;

    let events = app
        .run_streamed(&token, &twin, "deploy")
        .await
        .read_to_end()
        .await;

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(done(&events)["outcome"], "succeeded");
    // Between the create's start and its end terraform says nothing for 8 s.
    let creating = crate::run_helpers::log_index(&events, "sandbox_resource.quiet: Creating...");
    let created =
        crate::run_helpers::log_index(&events, "sandbox_resource.quiet: Creation complete");
    let warnings: Vec<Value> = events[creating..created]
        .iter()
        .filter(|e| e.event == "warning")
        .map(SseEvent::json)
        .collect();
    assert!(!warnings.is_empty(), "{:#?}", &events[creating..created]);
    for warning in &warnings {
        let message = warning["message"].as_str().unwrap();
        assert!(
            message.starts_with("terraform has printed nothing for "),
            "{message}"
        );
    }
}

#[tokio::test]
async fn metrics_count_the_deploy_and_its_stored_events_and_readyz_is_200() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let (status, body) = readiness(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let twin = app
        .create_sandbox_twin(&token, "counted", &sandbox_config(&[Res::new("a", 0)]))
        .await;

    let run_id = app.run_ok(&token, &twin, "deploy").await;
    let events = app.all_events(&token, &run_id).await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "terrastream_runs_total{kind=\"deploy\",outcome=\"succeeded\"} 1"),
        "{text}"
    );
    let stored: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("terrastream_events_stored_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stored events counter: {text}"));
    // This gateway's only run: every one of its events was stored once.
    assert_eq!(stored, events.len() as u64, "{text}");
    assert_eq!(readiness(&app).await.0, StatusCode::OK);
}
