//! Run isolation: a twin's terraform, providers and provisioners must not reach the gateway's
//! secrets (admin token, state key, database), another owner's twin, the gateway's
//! environment or a concurrent run's environment. The attacker is a non-admin owner whose twin
//! only has `local-exec` provisioners, run by the real gateway binary with real terraform.

use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::json_body;
use crate::process_helpers::{processes_of_run, start_gateway_with_env, GatewayProcess};
use crate::run_helpers::{lines, sandbox_config, Res, PATIENCE};
use crate::state_helpers::get_ok;

/// A secret only the gateway's own environment holds.
const GATEWAY_ENV_SECRET: &str = "jwt-secret-only-the-gateway-knows-4f1c";
const CAROL_FILE_MARKER: &str = "CAROL-FILE-MARKER-93b2";
const CAROL_VARIABLE: &str = "carol-variable-secret-7d61";

/// Bob's twin: one resource whose provisioner tries to read each of `targets` and searches
/// the whole filesystem and every visible process's environment.
fn prober(targets: &[String]) -> String {
    let tries: String = targets
        .iter()
        .map(|t| format!("      try '{t}'\n"))
        .collect();
    format!(
        r#"resource "terraform_data" "probe" {{
  provisioner "local-exec" {{
    command = <<-EOT
      try() {{
        if head -c 400 "$1" >/dev/null 2>&1; then
          echo "LOOT $1: $(head -c 400 "$1" | tr '\000\n' '  ')"
        else
          echo "DENIED $1"
        fi
      }}
{tries}      echo "FOUND [$(find / -xdev \( -name admin-token -o -name state.key -o -name terrastream.db \) 2>/dev/null | tr '\n' ' ')]"
      echo "PROCESSES $(ls -d /proc/[0-9]* | wc -l)"
      for p in /proc/[0-9]*; do tr '\000' '\n' < $p/environ 2>/dev/null; done | grep -o 'run_secret_[0-9a-f]*' | sort -u | sed 's/^/ENV /'
      echo "PROBE DONE"
    EOT
  }}
}}
"#
    )
}

struct Attack {
    gateway: GatewayProcess,
    bob: String,
    carol: String,
    bob_twin: String,
    bob_run: String,
    carol_run: String,
    targets: Vec<String>,
}

/// Carol deploys a slow twin; while her apply runs, Bob deploys the prober aimed at the
/// gateway's files, Carol's working directory and both the gateway's and Carol's terraform's
/// environments.
async fn attack(extra_args: &[&str]) -> Attack {
    let gateway = start_gateway_with_env(
        extra_args,
        &[("TERRASTREAM_JWT_SECRET", GATEWAY_ENV_SECRET)],
    )
    .await;
    let bob = gateway.create_user_token("bob");
    let carol = gateway.create_user_token("carol");

    let carol_config = format!(
        "# {CAROL_FILE_MARKER}\nvariable \"motto\" {{\n  type = string\n}}\n{}",
        sandbox_config(&[Res::new("slow", 8000)])
    );
    let response = gateway
        .create_twin(
            &carol,
            &json!({"name": "carol's", "provider": "sandbox",
                    "files": {"main.tf": carol_config}, "variables": {"motto": CAROL_VARIABLE}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let carol_twin = json_body(response).await["id"].as_str().unwrap().to_owned();
    let mut carol_stream = gateway.run_streamed(&carol, &carol_twin, "deploy").await;
    let mut seen = Vec::new();
    assert!(
        carol_stream
            .read_until(&mut seen, |e| e
                .line()
                .is_some_and(|l| l.contains("sandbox_resource.slow: Creating...")))
            .await,
        "carol's apply never started: {:#?}",
        lines(&seen)
    );
    let carol_run = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .unwrap();
    let carol_pids = processes_of_run(&carol_run);
    assert!(!carol_pids.is_empty(), "carol's terraform is not running");

    let data = gateway.settings.data_dir.clone();
    let mut targets: Vec<String> = ["admin-token", "state.key", "terrastream.db"]
        .iter()
        .map(|f| data.join(f).display().to_string())
        .collect();
    for file in ["main.tf", "terrastream_variables.auto.tfvars.json"] {
        targets.push(
            data.join("work")
                .join(&carol_twin)
                .join(file)
                .display()
                .to_string(),
        );
    }
    targets.push(format!("/proc/{}/environ", gateway.pid()));
    targets.extend(carol_pids.iter().map(|pid| format!("/proc/{pid}/environ")));

    let response = gateway
        .create_twin(
            &bob,
            &json!({"name": "innocent", "provider": "sandbox", "files": {"main.tf": prober(&targets)}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let bob_twin = json_body(response).await["id"].as_str().unwrap().to_owned();
    let bob_run = gateway.run_ok(&bob, &bob_twin, "deploy").await;
    drop(carol_stream);
    Attack {
        gateway,
        bob,
        carol,
        bob_twin,
        bob_run,
        carol_run,
        targets,
    }
}

/// Everything Bob can read about his run: its events, its twin's state and outputs.
async fn what_bob_sees(attack: &Attack) -> (Vec<String>, String) {
    let gateway = &attack.gateway;
    let events = gateway.all_events(&attack.bob, &attack.bob_run).await;
    let lines = lines(&events);
    let mut everything: Vec<String> = events.iter().map(|e| e.data.clone()).collect();
    for route in ["/state", "/outputs"] {
        everything.push(get_ok(gateway, &attack.bob_twin, route).await.to_string());
    }
    let twin = gateway.get_twin_ok(&attack.bob, &attack.bob_twin).await;
    everything.push(twin.to_string());
    (lines, everything.join("\n"))
}

fn secrets(attack: &Attack) -> Vec<(&'static str, String)> {
    let data = &attack.gateway.settings.data_dir;
    let state_key = std::fs::read_to_string(data.join("state.key")).unwrap();
    vec![
        ("the admin token", attack.gateway.admin_token.clone()),
        ("the state key", state_key.trim().to_owned()),
        ("the database", "SQLite format 3".to_owned()),
        ("carol's file", CAROL_FILE_MARKER.to_owned()),
        ("carol's variable", CAROL_VARIABLE.to_owned()),
        ("the gateway's environment", GATEWAY_ENV_SECRET.to_owned()),
    ]
}

#[tokio::test]
async fn a_twins_provisioners_cannot_read_the_gateways_secrets_or_another_run() {
    let attack = attack(&[]).await;
    let (lines, everything) = what_bob_sees(&attack).await;
    assert!(
        lines.iter().any(|l| l.contains("(local-exec): PROBE DONE")),
        "the probe did not run: {lines:#?}"
    );
    for target in &attack.targets {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("(local-exec): DENIED {target}"))),
            "bob's twin could read {target}: {lines:#?}"
        );
    }
    let found = lines
        .iter()
        .find(|l| l.contains("(local-exec): FOUND ["))
        .unwrap();
    assert!(found.ends_with("FOUND []"), "{found}");
    // Bob sees his own run's processes only: bwrap's init, terraform, the shell, its children.
    let processes: usize = lines
        .iter()
        .find_map(|l| l.split("(local-exec): PROCESSES ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(processes < 12, "bob sees {processes} processes");
    for (what, secret) in secrets(&attack) {
        assert!(
            !everything.contains(&secret),
            "{what} reached bob's run ({secret}):\n{everything}"
        );
    }
    // A run's backend secret is `run_secret_<64 hex>`; bob's own is masked, carol's unseen.
    let leaked = everything
        .match_indices("run_secret_")
        .any(|(at, m)| everything[at + m.len()..].starts_with(|c: char| c.is_ascii_hexdigit()));
    assert!(
        !leaked,
        "a run's backend secret reached bob's run:\n{everything}"
    );

    // Carol's run went on undisturbed.
    let carol_run = attack
        .gateway
        .wait_for_run(&attack.carol, &attack.carol_run)
        .await;
    assert_eq!(carol_run["status"], "completed", "{carol_run}");

    let ready: Value = attack
        .gateway
        .client
        .get(attack.gateway.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["run_isolation"], "bubblewrap", "{ready}");
    let metrics = attack
        .gateway
        .client
        .get(attack.gateway.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("terrastream_run_isolation{mode=\"bubblewrap\"} 1"),
        "{metrics}"
    );
    stop(attack.gateway).await;
}

/// The same attack with `--run-isolation none` succeeds: what the isolation prevents is real.
#[tokio::test]
async fn without_isolation_the_same_twin_reads_the_admin_token_and_the_log_says_so() {
    let attack = attack(&["--run-isolation", "none"]).await;
    let (lines, _) = what_bob_sees(&attack).await;
    let token = &attack.gateway.admin_token;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("(local-exec): LOOT") && l.contains(token.as_str())),
        "without isolation the admin token should be readable: {lines:#?}"
    );
    assert!(
        attack.gateway.log().contains("run isolation is OFF"),
        "{}",
        attack.gateway.log()
    );
    let _ = attack
        .gateway
        .wait_for_run(&attack.carol, &attack.carol_run)
        .await;
    stop(attack.gateway).await;
}

async fn stop(mut gateway: GatewayProcess) {
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(PATIENCE + Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
}

/// Terraform 1.0.3 (a static binary that re-runs itself under a wrapper) works inside the
/// isolation too: a deploy and a destroy of sandbox objects.
#[tokio::test]
async fn terraform_1_0_3_deploys_and_destroys_inside_the_isolation() {
    let old =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bin/terraform-1.0.3");
    let app = crate::run_helpers::spawn_run_app_with(|s| s.terraform = Some(old)).await;
    let token = app.admin_token.clone();
    let config = sandbox_config(&[Res::new("a", 100), Res::new("b", 200)]);
    let twin = app
        .create_sandbox_twin(&token, "old terraform", &config)
        .await;
    app.run_ok(&token, &twin, "deploy").await;
    assert_eq!(app.sandbox_ids(&twin).len(), 2);
    assert_eq!(app.state_ids(&twin).await, app.sandbox_ids(&twin));
    app.run_ok(&token, &twin, "destroy").await;
    assert!(app.sandbox_ids(&twin).is_empty());
}
