//! Fan-out benchmark (issue 4). The gateway runs as the real `terrastream serve` binary in its
//! own process; this process is the clients. Figures and how to read them: docs/performance.md.
//!
//! ```text
//! cargo bench --bench fanout -- [--only fanout,idle,deploy,replicas,store,calibrate]
//!     [--clients 0,1000,10000] [--rates 10,250]
//!     [--rate 100] [--lines 1000] [--idle 1000,10000] [--reps 3] [--connect-parallel 256]
//!     [--gateway target/release/terrastream]
//! ```
//!
//! - `fanout`: one deploy whose stand-in terraform (benches/stand_in_terraform.py) prints
//!   `--lines` lines at `--rate` lines/s, each stamped with the time it was written, streamed
//!   to C clients of `GET /runs/{id}/events` that attach before the apply starts. Reports the
//!   delay from write to receipt (p50/p90/p99/max over every line and client), events/s
//!   delivered, and the run's duration against the same stand-in run bare.
//! - `idle`: the gateway's RSS before and after K idle streams on a parked run.
//! - `calibrate`: for each of `--clients` (but 0) and each of `--rates`, 8 s of log lines
//!   from a terrastream run and from a bare SSE emitter (this binary run again as a child,
//!   nothing of terrastream), measured by the same clients: figures side by side, ratios.
//! - `replicas`: the `fanout` run on gateway A with its clients spread over the gateways: one
//!   on SQLite, one on PostgreSQL, three replicas on one PostgreSQL database (a throwaway
//!   server with PostgreSQL's default durability); delays on A and on the others.
//! - `store`: events one writer appends per second, SQLite against PostgreSQL.
//! - `deploy`: examples/demo with the real terraform from tools/ (scripts/setup.sh), bare
//!   (init, plan, apply, output) against a deploy through the gateway, median of `--reps`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

// The tests' throwaway PostgreSQL (its shared per-process cluster is not used here).
#[path = "fanout/calibrate.rs"]
mod calibrate;
#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres_cluster;
#[path = "fanout/replicas.rs"]
mod replicas;

const GATEWAY: &str = env!("CARGO_BIN_EXE_terrastream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const STAND_IN: &str = include_str!("stand_in_terraform.py");
/// Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux x86_64).
const USER_HZ: f64 = 100.0;

struct Options {
    only: Vec<String>,
    clients: Vec<usize>,
    idle: Vec<usize>,
    rate: u32,
    /// Lines per second of the calibration's runs.
    rates: Vec<u32>,
    lines: u32,
    reps: usize,
    connect_parallel: usize,
    gateway: PathBuf,
}

fn parse_list(value: &str) -> Result<Vec<usize>> {
    value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().replace('_', "").parse().context("not a number"))
        .collect()
}

fn options() -> Result<Options> {
    let mut options = Options {
        only: vec!["fanout".into(), "idle".into(), "deploy".into()],
        clients: vec![0, 1000, 10_000],
        idle: vec![1000, 10_000],
        rate: 100,
        rates: vec![10, 250],
        lines: 1000,
        reps: 3,
        connect_parallel: 256,
        gateway: PathBuf::from(GATEWAY),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `cargo bench` passes --bench to harness = false benches.
        if arg == "--bench" {
            continue;
        }
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--only" => options.only = value()?.split(',').map(str::to_owned).collect(),
            "--clients" => options.clients = parse_list(&value()?)?,
            "--idle" => options.idle = parse_list(&value()?)?,
            "--rate" => options.rate = value()?.parse()?,
            "--rates" => {
                options.rates = parse_list(&value()?)?
                    .into_iter()
                    .map(u32::try_from)
                    .collect::<Result<_, _>>()?
            }
            "--lines" => options.lines = value()?.parse()?,
            "--reps" => options.reps = value()?.parse()?,
            "--connect-parallel" => options.connect_parallel = value()?.parse()?,
            "--gateway" => options.gateway = value()?.into(),
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("fanout.rs")
                        .lines()
                        .take(9)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-emitter") {
        return calibrate::serve_emitter(&args[2..]);
    }
    let options = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> Result<()> {
    machine_report(&options)?;
    let tmp = tempfile::Builder::new()
        .prefix("terrastream-bench-")
        .tempdir()?;
    if options.only.iter().any(|o| o == "fanout") {
        fanout_suite(tmp.path(), &options).await?;
    }
    if options.only.iter().any(|o| o == "idle") {
        idle_suite(tmp.path(), &options).await?;
    }
    if options.only.iter().any(|o| o == "deploy") {
        deploy_suite(tmp.path(), &options).await?;
    }
    if options.only.iter().any(|o| o == "calibrate") {
        calibrate::calibrate_suite(tmp.path(), &options).await?;
    }
    if options.only.iter().any(|o| o == "replicas") {
        replicas::replicas_suite(tmp.path(), &options).await?;
    }
    if options.only.iter().any(|o| o == "store") {
        replicas::store_suite(tmp.path()).await?;
    }
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Machine, clocks, /proc

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine_report(options: &Options) -> Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nofile = std::fs::read_to_string("/proc/self/limits")?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap_or_default();
    println!("# terrastream fan-out benchmark");
    println!(
        "machine: {model}, {cores} cores; load average at the start: {}; open files limit {nofile}",
        load_average()
    );
    println!("gateway binary: {}", options.gateway.display());
    let most = options
        .clients
        .iter()
        .chain(&options.idle)
        .max()
        .copied()
        .unwrap_or(0);
    if nofile.parse::<usize>().is_ok_and(|n| n < most + 512) {
        println!(
            "WARNING: raise the open files limit (ulimit -n {}) for {most} clients",
            most + 1024
        );
    }
    Ok(())
}

/// A number field of /proc/<pid>/status (VmRSS is in KiB).
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc stat"))?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the command.
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// Kernel memory of TCP sockets, in pages (both ends of every loopback connection).
fn tcp_mem_pages() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("TCP:"))?.to_owned();
            let mut words = line.split_whitespace();
            words.find(|w| *w == "mem")?;
            words.next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// The stand-in terraform and its control files

struct StandIn {
    dir: PathBuf,
    script: PathBuf,
}

fn python() -> String {
    if Path::new("/usr/bin/python3").is_file() {
        return "/usr/bin/python3".into();
    }
    std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

impl StandIn {
    fn write(dir: &Path, rate: u32, lines: u32) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        for sub in ["gate", "park", "stats", "bare"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(
            dir.join("config.json"),
            json!({ "rate": rate, "lines": lines }).to_string(),
        )?;
        let script = dir.join("terraform");
        // -S: no site packages, a faster start (the stand-in needs only the standard library).
        std::fs::write(&script, format!("#!{} -S\n{STAND_IN}", python()))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            script,
        })
    }

    fn hold(&self, kind: &str, twin: &str) -> Result<()> {
        Ok(std::fs::write(self.dir.join(kind).join(twin), b"")?)
    }

    fn release(&self, kind: &str, twin: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.dir.join(kind).join(twin))?)
    }

    /// The stats each invocation for `twin` wrote, by command.
    fn stats(&self, twin: &str) -> Result<BTreeMap<String, Value>> {
        let mut stats = BTreeMap::new();
        for entry in std::fs::read_dir(self.dir.join("stats"))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(&format!("{twin}-")) {
                let value: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
                let cmd = value["cmd"].as_str().unwrap_or_default().to_owned();
                stats.insert(cmd, value);
                std::fs::remove_file(&path)?;
            }
        }
        Ok(stats)
    }

    /// The gateway's command lines, run bare with stdout read as fast as possible. Returns the
    /// total wall time, the apply's wall time, and the apply lines' write-to-read delays (µs).
    fn bare_sequence(&self) -> Result<(f64, f64, Vec<u32>)> {
        let cwd = self.dir.join("bare");
        let started = Instant::now();
        let mut delays = Vec::new();
        for args in [
            &["init", "-input=false", "-no-color"][..],
            &["plan", "-input=false", "-json", "-out=terrastream.tfplan"],
            &["apply", "-input=false", "-json", "terrastream.tfplan"],
            &["output", "-json"],
        ] {
            let mut child = std::process::Command::new(&self.script)
                .args(args)
                .current_dir(&cwd)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line?;
                let read_at = now_ns();
                if let Some(stamp) = find_stamp(line.as_bytes()) {
                    delays.push(micros(read_at.saturating_sub(stamp)));
                }
            }
            let status = child.wait()?;
            if !status.success() {
                bail!("the stand-in failed on {args:?}: {status}");
            }
        }
        let total = started.elapsed().as_secs_f64();
        // The apply's own clock, as for runs through the gateway.
        let stats = self.stats("bare")?;
        let apply_secs = (ns_field(&stats, "apply", "end_ns") as f64
            - ns_field(&stats, "apply", "start_ns") as f64)
            / 1e9;
        Ok((total, apply_secs, delays))
    }
}

fn micros(ns: u64) -> u32 {
    u32::try_from(ns / 1000).unwrap_or(u32::MAX)
}

/// The number after `stamp ` in a line, if any.
fn find_stamp(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(6).position(|w| w == b"stamp ")? + 6;
    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&bytes[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The gateway, as a child process

struct Gateway {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    base: String,
    token: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Gateway {
    async fn start(binary: &Path, dir: &Path, extra: &[&std::ffi::OsStr]) -> Result<Self> {
        Self::start_joining(binary, dir, extra, None).await
    }

    /// [`Gateway::start`] of a replica joining a database another one made: it uses that
    /// one's admin `token` (it makes none of its own).
    async fn start_joining(
        binary: &Path,
        dir: &Path,
        extra: &[&std::ffi::OsStr],
        token: Option<String>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let data_dir = dir.join("data");
        let log = dir.join("gateway.log");
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the gateway exited at once"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = http.get(format!("{base}/healthz")).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the gateway did not come up; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = match token {
            Some(token) => token,
            None => std::fs::read_to_string(data_dir.join("admin-token"))?
                .trim()
                .to_owned(),
        };
        Ok(Self {
            child,
            pid,
            addr,
            base,
            token,
            http,
            log,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn create_twin(&self, name: &str, files: Value) -> Result<String> {
        let twin = self
            .call(
                reqwest::Method::POST,
                "/twins",
                Some(json!({ "name": name, "provider": "sandbox", "files": files })),
            )
            .await?;
        Ok(twin["id"]
            .as_str()
            .ok_or_else(|| anyhow!("twin without id"))?
            .to_owned())
    }

    async fn deploy(&self, twin: &str) -> Result<String> {
        let accepted = self
            .call(
                reqwest::Method::POST,
                &format!("/twins/{twin}/deploy"),
                None,
            )
            .await?;
        Ok(accepted["job_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no job_id"))?
            .to_owned())
    }

    async fn get_run(&self, job: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, &format!("/runs/{job}"), None)
            .await
    }

    /// Polls the run until it has ended.
    async fn wait_run(&self, job: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.get_run(job).await?;
            if !matches!(run["status"].as_str(), Some("pending" | "processing")) {
                return Ok(run);
            }
            if Instant::now() > deadline {
                bail!("run {job} did not end within {timeout:?}: {run}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_stage(&self, job: &str, stage: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.get_run(job).await?["stage"].as_str() != Some(stage) {
            if Instant::now() > deadline {
                bail!("run {job} never reached stage {stage}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid, "VmRSS")
    }

    fn threads(&self) -> Result<u64> {
        proc_status_kib(self.pid, "Threads")
    }

    fn cpu_secs(&self) -> Result<f64> {
        cpu_secs(&self.pid.to_string())
    }

    fn events_request(&self, job: &str) -> Arc<Vec<u8>> {
        Arc::new(
            format!(
                "GET /runs/{job}/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
                self.addr, self.token
            )
            .into_bytes(),
        )
    }

    async fn stop(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        if let Ok(log) = std::fs::read_to_string(&self.log) {
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("panicked"))
                .take(5)
                .collect();
            if !errors.is_empty() {
                println!("  gateway errors ({}):", self.log.display());
                for line in errors {
                    println!("    {line}");
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SSE clients: plain TCP, HTTP/1.1 chunked decoding and an SSE parser, cheap per event so the
// client side costs as little CPU as possible on the shared 2 cores.

#[derive(Default)]
struct Progress {
    ready: AtomicUsize,
    failed: AtomicUsize,
}

#[derive(Default)]
struct ClientResult {
    delays_us: Vec<u32>,
    events: u64,
    stamped: u64,
    first_event_ns: u64,
    last_event_ns: u64,
    done: bool,
    gaps: u64,
    error: Option<String>,
}

#[derive(Clone, Copy)]
enum Chunk {
    Size(usize),
    Extension(usize),
    SizeLf(usize),
    Data(usize),
    DataCr,
    DataLf,
    End,
}

struct Parser {
    head: Vec<u8>,
    in_body: bool,
    chunked: bool,
    chunk: Chunk,
    line: Vec<u8>,
    id: Option<u64>,
    event: Vec<u8>,
    data: Vec<u8>,
    last_id: u64,
    result: ClientResult,
}

impl Parser {
    fn new() -> Self {
        Self {
            head: Vec::new(),
            in_body: false,
            chunked: false,
            chunk: Chunk::Size(0),
            line: Vec::with_capacity(512),
            id: None,
            event: Vec::with_capacity(16),
            data: Vec::with_capacity(512),
            last_id: 0,
            result: ClientResult::default(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8], now: u64) -> Result<()> {
        if !self.in_body {
            self.head.extend_from_slice(bytes);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("{}", head.lines().next().unwrap_or_default());
            }
            self.chunked = head.contains("transfer-encoding: chunked");
            self.in_body = true;
            let rest = self.head.split_off(end + 4);
            self.head = Vec::new();
            return self.feed(&rest, now);
        }
        if !self.chunked {
            self.sse(bytes, now);
            return Ok(());
        }
        while !bytes.is_empty() {
            let (state, used) = match self.chunk {
                Chunk::Size(n) => match bytes[0] {
                    b @ (b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                        (Chunk::Size(n * 16 + digit), 1)
                    }
                    b'\r' => (Chunk::SizeLf(n), 1),
                    _ => (Chunk::Extension(n), 1),
                },
                Chunk::Extension(n) if bytes[0] == b'\r' => (Chunk::SizeLf(n), 1),
                Chunk::Extension(n) => (Chunk::Extension(n), 1),
                Chunk::SizeLf(0) => (Chunk::End, 1),
                Chunk::SizeLf(n) => (Chunk::Data(n), 1),
                Chunk::Data(n) => {
                    let take = n.min(bytes.len());
                    self.sse(&bytes[..take], now);
                    let left = n - take;
                    (
                        if left == 0 {
                            Chunk::DataCr
                        } else {
                            Chunk::Data(left)
                        },
                        take,
                    )
                }
                Chunk::DataCr => (Chunk::DataLf, 1),
                Chunk::DataLf => (Chunk::Size(0), 1),
                Chunk::End => (Chunk::End, bytes.len()),
            };
            self.chunk = state;
            bytes = &bytes[used..];
        }
        Ok(())
    }

    fn sse(&mut self, mut bytes: &[u8], now: u64) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..pos]);
            let line = std::mem::take(&mut self.line);
            self.sse_line(&line, now);
            self.line = line;
            self.line.clear();
            bytes = &bytes[pos + 1..];
        }
        self.line.extend_from_slice(bytes);
    }

    fn sse_line(&mut self, line: &[u8], now: u64) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(now);
        } else if let Some(id) = line.strip_prefix(b"id:") {
            self.id = std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        } else if let Some(event) = line.strip_prefix(b"event:") {
            self.event.clear();
            self.event.extend_from_slice(event.trim_ascii());
        } else if let Some(data) = line.strip_prefix(b"data:") {
            self.data.extend_from_slice(data.trim_ascii_start());
        }
    }

    fn dispatch(&mut self, now: u64) {
        let Some(id) = self.id.take() else {
            // A comment (keep-alive) or the retry field: not an event.
            self.event.clear();
            self.data.clear();
            return;
        };
        let result = &mut self.result;
        if id != self.last_id + 1 {
            result.gaps += 1;
        }
        self.last_id = id;
        result.events += 1;
        if result.first_event_ns == 0 {
            result.first_event_ns = now;
        }
        result.last_event_ns = now;
        match self.event.as_slice() {
            b"log" => {
                if let Some(stamp) = find_stamp(&self.data) {
                    result.stamped += 1;
                    result.delays_us.push(micros(now.saturating_sub(stamp)));
                }
            }
            b"done" => result.done = true,
            _ => {}
        }
        self.event.clear();
        self.data.clear();
    }
}

/// One EventSource-like client: connects (at most `connect.available_permits()` at a time),
/// counts itself ready at its first event, and reads until `done`.
async fn sse_client(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    progress: Arc<Progress>,
    connect: Arc<Semaphore>,
) -> ClientResult {
    let mut parser = Parser::new();
    let mut ready = false;
    let outcome: Result<()> = async {
        let permit = connect.acquire().await?;
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&request).await?;
        let mut permit = Some(permit);
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            parser.feed(&buf[..n], now_ns())?;
            if !ready && parser.result.events > 0 {
                ready = true;
                permit.take();
                progress.ready.fetch_add(1, Ordering::SeqCst);
            }
            if parser.result.done {
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        parser.result.error = Some(err.to_string());
    }
    if !ready {
        progress.failed.fetch_add(1, Ordering::SeqCst);
    }
    parser.result
}

/// Starts `count` clients and waits until each has its first event (or failed).
async fn attach(
    gateway: &Gateway,
    job: &str,
    count: usize,
    parallel: usize,
) -> Result<(JoinSet<ClientResult>, Arc<Progress>, f64)> {
    let request = gateway.events_request(job);
    let progress = Arc::new(Progress::default());
    let connect = Arc::new(Semaphore::new(parallel.max(1)));
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for _ in 0..count {
        clients.spawn(sse_client(
            gateway.addr,
            Arc::clone(&request),
            Arc::clone(&progress),
            Arc::clone(&connect),
        ));
    }
    wait_attached(&progress, count).await?;
    Ok((clients, progress, started.elapsed().as_secs_f64()))
}

/// Waits until each of `count` clients has its first event (or has failed).
async fn wait_attached(progress: &Progress, count: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let settled =
            progress.ready.load(Ordering::SeqCst) + progress.failed.load(Ordering::SeqCst);
        if settled >= count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {settled} of {count} clients attached in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

struct Summary {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Percentiles (nearest rank) of delays in µs, in ms.
fn summarize(mut delays: Vec<u32>) -> Summary {
    delays.sort_unstable();
    let at = |p: f64| -> f64 {
        if delays.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * delays.len() as f64).ceil() as usize;
        f64::from(delays[rank.clamp(1, delays.len()) - 1]) / 1000.0
    };
    Summary {
        count: delays.len(),
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        max: at(100.0),
    }
}

/// A delay in ms for a table, `-` when there was none.
fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{v:.1}")
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn rfc3339_secs(value: &Value) -> Result<f64> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("missing time in {value}"))?;
    let at = chrono::DateTime::parse_from_rfc3339(text)?;
    Ok(at.timestamp_micros() as f64 / 1e6)
}

fn ns_field(stats: &BTreeMap<String, Value>, cmd: &str, field: &str) -> u64 {
    stats.get(cmd).and_then(|s| s[field].as_u64()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: one run fanned out to C clients

async fn fanout_suite(tmp: &Path, options: &Options) -> Result<()> {
    let dir = tmp.join("fanout");
    let stand_in = StandIn::write(&dir.join("stand-in"), options.rate, options.lines)?;
    println!(
        "\n## Fan-out: one run, apply prints {} lines at {} lines/s",
        options.lines, options.rate
    );
    let mut bare_totals = Vec::new();
    let mut bare_applies = Vec::new();
    let mut bare_delays = Vec::new();
    for _ in 0..2 {
        let (total, apply, delays) = {
            let stand_in = StandIn {
                dir: stand_in.dir.clone(),
                script: stand_in.script.clone(),
            };
            tokio::task::spawn_blocking(move || stand_in.bare_sequence()).await??
        };
        bare_totals.push(total);
        bare_applies.push(apply);
        bare_delays.extend(delays);
    }
    let bare_total = median(&mut bare_totals);
    let bare_apply = median(&mut bare_applies);
    let bare = summarize(bare_delays);
    println!(
        "bare stand-in (2 runs, stdout read by this process): init+plan+apply+output {bare_total:.3} s, apply {bare_apply:.3} s; pipe delay p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        bare.p50, bare.p99, bare.max
    );
    println!();
    println!("| clients | attached | attach time s | delay p50 ms | p90 ms | p99 ms | max ms | log events delivered | events/s | every client got every line, in order, and done | run duration s (gate wait excluded) | vs bare | apply s (stand-in clock) | vs bare | stand-in blocked on writes ms | most bytes unread in the pipe | gateway CPU s | client CPU s | gateway RSS peak MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &clients in &options.clients {
        let gateway = Gateway::start(
            &options.gateway,
            &dir.join(format!("gateway-{clients}")),
            &[
                std::ffi::OsStr::new("--terraform"),
                stand_in.script.as_os_str(),
                // The stand-in reads its gates and writes its stats beside itself.
                std::ffi::OsStr::new("--run-writable"),
                stand_in.dir.as_os_str(),
            ],
        )
        .await?;
        let row = fanout_once(
            &gateway, &stand_in, clients, options, bare_total, bare_apply,
        )
        .await;
        gateway.stop().await?;
        println!("{}", row?);
    }
    Ok(())
}

async fn fanout_once(
    gateway: &Gateway,
    stand_in: &StandIn,
    clients: usize,
    options: &Options,
    bare_total: f64,
    bare_apply: f64,
) -> Result<String> {
    let twin = gateway
        .create_twin(
            &format!("fanout-{clients}"),
            json!({ "main.tf": "# run by the stand-in terraform\n" }),
        )
        .await?;
    stand_in.hold("gate", &twin)?;
    let job = gateway.deploy(&twin).await?;
    let (mut set, progress, attach_secs) =
        attach(gateway, &job, clients, options.connect_parallel).await?;
    let attached = progress.ready.load(Ordering::SeqCst);
    let gateway_cpu = gateway.cpu_secs()?;
    let own_cpu = cpu_secs("self")?;
    stand_in.release("gate", &twin)?;

    let expected_secs = f64::from(options.lines) / f64::from(options.rate);
    let mut peak_rss = 0;
    let run = {
        let wait = gateway.wait_run(&job, Duration::from_secs_f64(expected_secs * 10.0 + 120.0));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                run = &mut wait => break run?,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    peak_rss = peak_rss.max(gateway.rss_kib()?);
                }
            }
        }
    };
    peak_rss = peak_rss.max(gateway.rss_kib()?);
    let mut results = Vec::with_capacity(clients);
    let collect = async {
        while let Some(result) = set.join_next().await {
            results.push(result?);
        }
        anyhow::Ok(())
    };
    if tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .is_err()
    {
        set.abort_all();
        println!("  clients still reading 120 s after the run ended were stopped");
    }
    let gateway_cpu = gateway.cpu_secs()? - gateway_cpu;
    let own_cpu = cpu_secs("self")? - own_cpu;
    if run["status"] != "completed" {
        bail!("the run did not complete: {run}");
    }
    let stats = stand_in.stats(&twin)?;
    let gate_wait = ns_field(&stats, "init", "hold_ns") as f64 / 1e9;
    let duration = rfc3339_secs(&run["end_time"])? - rfc3339_secs(&run["start_time"])? - gate_wait;
    let apply = (ns_field(&stats, "apply", "end_ns") as f64
        - ns_field(&stats, "apply", "start_ns") as f64)
        / 1e9;
    let blocked_ms = ns_field(&stats, "apply", "blocked_ns") as f64 / 1e6;
    let first_line = ns_field(&stats, "apply", "first_line_ns");
    let pipe_bytes = ns_field(&stats, "apply", "max_pipe_bytes");

    let complete = results
        .iter()
        .filter(|r| r.done && r.gaps == 0 && r.stamped == u64::from(options.lines))
        .count();
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|r| r.error.as_ref())
        .take(3)
        .collect();
    if !errors.is_empty() {
        println!("  client errors (first 3): {errors:?}");
    }
    let delivered: u64 = results.iter().map(|r| r.stamped).sum();
    let last_receipt = results.iter().map(|r| r.last_event_ns).max().unwrap_or(0);
    let window = last_receipt.saturating_sub(first_line) as f64 / 1e9;
    let events_per_sec = if window > 0.0 {
        delivered as f64 / window
    } else {
        0.0
    };
    let delays = summarize(results.into_iter().flat_map(|r| r.delays_us).collect());
    Ok(format!(
        "| {clients} | {attached} | {attach_secs:.1} | {} | {} | {} | {} | {} | {:.0} | {}/{clients} | {duration:.3} | {:+.1}% | {apply:.3} | {:+.1}% | {blocked_ms:.0} | {pipe_bytes} | {gateway_cpu:.1} | {own_cpu:.1} | {:.0} |",
        ms(delays.p50),
        ms(delays.p90),
        ms(delays.p99),
        ms(delays.max),
        delays.count,
        events_per_sec,
        complete,
        (duration / bare_total - 1.0) * 100.0,
        (apply / bare_apply - 1.0) * 100.0,
        peak_rss as f64 / 1024.0,
    ))
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: memory per idle stream

async fn idle_suite(tmp: &Path, options: &Options) -> Result<()> {
    let dir = tmp.join("idle");
    let stand_in = StandIn::write(&dir.join("stand-in"), options.rate, 10)?;
    println!("\n## Memory per idle stream (gateway RSS, a fresh gateway per row)");
    println!();
    println!("| idle streams | gateway RSS MiB (threads) before | 2 s after they attached | 17 s after | per stream KiB (17 s) | after they closed MiB | kernel TCP memory per connection, both ends, KiB |");
    println!("|---|---|---|---|---|---|---|");
    for &count in &options.idle {
        let gateway = Gateway::start(
            &options.gateway,
            &dir.join(format!("gateway-{count}")),
            &[
                std::ffi::OsStr::new("--terraform"),
                stand_in.script.as_os_str(),
                // The stand-in reads its gates and writes its stats beside itself.
                std::ffi::OsStr::new("--run-writable"),
                stand_in.dir.as_os_str(),
            ],
        )
        .await?;
        let row = idle_once(&gateway, &stand_in, count, options).await;
        gateway.stop().await?;
        println!("{}", row?);
    }
    Ok(())
}

async fn idle_once(
    gateway: &Gateway,
    stand_in: &StandIn,
    count: usize,
    options: &Options,
) -> Result<String> {
    let twin = gateway
        .create_twin(&format!("idle-{count}"), json!({ "main.tf": "# parked\n" }))
        .await?;
    stand_in.hold("park", &twin)?;
    let job = gateway.deploy(&twin).await?;
    // A deploy is one `apply -auto-approve`: parked before its first line, it is planning.
    gateway.wait_stage(&job, "planning").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, before_threads) = (gateway.rss_kib()?, gateway.threads()?);
    let tcp_before = tcp_mem_pages();
    let (mut set, progress, _) = attach(gateway, &job, count, options.connect_parallel).await?;
    let attached = progress.ready.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fresh, fresh_threads) = (gateway.rss_kib()?, gateway.threads()?);
    let tcp_open = tcp_mem_pages();
    // The connection burst grows tokio's blocking pool (store reads); its threads exit after
    // 10 s idle. Measure once they are gone: what the open streams themselves hold.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (open, open_threads) = (gateway.rss_kib()?, gateway.threads()?);
    set.abort_all();
    while set.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = gateway.rss_kib()?;
    stand_in.release("park", &twin)?;
    gateway.wait_run(&job, Duration::from_secs(120)).await?;
    stand_in.stats(&twin)?;
    if attached != count {
        println!("  only {attached} of {count} streams attached");
    }
    let per_stream = open.saturating_sub(before) as f64 / attached.max(1) as f64;
    let tcp_per = tcp_open.saturating_sub(tcp_before) as f64 * 4.0 / attached.max(1) as f64;
    Ok(format!(
        "| {attached} | {:.1} ({before_threads}) | {:.1} ({fresh_threads}) | {:.1} ({open_threads}) | {per_stream:.1} | {:.1} | {tcp_per:.1} |",
        before as f64 / 1024.0,
        fresh as f64 / 1024.0,
        open as f64 / 1024.0,
        closed as f64 / 1024.0,
    ))
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: examples/demo with real terraform, bare and through the gateway

fn demo_files() -> Result<Value> {
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("examples/demo"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tf") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("odd file name"))?
                .to_owned();
            files.insert(name, Value::String(std::fs::read_to_string(&path)?));
        }
    }
    Ok(Value::Object(files))
}

/// init, plan, apply, output: the gateway's commands, in a fresh directory, output drained.
async fn bare_deploy(dir: &Path, files: &Value) -> Result<f64> {
    let tools = Path::new(ROOT).join("tools");
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(dir.join("sandbox"))?;
    for (name, content) in files.as_object().into_iter().flatten() {
        std::fs::write(work.join(name), content.as_str().unwrap_or_default())?;
    }
    let started = Instant::now();
    for args in [
        &["init", "-input=false", "-no-color"][..],
        &["plan", "-input=false", "-json", "-out=terrastream.tfplan"],
        &["apply", "-input=false", "-json", "terrastream.tfplan"],
        &["output", "-json"],
    ] {
        let output = tokio::process::Command::new(tools.join("bin/terraform"))
            .args(args)
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("TF_CLI_CONFIG_FILE", tools.join("terraformrc"))
            .env("SANDBOX_DIR", dir.join("sandbox"))
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "bare terraform {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// POST deploy, then the run's event stream until `done`; returns the client's wall time, the
/// run's duration from start_time to end_time, and how many events the stream carried.
async fn gateway_deploy(gateway: &Gateway, name: &str, files: &Value) -> Result<(f64, f64, u64)> {
    let twin = gateway.create_twin(name, files.clone()).await?;
    let started = Instant::now();
    let job = gateway.deploy(&twin).await?;
    let (mut set, _, _) = attach(gateway, &job, 1, 1).await?;
    let result = set
        .join_next()
        .await
        .ok_or_else(|| anyhow!("no client"))??;
    let wall = started.elapsed().as_secs_f64();
    if !result.done {
        bail!("the stream ended without done: {:?}", result.error);
    }
    let run = gateway.wait_run(&job, Duration::from_secs(60)).await?;
    if run["status"] != "completed" {
        bail!("the demo deploy did not complete: {run}");
    }
    let duration = rfc3339_secs(&run["end_time"])? - rfc3339_secs(&run["start_time"])?;
    Ok((wall, duration, result.events))
}

async fn deploy_suite(tmp: &Path, options: &Options) -> Result<()> {
    let tools = Path::new(ROOT).join("tools");
    if !tools.join("bin/terraform").is_file() {
        println!("\n## Deploy: skipped, run scripts/setup.sh first (no tools/bin/terraform)");
        return Ok(());
    }
    let dir = tmp.join("deploy");
    let files = demo_files()?;
    let tools_args = [std::ffi::OsStr::new("--tools-dir"), tools.as_os_str()];
    let isolated = Gateway::start(&options.gateway, &dir.join("gateway"), &tools_args).await?;
    let mut open_args = tools_args.to_vec();
    open_args.extend([
        std::ffi::OsStr::new("--run-isolation"),
        std::ffi::OsStr::new("none"),
    ]);
    let open = Gateway::start(&options.gateway, &dir.join("gateway-open"), &open_args).await?;
    println!(
        "\n## Deploy of examples/demo with tools/bin/terraform: bare vs through the gateway, isolated (bubblewrap) and not ({} reps, alternating)",
        options.reps
    );
    println!();
    println!("| rep | bare init+plan+apply+output s | gateway, bubblewrap: POST deploy to done event s | run start_time to end_time s | gateway, --run-isolation none: POST to done s | run s | events streamed |");
    println!("|---|---|---|---|---|---|---|");
    let (mut bare, mut wall, mut run, mut open_wall, mut open_run) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=options.reps {
        let b = bare_deploy(&dir.join(format!("bare-{rep}")), &files).await?;
        let (w, r, events) = gateway_deploy(&isolated, &format!("demo-{rep}"), &files).await?;
        let (ow, or, _) = gateway_deploy(&open, &format!("demo-{rep}"), &files).await?;
        println!("| {rep} | {b:.3} | {w:.3} | {r:.3} | {ow:.3} | {or:.3} | {events} |");
        bare.push(b);
        wall.push(w);
        run.push(r);
        open_wall.push(ow);
        open_run.push(or);
    }
    let (b, w, r) = (median(&mut bare), median(&mut wall), median(&mut run));
    let (ow, or) = (median(&mut open_wall), median(&mut open_run));
    println!(
        "| median | {b:.3} | {w:.3} ({:+.1}%) | {r:.3} ({:+.1}%) | {ow:.3} ({:+.1}%) | {or:.3} ({:+.1}%) | |",
        (w / b - 1.0) * 100.0,
        (r / b - 1.0) * 100.0,
        (ow / b - 1.0) * 100.0,
        (or / b - 1.0) * 100.0
    );
    println!(
        "\nThe isolation costs {:+.3} s per deploy (run time, bubblewrap minus none; a deploy runs 5 terraform commands).",
        r - or
    );
    isolated.stop().await?;
    open.stop().await?;
    Ok(())
}
