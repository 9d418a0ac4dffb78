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
//!
//! # Where deliveries may go
//! A manager names the URL, and the server sends to it from inside its own network. With
//! `public_only` (`fidelis serve --webhooks-public-only`), an address that is not globally
//! routable — loopback, private, link-local (cloud metadata), shared, documentation,
//! multicast, reserved — is refused: a name is resolved by the client's own resolver,
//! which keeps only public addresses (so a name cannot point inside after the check), and
//! an address written in the URL is checked before sending. The attempt fails with the
//! reason, like any other, and the delivery goes dead in the end.

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
    /// Deliver only to public addresses (see the module's documentation).
    pub public_only: bool,
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
            public_only: false,
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
/// with the platform's roots; with `public_only`, names resolve to public addresses only.
pub fn client(timeout: Duration, public_only: bool) -> reqwest::Result<Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Fidelis-Webhooks/", env!("CARGO_PKG_VERSION")));
    if public_only {
        // No proxy either: it would connect for us, wherever it likes.
        builder = builder
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    Ok(Client {
        http: builder.build()?,
        public_only,
    })
}

/// The client of deliveries, and whether it keeps to public addresses.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    public_only: bool,
}

/// Whether `ip` is globally routable: not loopback, private (RFC 1918, IPv6 unique
/// local), link-local (where clouds serve instance metadata), shared (RFC 6598),
/// documentation, benchmarking, multicast, broadcast, unspecified or reserved. An IPv4
/// address mapped into IPv6 is judged as IPv4.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)
                || first == 0x0100)
        }
    }
}

/// A resolver that keeps only public addresses (see [`is_public`]).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why `url` may not be sent to by `client`, if it may not: an address written in the
/// URL that is not public (names are the resolver's to judge).
fn refused(client: &Client, url: &str) -> Option<String> {
    if !client.public_only {
        return None;
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("not a URL: {e}")),
    };
    let host = parsed.host_str()?;
    // An IPv6 address is written in brackets; a name does not parse as an address.
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (!is_public(ip)).then(|| format!("refused: {ip} is not a public address"))
}

/// Sends one request for `event`, known to receivers as `id`, to `url`, signed with
/// `secrets`.
pub async fn post(
    client: &Client,
    url: &str,
    secrets: &[String],
    (event, id): (&EventEnvelope, &str),
    attempt: i64,
    now: DateTime<Utc>,
) -> std::result::Result<u16, (Option<u16>, String)> {
    if let Some(why) = refused(client, url) {
        return Err((None, why));
    }
    let body = event_body(event, id);
    let response = client
        .http
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
        // The innermost cause says why: refused, unreachable, or no public address.
        let mut cause = std::error::Error::source(e);
        let mut last = None;
        while let Some(c) = cause {
            last = Some(c.to_string());
            cause = c.source();
        }
        match last {
            Some(why) => format!("could not connect: {why}"),
            None => "could not connect".into(),
        }
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
        let client = match client(config.timeout, config.public_only) {
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
    client: &Client,
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
    fn only_globally_routable_addresses_are_public() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("172.32.0.1", true),
            ("2606:4700::1111", true),
            ("::ffff:8.8.8.8", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("198.18.0.1", false),
            ("240.0.0.1", false),
            ("::1", false),
            ("::", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
        ] {
            let parsed: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(is_public(parsed), public, "{ip}");
        }
    }

    #[test]
    fn addresses_written_in_urls_are_checked_before_sending() {
        let guarded = client(Duration::from_secs(1), true).expect("a client");
        let open = client(Duration::from_secs(1), false).expect("a client");
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/hook",
        ] {
            assert!(refused(&guarded, url).is_some(), "{url}");
            assert!(refused(&open, url).is_none(), "{url}");
        }
        // Names are the resolver's to judge; public addresses pass.
        assert!(refused(&guarded, "https://hooks.example.com/x").is_none());
        assert!(refused(&guarded, "http://8.8.8.8/").is_none());
    }

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
