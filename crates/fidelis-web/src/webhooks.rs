//! Webhook delivery: the worker `fidelis serve` runs beside the API, and the signature.
//!
//! The worker loops: dispatch new events to their subscriptions, lease the deliveries that
//! are due, POST each one, record the answer (see `fidelis_store::webhooks` for why no
//! event is lost when a server dies mid-send). A failed attempt is retried after an
//! exponential backoff with full jitter; after the last attempt the delivery is dead —
//! listed on the console's Webhooks page, and replayable there or by the API.
//!
//! # What a receiver gets
//! `POST` with a JSON body `{"id": "evt_…", "type", "program", "occurred_at", "data"}` and
//! the headers:
//! - `Fidelis-Signature: t=<unix seconds>,v1=<hex>` — HMAC-SHA256 with the subscription's
//!   secret over `"<t>.<body>"` (Stripe's scheme). After a rotation the previous secret
//!   signs too, as a second `v1=`, until it runs out: a receiver accepts the request when
//!   any `v1` matches a secret it knows, and refuses a `t` too far from its clock (replays).
//! - `Idempotency-Key` and `Fidelis-Event-Id`: the event id, the same on every attempt, so
//!   a receiver that saw it already can answer 2xx and do nothing.
//! - `Fidelis-Attempt`: 1 for the first attempt.
//!
//! Any 2xx counts as delivered. Redirects are not followed (a subscription names its final
//! address), and the answer's body is not read beyond a short excerpt for the console.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fidelis_store::{Attempt, DueDelivery, EventEnvelope, Store};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// How the worker delivers.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How long the worker sleeps when there was nothing to do.
    pub poll: Duration,
    /// How long a leased delivery is another server's: past it, a delivery whose sender
    /// died is sent again. Longer than `timeout`.
    pub lease: Duration,
    /// Longest an attempt may take (connecting and answering).
    pub timeout: Duration,
    /// Attempts before a delivery is dead.
    pub attempts: u32,
    /// The first retry's delay; each next one doubles, up to `backoff_cap`, and each is
    /// drawn uniformly between half of it and all of it (jitter).
    pub backoff: Duration,
    pub backoff_cap: Duration,
    /// Deliveries sent at once.
    pub concurrency: usize,
    /// E-mail to members, when `serve` has an SMTP server: the same worker dispatches
    /// events to messages and sends them (see `messages.rs`).
    pub mail: Option<std::sync::Arc<crate::messages::Mailer>>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            attempts: 8,
            backoff: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(6 * 3600),
            concurrency: 8,
            mail: None,
        }
    }
}

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Fidelis-Signature";

/// `t=<timestamp>,v1=<hex>[,v1=<hex>]`: each secret's HMAC-SHA256 over `"<t>.<body>"`.
pub fn signature(secrets: &[String], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        for b in mac.finalize().into_bytes() {
            header.push_str(&format!("{b:02x}"));
        }
    }
    header
}

/// The body a receiver gets for an event whose id (as receivers see it) is `id`.
pub fn event_body(event: &EventEnvelope, id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "type": event.kind,
        "program": event.program,
        "occurred_at": event.occurred_at,
        "data": event.payload,
    }))
    .unwrap_or_default()
}

/// An event's id as receivers see it.
pub fn event_id(id: i64) -> String {
    format!("evt_{id}")
}

/// A new subscription secret: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let mut s = String::from("whsec_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The HTTP client deliveries use: no redirects, the attempt's timeout, TLS by rustls
/// with the platform's roots.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Fidelis-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends one request for `event`, known to receivers as `id`, to `url`, signed with
/// `secrets`.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    secrets: &[String],
    (event, id): (&EventEnvelope, &str),
    attempt: i64,
    now: DateTime<Utc>,
) -> std::result::Result<u16, (Option<u16>, String)> {
    let body = event_body(event, id);
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, signature(secrets, now.timestamp(), &body))
        .header("Idempotency-Key", id)
        .header("Fidelis-Event-Id", id)
        .header("Fidelis-Attempt", attempt.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| (None, describe(&e)))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(200).collect();
        Err((Some(status), format!("answered {status}: {excerpt}")))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// When the attempt after attempt `n` (1-based) is due, or None when it was the last.
pub fn retry_at(config: &DeliveryConfig, n: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if n >= i64::from(config.attempts) {
        return None;
    }
    let exp = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    let full = config
        .backoff
        .saturating_mul(1u32 << exp)
        .min(config.backoff_cap);
    let ms = full.as_millis() as u64;
    let drawn = rand::rng().random_range(ms / 2..=ms.max(1));
    Some(now + chrono::Duration::milliseconds(drawn as i64))
}

/// Runs the delivery worker until the process ends.
pub fn spawn(store: Store, config: DeliveryConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client(config.timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery cannot start");
                return;
            }
        };
        loop {
            match run_once(&store, &client, &config).await {
                Ok(0) => tokio::time::sleep(config.poll).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery: will try again");
                    tokio::time::sleep(config.poll).await;
                }
            }
        }
    })
}

/// One round: dispatch, lease, send, record. Returns how many deliveries it sent.
pub async fn run_once(
    store: &Store,
    client: &reqwest::Client,
    config: &DeliveryConfig,
) -> fidelis_store::Result<usize> {
    use futures::StreamExt;
    let now = Utc::now();
    store.dispatch_events(500, now).await?;
    let mailed = match &config.mail {
        Some(mailer) => crate::messages::run_once(store, mailer, config).await?,
        None => 0,
    };
    let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
    let due: Vec<DueDelivery> = store
        .claim_deliveries(config.concurrency as i64 * 4, now, now + lease)
        .await?;
    let n = due.len();
    let results: Vec<(i64, Attempt)> = futures::stream::iter(due)
        .map(|d| async move {
            let sent = Utc::now();
            let id = event_id(d.event.id);
            let event = (&d.event, id.as_str());
            let attempt = match post(client, &d.url, &d.secrets, event, d.attempt, sent).await {
                Ok(status) => Attempt::Delivered { status },
                Err((status, error)) => Attempt::Failed {
                    status,
                    error,
                    retry_at: retry_at(config, d.attempt, Utc::now()),
                },
            };
            (d.id, attempt)
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    store.finish_deliveries(&results, Utc::now()).await?;
    Ok(n + mailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Python: hmac.new(b"key", b"0.x", hashlib.sha256).hexdigest()
        let sig = signature(&["key".into()], 0, b"x");
        assert_eq!(
            sig,
            "t=0,v1=01648d624c0b511b0449a63394418e2d5b018e4cc2f753e42127d445f3ca5dd0"
        );
        let two = signature(&["a".into(), "b".into()], 5, b"{}");
        assert_eq!(two.matches("v1=").count(), 2);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_last_attempt() {
        let config = DeliveryConfig {
            backoff: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            attempts: 5,
            ..DeliveryConfig::default()
        };
        let now = Utc::now();
        for (n, full) in [(1, 10), (2, 20), (3, 40), (4, 60)] {
            let at = retry_at(&config, n, now).expect("a retry");
            let ms = (at - now).num_milliseconds();
            assert!(
                ms >= full * 500 && ms <= full * 1000,
                "attempt {n}: {ms} ms"
            );
        }
        assert_eq!(retry_at(&config, 5, now), None);
    }
}
