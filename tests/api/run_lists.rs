//! Lists of runs for dashboards: `GET /runs` across twins, and the pages of a twin's runs and
//! history (`limit`, `before`, `X-Next-Before`).

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use terrastream::domain::{RunId, RunKind, TwinId};
use terrastream::store::NewRun;

use crate::helpers::{assert_error, json_body, TestApp};
use crate::run_helpers::{sandbox_config, spawn_run_app, Res};

/// Records a run of `twin_id` straight in the store, as the supervisor does when it accepts
/// one (it stays pending: no terraform runs), and returns its id.
fn record_run(app: &TestApp, twin_id: &str) -> String {
    let run = NewRun {
        id: RunId::generate(),
        twin_id: twin_id.parse::<TwinId>().unwrap(),
        kind: RunKind::Plan,
        actor: "recorder".into(),
        // This gateway's, so none claims it from the queue to run it.
        owner: Some(app.replica()),
        secrets: None,
        credentials: Vec::new(),
        log_level: None,
    };
    let (run, _) = app.store().start_run(run, None).unwrap().unwrap();
    run.id.to_string()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Response {
    app.request(Method::GET, path, token).send().await.unwrap()
}

/// The body as an array and the `X-Next-Before` header, failing unless 200.
async fn page(app: &TestApp, token: &str, path: &str) -> (Vec<Value>, Option<String>) {
    let response = get(app, token, path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let next = response
        .headers()
        .get("x-next-before")
        .map(|v| v.to_str().unwrap().to_owned());
    match json_body(response).await {
        Value::Array(items) => (items, next),
        other => panic!("GET {path} is not an array: {other}"),
    }
}

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items.iter().map(|i| i[field].to_string()).collect()
}

/// Follows `X-Next-Before` from `first` to the end; every page but the last is `limit` long.
async fn walk(app: &TestApp, token: &str, first: &str, limit: usize, field: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (items, next) = page(app, token, &path).await;
        all.extend(ids(&items, field));
        let Some(next) = next else {
            assert!(items.len() <= limit);
            return all;
        };
        assert_eq!(items.len(), limit, "a page before the last is full");
        let cursor = next.trim_matches('"');
        let joiner = if first.contains('?') { '&' } else { '?' };
        path = format!("{first}{joiner}before={cursor}");
    }
}

#[tokio::test]
async fn get_runs_lists_the_callers_runs_across_twins_newest_first_in_pages() {
    let app = crate::helpers::spawn_app().await;
    let admin = app.admin_token.clone();
    let ann = app.create_user_token("ann");
    let mine = app.create_twin_ok(&admin, "admins-twin").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anns = app.create_twin_ok(&ann, "anns-twin").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut recorded = Vec::new();
    for i in 0..7 {
        let twin = if i % 3 == 0 { &anns } else { &mine };
        recorded.push((record_run(&app, twin), twin.clone()));
    }
    let newest_first: Vec<String> = recorded.iter().rev().map(|(id, _)| id.clone()).collect();

    // An admin sees every run, newest first, each with its twin's id and name.
    let (all, next) = page(&app, &admin, "/runs").await;
    assert!(next.is_none(), "one page holds seven runs");
    let all_ids: Vec<String> = all
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all_ids, newest_first);
    for run in &all {
        let (_, twin) = recorded
            .iter()
            .find(|(id, _)| run["job_id"] == id.as_str())
            .unwrap();
        assert_eq!(run["twin_id"], twin.as_str());
        let name = if *twin == anns {
            "anns-twin"
        } else {
            "admins-twin"
        };
        assert_eq!(run["twin_name"], name, "{run}");
        assert_eq!(run["kind"], "plan");
        assert_eq!(run["actor"], "recorder");
        assert!(run["events_url"].as_str().unwrap().ends_with("/events"));
    }

    // An owner sees the runs of their own twins only.
    let (anns_runs, _) = page(&app, &ann, "/runs").await;
    let expected: Vec<String> = newest_first
        .iter()
        .filter(|id| recorded.iter().any(|(r, t)| r == *id && *t == anns))
        .cloned()
        .collect();
    let got: Vec<String> = anns_runs
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected);

    // Pages of three follow each other without a gap or a repeat.
    let walked = walk(&app, &admin, "/runs?limit=3", 3, "job_id").await;
    let quoted: Vec<String> = newest_first.iter().map(|id| format!("\"{id}\"")).collect();
    assert_eq!(walked, quoted);

    // A cursor that is not a run id is malformed; a run the caller cannot see is not a cursor.
    assert_error(
        get(&app, &admin, "/runs?before=yesterday").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let admins_run = &recorded[1].0;
    assert_error(
        get(&app, &ann, &format!("/runs?before={admins_run}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    )
    .await;
    let unknown = RunId::generate();
    assert_error(
        get(&app, &admin, &format!("/runs?before={unknown}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    )
    .await;
    for limit in ["0", "201", "many"] {
        assert_error(
            get(&app, &admin, &format!("/runs?limit={limit}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    let anonymous = app.client.get(app.url("/runs")).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn get_runs_filters_by_status_so_a_dashboard_sees_what_is_running_now() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let quick = app
        .create_sandbox_twin(&token, "quick", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let finished = app.run_ok(&token, &quick, "deploy").await;
    let slow = app
        .create_sandbox_twin(&token, "slow", &sandbox_config(&[Res::new("b", 60_000)]))
        .await;
    let running = app.start_run_ok(&token, &slow, "deploy").await;

    let (active, _) = page(&app, &token, "/runs?status=pending,processing").await;
    let active_ids: Vec<&str> = active
        .iter()
        .map(|r| r["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(active_ids, [running.as_str()]);
    assert_eq!(active[0]["twin_name"], "slow");
    assert!(
        ["pending", "processing"].contains(&active[0]["status"].as_str().unwrap()),
        "{}",
        active[0]
    );

    let (done, _) = page(&app, &token, "/runs?status=completed").await;
    let done_ids: Vec<&str> = done.iter().map(|r| r["job_id"].as_str().unwrap()).collect();
    assert_eq!(done_ids, [finished.as_str()]);
    assert_eq!(done[0]["exit_code"], 0);
    assert_eq!(done[0]["twin_name"], "quick");

    assert_error(
        get(&app, &token, "/runs?status=running").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    let cancel = app.cancel_run(&token, &slow).await;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    app.wait_for_run(&token, &running).await;
    let (active, _) = page(&app, &token, "/runs?status=pending,processing").await;
    assert!(active.is_empty(), "{active:?}");
}

#[tokio::test]
async fn a_twins_runs_come_in_pages_and_unpaged_stay_one_array() {
    let app = crate::helpers::spawn_app().await;
    let admin = app.admin_token.clone();
    let twin = app.create_twin_ok(&admin, "paged").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.create_twin_ok(&admin, "other").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut recorded: Vec<String> = (0..5).map(|_| record_run(&app, &twin)).collect();
    let elsewhere = record_run(&app, &other);
    recorded.reverse();
    let quoted: Vec<String> = recorded.iter().map(|id| format!("\"{id}\"")).collect();
    let runs_path = format!("/twins/{twin}/runs");

    // Without paging: the whole list, as before, and no header.
    let (all, next) = page(&app, &admin, &runs_path).await;
    assert!(next.is_none());
    assert_eq!(ids(&all, "job_id"), quoted);

    let walked = walk(&app, &admin, &format!("{runs_path}?limit=2"), 2, "job_id").await;
    assert_eq!(walked, quoted);

    // Another twin's run is no cursor here.
    assert_error(
        get(
            &app,
            &admin,
            &format!("{runs_path}?limit=2&before={elsewhere}"),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    )
    .await;
    assert_error(
        get(&app, &admin, &format!("{runs_path}?limit=300")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn a_twins_history_comes_in_pages_of_the_newest_entries_oldest_first() {
    let app = crate::helpers::spawn_app().await;
    let admin = app.admin_token.clone();
    let twin = app.create_twin_ok(&admin, "moved").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        for status in ["deploying", "error"] {
            let moved = app.set_status(&admin, &twin, status, "repair drill").await;
            assert_eq!(moved.status(), StatusCode::OK);
        }
    }
    let history_path = format!("/twins/{twin}/history");
    let everything = app.history_ok(&admin, &twin).await;
    assert_eq!(everything.len(), 7, "created and six moves: {everything:?}");
    let oldest_first = ids(&everything, "id");

    // The first page is the newest three, oldest first; the header names the next cursor.
    let (first, next) = page(&app, &admin, &format!("{history_path}?limit=3")).await;
    assert_eq!(ids(&first, "id"), oldest_first[4..]);
    assert_eq!(next.as_deref(), Some(oldest_first[4].as_str()));

    // Walking the pages and putting them back in order gives the whole history.
    let mut pages = Vec::new();
    let mut path = format!("{history_path}?limit=3");
    loop {
        let (items, next) = page(&app, &admin, &path).await;
        pages.push(ids(&items, "id"));
        let Some(next) = next else { break };
        path = format!("{history_path}?limit=3&before={next}");
    }
    let rebuilt: Vec<String> = pages.into_iter().rev().flatten().collect();
    assert_eq!(rebuilt, oldest_first);

    assert_error(
        get(&app, &admin, &format!("{history_path}?limit=3&before=soon")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_error(
        get(
            &app,
            &admin,
            &format!("{history_path}?limit=3&before=99999"),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    )
    .await;
}
