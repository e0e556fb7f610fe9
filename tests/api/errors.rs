//! Every error a client can cause is JSON `{"detail", "code"}` with the status the contract names.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, twin_body, TestApp};

const JSON: Option<&str> = Some("application/json");

async fn create_raw(app: &TestApp, body: &str) -> reqwest::Response {
    app.send_raw(
        Method::POST,
        "/twins",
        Some(&app.admin_token),
        JSON,
        body.to_owned(),
    )
    .await
}

async fn existing_twin(app: &TestApp) -> String {
    app.create_twin_ok(&app.admin_token, "plant").await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---- 400: the request is malformed ----

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in [
        "",
        "{",
        "{\"name\": ",
        "not json",
        "{\"name\": \"a\",}",
        "\u{0}",
    ] {
        let response = create_raw(&app, body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    // Nesting too deep to parse safely, and numbers JSON cannot hold, are refused too.
    let deep = format!(
        r#"{{"name": "a", "files": {{"main.tf": ""}}, "variables": {{"v": {}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for body in [
        deep.as_str(),
        r#"{"name": "a", "files": {}, "variables": {"v": 1e999}}"#,
    ] {
        let response = create_raw(&app, body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(app.health_check().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_types_are_400() {
    let app = spawn_app().await;
    for body in [
        json!([]),
        json!("twin"),
        json!(null),
        json!({ "name": 5, "files": { "main.tf": "" } }),
        json!({ "name": "a", "files": ["main.tf"] }),
        json!({ "name": "a", "files": { "main.tf": 1 } }),
        json!({ "name": "a", "files": { "main.tf": "" }, "variables": [] }),
        json!({ "name": "a", "provider": true, "files": { "main.tf": "" } }),
    ] {
        let response = app.create_twin(&app.admin_token, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn missing_fields_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({ "name": "a" }),
        json!({ "files": { "main.tf": "" } }),
    ] {
        let response = app.create_twin(&app.admin_token, &body).await;
        let error = assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
        assert!(
            error["detail"].as_str().unwrap().contains("missing field"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn unknown_fields_are_400() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let mut body = twin_body("b");
    body["colour"] = json!("red");

    let create = app.create_twin(&app.admin_token, &body).await;
    let error = assert_error(create, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(error["detail"].as_str().unwrap().contains("colour"));

    let update = app
        .update_twin(&app.admin_token, &id, &json!({ "owner": "mallory" }))
        .await;
    assert_error(update, StatusCode::BAD_REQUEST, "bad_request").await;
    let status = app
        .send_raw(
            Method::POST,
            &format!("/twins/{id}/status"),
            Some(&app.admin_token),
            JSON,
            r#"{"status": "deploying", "force": true}"#,
        )
        .await;
    assert_error(status, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_400() {
    let app = spawn_app().await;
    let valid = twin_body("a").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let response = app
            .send_raw(
                Method::POST,
                "/twins",
                Some(&app.admin_token),
                content_type,
                valid.clone(),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let charset = app
        .send_raw(
            Method::POST,
            "/twins",
            Some(&app.admin_token),
            Some("application/json; charset=utf-8"),
            valid,
        )
        .await;
    assert_eq!(charset.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_bad_query_string_is_400() {
    let app = spawn_app().await;

    let response = app
        .send_raw(
            Method::GET,
            "/twins?include_deleted=maybe",
            Some(&app.admin_token),
            None,
            "",
        )
        .await;

    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

// ---- 401: who is asking is unknown ----

#[tokio::test]
async fn requests_without_valid_credentials_are_401() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let headers = [
        None,
        Some("Bearer tst_0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer "),
        Some("Bearer"),
        Some("bearer abc"),
        Some("Basic YWRtaW46YWRtaW4="),
        Some("Token abc"),
    ];
    let routes = [
        (Method::GET, "/twins".to_owned()),
        (Method::POST, "/twins".to_owned()),
        (Method::GET, format!("/twins/{id}")),
        (Method::PUT, format!("/twins/{id}")),
        (Method::DELETE, format!("/twins/{id}")),
        (Method::POST, format!("/twins/{id}/restore")),
        (Method::GET, format!("/twins/{id}/history")),
        (Method::POST, format!("/twins/{id}/status")),
        (Method::GET, "/auth/whoami".to_owned()),
    ];
    for header in headers {
        for (method, path) in &routes {
            let mut request = app.client.request(method.clone(), app.url(path));
            if let Some(header) = header {
                request = request.header("authorization", header);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers().get("www-authenticate").unwrap(),
                "Bearer"
            );
            assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    let twin = app.get_twin(&app.admin_token, &id).await;
    assert_eq!(twin.status(), StatusCode::OK, "nothing may have changed");
}

#[tokio::test]
async fn a_401_wins_over_a_bad_body() {
    let app = spawn_app_with(|settings| settings.max_body_bytes = 1024).await;
    let bad_token = Some("tst_nope");
    let oversized = "x".repeat(4096);
    let bodies: [(Option<&str>, String); 4] = [
        (JSON, "{".into()),
        (JSON, r#"{"name": 1}"#.into()),
        (Some("text/plain"), "hello".into()),
        (JSON, oversized),
    ];
    for token in [None, bad_token] {
        for (content_type, body) in &bodies {
            let response = app
                .send_raw(Method::POST, "/twins", token, *content_type, body.clone())
                .await;
            assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
}

#[tokio::test]
async fn login_with_an_unknown_token_is_401() {
    let app = spawn_app().await;

    let response = app.login("tst_not-a-token").await;

    assert!(response.headers().get("set-cookie").is_none());
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

// ---- 404: missing, malformed or not yours ----

#[tokio::test]
async fn unknown_or_malformed_twin_ids_are_404() {
    let app = spawn_app().await;
    let unknown = "twin_0123456789abcdef0123456789abcdef";
    let run_id = "run_0123456789abcdef0123456789abcdef";
    for id in [
        unknown,
        run_id,
        "42",
        "twin_XYZ",
        "twin_0123456789ABCDEF0123456789ABCDEF",
        "%20",
        "..%2F..%2Fetc",
        "%F0%9F%92%A5",
    ] {
        let get = app.get_twin(&app.admin_token, id).await;
        assert_error(get, StatusCode::NOT_FOUND, "not_found").await;
        let update = app
            .update_twin(&app.admin_token, id, &json!({ "name": "x" }))
            .await;
        assert_error(update, StatusCode::NOT_FOUND, "not_found").await;
        let delete = app.delete_twin(&app.admin_token, id).await;
        assert_error(delete, StatusCode::NOT_FOUND, "not_found").await;
        let restore = app.restore_twin(&app.admin_token, id).await;
        assert_error(restore, StatusCode::NOT_FOUND, "not_found").await;
        let history = app.history(&app.admin_token, id).await;
        assert_error(history, StatusCode::NOT_FOUND, "not_found").await;
        let status = app.set_status(&app.admin_token, id, "deploying", "x").await;
        assert_error(status, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn another_owners_twin_is_404() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let alice = app.create_user_token("alice");

    let response = app.get_twin(&alice, &id).await;

    let error = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(
        !error.to_string().contains("admin"),
        "leaks the owner: {error}"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let routes = [
        // `GET /` is the dashboard (tests/api/dashboard.rs).
        (Method::GET, "/nope".to_owned()),
        (Method::DELETE, "/".to_owned()),
        (Method::POST, "/healthz/x".to_owned()),
        (Method::GET, format!("/twins/{id}/nope")),
        (Method::GET, format!("/twins/{id}/history/1/2")),
    ];
    for (method, path) in routes {
        let response = app
            .send_raw(method, &path, Some(&app.admin_token), None, "")
            .await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

/// Found by schemathesis (scripts/fuzz.sh): a method a route does not take was an empty 405.
#[tokio::test]
async fn a_method_a_route_does_not_take_is_a_json_405_with_allow() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let routes = [
        (Method::TRACE, "/auth/whoami".to_owned(), "GET"),
        (Method::GET, format!("/twins/{id}/deploy"), "POST"),
        (
            Method::PUT,
            format!("/twins/{id}/tfstate"),
            "GET, POST, DELETE",
        ),
    ];
    for (method, path, allowed) in routes {
        let response = app
            .send_raw(method.clone(), &path, Some(&app.admin_token), None, "")
            .await;
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(allowed), "{body}");
    }
}

// ---- 413: too large ----

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = spawn_app_with(|settings| settings.max_body_bytes = 1024).await;
    let id = existing_twin(&app).await;
    let mut big = twin_body("big");
    big["files"]["main.tf"] = json!("#".repeat(2048));

    let create = app.create_twin(&app.admin_token, &big).await;
    let error = assert_error(create, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(error["detail"].as_str().unwrap().contains("1024"));

    let update = app
        .update_twin(&app.admin_token, &id, &json!({ "files": big["files"] }))
        .await;
    assert_error(update, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Without a Content-Length the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.to_string())];
    let streamed = app
        .send_raw(
            Method::POST,
            "/twins",
            Some(&app.admin_token),
            JSON,
            reqwest::Body::wrap_stream(tokio_stream::iter(chunks)),
        )
        .await;
    assert_error(streamed, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let small = app.create_twin(&app.admin_token, &twin_body("small")).await;
    assert_eq!(small.status(), StatusCode::CREATED);
}

// ---- 422: well-formed but invalid ----

#[tokio::test]
async fn invalid_twins_are_422_with_a_reason() {
    let app = spawn_app().await;
    let cases = [
        (json!({ "/etc/main.tf": "" }), None, "absolute"),
        (json!({ "../main.tf": "" }), None, "'..'"),
        (json!({ "modules/../../main.tf": "" }), None, "'..'"),
        (json!({ "main.tf": "", "a\\b.tf": "" }), None, "backslash"),
        (json!({ "main.tf": "", ".terraform/x": "" }), None, "hidden"),
        (json!({ "terrastream_backend.tf": "" }), None, "reserved"),
        (json!({ "": "" }), None, "empty"),
        (json!({}), None, "configuration file"),
        (json!({ "README.md": "# hi" }), None, "configuration file"),
        (
            json!({ "main.tf": "" }),
            Some(json!({ "1abc": 1 })),
            "variable",
        ),
        (
            json!({ "main.tf": "" }),
            Some(json!({ "a b": 1 })),
            "variable",
        ),
        (json!({ "main.tf": "" }), Some(json!({ "": 1 })), "variable"),
    ];
    for (files, variables, reason) in cases {
        let mut body = json!({ "name": "plant", "files": files });
        if let Some(variables) = variables {
            body["variables"] = variables;
        }
        let response = app.create_twin(&app.admin_token, &body).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{body} -> {detail}");
    }

    let names = [("", "empty"), ("   ", "empty"), ("a\nb", "control")];
    for (name, reason) in names {
        let response = app.create_twin(&app.admin_token, &twin_body(name)).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
        assert!(error["detail"].as_str().unwrap().contains(reason));
    }
    let long = app
        .create_twin(&app.admin_token, &twin_body(&"x".repeat(101)))
        .await;
    assert_error(long, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;

    let mut body = twin_body("plant");
    body["provider"] = json!("digitalocean");
    let provider = app.create_twin(&app.admin_token, &body).await;
    let error = assert_error(provider, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    assert!(error["detail"].as_str().unwrap().contains("provider"));

    let none_created = app.list_twins(&app.admin_token).await;
    assert_eq!(crate::helpers::json_body(none_created).await, json!([]));
}

#[tokio::test]
async fn invalid_updates_are_422_and_change_nothing() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;
    let before = crate::helpers::json_body(app.get_twin(&app.admin_token, &id).await).await;
    for body in [
        json!({ "files": { "/abs.tf": "" } }),
        json!({ "files": { "../up.tf": "" } }),
        json!({ "files": { "notes.txt": "" } }),
        json!({ "name": " " }),
        json!({ "variables": { "9lives": true } }),
        json!({ "name": "renamed", "files": { "main.tf": "" }, "variables": { "-x": 1 } }),
    ] {
        let response = app.update_twin(&app.admin_token, &id, &body).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    }
    let after = crate::helpers::json_body(app.get_twin(&app.admin_token, &id).await).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_unknown_status_is_422() {
    let app = spawn_app().await;
    let id = existing_twin(&app).await;

    let response = app
        .set_status(&app.admin_token, &id, "Deployed", "typo")
        .await;

    let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    assert!(error["detail"].as_str().unwrap().contains("deployed"));
}
