//! The one writer: drains the queue in batches (many events per transaction), stores them,
//! then hands them to the hub for fan-out. While the store fails (disk full, database busy
//! for long) it retries with backoff and reports itself unhealthy; nothing is dropped and
//! terraform's pipes keep draining into the queue.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::EventHub;
use crate::clock;
use crate::domain::{events, RunId, TwinEnd};
use crate::store::{
    run_blocking, Appended, NewEvent, RunFinish, RunProgress, SpoolMark, Store, StoreError,
};

/// At most this many events per transaction; well under the live buffer, so one batch never
/// pushes a live reader out of it.
const MAX_BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) enum WriterCommand {
    /// An event, when it was published, how far its run's spool was read with it, and what
    /// it says of the run's stage and progress.
    Event(NewEvent, Instant, Option<SpoolMark>, RunProgress),
    Finish {
        events: Vec<NewEvent>,
        finish: Box<RunFinish>,
        /// How the run's end moves its twin, decided when it is written.
        end: TwinEnd,
        /// False when the run had ended before (nothing of it was written).
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

type Timed = (NewEvent, Option<Instant>, Option<SpoolMark>, RunProgress);

pub(super) async fn run(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<WriterCommand>,
    hub: Weak<EventHub>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while commands.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut events: Vec<Timed> = Vec::new();
        let mut flushes = Vec::new();
        for command in batch.drain(..) {
            match command {
                WriterCommand::Event(event, published, mark, progress) => {
                    events.push((event, Some(published), mark, progress));
                }
                WriterCommand::Flush(reply) => flushes.push(reply),
                WriterCommand::Finish {
                    events: last,
                    finish,
                    end,
                    reply,
                } => {
                    let mut stored = std::mem::take(&mut events);
                    stored.extend(
                        last.into_iter()
                            .map(|event| (event, None, None, RunProgress::default())),
                    );
                    let result = write(&store, stored, Some((*finish, end)), &hub).await;
                    let _ = reply.send(result);
                }
            }
        }
        if !events.is_empty() {
            // Without a finish nothing can conflict, so this only returns once stored.
            let _ = write(&store, events, None, &hub).await;
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// Stores events (and a run's end), retrying with backoff while the store fails, then fans
/// them out. A run's end moves its twin as the twin is when it is written; if the twin was
/// moved under the run so that the move is refused (an admin repaired it), the run still ends
/// and its stream with it, without the move. False when the finished run had ended before.
async fn write(
    store: &Arc<dyn Store>,
    events: Vec<Timed>,
    finish: Option<(RunFinish, TwinEnd)>,
    hub: &Weak<EventHub>,
) -> Result<bool, StoreError> {
    let rows: Arc<Vec<NewEvent>> =
        Arc::new(events.iter().map(|(event, ..)| event.clone()).collect());
    // The furthest mark, the last stage and percent of each run in the batch.
    let mut furthest: Vec<(RunId, SpoolMark)> = Vec::new();
    let mut progress: Vec<(RunId, RunProgress)> = Vec::new();
    for (event, _, mark, update) in &events {
        if let Some(mark) = mark {
            match furthest.iter_mut().find(|(run, _)| *run == event.run_id) {
                Some((_, at)) => *at = *mark,
                None => furthest.push((event.run_id.clone(), *mark)),
            }
        }
        if *update != RunProgress::default() {
            match progress.iter_mut().find(|(run, _)| *run == event.run_id) {
                Some((_, at)) => {
                    at.stage = update.stage.or(at.stage);
                    at.percent = update.percent.or(at.percent);
                }
                None => progress.push((event.run_id.clone(), *update)),
            }
        }
    }
    let (marks, progress) = (Arc::new(furthest), Arc::new(progress));
    let mut delay = Duration::from_millis(50);
    let (stored, ended) = loop {
        let attempt = match &finish {
            None => None,
            Some((finish, end)) => match decide_end(store, finish, end).await {
                Ok(decided) => Some(decided),
                Err(err) => {
                    set_failing(hub, true);
                    tracing::error!(error = %err, "reading the run's twin failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let (batch, at, updates) = (Arc::clone(&rows), Arc::clone(&marks), Arc::clone(&progress));
        let written = run_blocking(store, move |s| {
            s.append_events(&batch, &at, &updates, attempt.as_ref())
        })
        .await;
        match written {
            Ok(Appended::Stored { events, ended }) => break (events, ended),
            // The twin changed between the decision and the write: decide again.
            Ok(Appended::TwinChanged) => continue,
            Err(err) => {
                set_failing(hub, true);
                tracing::error!(error = %err, count = rows.len(), "storing run events failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    };
    set_failing(hub, false);
    for run_id in &ended {
        let left_out = events.iter().filter(|(e, ..)| e.run_id == *run_id).count();
        tracing::warn!(%run_id, left_out, "events of a run that had ended were not stored (another gateway settled it)");
    }
    if let Some(hub) = hub.upgrade() {
        let published: Vec<Option<Instant>> = events
            .iter()
            .filter(|(e, ..)| !ended.contains(&e.run_id))
            .map(|(_, published, ..)| *published)
            .collect();
        hub.fan_out(stored, &published);
    }
    Ok(finish.is_none_or(|(finish, _)| !ended.contains(&finish.run_id)))
}

/// The run's end with its twin's new row, decided on the twin as it is now, and the webhook
/// messages that report it.
async fn decide_end(
    store: &Arc<dyn Store>,
    finish: &RunFinish,
    end: &TwinEnd,
) -> Result<RunFinish, StoreError> {
    let (twin_id, run_id) = (finish.twin_id.clone(), finish.run_id.clone());
    let (twin, run) = run_blocking(store, move |s| {
        Ok((s.get_twin(&twin_id)?, s.get_run(&run_id)?))
    })
    .await?;
    let mut decided = finish.clone();
    decided.twin = match twin
        .as_ref()
        .map(|t| end.decide(t, &finish.run_id, &clock::now()))
    {
        Some(Ok(change)) => change,
        Some(Err(refusal)) => {
            tracing::error!(run_id = %finish.run_id, %refusal, "run ended but the twin could not move");
            None
        }
        None => None,
    };
    decided.messages = match (&run, &twin) {
        (Some(run), Some(twin)) => {
            let ending = events::RunEnd {
                run,
                outcome: finish.outcome,
                error: finish.error.as_deref(),
                message: &finish.message,
                result: finish.result.as_ref(),
                ended_at: &finish.ended_at,
            };
            let status = decided
                .twin
                .as_ref()
                .map_or(twin.deployment_status, |change| change.status);
            events::run_ended(&ending, twin, status)
        }
        _ => Vec::new(),
    };
    Ok(decided)
}

fn set_failing(hub: &Weak<EventHub>, failing: bool) {
    if let Some(hub) = hub.upgrade() {
        hub.store_failing.store(failing, Ordering::SeqCst);
    }
}
