//! The one writer: drains the queue in batches (many events per transaction), stores them,
//! then hands them to the hub for fan-out.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::EventHub;
use crate::store::{run_blocking, RunFinish, Store, StoreError, StoredEvent};

const MAX_BATCH: usize = 2048;

pub(super) enum WriterCommand {
    Event(StoredEvent),
    Finish {
        events: Vec<StoredEvent>,
        finish: Box<RunFinish>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

pub(super) async fn run(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<WriterCommand>,
    hub: Weak<EventHub>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while commands.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut events = Vec::new();
        let mut flushes = Vec::new();
        for command in batch.drain(..) {
            match command {
                WriterCommand::Event(event) => events.push(event),
                WriterCommand::Flush(reply) => flushes.push(reply),
                WriterCommand::Finish {
                    events: last,
                    finish,
                    reply,
                } => {
                    let mut stored = std::mem::take(&mut events);
                    stored.extend(last);
                    let result = write_finish(&store, stored, *finish, &hub).await;
                    let _ = reply.send(result);
                }
            }
        }
        write(&store, events, &hub).await;
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// Stores events, retrying while the database is busy or failing, then fans them out.
async fn write(store: &Arc<dyn Store>, events: Vec<StoredEvent>, hub: &Weak<EventHub>) {
    if events.is_empty() {
        return;
    }
    let events = Arc::new(events);
    let mut delay = Duration::from_millis(50);
    loop {
        let batch = Arc::clone(&events);
        match run_blocking(store, move |s| s.append_events(&batch, None)).await {
            Ok(()) => break,
            Err(err) => {
                tracing::error!(error = %err, count = events.len(), "storing run events failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    send(hub, Arc::unwrap_or_clone(events));
}

/// Stores a run's last events (ending with `done`) together with its outcome.
async fn write_finish(
    store: &Arc<dyn Store>,
    events: Vec<StoredEvent>,
    finish: RunFinish,
    hub: &Weak<EventHub>,
) -> Result<(), StoreError> {
    let events = Arc::new(events);
    let batch = Arc::clone(&events);
    let attempt = finish.clone();
    let result = match run_blocking(store, move |s| s.append_events(&batch, Some(&attempt))).await {
        Err(StoreError::Conflict(conflict)) => {
            // The twin was moved under the run (an admin repair): still end the run and its
            // stream, and say why the twin did not move.
            tracing::error!(run_id = %finish.run_id, %conflict, "run ended but the twin could not move");
            let mut without_move = finish;
            without_move.twin_move = None;
            let batch = Arc::clone(&events);
            run_blocking(store, move |s| s.append_events(&batch, Some(&without_move))).await
        }
        other => other,
    };
    if result.is_ok() {
        send(hub, Arc::unwrap_or_clone(events));
    }
    result
}

fn send(hub: &Weak<EventHub>, events: Vec<StoredEvent>) {
    if let Some(hub) = hub.upgrade() {
        for event in events {
            hub.fan_out(Arc::new(event));
        }
    }
}
