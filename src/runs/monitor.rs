//! The run monitor: a small process of ours (`terrastream monitor <step dir>`, the gateway's
//! own binary) that owns one terraform command of a run. It starts terraform (inside the run's
//! isolation), drains its stdout and stderr line by line into an append-only spool in the
//! step's directory, each line with its stream and the time it was read, and records
//! terraform's exit status beside it when it ends. It runs in a session of its own and
//! outlives the gateway that started it: a gateway restart (a crash, an upgrade) does not end
//! the run, and the next gateway reads the spool from where the last one stopped. terraform
//! dies with its monitor (bubblewrap's `--die-with-parent`): a lost monitor is a lost run.
//!
//! Files in the step directory:
//! - `monitor.json`: who the monitor is (pid and start time), written first;
//! - `spool`: one JSON record per line terraform printed (see [`SpoolRecord`]), appended
//!   with one `write` each, so a reader only ever sees whole records and maybe a partial last
//!   one;
//! - `exit.json`: terraform's exit status ([`ExitRecord`]), written (by rename) after the
//!   last record.
//!
//! Signals: SIGUSR1 asks terraform to stop gracefully (one SIGINT to terraform itself),
//! SIGUSR2 kills everything the command started. SIGINT, SIGTERM and SIGHUP are ignored:
//! they are the gateway's, not the run's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::process::{self, ProcessSpec, MAX_LINE_BYTES};
use super::secrets::Masker;
use crate::clock;
use crate::domain::{LogStream, MonitorId};

pub const IDENTITY: &str = "monitor.json";
pub const SPOOL: &str = "spool";
pub const EXIT: &str = "exit.json";
/// The monitor's own problems (it has no one else to tell).
pub const LOG: &str = "monitor.log";

/// One line terraform printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    #[serde(rename = "s")]
    pub stream: LogStream,
    /// When the monitor read it (RFC 3339, microseconds).
    #[serde(rename = "t")]
    pub ts: String,
    #[serde(rename = "l")]
    pub line: String,
}

/// What the gateway hands a monitor on its stdin (never in a file or on its command line: the
/// environment holds the run's secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorInput {
    pub spec: ProcessSpec,
    /// Masks the run's secrets in every line before it reaches the spool.
    pub masker: Masker,
}

/// How terraform ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The monitor was asked to stop terraform gracefully (SIGUSR1).
    pub interrupted: bool,
    /// The monitor was asked to kill it (SIGUSR2).
    pub killed: bool,
}

/// The monitor process's `main`: reads the command as JSON from stdin, runs it, and exits
/// when it has recorded its end. Errors go to `monitor.log` in the step directory.
pub fn run(step_dir: &Path) -> anyhow::Result<()> {
    // Its own session: nothing sent to the gateway's process group or terminal reaches it.
    let _ = nix::unistd::setsid();
    let result = (|| -> anyhow::Result<()> {
        let input: MonitorInput = serde_json::from_reader(std::io::stdin().lock())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(supervise(step_dir, input))
    })();
    if let Err(err) = &result {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(step_dir.join(LOG))
            .and_then(|mut log| writeln!(log, "{} monitor failed: {err:#}", clock::now()));
    }
    result
}

async fn supervise(step_dir: &Path, input: MonitorInput) -> anyhow::Result<()> {
    let MonitorInput { spec, masker } = input;
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::user_defined1())?;
    let mut kill = signal(SignalKind::user_defined2())?;
    // Handled, so ignored: the gateway's signals are not the run's.
    let _ignored = [
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    ];
    let me = MonitorId {
        pid: i32::try_from(std::process::id())?,
        start_ticks: process::start_ticks(i32::try_from(std::process::id())?).unwrap_or(0),
    };
    write_atomically(&step_dir.join(IDENTITY), &serde_json::to_vec(&me)?)?;

    let mut spool = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(step_dir.join(SPOOL))?;
    let mut child = process::command(&spec).spawn()?;
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(0);
    let (lines, mut received) = mpsc::unbounded_channel::<SpoolRecord>();
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(process::read_lines(
            stdout,
            LogStream::Stdout,
            lines.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(process::read_lines(
            stderr,
            LogStream::Stderr,
            lines.clone(),
        )));
    }
    drop(lines);

    let (mut interrupted, mut killed) = (false, false);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            Some(record) = received.recv() => append(&mut spool, &masker, record)?,
            Some(()) = interrupt.recv() => {
                interrupted = true;
                process::interrupt(leader, spec.command_depth);
            }
            Some(()) = kill.recv() => {
                killed = true;
                process::kill_tree(leader);
            }
        }
    };
    // terraform is gone: what it printed last is still in the pipes (a provider it started
    // may hold them open: give up on those after a while).
    let drained = async {
        while let Some(record) = received.recv().await {
            append(&mut spool, &masker, record)?;
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(process::PIPE_DRAIN, drained).await;
    for reader in readers {
        reader.abort();
    }
    process::kill_tree(leader);
    spool.sync_all()?;
    let exit = ExitRecord {
        code: status.code(),
        interrupted,
        killed,
    };
    write_atomically(&step_dir.join(EXIT), &serde_json::to_vec(&exit)?)?;
    Ok(())
}

/// One record, masked, one `write`: a reader never sees half of one unless it reads while it
/// lands.
fn append(spool: &mut std::fs::File, masker: &Masker, record: SpoolRecord) -> std::io::Result<()> {
    let record = SpoolRecord {
        line: masker.mask(record.line),
        ..record
    };
    let mut bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    spool.write_all(&bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// A step's directory as the gateway sees it.
#[derive(Debug, Clone)]
pub struct StepDir {
    pub dir: PathBuf,
}

impl StepDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join(SPOOL)
    }

    /// Who the monitor is, once it has said.
    pub fn identity(&self) -> Option<MonitorId> {
        let bytes = std::fs::read(self.dir.join(IDENTITY)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// How terraform ended, once the monitor has recorded it.
    pub fn exit(&self) -> Option<ExitRecord> {
        let bytes = std::fs::read(self.dir.join(EXIT)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// What the monitor could not do, if it wrote anything.
    pub fn problem(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(LOG))
            .ok()
            .filter(|text| !text.trim().is_empty())
    }
}

/// Reads whole records of a spool from a byte offset on.
#[derive(Debug)]
pub struct SpoolReader {
    path: PathBuf,
    offset: u64,
}

impl SpoolReader {
    pub fn new(path: PathBuf, offset: u64) -> Self {
        Self { path, offset }
    }

    /// Bytes of the spool read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Every whole record after the offset (a partial last one waits for its end), each with
    /// the offset just after it.
    pub fn read_available(&mut self) -> std::io::Result<Vec<(SpoolRecord, u64)>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut consumed = 0usize;
        while let Some(end) = bytes[consumed..].iter().position(|b| *b == b'\n') {
            let raw = &bytes[consumed..consumed + end];
            consumed += end + 1;
            let after = self.offset + consumed as u64;
            let record = serde_json::from_slice(raw).unwrap_or_else(|_| SpoolRecord {
                stream: LogStream::Stderr,
                ts: clock::now(),
                line: format!(
                    "[terrastream: an unreadable spool record: {}]",
                    process::decode_line(&raw[..raw.len().min(MAX_LINE_BYTES)])
                ),
            });
            records.push((record, after));
        }
        self.offset += consumed as u64;
        Ok(records)
    }
}

/// How long a follower waits between looks when no file event woke it.
pub const POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_takes_whole_records_and_leaves_a_partial_one_for_later() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(SPOOL);
        let record = SpoolRecord {
            stream: LogStream::Stdout,
            ts: "2026-12-01T00:00:00.000000Z".into(),
            line: "hello".into(),
        };
        let mut whole = serde_json::to_vec(&record).unwrap_or_default();
        whole.push(b'\n');
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&whole[..10]);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let mut reader = SpoolReader::new(path.clone(), 0);
        let first = reader.read_available().unwrap_or_default();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, record);
        assert_eq!(first[0].1, whole.len() as u64);
        assert!(reader.read_available().unwrap_or_default().is_empty());
        bytes.extend_from_slice(&whole[10..]);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let second = reader.read_available().unwrap_or_default();
        assert_eq!(second.len(), 1);
        assert_eq!(reader.offset(), 2 * whole.len() as u64);
        // A reader started at an offset goes on from there.
        let mut later = SpoolReader::new(path, whole.len() as u64);
        assert_eq!(later.read_available().unwrap_or_default().len(), 1);
    }
}
