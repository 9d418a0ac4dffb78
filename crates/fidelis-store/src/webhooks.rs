//! The outbox's delivery to webhooks.
//!
//! Every business event is an `events` row written in the transaction of the change that
//! caused it (journals, enrollments, claims, partner packs). Delivery has two steps, each
//! one transaction, each safe with several servers on one database:
//!
//! - **dispatch** takes the events not yet dispatched (on PostgreSQL `FOR UPDATE SKIP
//!   LOCKED`, so two servers take different ones), makes one delivery per active
//!   subscription of the event's program and type, and marks them dispatched;
//! - **claim** leases due deliveries (counting the attempt); the caller sends them and
//!   [`Store::finish_deliveries`] records the answer: delivered, due again later, or dead
//!   after the last attempt. A server that dies between sending and recording leaves a
//!   lease that runs out, and the delivery is sent again — with the same event id, the
//!   receiver's idempotency key — so an event is never lost, and a duplicate is always
//!   recognisable.
//!
//! A dead delivery stays listed with its last answer until an operator replays it.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::Store;
use crate::access::AuditEntry;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};

/// The most subscriptions a program may have.
pub const MAX_WEBHOOKS: i64 = 50;

/// The event types a subscription may name (`*` for all).
pub const EVENT_TYPES: &[&str] = &[
    "member.enrolled",
    "points.earned",
    "points.redeemed",
    "points.expiring",
    "tier.changed",
    "voucher.issued",
    "claim.decided",
    "partner.pack_low",
];

/// A subscription as listed (its secrets are never listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Deliveries by status.
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
}

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub secret: String,
}

/// A delivery leased to be sent now.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    pub url: String,
    /// The secrets to sign with: the current one, and the previous one while it is valid.
    pub secrets: Vec<String>,
    pub event: EventEnvelope,
}

/// An event as delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub id: i64,
    pub program: String,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// What an attempt came to.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Failed: try again at `retry_at`, or (None) give up — the delivery is dead.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// A delivery as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What a dispatch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    pub events: usize,
    pub deliveries: usize,
    /// E-mail messages made (when dispatching for a server that sends mail).
    pub messages: usize,
}

const DISPATCH_SQLITE: &str =
    "SELECT id, program_id, type FROM events WHERE dispatched = 0 ORDER BY id LIMIT $1";
const DISPATCH_POSTGRES: &str = "SELECT id, program_id, type FROM events WHERE dispatched = false \
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";
const DELIVER_SQLITE: &str = "INSERT INTO webhook_deliveries (webhook_id, event_id, status, attempts, next_attempt_at) \
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 'pending', 0, $2 FROM json_each($1) \
     WHERE true ON CONFLICT DO NOTHING";
const DELIVER_POSTGRES: &str = "INSERT INTO webhook_deliveries (webhook_id, event_id, status, attempts, next_attempt_at) \
     SELECT (value->>0)::bigint, (value->>1)::bigint, 'pending', 0, $2 FROM jsonb_array_elements($1::jsonb) \
     ON CONFLICT DO NOTHING";
// While no stream is registered (`streams.rs`), nothing waits for one: the event counts as
// streamed too, so the unstreamed index stays empty.
const MARK_SQLITE: &str = "UPDATE events SET dispatched = 1, \
     streamed = (streamed OR NOT EXISTS (SELECT 1 FROM event_streams)) \
     WHERE id IN (SELECT value FROM json_each($1))";
const MARK_POSTGRES: &str = "UPDATE events SET dispatched = true, \
     streamed = (streamed OR NOT EXISTS (SELECT 1 FROM event_streams)) \
     WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))";
const CLAIM_SQLITE: &str = "UPDATE webhook_deliveries SET leased_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
     AND (leased_until IS NULL OR leased_until <= $1) ORDER BY next_attempt_at LIMIT $3) \
     RETURNING id";
const CLAIM_POSTGRES: &str = "UPDATE webhook_deliveries SET leased_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
     AND (leased_until IS NULL OR leased_until <= $1) ORDER BY next_attempt_at LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING id";
const DUE_SQLITE: &str = "SELECT d.id, d.attempts, w.url, w.secret, w.previous_secret, w.previous_until, \
     e.id, p.code, e.type, e.occurred_at, e.payload \
     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
     JOIN events e ON e.id = d.event_id JOIN programs p ON p.id = e.program_id \
     WHERE d.id IN (SELECT value FROM json_each($1))";
const DUE_POSTGRES: &str = "SELECT d.id, d.attempts::bigint, w.url, w.secret, w.previous_secret, w.previous_until, \
     e.id, p.code, e.type, e.occurred_at, e.payload \
     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
     JOIN events e ON e.id = d.event_id JOIN programs p ON p.id = e.program_id \
     WHERE d.id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))";

/// Whether a subscription's `events` take an event of type `kind`.
fn subscribed(events: &[String], kind: &str) -> bool {
    events.iter().any(|e| e == "*" || e == kind)
}

fn parse_events(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Inconsistent(format!("a webhook's event types: {e}")))
}

impl Store {
    /// Subscribes `url` to the program's events of the given types.
    pub async fn create_webhook(
        &self,
        program: &LoadedProgram,
        new: &NewWebhook,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<WebhookView> {
        let events = serde_json::to_string(&new.events)?;
        let id = in_write_tx!(self, |tx, _pg| {
            async {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE program_id = $1")
                        .bind(program.id)
                        .fetch_one(&mut *tx)
                        .await?;
                if count >= MAX_WEBHOOKS {
                    return Err(StoreError::Refused(
                        "too_many_webhooks",
                        format!("a program has at most {MAX_WEBHOOKS} webhooks"),
                    ));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO webhooks (program_id, url, events, description, secret, active, created_at) \
                     VALUES ($1, $2, $3, $4, $5, true, $6) RETURNING id",
                )
                .bind(program.id)
                .bind(&new.url)
                .bind(&events)
                .bind(&new.description)
                .bind(&new.secret)
                .bind(At(now))
                .fetch_one(&mut *tx)
                .await?;
                crate::access::insert_audit!(tx, audit);
                Ok::<_, StoreError>(id)
            }
            .await
        })?;
        // After the commit: a journal between the two would otherwise keep the old answer.
        self.forget_earned_wanted(program.id);
        Ok(WebhookView {
            id,
            url: new.url.clone(),
            events: new.events.clone(),
            description: new.description.clone(),
            active: true,
            created_at: now,
            previous_secret_until: None,
            pending: 0,
            delivered: 0,
            dead: 0,
        })
    }

    /// The program's subscriptions, oldest first, with their deliveries counted.
    pub async fn webhooks(&self, program: &LoadedProgram) -> Result<Vec<WebhookView>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query(
                "SELECT w.id, w.url, w.events, w.description, w.active, w.created_at, w.previous_until, \
                 (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending'), \
                 (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'delivered'), \
                 (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'dead') \
                 FROM webhooks w WHERE w.program_id = $1 ORDER BY w.id",
            )
            .bind(program.id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(WebhookView {
                    id: r.try_get(0)?,
                    url: r.try_get(1)?,
                    events: parse_events(r.try_get::<&str, _>(2)?)?,
                    description: r.try_get(3)?,
                    active: r.try_get(4)?,
                    created_at: r.try_get::<At, _>(5)?.0,
                    previous_secret_until: r.try_get::<Option<At>, _>(6)?.map(|a| a.0),
                    pending: r.try_get(7)?,
                    delivered: r.try_get(8)?,
                    dead: r.try_get(9)?,
                })
            })
            .collect::<Result<Vec<_>>>()
        })?;
        Ok(rows)
    }

    /// A subscription's address and the secrets that sign at `now` (for a test send).
    pub async fn webhook_target(
        &self,
        program: &LoadedProgram,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, Vec<String>)>> {
        let row: Option<(String, String, Option<String>, Option<At>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT url, secret, previous_secret, previous_until FROM webhooks \
                 WHERE program_id = $1 AND id = $2",
            )
            .bind(program.id)
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(url, secret, previous, until)| (url, secrets(secret, previous, until, now))))
    }

    /// Turns a subscription on or off (off: its events are no longer dispatched to it;
    /// deliveries already made are still sent). False when the program has no such one.
    pub async fn set_webhook_active(
        &self,
        program: &LoadedProgram,
        id: i64,
        active: bool,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let changed = in_write_tx!(self, |tx, _pg| {
            async {
                let n = sqlx::query(
                    "UPDATE webhooks SET active = $3 WHERE program_id = $1 AND id = $2",
                )
                .bind(program.id)
                .bind(id)
                .bind(active)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    crate::access::insert_audit!(tx, audit);
                }
                Ok::<_, StoreError>(n == 1)
            }
            .await
        });
        self.forget_earned_wanted(program.id);
        changed
    }

    /// Deletes a subscription and its deliveries. False when the program has no such one.
    pub async fn delete_webhook(
        &self,
        program: &LoadedProgram,
        id: i64,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let changed = in_write_tx!(self, |tx, _pg| {
            async {
                sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE webhook_id IN \
                     (SELECT id FROM webhooks WHERE program_id = $1 AND id = $2)",
                )
                .bind(program.id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let n = sqlx::query("DELETE FROM webhooks WHERE program_id = $1 AND id = $2")
                    .bind(program.id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    crate::access::insert_audit!(tx, audit);
                }
                Ok::<_, StoreError>(n == 1)
            }
            .await
        });
        self.forget_earned_wanted(program.id);
        changed
    }

    /// Replaces a subscription's secret with `secret`; the old one keeps signing (a second
    /// `v1=`) until `previous_until`, so the receiver can switch without missing an event.
    pub async fn rotate_webhook_secret(
        &self,
        program: &LoadedProgram,
        id: i64,
        secret: &str,
        previous_until: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool> {
        in_write_tx!(self, |tx, _pg| {
            async {
                let n = sqlx::query(
                    "UPDATE webhooks SET previous_secret = secret, previous_until = $4, secret = $3 \
                     WHERE program_id = $1 AND id = $2",
                )
                .bind(program.id)
                .bind(id)
                .bind(secret)
                .bind(At(previous_until))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    crate::access::insert_audit!(tx, audit);
                }
                Ok::<_, StoreError>(n == 1)
            }
            .await
        })
    }

    /// Fans out up to `limit` undispatched events to the subscriptions active now, in one
    /// transaction.
    ///
    /// The same transaction makes one e-mail message per event of a mail type whose member
    /// consents to e-mail (see `messages.rs`), whichever server dispatches: a server with
    /// an SMTP server sends them.
    pub async fn dispatch_events(&self, limit: i64, now: DateTime<Utc>) -> Result<Dispatched> {
        in_write_tx!(self, |tx, pg| {
            async {
                let events: Vec<(i64, i64, String)> = sqlx::query_as(if pg {
                    DISPATCH_POSTGRES
                } else {
                    DISPATCH_SQLITE
                })
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if events.is_empty() {
                    return Ok::<_, StoreError>(Dispatched::default());
                }
                let hooks: Vec<(i64, i64, String)> = sqlx::query_as(
                    "SELECT id, program_id, events FROM webhooks WHERE active = true",
                )
                .fetch_all(&mut *tx)
                .await?;
                let hooks = hooks
                    .into_iter()
                    .map(|(id, program, events)| Ok((id, program, parse_events(&events)?)))
                    .collect::<Result<Vec<_>>>()?;
                // Every (subscription, event) pair, inserted in one statement.
                let pairs: Vec<(i64, i64)> = events
                    .iter()
                    .flat_map(|(event, program, kind)| {
                        hooks
                            .iter()
                            .filter(move |(_, p, types)| p == program && subscribed(types, kind))
                            .map(move |(hook, _, _)| (*hook, *event))
                    })
                    .collect();
                let made = if pairs.is_empty() {
                    0
                } else {
                    sqlx::query(if pg { DELIVER_POSTGRES } else { DELIVER_SQLITE })
                        .bind(serde_json::to_string(&pairs)?)
                        .bind(At(now))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected() as usize
                };
                let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
                let ids = serde_json::to_string(&ids)?;
                let messages = if events
                    .iter()
                    .any(|(_, _, kind)| crate::messages::MAIL_EVENTS.contains(&kind.as_str()))
                {
                    sqlx::query(if pg {
                        crate::messages::MAKE_POSTGRES
                    } else {
                        crate::messages::MAKE_SQLITE
                    })
                    .bind(&ids)
                    .bind(At(now))
                    .bind(serde_json::to_string(&crate::messages::MAIL_EVENTS)?)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize
                } else {
                    0
                };
                sqlx::query(if pg { MARK_POSTGRES } else { MARK_SQLITE })
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                Ok(Dispatched {
                    events: events.len(),
                    deliveries: made,
                    messages,
                })
            }
            .await
        })
    }

    /// Leases up to `limit` deliveries due at `now` until `lease_until`, counting the
    /// attempt, and returns them with their events and secrets.
    pub async fn claim_deliveries(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<DueDelivery>> {
        in_write_tx!(self, |tx, pg| {
            async {
                let ids: Vec<i64> =
                    sqlx::query_scalar(if pg { CLAIM_POSTGRES } else { CLAIM_SQLITE })
                        .bind(At(now))
                        .bind(At(lease_until))
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                if ids.is_empty() {
                    return Ok::<_, StoreError>(Vec::new());
                }
                let rows: Vec<DueRow> = sqlx::query_as(if pg { DUE_POSTGRES } else { DUE_SQLITE })
                    .bind(serde_json::to_string(&ids)?)
                    .fetch_all(&mut *tx)
                    .await?;
                rows.into_iter().map(|r| due_row(r, now)).collect()
            }
            .await
        })
    }

    /// Records what the attempts at these deliveries came to, in one transaction.
    pub async fn finish_deliveries(
        &self,
        attempts: &[(i64, Attempt)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        in_write_tx!(self, |tx, _pg| {
            async {
                for (id, attempt) in attempts {
                match attempt {
                    Attempt::Delivered { status } => {
                        sqlx::query(
                            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $2, \
                             leased_until = NULL, last_status = $3, last_error = NULL \
                             WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(At(now))
                        .bind(i32::from(*status))
                        .execute(&mut *tx)
                        .await?;
                    }
                    Attempt::Failed {
                        status,
                        error,
                        retry_at,
                    } => {
                        let error: String = error.chars().take(500).collect();
                        sqlx::query(
                            "UPDATE webhook_deliveries SET status = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
                             leased_until = NULL, last_status = $4, last_error = $5 \
                             WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(if retry_at.is_some() { "pending" } else { "dead" })
                        .bind(retry_at.map(At))
                        .bind(status.map(i32::from))
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                }
                Ok::<_, StoreError>(())
            }
            .await
        })
    }

    /// A subscription's deliveries, newest first, of one status or all.
    pub async fn webhook_deliveries(
        &self,
        program: &LoadedProgram,
        webhook: i64,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>> {
        with_pool!(self, |pool| {
            sqlx::query(
                "SELECT d.id, d.event_id, e.type, d.status, d.attempts, d.next_attempt_at, d.last_status, \
                 d.last_error, d.delivered_at FROM webhook_deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id \
                 WHERE w.program_id = $1 AND d.webhook_id = $2 AND ($3 IS NULL OR d.status = $3) \
                 ORDER BY d.id DESC LIMIT $4",
            )
            .bind(program.id)
            .bind(webhook)
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DeliveryView {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    event_type: r.try_get(2)?,
                    status: r.try_get(3)?,
                    attempts: r.try_get::<i32, _>(4)?.into(),
                    next_attempt_at: r.try_get::<At, _>(5)?.0,
                    last_status: r.try_get::<Option<i32>, _>(6)?.map(i64::from),
                    last_error: r.try_get(7)?,
                    delivered_at: r.try_get::<Option<At>, _>(8)?.map(|a| a.0),
                })
            })
            .collect::<Result<Vec<_>>>()
        })
    }

    /// Sends dead deliveries of a subscription again (all of them, or the one `delivery`),
    /// from a first attempt; returns how many. Audited.
    pub async fn replay_deliveries(
        &self,
        program: &LoadedProgram,
        webhook: i64,
        delivery: Option<i64>,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        in_write_tx!(self, |tx, _pg| {
            async {
                let n = sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $4, \
                     leased_until = NULL WHERE status = 'dead' AND webhook_id = $2 \
                     AND ($3 IS NULL OR id = $3) \
                     AND webhook_id IN (SELECT id FROM webhooks WHERE program_id = $1)",
                )
                .bind(program.id)
                .bind(webhook)
                .bind(delivery)
                .bind(At(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    let mut audit = audit.clone();
                    audit.after = Some(serde_json::json!({"replayed": n}));
                    crate::access::insert_audit!(tx, &audit);
                }
                Ok::<_, StoreError>(n)
            }
            .await
        })
    }
}

/// The secrets that sign now: the current one, and the previous one until it runs out.
fn secrets(
    secret: String,
    previous: Option<String>,
    until: Option<At>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = vec![secret];
    if let (Some(previous), Some(until)) = (previous, until)
        && until.0 > now
    {
        out.push(previous);
    }
    out
}

/// A due delivery's row: delivery id, attempt, url, secret, previous secret and until
/// when, event id, program code, type, occurred at, payload.
type DueRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<At>,
    i64,
    String,
    String,
    At,
    String,
);

fn due_row(r: DueRow, now: DateTime<Utc>) -> Result<DueDelivery> {
    let (id, attempt, url, secret, previous, until, event, program, kind, at, payload) = r;
    Ok(DueDelivery {
        id,
        attempt,
        url,
        secrets: secrets(secret, previous, until, now),
        event: EventEnvelope {
            id: event,
            program,
            kind,
            occurred_at: at.0,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Inconsistent(format!("an event's payload: {e}")))?,
        },
    })
}
