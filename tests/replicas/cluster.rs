//! Replicas of the gateway on one database: each a real `terrastream serve` with its own port
//! and data directory, the same `--database-url` and `--state-key`, and one sandbox "cloud".
//! And followers: SSE clients that reconnect with `Last-Event-ID` whenever their stream ends
//! or breaks, as a browser's EventSource does.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::process_helpers::{start_gateway_on, GatewayProcess};
use crate::run_helpers::{SseEvent, SseParser};

/// The state key every replica is given.
const STATE_KEY: &str = "5e1f0c0a9d2b4e7f8a6c3b1d2e4f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b";

/// Longest wait for anything a run does in these tests (terraform, restarts).
pub const PATIENCE: Duration = Duration::from_secs(180);

pub struct Replicas {
    pub database_url: String,
    /// The sandbox provider's objects, shared by every replica as a cloud would be.
    pub sandbox: TempDir,
    /// The admin token the first replica made.
    pub token: String,
    pub gateways: Vec<GatewayProcess>,
}

impl Replicas {
    /// `count` replicas on a fresh database, started one after another.
    pub async fn start(count: usize) -> Replicas {
        let database_url = crate::postgres_cluster::cluster().new_database();
        let mut replicas = Replicas {
            database_url,
            sandbox: tempfile::tempdir().unwrap(),
            token: String::new(),
            gateways: Vec::new(),
        };
        for _ in 0..count {
            replicas.add().await;
        }
        replicas
    }

    /// Starts one more replica; its index.
    pub async fn add(&mut self) -> usize {
        let sandbox = self.sandbox.path().display().to_string();
        let args = ["--sandbox-dir", &sandbox, "--cancel-grace-secs", "30"];
        let env = [("TERRASTREAM_STATE_KEY", STATE_KEY)];
        let mut gateway = start_gateway_on(Some(self.database_url.clone()), &args, &env).await;
        gateway.app.settings.sandbox_dir = Some(self.sandbox.path().to_path_buf());
        if self.token.is_empty() {
            assert!(
                !gateway.app.admin_token.is_empty(),
                "the first replica made no admin token"
            );
            self.token = gateway.app.admin_token.clone();
        } else {
            assert!(
                gateway.app.admin_token.is_empty(),
                "a joining replica made an admin token of its own"
            );
            gateway.app.admin_token = self.token.clone();
        }
        self.gateways.push(gateway);
        self.gateways.len() - 1
    }

    pub fn replica_id(&self, index: usize) -> String {
        std::fs::read_to_string(self.gateways[index].settings.replica_id_path())
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.gateways.iter().map(|g| port_of(&g.address)).collect()
    }

    /// SIGTERM (its runs left to their monitors), then a start on the same port and data
    /// directory.
    pub async fn restart(&mut self, index: usize) {
        let mut gateway = self.gateways.remove(index);
        gateway.signal(Signal::SIGTERM);
        gateway.wait_exit(PATIENCE).await;
        let token = gateway.app.admin_token.clone();
        let (mut gateway, _) = gateway.start_again().await;
        gateway.app.admin_token = token;
        self.gateways.insert(index, gateway);
    }

    /// Polls `GET /runs/{id}` through replica `index` until `done(run)`; the run then.
    pub async fn wait_run(
        &self,
        index: usize,
        run_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let run = self.gateways[index].get_run_ok(&self.token, run_id).await;
            if done(&run) {
                return run;
            }
            assert!(Instant::now() < deadline, "the run stayed {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// What a follower saw: every event in order, and how many times it connected.
#[derive(Debug)]
pub struct Followed {
    pub events: Vec<SseEvent>,
    pub connections: usize,
}

/// Follows the run's events at `base` (a replica or nginx) until `done`, reconnecting with
/// `Last-Event-ID` after every end or break of its stream and every refused connection.
pub fn follow(base: &str, token: &str, run_id: &str) -> tokio::task::JoinHandle<Followed> {
    let (url, token) = (format!("{base}/runs/{run_id}/events"), token.to_owned());
    tokio::spawn(async move {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut followed = Followed {
            events: Vec::new(),
            connections: 0,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(
                Instant::now() < deadline,
                "no done within {PATIENCE:?}: {} events, {} connections",
                followed.events.len(),
                followed.connections
            );
            let mut request = client.get(&url).bearer_auth(&token);
            if let Some(last) = followed.events.last() {
                request = request.header("Last-Event-ID", last.seq().to_string());
            }
            let response = match request.send().await {
                Ok(response) if response.status() == StatusCode::OK => response,
                // Read to its end already (without done it is an assertion's job to say so).
                Ok(response) if response.status() == StatusCode::NO_CONTENT => return followed,
                // A replica going away, nginx between two: ask again.
                Ok(_) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            followed.connections += 1;
            let mut parser = SseParser::default();
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(bytes) = chunk else { break };
                for event in parser.feed(&bytes) {
                    let done = event.event == "done";
                    followed.events.push(event);
                    if done {
                        return followed;
                    }
                }
            }
        }
    })
}
