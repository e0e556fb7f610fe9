//! The event hub. Every event of a run gets the run's next sequence number, is written to the
//! store by one batching writer, and only then is fanned out to live subscribers. A subscriber
//! that falls behind (or arrives late, or reconnects) reads the store and rejoins live, deduped
//! by sequence number: no gap, no duplicate, and terraform is never slowed by a reader.

mod subscription;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

pub use subscription::Subscription;
use writer::WriterCommand;

use crate::domain::{RunEvent, RunId, TwinEnd};
use crate::metrics::Metrics;
use crate::store::{RunFinish, RunProgress, SpoolMark, Store, StoreError, StoredEvent};

/// Live events kept per run for subscribers that are slightly behind; one further behind
/// reads the store instead.
const LIVE_BUFFER: usize = 4096;

struct RunChannel {
    /// The last sequence number given out. Held while an event is queued, so the writer
    /// receives each run's events in sequence order.
    last_seq: Mutex<u64>,
    live: broadcast::Sender<Arc<StoredEvent>>,
}

pub struct EventHub {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// The writer could not store its last batch and is retrying.
    store_failing: AtomicBool,
    runs: Mutex<HashMap<RunId, Arc<RunChannel>>>,
    writer: mpsc::UnboundedSender<WriterCommand>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("run {0} is not open in the event hub")]
    NotOpen(RunId),
    #[error("the event writer has stopped")]
    WriterStopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventHub {
    /// Creates the hub and its writer task; the task ends when the hub is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Self> {
        let (writer, commands) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            store: Arc::clone(&store),
            metrics,
            store_failing: AtomicBool::new(false),
            runs: Mutex::default(),
            writer,
        });
        runtime.spawn(writer::run(store, commands, Arc::downgrade(&hub)));
        hub
    }

    fn channel(&self, run_id: &RunId) -> Option<Arc<RunChannel>> {
        self.runs.lock().ok()?.get(run_id).cloned()
    }

    /// Opens a run for publishing; its next event gets `last_seq + 1`.
    pub fn open_run(&self, run_id: &RunId, last_seq: u64) {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let channel = Arc::new(RunChannel {
            last_seq: Mutex::new(last_seq),
            live,
        });
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(run_id.clone(), channel);
        }
    }

    /// Is the run still publishing (its `done` not yet written)?
    pub fn is_live(&self, run_id: &RunId) -> bool {
        self.channel(run_id).is_some()
    }

    /// Queues an event; it is stored, then sent. Never waits on readers or the disk.
    pub fn publish(&self, run_id: &RunId, event: &RunEvent) -> Result<u64, HubError> {
        self.publish_marked(run_id, event, None)
    }

    /// [`EventHub::publish`] of an event read from the run's spool: `mark` (how far the spool
    /// has been read) is stored in the same transaction as the event.
    pub fn publish_marked(
        &self,
        run_id: &RunId,
        event: &RunEvent,
        mark: Option<SpoolMark>,
    ) -> Result<u64, HubError> {
        let channel = self
            .channel(run_id)
            .ok_or_else(|| HubError::NotOpen(run_id.clone()))?;
        let mut last = channel
            .last_seq
            .lock()
            .map_err(|_| HubError::WriterStopped)?;
        let stored = stored_event(run_id, *last + 1, event);
        self.writer
            .send(WriterCommand::Event(
                stored,
                Instant::now(),
                mark,
                progress_of(event),
            ))
            .map_err(|_| HubError::WriterStopped)?;
        *last += 1;
        Ok(*last)
    }

    /// Writes the run's last events (its final `status` and `done`) in the same transaction as
    /// its outcome and the twin's status move, after every event queued before them; then
    /// closes the run.
    pub async fn finish(
        &self,
        last_events: &[RunEvent],
        finish: RunFinish,
        end: TwinEnd,
    ) -> Result<u64, HubError> {
        let run_id = finish.run_id.clone();
        let channel = self
            .channel(&run_id)
            .ok_or_else(|| HubError::NotOpen(run_id.clone()))?;
        let (reply, stored) = oneshot::channel();
        let seq = {
            let mut last = channel
                .last_seq
                .lock()
                .map_err(|_| HubError::WriterStopped)?;
            let events = (1u64..)
                .zip(last_events)
                .map(|(offset, event)| stored_event(&run_id, *last + offset, event))
                .collect();
            self.writer
                .send(WriterCommand::Finish {
                    events,
                    finish: Box::new(finish),
                    end,
                    reply,
                })
                .map_err(|_| HubError::WriterStopped)?;
            *last += last_events.len() as u64;
            *last
        };
        stored.await.map_err(|_| HubError::WriterStopped)??;
        Ok(seq)
    }

    /// Events of `run_id` after `after`: the stored backlog first, then live ones.
    pub fn subscribe(&self, run_id: &RunId, after: u64) -> Subscription {
        let live = self.channel(run_id).map(|c| c.live.subscribe());
        Subscription::new(Arc::clone(&self.store), run_id.clone(), after, live)
    }

    /// Resolves once every event queued so far has been written.
    pub async fn flush(&self) -> Result<(), HubError> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(WriterCommand::Flush(reply))
            .map_err(|_| HubError::WriterStopped)?;
        done.await.map_err(|_| HubError::WriterStopped)
    }

    /// Is the writer running and storing (for readiness)?
    pub fn is_healthy(&self) -> bool {
        !self.writer.is_closed() && !self.store_failing.load(Ordering::SeqCst)
    }

    /// Called by the writer after events are stored: send them to live subscribers.
    fn fan_out(&self, event: Arc<StoredEvent>, published: Option<Instant>) {
        self.metrics.events_stored.inc();
        if let Some(published) = published {
            self.metrics
                .event_lag
                .observe(published.elapsed().as_secs_f64());
        }
        let Some(channel) = self.channel(&event.run_id) else {
            return;
        };
        let is_done = event.is_done();
        // No receivers is fine: nobody is watching live.
        let _ = channel.live.send(event.clone());
        if is_done {
            if let Ok(mut runs) = self.runs.lock() {
                runs.remove(&event.run_id);
            }
        }
    }
}

/// What an event says of its run's stage and progress, kept on the run row.
fn progress_of(event: &RunEvent) -> RunProgress {
    match event {
        RunEvent::Stage { stage } => RunProgress {
            stage: Some(*stage),
            percent: None,
        },
        RunEvent::Progress { percent, .. } => RunProgress {
            stage: None,
            percent: Some(*percent),
        },
        _ => RunProgress::default(),
    }
}

fn stored_event(run_id: &RunId, seq: u64, event: &RunEvent) -> StoredEvent {
    StoredEvent {
        run_id: run_id.clone(),
        seq,
        event: event.name().to_owned(),
        data: event.data(run_id).to_string(),
    }
}
