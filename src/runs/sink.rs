//! The run's line sink: turns terraform's lines into events (secrets masked, `-json` objects
//! shown as their human text and counted for progress) and keeps what a plan or drift check
//! reports; plus the watchdog that warns when terraform falls silent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::monitor::SpoolRecord;
use super::process::LineSink;
use super::secrets::Masker;
use super::tfjson::{self, Progress};
use crate::domain::{ChangeSummary, LogStream, ResourceChange, RunEvent, RunId, Stage};
use crate::hub::EventHub;
use crate::store::SpoolMark;

/// Turns terraform's lines into events: secrets masked, `-json` objects shown as their
/// human text and counted for progress.
pub(super) struct RunSink {
    run_id: RunId,
    hub: Arc<EventHub>,
    masker: Masker,
    state: Mutex<SinkState>,
}

struct SinkState {
    progress: Progress,
    last_error: Option<String>,
    last_output: Instant,
    /// A plan's resource changes.
    changes: Vec<ResourceChange>,
    /// terraform's change summary.
    summary: Option<ChangeSummary>,
    /// Resources changed or deleted outside terraform.
    drifted: Vec<ResourceChange>,
    /// The stage to announce once terraform has made its plan (an apply that plans first).
    after_plan: Option<Stage>,
}

impl Default for SinkState {
    fn default() -> Self {
        Self {
            progress: Progress::default(),
            last_error: None,
            last_output: Instant::now(),
            changes: Vec::new(),
            summary: None,
            drifted: Vec::new(),
            after_plan: None,
        }
    }
}

impl RunSink {
    pub(super) fn new(run_id: RunId, hub: Arc<EventHub>, masker: Masker) -> Self {
        Self {
            run_id,
            hub,
            masker,
            state: Mutex::default(),
        }
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.last_error.clone())
    }

    pub(super) fn publish(&self, event: &RunEvent) {
        if let Err(err) = self.hub.publish(&self.run_id, event) {
            tracing::error!(run_id = %self.run_id, %err, "event lost");
        }
    }

    /// The changes a plan announced, and its summary.
    pub(super) fn planned(&self) -> (Vec<ResourceChange>, Option<ChangeSummary>) {
        self.state
            .lock()
            .map(|s| (s.changes.clone(), s.summary))
            .unwrap_or_default()
    }

    pub(super) fn drifted(&self) -> Vec<ResourceChange> {
        self.state
            .lock()
            .map(|s| s.drifted.clone())
            .unwrap_or_default()
    }

    /// Announces `stage` when the next command starts applying (its first change, or its
    /// apply summary when there is nothing to change): `apply -auto-approve` plans and
    /// applies in one.
    pub(super) fn stage_after_plan(&self, stage: Stage) {
        if let Ok(mut state) = self.state.lock() {
            state.after_plan = Some(stage);
        }
    }

    /// Applying a kept plan: its changes are the work the progress bar counts.
    pub(super) fn expect_changes(&self, changes: &[ResourceChange]) {
        if let Ok(mut state) = self.state.lock() {
            for change in changes {
                state.progress.expect(&change.address, &change.action);
            }
        }
    }

    /// A successful run always ends its progress bar at 100, even with nothing to change.
    pub(super) fn complete_progress(&self) {
        let figures = self
            .state
            .lock()
            .ok()
            .map(|s| (s.progress.percent(), s.progress.figures()));
        if let Some((percent, (done, total))) = figures {
            if percent < 100 {
                self.publish(&RunEvent::Progress {
                    percent: 100,
                    done: done.max(total),
                    total,
                });
            }
        }
    }
}

impl LineSink for RunSink {
    fn line(&self, stream: LogStream, line: String, ts: String) {
        self.take(stream, line, ts, Delivery::Publish(None));
    }
}

/// What becomes of a line taken into the sink.
enum Delivery {
    /// Published as events; the last one carries how far the spool was read.
    Publish(Option<SpoolMark>),
    /// Only what the run knows is updated (the spool of an adopted run, read again).
    Replay,
}

impl RunSink {
    /// A line of the run's spool, read up to `mark`.
    pub(super) fn record(&self, record: SpoolRecord, mark: Option<SpoolMark>) {
        self.take(
            record.stream,
            record.line,
            record.ts,
            Delivery::Publish(mark),
        );
    }

    /// A line read before the gateway restarted: its events are stored already; what it told
    /// (planned changes, progress, the last error, a stage due) is learnt again.
    pub(super) fn replay(&self, record: SpoolRecord) {
        self.take(record.stream, record.line, record.ts, Delivery::Replay);
    }

    fn take(&self, stream: LogStream, line: String, ts: String, delivery: Delivery) {
        if let Ok(mut state) = self.state.lock() {
            state.last_output = Instant::now();
        }
        let line = self.masker.mask(line);
        let mut progress = None;
        let mut next_stage = None;
        let text = match tfjson::parse(&line) {
            Some(message) => {
                let error = message.error_summary();
                if let Ok(mut state) = self.state.lock() {
                    collect(&mut state, &message);
                    if message.starts_applying() {
                        next_stage = state.after_plan.take();
                    }
                    if let Some(error) = &error {
                        state.last_error = Some(error.clone());
                    }
                    if let Some((done, total)) = state.progress.observe(&message) {
                        progress = Some(RunEvent::Progress {
                            percent: state.progress.percent(),
                            done,
                            total,
                        });
                    }
                }
                error.map_or(message.text, |error| format!("Error: {error}"))
            }
            None => {
                // Commands without -json (init) print diagnostics as text: keep the summary,
                // so the run's error names the problem rather than an exit code.
                if let Some(summary) = line.strip_prefix("Error: ").map(str::trim) {
                    if let Ok(mut state) = self.state.lock() {
                        state.last_error = Some(summary.to_owned());
                    }
                }
                line
            }
        };
        let Delivery::Publish(mark) = delivery else {
            return;
        };
        let mut events = Vec::new();
        if let Some(stage) = next_stage {
            events.push(RunEvent::Stage { stage });
        }
        // One event per line: a `-json` message's text (an interrupt notice, a lock error) may
        // hold several.
        let text = text.strip_suffix('\n').unwrap_or(&text);
        for line in text.split('\n') {
            events.push(RunEvent::Log {
                stream,
                line: line.to_owned(),
                ts: ts.clone(),
            });
        }
        events.extend(progress);
        let last = events.len().saturating_sub(1);
        for (index, event) in events.iter().enumerate() {
            let at = if index == last { mark } else { None };
            if let Err(err) = self.hub.publish_marked(&self.run_id, event, at) {
                tracing::error!(run_id = %self.run_id, %err, "event lost");
            }
        }
    }
}

/// Warns (once per silence) when terraform has printed nothing for `threshold`: a hung
/// provider or a prompt nobody can answer looks exactly like a slow apply otherwise.
pub(super) async fn watch_silence(sink: Arc<RunSink>, threshold: Duration) {
    let check = (threshold / 4).max(Duration::from_secs(1));
    let mut warned_at = None;
    loop {
        tokio::time::sleep(check).await;
        let Some(last) = sink.state.lock().ok().map(|s| s.last_output) else {
            return;
        };
        if last.elapsed() >= threshold && warned_at != Some(last) {
            warned_at = Some(last);
            sink.publish(&RunEvent::Warning {
                message: format!(
                    "terraform has printed nothing for {}",
                    humanize(last.elapsed())
                ),
            });
        }
    }
}

/// Keeps what a plan or drift check reports about resources.
fn collect(state: &mut SinkState, message: &tfjson::Message) {
    let change = &message.raw["change"];
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let resource = || ResourceChange {
        address: text(&change["resource"]["addr"]),
        resource_type: text(&change["resource"]["resource_type"]),
        action: text(&change["action"]),
    };
    match message.kind.as_str() {
        "planned_change" => state.changes.push(resource()),
        "resource_drift" => state.drifted.push(resource()),
        "change_summary" => {
            state.summary = serde_json::from_value(message.raw["changes"].clone()).ok();
        }
        _ => {}
    }
}

/// `90 s`, `12 min`, `3 h`: durations as people read them.
pub(crate) fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}
