//! Webhooks by the Standard Webhooks spec: endpoints owners register (their own twins' events;
//! an admin's endpoints get everyone's), the rules of who gets which message, the signature
//! (`v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>`), the retry schedule, and which
//! addresses a delivery may reach. Messages come from the store's outbox; [`worker`] sends them.

pub mod worker;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::clock;
use crate::domain::audit::{AuditAction, NewAudit};
use crate::domain::events::{EventType, OutboxMessage};
use crate::domain::{Principal, WebhookId};
use crate::state::{CipherError, StateCipher};
use crate::store::{DeliveryRecord, Store, StoreError, StoredWebhook};

pub use worker::DeliveryWorker;

/// The delays after a failed attempt (Standard Webhooks): after the 1st, 5 s; ... after the 8th
/// attempt the delivery is failed.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
const MAX_URL_LEN: usize = 2000;
const MAX_DESCRIPTION_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Well-formed but not acceptable (a 422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("webhook secrets cannot be sealed or opened: {0}")]
    Cipher(#[from] CipherError),
}

/// How long to wait after failed attempt number `attempt` (1-based), with the schedule scaled
/// so that its first delay is `unit` (5 s unless tests shorten it); `None` after the last.
pub fn retry_delay(attempt: u32, unit: Duration) -> Option<Duration> {
    let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
    let step = RETRY_SCHEDULE.get(index)?;
    let first = RETRY_SCHEDULE[0].as_secs_f64();
    Some(step.mul_f64(unit.as_secs_f64() / first))
}

/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn sign(secret: &[u8], message_id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

/// Which webhooks get a message: its twin owner's and every admin's, subscribed to its type,
/// made before the message was (a new endpoint gets what happens from then on).
pub fn recipients<'a>(
    message: &OutboxMessage,
    hooks: &'a [StoredWebhook],
) -> Vec<&'a StoredWebhook> {
    hooks
        .iter()
        .filter(|hook| hook.is_admin || hook.owner == message.owner)
        .filter(|hook| hook.events.is_empty() || hook.events.contains(&message.event_type))
        .filter(|hook| hook.created_at <= message.created_at)
        .collect()
}

/// Addresses a delivery may not reach without `--webhook-allow-private`: loopback, private,
/// link-local, carrier-grade NAT, unspecified, multicast, broadcast, documentation and
/// reserved ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// A URL a webhook may have: http or https, a host, no user name or password in it, and (unless
/// `allow_private`) no address from [`is_private`], whether given as an address or as a name
/// that resolves to one now. A name that does not resolve now is accepted: each delivery
/// checks the addresses again when it connects.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, WebhookError> {
    let invalid = |why: &str| {
        Err(WebhookError::Invalid(format!(
            "url '{}' {why}",
            raw.chars().take(100).collect::<String>()
        )))
    };
    if raw.len() > MAX_URL_LEN {
        return invalid("is too long");
    }
    let Ok(url) = reqwest::Url::parse(raw.trim()) else {
        return invalid("is not a valid URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid("must be http or https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not hold a user name or password (use the webhook's signature)");
    }
    let refused = "points at a loopback, private or link-local address; the gateway refuses those unless it runs with --webhook-allow-private";
    match url.host() {
        None => return invalid("has no host"),
        Some(url::Host::Ipv4(ip)) if !allow_private && is_private(IpAddr::V4(ip)) => {
            return invalid(refused)
        }
        Some(url::Host::Ipv6(ip)) if !allow_private && is_private(IpAddr::V6(ip)) => {
            return invalid(refused)
        }
        Some(url::Host::Domain(name)) if !allow_private => {
            let port = url.port_or_known_default().unwrap_or(80);
            if let Ok(addresses) = tokio::net::lookup_host((name, port)).await {
                if addresses.into_iter().any(|a| is_private(a.ip())) {
                    return invalid(refused);
                }
            }
        }
        Some(_) => {}
    }
    Ok(url)
}

/// A new webhook as the caller gave it, checked.
#[derive(Debug, Clone)]
pub struct WebhookInput {
    pub url: reqwest::Url,
    pub events: Vec<EventType>,
    pub description: Option<String>,
}

/// Parses the subscribed events (none given: every event) and the description.
pub fn parse_input(
    url: reqwest::Url,
    events: Option<Vec<String>>,
    description: Option<String>,
) -> Result<WebhookInput, WebhookError> {
    let events = match events {
        None => Vec::new(),
        Some(names) if names.is_empty() => {
            return Err(WebhookError::Invalid(
                "events must name at least one event; leave it out for every event".into(),
            ))
        }
        Some(names) => {
            let mut events = names
                .iter()
                .map(|name| name.parse::<EventType>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| WebhookError::Invalid(e.0))?;
            events.sort();
            events.dedup();
            events
        }
    };
    let description = description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(WebhookError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(WebhookInput {
        url,
        events,
        description,
    })
}

fn secret_context(id: &WebhookId) -> String {
    format!("webhook:{id}")
}

pub struct WebhookService {
    store: Arc<dyn Store>,
    cipher: StateCipher,
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, cipher: StateCipher) -> Self {
        Self { store, cipher }
    }

    /// Registers the caller's endpoint (blocking); returns it and its secret (`whsec_...`),
    /// which is shown this once and kept only sealed.
    pub fn create(
        &self,
        principal: &Principal,
        input: WebhookInput,
    ) -> Result<(StoredWebhook, String), WebhookError> {
        let id = WebhookId::generate();
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let hook = StoredWebhook {
            id: id.clone(),
            owner: principal.owner.clone(),
            is_admin: principal.is_admin,
            url: input.url.to_string(),
            events: input.events,
            description: input.description,
            sealed_secret: self.cipher.seal(&secret_context(&id), &secret)?,
            created_at: clock::now(),
        };
        self.store.insert_webhook(&hook)?;
        crate::audit::record(
            self.store.as_ref(),
            NewAudit::new(&principal.owner, AuditAction::WebhookCreated, &id).because(&hook.url),
        );
        let shown = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        );
        Ok((hook, shown))
    }

    /// The caller's endpoints (an admin's: everyone's).
    pub fn list(&self, principal: &Principal) -> Result<Vec<StoredWebhook>, WebhookError> {
        let owner = (!principal.is_admin).then_some(principal.owner.as_str());
        Ok(self.store.list_webhooks(owner)?)
    }

    fn visible(
        &self,
        principal: &Principal,
        id: &WebhookId,
    ) -> Result<StoredWebhook, WebhookError> {
        self.store
            .get_webhook(id)?
            .filter(|hook| principal.may_access(&hook.owner))
            .ok_or_else(|| WebhookError::NotFound(format!("webhook {id} not found")))
    }

    /// Removes the endpoint with its deliveries: nothing more is sent to it.
    pub fn delete(&self, principal: &Principal, id: &WebhookId) -> Result<(), WebhookError> {
        self.visible(principal, id)?;
        if !self.store.delete_webhook(id)? {
            return Err(WebhookError::NotFound(format!("webhook {id} not found")));
        }
        crate::audit::record(
            self.store.as_ref(),
            NewAudit::new(&principal.owner, AuditAction::WebhookDeleted, id),
        );
        Ok(())
    }

    pub fn deliveries(
        &self,
        principal: &Principal,
        id: &WebhookId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, WebhookError> {
        self.visible(principal, id)?;
        Ok(self.store.list_deliveries(id, limit)?)
    }

    /// The signing key of a webhook, from its sealed form.
    pub fn open_secret(&self, id: &WebhookId, sealed: &[u8]) -> Result<Vec<u8>, WebhookError> {
        Ok(self.cipher.open(&secret_context(id), sealed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_specs_scaled_to_its_first_delay() {
        let unit = Duration::from_secs(5);
        assert_eq!(retry_delay(1, unit), Some(Duration::from_secs(5)));
        assert_eq!(retry_delay(2, unit), Some(Duration::from_secs(300)));
        assert_eq!(retry_delay(7, unit), Some(Duration::from_secs(36_000)));
        assert_eq!(retry_delay(8, unit), None);
        assert_eq!(retry_delay(0, unit), None);
        let fast = Duration::from_millis(100);
        assert_eq!(retry_delay(1, fast), Some(Duration::from_millis(100)));
        assert_eq!(retry_delay(2, fast), Some(Duration::from_secs(6)));
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signatures_match_the_reference_libraries() {
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_default();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = private.parse().unwrap_or_else(|e| panic!("{private}: {e}"));
            assert!(is_private(ip), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap_or_else(|e| panic!("{public}: {e}"));
            assert!(!is_private(ip), "{public}");
        }
    }

    #[test]
    fn owners_get_their_twins_events_and_admins_everyones() {
        let hook = |owner: &str, is_admin: bool, events: Vec<EventType>| StoredWebhook {
            id: WebhookId::generate(),
            owner: owner.into(),
            is_admin,
            url: "https://example.test/".into(),
            events,
            description: None,
            sealed_secret: Vec::new(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
        };
        let hooks = vec![
            hook("alice", false, vec![]),
            hook("bob", false, vec![]),
            hook("root", true, vec![]),
            hook("alice", false, vec![EventType::DriftDetected]),
        ];
        let message = OutboxMessage {
            id: crate::domain::MessageId::generate(),
            event_type: EventType::RunFinished,
            owner: "alice".into(),
            twin_id: None,
            body: "{}".into(),
            created_at: "2026-01-02T00:00:00.000000Z".into(),
        };
        let got: Vec<&str> = recipients(&message, &hooks)
            .iter()
            .map(|h| h.owner.as_str())
            .collect();
        assert_eq!(got, vec!["alice", "root"]);
        let earlier = OutboxMessage {
            created_at: "2025-12-31T00:00:00.000000Z".into(),
            ..message
        };
        assert!(recipients(&earlier, &hooks).is_empty());
    }
}
