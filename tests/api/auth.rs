//! Who is asking: the admin token of the first start, API tokens, session cookies and JWTs.

use std::os::unix::fs::PermissionsExt;

use jsonwebtoken::{EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use terrastream::app::Application;

use crate::helpers::{assert_error, json_body, spawn_app, spawn_app_with, TestApp};

const JWT_SECRET: &str = "a-test-secret-that-is-long-enough";

fn jwt(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

/// The `name=value` part of the session cookie a login set, checking its attributes.
fn session_cookie(response: &reqwest::Response) -> String {
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("login must set a cookie")
        .to_str()
        .unwrap();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{set_cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{set_cookie}");
    assert!(attributes.contains(&"Path=/"), "{set_cookie}");
    assert!(
        !attributes.contains(&"Secure"),
        "not Secure by default: {set_cookie}"
    );
    let pair = attributes[0];
    assert!(pair.starts_with("terrastream_session=") && pair.len() > 30);
    pair.to_owned()
}

async fn get_with_cookie(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn first_start_writes_the_admin_token_to_a_private_file_once() {
    let app = spawn_app().await;
    let path = app.data_dir.path().join("admin-token");

    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, app.admin_token);
    assert!(app.admin_token.starts_with("tst_"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "admin-token must be readable by its owner only"
    );

    let whoami = app.whoami(&app.admin_token).await;
    assert_eq!(whoami.status(), StatusCode::OK);
    assert_eq!(
        json_body(whoami).await,
        json!({ "owner": "admin", "is_admin": true })
    );

    // A second start on the same data directory keeps the token it has.
    let mut settings = app.settings.clone();
    settings.bind = "127.0.0.1:0".into();
    let second = Application::build(settings).unwrap();
    assert_eq!(second.new_admin_token(), None);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), app.admin_token);
}

#[tokio::test]
async fn api_tokens_identify_their_owner() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");

    let response = app.whoami(&alice).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({ "owner": "alice", "is_admin": false })
    );
}

#[tokio::test]
async fn login_sets_a_strict_http_only_session_cookie_that_works_alone() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");
    let own = app.create_twin_ok(&alice, "mine").await;
    app.create_twin_ok(&app.admin_token, "not mine").await;

    let response = app.login(&alice).await;

    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie(&response);
    let body = json_body(response).await;
    assert_eq!(body["owner"], "alice");
    assert_eq!(body["is_admin"], false);
    assert!(body["expires_at"].is_string());

    let whoami = get_with_cookie(&app, "/auth/whoami", &cookie).await;
    assert_eq!(whoami.status(), StatusCode::OK);
    assert_eq!(json_body(whoami).await["owner"], "alice");
    let twins = get_with_cookie(&app, "/twins", &cookie).await;
    assert_eq!(twins.status(), StatusCode::OK);
    assert_eq!(json_body(twins).await, json!([own]));
    let create = app
        .client
        .post(app.url("/twins"))
        .header("cookie", &cookie)
        .json(&crate::helpers::twin_body("by cookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::CREATED);
    assert_eq!(json_body(create).await["owner"], "alice");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = spawn_app().await;
    let cookie = session_cookie(&app.login(&app.admin_token).await);

    let response = app.logout(&cookie).await;

    assert_eq!(response.status(), StatusCode::OK);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cleared.starts_with("terrastream_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(json_body(response).await, json!({ "success": true }));

    let after = get_with_cookie(&app, "/twins", &cookie).await;
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The token itself still works.
    assert_eq!(
        app.list_twins(&app.admin_token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_forged_session_cookie_is_401() {
    let app = spawn_app().await;

    let response = get_with_cookie(&app, "/twins", "terrastream_session=forged").await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_bad_bearer_header_is_401_even_with_a_valid_session() {
    let app = spawn_app().await;
    let cookie = session_cookie(&app.login(&app.admin_token).await);

    let response = app
        .client
        .get(app.url("/twins"))
        .header("cookie", &cookie)
        .bearer_auth("tst_wrong")
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn jwts_signed_with_the_secret_act_as_their_subject() {
    let app = spawn_app_with(|settings| settings.jwt_secret = Some(JWT_SECRET.into())).await;
    let carol = jwt(JWT_SECRET, &json!({ "sub": "carol", "exp": in_an_hour() }));
    let root = jwt(
        JWT_SECRET,
        &json!({ "sub": "root", "admin": true, "exp": in_an_hour() }),
    );
    let no_expiry = jwt(JWT_SECRET, &json!({ "sub": "dave" }));

    let whoami = json_body(app.whoami(&carol).await).await;
    assert_eq!(whoami, json!({ "owner": "carol", "is_admin": false }));
    let twin = app.create_twin_ok(&carol, "from a jwt").await;
    assert_eq!(twin["owner"], "carol");
    assert_eq!(json_body(app.list_twins(&carol).await).await, json!([twin]));

    let whoami = json_body(app.whoami(&root).await).await;
    assert_eq!(whoami, json!({ "owner": "root", "is_admin": true }));
    let all = json_body(app.list_twins(&root).await).await;
    assert_eq!(all, json!([twin]));

    // A JWT without `exp` would never expire: refused unless the operator allows it.
    let refused = app.whoami(&no_expiry).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let lenient = spawn_app_with(|settings| {
        settings.jwt_secret = Some(JWT_SECRET.into());
        settings.jwt_allow_no_exp = true;
    })
    .await;
    assert_eq!(lenient.whoami(&no_expiry).await.status(), StatusCode::OK);
    assert_eq!(
        json_body(lenient.list_twins(&no_expiry).await).await,
        json!([])
    );

    // API tokens keep working next to JWTs, and a JWT can open a session.
    assert_eq!(
        app.list_twins(&app.admin_token).await.status(),
        StatusCode::OK
    );
    let login = app.login(&carol).await;
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(json_body(login).await["owner"], "carol");
}

#[tokio::test]
async fn jwts_with_another_secret_expired_or_without_a_subject_are_401() {
    let app = spawn_app_with(|settings| settings.jwt_secret = Some(JWT_SECRET.into())).await;
    let long_ago = chrono::Utc::now().timestamp() - 3600;
    let hs384 = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({ "sub": "carol", "exp": in_an_hour() }),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let refused = [
        jwt(
            "another-secret",
            &json!({ "sub": "carol", "exp": in_an_hour() }),
        ),
        jwt(JWT_SECRET, &json!({ "sub": "carol", "exp": long_ago })),
        jwt(JWT_SECRET, &json!({ "exp": in_an_hour() })),
        jwt(JWT_SECRET, &json!({ "sub": "", "exp": in_an_hour() })),
        jwt(JWT_SECRET, &json!({ "sub": 7, "exp": in_an_hour() })),
        hs384,
        "a.b.c".to_owned(),
    ];
    for token in refused {
        let response = app.list_twins(&token).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let login = app.login(&token).await;
        assert_error(login, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn jwts_are_refused_when_no_secret_is_configured() {
    let app = spawn_app().await;
    let token = jwt(JWT_SECRET, &json!({ "sub": "carol", "exp": in_an_hour() }));

    let response = app
        .send_raw(Method::GET, "/twins", Some(&token), None, "")
        .await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn an_expired_session_is_401() {
    let app = spawn_app_with(|settings| settings.session_ttl = std::time::Duration::ZERO).await;
    let login = app.login(&app.admin_token).await;
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = session_cookie(&login);

    let response = get_with_cookie(&app, "/twins", &cookie).await;

    let error = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(error["detail"].as_str().unwrap().contains("expired"));
}
