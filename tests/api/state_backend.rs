//! The gateway as terraform's `http` state backend, with real terraform 1.15.5 as the client:
//! versions written by runs, an admin's own CLI sharing the lock, the serial and lineage rules,
//! encryption at rest, status and refresh read from the stored state, masking, and the
//! recovery of a state terraform could not save.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use terrastream::app::Application;

use crate::database_helpers::database_bytes;
use crate::helpers::{assert_error, json_body, spawn_app, TestApp};
use crate::run_helpers::{
    done, lines, sandbox_config, spawn_run_app, Res, RunApp, SseEvent, SseStream,
};
use crate::state_helpers::{
    backend, backend_state, contains, get_ok, infrastructure, sandbox_addresses, sandbox_secrets,
    versions, Cli,
};

/// A LockInfo as terraform sends it.
fn lock_info(id: &str) -> Value {
    json!({
        "ID": id,
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "tester@host",
        "Version": "1.15.5",
        "Created": "2025-01-01T00:00:00Z",
        "Path": ""
    })
}

/// A state terraform could have written: `count` managed instances of `sandbox_resource`.
fn state_doc(lineage: &str, serial: i64, count: usize) -> Value {
    let resources: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "mode": "managed",
                "type": "sandbox_resource",
                "name": format!("r{i}"),
                "provider": "provider[\"terrastream.local/terrastream/sandbox\"]",
                "instances": [{"schema_version": 0, "attributes": {"id": format!("test-r{i}-0000000{i}")}}]
            })
        })
        .collect();
    json!({
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": serial,
        "lineage": lineage,
        "outputs": {},
        "resources": resources,
        "check_results": null
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

#[tokio::test]
async fn the_backend_refuses_old_serials_and_new_lineages_and_answers_423_with_the_holder() {
    let app = spawn_app().await;
    let token = app.admin_token.clone();
    let twin = app.create_twin_ok(&token, "protocol").await;
    let twin = twin["id"].as_str().unwrap();

    // The seed: serial 0, a lineage, nothing in it.
    let seed = backend_state(&app, twin, &token).await;
    assert_eq!(seed["serial"], 0);
    assert_eq!(seed["resources"], json!([]));
    let lineage = seed["lineage"].as_str().unwrap().to_owned();
    assert_eq!(versions(&app, twin).await.len(), 1);

    let first = state_doc(&lineage, 1, 1);
    let post = |body: &Value, query: &str| {
        let body = bytes(body);
        let path = query.to_owned();
        let (app, token) = (&app, &token);
        async move { backend(app, "POST", twin, &path, token, Some(body)).await }
    };
    assert_eq!(post(&first, "").await.status(), StatusCode::OK);
    assert_eq!(versions(&app, twin).await.len(), 2);

    // A serial going backwards, a new lineage, another state under the same serial: 409.
    let older = state_doc(&lineage, 0, 0);
    assert_error(
        post(&older, "").await,
        StatusCode::CONFLICT,
        "state_conflict",
    )
    .await;
    let foreign = state_doc("00000000-1111-2222-3333-444444444444", 5, 1);
    assert_error(
        post(&foreign, "").await,
        StatusCode::CONFLICT,
        "state_conflict",
    )
    .await;
    let same_serial = state_doc(&lineage, 1, 2);
    assert_error(
        post(&same_serial, "").await,
        StatusCode::CONFLICT,
        "state_conflict",
    )
    .await;
    // The same state again (terraform re-posts an unchanged state): accepted, nothing written.
    assert_eq!(post(&first, "").await.status(), StatusCode::OK);
    let listed = versions(&app, twin).await;
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(backend_state(&app, twin, &token).await, first);

    // LOCK takes the lock; a second LOCK is 423 with the holder's LockInfo as the body.
    let holder = lock_info("lock-a");
    let taken = backend(&app, "LOCK", twin, "/lock", &token, Some(bytes(&holder))).await;
    assert_eq!(taken.status(), StatusCode::OK);
    let refused = backend(
        &app,
        "LOCK",
        twin,
        "/lock",
        &token,
        Some(bytes(&lock_info("lock-b"))),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::LOCKED);
    assert_eq!(json_body(refused).await, holder);

    // POSTs without the holder's ID are 423 with the holder; with it, written.
    let second = state_doc(&lineage, 2, 2);
    for query in ["", "?ID=lock-b"] {
        let response = post(&second, query).await;
        assert_eq!(response.status(), StatusCode::LOCKED, "POST{query}");
        assert_eq!(json_body(response).await, holder);
    }
    assert_eq!(versions(&app, twin).await.len(), 2);
    assert_eq!(post(&second, "?ID=lock-a").await.status(), StatusCode::OK);
    assert_eq!(versions(&app, twin).await.len(), 3);

    // UNLOCK with another ID leaves the lock; with the holder's ID it releases it.
    let wrong = backend(
        &app,
        "UNLOCK",
        twin,
        "/lock",
        &token,
        Some(bytes(&lock_info("lock-b"))),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    assert_eq!(json_body(wrong).await, holder);
    let still = backend(
        &app,
        "LOCK",
        twin,
        "/lock",
        &token,
        Some(bytes(&lock_info("lock-b"))),
    )
    .await;
    assert_eq!(still.status(), StatusCode::LOCKED);
    let released = backend(&app, "UNLOCK", twin, "/lock", &token, Some(bytes(&holder))).await;
    assert_eq!(released.status(), StatusCode::OK);
    let next = backend(
        &app,
        "LOCK",
        twin,
        "/lock",
        &token,
        Some(bytes(&lock_info("lock-b"))),
    )
    .await;
    assert_eq!(next.status(), StatusCode::OK);
    let response = post(&state_doc(&lineage, 3, 0), "?ID=lock-b").await;
    assert_eq!(response.status(), StatusCode::OK);

    let listed = versions(&app, twin).await;
    let serials: Vec<i64> = listed
        .iter()
        .map(|v| v["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(serials, [0, 1, 2, 3]);
    let counts: Vec<i64> = listed
        .iter()
        .map(|v| v["resource_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [0, 1, 2, 0]);
    assert!(listed
        .iter()
        .all(|v| v["run_id"].is_null() && v["lineage"] == lineage.as_str()));
}

/// A twin of two sandbox objects, one slow enough that a test can act while terraform applies.
fn slow_config(slow_ms: u64) -> String {
    sandbox_config(&[Res::new("fast", 0), Res::new("slow", slow_ms)])
}

/// Reads the stream until terraform starts creating `address`: from then on, until it ends,
/// the run's terraform holds the state lock.
async fn until_creating(stream: &mut SseStream, address: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    let wanted = format!("{address}: Creating...");
    let found = stream
        .read_until(&mut seen, |e| e.line().is_some_and(|l| l.contains(&wanted)))
        .await;
    assert!(
        found,
        "the run ended before {wanted:?}: {:#?}",
        lines(&seen)
    );
    seen
}

#[tokio::test]
async fn an_admins_own_terraform_waits_for_the_runs_lock_then_sees_what_the_sandbox_holds() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let main_tf = slow_config(12_000);
    let twin = app
        .create_sandbox_twin(&token, "shared-lock", &main_tf)
        .await;
    let cli = Cli::new(&app, &twin, &token).await;
    cli.init().await;

    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = until_creating(&mut stream, "sandbox_resource.slow").await;
    let before = versions(&app, &twin).await;
    let blocked = cli
        .run(&["plan", "-lock-timeout=0s", "-input=false", "-no-color"])
        .await;
    assert_eq!(blocked.code, Some(1), "{blocked:#?}");
    assert!(
        blocked.stderr.contains("Error acquiring the state lock"),
        "{blocked:#?}"
    );
    // terraform shows the holder's LockInfo: the run's apply.
    assert!(
        blocked.stderr.contains("OperationTypeApply"),
        "{blocked:#?}"
    );
    events.extend(stream.read_to_end().await);
    assert_eq!(
        done(&events)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&events)
    );
    // Still applying when the CLI was refused: the run's apply wrote its state afterwards.
    let written = versions(&app, &twin).await;
    assert!(written.len() > before.len(), "{written:#?}");

    let plan = cli
        .run(&[
            "plan",
            "-lock-timeout=0s",
            "-detailed-exitcode",
            "-input=false",
            "-no-color",
        ])
        .await;
    assert_eq!(plan.code, Some(0), "no changes expected: {plan:#?}");
    let listed = cli.state_list().await;
    assert_eq!(listed, sandbox_addresses(&app, &twin));
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Planning and listing read the state; they write no version.
    assert_eq!(versions(&app, &twin).await, written);
}

/// A chain of three objects: `quick` at once, then `slow` (`slow_ms`), then `after`.
fn chained_config(slow_ms: u64) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    sandbox = {{ source = "terrastream.local/terrastream/sandbox" }}
  }}
}}

resource "sandbox_resource" "quick" {{
  name = "quick"
  kind = "test"
}}

resource "sandbox_resource" "slow" {{
  name            = "slow"
  kind            = "test"
  create_delay_ms = {slow_ms}
  properties      = {{ quick = sandbox_resource.quick.id }}
}}

resource "sandbox_resource" "after" {{
  name       = "after"
  kind       = "test"
  properties = {{ slow = sandbox_resource.slow.id }}
}}
"#
    )
}

#[tokio::test]
async fn a_deploy_writes_versions_and_a_long_apply_persists_while_it_runs() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    // terraform 1.15 persists state during an apply when a resource's state changes at least
    // 20 s after the first change: `quick` starts that clock, `slow` (26 s, started only once
    // `quick` is done) is persisted on its own, and `after` makes the final state differ.
    let twin = app
        .create_sandbox_twin(&token, "long-apply", &chained_config(26_000))
        .await;
    let seed = versions(&app, &twin).await;
    assert_eq!(seed.len(), 1, "{seed:#?}");
    assert_eq!(seed[0]["version"], 1);
    assert_eq!(seed[0]["serial"], 0);
    assert_eq!(seed[0]["resource_count"], 0);
    assert!(seed[0]["run_id"].is_null(), "{seed:#?}");

    let run_id = app.run_ok(&token, &twin, "deploy").await;
    let listed = versions(&app, &twin).await;
    assert_eq!(listed[0], seed[0], "the seed is kept as it was");
    let written = &listed[1..];
    assert!(
        written.iter().all(|v| v["run_id"] == run_id.as_str()),
        "every later version is the run's: {listed:#?}"
    );
    assert!(
        written.len() >= 2,
        "one version during the apply, one at its end: {listed:#?}"
    );
    for pair in listed.windows(2) {
        assert_eq!(pair[1]["version"], pair[0]["version"].as_i64().unwrap() + 1);
        assert!(
            pair[1]["serial"].as_i64() > pair[0]["serial"].as_i64(),
            "{listed:#?}"
        );
        assert_eq!(pair[1]["lineage"], pair[0]["lineage"]);
    }
    // The intermediate version was written while `after` did not exist yet.
    assert!(
        written[..written.len() - 1]
            .iter()
            .any(|v| v["resource_count"] == 2),
        "{listed:#?}"
    );
    let last = listed.last().unwrap();
    assert_eq!(last["resource_count"], 3);
    assert_eq!(app.sandbox_ids(&twin).len(), 3);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
}

#[tokio::test]
async fn state_is_encrypted_at_rest_and_only_the_original_key_opens_it() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    // One twin deployed by the gateway; another applied by an admin's own terraform, whose
    // objects no run log ever named (a run's log lines name the ids it creates).
    let deployed_tf = sandbox_config(&[Res::new("alpha", 0), Res::new("beta", 0)]);
    let deployed = app
        .create_sandbox_twin(&token, "deployed", &deployed_tf)
        .await;
    app.run_ok(&token, &deployed, "deploy").await;
    let cli_tf = sandbox_config(&[Res::new("gamma", 0), Res::new("delta", 0)]);
    let by_cli = app.create_sandbox_twin(&token, "by-cli", &cli_tf).await;
    let cli = Cli::new(&app, &by_cli, &token).await;
    cli.init().await;
    cli.apply().await;
    assert_eq!(app.sandbox_ids(&by_cli).len(), 2);

    let raw = database_bytes(&app);
    let mut secret_texts: Vec<String> = sandbox_secrets(&app, &deployed);
    secret_texts.extend(sandbox_secrets(&app, &by_cli));
    // A twin's non-sensitive outputs are kept beside it, as GET /twins answers them; the rest
    // of its state is only ever stored sealed.
    let outputs = get_ok(&app, &by_cli, "/outputs").await["outputs"].to_string();
    for object in app.sandbox_objects(&by_cli) {
        secret_texts.push(object["id"].as_str().unwrap().to_owned());
        let endpoint = object["endpoint"].as_str().unwrap().to_owned();
        if !outputs.contains(&endpoint) {
            secret_texts.push(endpoint);
        }
    }
    secret_texts.extend(["\"lineage\"".to_owned(), "\"resources\"".to_owned()]);
    for text in &secret_texts {
        assert!(
            !contains(&raw, text),
            "the database holds {text:?} in clear"
        );
    }
    // The encrypted versions are there all the same.
    assert_eq!(
        versions(&app, &by_cli).await.last().unwrap()["resource_count"],
        2
    );
    let before = [
        backend_state(&app, &deployed, &token).await,
        backend_state(&app, &by_cli, &token).await,
    ];
    let before_views = [
        get_ok(&app, &deployed, "/state").await,
        get_ok(&app, &by_cli, "/state").await,
    ];

    // Another key on the same data directory: a clear refusal at start, naming the key.
    let key = std::fs::read_to_string(app.settings.state_key_path()).unwrap();
    let mut wrong = app.settings.clone();
    wrong.state_key = Some("ab".repeat(32));
    let refused = Application::build(wrong)
        .err()
        .expect("a wrong state key must not start");
    let why = format!("{refused:#}");
    assert!(why.contains("state key"), "{why}");
    assert!(why.contains("does not match"), "{why}");
    let mut malformed = app.settings.clone();
    malformed.state_key = Some("not-a-key".into());
    let why = format!(
        "{:#}",
        Application::build(malformed)
            .err()
            .expect("a malformed key")
    );
    assert!(why.contains("state key"), "{why}");

    // The right key, given explicitly: the same state, served as before.
    let mut app = app;
    app.app.settings.state_key = Some(key.trim().to_owned());
    let app = app.restart().await;
    let after = [
        backend_state(&app, &deployed, &token).await,
        backend_state(&app, &by_cli, &token).await,
    ];
    assert_eq!(after, before);
    let after_views = [
        get_ok(&app, &deployed, "/state").await,
        get_ok(&app, &by_cli, "/state").await,
    ];
    assert_eq!(after_views, before_views);
    // The restarted gateway listens on a new port: a CLI pointed at it reads the same state.
    let cli = Cli::new(&app, &by_cli, &token).await;
    cli.init().await;
    assert_eq!(cli.state_list().await, sandbox_addresses(&app, &by_cli));
}

/// The figures of infrastructure-status that must follow the stored state and the twin.
fn figures(status: &Value) -> Value {
    json!({
        "db_status": status["db_status"],
        "resource_count": status["resource_count"],
        "terraform_state_exists": status["terraform_state_exists"],
        "can_deploy": status["can_deploy"],
        "can_destroy": status["can_destroy"],
        "is_locked": status["is_locked"],
    })
}

/// Checks the twin's infrastructure-status against `expected` and the sandbox, then restarts
/// the gateway with no terraform anywhere and checks the very same answer comes back; returns
/// a gateway with terraform again.
async fn status_without_terraform(app: RunApp, twin: &str, expected: Value) -> RunApp {
    let status = infrastructure(&app, twin).await;
    assert_eq!(figures(&status), expected, "{status:#}");
    assert_eq!(
        status["resource_count"],
        app.sandbox_ids(twin).len(),
        "the count is what the sandbox holds"
    );
    let no_tools = tempfile::tempdir().unwrap();
    let mut app = app;
    let terraform = app.app.settings.terraform.take();
    let tools = app.app.settings.tools_dir.take();
    app.app.settings.terraform = Some("/nonexistent/terraform".into());
    app.app.settings.tools_dir = Some(no_tools.path().to_path_buf());
    let mut app = app.restart().await;
    assert_eq!(infrastructure(&app, twin).await, status);
    // This gateway has no terraform at all: a run on another twin fails to find one.
    let token = app.admin_token.clone();
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let name = format!("probe-{}", PROBES.fetch_add(1, Ordering::Relaxed));
    let probe = app
        .create_sandbox_twin(&token, &name, &sandbox_config(&[]))
        .await;
    let run_id = app.start_run_ok(&token, &probe, "deploy").await;
    let run = app.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["result"]["message"]
            .to_string()
            .contains("terraform not found"),
        "{run}"
    );
    app.app.settings.terraform = terraform;
    app.app.settings.tools_dir = tools;
    app.restart().await
}

#[tokio::test]
async fn infrastructure_status_follows_the_sandbox_and_needs_no_terraform() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let first = sandbox_config(&[Res::new("one", 0), Res::new("two", 0)]);
    let twin = app.create_sandbox_twin(&token, "status", &first).await;
    let draft = json!({
        "db_status": "draft", "resource_count": 0, "terraform_state_exists": false,
        "can_deploy": true, "can_destroy": false, "is_locked": false,
    });
    assert_eq!(figures(&infrastructure(&app, &twin).await), draft);

    app.run_ok(&token, &twin, "deploy").await;
    let deployed = json!({
        "db_status": "deployed", "resource_count": 2, "terraform_state_exists": true,
        "can_deploy": true, "can_destroy": true, "is_locked": false,
    });
    let app = status_without_terraform(app, &twin, deployed).await;

    // A partial deploy: `three` fails to create, `four` is created; the run fails.
    let second = sandbox_config(&[
        Res::new("one", 0),
        Res::new("two", 0),
        Res::new("three", 0).failing_create(),
        Res::new("four", 0),
    ]);
    let updated = app
        .update_twin(&token, &twin, &json!({ "files": { "main.tf": second } }))
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let run_id = app.start_run_ok(&token, &twin, "deploy").await;
    let run = app.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let partial = json!({
        "db_status": "error", "resource_count": 3, "terraform_state_exists": true,
        "can_deploy": true, "can_destroy": true, "is_locked": false,
    });
    let app = status_without_terraform(app, &twin, partial).await;

    app.run_ok(&token, &twin, "destroy").await;
    // The state still exists (terraform wrote it, empty); nothing is left to destroy.
    let destroyed = json!({
        "db_status": "draft", "resource_count": 0, "terraform_state_exists": true,
        "can_deploy": true, "can_destroy": false, "is_locked": false,
    });
    status_without_terraform(app, &twin, destroyed).await;
}

#[tokio::test]
async fn a_state_the_store_refuses_is_recovered_from_errored_tfstate() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "refused", &slow_config(8_000))
        .await;
    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut events = until_creating(&mut stream, "sandbox_resource.slow").await;
    let run_id = events
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .expect("an event with the job id");

    // While terraform applies: an admin force-unlocks the state and writes another state of
    // the same lineage with a much higher serial. The run's final POST (serial 1) is now
    // older than the stored one and is refused.
    let unlock = app
        .request(Method::POST, &format!("/twins/{twin}/state/unlock"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(unlock.status(), StatusCode::OK);
    let unlocked = json_body(unlock).await;
    assert_eq!(unlocked["released"], true, "{unlocked}");
    let audit = json_body(
        app.request(Method::GET, "/audit?limit=1000", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "state.unlocked" && e["target"] == twin.as_str())
        .unwrap_or_else(|| panic!("the force-unlock is audited: {audit}"))
        .clone();
    assert_eq!(entry["actor"], "admin");
    assert!(
        entry["reason"].as_str().unwrap().contains("force-released"),
        "{entry}"
    );
    let lineage = backend_state(&app, &twin, &token).await["lineage"]
        .as_str()
        .unwrap()
        .to_owned();
    let intruder = app
        .request(Method::POST, &format!("/twins/{twin}/tfstate"), &token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes(&state_doc(&lineage, 1000, 0)))
        .send()
        .await
        .unwrap();
    assert_eq!(intruder.status(), StatusCode::OK);

    events.extend(stream.read_to_end().await);
    let finished = done(&events);
    assert_eq!(finished["outcome"], "failed", "{:#?}", lines(&events));
    let all_lines = lines(&events).join("\n");
    assert!(all_lines.contains("Failed to save state"), "{all_lines}");
    let warnings: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "warning")
        .map(SseEvent::json)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = warnings[0]["message"].as_str().unwrap();
    assert!(warning.contains("errored.tfstate"), "{warning}");
    let warning_at = events.iter().position(|e| e.event == "warning").unwrap();
    assert!(
        warning_at < events.len() - 1,
        "the warning comes before done"
    );

    // The recovered state is a new version by the run, above the intruder's serial, holding
    // exactly what the sandbox holds.
    let listed = versions(&app, &twin).await;
    let recovered = listed.last().unwrap();
    assert!(
        warning.contains(&format!("version {}", recovered["version"])),
        "{warning}"
    );
    assert_eq!(recovered["run_id"], run_id.as_str(), "{listed:#?}");
    assert!(recovered["serial"].as_i64().unwrap() > 1000, "{listed:#?}");
    assert!(
        recovered["actor"].as_str().unwrap().contains("recovered"),
        "{listed:#?}"
    );
    assert_eq!(recovered["resource_count"], 2);
    assert_eq!(app.sandbox_ids(&twin).len(), 2);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
    let leftovers: Vec<String> = std::fs::read_dir(app.work_dir(&twin))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("errored.tfstate"))
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(
        leftovers[0].starts_with("errored.tfstate.recovered-"),
        "{leftovers:?}"
    );

    // The next run builds on the recovered state: destroy removes everything.
    app.run_ok(&token, &twin, "destroy").await;
    assert!(app.sandbox_ids(&twin).is_empty());
    assert!(app.state_ids(&twin).await.is_empty());
}

#[tokio::test]
async fn state_and_outputs_are_masked_versions_download_and_backend_auth_is_checked() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let main_tf = sandbox_config(&[Res::new("vault", 0), Res::new("other", 0)]);
    let twin = app.create_sandbox_twin(&token, "masked", &main_tf).await;
    app.run_ok(&token, &twin, "deploy").await;
    let secrets = sandbox_secrets(&app, &twin);
    assert_eq!(secrets.len(), 2);
    let vault = app
        .sandbox_objects(&twin)
        .into_iter()
        .find(|o| o["name"] == "vault")
        .unwrap();

    let view = get_ok(&app, &twin, "/state").await;
    let outputs = get_ok(&app, &twin, "/outputs").await;
    let shown = app.get_twin_ok(&token, &twin).await;
    for (what, body) in [("state", &view), ("outputs", &outputs), ("twin", &shown)] {
        let text = body.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows a secret: {text}"
            );
        }
    }
    let instances: Vec<&Value> = view["state"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["instances"].as_array().unwrap())
        .collect();
    assert_eq!(instances.len(), 2);
    for instance in instances {
        assert_eq!(instance["attributes"]["secret"], "********", "{instance}");
        assert!(instance["attributes"]["id"].is_string());
    }
    assert_eq!(view["state"]["outputs"]["secret"]["value"], "********");
    assert_eq!(outputs["outputs"]["secret"]["value"], "********");
    assert_eq!(outputs["outputs"]["secret"]["sensitive"], true);
    assert_eq!(outputs["outputs"]["endpoint"]["value"], vault["endpoint"]);
    assert_eq!(outputs["outputs"]["endpoint"]["sensitive"], false);

    // A version downloads as terraform wrote it (what the backend serves terraform).
    let current = view["version"].as_i64().unwrap();
    let download = app
        .request(
            Method::GET,
            &format!("/twins/{twin}/state/versions/{current}"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert_eq!(
        json_body(download).await,
        backend_state(&app, &twin, &token).await
    );
    let seed = get_ok(&app, &twin, "/state/versions/1").await;
    assert_eq!(seed["serial"], 0);
    assert_eq!(seed["resources"], json!([]));
    let missing = app
        .request(
            Method::GET,
            &format!("/twins/{twin}/state/versions/999"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;

    // Force-unlock is an admin's repair: an owner gets 403 on their own twin.
    let bob = app.create_user_token("bob");
    let bobs = app.create_sandbox_twin(&bob, "bobs", &main_tf).await;
    let forbidden = app
        .request(Method::POST, &format!("/twins/{bobs}/state/unlock"), &bob)
        .send()
        .await
        .unwrap();
    assert_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;

    // Basic auth: a wrong password is 401; another owner's token does not see the twin (404);
    // the owner's own token reaches their own twin's state.
    let wrong = backend(&app, "GET", &twin, "", "not-a-token", None).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let foreign = backend(&app, "GET", &twin, "", &bob, None).await;
    assert_error(foreign, StatusCode::NOT_FOUND, "not_found").await;
    let lock = backend(
        &app,
        "LOCK",
        &twin,
        "/lock",
        &bob,
        Some(bytes(&lock_info("bob"))),
    )
    .await;
    assert_error(lock, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(backend_state(&app, &bobs, &bob).await["serial"], 0);

    // `terraform force-unlock` (an UNLOCK without lock info) is the same repair: the owner's
    // own terraform is refused, an admin's releases the lock.
    let held = lock_info("bobs-lock");
    let taken = backend(&app, "LOCK", &bobs, "/lock", &bob, Some(bytes(&held))).await;
    assert_eq!(taken.status(), StatusCode::OK);
    let force = ["force-unlock", "-force", "bobs-lock"];
    let owners = Cli::new(&app, &bobs, &bob).await;
    owners.init().await;
    let refused = owners.run(&force).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("403"), "{refused:#?}");
    let other = bytes(&lock_info("other"));
    let still = backend(&app, "LOCK", &bobs, "/lock", &token, Some(other.clone())).await;
    assert_eq!(still.status(), StatusCode::LOCKED);
    assert_eq!(json_body(still).await, held);
    let admins = Cli::new(&app, &bobs, &token).await;
    admins.init().await;
    let released = admins.ok(&force).await;
    assert!(
        released.stdout.contains("successfully unlocked"),
        "{released:#?}"
    );
    let free = backend(&app, "LOCK", &bobs, "/lock", &token, Some(other)).await;
    assert_eq!(free.status(), StatusCode::OK);
    let row = app
        .history_ok(&token, &bobs)
        .await
        .into_iter()
        .find(|row| row["action"] == "state_force_unlocked")
        .expect("the force-unlock is in the twin's history");
    assert!(
        row["reason"].as_str().unwrap().contains("bobs-lock"),
        "{row}"
    );
}

#[tokio::test]
async fn refresh_moves_a_twin_to_what_its_state_holds() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let main_tf = sandbox_config(&[Res::new("east", 0), Res::new("west", 0)]);
    let twin = app
        .create_sandbox_twin(&token, "reconciled", &main_tf)
        .await;

    // Resources made outside the UI, through the backend: the twin is still a draft.
    let cli = Cli::new(&app, &twin, &token).await;
    cli.init().await;
    cli.apply().await;
    assert_eq!(app.sandbox_ids(&twin).len(), 2);
    let status = infrastructure(&app, &twin).await;
    assert_eq!(status["db_status"], "draft");
    assert_eq!(status["resource_count"], 2);

    let refreshed = refresh(&app, &twin).await;
    assert_eq!(refreshed["changed"], true, "{refreshed:#}");
    assert_eq!(refreshed["deployment_status"], "deployed");
    assert_eq!(refreshed["infrastructure"]["resource_count"], 2);
    let row = last_history(&app, &twin).await;
    assert_eq!(row["action"], "reconciled", "{row}");
    assert_eq!(row["from_status"], "draft");
    assert_eq!(row["to_status"], "deployed");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("holds 2 resources"),
        "{row}"
    );
    assert!(row["run_id"].is_null());
    // The twin's outputs are those of its current state, whoever wrote it.
    let outputs = get_ok(&app, &twin, "/outputs").await["outputs"].clone();
    assert!(outputs["endpoint"]["value"].is_string(), "{outputs}");
    assert_eq!(outputs["secret"]["value"], "********");
    let shown = app.get_twin_ok(&token, &twin).await;
    assert_eq!(shown["terraform_outputs"], outputs, "{shown}");
    // Nothing more to change.
    assert_eq!(refresh(&app, &twin).await["changed"], false);

    // Destroyed outside the UI: back to draft.
    cli.destroy().await;
    assert!(app.sandbox_ids(&twin).is_empty());
    let refreshed = refresh(&app, &twin).await;
    assert_eq!(refreshed["changed"], true, "{refreshed:#}");
    assert_eq!(refreshed["deployment_status"], "draft");
    let row = last_history(&app, &twin).await;
    assert_eq!(row["action"], "reconciled", "{row}");
    assert_eq!(row["from_status"], "deployed");
    assert_eq!(row["to_status"], "draft");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("holds 0 resources"),
        "{row}"
    );
    let status = infrastructure(&app, &twin).await;
    assert_eq!(
        (
            status["db_status"].clone(),
            status["resource_count"].clone()
        ),
        (json!("draft"), json!(0))
    );
    // No object, no output of one.
    let shown = app.get_twin_ok(&token, &twin).await;
    assert_eq!(shown["terraform_outputs"], Value::Null, "{shown}");
}

/// After the gateway deployed a twin, an apply from the CLI changes an output: the twin
/// answers the new one (its outputs follow the state, not the last run), and a destroy from
/// the CLI leaves none.
#[tokio::test]
async fn a_twins_outputs_follow_every_state_write_not_only_runs() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "outputs", &sandbox_config(&[Res::new("first", 0)]))
        .await;
    app.run_ok(&token, &twin, "deploy").await;
    let before = app.get_twin_ok(&token, &twin).await["terraform_outputs"].clone();
    assert!(before["endpoint"]["value"]
        .as_str()
        .is_some_and(|e| e.contains("first")));

    // The same output now comes from another object, applied from the CLI.
    let renamed = sandbox_config(&[Res::new("second", 0)]);
    let response = app
        .update_twin(&token, &twin, &json!({ "files": { "main.tf": renamed } }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cli = Cli::new(&app, &twin, &token).await;
    cli.init().await;
    cli.apply().await;
    let after = app.get_twin_ok(&token, &twin).await["terraform_outputs"].clone();
    assert!(
        after["endpoint"]["value"]
            .as_str()
            .is_some_and(|e| e.contains("second")),
        "the twin still answers the old output: {after}"
    );
    assert_eq!(after, get_ok(&app, &twin, "/outputs").await["outputs"]);

    cli.destroy().await;
    let gone = app.get_twin_ok(&token, &twin).await;
    assert_eq!(gone["terraform_outputs"], Value::Null, "{gone}");
}

/// docs/state-backend.md's recipe copies the twin's variables too: an admin's own plan of a
/// twin the gateway deployed with non-default variables finds nothing to change.
#[tokio::test]
async fn the_documented_cli_recipe_plans_no_change_for_a_twin_deployed_with_variables() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let files = json!({
        "main.tf": include_str!("../../examples/demo/main.tf"),
        "variables.tf": include_str!("../../examples/demo/variables.tf"),
        "outputs.tf": include_str!("../../examples/demo/outputs.tf"),
    });
    let body = json!({"name": "ops2", "provider": "sandbox", "files": files,
                      "variables": {"base_delay_ms": 0, "dashboard_title": "ops2"}});
    let response = app.create_twin(&token, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let twin = json_body(response).await["id"].as_str().unwrap().to_owned();
    app.run_ok(&token, &twin, "deploy").await;

    let cli = Cli::new(&app, &twin, &token).await;
    cli.init().await;
    let plan = cli
        .run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])
        .await;
    assert_eq!(
        plan.code,
        Some(0),
        "the CLI wants changes the gateway did not make: {}",
        plan.stdout
    );
}

async fn refresh(app: &TestApp, twin: &str) -> Value {
    let response = app
        .request(
            Method::POST,
            &format!("/twins/{twin}/refresh"),
            &app.admin_token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json_body(response).await
}

async fn last_history(app: &TestApp, twin: &str) -> Value {
    app.history_ok(&app.admin_token, twin)
        .await
        .pop()
        .expect("a history row")
}
