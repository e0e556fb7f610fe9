//! A throwaway PostgreSQL server for the tests, started by the tests themselves: one cluster
//! per test process (Debian's `postgresql` binaries, `initdb` in a temporary directory, run
//! as the `postgres` user when the tests run as root), a fresh database per gateway. The
//! server dies with the test process.
// Test support (also built into the bench): a failure here is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

pub struct Cluster {
    port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster of this test process, started on first use (throwaway: durability off).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| off_runtime(|| Cluster::start(false)))
}

/// Runs `call` on a thread of its own: the postgres client blocks on a runtime of its own,
/// which cannot start on a thread that drives async tests.
pub fn off_runtime<T: Send>(call: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(call).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A connection to `url`, on which `call` runs (off the runtime).
pub fn with_client<T: Send>(url: &str, call: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    off_runtime(|| {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .expect("cannot reach the test PostgreSQL");
        call(&mut client)
    })
}

impl Cluster {
    /// A new, empty database; its URL.
    pub fn new_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        with_client(&self.url("postgres"), |admin| {
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("cannot create a test database");
        });
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A cluster of its own; `durable`: PostgreSQL's defaults (fsync, synchronous commit),
    /// as a benchmark should measure, else durability off for speed.
    pub fn start(durable: bool) -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("terrastream-pg-{}", std::process::id()));
        remove_stale_clusters();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the cluster directory");
        let runner = Runner::new();
        runner.give(&dir);
        let data = dir.join("data");
        let log = std::fs::File::create(dir.join("initdb.log")).expect("cannot create a log");
        let status = runner
            .command(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .stdout(log.try_clone().expect("cannot share the log"))
            .stderr(log)
            .status()
            .expect("cannot run initdb");
        assert!(
            status.success(),
            "initdb failed: see {}",
            dir.join("initdb.log").display()
        );
        let port = free_port();
        spawn_server(
            runner,
            bin.join("postgres"),
            data,
            dir.clone(),
            port,
            durable,
        );
        let cluster = Self { port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls) {
                Ok(_) => return cluster,
                Err(err) if Instant::now() > deadline => panic!(
                    "the test PostgreSQL did not start ({err}): see {}",
                    dir.join("server.log").display()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Starts the server from a thread that lives as long as the process, so the server's
/// parent-death signal fires when the test process ends, not when one test's thread does.
fn spawn_server(
    runner: Runner,
    program: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    port: u16,
    durable: bool,
) {
    let (started, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let log = std::fs::File::create(dir.join("server.log")).expect("cannot create a log");
        let mut command = runner.command(&program);
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&dir)
            // Room for many gateways' pools.
            .args(["-c", "max_connections=400"]);
        if !durable {
            // Throwaway data: durability off.
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
            command.args(["-c", "full_page_writes=off"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log"))
            .stderr(log)
            .spawn();
        let _ = started.send(child.map(|_| ()));
        loop {
            std::thread::park();
        }
    });
    wait.recv()
        .expect("the server thread stopped")
        .expect("cannot start postgres");
}

/// Runs PostgreSQL's programs as the `postgres` user when the tests run as root (PostgreSQL
/// refuses to run as root), as the current user otherwise.
#[derive(Clone, Copy)]
struct Runner {
    user: Option<(Uid, Gid)>,
}

impl Runner {
    fn new() -> Self {
        if !Uid::effective().is_root() {
            return Self { user: None };
        }
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .expect("tests run as root need the postgres user (Debian's postgresql package)");
        Self {
            user: Some((user.uid, user.gid)),
        }
    }

    fn give(&self, dir: &Path) {
        if let Some((uid, gid)) = self.user {
            nix::unistd::chown(dir, Some(uid), Some(gid)).expect("cannot chown the cluster dir");
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        let user = self.user;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some((uid, gid)) = user {
                    nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
                }
                // After the user change, which clears it: the server stops with the tests.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)
                    .map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        command
    }
}

/// Debian's newest PostgreSQL, or whatever `pg_config` names.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TERRASTREAM_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: scripts/setup.sh installs Debian's postgresql")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Clusters of test processes that have ended.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("terrastream-pg-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
