//! The gateway as a real process: the built `terrastream` binary serving a data directory,
//! found ready by polling `GET /healthz`, then killed with SIGKILL (a crash) or stopped with
//! SIGTERM, and started again on the same data directory.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use tempfile::TempDir;
use terrastream::config::Settings;
use tokio::process::{Child, Command};

use crate::helpers::TestApp;

/// Longest wait for a start: a restart first settles what the killed gateway left running,
/// which waits for terraform to stop (bounded by the `--cancel-grace-secs` the test gives).
pub const START_PATIENCE: Duration = Duration::from_secs(180);

/// A `terrastream serve` process. Dereferences to a [`TestApp`] at its address, so the run and
/// state helpers work on it as on an in-process gateway.
pub struct GatewayProcess {
    pub app: TestApp,
    child: Child,
    /// Arguments after `serve --data-dir <dir> --bind 127.0.0.1:<port> --tools-dir <tools>
    /// --no-demo`, the same for every start.
    args: Vec<String>,
    /// Environment variables added to the gateway's, the same for every start.
    env: Vec<(String, String)>,
    /// The port of every start: runs that outlive a start reach the next one there.
    port: u16,
    /// Where each start's stderr (the gateway's log) goes: `gateway-<n>.log`.
    logs: TempDir,
    starts: usize,
}

impl std::ops::Deref for GatewayProcess {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Starts the gateway binary on a fresh data directory with `args` added to its command line.
pub async fn start_gateway(args: &[&str]) -> GatewayProcess {
    start_gateway_with_env(args, &[]).await
}

/// [`start_gateway`] with variables added to the gateway's environment.
pub async fn start_gateway_with_env(args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
    start_gateway_on(crate::helpers::test_database_url(), args, env).await
}

/// [`start_gateway_with_env`] on the PostgreSQL database `database_url` (SQLite in its data
/// directory for `None`). A gateway joining a database another one made has no admin token
/// file: its `admin_token` is empty until the test gives it the first one's.
pub async fn start_gateway_on(
    database_url: Option<String>,
    args: &[&str],
    env: &[(&str, &str)],
) -> GatewayProcess {
    let data_dir = tempfile::tempdir().expect("cannot create a temporary data directory");
    let logs = tempfile::tempdir().expect("cannot create a directory for logs");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(url) = &database_url {
        env.push(("TERRASTREAM_DATABASE_URL".into(), url.clone()));
    }
    let port = free_port();
    let (child, address) = launch(data_dir.path(), port, &args, &env, &log_path(&logs, 1)).await;
    let token_file = Settings::new(data_dir.path()).admin_token_path();
    let admin_token = match std::fs::read_to_string(&token_file) {
        Ok(token) => token.trim().to_owned(),
        Err(_) if database_url.is_some() => String::new(),
        Err(e) => panic!("no admin token in {}: {e}", token_file.display()),
    };
    let mut settings = Settings::new(data_dir.path());
    settings.tools_dir = Some(tools_dir());
    settings.database_url = database_url;
    GatewayProcess {
        app: TestApp {
            address,
            admin_token,
            client: client(),
            settings,
            data_dir,
            store: std::sync::OnceLock::new(),
        },
        child,
        args,
        env,
        port,
        logs,
        starts: 1,
    }
}

/// A port nobody listens on now (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free port")
}

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools")
}

fn log_path(logs: &TempDir, start: usize) -> PathBuf {
    logs.path().join(format!("gateway-{start}.log"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("cannot build the HTTP client")
}

/// Spawns `terrastream serve` on port 0, reads the port it got from its log, and waits until
/// `GET /healthz` answers 200. Returns the child and `http://127.0.0.1:<port>`.
async fn launch(
    data_dir: &Path,
    port: u16,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> (Child, String) {
    let stderr = std::fs::File::create(log).expect("cannot create the gateway's log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrastream"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-demo")
        .arg("--tools-dir")
        .arg(tools_dir())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // The port is read from the `terrastream listening port=...` line.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start the terrastream binary");
    let deadline = Instant::now() + START_PATIENCE;
    let port = loop {
        if let Some(port) = listening_port(log) {
            break port;
        }
        exited_early(&mut child, log);
        assert!(
            Instant::now() < deadline,
            "the gateway did not listen within {START_PATIENCE:?}:\n{}",
            read_log(log)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let address = format!("http://127.0.0.1:{port}");
    let probe = client();
    loop {
        let health = probe
            .get(format!("{address}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if health.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        exited_early(&mut child, log);
        assert!(
            Instant::now() < deadline,
            "GET /healthz was not 200 within {START_PATIENCE:?}:\n{}",
            read_log(log)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, address)
}

fn listening_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("terrastream listening"))?;
    let (_, rest) = line.split_once("port=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn exited_early(child: &mut Child, log: &Path) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "the gateway exited ({status}) before it was ready:\n{}",
            read_log(log)
        );
    }
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log at {}: {e})", log.display()))
}

impl GatewayProcess {
    pub fn pid(&self) -> Pid {
        let pid = self.child.id().expect("the gateway was already reaped");
        Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"))
    }

    /// The log of the current start.
    pub fn log(&self) -> String {
        read_log(&log_path(&self.logs, self.starts))
    }

    /// Sends `signal` to the gateway process only (terraform runs in its own process groups).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("cannot send {signal}: {e}"));
    }

    /// Waits for the process to exit. `patience` only guards against a hang.
    pub async fn wait_exit(&mut self, patience: Duration) -> ExitStatus {
        match tokio::time::timeout(patience, self.child.wait()).await {
            Ok(status) => status.expect("cannot wait for the gateway"),
            Err(_) => panic!(
                "the gateway did not exit within {patience:?}:\n{}",
                self.log()
            ),
        }
    }

    /// `kill -9`: the gateway dies at once, whatever it was doing, and is reaped.
    pub async fn crash(&mut self) {
        self.signal(Signal::SIGKILL);
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGKILL as i32)
        );
    }

    /// A lost machine: `kill -9` of the gateway and of everything it started (every run's
    /// monitor and what runs under it), and the gateway reaped.
    pub async fn lose_machine(&mut self) {
        let mut victims = monitors_of(&self.app.settings.data_dir);
        victims.push(self.pid().as_raw());
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert!(status.code().is_none(), "{status}");
        // What ran under the monitors dies with them (bubblewrap's --die-with-parent).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !monitors_of(&self.app.settings.data_dir).is_empty() {
            assert!(Instant::now() < deadline, "monitors outlived a kill -9");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the gateway again on the same data directory (on the same port), after this one
    /// exited; returns it and how long it took to be ready (the restart settles first).
    pub async fn start_again(self) -> (GatewayProcess, Duration) {
        let GatewayProcess {
            app,
            mut child,
            args,
            env,
            port,
            logs,
            starts,
        } = self;
        assert!(
            matches!(child.try_wait(), Ok(Some(_))),
            "start_again while the gateway still runs"
        );
        let started = Instant::now();
        let (child, address) = launch(
            app.settings.data_dir.as_path(),
            port,
            &args,
            &env,
            &log_path(&logs, starts + 1),
        )
        .await;
        let took = started.elapsed();
        let gateway = GatewayProcess {
            app: TestApp {
                address,
                client: client(),
                ..app
            },
            child,
            args,
            env,
            port,
            logs,
            starts: starts + 1,
        };
        (gateway, took)
    }
}

/// Processes (terraform, its providers) still alive that were started for `run_id`: every
/// process a run starts carries `TERRASTREAM_RUN_ID` in its environment.
pub fn processes_of_run(run_id: &str) -> Vec<i32> {
    let marker = format!("TERRASTREAM_RUN_ID={run_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// The run monitors working for the gateway of `data_dir` (`terrastream monitor <its step
/// dir>`), zombies excepted.
pub fn monitors_of(data_dir: &Path) -> Vec<i32> {
    let needle = format!("monitor\0{}", data_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat.rsplit(')').next()?.trim_start().starts_with('Z');
            let ours = String::from_utf8_lossy(&cmdline).contains(&needle);
            (ours && !zombie).then_some(pid)
        })
        .collect()
}
