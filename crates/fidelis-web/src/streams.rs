//! Events on NATS JetStream: the publisher `fidelis serve --events nats://…` runs beside the
//! API.
//!
//! Every event of the outbox is published to the JetStream stream `FIDELIS` (created when
//! missing, subjects `fidelis.>`) under the subject `fidelis.{program}.{type}` — e.g.
//! `fidelis.demo.points.earned` — with the webhook body (`{"id": "evt_N", "type", "program",
//! "occurred_at", "data"}`) and the headers `Nats-Msg-Id` (the event id: JetStream drops a
//! message whose id it saw within the stream's duplicate window) and `Fidelis-Event-Type`.
//!
//! What holds (see `fidelis_store::streams` for why):
//! - **exactly once per event id** in the stream: an event is marked streamed only after
//!   JetStream acknowledged it; a publish that failed or whose answer was lost is sent again
//!   with the same id, which the duplicate window (ten minutes for a stream Fidelis creates,
//!   longer than the lease) turns into one message;
//! - **in order per member**: a round publishes at most one event per member (the oldest
//!   waiting), so a member's next event is sent only after the previous one was
//!   acknowledged;
//! - **one publisher** among several servers on one database: the one holding the lease
//!   `events:FIDELIS`; another takes over when it stops renewing it;
//! - **nothing lost while NATS is away**: events wait in the outbox and the client
//!   reconnects (for ever, with backoff); they are published in order when it is back.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use fidelis_store::{Store, StreamEvent};

/// How the publisher runs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream's name.
    pub stream: String,
    /// The subjects' first token: events go to `{prefix}.{program}.{type}`.
    pub prefix: String,
    /// How long the lease lasts without renewal: past it another server publishes.
    pub lease: Duration,
    /// The duplicate window of a stream Fidelis creates; longer than the lease, so a
    /// publication repeated by the next holder falls inside it.
    pub duplicate_window: Duration,
    /// How long the publisher sleeps when there was nothing to do.
    pub poll: Duration,
    /// Events read per round.
    pub batch: i64,
    /// This server's name in the lease.
    pub node: String,
}

impl StreamConfig {
    /// The defaults for a server `node` publishing to `url`.
    pub fn new(url: &str, node: &str) -> Self {
        Self {
            url: url.to_owned(),
            stream: "FIDELIS".to_owned(),
            prefix: "fidelis".to_owned(),
            lease: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(600),
            poll: Duration::from_millis(200),
            batch: 1000,
            node: node.to_owned(),
        }
    }

    fn lease_name(&self) -> String {
        format!("events:{}", self.stream)
    }
}

/// A name for this server in leases: its process id and a random part (two servers on one
/// machine, or one restarted, never share one).
pub fn node_name() -> String {
    use rand::Rng;
    format!("{}-{:08x}", std::process::id(), rand::rng().random::<u32>())
}

/// Why the publisher cannot go on as configured.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("NATS at {0}: {1}")]
    Connect(String, String),
    #[error("the JetStream stream {0}: {1}")]
    Stream(String, String),
    #[error(transparent)]
    Store(#[from] fidelis_store::StoreError),
}

/// A subject for an event: `{prefix}.{program}.{type}`. Program codes are `[a-z0-9-]` and
/// event types dotted words, both valid NATS tokens.
pub fn subject(prefix: &str, event: &StreamEvent) -> String {
    format!("{prefix}.{}.{}", event.event.program, event.event.kind)
}

/// Connects (waiting for the server if it is not up yet), makes sure the stream exists and
/// registers it in the store, so that from now on events wait for their publication.
pub async fn connect(
    store: &Store,
    config: &StreamConfig,
) -> Result<async_nats::jetstream::Context, StreamError> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("fidelis {}", config.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(config.url.as_str())
        .await
        .map_err(|e| StreamError::Connect(config.url.clone(), e.to_string()))?;
    let jetstream = async_nats::jetstream::new(client);
    // The stream may be created while the server is still connecting: try for a while.
    let mut last = String::new();
    for _ in 0..60 {
        match jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.prefix)],
                duplicate_window: config.duplicate_window,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
        {
            Ok(_) => {
                store.register_stream(&config.stream, Utc::now()).await?;
                return Ok(jetstream);
            }
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(StreamError::Stream(config.stream.clone(), last))
}

/// Runs the publisher until the process ends.
pub fn spawn(store: Store, config: StreamConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jetstream = loop {
            match connect(&store, &config).await {
                Ok(j) => break j,
                Err(e) => {
                    tracing::warn!(error = %e, "events on NATS: will try again");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        tracing::info!(url = %config.url, stream = %config.stream, "events on NATS JetStream");
        loop {
            match run_once(&store, &jetstream, &config).await {
                Ok(0) => tokio::time::sleep(config.poll).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "events on NATS: will try again");
                    tokio::time::sleep(config.poll).await;
                }
            }
        }
    })
}

/// One round: renew the lease, publish the oldest waiting event of each member (all at
/// once, then their acknowledgements in order), mark the acknowledged ones. Returns how many
/// were published; 0 when this server does not hold the lease or nothing waits.
pub async fn run_once(
    store: &Store,
    jetstream: &async_nats::jetstream::Context,
    config: &StreamConfig,
) -> Result<usize, StreamError> {
    let now = Utc::now();
    let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(30));
    if !store
        .take_lease(&config.lease_name(), &config.node, now, now + lease)
        .await?
    {
        return Ok(0);
    }
    let waiting = store.unstreamed_events(config.batch).await?;
    // The oldest waiting event of each member (or, for events about no member, of each
    // program): the others wait for the next round.
    let mut keys = HashSet::new();
    let round: Vec<&StreamEvent> = waiting
        .iter()
        .filter(|e| match e.member {
            Some(m) => keys.insert((Some(m), "")),
            None => keys.insert((None, e.event.program.as_str())),
        })
        .collect();
    let mut pending = Vec::with_capacity(round.len());
    for event in &round {
        let id = crate::webhooks::event_id(event.event.id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert("Fidelis-Event-Type", event.event.kind.as_str());
        let body = crate::webhooks::event_body(&event.event, &id);
        match jetstream
            .publish_with_headers(subject(&config.prefix, event), headers, body.into())
            .await
        {
            Ok(ack) => pending.push((event.event.id, ack)),
            Err(e) => {
                // Not sent: neither it nor anything after it is marked this round.
                tracing::warn!(event = event.event.id, error = %e, "events on NATS: publish failed");
                break;
            }
        }
    }
    let mut acked = Vec::with_capacity(pending.len());
    for (id, ack) in pending {
        match ack.await {
            Ok(_) => acked.push(id),
            Err(e) => {
                // Unmarked, it is published again (with the same id) next round.
                tracing::warn!(event = id, error = %e, "events on NATS: not acknowledged");
            }
        }
    }
    store.mark_streamed(&acked).await?;
    Ok(acked.len())
}
