//! The event hub. Every event of a run is written to the store by one batching writer, which
//! gives it the run's next sequence number, and only then is fanned out to live subscribers.
//! Events another process wrote (another replica on the same database) are pulled from the
//! store when it says so ([`EventHub::wake`]). A subscriber that falls behind (or arrives
//! late, or reconnects) reads the store and rejoins live, deduped by sequence number: no gap,
//! no duplicate, and terraform is never slowed by a reader.

mod subscription;
mod writer;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use actix_web::web::Bytes;

use tokio::runtime::Handle;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

pub use subscription::Subscription;
use writer::WriterCommand;

use crate::domain::{RunEvent, RunId, TwinEnd};
use crate::metrics::Metrics;
use crate::store::{
    run_blocking, NewEvent, RunFinish, RunProgress, SpoolMark, Store, StoreError, StoredEvent,
};

/// Live events kept per run for subscribers that are slightly behind; one further behind
/// reads the store instead.
const LIVE_BUFFER: usize = 4096;
/// Events read from the store per query when pulling what another process wrote.
const PULL_PAGE: usize = 500;
/// How often channels nobody follows are dropped and, on a shared database, followed runs are
/// checked for events whose notice was missed (a reconnecting listener).
const SWEEP: Duration = Duration::from_secs(5);

/// An event as subscribers get it: the stored event, plus its wire form (an SSE frame),
/// encoded by the first stream that sends it and shared by every other one. A run with
/// 10,000 readers encodes each live event once, not 10,000 times (docs/performance.md).
#[derive(Debug)]
pub struct SharedEvent {
    event: StoredEvent,
    wire: OnceLock<Bytes>,
}

impl SharedEvent {
    pub fn new(event: StoredEvent) -> Self {
        Self {
            event,
            wire: OnceLock::new(),
        }
    }

    /// The event's wire form; `encode` runs only if no stream has encoded it yet.
    pub fn wire(&self, encode: impl FnOnce(&StoredEvent) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.event)).clone()
    }
}

impl Deref for SharedEvent {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

/// The live side of one run that somebody follows here.
struct RunChannel {
    live: broadcast::Sender<Arc<SharedEvent>>,
    /// The highest sequence number sent live; held while sending, so each run's events go
    /// out in order whichever source (this process's writer, a pull) brings them.
    sent: Mutex<u64>,
    /// Notices of events written elsewhere, counted; a pull runs until it has seen them all.
    wakes: AtomicU64,
    /// Where a first pull starts when nothing was sent yet: before the first noticed event.
    first_noticed: AtomicU64,
    pulling: AtomicBool,
}

impl RunChannel {
    fn new() -> Self {
        Self {
            live: broadcast::channel(LIVE_BUFFER).0,
            sent: Mutex::new(0),
            wakes: AtomicU64::new(0),
            first_noticed: AtomicU64::new(0),
            pulling: AtomicBool::new(false),
        }
    }

    /// Sends the events after what was sent already; true when one of them was the `done`.
    fn send(&self, events: &[Arc<SharedEvent>]) -> bool {
        let Ok(mut sent) = self.sent.lock() else {
            return false;
        };
        let mut done = false;
        for event in events {
            if event.seq <= *sent {
                continue;
            }
            *sent = event.seq;
            done |= event.is_done();
            // No receivers is fine: nobody is watching live.
            let _ = self.live.send(Arc::clone(event));
        }
        done
    }
}

pub struct EventHub {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    runtime: Handle,
    /// The writer could not store its last batch and is retrying.
    store_failing: AtomicBool,
    /// Other processes write to the store too (replicas on one database).
    shared: AtomicBool,
    runs: Mutex<HashMap<RunId, Arc<RunChannel>>>,
    writer: mpsc::UnboundedSender<WriterCommand>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the event writer has stopped")]
    WriterStopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventHub {
    /// Creates the hub with its writer and sweeper tasks; they end when the hub is dropped.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>, runtime: &Handle) -> Arc<Self> {
        let (writer, commands) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            store: Arc::clone(&store),
            metrics,
            runtime: runtime.clone(),
            store_failing: AtomicBool::new(false),
            shared: AtomicBool::new(false),
            runs: Mutex::default(),
            writer,
        });
        runtime.spawn(writer::run(store, commands, Arc::downgrade(&hub)));
        runtime.spawn(sweep(Arc::downgrade(&hub)));
        hub
    }

    /// Other processes write events to the store too; they say so through [`EventHub::wake`].
    pub fn set_shared(&self) {
        self.shared.store(true, Ordering::SeqCst);
    }

    fn channel(&self, run_id: &RunId) -> Option<Arc<RunChannel>> {
        self.runs.lock().ok()?.get(run_id).cloned()
    }

    /// Queues an event; it is stored, then sent. Never waits on readers or the disk.
    pub fn publish(&self, run_id: &RunId, event: &RunEvent) -> Result<(), HubError> {
        self.publish_marked(run_id, event, None)
    }

    /// [`EventHub::publish`] of an event read from the run's spool: `mark` (how far the spool
    /// has been read) is stored in the same transaction as the event.
    pub fn publish_marked(
        &self,
        run_id: &RunId,
        event: &RunEvent,
        mark: Option<SpoolMark>,
    ) -> Result<(), HubError> {
        self.writer
            .send(WriterCommand::Event(
                new_event(run_id, event),
                Instant::now(),
                mark,
                progress_of(event),
            ))
            .map_err(|_| HubError::WriterStopped)
    }

    /// Writes the run's last events (its final `status` and `done`) in the same transaction as
    /// its outcome and the twin's status move, after every event queued before them. False
    /// when the run had ended already (another replica settled it): nothing was written.
    pub async fn finish(
        &self,
        last_events: &[RunEvent],
        finish: RunFinish,
        end: TwinEnd,
    ) -> Result<bool, HubError> {
        let (reply, stored) = oneshot::channel();
        let events = last_events
            .iter()
            .map(|event| new_event(&finish.run_id, event))
            .collect();
        self.writer
            .send(WriterCommand::Finish {
                events,
                finish: Box::new(finish),
                end,
                reply,
            })
            .map_err(|_| HubError::WriterStopped)?;
        Ok(stored.await.map_err(|_| HubError::WriterStopped)??)
    }

    /// Events of `run_id` after `after`: the stored backlog first, then live ones, to `done`.
    pub fn subscribe(&self, run_id: &RunId, after: u64) -> Subscription {
        let live = self.runs.lock().ok().map(|mut runs| {
            runs.entry(run_id.clone())
                .or_insert_with(|| Arc::new(RunChannel::new()))
                .live
                .subscribe()
        });
        Subscription::new(Arc::clone(&self.store), run_id.clone(), after, live)
    }

    /// The store says another process wrote events of `run_id` from `first` on: if anybody
    /// here follows the run, they are read from the store and sent live. Cheap to call from
    /// any thread; at most one read per run is under way.
    pub fn wake(self: &Arc<Self>, run_id: &RunId, first: u64) {
        let Some(channel) = self.channel(run_id) else {
            return;
        };
        if channel.live.receiver_count() == 0 {
            return;
        }
        let _ = channel.first_noticed.compare_exchange(
            0,
            first.max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        channel.wakes.fetch_add(1, Ordering::SeqCst);
        if channel.pulling.swap(true, Ordering::SeqCst) {
            return;
        }
        let (hub, run_id) = (Arc::downgrade(self), run_id.clone());
        self.runtime.spawn(pull(hub, run_id, channel));
    }

    /// Every followed run is checked against the store (after notices may have been missed).
    pub fn wake_all(self: &Arc<Self>) {
        let followed: Vec<RunId> = self
            .runs
            .lock()
            .map(|runs| runs.keys().cloned().collect())
            .unwrap_or_default();
        for run_id in followed {
            self.wake(&run_id, 0);
        }
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
    fn fan_out(&self, events: Vec<StoredEvent>, published: &[Option<Instant>]) {
        for (event, published) in events.into_iter().zip(published) {
            self.metrics.events_stored.inc();
            if let Some(published) = published {
                self.metrics
                    .event_lag
                    .observe(published.elapsed().as_secs_f64());
            }
            let run_id = event.run_id.clone();
            if let Some(channel) = self.channel(&run_id) {
                if channel.send(&[Arc::new(SharedEvent::new(event))]) {
                    self.close(&run_id);
                }
            }
        }
    }

    /// The run's `done` went out: its channel goes (subscribers read what is left, then end).
    fn close(&self, run_id: &RunId) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(run_id);
        }
    }
}

/// Reads what another process wrote of a run and sends it live, until every notice that came
/// meanwhile has been read.
async fn pull(hub: Weak<EventHub>, run_id: RunId, channel: Arc<RunChannel>) {
    loop {
        let Some(strong) = hub.upgrade() else {
            return;
        };
        let seen = channel.wakes.load(Ordering::SeqCst);
        let finished = loop {
            let sent = channel.sent.lock().map_or(0, |sent| *sent);
            let from = match sent {
                0 => channel
                    .first_noticed
                    .load(Ordering::SeqCst)
                    .saturating_sub(1),
                sent => sent,
            };
            let id = run_id.clone();
            let page = match run_blocking(&strong.store, move |s| {
                s.events_after(&id, from, PULL_PAGE)
            })
            .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(%run_id, %err, "could not read events another replica wrote; the next sweep tries again");
                    break false;
                }
            };
            let full = page.len() == PULL_PAGE;
            let page: Vec<Arc<SharedEvent>> = page
                .into_iter()
                .map(|event| Arc::new(SharedEvent::new(event)))
                .collect();
            if channel.send(&page) {
                strong.close(&run_id);
                break true;
            }
            if !full {
                break false;
            }
        };
        channel.pulling.store(false, Ordering::SeqCst);
        let again = !finished && channel.wakes.load(Ordering::SeqCst) != seen;
        if !again || channel.pulling.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}

/// Drops channels nobody follows; on a shared database, checks the followed ones.
async fn sweep(hub: Weak<EventHub>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if let Ok(mut runs) = hub.runs.lock() {
            runs.retain(|_, channel| channel.live.receiver_count() > 0);
        }
        if hub.shared.load(Ordering::SeqCst) {
            hub.wake_all();
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

fn new_event(run_id: &RunId, event: &RunEvent) -> NewEvent {
    NewEvent {
        run_id: run_id.clone(),
        event: event.name().to_owned(),
        data: event.data(run_id).to_string(),
    }
}
