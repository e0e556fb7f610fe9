//! Property: whatever a client sends to the create and update handlers, the answer is never a
//! 500, errors keep their JSON shape, whatever was stored reads back, and the gateway stays up.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::helpers::{json_body, spawn_app, TestApp};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// File paths, mostly near the edge of what is allowed.
fn file_path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("main.tf".to_owned()),
        4 => "[a-z_-]{1,8}(/[a-z_-]{1,8}){0,3}\\.(tf|tf\\.json|tfvars|md)",
        1 => "(\\.\\.|/|\\.|terrastream_|\\\\|[a-z]{1,3}|\u{0}){1,6}(\\.tf)?",
        1 => ".{0,30}",
    ]
}

/// Variable names, mostly ones terraform accepts.
fn variable_name() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[a-zA-Z_][a-zA-Z0-9_-]{0,6}",
        1 => ".{0,8}",
    ]
}

fn string_map(keys: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(keys, ".{0,40}".prop_map(Value::from), 1..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Objects shaped like create (`with_provider`) or update bodies: each field missing, plausible
/// or of any type, sometimes with a field too many. Mostly plausible, so many reach the store.
fn twin_shaped(with_provider: bool) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        8 => "[a-z][a-z0-9 ]{0,11}".prop_map(Value::from),
        1 => ".{0,120}".prop_map(Value::from),
        1 => any_json(),
    ];
    let provider = prop_oneof![
        9 => prop::sample::select(vec!["sandbox", "aws", "GCP", "azure", "", "other"])
            .prop_map(Value::from),
        1 => any_json(),
    ];
    let files = prop_oneof![
        9 => string_map(file_path()),
        1 => any_json(),
    ];
    let variables = prop_oneof![
        9 => prop::collection::btree_map(variable_name(), any_json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => any_json(),
    ];
    let extra = prop::option::weighted(0.05, (".{0,10}", any_json()));
    (
        prop::option::weighted(0.9, name),
        prop::option::weighted(if with_provider { 0.5 } else { 0.02 }, provider),
        prop::option::weighted(0.9, files),
        prop::option::of(variables),
        extra,
    )
        .prop_map(|(name, provider, files, variables, extra)| {
            let mut object = Map::new();
            let fields = [
                ("name", name),
                ("provider", provider),
                ("files", files),
                ("variables", variables),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            Value::Object(object)
        })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    /// A serialised body cut short.
    Truncated(Value, usize),
    Bytes(Vec<u8>, Option<String>),
}

fn any_body(create: bool) -> impl Strategy<Value = Body> {
    let content_type = prop::option::of(prop_oneof![
        Just("application/json".to_owned()),
        Just("application/json; charset=utf-8".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,40}",
    ]);
    prop_oneof![
        12 => twin_shaped(create).prop_map(Body::Json),
        1 => any_json().prop_map(Body::Json),
        1 => (twin_shaped(create), any::<usize>()).prop_map(|(v, at)| Body::Truncated(v, at)),
        1 => (prop::collection::vec(any::<u8>(), 0..256), content_type)
            .prop_map(|(bytes, ct)| Body::Bytes(bytes, ct)),
    ]
}

#[derive(Debug, Clone)]
enum Target {
    Create,
    /// The twin made before the cases run.
    UpdateExisting,
    /// An id that is probably not one.
    UpdateAt(String),
}

/// A target and a body meant for it (or not).
fn any_request() -> impl Strategy<Value = (Target, Body)> {
    prop_oneof![
        4 => Just(Target::Create),
        4 => Just(Target::UpdateExisting),
        1 => ".{0,40}".prop_map(Target::UpdateAt),
    ]
    .prop_flat_map(|target| {
        let create = matches!(target, Target::Create);
        (Just(target), any_body(create))
    })
}

async fn send(app: &TestApp, existing: &str, target: &Target, body: &Body) -> reqwest::Response {
    let (method, path) = match target {
        Target::Create => (Method::POST, "/twins".to_owned()),
        Target::UpdateExisting => (Method::PUT, format!("/twins/{existing}")),
        Target::UpdateAt(raw) => {
            let mut url = reqwest::Url::parse(&app.url("/twins")).unwrap();
            url.path_segments_mut().unwrap().push(raw);
            (Method::PUT, url.path().to_owned())
        }
    };
    let json = Some("application/json");
    let token = Some(app.admin_token.as_str());
    match body {
        Body::Json(value) => {
            app.send_raw(method, &path, token, json, value.to_string())
                .await
        }
        Body::Truncated(value, at) => {
            let mut text = value.to_string().into_bytes();
            text.truncate(at % text.len().max(1));
            app.send_raw(method, &path, token, json, text).await
        }
        Body::Bytes(bytes, content_type) => {
            app.send_raw(method, &path, token, content_type.as_deref(), bytes.clone())
                .await
        }
    }
}

async fn check(app: &TestApp, existing: &str, target: Target, body: Body) -> Result<(), String> {
    let response = send(app, existing, &target, &body).await;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if status.is_server_error() {
        return Err(format!("{status} for {target:?} {body:?}: {text}"));
    }
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{status} with a non-JSON body ({e}): {text}"))?;
    if status.is_success() {
        // Whatever was accepted must read back.
        let id = parsed["id"].as_str().ok_or("a twin without an id")?;
        let read = app.get_twin(&app.admin_token, id).await;
        if read.status() != StatusCode::OK {
            return Err(format!("stored twin reads back as {}", read.status()));
        }
        return Ok(());
    }
    let allowed = [400, 404, 409, 413, 422];
    if !allowed.contains(&status.as_u16()) {
        return Err(format!("unexpected {status}: {text}"));
    }
    if !parsed["detail"].is_string() || !parsed["code"].is_string() {
        return Err(format!("{status} without detail and code: {text}"));
    }
    Ok(())
}

#[test]
fn create_and_update_never_fail_with_a_500() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    let existing = runtime.block_on(app.create_twin_ok(&app.admin_token, "fuzzed"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    };

    let outcome = TestRunner::new(config).run(&any_request(), |(target, body)| {
        runtime
            .block_on(check(&app, &existing, target, body))
            .map_err(TestCaseError::fail)
    });

    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    runtime.block_on(async {
        let health = app.health_check().await;
        assert_eq!(health.status(), StatusCode::OK);
        let list = app.list_twins(&app.admin_token).await;
        assert_eq!(list.status(), StatusCode::OK, "every stored twin must list");
        assert!(json_body(list)
            .await
            .as_array()
            .is_some_and(|t| !t.is_empty()));
    });
}
