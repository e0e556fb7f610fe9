//! Scenarios for issue 12: one run followed by clients spread over replicas on PostgreSQL,
//! beside one gateway on SQLite and on PostgreSQL (`--only replicas`); and how many events a
//! store writes per second (`--only store`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use terrastream::domain::{NewTwin, ReplicaId, RunId, RunKind, TwinId, TwinName};
use terrastream::store::{NewEvent, NewRun, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::postgres_cluster::Cluster;
use super::{
    median, ms, ns_field, rfc3339_secs, sse_client, summarize, wait_attached, ClientResult,
    Gateway, Options, Progress, StandIn,
};

/// The state key every replica of the bench is given.
const STATE_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

/// How the gateways of one row are set up.
#[derive(Clone, Copy)]
enum Setup {
    Sqlite,
    Postgres { replicas: usize },
}

impl Setup {
    fn label(self) -> String {
        match self {
            Setup::Sqlite => "SQLite, 1 gateway".into(),
            Setup::Postgres { replicas: 1 } => "PostgreSQL, 1 gateway".into(),
            Setup::Postgres { replicas } => format!("PostgreSQL, {replicas} replicas"),
        }
    }
}

pub async fn replicas_suite(tmp: &Path, options: &Options) -> Result<()> {
    let dir = tmp.join("replicas");
    let stand_in = StandIn::write(&dir.join("stand-in"), options.rate, options.lines)?;
    let mut totals = Vec::new();
    for _ in 0..2 {
        let again = StandIn {
            dir: stand_in.dir.clone(),
            script: stand_in.script.clone(),
        };
        totals.push(
            tokio::task::spawn_blocking(move || again.bare_sequence())
                .await??
                .0,
        );
    }
    let bare_total = median(&mut totals);
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(true)).await?;
    println!(
        "\n## Replicas: one run on A, apply prints {} lines at {} lines/s, clients spread over the gateways",
        options.lines, options.rate
    );
    println!("PostgreSQL 15 with its default durability (fsync, synchronous_commit on), on this machine; bare stand-in {bare_total:.3} s");
    println!();
    println!("| setup | clients | on A: p50 ms | p99 ms | on B, C: p50 ms | p99 ms | all: p99 ms | max ms | every client got every line, in order, and done | run duration s | vs bare |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let clients: Vec<usize> = options.clients.iter().copied().filter(|c| *c > 0).collect();
    for &count in &clients {
        for setup in [
            Setup::Sqlite,
            Setup::Postgres { replicas: 1 },
            Setup::Postgres { replicas: 3 },
        ] {
            let label = setup.label().replace([' ', ','], "-");
            let database = match setup {
                Setup::Sqlite => None,
                Setup::Postgres { .. } => Some(cluster.new_database()),
            };
            let replicas = match setup {
                Setup::Sqlite => 1,
                Setup::Postgres { replicas } => replicas,
            };
            let mut gateways = Vec::new();
            for index in 0..replicas {
                let mut extra: Vec<std::ffi::OsString> = vec![
                    "--terraform".into(),
                    stand_in.script.clone().into(),
                    "--run-writable".into(),
                    stand_in.dir.clone().into(),
                    "--state-key".into(),
                    STATE_KEY.into(),
                ];
                if let Some(url) = &database {
                    extra.extend(["--database-url".into(), url.into()]);
                }
                let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_os_str()).collect();
                let token = gateways.first().map(|g: &Gateway| g.token.clone());
                let gateway = Gateway::start_joining(
                    &options.gateway,
                    &dir.join(format!("{label}-{count}-{index}")),
                    &extra,
                    token,
                )
                .await?;
                gateways.push(gateway);
            }
            let row = spread_once(&gateways, &stand_in, count, options, bare_total).await;
            for gateway in gateways {
                gateway.stop().await?;
            }
            println!("| {} | {count} | {} |", setup.label(), row?);
        }
    }
    Ok(())
}

/// One deploy on the first gateway, `count` clients spread round-robin over all of them.
async fn spread_once(
    gateways: &[Gateway],
    stand_in: &StandIn,
    count: usize,
    options: &Options,
    bare_total: f64,
) -> Result<String> {
    let owner = &gateways[0];
    let twin = owner
        .create_twin(
            &format!("spread-{count}-{}", gateways.len()),
            json!({ "main.tf": "# run by the stand-in terraform\n" }),
        )
        .await?;
    stand_in.hold("gate", &twin)?;
    let job = owner.deploy(&twin).await?;
    let progress = Arc::new(Progress::default());
    let connect = Arc::new(Semaphore::new(options.connect_parallel.max(1)));
    let mut set: JoinSet<(usize, ClientResult)> = JoinSet::new();
    let requests: Vec<_> = gateways.iter().map(|g| g.events_request(&job)).collect();
    for client in 0..count {
        let at = client % gateways.len();
        let (addr, request) = (gateways[at].addr, Arc::clone(&requests[at]));
        let (progress, connect) = (Arc::clone(&progress), Arc::clone(&connect));
        set.spawn(async move { (at, sse_client(addr, request, progress, connect).await) });
    }
    wait_attached(&progress, count).await?;
    stand_in.release("gate", &twin)?;
    let expected = f64::from(options.lines) / f64::from(options.rate);
    let run = owner
        .wait_run(&job, Duration::from_secs_f64(expected * 10.0 + 120.0))
        .await?;
    if run["status"] != "completed" {
        bail!("the run did not complete: {run}");
    }
    let mut on_owner = Vec::new();
    let mut on_others = Vec::new();
    let mut complete = 0;
    let collect = async {
        while let Some(joined) = set.join_next().await {
            let (at, result) = joined?;
            if result.done && result.gaps == 0 && result.stamped == u64::from(options.lines) {
                complete += 1;
            }
            if at == 0 {
                on_owner.extend(result.delays_us);
            } else {
                on_others.extend(result.delays_us);
            }
        }
        anyhow::Ok(())
    };
    if tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .is_err()
    {
        bail!("clients still reading 120 s after the run ended");
    }
    let stats = stand_in.stats(&twin)?;
    let gate_wait = ns_field(&stats, "init", "hold_ns") as f64 / 1e9;
    let duration = rfc3339_secs(&run["end_time"])? - rfc3339_secs(&run["start_time"])? - gate_wait;
    let all = summarize(on_owner.iter().chain(&on_others).copied().collect());
    let owner_delays = summarize(on_owner);
    let other_delays = summarize(on_others);
    Ok(format!(
        "{} | {} | {} | {} | {} | {} | {complete}/{count} | {duration:.3} | {:+.1}%",
        ms(owner_delays.p50),
        ms(owner_delays.p99),
        ms(other_delays.p50),
        ms(other_delays.p99),
        ms(all.p99),
        ms(all.max),
        (duration / bare_total - 1.0) * 100.0,
    ))
}

// ---------------------------------------------------------------------------------------------
// Events stored per second

pub async fn store_suite(tmp: &Path) -> Result<()> {
    let dir = tmp.join("store");
    std::fs::create_dir_all(&dir)?;
    println!("\n## Events stored per second: one writer appending batches to one run for 3 s");
    println!();
    println!("| store | events per transaction | events/s | transactions/s |");
    println!("|---|---|---|---|");
    let table = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let cluster = Cluster::start(true);
        let mut rows = Vec::new();
        let sqlite: Arc<dyn Store> = Arc::new(terrastream::store::SqliteStore::open(
            &dir.join("bench.db"),
        )?);
        let durable = cluster.new_database();
        let relaxed = cluster.new_database();
        {
            let mut client = postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls)?;
            let name = relaxed.rsplit('/').next().unwrap_or_default();
            client.batch_execute(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ))?;
        }
        let stores: Vec<(&str, Arc<dyn Store>)> = vec![
            ("SQLite (WAL, synchronous=NORMAL)", sqlite),
            (
                "PostgreSQL (synchronous_commit=on, the default)",
                Arc::new(terrastream::store::PostgresStore::open(&durable)?),
            ),
            (
                "PostgreSQL (synchronous_commit=off)",
                Arc::new(terrastream::store::PostgresStore::open(&relaxed)?),
            ),
        ];
        for (label, store) in stores {
            for batch in [1usize, 32, 512] {
                let (events, transactions) =
                    append_for(store.as_ref(), batch, Duration::from_secs(3))?;
                rows.push(format!(
                    "| {label} | {batch} | {:.0} | {:.0} |",
                    events, transactions
                ));
            }
        }
        Ok(rows)
    })
    .await??;
    for row in table {
        println!("{row}");
    }
    Ok(())
}

/// Appends batches of `batch` log events to a fresh run for `length`; events/s, commits/s.
fn append_for(store: &dyn Store, batch: usize, length: Duration) -> Result<(f64, f64)> {
    let twin = store.create_twin(
        NewTwin {
            id: TwinId::generate(),
            owner: "bench".into(),
            name: TwinName::parse(&format!("bench-{}", RunId::generate()))?,
            provider: "sandbox".parse()?,
            files: serde_json::from_value(json!({ "main.tf": "" }))?,
            variables: Default::default(),
            secret_variables: Default::default(),
            credential_ids: Vec::new(),
        },
        &terrastream::twins::Twins::created("bench"),
    )?;
    let run = NewRun {
        id: RunId::generate(),
        twin_id: twin.id.clone(),
        kind: RunKind::Deploy,
        actor: "bench".into(),
        owner: Some(ReplicaId::generate()),
        secrets: None,
        credentials: Vec::new(),
        log_level: None,
    };
    let (run, _) = store
        .start_run(run, None)?
        .ok_or_else(|| anyhow::anyhow!("the run was not started"))?;
    let line = "{\"job_id\":\"run\",\"stream\":\"stdout\",\"line\":\"sandbox_resource.a: Still creating... [10s elapsed]\",\"ts\":\"2026-12-01T12:00:00.000000Z\"}";
    let events: Vec<NewEvent> = (0..batch)
        .map(|_| NewEvent {
            run_id: run.id.clone(),
            event: "log".into(),
            data: line.into(),
        })
        .collect();
    let started = Instant::now();
    let mut transactions = 0u64;
    while started.elapsed() < length {
        store.append_events(&events, &[], &[], None)?;
        transactions += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        (transactions * batch as u64) as f64 / secs,
        transactions as f64 / secs,
    ))
}
