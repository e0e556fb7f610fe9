//! `GET /openapi.json`: a valid OpenAPI document (checked by PyPI's `openapi-spec-validator`,
//! which `scripts/setup.sh` installs into the tools venv), and the route table and the
//! document agree both ways: every route actix serves is documented, every documented
//! operation is served, and each says truly whether it needs a credential.
//!
//! The route table is read from actix itself (its resource tree), and each of its paths is
//! probed with every method: a route exists when the router matches it, which the answer
//! tells apart from `no_route` ("no route for ...") and a resource's 405. A route added to
//! `api::routes` without a `#[utoipa::path]` in the document fails here.
//!
//! Left out on purpose: LOCK and UNLOCK on `/twins/{id}/tfstate/lock` (terraform's state
//! lock): OpenAPI 3.1 has no custom methods, so the document cannot name them
//! (docs/state-backend.md does).

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{json_body, spawn_app, TestApp};

/// Routes the document cannot hold, with why.
const UNDOCUMENTABLE: [(&str, &str, &str); 2] = [
    (
        "LOCK",
        "/twins/{id}/tfstate/lock",
        "a custom method; OpenAPI 3.1 has none",
    ),
    (
        "UNLOCK",
        "/twins/{id}/tfstate/lock",
        "a custom method; OpenAPI 3.1 has none",
    ),
];

/// Every method a route could have; OpenAPI's own and the state backend's.
const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "LOCK", "UNLOCK",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    json_body(response).await
}

/// `(method, path)` of every operation the document describes.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("no paths") {
        for method in item.as_object().expect("a path item is an object").keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete path for a route pattern: each `{param}` gets a value of the right shape (a
/// well-formed id that names nothing, a number), so the handler answers rather than its
/// extractor.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment {
            "{version}" => "1",
            "{file}" => "no-such-file.js",
            s if s.starts_with('{') => match pattern.split('/').nth(1) {
                Some("twins") => "twin_00000000000000000000000000000000",
                Some("runs") => "run_00000000000000000000000000000000",
                Some("credentials") => "cred_00000000000000000000000000000000",
                Some("webhooks") => "wh_00000000000000000000000000000000",
                _ => "x",
            },
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Does the router match `method pattern`? Its answers for routes it lacks are the
/// default service's 404 ("no route for ...") and a resource's 405.
async fn served(app: &TestApp, method: &str, pattern: &str) -> bool {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let response = app
        .request(method, &concrete(pattern), &app.admin_token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return false;
    }
    if status != StatusCode::NOT_FOUND {
        return true;
    }
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body).unwrap_or_default()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    !detail.starts_with("no route for ")
}

/// The full path of every resource in actix's route tree for `api::routes`. actix has no
/// public way to list it, so this reads the tree from its `Debug` form: each `ResourceMap`
/// node's `patterns: Single("...")`, nested in its parent's `nodes`. If that form changes,
/// this fails (it finds too few routes), never passes vacuously.
fn route_patterns() -> BTreeSet<String> {
    let tree = std::thread::spawn(|| {
        actix_web::rt::System::new().block_on(async {
            use actix_web::{test, web, App, HttpRequest, HttpResponse};
            let app = test::init_service(
                App::new()
                    .configure(terrastream::api::routes)
                    .default_service(web::to(|req: HttpRequest| async move {
                        HttpResponse::Ok().body(format!("{:?}", req.resource_map()))
                    })),
            )
            .await;
            let request = test::TestRequest::get()
                .uri("/__route-tree__/")
                .to_request();
            String::from_utf8(test::call_and_read_body(&app, request).await.to_vec()).unwrap()
        })
    })
    .join()
    .expect("reading the route tree failed");
    let patterns = leaf_patterns(&tree);
    assert!(
        patterns.len() >= 40,
        "read only {} routes from actix's route tree; has its Debug form changed?\n{tree}",
        patterns.len()
    );
    patterns
}

/// Parses `ResourceMap { pattern: ResourceDef { .. patterns: Single("p") .. }, .., nodes:
/// Some([ResourceMap { .. }, ..]) }`: the concatenated patterns of the nodes without
/// children.
fn leaf_patterns(tree: &str) -> BTreeSet<String> {
    struct Node {
        depth: usize,
        pattern: Option<String>,
        children: usize,
    }
    let mut leaves = BTreeSet::new();
    let mut stack: Vec<Node> = Vec::new();
    let mut depth = 0usize;
    let mut rest = tree;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("ResourceMap {") {
            if let Some(parent) = stack.last_mut() {
                parent.children += 1;
            }
            depth += 1;
            stack.push(Node {
                depth,
                pattern: None,
                children: 0,
            });
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("patterns: ") {
            let literal = after
                .strip_prefix("Single(")
                .unwrap_or_else(|| panic!("a resource with several patterns: {after:.80}"));
            let (pattern, after) = string_literal(literal);
            let node = stack.last_mut().expect("a pattern outside a resource");
            // The first `patterns:` in a node is its own ResourceDef's.
            node.pattern.get_or_insert(pattern);
            rest = after;
            continue;
        }
        match c {
            '"' => {
                rest = string_literal(rest).1;
                continue;
            }
            '{' => depth += 1,
            '}' => {
                if stack.last().is_some_and(|node| node.depth == depth) {
                    let node = stack.pop().unwrap();
                    if node.children == 0 {
                        let mut path: String =
                            stack.iter().filter_map(|n| n.pattern.as_deref()).collect();
                        path.push_str(node.pattern.as_deref().unwrap_or_default());
                        leaves.insert(path);
                    }
                }
                depth -= 1;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    leaves
}

/// The contents of the Debug string literal `text` starts with, and what follows it.
fn string_literal(text: &str) -> (String, &str) {
    let body = text.strip_prefix('"').expect("not a string literal");
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &body[i + 1..]),
            c => value.push(c),
        }
    }
    panic!("an unterminated string literal");
}

#[tokio::test]
async fn openapi_document_passes_openapi_spec_validator() {
    let app = spawn_app().await;
    let document = document(&app).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));

    let file = app.data_dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(root.join("tools/venv/bin/python"))
        .args(["-I", "-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("cannot run openapi-spec-validator (scripts/setup.sh installs it)");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn openapi_documents_every_route_and_only_routes_that_exist() {
    let app = spawn_app().await;
    let documented = documented(&document(&app).await);

    let mut table = BTreeSet::new();
    for pattern in route_patterns() {
        for method in METHODS {
            if served(&app, method, &pattern).await {
                table.insert((method.to_owned(), pattern.clone()));
            }
        }
    }
    // A literal path that a parameter's pattern also matches (`/twins/bulk-delete` and
    // `/twins/{id}`) answers the other methods through that pattern: those are its routes.
    let through_parameter: Vec<(String, String)> = table
        .iter()
        .filter(|(method, path)| {
            !path.contains('{')
                && table
                    .iter()
                    .any(|(m, p)| m == method && p.contains('{') && matches_pattern(p, path))
        })
        .cloned()
        .collect();
    for route in through_parameter {
        table.remove(&route);
    }
    for (method, path, why) in UNDOCUMENTABLE {
        let route = (method.to_owned(), path.to_owned());
        assert!(
            table.remove(&route),
            "{method} {path} is listed as undocumentable ({why}) but not served"
        );
    }

    let undocumented: Vec<_> = table.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json (add a #[utoipa::path] and list it in ApiDoc): {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&table).collect();
    assert!(
        unserved.is_empty(),
        "in /openapi.json but not served by the route table: {unserved:?}"
    );
}

#[tokio::test]
async fn openapi_says_truly_which_operations_need_a_credential() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let default_security = &document["security"];
    for (method, path) in documented(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let security = operation.get("security").unwrap_or(default_security);
        let secured = security
            .as_array()
            .is_some_and(|reqs| reqs.iter().any(|r| r != &serde_json::json!({})));
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&concrete(&path)),
            )
            .send()
            .await
            .unwrap();
        let refused = response.status() == StatusCode::UNAUTHORIZED;
        assert_eq!(
            refused,
            secured,
            "{method} {path}: documented {}, but without a credential it answered {}",
            if secured {
                "as needing a credential"
            } else {
                "as public"
            },
            response.status()
        );
        if secured {
            assert!(
                operation["responses"].get("401").is_some(),
                "{method} {path} needs a credential but documents no 401"
            );
        }
    }
}

/// Does `pattern` (segments, `{name}` any one) match the literal `path`?
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let (pattern, path): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(p, s)| p == s || (p.starts_with('{') && p.ends_with('}')))
}
