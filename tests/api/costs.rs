//! Cost estimates (`GET /twins/{id}/costs`), the provider catalog (`/providers`) and twins
//! created from a provider's template.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use terrastream::app::Application;
use terrastream::config::Settings;

use crate::helpers::{assert_error, json_body, spawn_app, spawn_app_with, TestApp};
use crate::run_helpers::{sandbox_config, spawn_run_app_with, Res};

/// The prices the figures below are computed from by hand. The sandbox's region, `local`,
/// makes databases 15 % dearer.
const TEST_BOOK: &str = r#"{
  "description": "test prices",
  "currency": "USD",
  "resources": {
    "sandbox_resource": {
      "by_attribute": {
        "attribute": "kind",
        "values": {
          "iot_hub":  { "category": "networking", "monthly": 12.34 },
          "database": { "category": "database",   "monthly": 45.67, "regions": { "local": 1.15 } },
          "function": { "category": "compute",    "monthly": 3.21 },
          "grafana":  { "category": "compute",    "monthly": 9.99 },
          "twin":     { "category": "storage",    "monthly": 0.5 }
        }
      }
    }
  }
}"#;

/// A file that lives as long as the returned directory.
fn write_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

impl TestApp {
    pub async fn costs(&self, token: &str, twin_id: &str) -> reqwest::Response {
        self.request(Method::GET, &format!("/twins/{twin_id}/costs"), token)
            .send()
            .await
            .expect("the request failed to send")
    }

    /// `GET /twins/{id}/costs` as JSON, failing unless 200.
    pub async fn costs_ok(&self, token: &str, twin_id: &str) -> Value {
        let response = self.costs(token, twin_id).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::OK, "costs: {body}");
        body
    }

    pub async fn providers(&self, token: &str, path: &str) -> reqwest::Response {
        self.request(Method::GET, &format!("/providers{path}"), token)
            .send()
            .await
            .expect("the request failed to send")
    }
}

/// The demo twin, from the sandbox template in the region `local`, deployed for real.
///
/// By hand, per month: networking 1 x 12.34 = 12.34; database 2 x (45.67 x 1.15 = 52.5205,
/// rounded per resource to 52.52) = 105.04; compute 3 x 3.21 + 2 x 9.99 = 29.61; storage
/// 4 x 0.50 = 2.00; total 12.34 + 105.04 + 29.61 + 2.00 = 148.99. A third production line
/// adds one twin object: storage 2.50, total 149.49, a delta of +0.50.
#[tokio::test]
async fn a_deployed_demo_twin_costs_the_hand_computed_figure() {
    let (_book_dir, book) = write_file("prices.json", TEST_BOOK);
    let app = spawn_run_app_with(|s| s.price_book = Some(book)).await;
    let token = app.admin_token.clone();
    let body = json!({
        "name": "demo", "provider": "sandbox", "region": "local",
        "variables": { "base_delay_ms": 20 }
    });
    let response = app.create_twin(&token, &body).await;
    let status = response.status();
    let twin = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{twin}");
    let id = twin["id"].as_str().unwrap().to_owned();

    // Nothing deployed: nothing to pay, but still an estimate in the same shape.
    let before = app.costs_ok(&token, &id).await;
    assert_eq!(before["source"], "state");
    assert_eq!(before["estimated"], true);
    assert_eq!(before["costs"]["total"], 0.0);
    assert_eq!(before["costs"]["currency"], "USD");
    assert_eq!(before["breakdown"], json!([]));

    app.run_ok(&token, &id, "deploy").await;
    let costs = app.costs_ok(&token, &id).await;
    assert_eq!(costs["twin_id"], id.as_str());
    assert_eq!(costs["source"], "state");
    assert_eq!(costs["region"], "local");
    assert!(
        costs["state_version"].as_i64().is_some_and(|v| v >= 1),
        "{costs}"
    );
    assert_eq!(
        costs["costs"],
        json!({
            "compute": 29.61, "storage": 2.0, "networking": 12.34, "database": 105.04,
            "total": 148.99,
            "resourceCounts": { "compute": 5, "storage": 4, "networking": 1, "database": 2 },
            "currency": "USD", "period": "monthly"
        })
    );
    assert_eq!(costs["unpriced"], json!([]));
    let breakdown = costs["breakdown"].as_array().unwrap();
    assert_eq!(breakdown.len(), 12);
    let db = breakdown
        .iter()
        .find(|l| l["address"] == "sandbox_resource.telemetry_db")
        .unwrap();
    assert_eq!(
        db,
        &json!({ "address": "sandbox_resource.telemetry_db", "type": "sandbox_resource",
                 "category": "database", "monthly": 52.52, "region": "local" })
    );
    assert!(breakdown
        .iter()
        .any(|l| l["address"] == r#"sandbox_resource.line["line-b"]"# && l["monthly"] == 0.5));
    assert_eq!(costs["delta"], Value::Null);

    // A plan preview that adds a production line: the costs are the plan's, with the change.
    let mut variables = twin["variables"].clone();
    variables["production_lines"] = json!(["line-a", "line-b", "line-c"]);
    let response = app
        .update_twin(&token, &id, &json!({ "variables": variables }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let plan_run = app.start_run_ok(&token, &id, "plan").await;
    let run = app.wait_for_run(&token, &plan_run).await;
    assert_eq!(run["status"], "completed", "{run}");
    let planned = app.costs_ok(&token, &id).await;
    assert_eq!(planned["source"], "plan");
    assert_eq!(planned["plan_run_id"], plan_run.as_str());
    assert_eq!(planned["costs"]["total"], 149.49);
    assert_eq!(planned["costs"]["resourceCounts"]["storage"], 5);
    assert_eq!(
        planned["delta"],
        json!({ "compute": 0.0, "storage": 0.5, "networking": 0.0, "database": 0.0,
                "total": 0.5, "currency": "USD", "period": "monthly" })
    );
    // Once applied, the state says the same and the preview no longer applies.
    app.run_ok(&token, &id, "deploy").await;
    let applied = app.costs_ok(&token, &id).await;
    assert_eq!(applied["source"], "state");
    assert_eq!(applied["costs"], planned["costs"]);

    // A kind the book does not price is listed, not guessed.
    let probe = app
        .create_sandbox_twin(&token, "probe", &sandbox_config(&[Res::new("probe", 0)]))
        .await;
    app.run_ok(&token, &probe, "deploy").await;
    let costs = app.costs_ok(&token, &probe).await;
    assert_eq!(costs["costs"]["total"], 0.0);
    assert_eq!(costs["costs"]["resourceCounts"]["compute"], 0);
    assert_eq!(
        costs["unpriced"],
        json!([{ "address": "sandbox_resource.probe", "type": "sandbox_resource",
                 "reason": "the price book has no price for kind = \"test\"" }])
    );

    // Only the owner (or an admin) sees a twin's costs.
    let stranger = app.create_user_token("mallory");
    assert_error(
        app.costs(&stranger, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.costs(&token, "twin_00000000000000000000000000000000")
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn the_provider_catalog_lists_every_provider_and_each_one_alone() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");

    let response = app.providers(&alice, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let providers = json_body(response).await;
    let ids: Vec<&str> = providers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["aws", "azure", "gcp", "sandbox"]);

    let response = app.providers(&alice, "/aws").await;
    assert_eq!(response.status(), StatusCode::OK);
    let aws = json_body(response).await;
    assert_eq!(aws["name"], "Amazon Web Services");
    assert_eq!(
        aws["regions"][0],
        json!({ "id": "eu-central-1", "name": "Europe (Frankfurt)" })
    );
    assert_eq!(
        aws["sizes"][0],
        json!({ "id": "small", "name": "Small: one line, burstable database", "nodes": 1, "monthlyCost": 120.0 })
    );
    assert_eq!(aws, providers[0]);

    let sandbox = json_body(app.providers(&alice, "/sandbox").await).await;
    assert_eq!(
        sandbox["regions"],
        json!([{ "id": "local", "name": "This machine" }])
    );

    for missing in ["/ibm", "/%20", "/aws/extra"] {
        assert_error(
            app.providers(&alice, missing).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let anonymous = app.client.get(app.url("/providers")).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn an_operator_catalog_replaces_the_bundled_one() {
    let catalog = r#"[{"id": "sandbox", "name": "Lab", "regions": [{"id": "bench-1", "name": "Bench"}],
                      "sizes": [{"id": "tiny", "name": "Tiny", "nodes": 1, "monthlyCost": 1.5}]}]"#;
    let (_dir, path) = write_file("providers.json", catalog);
    let app = spawn_app_with(|s| s.provider_catalog = Some(path)).await;
    let token = app.admin_token.clone();
    let providers = json_body(app.providers(&token, "").await).await;
    assert_eq!(providers, serde_json::from_str::<Value>(catalog).unwrap());
    assert_error(
        app.providers(&token, "/aws").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let twin = json_body(
        app.create_twin(&token, &json!({ "name": "lab", "provider": "sandbox" }))
            .await,
    )
    .await;
    assert_eq!(
        twin["variables"],
        json!({ "region": "bench-1", "size": "tiny" })
    );
    // A provider the catalog does not list has no template here.
    let response = app
        .create_twin(&token, &json!({ "name": "cloud", "provider": "aws" }))
        .await;
    let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("not in the provider catalog"),
        "{error}"
    );
}

#[tokio::test]
async fn a_twin_starts_from_its_provider_template_in_a_catalog_region_and_size() {
    let app = spawn_app().await;
    let alice = app.create_user_token("alice");

    let body =
        json!({ "name": "plant", "provider": "aws", "region": "eu-west-1", "size": "medium" });
    let response = app.create_twin(&alice, &body).await;
    let status = response.status();
    let twin = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{twin}");
    assert_eq!(twin["provider"], "aws");
    assert_eq!(
        twin["variables"],
        json!({ "region": "eu-west-1", "size": "medium" })
    );
    let files: Vec<&str> = twin["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(files, ["main.tf", "outputs.tf", "variables.tf"]);
    let main = twin["files"]["main.tf"].as_str().unwrap();
    assert!(
        main.contains("resource \"aws_db_instance\" \"telemetry\""),
        "{main}"
    );
    assert!(main.contains("region = var.region"));

    // Defaults: the provider's first region and size; other variables are kept.
    let body = json!({ "name": "lab", "provider": "gcp", "variables": { "project": "p-1" } });
    let twin = json_body(app.create_twin(&alice, &body).await).await;
    assert_eq!(
        twin["variables"],
        json!({ "project": "p-1", "region": "europe-west3", "size": "small" })
    );
    // A variable chooses as well as the field does, and is checked the same.
    let body = json!({ "name": "azure", "provider": "azure", "variables": { "region": "eastus" } });
    let twin = json_body(app.create_twin(&alice, &body).await).await;
    assert_eq!(
        twin["variables"],
        json!({ "region": "eastus", "size": "small" })
    );

    // The sandbox template is the demo twin plus the region and size variables.
    let body = json!({ "name": "sandbox", "provider": "sandbox" });
    let twin = json_body(app.create_twin(&alice, &body).await).await;
    assert_eq!(
        twin["variables"],
        json!({ "region": "local", "size": "local" })
    );
    assert_eq!(
        twin["files"]["main.tf"],
        include_str!("../../examples/demo/main.tf")
    );
    assert!(twin["files"]["placement.tf"].is_string());

    // Files and a catalog region: the files are kept and the region becomes a variable.
    let mut body = crate::helpers::twin_body("own files");
    body["variables"] = json!({});
    body["region"] = json!("local");
    let twin = json_body(app.create_twin(&alice, &body).await).await;
    assert_eq!(twin["variables"], json!({ "region": "local" }));
    assert_eq!(twin["files"], body["files"]);
}

#[tokio::test]
async fn unknown_regions_and_sizes_are_422_and_a_body_without_files_or_provider_400() {
    let app = spawn_app().await;
    let token = app.admin_token.clone();
    let cases = [
        (
            json!({ "name": "a", "provider": "aws", "region": "westeurope" }),
            "unknown region 'westeurope' for aws",
        ),
        (
            json!({ "name": "a", "provider": "azure", "size": "huge" }),
            "unknown size 'huge' for azure",
        ),
        (
            json!({ "name": "a", "provider": "aws", "variables": { "region": "mars-1" } }),
            "unknown region 'mars-1'",
        ),
        (
            json!({ "name": "a", "provider": "gcp", "region": "us-east1", "variables": { "region": "us-central1" } }),
            "given both as a field and as a variable",
        ),
        (
            json!({ "name": "a", "provider": "sandbox", "region": "eu-central-1", "files": { "main.tf": "" } }),
            "unknown region 'eu-central-1' for sandbox",
        ),
        (
            json!({ "name": "a", "provider": "ibm" }),
            "unknown provider 'ibm'",
        ),
        (json!({ "name": " ", "provider": "aws" }), "name"),
    ];
    for (body, expected) in cases {
        let response = app.create_twin(&token, &body).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{body}: {detail}");
    }

    for body in [
        json!({ "name": "a", "region": "local" }),
        json!({ "name": "a", "region": 5, "provider": "aws" }),
        json!({ "name": "a", "provider": "aws", "zone": "b" }),
    ] {
        assert_error(
            app.create_twin(&token, &body).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    let listed = json_body(app.list_twins(&token).await).await;
    assert_eq!(listed, json!([]), "nothing was created");
}

#[tokio::test]
async fn a_bad_price_book_or_catalog_stops_the_start_naming_the_file_and_the_problem() {
    let (_dir, book) = write_file(
        "prices.json",
        r#"{"currency": "USD", "resources": {"aws_db_instance": {"category": "database", "monthly": 29.205}}}"#,
    );
    let data = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(data.path());
    settings.bind = "127.0.0.1:0".into();
    settings.price_book = Some(book.clone());
    let message = match Application::build(settings.clone()) {
        Ok(_) => panic!("a bad price book was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(message.contains(&book.display().to_string()), "{message}");
    assert!(
        message.contains("resources.aws_db_instance.monthly has more than 2 decimals"),
        "{message}"
    );

    settings.price_book = None;
    settings.provider_catalog = Some(data.path().join("missing.json"));
    let message = match Application::build(settings) {
        Ok(_) => panic!("a missing catalog was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        message.contains("cannot read the provider catalog"),
        "{message}"
    );
    assert!(message.contains("missing.json"), "{message}");
}

/// The templates cannot be planned here (no cloud, no registry), but terraform must parse
/// them: `terraform fmt -check` fails on a syntax error, and on untidy files.
#[test]
fn the_bundled_templates_are_valid_hcl_in_terraform_format() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let terraform = root.join("tools/bin/terraform");
    assert!(
        terraform.is_file(),
        "run scripts/setup.sh first: no {}",
        terraform.display()
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    let output = std::process::Command::new(&terraform)
        .args(["fmt", "-check", "-diff", "-recursive"])
        .arg(root.join("catalog/templates"))
        .env("TF_CLI_CONFIG_FILE", config.path())
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "terraform fmt: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value after `"<key>": ` in docs/api.md's Costs example, parsed (`<key>_first`: the
/// first item of that list).
fn documented(key: &str) -> Value {
    let docs = include_str!("../../docs/api.md");
    let section = docs
        .split("\n## Costs\n")
        .nth(1)
        .expect("api.md has a Costs section");
    let example = section.split("```json\n").nth(1).expect("a JSON example");
    let (key, skip) = match key.strip_suffix("_first") {
        Some(list) => (list, 5), // past `": [`
        None => (key, 4),
    };
    let start = example
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("the example has no {key}"))
        + key.len()
        + skip;
    let mut stream = serde_json::Deserializer::from_str(&example[start..]).into_iter::<Value>();
    stream.next().expect("a value").expect("valid JSON")
}

/// docs/api.md's Costs example is what the demo twin costs with the bundled price book, so a
/// user who deploys the demo sees the figures the docs show.
#[tokio::test]
async fn the_documented_costs_example_is_what_the_demo_costs_with_the_bundled_book() {
    let app = spawn_run_app_with(|_| {}).await;
    let token = app.admin_token.clone();
    let body = json!({
        "name": "demo", "provider": "sandbox", "region": "local",
        "variables": { "base_delay_ms": 20 }
    });
    let response = app.create_twin(&token, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = json_body(response).await["id"].as_str().unwrap().to_owned();
    app.run_ok(&token, &id, "deploy").await;
    let costs = app.costs_ok(&token, &id).await;
    assert_eq!(costs["costs"], documented("costs"), "{costs:#}");
    assert_eq!(costs["unpriced"], documented("unpriced"), "{costs:#}");
    // The example's breakdown lists its first line and "...": that line must be there.
    let line = documented("breakdown_first");
    let breakdown = costs["breakdown"].as_array().unwrap();
    assert!(breakdown.contains(&line), "{line} not in {breakdown:#?}");
}
