//! Retention (`--retention-days N`): soft-deleted twins older than the period are purged for
//! good, by the same rules as `DELETE /twins/{id}?purge=true`, every hour (logged, audited as
//! the `retention` actor). Only the gateway that leads the `retention` task sweeps.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::background::Background;
use super::Supervisor;
use crate::clock;
use crate::store::{run_blocking, StoreResult};

/// Who the sweep's purges are by.
pub const RETENTION: &str = "retention";

/// The sweep's settings.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// How long a soft-deleted twin is kept.
    pub keep: Duration,
    /// How often the sweep looks.
    pub every: Duration,
}

pub struct RetentionSweep;

impl RetentionSweep {
    pub fn spawn(
        supervisor: Arc<Supervisor>,
        policy: RetentionPolicy,
        runtime: &tokio::runtime::Handle,
    ) -> Background {
        Background::spawn("retention sweep", runtime, move |stop| {
            sweep_until_stopped(supervisor, policy, stop)
        })
    }
}

async fn sweep_until_stopped(
    supervisor: Arc<Supervisor>,
    policy: RetentionPolicy,
    stop: CancellationToken,
) {
    tracing::info!(
        keep_secs = policy.keep.as_secs_f64(),
        "soft-deleted twins are purged once past the retention period"
    );
    loop {
        tokio::select! {
            () = tokio::time::sleep(policy.every) => {}
            () = stop.cancelled() => break,
        }
        if !supervisor.is_accepting() {
            continue;
        }
        if let Err(err) = sweep(&supervisor, policy).await {
            tracing::error!(%err, "the retention sweep failed");
        }
    }
}

/// Purges every twin deleted longer ago than the period; one that may not be purged yet (its
/// state still holds resources, a run works) is logged and tried again next time.
async fn sweep(supervisor: &Arc<Supervisor>, policy: RetentionPolicy) -> StoreResult<()> {
    let store = supervisor.store();
    // A lease a little longer than the sweep's period: one sweeper among the replicas.
    let lease = policy.every * 2;
    if !run_blocking(&store, move |s| s.try_lead("retention", lease)).await? {
        return Ok(());
    }
    let keep = chrono::Duration::from_std(policy.keep).unwrap_or(chrono::Duration::MAX);
    let cutoff = clock::format(chrono::Utc::now() - keep);
    let due = run_blocking(&store, move |s| s.deleted_before(&cutoff)).await?;
    for twin_id in due {
        let twin = match supervisor.twins().get(&twin_id).await {
            Ok(twin) => twin,
            Err(err) => {
                tracing::warn!(%twin_id, %err, "retention: cannot read the twin");
                continue;
            }
        };
        match supervisor.purge(&twin, RETENTION).await {
            Ok(()) => tracing::info!(
                %twin_id,
                deleted_at = twin.deleted_at.as_deref().unwrap_or_default(),
                "retention: purged a soft-deleted twin past the retention period"
            ),
            Err(err) => tracing::warn!(%twin_id, %err, "retention: the twin is kept for now"),
        }
    }
    Ok(())
}
