//! The one owner of a terraform child process: spawn it in its own process group with stdin
//! null, read stdout and stderr line by line as they come, signal the group, reap it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::domain::LogStream;

/// Longest line passed on whole; longer output is split into several lines of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long to wait for the pipes to close after the process exits (a grandchild may hold
/// them open).
const PIPE_DRAIN: Duration = Duration::from_secs(5);

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
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The stop ladder was used (cancel or timeout).
    pub interrupted: bool,
    /// The grace period ran out and the group was killed.
    pub killed: bool,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.interrupted
    }
}

/// A command line with its working directory and complete environment.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// How far below the started process the command itself runs: 0 when it is started
    /// directly, 2 inside bubblewrap (bwrap, then bwrap's init in the new pid namespace).
    pub command_depth: usize,
}

/// A started process, its group id, and its output readers.
pub struct RunningProcess {
    child: Child,
    program: PathBuf,
    pgid: i32,
    command_depth: usize,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningProcess {
    /// Starts the process in a new process group, streaming both pipes into `sink`.
    pub fn spawn(spec: &ProcessSpec, sink: Arc<dyn LineSink>) -> Result<Self, ProcessError> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        let mut readers = Vec::with_capacity(2);
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                stdout,
                LogStream::Stdout,
                Arc::clone(&sink),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(stderr, LogStream::Stderr, sink)));
        }
        Ok(Self {
            child,
            program: spec.program.clone(),
            pgid,
            command_depth: spec.command_depth,
            readers,
        })
    }

    /// The process group id (the child's pid), recorded so a restarted gateway can find it.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// One SIGINT to terraform itself, not to its providers or provisioners: they finish what
    /// they are doing (terraform tells them to stop when it can). Terraform 1.0.3 runs under a
    /// wrapper that ignores SIGINT: its child of the same program gets it too.
    fn interrupt(&self) {
        for pid in terraform_pids(self.pgid, self.command_depth) {
            if let Err(err) = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGINT) {
                tracing::debug!(pid, %err, "SIGINT not delivered");
            }
        }
    }

    /// SIGKILL to everything the process started: its group and, inside bubblewrap, the run's
    /// own session (killing the pid namespace's init ends every process in it).
    fn kill_all(&self) {
        kill_tree(self.pgid);
    }

    /// Waits for the process. When `stop` fires: one SIGINT to the group (terraform finishes
    /// in-flight operations and saves state), then SIGKILL after `grace`. Never a second
    /// SIGINT, never SIGTERM (providers die mid-operation on it).
    pub async fn wait(
        mut self,
        stop: &CancellationToken,
        grace: Duration,
    ) -> Result<Exit, ProcessError> {
        let mut interrupted = false;
        let mut killed = false;
        let status = tokio::select! {
            status = self.child.wait() => status,
            () = stop.cancelled() => {
                interrupted = true;
                self.interrupt();
                match tokio::time::timeout(grace, self.child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        killed = true;
                        self.kill_all();
                        self.child.wait().await
                    }
                }
            }
        };
        let status = status.map_err(|source| ProcessError::Wait {
            program: self.program.clone(),
            source,
        })?;
        if !killed {
            // terraform is gone; make sure no provider it started outlives it.
            self.kill_all();
        }
        for reader in self.readers.drain(..) {
            let abort = reader.abort_handle();
            if tokio::time::timeout(PIPE_DRAIN, reader).await.is_err() {
                abort.abort();
            }
        }
        Ok(Exit {
            code: status.code(),
            interrupted,
            killed,
        })
    }
}

async fn read_lines(pipe: impl AsyncRead + Unpin, stream: LogStream, sink: Arc<dyn LineSink>) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match read_capped_line(&mut reader, &mut line).await {
            Ok(0) => break,
            Ok(_) => sink.line(stream, decode_line(&line), clock::now()),
            Err(err) => {
                sink.line(
                    stream,
                    format!("[terrastream: reading terraform's {stream:?} failed: {err}]"),
                    clock::now(),
                );
                break;
            }
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

/// Runs a command to completion and returns its stdout, without streaming it anywhere (for
/// output that may hold secrets, like `terraform output -json`). Stderr goes to `sink`.
pub async fn capture_stdout(
    spec: &ProcessSpec,
    stderr: Arc<dyn LineSink>,
) -> Result<(Exit, Vec<u8>), ProcessError> {
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
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
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| ProcessError::Wait {
            program: spec.program.clone(),
            source,
        })?;
    // terraform is gone; make sure no provider it started outlives it.
    kill_tree(pgid);
    for line in output
        .stderr
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        stderr.line(LogStream::Stderr, decode_line(line), clock::now());
    }
    let exit = Exit {
        code: output.status.code(),
        interrupted: false,
        killed: false,
    };
    Ok((exit, output.stdout))
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

/// SIGKILL to `leader`'s process group and to every group of its descendants.
fn kill_tree(leader: i32) {
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
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command name in parentheses: state, ppid, pgrp.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace().skip(1);
            let ppid = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            Some(ProcessEntry { pid, ppid, pgid })
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
}
