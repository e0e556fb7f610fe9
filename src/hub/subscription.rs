//! One reader of a run's events: the backlog from the store, then live events, deduped by
//! sequence number; back to the store whenever it falls behind the live buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::SharedEvent;
use crate::domain::RunId;
use crate::store::{run_blocking, Store, StoreError};

const PAGE: usize = 500;

pub struct Subscription {
    store: Arc<dyn Store>,
    run_id: RunId,
    /// The last sequence number handed out.
    last: u64,
    backlog: VecDeque<Arc<SharedEvent>>,
    live: Option<broadcast::Receiver<Arc<SharedEvent>>>,
    /// The store may hold events after `last` that the live channel will not bring.
    behind: bool,
    ended: bool,
}

impl Subscription {
    pub(super) fn new(
        store: Arc<dyn Store>,
        run_id: RunId,
        after: u64,
        live: Option<broadcast::Receiver<Arc<SharedEvent>>>,
    ) -> Self {
        Self {
            store,
            run_id,
            last: after,
            backlog: VecDeque::new(),
            live,
            behind: true,
            ended: false,
        }
    }

    /// The next event in sequence; `None` after `done` (or when a finished run has no more).
    pub async fn next(&mut self) -> Result<Option<Arc<SharedEvent>>, StoreError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                self.ended = event.is_done();
                return Ok(Some(event));
            }
            if self.behind {
                let (run_id, after) = (self.run_id.clone(), self.last);
                let page = run_blocking(&self.store, move |s| s.events_after(&run_id, after, PAGE))
                    .await?;
                self.behind = page.len() == PAGE;
                if !page.is_empty() {
                    self.backlog
                        .extend(page.into_iter().map(|e| Arc::new(SharedEvent::new(e))));
                    continue;
                }
            }
            let Some(live) = self.live.as_mut() else {
                // Not live and nothing more stored: a finished run read to its end.
                return Ok(None);
            };
            match live.recv().await {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => self.backlog.push_back(event),
                // A gap: everything sent was stored first, so the store fills it.
                Ok(_) | Err(RecvError::Lagged(_)) => self.behind = true,
                Err(RecvError::Closed) => {
                    self.live = None;
                    self.behind = true;
                }
            }
        }
    }
}
