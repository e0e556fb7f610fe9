//! The one owner of terraform processes: how a command is started (its own process group,
//! stdin null, a clean environment), how its output is read (line by line, as it comes), how
//! it is signalled (SIGINT to terraform itself; SIGKILL to everything below it), how a process
//! is recognised after a restart, and short commands whose stdout the gateway reads itself
//! (`output -json`, `show -json`, `state list`, validation). Long commands run under a
//! monitor ([`super::monitor`]), which uses the same pieces.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::monitor::SpoolRecord;
use crate::clock;
use crate::domain::{LogStream, MonitorId};

/// Longest line passed on whole; longer output is split into several lines of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long to wait for the pipes to close after the process exits (a grandchild may hold
/// them open).
pub const PIPE_DRAIN: Duration = Duration::from_secs(5);

/// Receives each line as it is read, with the time it was read.
pub trait LineSink: Send + Sync + 'static {
    fn line(&self, stream: LogStream, line: String, ts: String);
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {}: {source}; check --terraform", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for {} failed: {source}", program.display())]
    Wait {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("terraform {what} timed out after {}", super::sink::humanize(*limit))]
    TimedOut { what: String, limit: Duration },
    #[error("terraform {what} was stopped")]
    Stopped { what: String },
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The stop ladder was used (cancel or timeout).
    pub interrupted: bool,
    /// The grace period ran out and the process was killed.
    pub killed: bool,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.interrupted
    }
}

/// A command line with its working directory and complete environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// How far below the started process the command itself runs: 0 when it is started
    /// directly, 2 inside bubblewrap (bwrap, then bwrap's init in the new pid namespace).
    pub command_depth: usize,
}

/// The command for `spec`: its own process group, stdin null, stdout and stderr piped, only
/// the environment `spec` gives.
pub fn command(spec: &ProcessSpec) -> Command {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Reads `pipe` line by line into `lines`, each with its stream and the time it was read,
/// until the pipe closes (or nobody takes lines any more).
pub async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    lines: UnboundedSender<SpoolRecord>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let record = match read_capped_line(&mut reader, &mut line).await {
            Ok(0) => break,
            Ok(_) => SpoolRecord {
                stream,
                ts: clock::now(),
                line: decode_line(&line),
            },
            Err(err) => {
                let _ = lines.send(SpoolRecord {
                    stream,
                    ts: clock::now(),
                    line: format!("[terrastream: reading terraform's {stream:?} failed: {err}]"),
                });
                break;
            }
        };
        if lines.send(record).is_err() {
            break;
        }
    }
}

/// Reads up to and excluding the next newline, or `MAX_LINE_BYTES`, whichever comes first.
/// Returns the number of bytes consumed (0 at end of input).
async fn read_capped_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let room = MAX_LINE_BYTES - line.len();
        let window = &available[..available.len().min(room)];
        if let Some(pos) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..pos]);
            reader.consume(pos + 1);
            return Ok(consumed + pos + 1);
        }
        let taken = window.len();
        line.extend_from_slice(window);
        reader.consume(taken);
        consumed += taken;
        if line.len() >= MAX_LINE_BYTES {
            return Ok(consumed);
        }
    }
}

/// Text of a line, keeping every byte: invalid UTF-8 becomes `\xNN` escapes, a trailing CR
/// (Windows-style output) is dropped.
pub fn decode_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// Runs a short command to completion and returns its stdout, without streaming it anywhere
/// (for output that may hold secrets, like `terraform output -json`); its stderr goes to
/// `stderr`. Past `limit`, or when `stop` fires, everything it started is killed.
pub async fn capture_stdout(
    spec: &ProcessSpec,
    stderr: Arc<dyn LineSink>,
    limit: Duration,
    stop: &CancellationToken,
) -> Result<(Exit, Vec<u8>), ProcessError> {
    let what = spec
        .args
        .iter()
        .rev()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let mut child =
        command(spec)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                program: spec.program.clone(),
                source,
            })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(0);
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let read = async {
        let (mut stdout, mut errors) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(pipe) = out.as_mut() {
                pipe.read_to_end(&mut stdout).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read_err = async {
            if let Some(pipe) = err.as_mut() {
                pipe.read_to_end(&mut errors).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b).map(|()| (stdout, errors))
    };
    let outcome = tokio::select! {
        read = read => {
            let status = child.wait().await;
            read.and_then(|output| status.map(|status| (status, output)))
        }
        () = tokio::time::sleep(limit) => {
            kill_tree(pgid);
            return Err(ProcessError::TimedOut { what, limit });
        }
        () = stop.cancelled() => {
            kill_tree(pgid);
            return Err(ProcessError::Stopped { what });
        }
    };
    // terraform is gone; make sure no provider it started outlives it.
    kill_tree(pgid);
    let (status, (stdout, errors)) = outcome.map_err(|source| ProcessError::Wait {
        program: spec.program.clone(),
        source,
    })?;
    for line in errors.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        stderr.line(LogStream::Stderr, decode_line(line), clock::now());
    }
    let exit = Exit {
        code: status.code(),
        interrupted: false,
        killed: false,
    };
    Ok((exit, stdout))
}

/// One SIGINT to terraform itself, not to its providers or provisioners: they finish what
/// they are doing (terraform tells them to stop when it can). `leader` is the process that
/// was started; the command runs `depth` levels below it. Terraform 1.0.3 runs under a
/// wrapper that ignores SIGINT: its child of the same program gets it too.
pub fn interrupt(leader: i32, depth: usize) {
    for pid in terraform_pids(leader, depth) {
        if let Err(err) = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGINT) {
            tracing::debug!(pid, %err, "SIGINT not delivered");
        }
    }
}

/// The pid of the command `depth` levels below `leader` (the first child at each level), and
/// its children running the same program (terraform 1.0.3's wrapper re-runs itself).
fn terraform_pids(leader: i32, depth: usize) -> Vec<i32> {
    if leader <= 0 {
        return Vec::new();
    }
    let table = process_table();
    let mut command = leader;
    for _ in 0..depth {
        match table.iter().find(|p| p.ppid == command) {
            Some(child) => command = child.pid,
            None => return vec![command],
        }
    }
    let exe = |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let program = exe(command);
    let mut pids = vec![command];
    pids.extend(
        table
            .iter()
            .filter(|p| p.ppid == command && program.is_some() && exe(p.pid) == program)
            .map(|p| p.pid),
    );
    pids
}

/// SIGKILL to `leader`'s process group and to every group of its descendants (inside
/// bubblewrap, the run's own session: killing its pid namespace's init ends every process in
/// it).
pub fn kill_tree(leader: i32) {
    if leader <= 0 {
        return;
    }
    let table = process_table();
    let mut groups = vec![leader];
    let mut frontier = vec![leader];
    while let Some(parent) = frontier.pop() {
        for child in table.iter().filter(|p| p.ppid == parent) {
            frontier.push(child.pid);
            if !groups.contains(&child.pgid) {
                groups.push(child.pgid);
            }
        }
    }
    for group in groups {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// When the process started, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Is the process `id` names still running (not a zombie, not a new process under a reused
/// pid)?
pub fn is_alive(id: MonitorId) -> bool {
    let Some(fields) = stat_fields(id.pid) else {
        return false;
    };
    let running = fields
        .first()
        .is_some_and(|state| *state != "Z" && *state != "X");
    let same = fields
        .get(19)
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|ticks| ticks == id.start_ticks);
    running && same
}

/// Asks a monitor something by signal: SIGUSR1 (stop terraform gracefully) or SIGUSR2 (kill
/// it). False when the monitor is gone.
pub fn signal_monitor(id: MonitorId, signal: Signal) -> bool {
    is_alive(id) && nix::sys::signal::kill(Pid::from_raw(id.pid), signal).is_ok()
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

#[derive(Debug, Clone, Copy)]
struct ProcessEntry {
    pid: i32,
    ppid: i32,
    pgid: i32,
}

/// Every process's pid, parent and group, from `/proc`.
fn process_table() -> Vec<ProcessEntry> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let fields = stat_fields(pid)?;
            Some(ProcessEntry {
                pid,
                ppid: fields.get(1)?.parse().ok()?,
                pgid: fields.get(2)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_escaped_not_dropped() {
        assert_eq!(decode_line(b"ok \xff\xfe end\r"), "ok \\xff\\xfe end");
        assert_eq!(decode_line("héllo".as_bytes()), "héllo");
    }

    #[tokio::test]
    async fn long_lines_are_split_at_the_cap_and_nothing_is_lost() {
        let mut input = vec![b'a'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nshort\nlast-no-newline");
        let mut reader = BufReader::with_capacity(1024, &input[..]);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while read_capped_line(&mut reader, &mut line).await.unwrap_or(0) > 0 {
            lines.push(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1], "a".repeat(10));
        assert_eq!(lines[2], "short");
        assert_eq!(lines[3], "last-no-newline");
    }

    #[test]
    fn a_process_is_recognised_by_its_pid_and_start_time() {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let ticks = start_ticks(pid).unwrap_or(0);
        assert!(is_alive(MonitorId {
            pid,
            start_ticks: ticks
        }));
        assert!(!is_alive(MonitorId {
            pid,
            start_ticks: ticks + 1
        }));
    }
}
