//! Calibration (issue 15, `--only calibrate`): a bare SSE emitter, nothing of terrastream,
//! sends each of C clients the same log events at the same rate as a terrastream run, and
//! the same clients measure both in one invocation. The emitter is this bench binary run
//! again as a child process (`--serve-emitter`), so it has its own process and CPU as the
//! gateway has: actix-web's HTTP server, one broadcast channel, each event formatted once and
//! its bytes shared by every client.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;

use super::{
    cpu_secs, free_port, now_ns, rfc3339_secs, sse_client, summarize, wait_attached, ClientResult,
    Gateway, Options, Progress, StandIn,
};

/// One row: clients and rate.
struct Case {
    clients: usize,
    rate: u32,
    lines: u32,
}

/// What the clients measured of one server.
struct Figures {
    p50: f64,
    p99: f64,
    events_per_sec: f64,
    server_cpu: f64,
    client_cpu: f64,
    complete: usize,
    /// terrastream only: the run's duration against the stand-in bare.
    slowdown: Option<f64>,
}

pub async fn calibrate_suite(tmp: &Path, options: &Options) -> Result<()> {
    let seconds = 8;
    let cases: Vec<Case> = options
        .clients
        .iter()
        .filter(|c| **c > 0)
        .flat_map(|&clients| {
            options.rates.iter().map(move |&rate| Case {
                clients,
                rate,
                lines: rate * seconds,
            })
        })
        .collect();
    println!("\n## Calibration: terrastream beside a bare SSE emitter, {seconds} s of log lines per run, the same clients");
    println!();
    println!("| clients | lines/s | emitter p50 ms | p99 ms | events/s | server CPU s | client CPU s | terrastream p50 ms | p99 ms | events/s | gateway CPU s | client CPU s | p99 ratio | events/s ratio | run vs bare | complete (emitter, terrastream) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in cases {
        let dir = tmp.join(format!("calibrate-{}-{}", case.clients, case.rate));
        let stand_in = StandIn::write(&dir.join("stand-in"), case.rate, case.lines)?;
        let again = StandIn {
            dir: stand_in.dir.clone(),
            script: stand_in.script.clone(),
        };
        let bare = tokio::task::spawn_blocking(move || again.bare_sequence())
            .await??
            .0;
        let (terrastream, event_bytes) =
            terrastream_case(&dir, &stand_in, &case, options, bare).await?;
        let emitter = emitter_case(&case, event_bytes, options).await?;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2}x | {:.2} | {:+.1}% | {}/{}, {}/{} |",
            case.clients,
            case.rate,
            emitter.p50,
            emitter.p99,
            emitter.events_per_sec,
            emitter.server_cpu,
            emitter.client_cpu,
            terrastream.p50,
            terrastream.p99,
            terrastream.events_per_sec,
            terrastream.server_cpu,
            terrastream.client_cpu,
            terrastream.p99 / emitter.p99,
            terrastream.events_per_sec / emitter.events_per_sec,
            terrastream.slowdown.unwrap_or(f64::NAN) * 100.0,
            emitter.complete,
            case.clients,
            terrastream.complete,
            case.clients,
        );
    }
    Ok(())
}

/// A deploy whose stand-in prints the case's lines, followed by the case's clients; the
/// figures and the size of one of its log events' `data`.
async fn terrastream_case(
    dir: &Path,
    stand_in: &StandIn,
    case: &Case,
    options: &Options,
    bare: f64,
) -> Result<(Figures, usize)> {
    let gateway = Gateway::start(
        &options.gateway,
        &dir.join("gateway"),
        &[
            std::ffi::OsStr::new("--terraform"),
            stand_in.script.as_os_str(),
            std::ffi::OsStr::new("--run-writable"),
            stand_in.dir.as_os_str(),
        ],
    )
    .await?;
    let twin = gateway
        .create_twin(
            "calibrate",
            json!({ "main.tf": "# run by the stand-in terraform\n" }),
        )
        .await?;
    stand_in.hold("gate", &twin)?;
    let job = gateway.deploy(&twin).await?;
    let request = gateway.events_request(&job);
    let addr = gateway.addr;
    let (set, progress) =
        spawn_clients(case.clients, options, move || (addr, Arc::clone(&request)));
    wait_attached(&progress, case.clients).await?;
    let (server_cpu, client_cpu) = (gateway.cpu_secs()?, cpu_secs("self")?);
    stand_in.release("gate", &twin)?;
    let limit = Duration::from_secs(u64::from(case.lines / case.rate.max(1)) * 10 + 120);
    let run = gateway.wait_run(&job, limit).await?;
    if run["status"] != "completed" {
        bail!("the run did not complete: {run}");
    }
    let results = collect(set).await?;
    let server_cpu = gateway.cpu_secs()? - server_cpu;
    let client_cpu = cpu_secs("self")? - client_cpu;
    let stats = stand_in.stats(&twin)?;
    let gate = super::ns_field(&stats, "init", "hold_ns") as f64 / 1e9;
    let duration = rfc3339_secs(&run["end_time"])? - rfc3339_secs(&run["start_time"])? - gate;
    let first_line = super::ns_field(&stats, "apply", "first_line_ns");
    let logs = gateway
        .call(
            reqwest::Method::GET,
            &format!("/runs/{job}/logs?limit=1000"),
            None,
        )
        .await?;
    let event_bytes = logs["events"]
        .as_array()
        .and_then(|events| {
            events.iter().find(|e| {
                e["event"] == "log"
                    && e["data"]["line"]
                        .as_str()
                        .is_some_and(|l| l.contains("stamp "))
            })
        })
        .map(|e| e["data"].to_string().len())
        .ok_or_else(|| anyhow!("no stamped log event in the run"))?;
    gateway.stop().await?;
    let mut figures = figures(results, first_line, case.lines, server_cpu, client_cpu);
    figures.slowdown = Some(duration / bare - 1.0);
    Ok((figures, event_bytes))
}

async fn emitter_case(case: &Case, event_bytes: usize, options: &Options) -> Result<Figures> {
    let port = free_port()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--serve-emitter",
            &port.to_string(),
            &case.lines.to_string(),
            &case.rate.to_string(),
            &event_bytes.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the emitter")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the emitter exited at once"))?
        .to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the emitter did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = Arc::new(
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .into_bytes(),
    );
    let (set, progress) =
        spawn_clients(case.clients, options, move || (addr, Arc::clone(&request)));
    wait_attached(&progress, case.clients).await?;
    let (server_cpu, client_cpu) = (cpu_secs(&pid)?, cpu_secs("self")?);
    let started = http.post(format!("http://{addr}/start")).send().await?;
    let first_line: u64 = started.text().await?.trim().parse()?;
    let results = collect(set).await?;
    let server_cpu = cpu_secs(&pid)? - server_cpu;
    let client_cpu = cpu_secs("self")? - client_cpu;
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(figures(
        results, first_line, case.lines, server_cpu, client_cpu,
    ))
}

fn spawn_clients(
    count: usize,
    options: &Options,
    target: impl Fn() -> (std::net::SocketAddr, Arc<Vec<u8>>),
) -> (JoinSet<ClientResult>, Arc<Progress>) {
    let progress = Arc::new(Progress::default());
    let connect = Arc::new(Semaphore::new(options.connect_parallel.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (addr, request) = target();
        set.spawn(sse_client(
            addr,
            request,
            Arc::clone(&progress),
            Arc::clone(&connect),
        ));
    }
    (set, progress)
}

async fn collect(mut set: JoinSet<ClientResult>) -> Result<Vec<ClientResult>> {
    let mut results = Vec::new();
    let all = async {
        while let Some(result) = set.join_next().await {
            results.push(result?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .map_err(|_| anyhow!("clients still reading 300 s after the start"))??;
    Ok(results)
}

fn figures(
    results: Vec<ClientResult>,
    first_line: u64,
    lines: u32,
    server_cpu: f64,
    client_cpu: f64,
) -> Figures {
    let complete = results
        .iter()
        .filter(|r| r.done && r.gaps == 0 && r.stamped == u64::from(lines))
        .count();
    let delivered: u64 = results.iter().map(|r| r.stamped).sum();
    let last = results.iter().map(|r| r.last_event_ns).max().unwrap_or(0);
    let window = last.saturating_sub(first_line) as f64 / 1e9;
    let delays = summarize(results.into_iter().flat_map(|r| r.delays_us).collect());
    Figures {
        p50: delays.p50,
        p99: delays.p99,
        events_per_sec: if window > 0.0 {
            delivered as f64 / window
        } else {
            0.0
        },
        server_cpu,
        client_cpu,
        complete,
        slowdown: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The emitter process

/// `--serve-emitter <port> <lines> <rate> <data bytes>`: serves `GET /events` to any number of
/// clients (an `open` event at once, then the log lines after `POST /start`, then `done`),
/// `GET /ready`, and `POST /start`, which answers the time (unix ns) it starts the schedule.
pub fn serve_emitter(args: &[String]) -> Result<()> {
    let [port, lines, rate, bytes] = args else {
        bail!("--serve-emitter <port> <lines> <rate> <data bytes>");
    };
    let (port, lines, rate, bytes): (u16, u32, u32, usize) =
        (port.parse()?, lines.parse()?, rate.parse()?, bytes.parse()?);
    actix_web::rt::System::new().block_on(async move {
        let (events, _) = broadcast::channel::<Bytes>(65_536);
        let state = actix_web::web::Data::new(Emitter {
            events,
            lines,
            rate,
            bytes,
        });
        actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .route("/ready", actix_web::web::get().to(|| async { "ready" }))
                .route("/start", actix_web::web::post().to(start))
                .route("/events", actix_web::web::get().to(stream))
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })?;
    Ok(())
}

struct Emitter {
    events: broadcast::Sender<Bytes>,
    lines: u32,
    rate: u32,
    bytes: usize,
}

impl Emitter {
    /// One event as terrastream frames a log line, `data` padded to `bytes`.
    fn frame(&self, seq: u64, event: &str, stamp: u64) -> Bytes {
        let head = format!(
            "{{\"job_id\":\"run_0193a5f2b7c87d12a4e6f0c3b9d81e27\",\"stream\":\"stdout\",\"line\":\"stamp {stamp} seq {seq} "
        );
        let tail = "\",\"ts\":\"2026-12-01T12:00:00.000000Z\",\"type\":\"log\"}";
        let pad = self.bytes.saturating_sub(head.len() + tail.len());
        Bytes::from(format!(
            "id: {seq}\nevent: {event}\ndata: {head}{}{tail}\n\n",
            "x".repeat(pad)
        ))
    }
}

async fn start(emitter: actix_web::web::Data<Emitter>) -> String {
    let started = now_ns();
    let emitter = emitter.into_inner();
    actix_web::rt::spawn(async move {
        let begin = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / f64::from(emitter.rate.max(1)));
        for n in 1..=u64::from(emitter.lines) {
            let due = begin + interval * u32::try_from(n - 1).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due.into()).await;
            let _ = emitter.events.send(emitter.frame(n + 1, "log", now_ns()));
        }
        let last = u64::from(emitter.lines) + 2;
        let _ = emitter.events.send(Bytes::from(format!(
            "id: {last}\nevent: done\ndata: {{\"outcome\":\"succeeded\"}}\n\n"
        )));
    });
    started.to_string()
}

async fn stream(emitter: actix_web::web::Data<Emitter>) -> actix_web::HttpResponse {
    let receiver = emitter.events.subscribe();
    let open = Bytes::from_static(b"id: 1\nevent: open\ndata: {}\n\n");
    let first = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(open) });
    let rest = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(bytes) => return Some((Ok(bytes), receiver)),
                // A client that lags here gets a gap, which the figures count.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    actix_web::HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(futures_util::StreamExt::chain(first, rest))
}
