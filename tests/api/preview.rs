//! Issue 8, the runner side: `terraform validate` of a twin, plan previews (a run that neither
//! moves nor locks the twin, whose kept plan the next deploy applies while it is current), drift
//! checks started by a refresh, and the state lock between previews and deploys.
//! Real terraform from `tools/`, the sandbox provider, the demo twin at `base_delay_ms = 20`.
//! To act while terraform certainly holds the state lock, a test swaps an object's file for a
//! named pipe (`Gate`): terraform's refresh of that object waits until the test releases it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use terrastream::domain::TwinId;
use terrastream::state::MASK;

use crate::database_helpers::database_bytes;
use crate::helpers::{json_body, TestApp};
use crate::run_helpers::{
    assert_well_formed, done, lines, sandbox_config, spawn_run_app, spawn_run_app_with,
    stage_lines, stages, statuses, Cursor, SseEvent, SseStream,
};
use crate::state_helpers::{contains, infrastructure};

/// The demo twin's resources, as terraform addresses them.
const DEMO_ADDRESSES: [&str; 12] = [
    "sandbox_resource.aggregate_fn",
    "sandbox_resource.alerts_fn",
    "sandbox_resource.dashboards",
    "sandbox_resource.grafana",
    "sandbox_resource.ingest_fn",
    "sandbox_resource.iot_hub",
    r#"sandbox_resource.line["line-a"]"#,
    r#"sandbox_resource.line["line-b"]"#,
    "sandbox_resource.registry_db",
    "sandbox_resource.telemetry_db",
    "sandbox_resource.twin",
    "sandbox_resource.twin_model",
];

/// The log line a deploy prints when it applies a kept preview.
const PREVIEWED: &str = "Applying the plan previewed in run";

fn demo_files() -> Value {
    json!({
        "main.tf": include_str!("../../examples/demo/main.tf"),
        "variables.tf": include_str!("../../examples/demo/variables.tf"),
        "outputs.tf": include_str!("../../examples/demo/outputs.tf"),
    })
}

/// The demo's variables for tests: fast, with the Grafana instance titled `title`.
fn demo_variables(title: &str) -> Value {
    json!({ "base_delay_ms": 20, "dashboard_title": title })
}

async fn create_twin_with(app: &TestApp, name: &str, files: Value, variables: Value) -> String {
    let body =
        json!({ "name": name, "provider": "sandbox", "files": files, "variables": variables });
    let response = app.create_twin(&app.admin_token, &body).await;
    let status = response.status();
    let twin = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "create failed: {twin}");
    twin["id"].as_str().expect("a twin id").to_owned()
}

async fn create_demo_twin(app: &TestApp, name: &str) -> String {
    create_twin_with(app, name, demo_files(), demo_variables("operations")).await
}

/// `PUT /twins/{id}` with new variables, failing unless 200.
async fn set_variables(app: &TestApp, twin_id: &str, variables: Value) {
    let body = json!({ "variables": variables });
    let response = app.update_twin(&app.admin_token, twin_id, &body).await;
    let status = response.status();
    let twin = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "PUT variables: {twin}");
    assert_eq!(twin["variables"], variables);
}

/// `POST /twins/{id}/{action}` (validate, refresh) as JSON, failing unless 200.
async fn post_ok(app: &TestApp, twin_id: &str, action: &str) -> Value {
    let path = format!("/twins/{twin_id}/{action}");
    let response = app
        .request(Method::POST, &path, &app.admin_token)
        .send()
        .await
        .expect("the request failed to send");
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
    body
}

/// `POST /twins/{id}/validate`, checking the response's shape on the way.
async fn validate(app: &TestApp, twin_id: &str) -> Value {
    let report = post_ok(app, twin_id, "validate").await;
    let keys: BTreeSet<&str> = report
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["valid", "errors", "warnings"]),
        "{report}"
    );
    assert!(report["valid"].is_boolean(), "{report}");
    for list in ["errors", "warnings"] {
        for diagnostic in report[list].as_array().expect("a list of diagnostics") {
            let keys: BTreeSet<&str> = diagnostic
                .as_object()
                .expect("a diagnostic object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["summary", "detail", "file", "line", "column"]),
                "{diagnostic}"
            );
            assert!(diagnostic["summary"].is_string(), "{diagnostic}");
        }
    }
    report
}

/// 1-based number of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> u64 {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(found.len(), 1, "{needle:?} must be on exactly one line");
    found[0] as u64
}

/// Runs a plan preview to its end without a stream (the 202 form); returns `GET /runs/{id}`.
async fn preview(app: &TestApp, twin_id: &str) -> Value {
    let token = &app.admin_token;
    let run_id = app.start_run_ok(token, twin_id, "plan").await;
    let run = app.wait_for_run(token, &run_id).await;
    assert_eq!(run["kind"], "plan", "{run}");
    assert_eq!(run["status"], "completed", "the preview failed: {run}");
    run
}

/// Runs a deploy to its end, failing unless it succeeded; returns its events.
async fn deploy(app: &TestApp, twin_id: &str) -> Vec<SseEvent> {
    let token = &app.admin_token;
    let run_id = app.run_ok(token, twin_id, "deploy").await;
    app.all_events(token, &run_id).await
}

/// The twin's sandbox objects by id.
fn objects(app: &TestApp, twin_id: &str) -> BTreeMap<String, Value> {
    app.sandbox_objects(twin_id)
        .into_iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o))
        .collect()
}

/// `(address, action)` of a plan's changes, sorted.
fn changes(run: &Value) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = run["result"]["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.changes: {run}"))
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

/// A sandbox object whose file is swapped for a named pipe: the provider, reading the object
/// (terraform refreshing it, with the state lock held), blocks until the test lets it through.
/// Dropping the gate without releasing it ends the provider's read with nothing (an error
/// in the run, never a hang).
struct Gate {
    path: PathBuf,
    content: Vec<u8>,
    /// Our end of the pipe, opened read-write so that opening it never blocks.
    pipe: std::fs::File,
}

impl Gate {
    /// Swaps the file of the twin's object named `name` for a pipe.
    fn shut(app: &TestApp, twin_id: &str, name: &str) -> Gate {
        let object = app
            .sandbox_objects(twin_id)
            .into_iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no sandbox object named {name}"));
        let path = app
            .sandbox_dir(twin_id)
            .join(format!("{}.json", object["id"].as_str().unwrap()));
        let content = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("cannot run mkfifo");
        assert!(made.success(), "mkfifo {} failed", path.display());
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        Gate {
            path,
            content,
            pipe,
        }
    }

    /// Puts the object back as a regular file, then hands a waiting reader its content.
    fn release(self) {
        let Gate {
            path,
            content,
            mut pipe,
        } = self;
        let temporary = path.with_extension("restored");
        std::fs::write(&temporary, &content).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
        pipe.write_all(&content).unwrap();
    }
}

/// Reads `stream` until a log line contains `text`, failing if it ends first.
async fn read_until_line(stream: &mut SseStream, seen: &mut Vec<SseEvent>, text: &str) {
    let found = stream
        .read_until(seen, |e| e.line().is_some_and(|l| l.contains(text)))
        .await;
    assert!(
        found,
        "the stream ended without a line containing {text:?}: {:#?}",
        lines(seen)
    );
}

/// A deploy of a deployed demo twin (renaming its Grafana) held inside its plan, state lock
/// taken: its provider blocks reading the registry database's object until `gate` is released.
struct HeldDeploy {
    run_id: String,
    stream: SseStream,
    seen: Vec<SseEvent>,
    gate: Gate,
}

async fn hold_a_deploy(app: &TestApp, twin_id: &str) -> HeldDeploy {
    let token = &app.admin_token;
    set_variables(app, twin_id, demo_variables("ops")).await;
    let gate = Gate::shut(app, twin_id, "factory-7-registry");
    let run_id = app.start_run_ok(token, twin_id, "deploy").await;
    let mut stream = app.subscribe(token, &run_id, Cursor::None).await;
    let mut seen = Vec::new();
    // terraform refreshes with the state locked; this refresh cannot end until the release.
    read_until_line(
        &mut stream,
        &mut seen,
        "sandbox_resource.registry_db: Refreshing state...",
    )
    .await;
    HeldDeploy {
        run_id,
        stream,
        seen,
        gate,
    }
}

impl HeldDeploy {
    /// Lets the deploy go on and reads it to its end, failing unless it succeeded.
    async fn finish(self) -> Vec<SseEvent> {
        let HeldDeploy {
            run_id,
            mut stream,
            mut seen,
            gate,
        } = self;
        gate.release();
        seen.extend(stream.read_to_end().await);
        assert_well_formed(&seen, &run_id);
        assert_eq!(done(&seen)["outcome"], "succeeded", "{:#?}", lines(&seen));
        seen
    }
}

/// After a deploy that renamed the demo's Grafana to `ops`: what exists is what the state
/// holds, and the twin is deployed and unlocked.
async fn assert_renamed_and_deployed(app: &TestApp, twin_id: &str) {
    let objects = app.sandbox_objects(twin_id);
    assert_eq!(objects.len(), 12);
    assert!(objects.iter().any(|o| o["name"] == "factory-7-ops"));
    assert!(objects.iter().all(|o| o["status"] == "ready"));
    assert_eq!(app.sandbox_ids(twin_id), app.state_ids(twin_id).await);
    let shown = app.get_twin_ok(&app.admin_token, twin_id).await;
    assert_eq!(shown["deployment_status"], "deployed");
    assert_eq!(shown["is_locked"], false);
}

#[tokio::test]
async fn validation_locates_syntax_errors_and_undeclared_variables_and_passes_the_demo() {
    let app = spawn_run_app().await;
    let providers = sandbox_config(&[]);

    // A syntax error: a block body where an attribute lacks its `=`.
    let broken = "resource \"sandbox_resource\" \"a\" {\n  name = \"a\"\n  kind \"test\"\n}\n";
    let twin = create_twin_with(
        &app,
        "syntax",
        json!({ "main.tf": providers, "broken.tf": broken }),
        json!({}),
    )
    .await;
    let report = validate(&app, &twin).await;
    assert_eq!(report["valid"], false, "{report}");
    let errors = report["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{report}");
    for error in errors {
        assert_eq!(error["file"], "broken.tf", "{report}");
        assert_eq!(error["line"], line_of(broken, "kind \"test\""), "{report}");
        assert!(error["column"].as_u64().is_some(), "{report}");
    }

    // A preview of it fails, and leaves the twin as it was: a preview never moves a twin.
    let failed = app
        .wait_for_run(
            &app.admin_token,
            &app.start_run_ok(&app.admin_token, &twin, "plan").await,
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let shown = app.get_twin_ok(&app.admin_token, &twin).await;
    assert_eq!(shown["deployment_status"], "draft");
    assert_eq!(shown["is_locked"], false);

    // A reference to a variable nobody declared, in a file of its own.
    let resources =
        "resource \"sandbox_resource\" \"a\" {\n  name = var.nowhere\n  kind = \"test\"\n}\n";
    let twin = create_twin_with(
        &app,
        "undeclared",
        json!({ "main.tf": providers, "resources.tf": resources }),
        json!({}),
    )
    .await;
    let report = validate(&app, &twin).await;
    assert_eq!(report["valid"], false, "{report}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["file"], "resources.tf", "{report}");
    assert_eq!(
        errors[0]["line"],
        line_of(resources, "var.nowhere"),
        "{report}"
    );
    assert!(
        errors[0]["summary"]
            .as_str()
            .unwrap()
            .contains("undeclared input variable"),
        "{report}"
    );
    assert!(
        errors[0]["detail"].as_str().unwrap().contains("nowhere"),
        "{report}"
    );

    // The demo is valid.
    let twin = create_demo_twin(&app, "demo").await;
    let report = validate(&app, &twin).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");

    // Validation neither moves, locks nor deploys anything.
    let shown = app.get_twin_ok(&app.admin_token, &twin).await;
    assert_eq!(shown["deployment_status"], "draft");
    assert_eq!(shown["is_locked"], false);
    assert!(app.sandbox_ids(&twin).is_empty());
    let runs = json_body(app.twin_runs(&app.admin_token, &twin).await).await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
}

#[tokio::test]
async fn validating_a_twin_while_it_deploys_leaves_the_deploy_intact() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "busy").await;

    // Both start together: validation's init beside the deploy's.
    let run_id = app.start_run_ok(&token, &twin, "deploy").await;
    let (report, events) = tokio::join!(validate(&app, &twin), app.all_events(&token, &run_id));
    assert_eq!(report["valid"], true, "{report}");
    assert_well_formed(&events, &run_id);
    assert_eq!(
        done(&events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&events)
    );

    let ids = app.sandbox_ids(&twin);
    assert_eq!(ids.len(), 12);
    assert_eq!(ids, app.state_ids(&twin).await);

    // And while the next deploy is held inside its plan: certainly during it.
    let held = hold_a_deploy(&app, &twin).await;
    let report = validate(&app, &twin).await;
    assert_eq!(report["valid"], true, "{report}");
    let during = app.get_twin_ok(&token, &twin).await;
    assert_eq!(during["deployment_status"], "deploying");
    assert_eq!(during["active_job_id"], held.run_id.as_str());
    held.finish().await;
    assert_renamed_and_deployed(&app, &twin).await;
}

#[tokio::test]
async fn a_preview_of_a_new_twin_lists_every_create_and_neither_moves_nor_locks_it() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "new").await;

    let mut stream = app.run_streamed(&token, &twin, "plan").await;
    let mut events = Vec::new();
    let planning = stream
        .read_until(&mut events, |e| {
            e.event == "stage" && e.json()["stage"] == "planning"
        })
        .await;
    assert!(planning, "no planning stage: {events:?}");
    let during = app.get_twin_ok(&token, &twin).await;
    assert_eq!(during["deployment_status"], "draft");
    assert_eq!(during["is_locked"], false);
    events.extend(stream.read_to_end().await);

    let run_id = done(&events)["job_id"].as_str().unwrap().to_owned();
    assert_well_formed(&events, &run_id);
    assert_eq!(stages(&events), ["initializing", "planning", "complete"]);
    assert!(statuses(&events).is_empty(), "a preview moved the twin");
    let finished = done(&events);
    assert_eq!(finished["outcome"], "succeeded", "{:#?}", lines(&events));
    assert_eq!(finished["twin_status"], "draft");

    let after = app.get_twin_ok(&token, &twin).await;
    assert_eq!(after["deployment_status"], "draft");
    assert_eq!(after["is_locked"], false);
    assert!(app
        .history_ok(&token, &twin)
        .await
        .iter()
        .all(|h| { h["to_status"].as_str().is_none_or(|s| s == "draft") }));

    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["kind"], "plan");
    assert_eq!(run["status"], "completed");
    let expected: Vec<(String, String)> = DEMO_ADDRESSES
        .iter()
        .map(|a| ((*a).to_owned(), "create".to_owned()))
        .collect();
    assert_eq!(changes(&run), expected);
    let summary = &run["result"]["summary"];
    assert_eq!(summary["add"], 12, "{run}");
    assert_eq!(summary["change"], 0, "{run}");
    assert_eq!(summary["remove"], 0, "{run}");
    let after_apply = run["result"]["resources_after"].as_array().unwrap();
    let addresses: BTreeSet<&str> = after_apply
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, DEMO_ADDRESSES.into_iter().collect());
    for resource in after_apply {
        assert_eq!(resource["type"], "sandbox_resource");
        assert_eq!(resource["actions"], json!(["create"]));
        let attributes = &resource["attributes"];
        assert!(attributes["name"].is_string() && attributes["kind"].is_string());
        // The secret is generated at apply: unknown now, and never shown if it were known.
        assert!(
            attributes.get("secret").is_none_or(|s| s == MASK),
            "{resource}"
        );
    }

    // A preview creates nothing and leaves no state and no plan file in clear.
    assert!(app.sandbox_ids(&twin).is_empty());
    assert_eq!(
        infrastructure(&app, &twin).await["terraform_state_exists"],
        false
    );
    assert!(!app
        .settings
        .data_dir
        .join("previews")
        .join(&run_id)
        .exists());

    // The 202 form: the same preview, found through its job id.
    let again = preview(&app, &twin).await;
    assert_ne!(again["job_id"], run_id.as_str());
    assert_eq!(changes(&again), expected);
    assert_eq!(again["result"]["summary"]["add"], 12);
    let after = app.get_twin_ok(&token, &twin).await;
    assert_eq!(after["deployment_status"], "draft");
    assert_eq!(after["is_locked"], false);
}

#[tokio::test]
async fn a_deploy_applies_the_current_preview_exactly_once() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "rename").await;
    deploy(&app, &twin).await;
    let before = objects(&app, &twin);
    assert_eq!(before.len(), 12);

    set_variables(&app, &twin, demo_variables("ops")).await;
    let plan = preview(&app, &twin).await;
    let plan_id = plan["job_id"].as_str().unwrap().to_owned();
    let planned = changes(&plan);
    let replaced: Vec<&(String, String)> = planned.iter().filter(|(_, a)| a == "replace").collect();
    assert_eq!(
        replaced,
        [&("sandbox_resource.grafana".to_owned(), "replace".to_owned())],
        "{planned:?}"
    );
    // The dashboards point at Grafana's endpoint, which has the new name in it: updated in
    // place, not replaced. Nothing else changes.
    assert_eq!(
        planned,
        [
            (
                "sandbox_resource.dashboards".to_owned(),
                "update".to_owned()
            ),
            ("sandbox_resource.grafana".to_owned(), "replace".to_owned()),
        ]
    );
    let summary = &plan["result"]["summary"];
    assert_eq!(
        (&summary["add"], &summary["change"], &summary["remove"]),
        (&json!(1), &json!(1), &json!(1)),
        "{plan}"
    );

    // Every generated secret exists in the sandbox; none is shown by the preview, nor kept in
    // clear in the database.
    let secrets: Vec<String> = before
        .values()
        .map(|o| o["secret"].as_str().unwrap().to_owned())
        .collect();
    let plan_events = app.all_events(&token, &plan_id).await;
    let shown = format!("{plan} {plan_events:?}");
    let database = database_bytes(&app);
    for secret in &secrets {
        assert!(!shown.contains(secret.as_str()), "a secret in the preview");
        assert!(
            !contains(&database, secret),
            "a secret in clear in the database"
        );
    }
    let resources_after = plan["result"]["resources_after"].as_array().unwrap();
    assert_eq!(resources_after.len(), 12);
    let telemetry = resources_after
        .iter()
        .find(|r| r["address"] == "sandbox_resource.telemetry_db")
        .unwrap();
    assert_eq!(telemetry["attributes"]["secret"], MASK, "{telemetry}");
    assert_eq!(telemetry["actions"], json!(["no-op"]));
    // Only what terraform marks sensitive is masked: the properties map holds nothing
    // sensitive (terraform marks it `{}`), so the user can review it.
    for resource in resources_after {
        let properties = &resource["attributes"]["properties"];
        assert!(properties.is_object(), "{resource}");
        assert!(
            !properties.to_string().contains(MASK),
            "ordinary attributes hidden: {resource}"
        );
    }

    // The deploy applies that plan: no plan of its own.
    let events = deploy(&app, &twin).await;
    let shown_lines = lines(&events);
    let applied: Vec<&String> = shown_lines
        .iter()
        .filter(|l| l.contains(PREVIEWED))
        .collect();
    assert_eq!(applied.len(), 1, "{shown_lines:#?}");
    assert!(
        applied[0].contains(&format!("{PREVIEWED} {plan_id}")),
        "{applied:?}"
    );
    assert_eq!(
        stage_lines(&events, "planning"),
        [applied[0].clone()],
        "the deploy planned again"
    );
    let after = objects(&app, &twin);
    let created: Vec<&String> = after
        .keys()
        .filter(|id| !before.contains_key(*id))
        .collect();
    let removed: Vec<&String> = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(after[created[0]]["kind"], "grafana");
    assert_eq!(after[created[0]]["name"], "factory-7-ops");
    assert_eq!(before[removed[0]]["name"], "factory-7-operations");
    let dashboards = after
        .values()
        .find(|o| o["name"] == "factory-7-dashboards")
        .unwrap();
    assert_eq!(
        dashboards["properties"]["grafana"],
        "https://grafana-factory-7-ops.sandbox.local"
    );
    assert_eq!(
        after.keys().collect::<BTreeSet<_>>(),
        app.state_ids(&twin).await.iter().collect()
    );

    // The kept plan was applied: the next deploy plans afresh, and finds nothing to do.
    let events = deploy(&app, &twin).await;
    let shown_lines = lines(&events);
    assert!(
        shown_lines.iter().all(|l| !l.contains(PREVIEWED)),
        "{shown_lines:#?}"
    );
    assert!(
        shown_lines
            .iter()
            .any(|l| l.contains("Plan: 0 to add, 0 to change, 0 to destroy.")),
        "{events:#?}"
    );
    assert_eq!(
        objects(&app, &twin).keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_preview_made_stale_by_new_variables_is_not_applied() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "stale").await;
    deploy(&app, &twin).await;

    set_variables(&app, &twin, demo_variables("ops")).await;
    let plan = preview(&app, &twin).await;
    assert!(changes(&plan).contains(&("sandbox_resource.grafana".to_owned(), "replace".to_owned())));
    set_variables(&app, &twin, demo_variables("blue")).await;

    let events = deploy(&app, &twin).await;
    let shown_lines = lines(&events);
    assert!(
        shown_lines.iter().all(|l| !l.contains(PREVIEWED)),
        "the stale preview was applied: {shown_lines:#?}"
    );
    let grafanas: Vec<Value> = app
        .sandbox_objects(&twin)
        .into_iter()
        .filter(|o| o["kind"] == "grafana" && o["name"] != "factory-7-dashboards")
        .map(|o| o["name"].clone())
        .collect();
    assert_eq!(grafanas, [json!("factory-7-blue")]);
    let outputs = &app.get_twin_ok(&token, &twin).await["terraform_outputs"];
    assert_eq!(
        outputs["grafana_url"]["value"], "https://grafana-factory-7-blue.sandbox.local",
        "{outputs}"
    );
}

#[tokio::test]
async fn a_refresh_checks_drift_and_reports_what_vanished_outside_terraform() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "drift").await;
    deploy(&app, &twin).await;

    // Undrifted: a check that finds nothing.
    let refreshed = post_ok(&app, &twin, "refresh").await;
    let check = refreshed["drift_job_id"]
        .as_str()
        .expect("a drift check")
        .to_owned();
    let run = app.wait_for_run(&token, &check).await;
    assert_eq!(run["kind"], "drift");
    assert_eq!(run["status"], "completed", "{run}");
    let drift = &infrastructure(&app, &twin).await["drift"];
    assert_eq!(drift["job_id"], check.as_str(), "{drift}");
    assert_eq!(drift["drifted_count"], 0, "{drift}");
    assert_eq!(drift["drifted"], json!([]));
    // In the words of the check's own `done` event.
    let check_events = app.all_events(&app.admin_token, &check).await;
    assert_eq!(drift["outcome"], done(&check_events)["outcome"], "{drift}");
    assert_eq!(drift["outcome"], "succeeded", "{drift}");

    // One object deleted behind terraform's back.
    let registry = app
        .sandbox_objects(&twin)
        .into_iter()
        .find(|o| o["name"] == "factory-7-registry")
        .unwrap();
    let id = registry["id"].as_str().unwrap();
    std::fs::remove_file(app.sandbox_dir(&twin).join(format!("{id}.json"))).unwrap();

    let refreshed = post_ok(&app, &twin, "refresh").await;
    let check = refreshed["drift_job_id"]
        .as_str()
        .expect("a drift check")
        .to_owned();
    assert_eq!(refreshed["events_url"], format!("/runs/{check}/events"));
    let events = app.all_events(&token, &check).await;
    assert_well_formed(&events, &check);
    assert_eq!(
        done(&events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&events)
    );
    assert_eq!(done(&events)["twin_status"], "deployed");
    assert_eq!(
        stages(&events),
        ["initializing", "checking_drift", "complete"]
    );
    assert!(statuses(&events).is_empty(), "a drift check moved the twin");
    let status = infrastructure(&app, &twin).await;
    let drift = &status["drift"];
    assert_eq!(drift["job_id"], check.as_str(), "{drift}");
    assert_eq!(drift["drifted_count"], 1, "{drift}");
    assert_eq!(
        drift["drifted"][0]["address"],
        "sandbox_resource.registry_db"
    );
    assert_eq!(drift["drifted"][0]["action"], "delete");

    // A check only reports: the state still holds the object, the sandbox still lacks it.
    assert_eq!(status["db_status"], "deployed");
    assert_eq!(app.state_ids(&twin).await.len(), 12);
    assert_eq!(app.sandbox_ids(&twin).len(), 11);
}

#[tokio::test]
async fn a_preview_waits_for_the_state_lock_a_deploy_holds_and_succeeds_after() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "locked").await;
    deploy(&app, &twin).await;

    let held = hold_a_deploy(&app, &twin).await;
    let plan_id = app.start_run_ok(&token, &twin, "plan").await;
    let mut plan_stream = app.subscribe(&token, &plan_id, Cursor::None).await;
    let mut plan_events = Vec::new();
    // terraform says so once it has waited for the lock a while.
    read_until_line(&mut plan_stream, &mut plan_events, "Acquiring state lock").await;
    let plan = app.get_run_ok(&token, &plan_id).await;
    assert_eq!(plan["status"], "processing", "{plan}");
    let shown = app.get_twin_ok(&token, &twin).await;
    assert_eq!(shown["active_job_id"], held.run_id.as_str());

    held.finish().await;
    plan_events.extend(plan_stream.read_to_end().await);
    assert_well_formed(&plan_events, &plan_id);
    assert_eq!(
        done(&plan_events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&plan_events)
    );
    // terraform locks per command: the preview took the lock either after the deploy's apply
    // (nothing left to do) or between its plan and its apply (the deploy's own changes), and
    // the apply then waited for it in turn. Both are right; neither may break the deploy.
    let plan = app.get_run_ok(&token, &plan_id).await;
    assert_eq!(plan["status"], "completed");
    let planned = changes(&plan);
    let renamed = [
        (
            "sandbox_resource.dashboards".to_owned(),
            "update".to_owned(),
        ),
        ("sandbox_resource.grafana".to_owned(), "replace".to_owned()),
    ];
    assert!(planned.is_empty() || planned == renamed, "{planned:?}");
    assert_renamed_and_deployed(&app, &twin).await;

    // Whichever it was, that preview is not current: the next deploy plans afresh.
    let before = app.sandbox_ids(&twin);
    let events = deploy(&app, &twin).await;
    assert!(
        lines(&events).iter().all(|l| !l.contains(PREVIEWED)),
        "{:#?}",
        lines(&events)
    );
    assert_eq!(app.sandbox_ids(&twin), before);
}

#[tokio::test]
async fn a_preview_stopped_while_it_holds_the_state_lock_lets_go_of_the_lock() {
    let app = spawn_run_app_with(|s| {
        s.timeouts.plan = Duration::from_secs(10);
        s.cancel_grace = Duration::from_secs(1);
    })
    .await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "stuck").await;
    deploy(&app, &twin).await;

    // The preview's refresh blocks with the state locked, until its time is up and terraform is
    // interrupted, then killed: it cannot unlock the state itself.
    let gate = Gate::shut(&app, &twin, "factory-7-registry");
    let plan_id = app.start_run_ok(&token, &twin, "plan").await;
    let mut stream = app.subscribe(&token, &plan_id, Cursor::None).await;
    let mut events = Vec::new();
    read_until_line(
        &mut stream,
        &mut events,
        "sandbox_resource.registry_db: Refreshing state...",
    )
    .await;
    // Certainly while it runs: the twin is neither moved nor locked by it.
    let during = app.get_twin_ok(&token, &twin).await;
    assert_eq!(during["deployment_status"], "deployed");
    assert_eq!(during["is_locked"], false);
    assert_eq!(during["active_job_id"], Value::Null);
    events.extend(stream.read_to_end().await);
    assert_well_formed(&events, &plan_id);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed", "{:#?}", lines(&events));
    assert!(
        finished["error"].as_str().unwrap().contains("timed out"),
        "{finished}"
    );
    assert_eq!(finished["twin_status"], "deployed");
    gate.release();

    let twin_id: TwinId = twin.parse().unwrap();
    let lock = app.store().state_lock(&twin_id).unwrap();
    assert!(
        lock.is_none(),
        "the preview's state lock was kept: {lock:?}"
    );
    let shown = app.get_twin_ok(&token, &twin).await;
    assert_eq!(shown["deployment_status"], "deployed");
    assert_eq!(shown["is_locked"], false);
    // So the next deploy does not wait for a lock nobody will release.
    deploy(&app, &twin).await;
}

#[tokio::test]
async fn a_preview_is_cancelled_through_its_run_and_the_twin_is_untouched() {
    let app = spawn_run_app_with(|s| s.cancel_grace = Duration::from_secs(30)).await;
    let token = app.admin_token.clone();
    let twin = create_demo_twin(&app, "cancel-preview").await;
    deploy(&app, &twin).await;

    // The preview's refresh blocks on a gated object: certainly running when cancelled.
    let gate = Gate::shut(&app, &twin, "factory-7-registry");
    let plan_id = app.start_run_ok(&token, &twin, "plan").await;
    let mut stream = app.subscribe(&token, &plan_id, Cursor::None).await;
    let mut events = Vec::new();
    read_until_line(
        &mut stream,
        &mut events,
        "sandbox_resource.registry_db: Refreshing state...",
    )
    .await;
    // The twin's own cancel cannot name a preview: it holds no twin lock.
    let by_twin = app
        .client
        .post(format!("{}/twins/{twin}/cancel", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_twin.status(), 409);
    let by_run = app
        .client
        .post(format!("{}/runs/{plan_id}/cancel", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_run.status(), 202);
    let body: Value = by_run.json().await.unwrap();
    assert_eq!(body["job_id"], plan_id.as_str());
    // terraform finishes the refresh it is in before it stops: let it.
    gate.release();
    events.extend(stream.read_to_end().await);
    assert_well_formed(&events, &plan_id);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "cancelled", "{:#?}", lines(&events));
    assert_eq!(finished["twin_status"], "deployed");

    let run = app.get_run_ok(&token, &plan_id).await;
    assert_eq!(run["status"], "cancelled");
    let shown = app.get_twin_ok(&token, &twin).await;
    assert_eq!(shown["deployment_status"], "deployed");
    assert_eq!(shown["is_locked"], false);
    // A finished run cannot be cancelled again.
    let again = app
        .client
        .post(format!("{}/runs/{plan_id}/cancel", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    // Nothing left holding the state: the next deploy goes through.
    deploy(&app, &twin).await;
}
