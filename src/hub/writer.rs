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
use crate::domain::RunId;
use crate::store::{run_blocking, RunFinish, SpoolMark, Store, StoreError, StoredEvent};

/// At most this many events per transaction; well under the live buffer, so one batch never
/// pushes a live reader out of it.
const MAX_BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) enum WriterCommand {
    /// An event, when it was published, and how far its run's spool was read with it.
    Event(StoredEvent, Instant, Option<SpoolMark>),
    Finish {
        events: Vec<StoredEvent>,
        finish: Box<RunFinish>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

type Timed = (StoredEvent, Option<Instant>, Option<SpoolMark>);

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
                WriterCommand::Event(event, published, mark) => {
                    events.push((event, Some(published), mark));
                }
                WriterCommand::Flush(reply) => flushes.push(reply),
                WriterCommand::Finish {
                    events: last,
                    finish,
                    reply,
                } => {
                    let mut stored = std::mem::take(&mut events);
                    stored.extend(last.into_iter().map(|event| (event, None, None)));
                    let result = write(&store, stored, Some(*finish), &hub).await;
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
/// them out. A conflict on the twin's move (an admin moved the twin under the run) still ends
/// the run and its stream, without the move.
async fn write(
    store: &Arc<dyn Store>,
    events: Vec<Timed>,
    mut finish: Option<RunFinish>,
    hub: &Weak<EventHub>,
) -> Result<(), StoreError> {
    let rows: Arc<Vec<StoredEvent>> =
        Arc::new(events.iter().map(|(event, _, _)| event.clone()).collect());
    // The furthest mark of each run in the batch: its spool was read that far.
    let mut furthest: Vec<(RunId, SpoolMark)> = Vec::new();
    for (event, _, mark) in &events {
        let Some(mark) = mark else { continue };
        match furthest.iter_mut().find(|(run, _)| *run == event.run_id) {
            Some((_, at)) => *at = *mark,
            None => furthest.push((event.run_id.clone(), *mark)),
        }
    }
    let marks = Arc::new(furthest);
    let mut delay = Duration::from_millis(50);
    loop {
        let (batch, attempt, at) = (Arc::clone(&rows), finish.clone(), Arc::clone(&marks));
        match run_blocking(store, move |s| {
            s.append_events(&batch, &at, attempt.as_ref())
        })
        .await
        {
            Ok(()) => break,
            Err(StoreError::Conflict(conflict))
                if finish.as_ref().is_some_and(|f| f.twin_move.is_some()) =>
            {
                if let Some(finish) = finish.as_mut() {
                    tracing::error!(run_id = %finish.run_id, %conflict, "run ended but the twin could not move");
                    finish.twin_move = None;
                }
            }
            Err(err @ StoreError::Conflict(_)) => return Err(err),
            Err(err) => {
                set_failing(hub, true);
                tracing::error!(error = %err, count = rows.len(), "storing run events failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
    set_failing(hub, false);
    if let Some(hub) = hub.upgrade() {
        for (event, published, _) in events {
            hub.fan_out(Arc::new(event), published);
        }
    }
    Ok(())
}

fn set_failing(hub: &Weak<EventHub>, failing: bool) {
    if let Some(hub) = hub.upgrade() {
        hub.store_failing.store(failing, Ordering::SeqCst);
    }
}
