//! Streams: the outbox published to a message broker, and leases.
//!
//! `fidelis serve --events nats://…` publishes every event of the outbox (`events`, written
//! in the transaction of the change that caused it) to a NATS JetStream stream. The store's
//! part is three small statements:
//! - [`Store::register_stream`] records that a stream exists: from then on the dispatch no
//!   longer marks events streamed for it, so each event waits for its publication;
//! - [`Store::unstreamed_events`] reads the oldest events not yet acknowledged by the broker,
//!   in id order;
//! - [`Store::mark_streamed`] records the broker's acknowledgements.
//!
//! One server publishes at a time: it holds the lease `events:{stream}` ([`Store::take_lease`]),
//! renewed every round, so a second server waits and takes over when the first stops renewing
//! (killed, cut off). Order per member follows from the ledger's locks: a member's events are
//! written under the member's lock, so a later event of the same member has a higher id and
//! commits later; a publisher reading in id order, publishing at most one event per member
//! at a time and stopping a member's events at the first failure, never publishes a member's
//! event before an earlier one.
//!
//! Exactly once rests on the broker: every message carries the event's id as its
//! `Nats-Msg-Id`, and JetStream drops a message whose id it saw within its duplicate window.
//! A publisher that dies between the acknowledgement and [`Store::mark_streamed`] leaves the
//! event unmarked; the next holder publishes it again with the same id, within the window as
//! long as the lease is shorter than the window (the server sets both).

use chrono::{DateTime, Utc};

use crate::dialect::{At, in_write_tx, with_pool};
use crate::{EventEnvelope, Result, Store, StoreError};

/// An event waiting for its publication.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub event: EventEnvelope,
    /// The member it concerns, if any: a member's events are published in order.
    pub member: Option<i64>,
}

const UNSTREAMED_SQLITE: &str = "SELECT e.id, p.code, e.type, e.occurred_at, e.payload, e.member_id \
     FROM events e JOIN programs p ON p.id = e.program_id WHERE e.streamed = 0 ORDER BY e.id LIMIT $1";
const UNSTREAMED_POSTGRES: &str = "SELECT e.id, p.code, e.type, e.occurred_at, e.payload, e.member_id \
     FROM events e JOIN programs p ON p.id = e.program_id WHERE e.streamed = false ORDER BY e.id LIMIT $1";
const MARK_SQLITE: &str =
    "UPDATE events SET streamed = 1 WHERE id IN (SELECT value FROM json_each($1))";
const MARK_POSTGRES: &str = "UPDATE events SET streamed = true \
     WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))";
/// Takes a lease that is free, run out or already the holder's; answers the holder when
/// taken, nothing otherwise (the same text on both databases).
const LEASE: &str = "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
     WHERE leases.holder = excluded.holder OR leases.until <= $3 RETURNING holder";

type Row = (i64, String, String, At, String, Option<i64>);

impl Store {
    /// Records that the stream `name` exists. Idempotent; from the first call on, events are
    /// kept until they are marked streamed, and `points.earned` is written whether or not a
    /// webhook wants it (other servers see that within their cache's two seconds).
    pub async fn register_stream(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        if let Ok(mut cache) = self.earned_wanted.lock() {
            cache.clear();
        }
        in_write_tx!(self, |tx, _pg| {
            async {
                sqlx::query(
                    "INSERT INTO event_streams (name, created_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(At(now))
                .execute(&mut *tx)
                .await?;
                Ok::<_, StoreError>(())
            }
            .await
        })
    }

    /// Takes or renews the lease `name` for `holder` until `until`: granted when nobody holds
    /// it, its holder's time has run out by `now`, or `holder` holds it already. Answers
    /// whether `holder` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        in_write_tx!(self, |tx, _pg| {
            async {
                let got: Option<(String,)> = sqlx::query_as(LEASE)
                    .bind(name)
                    .bind(holder)
                    .bind(At(now))
                    .bind(At(until))
                    .fetch_optional(&mut *tx)
                    .await?;
                Ok::<_, StoreError>(got.is_some())
            }
            .await
        })
    }

    /// Up to `limit` events not yet streamed, oldest first.
    pub async fn unstreamed_events(&self, limit: i64) -> Result<Vec<StreamEvent>> {
        let pg = self.is_postgres();
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(if pg {
                UNSTREAMED_POSTGRES
            } else {
                UNSTREAMED_SQLITE
            })
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, program, kind, at, payload, member)| {
                Ok(StreamEvent {
                    event: EventEnvelope {
                        id,
                        program,
                        kind,
                        occurred_at: at.0,
                        payload: serde_json::from_str(&payload).map_err(|e| {
                            StoreError::Inconsistent(format!("an event's payload: {e}"))
                        })?,
                    },
                    member,
                })
            })
            .collect()
    }

    /// Records that the broker acknowledged these events.
    pub async fn mark_streamed(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = serde_json::to_string(ids)?;
        in_write_tx!(self, |tx, pg| {
            async {
                sqlx::query(if pg { MARK_POSTGRES } else { MARK_SQLITE })
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, StoreError>(())
            }
            .await
        })
    }
}
