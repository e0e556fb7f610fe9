//! The provider driven by real terraform (1.15.5 and 1.0.3 from tools/, installed by
//! scripts/setup.sh) on examples/demo: after every run the sandbox directory must hold exactly
//! the objects terraform's state says exist.
//!
//! The provider under test is the binary cargo builds for this test, laid out in a private
//! filesystem mirror, so the tests never use a stale copy from tools/providers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const PROVIDER_ADDRESS: &str = "terrastream.local/terrastream/sandbox";
/// Short but non-zero, so the delays are exercised without slowing the suite.
const FAST: &str = "-var=base_delay_ms=20";
const DEMO_OBJECTS: usize = 12;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the provider crate sits in the repository root")
        .to_path_buf()
}

/// A terraform installed by scripts/setup.sh. Missing tools fail the test: never skipped.
fn terraform(file_name: &str) -> PathBuf {
    let path = repo_root().join("tools/bin").join(file_name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

fn terraform_1_15_5() -> PathBuf {
    terraform("terraform")
}

fn terraform_1_0_3() -> PathBuf {
    terraform("terraform-1.0.3")
}

/// A copy of examples/demo with its own sandbox directory, provider mirror and CLI config.
struct Workspace {
    terraform: PathBuf,
    dir: TempDir,
    sandbox: TempDir,
    cli_home: TempDir,
}

impl Workspace {
    fn new(terraform: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let demo = repo_root().join("examples/demo");
        for entry in fs::read_dir(&demo).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "tf") {
                fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }

        let cli_home = tempfile::tempdir().unwrap();
        let mirror = cli_home.path().join("providers");
        let platform_dir = mirror
            .join(PROVIDER_ADDRESS)
            .join(env!("CARGO_PKG_VERSION"))
            .join("linux_amd64");
        fs::create_dir_all(&platform_dir).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_terraform-provider-sandbox"),
            platform_dir.join(format!(
                "terraform-provider-sandbox_v{}",
                env!("CARGO_PKG_VERSION")
            )),
        )
        .unwrap();
        fs::write(
            cli_home.path().join("terraformrc"),
            format!(
                r#"provider_installation {{
  filesystem_mirror {{
    path    = "{}"
    include = ["terrastream.local/*/*"]
  }}
  direct {{
    exclude = ["terrastream.local/*/*"]
  }}
}}
"#,
                mirror.display()
            ),
        )
        .unwrap();

        Self {
            terraform,
            dir,
            sandbox: tempfile::tempdir().unwrap(),
            cli_home,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.terraform);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TF_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .current_dir(self.dir.path())
            .env(
                "TF_CLI_CONFIG_FILE",
                self.cli_home.path().join("terraformrc"),
            )
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("SANDBOX_DIR", self.sandbox.path())
            // Set on purpose: the provider's error messages must stay clean sentences anyway.
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "terraform {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn init(&self) {
        self.run_ok(&["init", "-no-color"]);
    }

    /// Ids of the objects in the sandbox directory.
    fn sandbox_ids(&self) -> BTreeSet<String> {
        fs::read_dir(self.sandbox.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .map(|name| {
                name.strip_suffix(".json")
                    .unwrap_or_else(|| panic!("unexpected file {name} in the sandbox"))
                    .to_owned()
            })
            .collect()
    }

    /// Statuses of the objects in the sandbox directory.
    fn sandbox_statuses(&self) -> BTreeSet<String> {
        self.sandbox_ids()
            .iter()
            .map(|id| {
                let text = fs::read_to_string(self.sandbox.path().join(format!("{id}.json")));
                let object: Value = serde_json::from_str(&text.unwrap()).unwrap();
                object["status"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    fn state(&self) -> Value {
        let text = fs::read_to_string(self.dir.path().join("terraform.tfstate")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `(address, id)` of every managed resource instance in terraform.tfstate.
    fn state_instances(&self) -> BTreeSet<(String, String)> {
        let state = self.state();
        let mut instances = BTreeSet::new();
        for resource in state["resources"].as_array().unwrap() {
            if resource["mode"] != "managed" {
                continue;
            }
            let address = format!(
                "{}.{}",
                resource["type"].as_str().unwrap(),
                resource["name"].as_str().unwrap()
            );
            for instance in resource["instances"].as_array().unwrap() {
                let address = match &instance["index_key"] {
                    Value::Null => address.clone(),
                    Value::String(key) => format!("{address}[\"{key}\"]"),
                    other => format!("{address}[{other}]"),
                };
                let id = instance["attributes"]["id"].as_str().unwrap().to_owned();
                instances.insert((address, id));
            }
        }
        instances
    }

    fn state_ids(&self) -> BTreeSet<String> {
        self.state_instances()
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    fn state_addresses(&self) -> BTreeSet<String> {
        self.state_instances()
            .into_iter()
            .map(|(address, _)| address)
            .collect()
    }

    fn assert_sandbox_matches_state(&self) {
        assert_eq!(
            self.sandbox_ids(),
            self.state_ids(),
            "sandbox objects (left) differ from the state's ids (right)"
        );
    }

    fn remove_object(&self, id: &str) {
        fs::remove_file(self.sandbox.path().join(format!("{id}.json"))).unwrap();
    }
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `(address, action)` of every planned_change message.
fn planned_changes(output: &Output) -> BTreeSet<(String, String)> {
    json_lines(output)
        .into_iter()
        .filter(|message| message["type"] == "planned_change")
        .map(|message| {
            let change = &message["change"];
            (
                change["resource"]["addr"].as_str().unwrap().to_owned(),
                change["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn all(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| a.to_string()).collect()
}

#[test]
fn deploy_drift_rename_and_destroy_with_terraform_1_15_5() {
    let ws = Workspace::new(terraform_1_15_5());
    ws.init();

    ws.run_ok(&["plan", "-no-color", "-out=demo.tfplan", FAST]);
    assert!(
        ws.sandbox_ids().is_empty(),
        "planning must not create anything"
    );
    ws.run_ok(&["apply", "-no-color", "demo.tfplan"]);
    assert_eq!(ws.state_ids().len(), DEMO_OBJECTS);
    ws.assert_sandbox_matches_state();
    assert_eq!(ws.sandbox_statuses(), all(&["ready"]));
    let state = ws.state();
    let outputs = &state["outputs"];
    assert_eq!(
        outputs["iot_hub_endpoint"]["value"],
        "https://iot-hub-factory-7-hub.sandbox.local"
    );
    assert_eq!(outputs["database_secret"]["sensitive"], true);
    assert!(outputs["database_secret"]["value"]
        .as_str()
        .unwrap()
        .starts_with("sbx_"));

    // Reading back what was written changes nothing.
    let output = ws.run(&["plan", "-json", "-detailed-exitcode", FAST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // An object deleted behind terraform's back is planned again.
    let (alerts, alerts_id) = ws
        .state_instances()
        .into_iter()
        .find(|(address, _)| address == "sandbox_resource.alerts_fn")
        .unwrap();
    ws.remove_object(&alerts_id);
    let output = ws.run(&["plan", "-json", "-detailed-exitcode", FAST]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(
        planned_changes(&output),
        BTreeSet::from([(alerts, "create".to_owned())])
    );

    // Renaming replaces that one object; what references its endpoint is updated in place.
    let output = ws.run_ok(&["plan", "-json", "-var=dashboard_title=ops", FAST]);
    let changes = planned_changes(&output);
    assert!(
        changes.contains(&("sandbox_resource.grafana".into(), "replace".into())),
        "{changes:?}"
    );

    ws.run_ok(&["destroy", "-auto-approve", "-no-color", FAST]);
    assert!(ws.state_ids().is_empty());
    assert!(ws.sandbox_ids().is_empty(), "{:?}", ws.sandbox_ids());
}

#[test]
fn failed_creates_leave_a_partial_state_that_matches_the_sandbox() {
    let ws = Workspace::new(terraform_1_15_5());
    ws.init();

    let output = ws.run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        FAST,
        r#"-var=fail_on_create=["grafana","line"]"#,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("Creating grafana \"factory-7-operations\" failed"),
        "{err}"
    );
    assert!(err.contains("fail_on_create is set"), "{err}");
    assert!(
        !err.contains("backtrace") && !err.contains(".rs:"),
        "error texts must not carry backtraces:\n{err}"
    );

    // Everything that does not depend on the failed objects exists, in state and sandbox alike.
    assert_eq!(
        ws.state_addresses(),
        all(&[
            "sandbox_resource.aggregate_fn",
            "sandbox_resource.alerts_fn",
            "sandbox_resource.ingest_fn",
            "sandbox_resource.iot_hub",
            "sandbox_resource.registry_db",
            "sandbox_resource.telemetry_db",
            "sandbox_resource.twin_model",
        ])
    );
    ws.assert_sandbox_matches_state();
    assert_eq!(ws.sandbox_statuses(), all(&["ready"]));

    ws.run_ok(&["destroy", "-auto-approve", "-no-color", FAST]);
    assert!(ws.sandbox_ids().is_empty(), "{:?}", ws.sandbox_ids());
}

#[test]
fn a_failed_destroy_keeps_the_object_in_state_and_sandbox() {
    let ws = Workspace::new(terraform_1_15_5());
    ws.init();
    ws.run_ok(&[
        "apply",
        "-auto-approve",
        "-no-color",
        FAST,
        r#"-var=fail_on_destroy=["iot_hub"]"#,
    ]);
    ws.assert_sandbox_matches_state();

    let output = ws.run(&["destroy", "-auto-approve", "-no-color", FAST]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("fail_on_destroy is set"),
        "{}",
        stderr(&output)
    );
    assert_eq!(ws.state_addresses(), all(&["sandbox_resource.iot_hub"]));
    ws.assert_sandbox_matches_state();
}

#[test]
fn one_sigint_to_the_process_group_stops_gracefully_without_orphans() {
    let ws = Workspace::new(terraform_1_15_5());
    ws.init();
    // Long enough that other creates are in flight when the first one completes.
    let mut child = ws
        .command(&["apply", "-json", "-auto-approve", "-var=base_delay_ms=200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).unwrap();
        text
    });

    let mut messages = Vec::new();
    let mut interrupted = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let message: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if !interrupted && message["type"] == "apply_complete" {
            // As the gateway cancels: SIGINT once, to terraform's whole process group.
            let group = format!("-{}", child.id());
            let kill = Command::new("kill")
                .args(["-INT", "--", &group])
                .status()
                .unwrap();
            assert!(kill.success());
            interrupted = true;
        }
        messages.push(message);
    }
    let status = child.wait().unwrap();
    let err = stderr_reader.join().unwrap();
    assert!(interrupted, "no object was ever created: {err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        messages.iter().any(|m| m["@message"]
            .as_str()
            .unwrap()
            .contains("Interrupt received")),
        "terraform did not report the interrupt"
    );

    // In-flight creates finished and were saved: no orphan, nothing half-created.
    ws.assert_sandbox_matches_state();
    assert_eq!(ws.sandbox_statuses(), all(&["ready"]));
    let created = ws.state_ids().len();
    assert!(
        (1..DEMO_OBJECTS).contains(&created),
        "{created} objects created"
    );

    ws.run_ok(&["destroy", "-auto-approve", "-no-color", FAST]);
    assert!(ws.sandbox_ids().is_empty(), "{:?}", ws.sandbox_ids());
}

#[test]
fn a_missing_sandbox_directory_is_a_clear_error() {
    let ws = Workspace::new(terraform_1_15_5());
    ws.init();
    let output = ws
        .command(&["plan", "-no-color", FAST])
        .env_remove("SANDBOX_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("No sandbox directory"), "{err}");
    assert!(err.contains("SANDBOX_DIR"), "{err}");
}

#[test]
fn deploy_and_destroy_with_terraform_1_0_3() {
    let ws = Workspace::new(terraform_1_0_3());
    ws.init();
    ws.run_ok(&["apply", "-auto-approve", "-no-color", FAST]);
    assert_eq!(ws.state_ids().len(), DEMO_OBJECTS);
    ws.assert_sandbox_matches_state();

    let output = ws.run(&["plan", "-no-color", "-detailed-exitcode", FAST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    ws.run_ok(&["destroy", "-auto-approve", "-no-color", FAST]);
    assert!(ws.state_ids().is_empty());
    assert!(ws.sandbox_ids().is_empty(), "{:?}", ws.sandbox_ids());
}
