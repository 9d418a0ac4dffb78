//! Messages to members (PRODUCT.md §10, §2): consents per channel, the program's own
//! message templates, and the messages events make.
//!
//! A message is made when the outbox's dispatch takes an event of a type that has an
//! e-mail template (`MAIL_EVENTS`) for a member whose e-mail consent is granted — in the
//! dispatch's transaction, beside the webhook deliveries. It holds neither the address
//! nor the text: `fidelis serve` reads the member's profile and consent, and renders the
//! template, when it sends (so a consent withdrawn or a member erased in the meantime
//! suppresses it). Sending is leased and retried like a webhook delivery.

use chrono::{DateTime, Utc};

use crate::access::AuditEntry;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::{MemberView, Store};

/// The channels a member consents to (SMS and push reach members through webhooks to the
/// operator's gateway; e-mail is sent by Fidelis).
pub const CHANNELS: [&str; 3] = ["email", "sms", "push"];

/// The event types that have an e-mail template (shipped, or the program's own).
pub const MAIL_EVENTS: [&str; 6] = [
    "member.enrolled",
    "points.redeemed",
    "points.expiring",
    "tier.changed",
    "voucher.issued",
    "claim.decided",
];

/// A member's consent to one channel, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsentView {
    pub channel: String,
    pub granted: bool,
    /// When it was given or withdrawn.
    pub at: DateTime<Utc>,
    /// `enrollment`, `portal`, `api` or `console`.
    pub source: String,
}

/// A program's own template for one event type and language.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageTemplate {
    pub event_type: String,
    pub language: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
    /// Sent in quiet hours too.
    pub urgent: bool,
    /// Off: the event makes no message in this language.
    pub active: bool,
    /// Sent only to members in one of these segments (as of their last refresh); empty:
    /// to every member.
    pub segments: Vec<String>,
}

/// A message due to be sent, with what rendering and the checks need.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub id: i64,
    pub attempts: i64,
    pub deferred: bool,
    pub program_id: i64,
    pub program: String,
    pub event_id: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: String,
    pub member: String,
    pub member_status: String,
    pub erased: bool,
    pub profile: serde_json::Value,
    /// The member's e-mail consent as it stands now.
    pub consent: bool,
    /// The segments the member is in, as of the program's last refresh.
    pub segments: Vec<String>,
}

/// What became of a message.
#[derive(Debug, Clone)]
pub enum MessageOutcome {
    Sent {
        language: String,
    },
    /// Quiet hours: wait until `until` (no attempt counted).
    Deferred {
        until: DateTime<Utc>,
    },
    /// Not to be sent: no consent, no address, member closed or erased, template off.
    Suppressed {
        reason: String,
    },
    /// Failed: try again at `retry_at`, or (None) give up — the message is dead.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// A message as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageView {
    pub id: i64,
    pub event_id: i64,
    pub event_type: String,
    pub member: String,
    pub channel: String,
    pub status: String,
    pub attempts: i64,
    pub deferred: bool,
    pub next_attempt_at: DateTime<Utc>,
    pub language: Option<String>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The messages an event dispatch makes: one per dispatched event of a mail type whose
/// member consents to e-mail (`$1` the events' ids, `$2` now, `$3` the mail types).
pub(crate) const MAKE_SQLITE: &str = "INSERT INTO messages (program_id, event_id, member_id, channel, status, attempts, next_attempt_at, deferred) \
     SELECT e.program_id, e.id, e.member_id, 'email', 'pending', 0, $2, 0 FROM events e \
     JOIN member_consents c ON c.member_id = e.member_id AND c.channel = 'email' AND c.granted = 1 \
     WHERE e.id IN (SELECT value FROM json_each($1)) AND e.type IN (SELECT value FROM json_each($3)) \
     ON CONFLICT DO NOTHING";
pub(crate) const MAKE_POSTGRES: &str = "INSERT INTO messages (program_id, event_id, member_id, channel, status, attempts, next_attempt_at, deferred) \
     SELECT e.program_id, e.id, e.member_id, 'email', 'pending', 0, $2, false FROM events e \
     JOIN member_consents c ON c.member_id = e.member_id AND c.channel = 'email' AND c.granted \
     WHERE e.id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb)) \
     AND e.type IN (SELECT value FROM jsonb_array_elements_text($3::jsonb)) \
     ON CONFLICT DO NOTHING";

const CLAIM_SQLITE: &str = "UPDATE messages SET leased_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM messages WHERE status = 'pending' AND next_attempt_at <= $1 \
     AND (leased_until IS NULL OR leased_until <= $1) ORDER BY next_attempt_at LIMIT $3) \
     RETURNING id";
const CLAIM_POSTGRES: &str = "UPDATE messages SET leased_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM messages WHERE status = 'pending' AND next_attempt_at <= $1 \
     AND (leased_until IS NULL OR leased_until <= $1) ORDER BY next_attempt_at LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING id";
const DUE_SQLITE: &str = "SELECT g.id, g.attempts, g.deferred, p.id, p.code, e.id, e.type, e.occurred_at, e.payload, \
     m.external_id, m.status, m.erased_at IS NOT NULL, m.profile, COALESCE(c.granted, 0), \
     (SELECT json_group_array(s.segment) FROM member_segments s \
      WHERE s.program_id = g.program_id AND s.member_id = g.member_id) \
     FROM messages g JOIN events e ON e.id = g.event_id JOIN programs p ON p.id = g.program_id \
     JOIN members m ON m.id = g.member_id \
     LEFT JOIN member_consents c ON c.member_id = g.member_id AND c.channel = g.channel \
     WHERE g.id IN (SELECT value FROM json_each($1))";
const DUE_POSTGRES: &str = "SELECT g.id, g.attempts, g.deferred, p.id, p.code, e.id, e.type, e.occurred_at, e.payload, \
     m.external_id, m.status, m.erased_at IS NOT NULL, m.profile::text, COALESCE(c.granted, false), \
     (SELECT COALESCE(json_agg(s.segment), '[]'::json)::text FROM member_segments s \
      WHERE s.program_id = g.program_id AND s.member_id = g.member_id) \
     FROM messages g JOIN events e ON e.id = g.event_id JOIN programs p ON p.id = g.program_id \
     JOIN members m ON m.id = g.member_id \
     LEFT JOIN member_consents c ON c.member_id = g.member_id AND c.channel = g.channel \
     WHERE g.id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))";

type DueRow = (
    i64,
    i64,
    bool,
    i64,
    String,
    i64,
    String,
    At,
    String,
    String,
    String,
    bool,
    String,
    bool,
    String,
);

impl Store {
    /// The member's consents, one per channel given or withdrawn (a channel never asked
    /// about is absent: no consent).
    pub async fn consents(&self, member: &MemberView) -> Result<Vec<ConsentView>> {
        let rows: Vec<(String, bool, At, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT channel, granted, at, source FROM member_consents WHERE member_id = $1 ORDER BY channel",
            )
            .bind(member.id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(channel, granted, at, source)| ConsentView {
                channel,
                granted,
                at: at.0,
                source,
            })
            .collect())
    }

    /// Gives or withdraws the member's consent to channels, dated `now`; a channel whose
    /// consent does not change keeps its date. Audited (channels and answers only).
    pub async fn set_consents(
        &self,
        program: &LoadedProgram,
        member: &MemberView,
        changes: &[(&str, bool)],
        source: &str,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<Vec<ConsentView>> {
        for (channel, _) in changes {
            if !CHANNELS.contains(channel) {
                return Err(StoreError::Refused(
                    "invalid_consent",
                    format!("channel {channel:?} is not one of {}", CHANNELS.join(", ")),
                ));
            }
        }
        in_write_tx!(self, |tx, _pg| {
            async {
                for (channel, granted) in changes {
                    sqlx::query(
                        "INSERT INTO member_consents (member_id, channel, program_id, granted, at, source) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (member_id, channel) DO UPDATE SET granted = excluded.granted, \
                         at = excluded.at, source = excluded.source \
                         WHERE member_consents.granted <> excluded.granted",
                    )
                    .bind(member.id)
                    .bind(*channel)
                    .bind(program.id)
                    .bind(*granted)
                    .bind(At(now))
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                }
                crate::access::insert_audit!(tx, audit);
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        self.consents(member).await
    }

    /// The program's own templates.
    pub async fn message_templates(&self, program_id: i64) -> Result<Vec<MessageTemplate>> {
        type Row = (
            String,
            String,
            String,
            String,
            Option<String>,
            bool,
            bool,
            Option<String>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                    "SELECT event_type, language, subject, text_body, html_body, urgent, active, segments \
                     FROM message_templates WHERE program_id = $1 AND channel = 'email' \
                     ORDER BY event_type, language",
                )
                .bind(program_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(
                    event_type,
                    language,
                    subject,
                    text_body,
                    html_body,
                    urgent,
                    active,
                    segments,
                )| {
                    MessageTemplate {
                        event_type,
                        language,
                        subject,
                        text_body,
                        html_body,
                        urgent,
                        active,
                        segments: segments
                            .and_then(|s| serde_json::from_str(&s).ok())
                            .unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    /// Writes the program's own template for an event type and language (replacing the
    /// shipped one). Audited.
    pub async fn put_message_template(
        &self,
        program: &LoadedProgram,
        template: &MessageTemplate,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<()> {
        in_write_tx!(self, |tx, _pg| {
            async {
                sqlx::query(
                    "INSERT INTO message_templates (program_id, event_type, channel, language, subject, \
                     text_body, html_body, urgent, active, updated_at, segments) \
                     VALUES ($1, $2, 'email', $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (program_id, event_type, channel, language) DO UPDATE SET \
                     subject = excluded.subject, text_body = excluded.text_body, html_body = excluded.html_body, \
                     urgent = excluded.urgent, active = excluded.active, updated_at = excluded.updated_at, \
                     segments = excluded.segments",
                )
                .bind(program.id)
                .bind(&template.event_type)
                .bind(&template.language)
                .bind(&template.subject)
                .bind(&template.text_body)
                .bind(&template.html_body)
                .bind(template.urgent)
                .bind(template.active)
                .bind(At(now))
                .bind(
                    (!template.segments.is_empty())
                        .then(|| serde_json::to_string(&template.segments))
                        .transpose()?,
                )
                .execute(&mut *tx)
                .await?;
                crate::access::insert_audit!(tx, audit);
                Ok::<_, StoreError>(())
            }
            .await
        })
    }

    /// Removes the program's own template (the shipped one applies again). Audited;
    /// false when there was none.
    pub async fn delete_message_template(
        &self,
        program: &LoadedProgram,
        event_type: &str,
        language: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        in_write_tx!(self, |tx, _pg| {
            async {
                let gone = sqlx::query(
                    "DELETE FROM message_templates WHERE program_id = $1 AND event_type = $2 \
                     AND channel = 'email' AND language = $3",
                )
                .bind(program.id)
                .bind(event_type)
                .bind(language)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if gone > 0 {
                    crate::access::insert_audit!(tx, audit);
                }
                Ok::<_, StoreError>(gone > 0)
            }
            .await
        })
    }

    /// Leases up to `limit` messages due at `now` until `lease_until`, counting the
    /// attempt, and returns them with the member's profile and consent as they stand.
    pub async fn claim_messages(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<DueMessage>> {
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
                Ok(rows
                    .into_iter()
                    .map(|r| DueMessage {
                        id: r.0,
                        attempts: r.1,
                        deferred: r.2,
                        program_id: r.3,
                        program: r.4,
                        event_id: r.5,
                        event_type: r.6,
                        occurred_at: r.7.0,
                        payload: r.8,
                        member: r.9,
                        member_status: r.10,
                        erased: r.11,
                        profile: serde_json::from_str(&r.12).unwrap_or(serde_json::Value::Null),
                        consent: r.13,
                        segments: serde_json::from_str(&r.14).unwrap_or_default(),
                    })
                    .collect())
            }
            .await
        })
    }

    /// Records what became of these messages, in one transaction.
    pub async fn finish_messages(
        &self,
        outcomes: &[(i64, MessageOutcome)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        in_write_tx!(self, |tx, _pg| {
            async {
                for (id, outcome) in outcomes {
                    let q = match outcome {
                        MessageOutcome::Sent { language } => sqlx::query(
                            "UPDATE messages SET status = 'sent', sent_at = $2, leased_until = NULL, \
                             language = $3, last_error = NULL WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(At(now))
                        .bind(language.clone()),
                        // A deferral is not an attempt.
                        MessageOutcome::Deferred { until } => sqlx::query(
                            "UPDATE messages SET next_attempt_at = $2, leased_until = NULL, deferred = true, \
                             attempts = attempts - 1 WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(At(*until)),
                        MessageOutcome::Suppressed { reason } => sqlx::query(
                            "UPDATE messages SET status = 'suppressed', leased_until = NULL, last_error = $2 \
                             WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(reason.clone()),
                        MessageOutcome::Failed { error, retry_at } => sqlx::query(
                            "UPDATE messages SET status = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
                             leased_until = NULL, last_error = $4 WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(if retry_at.is_some() { "pending" } else { "dead" })
                        .bind(retry_at.map(At))
                        .bind(error.chars().take(500).collect::<String>()),
                    };
                    q.execute(&mut *tx).await?;
                }
                Ok::<_, StoreError>(())
            }
            .await
        })
    }

    /// The program's messages, newest first, of one status or all.
    pub async fn messages(
        &self,
        program: &LoadedProgram,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MessageView>> {
        type Row = (
            i64,
            i64,
            String,
            String,
            String,
            String,
            i64,
            bool,
            At,
            Option<String>,
            Option<String>,
            Option<At>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT g.id, g.event_id, e.type, m.external_id, g.channel, g.status, g.attempts, g.deferred, \
                 g.next_attempt_at, g.language, g.last_error, g.sent_at \
                 FROM messages g JOIN events e ON e.id = g.event_id JOIN members m ON m.id = g.member_id \
                 WHERE g.program_id = $1 AND (CAST($2 AS TEXT) IS NULL OR g.status = CAST($2 AS TEXT)) ORDER BY g.id DESC LIMIT $3",
            )
            .bind(program.id)
            .bind(status)
            .bind(limit.clamp(1, 500))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| MessageView {
                id: r.0,
                event_id: r.1,
                event_type: r.2,
                member: r.3,
                channel: r.4,
                status: r.5,
                attempts: r.6,
                deferred: r.7,
                next_attempt_at: r.8.0,
                language: r.9,
                last_error: r.10,
                sent_at: r.11.map(|a| a.0),
            })
            .collect())
    }
}
