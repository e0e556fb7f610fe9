//! Runs that outlive the gateway process: the real `terrastream` binary is killed (`kill -9`)
//! or stopped (SIGTERM) in the middle of a run, at many moments of init, plan, apply and
//! destroy, and started again on the same data directory and port. The run goes on under its
//! monitor and the restarted gateway adopts it: it ends as it would have, its stream joined
//! across the restart holds every line terraform printed exactly once, and state and sandbox
//! agree. A lost machine (the gateway and its monitors killed) fails the run within seconds.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::process_helpers::{monitors_of, processes_of_run, start_gateway, GatewayProcess};
use crate::run_helpers::{
    assert_well_formed, done, lines, sandbox_config, stages, statuses, Cursor, RecordingTerraform,
    Res, SseEvent, PATIENCE,
};

/// Four objects created (and destroyed) in parallel: three done one after another within
/// 2 s, giving several distinct moments to be killed at, and one taking 6 s, so that at every
/// such moment the run is seconds from its end.
const SLOW: [Res; 4] = [
    Res::new("a", 1000).destroy_ms(1000),
    Res::new("b", 1500).destroy_ms(1500),
    Res::new("c", 2000).destroy_ms(2000),
    Res::new("d", 6000).destroy_ms(6000),
];

/// Where in a run the gateway is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// On the `initializing` stage: terraform init is about to start, or starting.
    Initializing,
    /// On the `planning` stage: the apply is planning.
    Planning,
    /// On the `applying` stage: the first change has started.
    Applying,
    /// After the n-th `Creating...` line: creates in flight.
    Creating(usize),
    /// After the n-th `Creation complete` line: some done (maybe saved), others in flight.
    Created(usize),
    /// After the n-th `Destruction complete` line of a destroy.
    Destroyed(usize),
}

impl KillAt {
    fn is_destroy(self) -> bool {
        matches!(self, KillAt::Destroyed(_))
    }

    /// A predicate over the stream that is true on the event to kill at.
    fn matcher(self) -> impl FnMut(&SseEvent) -> bool {
        let mut count = 0;
        move |event| {
            let mut counts = |needle: &str| {
                if event.line().is_some_and(|l| l.contains(needle)) {
                    count += 1;
                }
                count
            };
            let stage = |name: &str| event.event == "stage" && event.json()["stage"] == name;
            match self {
                KillAt::Initializing => stage("initializing"),
                KillAt::Planning => stage("planning"),
                KillAt::Applying => stage("applying"),
                KillAt::Creating(n) => counts(": Creating...") == n,
                KillAt::Created(n) => counts(": Creation complete") == n,
                KillAt::Destroyed(n) => counts(": Destruction complete") == n,
            }
        }
    }
}

/// The moments the default rounds use (longer soaks cycle through them).
const MOMENTS: [KillAt; 8] = [
    KillAt::Initializing,
    KillAt::Planning,
    KillAt::Applying,
    KillAt::Creating(3),
    KillAt::Created(1),
    KillAt::Created(3),
    KillAt::Destroyed(1),
    KillAt::Destroyed(3),
];

/// Rounds of the crash test: `TERRASTREAM_SOAK_ROUNDS` (scripts/soak-crash.sh), else one per
/// moment.
fn rounds() -> usize {
    std::env::var("TERRASTREAM_SOAK_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(MOMENTS.len())
}

/// Rounds at once, each with its own gateway process, data directory and port.
const CONCURRENT_ROUNDS: usize = 4;

/// A gateway whose terraform keeps a copy of everything it prints.
async fn recorded_gateway(extra: &[&str]) -> (GatewayProcess, RecordingTerraform) {
    let terraform = RecordingTerraform::new();
    let program = terraform.program.display().to_string();
    let dir = terraform.dir().display().to_string();
    let mut args = vec![
        "--terraform",
        program.as_str(),
        "--run-writable",
        dir.as_str(),
        "--cancel-grace-secs",
        "120",
    ];
    args.extend_from_slice(extra);
    (start_gateway(&args).await, terraform)
}

#[tokio::test]
async fn killing_the_gateway_at_any_moment_leaves_the_run_to_finish_and_the_restart_adopts_it() {
    use futures_util::StreamExt;
    let started = Instant::now();
    let reports: Vec<String> = futures_util::stream::iter(0..rounds())
        .map(|round| kill_round(round, MOMENTS[round % MOMENTS.len()], Duration::ZERO))
        .buffer_unordered(CONCURRENT_ROUNDS)
        .collect()
        .await;
    for report in reports {
        eprintln!("{report}");
    }
    eprintln!("kill rounds took {:?}", started.elapsed());
}

/// The gateway stays down while terraform goes on: well past the apply's end. terraform's
/// state writes wait for the backend (it retries for about 75 s), and the restart completes
/// the run from its spool.
#[tokio::test]
async fn a_restart_thirty_seconds_after_the_kill_completes_the_run_terraform_finished() {
    let report = kill_round(0, KillAt::Creating(2), Duration::from_secs(30)).await;
    eprintln!("{report}");
}

/// One round: start a deploy (or a destroy of what a deploy made), `kill -9` the gateway
/// alone at `moment`, wait `down`, start it again, and follow the run to its end.
async fn kill_round(round: usize, moment: KillAt, down: Duration) -> String {
    let (mut gateway, terraform) = recorded_gateway(&[]).await;
    let token = gateway.admin_token.clone();
    let twin = gateway
        .create_sandbox_twin(&token, &format!("round {round}"), &sandbox_config(&SLOW))
        .await;
    let kind = if moment.is_destroy() {
        gateway.run_ok(&token, &twin, "deploy").await;
        "destroy"
    } else {
        "deploy"
    };
    let before = terraform.invocations().len();
    let mut stream = gateway.run_streamed(&token, &twin, kind).await;
    let mut seen = Vec::new();
    let reached = stream.read_until(&mut seen, moment.matcher()).await;
    assert!(
        reached,
        "round {round}: the {kind} ended before {moment:?}: {:#?}",
        lines(&seen)
    );
    let run_id = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .expect("the run's id");
    let context = format!("round {round}, {kind} killed at {moment:?}, run {run_id}");

    gateway.crash().await;
    drop(stream);
    let monitors_left = monitors_of(&gateway.settings.data_dir).len();
    if !down.is_zero() {
        tokio::time::sleep(down).await;
    }
    let (gateway, took) = gateway.start_again().await;
    // It answers at once: adoption happens behind the listening socket.
    assert!(
        took < Duration::from_secs(10),
        "{context}: ready after {took:?}"
    );

    // The client reconnects where it was, as EventSource does with Last-Event-ID.
    let last = seen.last().map_or(0, SseEvent::seq);
    let rest = gateway
        .subscribe(&token, &run_id, Cursor::Header(last))
        .await
        .read_to_end()
        .await;
    let mut joined = seen.clone();
    joined.extend(rest);
    assert_well_formed(&joined, &run_id);
    assert_eq!(
        gateway.all_events(&token, &run_id).await,
        joined,
        "{context}: a replay differs from the joined stream"
    );
    let finished = done(&joined);
    assert_eq!(finished["outcome"], "succeeded", "{context}: {finished}");
    let (status, objects) = if kind == "deploy" {
        ("deployed", SLOW.len())
    } else {
        ("draft", 0)
    };
    assert_eq!(finished["twin_status"], status, "{context}");
    let working = if kind == "deploy" {
        "deploying"
    } else {
        "destroying"
    };
    assert_eq!(statuses(&joined), [working, status], "{context}");
    assert!(
        stages(&joined).ends_with(&["complete".to_owned()]),
        "{context}"
    );
    let twin_now = gateway.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], status, "{context}");
    assert_eq!(twin_now["is_locked"], false, "{context}");
    let run = gateway.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "completed", "{context}: {run}");

    // Nothing orphaned, nothing lost.
    let in_sandbox = gateway.sandbox_ids(&twin);
    assert_eq!(in_sandbox.len(), objects, "{context}: {in_sandbox:?}");
    assert_eq!(gateway.state_ids(&twin).await, in_sandbox, "{context}");

    // Every line terraform printed, once, in order, per stream.
    let printed = |stream: fn(&crate::run_helpers::Invocation) -> &Vec<String>| -> Vec<String> {
        terraform.invocations()[before..]
            .iter()
            .filter(|i| ["init", "apply", "destroy"].contains(&i.args[0].as_str()))
            .flat_map(|i| stream(i).iter().map(|l| crate::run_helpers::shown(l)))
            .collect()
    };
    let logged = |stream: &str| -> Vec<String> {
        joined
            .iter()
            .filter(|e| e.event == "log" && e.json()["stream"] == stream)
            .filter_map(SseEvent::line)
            .filter(|l| !l.starts_with("State is empty"))
            .collect()
    };
    assert_eq!(
        logged("stdout"),
        printed(|i| &i.stdout),
        "{context}: stdout"
    );
    assert_eq!(
        logged("stderr"),
        printed(|i| &i.stderr),
        "{context}: stderr"
    );

    // The run's processes are gone with its end.
    let deadline = Instant::now() + PATIENCE;
    while !processes_of_run(&run_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{context}: processes outlived the run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(gateway).await;
    format!(
        "{context}: ready {took:?} after the restart; {monitors_left} monitors outlived the kill"
    )
}

async fn stop(mut gateway: GatewayProcess) {
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}:\n{}", gateway.log());
}

/// A lost machine: the gateway and its monitors killed together, terraform with them. The next
/// start answers at once and fails the run within seconds, its twin unlocked, with a history
/// row and a `done` for readers.
#[tokio::test]
async fn when_the_gateway_and_its_monitors_are_lost_the_restart_fails_the_run_within_seconds() {
    let mut gateway = start_gateway(&[]).await;
    let token = gateway.admin_token.clone();
    let twin = gateway
        .create_sandbox_twin(&token, "lost", &sandbox_config(&SLOW))
        .await;
    let mut stream = gateway.run_streamed(&token, &twin, "deploy").await;
    let mut seen = Vec::new();
    assert!(
        stream
            .read_until(&mut seen, KillAt::Created(1).matcher())
            .await
    );
    let run_id = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .unwrap();
    gateway.lose_machine().await;
    drop(stream);
    assert!(
        processes_of_run(&run_id).is_empty(),
        "terraform outlived its monitor"
    );

    let restarted = Instant::now();
    let (gateway, took) = gateway.start_again().await;
    assert!(took < Duration::from_secs(10), "ready after {took:?}");
    let run = gateway.wait_for_run(&token, &run_id).await;
    let settled_in = restarted.elapsed();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("monitor is gone")),
        "{run}"
    );
    let twin_now = gateway.get_twin_ok(&token, &twin).await;
    assert_eq!(twin_now["deployment_status"], "error");
    assert_eq!(twin_now["is_locked"], false);
    let history = gateway.history_ok(&token, &twin).await;
    assert!(
        history
            .iter()
            .any(|row| row["run_id"] == run_id.as_str() && row["to_status"] == "error"),
        "{history:#?}"
    );
    let events = gateway.all_events(&token, &run_id).await;
    assert_well_formed(&events, &run_id);
    assert_eq!(events[..seen.len()], seen[..]);
    eprintln!("a lost machine's run was failed {settled_in:?} after the restart");
    // The twin can be deployed again at once. terraform was killed with its monitor, so
    // objects it was creating are orphans (a cloud would bill them): the deploy creates what
    // its state lacks, and the orphans stay for an operator, as after any killed terraform.
    gateway.run_ok(&token, &twin, "deploy").await;
    let state = gateway.state_ids(&twin).await;
    assert_eq!(state.len(), SLOW.len());
    assert!(state.is_subset(&gateway.sandbox_ids(&twin)));
    stop(gateway).await;
}

/// SIGTERM (every upgrade, every `systemctl restart`) leaves the run to its monitor: the
/// gateway exits 0 at once, its streams end without `done` (clients reconnect), and after the
/// restart the run completes.
#[tokio::test]
async fn sigterm_mid_apply_exits_at_once_and_the_run_completes_after_the_restart() {
    let mut gateway = start_gateway(&[]).await;
    let token = gateway.admin_token.clone();
    let twin = gateway
        .create_sandbox_twin(&token, "upgraded", &sandbox_config(&SLOW))
        .await;
    let mut stream = gateway.run_streamed(&token, &twin, "deploy").await;
    let mut seen = Vec::new();
    assert!(
        stream
            .read_until(&mut seen, KillAt::Creating(2).matcher())
            .await
    );
    let run_id = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .unwrap();

    let signalled = Instant::now();
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(60)).await;
    let exited_in = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gateway.log());
    assert!(
        exited_in < Duration::from_secs(10),
        "exited after {exited_in:?}"
    );
    // The open stream ended cleanly, without done: the run goes on.
    seen.extend(stream.read_to_end().await);
    assert_ne!(seen.last().map(|e| e.event.as_str()), Some("done"));
    assert!(
        !monitors_of(&gateway.settings.data_dir).is_empty(),
        "no monitor left"
    );

    let (gateway, _) = gateway.start_again().await;
    let last = seen.last().map_or(0, SseEvent::seq);
    let mut joined = seen.clone();
    joined.extend(
        gateway
            .subscribe(&token, &run_id, Cursor::Query(last))
            .await
            .read_to_end()
            .await,
    );
    assert_well_formed(&joined, &run_id);
    assert_eq!(
        done(&joined)["outcome"],
        "succeeded",
        "{:#?}",
        lines(&joined)
    );
    assert_eq!(gateway.sandbox_ids(&twin).len(), SLOW.len());
    assert_eq!(gateway.state_ids(&twin).await, gateway.sandbox_ids(&twin));
    eprintln!("SIGTERM to exit: {exited_in:?}");
    stop(gateway).await;
}

/// An adopted run is the gateway's like any other: it can be cancelled (terraform stops
/// gracefully, what it created is saved).
#[tokio::test]
async fn an_adopted_run_can_be_cancelled() {
    let mut gateway = start_gateway(&["--cancel-grace-secs", "120"]).await;
    let token = gateway.admin_token.clone();
    let twin = gateway
        .create_sandbox_twin(&token, "adopted", &sandbox_config(&SLOW))
        .await;
    let mut stream = gateway.run_streamed(&token, &twin, "deploy").await;
    let mut seen = Vec::new();
    assert!(
        stream
            .read_until(&mut seen, KillAt::Creating(4).matcher())
            .await
    );
    let run_id = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .unwrap();
    gateway.crash().await;
    drop(stream);
    let (gateway, _) = gateway.start_again().await;
    // Cancel as soon as the restart has adopted it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = gateway.cancel_run(&token, &twin).await;
        if response.status() == reqwest::StatusCode::ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "the run was never adopted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = gateway.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(gateway.state_ids(&twin).await, gateway.sandbox_ids(&twin));
    stop(gateway).await;
}

/// A run waiting for a slot when the gateway stops waits in the store, and starts after the
/// restart; the one that held the slot completes too.
#[tokio::test]
async fn a_queued_run_waits_through_a_restart_and_starts_after_it() {
    let mut gateway = start_gateway(&["--max-concurrent-runs", "1"]).await;
    let token = gateway.admin_token.clone();
    let first = gateway
        .create_sandbox_twin(&token, "first", &sandbox_config(&[Res::new("a", 3000)]))
        .await;
    let second = gateway
        .create_sandbox_twin(&token, "second", &sandbox_config(&[Res::new("b", 0)]))
        .await;
    let first_run = gateway.start_run_ok(&token, &first, "deploy").await;
    let second_run = gateway.start_run_ok(&token, &second, "deploy").await;
    let waiting: Value = gateway.get_run_ok(&token, &second_run).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");

    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0));
    let (gateway, _) = gateway.start_again().await;
    let first = gateway.wait_for_run(&token, &first_run).await;
    assert_eq!(first["status"], "completed", "{first}");
    let second = gateway.wait_for_run(&token, &second_run).await;
    assert_eq!(second["status"], "completed", "{second}");
    stop(gateway).await;
}
