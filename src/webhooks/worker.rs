//! The delivery worker: a background task that turns outbox messages into deliveries (one per
//! webhook that gets the message), claims due deliveries under a lease, sends each signed, and
//! records every attempt with its outcome. A 2xx is final; anything else (another status, a
//! redirect, a timeout, a refused connection) is tried again on the schedule, with the same
//! `webhook-id` and body, until the schedule ends. Claims are leases in the store: a worker
//! that dies mid-send leaves its deliveries to whoever claims them when the lease ends, and a
//! restart loses nothing. At-least-once: a receiver dedupes by `webhook-id`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{is_private, recipients, retry_delay, sign, WebhookService};
use crate::clock;
use crate::domain::DeliveryId;
use crate::store::{
    run_blocking, ClaimedDelivery, DeliveryAttempt, DeliveryNext, NewDelivery, Store, StoreResult,
};

/// How often the worker looks for messages and due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Messages handed out, and deliveries claimed, per look.
const BATCH: usize = 32;
/// A claim outlives the request's time limit by at least this much (and by the limit itself
/// when that is longer), so no other worker takes a delivery that is still being sent.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// What the worker is configured with.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The first retry delay; the rest of the schedule scales with it (5 s in production).
    pub retry_unit: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
    pub allow_private: bool,
}

/// Resolves names like the system does, then drops every address a webhook may not reach, so a
/// name that points (or is re-pointed) at a private address fails at connect time.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| allow_private || !is_private(address.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves to no address a webhook may reach (loopback, private and link-local addresses are refused without --webhook-allow-private)"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

pub struct DeliveryWorker {
    store: Arc<dyn Store>,
    hooks: Arc<WebhookService>,
    client: reqwest::Client,
    settings: WorkerSettings,
    /// Who holds a claim: unique per process start.
    id: String,
}

/// The running worker: stop it and wait for it at shutdown.
pub struct WorkerHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming, and waits (at most `limit`) for the task to end. A delivery cut off
    /// mid-send is claimed again when its lease ends.
    pub async fn stop(self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("the webhook worker did not stop in time; its claims expire");
        }
    }
}

impl DeliveryWorker {
    pub fn new(
        store: Arc<dyn Store>,
        hooks: Arc<WebhookService>,
        settings: WorkerSettings,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("terrastream-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .build()?;
        Ok(Self {
            store,
            hooks,
            client,
            settings,
            id: format!(
                "worker-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        })
    }

    /// Runs the worker on `runtime` until its handle stops it.
    pub fn spawn(self, runtime: &tokio::runtime::Handle) -> WorkerHandle {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = runtime.spawn(async move { self.run(token).await });
        WorkerHandle { stop, task }
    }

    async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(err) = self.fan_out().await {
                tracing::error!(%err, "could not hand out webhook messages");
            }
            match self.claim().await {
                Ok(claimed) => {
                    let sends = claimed.into_iter().map(|delivery| self.deliver(delivery));
                    tokio::select! {
                        _ = futures_util::future::join_all(sends) => {}
                        () = stop.cancelled() => break,
                    }
                }
                Err(err) => tracing::error!(%err, "could not claim webhook deliveries"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => break,
            }
        }
    }

    /// Turns waiting outbox messages into deliveries, one per webhook that gets each.
    async fn fan_out(&self) -> StoreResult<()> {
        let messages = run_blocking(&self.store, |s| s.pending_messages(BATCH)).await?;
        if messages.is_empty() {
            return Ok(());
        }
        let hooks = run_blocking(&self.store, |s| s.list_webhooks(None)).await?;
        for message in messages {
            let now = clock::now();
            let deliveries: Vec<NewDelivery> = recipients(&message, &hooks)
                .into_iter()
                .map(|hook| NewDelivery {
                    id: DeliveryId::generate(),
                    webhook_id: hook.id.clone(),
                    next_attempt_at: now.clone(),
                })
                .collect();
            let id = message.id.clone();
            run_blocking(&self.store, move |s| s.fan_out_message(&id, &deliveries)).await?;
        }
        Ok(())
    }

    async fn claim(&self) -> StoreResult<Vec<ClaimedDelivery>> {
        let now = chrono::Utc::now();
        let timeout = self.settings.timeout;
        let lease = chrono::Duration::from_std(timeout + timeout.max(LEASE_MARGIN))
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let (worker, now_text, until) = (
            self.id.clone(),
            clock::format(now),
            clock::format(now + lease),
        );
        run_blocking(&self.store, move |s| {
            s.claim_deliveries(&worker, &now_text, &until, BATCH)
        })
        .await
    }

    /// One attempt: signed, sent, and recorded with where the delivery goes next.
    async fn deliver(&self, delivery: ClaimedDelivery) {
        let number = delivery.attempts + 1;
        let attempted_at = clock::now();
        let started = Instant::now();
        let outcome = self.send(&delivery).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status_code, error) = match &outcome {
            Ok(code) => (Some(*code), None),
            Err(why) => (None, Some(why.clone())),
        };
        let next = if status_code.is_some_and(|code| (200..300).contains(&code)) {
            DeliveryNext::Succeeded
        } else {
            match retry_delay(number, self.settings.retry_unit) {
                Some(delay) => DeliveryNext::Retry {
                    at: clock::format(
                        chrono::Utc::now()
                            + chrono::Duration::from_std(delay)
                                .unwrap_or_else(|_| chrono::Duration::hours(10)),
                    ),
                },
                None => DeliveryNext::Failed,
            }
        };
        match &next {
            DeliveryNext::Succeeded => {}
            DeliveryNext::Retry { at } => tracing::info!(
                delivery = %delivery.id, webhook = %delivery.webhook_id, attempt = number,
                status = ?status_code, error = ?error, retry_at = %at, "webhook delivery failed; it will be retried"
            ),
            DeliveryNext::Failed => tracing::warn!(
                delivery = %delivery.id, webhook = %delivery.webhook_id, attempt = number,
                status = ?status_code, error = ?error, "webhook delivery failed for good"
            ),
        }
        let attempt = DeliveryAttempt {
            delivery_id: delivery.id.clone(),
            number,
            attempted_at,
            status_code,
            error,
            duration_ms,
        };
        let worker = self.id.clone();
        match run_blocking(&self.store, move |s| {
            s.record_attempt(&worker, &attempt, &next)
        })
        .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery = %delivery.id,
                "a webhook attempt was not recorded: its claim had ended or the webhook is gone"
            ),
            Err(err) => {
                tracing::error!(delivery = %delivery.id, %err, "could not record a webhook attempt")
            }
        }
    }

    /// POSTs the message: the status code answered, or why there was none.
    async fn send(&self, delivery: &ClaimedDelivery) -> Result<u16, String> {
        let url = reqwest::Url::parse(&delivery.url).map_err(|e| format!("bad url: {e}"))?;
        if !self.settings.allow_private {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(is_private) {
                return Err("refused: the url points at a private address".into());
            }
        }
        let secret = self
            .hooks
            .open_secret(&delivery.webhook_id, &delivery.sealed_secret)
            .map_err(|e| e.to_string())?;
        let message = &delivery.message;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&secret, message.id.as_str(), timestamp, &message.body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", message.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|err| describe(&err, self.settings.timeout))?;
        Ok(response.status().as_u16())
    }
}

/// Why a request got no answer, in a line.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
