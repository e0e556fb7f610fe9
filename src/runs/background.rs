//! A background task of the gateway (the drift scheduler, the retention sweep): spawned on
//! the runs runtime, told to stop at shutdown and waited for.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Background {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns `work` on `runtime`; it ends once the token it gets is cancelled.
    pub fn spawn<F, Fut>(name: &'static str, runtime: &tokio::runtime::Handle, work: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = runtime.spawn(work(stop.clone()));
        Self { name, stop, task }
    }

    pub async fn stop(self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!(task = self.name, "a background task did not stop in time");
        }
    }
}
