//! `GET /healthz`: what load balancers and the dashboard poll.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{json_body, spawn_app};

#[tokio::test]
async fn health_check_is_200_ok_without_credentials() {
    let app = spawn_app().await;

    let response = app.health_check().await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(json_body(response).await, json!({ "status": "ok" }));
}
