//! What a new user sees: `terrastream serve` on an empty data directory prints the admin token
//! once and offers the demo twin, which deploys with the project's terraform and sandbox.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(120);

/// Starts the real binary as the README's run command does (demo on), with its stdout and
/// log in files; returns it and its address once it answers.
async fn serve(data_dir: &Path, out: &Path, log: &Path) -> (Child, String) {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools");
    let mut args = vec![OsString::from("--data-dir"), data_dir.into()];
    args.extend([OsString::from("--tools-dir"), tools.into()]);
    serve_in(Path::new(env!("CARGO_MANIFEST_DIR")), &args, out, log).await
}

/// Starts `terrastream serve --bind 127.0.0.1:0 <args>` with `cwd` as its working directory.
async fn serve_in(cwd: &Path, args: &[OsString], out: &Path, log: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrastream"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("TERRASTREAM_DATA_DIR")
        .env_remove("TERRASTREAM_TOOLS_DIR")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let port = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some((_, rest)) = text
            .lines()
            .find(|l| l.contains("terrastream listening"))
            .and_then(|l| l.split_once("port="))
        {
            break rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway exited:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "the gateway never listened:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    (child, format!("http://127.0.0.1:{port}"))
}

async fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// The demo twin (the only twin of a first start), made quick and deployed; fails the test
/// unless the deploy completes with all 12 objects in state.
async fn deploy_the_demo(address: &str, token: &str) -> Value {
    let client = reqwest::Client::new();
    let twins: Value = client
        .get(format!("{address}/twins"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let twins = twins.as_array().unwrap();
    assert_eq!(twins.len(), 1, "{twins:?}");
    assert_eq!(twins[0]["name"], "demo");
    assert_eq!(twins[0]["provider"], "sandbox");
    let id = twins[0]["id"].as_str().unwrap().to_owned();

    // Quick delays; otherwise the demo as shipped.
    let updated = client
        .put(format!("{address}/twins/{id}"))
        .bearer_auth(token)
        .json(&json!({ "variables": { "base_delay_ms": 20 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let started: Value = client
        .post(format!("{address}/twins/{id}/deploy"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = started["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + PATIENCE;
    let run = loop {
        let run: Value = client
            .get(format!("{address}/runs/{run_id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["end_time"].is_string() {
            break run;
        }
        assert!(Instant::now() < deadline, "the deploy did not end: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    let status: Value = client
        .get(format!("{address}/twins/{id}/infrastructure-status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["db_status"], "deployed");
    assert_eq!(status["resource_count"], 12);
    run
}

#[tokio::test]
async fn a_first_start_prints_the_admin_token_once_and_the_demo_twin_deploys() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (out, log) = (files.path().join("stdout"), files.path().join("stderr"));
    let (gateway, address) = serve(data.path(), &out, &log).await;

    let token = std::fs::read_to_string(data.path().join("admin-token")).unwrap();
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(printed.contains(token.trim()), "stdout: {printed}");
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains(token.trim()),
        "the token must not reach the log"
    );
    deploy_the_demo(&address, token.trim()).await;
    stop(gateway).await;

    // A second start on the same data directory: no new token, no second demo.
    let client = reqwest::Client::new();
    let (out2, log2) = (files.path().join("stdout2"), files.path().join("stderr2"));
    let (gateway, address) = serve(data.path(), &out2, &log2).await;
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), "");
    let twins: Value = client
        .get(format!("{address}/twins"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(twins.as_array().unwrap().len(), 1);
    stop(gateway).await;
}

/// A relative `--data-dir` (with a space in it) and another working directory than the
/// repository: nothing handed to terraform may be relative to where the gateway started, and
/// the tools folder is found beside the binary.
#[tokio::test]
async fn a_relative_data_dir_from_another_working_directory_deploys_the_demo() {
    let cwd = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (out, log) = (files.path().join("stdout"), files.path().join("stderr"));
    let args = [
        OsString::from("--data-dir"),
        OsString::from("state dir/gateway"),
    ];
    let (gateway, address) = serve_in(cwd.path(), &args, &out, &log).await;
    let data_dir = cwd.path().join("state dir/gateway");
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let run = deploy_the_demo(&address, token.trim()).await;
    assert_eq!(run["status"], "completed", "{run}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains("Unable to open CLI configuration file"),
        "{log_text}"
    );
    stop(gateway).await;
}
