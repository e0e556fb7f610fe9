//! Scheduled drift checks (`--drift-interval-secs N`): every deployed twin gets a drift check
//! run every N seconds, each twin at its own phase of the interval (so checks spread out
//! instead of all starting together), at most one at a time per twin, never while the twin is
//! locked by a run or terraform's state lock is held. Only the gateway that leads the `drift`
//! task schedules ([`crate::store::Store::try_lead`]: a lease in the database, renewed every
//! tick; with several gateways on one PostgreSQL database another takes over once a lost
//! leader's lease has ended).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::background::Background;
use super::{RunError, Supervisor};
use crate::clock;
use crate::domain::{DeploymentStatus, Principal, Run, RunKind, Twin, TwinId};
use crate::store::{run_blocking, StoreResult};
use crate::vault::VaultError;

/// Who the scheduler's runs are by.
pub const SCHEDULER: &str = "drift-scheduler";

/// Where a twin's checks fall within the interval: a stable offset from its id.
pub fn phase(twin: &TwinId, interval: Duration) -> Duration {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(twin.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(u64::from_le_bytes(first) % millis)
}

/// Is a scheduled check of `twin` due at `now`? Its last check (any drift run) was
/// `last_check`; `state_locked` when terraform's state lock is held. A twin never checked is
/// due at its phase after it was deployed or the scheduler started, whichever is later.
pub fn is_due(
    twin: &Twin,
    last_check: Option<&Run>,
    state_locked: bool,
    interval: Duration,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    if twin.deployment_status != DeploymentStatus::Deployed
        || twin.is_locked
        || twin.is_deleted()
        || state_locked
    {
        return false;
    }
    let step = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    match last_check {
        Some(run) if !run.status.is_finished() => false,
        Some(run) => clock::parse(&run.created_at).is_none_or(|at| now >= at + step),
        None => {
            let deployed = twin
                .last_deployed_at
                .as_deref()
                .and_then(clock::parse)
                .unwrap_or(started);
            let offset = chrono::Duration::from_std(phase(&twin.id, interval))
                .unwrap_or_else(|_| chrono::Duration::zero());
            now >= deployed.max(started) + offset
        }
    }
}

/// The scheduler task: stop it and wait for it at shutdown.
pub struct DriftScheduler;

impl DriftScheduler {
    /// Starts scheduling on `runtime` every `interval`.
    pub fn spawn(
        supervisor: Arc<Supervisor>,
        interval: Duration,
        runtime: &tokio::runtime::Handle,
    ) -> Background {
        Background::spawn("drift scheduler", runtime, move |stop| {
            schedule(supervisor, interval, stop)
        })
    }
}

/// How often the scheduler looks at the twins for an `interval`.
fn tick_of(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// How long a lead lasts without renewal: a few ticks, so a leader that misses one keeps it,
/// and one that is gone is followed within that.
fn lease_of(tick: Duration) -> Duration {
    (tick * 4).max(Duration::from_secs(2))
}

async fn schedule(supervisor: Arc<Supervisor>, interval: Duration, stop: CancellationToken) {
    let tick = tick_of(interval);
    let started = Utc::now();
    tracing::info!(
        interval_secs = interval.as_secs_f64(),
        "scheduled drift checks are on"
    );
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.cancelled() => break,
        }
        if !supervisor.is_accepting() {
            continue;
        }
        if let Err(err) = check_due(&supervisor, interval, lease_of(tick), started).await {
            tracing::error!(%err, "scheduled drift checks failed to start");
        }
    }
}

/// Starts a drift check of every twin that is due.
async fn check_due(
    supervisor: &Arc<Supervisor>,
    interval: Duration,
    lease: Duration,
    started: DateTime<Utc>,
) -> StoreResult<()> {
    let store = supervisor.store();
    if !run_blocking(&store, move |s| s.try_lead("drift", lease)).await? {
        return Ok(());
    }
    let everyone = Principal {
        owner: SCHEDULER.to_owned(),
        is_admin: true,
    };
    let twins = run_blocking(&store, move |s| s.list_twins(&everyone, false)).await?;
    for twin in twins {
        if twin.deployment_status != DeploymentStatus::Deployed || twin.is_locked {
            continue;
        }
        let twin_id = twin.id.clone();
        let (last, lock) = run_blocking(&store, move |s| {
            Ok((
                s.latest_run_of_kind(&twin_id, RunKind::Drift)?,
                s.state_lock(&twin_id)?,
            ))
        })
        .await?;
        if !is_due(
            &twin,
            last.as_ref(),
            lock.is_some(),
            interval,
            started,
            Utc::now(),
        ) {
            continue;
        }
        match supervisor
            .start(&twin, RunKind::Drift, SCHEDULER, None)
            .await
        {
            Ok(run) => {
                tracing::info!(twin_id = %twin.id, run_id = %run.id, "scheduled drift check started")
            }
            Err(RunError::ShuttingDown) => return Ok(()),
            Err(RunError::Secrets(err @ VaultError::Expired { .. })) => {
                tracing::warn!(twin_id = %twin.id, %err, "scheduled drift check skipped")
            }
            Err(err) => {
                tracing::warn!(twin_id = %twin.id, %err, "scheduled drift check not started")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RunId, RunStatus, SealedVariables, TwinName};

    fn twin(status: DeploymentStatus, deployed_at: DateTime<Utc>) -> Twin {
        Twin {
            id: TwinId::generate(),
            owner: "o".into(),
            name: TwinName::parse("t").unwrap_or_else(|e| panic!("{e}")),
            provider: crate::domain::Provider::Sandbox,
            deployment_status: status,
            is_locked: false,
            active_job_id: None,
            last_deployed_at: Some(clock::format(deployed_at)),
            terraform_outputs: None,
            files: crate::demo::files().unwrap_or_else(|e| panic!("{e}")),
            variables: Default::default(),
            secret_variables: SealedVariables::default(),
            credential_ids: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            deleted_at: None,
            version: 0,
        }
    }

    fn drift_run(twin: &Twin, status: RunStatus, at: DateTime<Utc>) -> Run {
        Run {
            id: RunId::generate(),
            twin_id: twin.id.clone(),
            kind: RunKind::Drift,
            status,
            stage: None,
            progress: 0,
            actor: SCHEDULER.into(),
            created_at: clock::format(at),
            start_time: None,
            end_time: None,
            exit_code: None,
            error: None,
            message: None,
            outputs: None,
            result: None,
            step: None,
            applies_plan: None,
            owner: None,
            cancel_requested: false,
            log_level: None,
        }
    }

    #[test]
    fn a_deployed_twin_is_checked_once_per_interval_from_its_last_check() {
        let interval = Duration::from_secs(60);
        let now = Utc::now();
        let started = now - chrono::Duration::hours(1);
        let deployed = twin(DeploymentStatus::Deployed, now - chrono::Duration::hours(2));
        let recent = drift_run(
            &deployed,
            RunStatus::Completed,
            now - chrono::Duration::seconds(30),
        );
        let old = drift_run(
            &deployed,
            RunStatus::Failed,
            now - chrono::Duration::seconds(61),
        );
        assert!(!is_due(
            &deployed,
            Some(&recent),
            false,
            interval,
            started,
            now
        ));
        assert!(is_due(&deployed, Some(&old), false, interval, started, now));
        // Never checked: due once its phase after the scheduler started has passed.
        assert!(is_due(&deployed, None, false, interval, started, now));
    }

    #[test]
    fn never_two_at_once_never_while_locked_and_only_deployed_twins() {
        let interval = Duration::from_secs(60);
        let now = Utc::now();
        let started = now - chrono::Duration::hours(1);
        let mut deployed = twin(DeploymentStatus::Deployed, now - chrono::Duration::hours(2));
        let running = drift_run(
            &deployed,
            RunStatus::Processing,
            now - chrono::Duration::hours(1),
        );
        assert!(!is_due(
            &deployed,
            Some(&running),
            false,
            interval,
            started,
            now
        ));
        assert!(!is_due(&deployed, None, true, interval, started, now));
        deployed.is_locked = true;
        assert!(!is_due(&deployed, None, false, interval, started, now));
        for status in [
            DeploymentStatus::Draft,
            DeploymentStatus::Error,
            DeploymentStatus::Deploying,
        ] {
            let other = twin(status, now - chrono::Duration::hours(2));
            assert!(
                !is_due(&other, None, false, interval, started, now),
                "{status}"
            );
        }
    }

    #[test]
    fn a_lead_outlasts_a_few_ticks() {
        for interval in [1, 60, 3600, 86_400].map(Duration::from_secs) {
            let tick = tick_of(interval);
            assert!(lease_of(tick) >= tick * 2, "{interval:?}");
            assert!(lease_of(tick) <= Duration::from_secs(120), "{interval:?}");
        }
    }

    #[test]
    fn first_checks_spread_over_the_interval() {
        let interval = Duration::from_secs(3600);
        let now = Utc::now();
        let phases: std::collections::BTreeSet<u64> = (0..50)
            .map(|_| phase(&TwinId::generate(), interval).as_secs() / 360)
            .collect();
        // 50 twins fall in most of the interval's ten parts, not in one.
        assert!(phases.len() >= 6, "{phases:?}");
        let fresh = twin(DeploymentStatus::Deployed, now);
        let offset = chrono::Duration::from_std(phase(&fresh.id, interval)).unwrap_or_default();
        assert!(
            !is_due(
                &fresh,
                None,
                false,
                interval,
                now,
                now + offset - chrono::Duration::milliseconds(1)
            ) || offset.is_zero()
        );
        assert!(is_due(&fresh, None, false, interval, now, now + offset));
    }
}
