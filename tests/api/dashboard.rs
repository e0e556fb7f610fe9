//! The browser dashboard served by the gateway itself (`/`, `/ui/...`) and the demo template
//! its create form offers (`GET /templates/demo`). The page's behaviour is tested in a real
//! browser by `e2e/dashboard.test.mjs`.

use reqwest::{Method, StatusCode};

use crate::helpers::{assert_error, json_body, spawn_app};

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_page_is_served_without_credentials_under_a_strict_policy() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    let policy = header(&response, "content-security-policy");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
}

#[tokio::test]
async fn assets_have_their_content_types() {
    let app = spawn_app().await;

    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/log-view.js", "text/javascript; charset=utf-8"),
        ("/ui/wizard.js", "text/javascript; charset=utf-8"),
        ("/ui/runs-view.js", "text/javascript; charset=utf-8"),
        ("/ui/credentials.js", "text/javascript; charset=utf-8"),
        ("/ui/webhooks.js", "text/javascript; charset=utf-8"),
        ("/ui/twin-panels.js", "text/javascript; charset=utf-8"),
        ("/ui/resource-map.js", "text/javascript; charset=utf-8"),
        ("/ui/forms.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
    }
}

#[tokio::test]
async fn an_unknown_asset_is_a_json_404() {
    let app = spawn_app().await;

    for path in ["/ui/nope.js", "/ui/..%2Fapi%2Fmod.rs", "/ui/"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn the_demo_template_needs_a_credential() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/templates/demo"))
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_demo_template_is_a_body_post_twins_accepts() {
    let app = spawn_app().await;

    let response = app
        .request(Method::GET, "/templates/demo", &app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let template = json_body(response).await;
    assert_eq!(template["name"], "demo");
    assert_eq!(template["provider"], "sandbox");
    assert_eq!(template["variables"], serde_json::json!({}));
    let files = template["files"].as_object().unwrap();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["main.tf", "outputs.tf", "variables.tf"]);
    assert!(files["main.tf"]
        .as_str()
        .unwrap()
        .contains("resource \"sandbox_resource\" \"iot_hub\""));

    let created = app.create_twin(&app.admin_token, &template).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let twin = json_body(created).await;
    assert_eq!(twin["files"], template["files"]);
}
