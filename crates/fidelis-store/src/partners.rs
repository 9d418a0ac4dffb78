//! Partners and their ledger through the store.
//!
//! The rules — which entries a journal makes, at what money, when a pack refuses an
//! accrual — are `fidelis_core::partners`. This module keeps partners (their document and
//! their pack, a column that is the sum of their entries' `pack`, like a member's
//! account), writes top-ups, and reads entries, sums and events back.
//!
//! The entries members' journals cause are written by the engine in the journal batch's
//! transaction ([`write_partner_entries`]), after locking the partners the batch names
//! ([`lock_partner`], in code order, after the members' locks, so batches never deadlock):
//! an accrual at a prepaid partner that refuses what its pack cannot cover sees the pack
//! as it stands, so concurrent accruals never take it below zero.

use chrono::{DateTime, Utc};
use fidelis_core::partners::{EntryKind, Movement, Partner, PartnerDocument};
use rust_decimal::Decimal;

use crate::Store;
use crate::access::Actor;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};

/// A partner with its pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerView {
    pub partner: Partner,
    /// Points left in the prepaid pack (negative: owed, under the `owe` policy).
    pub pack: i64,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a partner's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerEntryView {
    pub id: i64,
    pub kind: EntryKind,
    /// The member journal that caused it (its external id), if any.
    pub journal: Option<String>,
    /// A top-up's own id.
    pub key: Option<String>,
    pub points: i64,
    pub pack: i64,
    pub amount: i64,
    pub rate: Decimal,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
}

/// A partner's figures: sums of its entries, computed in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartnerSums {
    /// Σ pack: equals the partner's `pack`.
    pub pack: i64,
    /// Points members earned at the partner, less those reversed.
    pub issued: i64,
    /// Points members redeemed with the partner, less those reversed.
    pub redeemed: i64,
    /// Points bought for the pack.
    pub bought: i64,
    /// Money owed by the partner (accruals billed, packs bought), minor units.
    pub owed_by_partner: i64,
    /// Money owed to the partner (reimbursements), minor units, positive.
    pub owed_to_partner: i64,
}

/// A business event, as written beside the change that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// A partner entry the engine writes with its batch.
#[derive(Debug, Clone)]
pub(crate) struct NewPartnerEntry {
    pub partner_id: i64,
    pub journal_id: i64,
    pub original_journal_id: Option<i64>,
    pub movement: Movement,
    pub effective_at: DateTime<Utc>,
}

/// An event the engine writes with its batch.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub kind: &'static str,
    /// The member the event concerns, if one.
    pub member_id: Option<i64>,
    pub subject: String,
    /// The payload, serialized.
    pub payload: String,
    pub occurred_at: DateTime<Utc>,
}

/// A partner row: id, code, document, pack.
pub(crate) type PartnerRow = (i64, String, String, i64);

/// A partner entry as the engine reads it back for reversals: the journal it belongs to,
/// the journal it reverses, the partner's code, kind, points, pack, amount and rate.
pub(crate) type MovementRow = (i64, Option<i64>, String, String, i64, i64, i64, String);

/// Reads (on PostgreSQL: locks, with `$lock` = `" FOR UPDATE"`) the partner `$code` of
/// `$program_id` on `$conn`.
macro_rules! lock_partner {
    ($conn:expr, $program_id:expr, $code:expr, $lock:expr) => {{
        let row: Option<$crate::partners::PartnerRow> = sqlx::query_as(concat!(
            "SELECT id, code, document, pack FROM partners WHERE program_id = $1 AND code = $2",
            $lock
        ))
        .bind($program_id)
        .bind($code)
        .fetch_optional(&mut *$conn)
        .await?;
        row
    }};
}
pub(crate) use lock_partner;

/// The partner entries of the journal `$journal_id` and of the reversals of it, on `$conn`.
macro_rules! load_movements {
    ($conn:expr, $journal_id:expr) => {{
        let rows: Vec<$crate::partners::MovementRow> = sqlx::query_as(
            "SELECT e.journal_id, e.original_journal_id, p.code, e.kind, e.points, e.pack, e.amount, e.rate \
             FROM partner_entries e JOIN partners p ON p.id = e.partner_id \
             WHERE e.journal_id = $1 OR e.original_journal_id = $1 ORDER BY e.id",
        )
        .bind($journal_id)
        .fetch_all(&mut *$conn)
        .await?;
        rows
    }};
}
pub(crate) use load_movements;

/// Writes a batch's partner entries and the packs they change, on `$conn`.
macro_rules! write_partner_entries {
    ($conn:expr, $program_id:expr, $entries:expr, $now:expr, $actor:expr) => {{
        for e in $entries {
            let e: &$crate::partners::NewPartnerEntry = e;
            sqlx::query(
                "INSERT INTO partner_entries (program_id, partner_id, journal_id, original_journal_id, \
                 kind, key, points, pack, amount, rate, effective_at, recorded_at, actor) \
                 VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind($program_id)
            .bind(e.partner_id)
            .bind(e.journal_id)
            .bind(e.original_journal_id)
            .bind(e.movement.kind.name())
            .bind(e.movement.points)
            .bind(e.movement.pack)
            .bind(e.movement.amount)
            .bind(e.movement.rate.to_string())
            .bind($crate::dialect::At(e.effective_at))
            .bind($crate::dialect::At($now))
            .bind($actor)
            .execute(&mut *$conn)
            .await?;
        }
        $crate::partners::update_packs!($conn, $entries);
    }};
}
pub(crate) use write_partner_entries;

/// Each partner's change to its pack over `entries`: (partner id, Σ pack), the partners
/// in the order first met.
pub(crate) fn pack_deltas(entries: &[NewPartnerEntry]) -> Vec<(i64, i64)> {
    let mut packs: Vec<(i64, i64)> = Vec::new();
    for e in entries.iter().filter(|e| e.movement.pack != 0) {
        match packs.iter_mut().find(|(id, _)| *id == e.partner_id) {
            Some((_, delta)) => *delta += e.movement.pack,
            None => packs.push((e.partner_id, e.movement.pack)),
        }
    }
    packs
}

/// Moves each partner's `pack` by what `$entries` change it, on `$conn` (the partners are
/// locked by the batch already).
macro_rules! update_packs {
    ($conn:expr, $entries:expr) => {
        for (id, delta) in $crate::partners::pack_deltas($entries) {
            sqlx::query("UPDATE partners SET pack = pack + $1 WHERE id = $2")
                .bind(delta)
                .bind(id)
                .execute(&mut *$conn)
                .await?;
        }
    };
}
pub(crate) use update_packs;

/// Inserts one event on `$conn`.
macro_rules! insert_event {
    ($conn:expr, $program_id:expr, $event:expr) => {{
        let ev: &$crate::partners::NewEvent = $event;
        sqlx::query(
            "INSERT INTO events (program_id, type, subject, payload, occurred_at, member_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($program_id)
        .bind(ev.kind)
        .bind(&ev.subject)
        .bind(&ev.payload)
        .bind($crate::dialect::At(ev.occurred_at))
        .bind(ev.member_id)
        .execute(&mut *$conn)
        .await?;
    }};
}
pub(crate) use insert_event;

/// A stored partner document back as a partner.
pub(crate) fn parse_partner(document: &str) -> Result<Partner> {
    serde_json::from_str(document)
        .map_err(|e| StoreError::Inconsistent(format!("a stored partner: {e}")))
}

/// A stored movement back as the core's.
pub(crate) fn parse_movement(
    kind: &str,
    points: i64,
    pack: i64,
    amount: i64,
    rate: &str,
) -> Result<Movement> {
    Ok(Movement {
        kind: EntryKind::parse(kind)
            .ok_or_else(|| StoreError::Inconsistent(format!("partner entry kind {kind:?}")))?,
        points,
        pack,
        amount,
        rate: rate
            .parse()
            .map_err(|_| StoreError::Inconsistent(format!("partner entry rate {rate:?}")))?,
    })
}

fn invalid(problems: &[fidelis_core::program::Problem]) -> StoreError {
    StoreError::Refused(
        "invalid_partner",
        problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

impl Store {
    /// Creates or replaces the partner `code` (its pack and entries stay). Returns the
    /// partner and whether it is new. Every problem is listed as `invalid_partner`;
    /// nothing is stored then. Audited.
    pub async fn put_partner(
        &self,
        program: &LoadedProgram,
        code: &str,
        document: &PartnerDocument,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(PartnerView, bool)> {
        let partner = document
            .check(code, &program.program)
            .map_err(|p| invalid(&p))?;
        let stored = serde_json::to_string(&partner)?;
        let created = in_write_tx!(self, |tx, _pg| {
            async {
                let before: Option<String> = sqlx::query_scalar(
                    "SELECT document FROM partners WHERE program_id = $1 AND code = $2",
                )
                .bind(program.id)
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO partners (program_id, code, document, pack, updated_at) \
                     VALUES ($1, $2, $3, 0, $4) ON CONFLICT (program_id, code) DO UPDATE \
                     SET document = excluded.document, updated_at = excluded.updated_at",
                )
                .bind(program.id)
                .bind(code)
                .bind(&stored)
                .bind(At(now))
                .execute(&mut *tx)
                .await?;
                let mut audit = actor.entry(
                    now,
                    "partner.put",
                    Some(program.program.code.as_str()),
                    Some(code),
                );
                audit.before = before
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
                audit.after = Some(serde_json::to_value(&partner)?);
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>(before.is_none())
            }
            .await
        })?;
        let view = self
            .partner(program, code)
            .await?
            .ok_or_else(|| StoreError::Inconsistent(format!("partner {code} vanished")))?;
        Ok((view, created))
    }

    /// The partner `code` of the program.
    pub async fn partner(
        &self,
        program: &LoadedProgram,
        code: &str,
    ) -> Result<Option<PartnerView>> {
        let row: Option<(String, i64, At)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT document, pack, updated_at FROM partners WHERE program_id = $1 AND code = $2",
            )
            .bind(program.id)
            .bind(code)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(d, pack, at)| {
            Ok(PartnerView {
                partner: parse_partner(&d)?,
                pack,
                updated_at: at.0,
            })
        })
        .transpose()
    }

    /// The program's partners, by code.
    pub async fn partners(&self, program: &LoadedProgram) -> Result<Vec<PartnerView>> {
        let rows: Vec<(String, i64, At)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT document, pack, updated_at FROM partners WHERE program_id = $1 ORDER BY code",
            )
            .bind(program.id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(d, pack, at)| {
                Ok(PartnerView {
                    partner: parse_partner(&d)?,
                    pack,
                    updated_at: at.0,
                })
            })
            .collect()
    }

    /// Adds `points` bought to the prepaid pack of `code`, once per `key` (the same key
    /// again answers the first top-up: `true`, a replay; with other points,
    /// `idempotency_conflict`). Refused for a partner without a pack. Audited.
    pub async fn top_up_partner(
        &self,
        program: &LoadedProgram,
        code: &str,
        key: &str,
        points: i64,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(PartnerEntryView, bool)> {
        if !(1..=fidelis_core::partners::MAX_POINTS).contains(&points) {
            return Err(StoreError::Refused(
                "invalid_top_up",
                format!("points must be 1 to {}", fidelis_core::partners::MAX_POINTS),
            ));
        }
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(StoreError::Refused(
                "invalid_top_up",
                "top_up_id must be 1 to 128 characters, no control characters".into(),
            ));
        }
        let scale = program.program.money_currency.scale();
        let (id, replayed) = in_write_tx!(self, |tx, pg| {
            async {
                let row = if pg {
                    lock_partner!(tx, program.id, code, " FOR UPDATE")
                } else {
                    lock_partner!(tx, program.id, code, "")
                };
                let Some((partner_id, _, document, _)) = row else {
                    return Err(unknown_partner(code));
                };
                let partner = parse_partner(&document)?;
                if partner.billing != fidelis_core::partners::Billing::Prepaid
                    || !partner.roles.earns()
                {
                    return Err(StoreError::Refused(
                        "partner_not_prepaid",
                        format!("partner {code} pays postpaid: it has no pack to top up"),
                    ));
                }
                let existing: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT id, points FROM partner_entries WHERE partner_id = $1 AND key = $2",
                )
                .bind(partner_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((id, earlier)) = existing {
                    if earlier != points {
                        return Err(StoreError::Refused(
                            "idempotency_conflict",
                            format!("top-up {key:?} was made with {earlier} points"),
                        ));
                    }
                    return Ok((id, true));
                }
                let m = partner.top_up(points, scale);
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO partner_entries (program_id, partner_id, journal_id, original_journal_id, \
                     kind, key, points, pack, amount, rate, effective_at, recorded_at, actor) \
                     VALUES ($1, $2, NULL, NULL, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
                )
                .bind(program.id)
                .bind(partner_id)
                .bind(m.kind.name())
                .bind(key)
                .bind(m.points)
                .bind(m.pack)
                .bind(m.amount)
                .bind(m.rate.to_string())
                .bind(At(now))
                .bind(&actor.name)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("UPDATE partners SET pack = pack + $1 WHERE id = $2")
                    .bind(m.pack)
                    .bind(partner_id)
                    .execute(&mut *tx)
                    .await?;
                let mut audit = actor.entry(
                    now,
                    "partner.top_up",
                    Some(program.program.code.as_str()),
                    Some(code),
                );
                audit.after = Some(serde_json::json!({"top_up_id": key, "points": points, "amount": m.amount}));
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>((id, false))
            }
            .await
        })?;
        let entry = self
            .partner_entries(program, code, None, 1_000)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| StoreError::Inconsistent(format!("top-up {key} vanished")))?;
        Ok((entry, replayed))
    }

    /// A partner's entries, newest first, before the entry id `before`.
    pub async fn partner_entries(
        &self,
        program: &LoadedProgram,
        code: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PartnerEntryView>> {
        type Row = (
            i64,
            String,
            Option<String>,
            Option<String>,
            i64,
            i64,
            i64,
            String,
            At,
            At,
            String,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT e.id, e.kind, j.external_id, e.key, e.points, e.pack, e.amount, e.rate, \
                 e.effective_at, e.recorded_at, e.actor FROM partner_entries e \
                 JOIN partners p ON p.id = e.partner_id \
                 LEFT JOIN journals j ON j.id = e.journal_id \
                 WHERE p.program_id = $1 AND p.code = $2 AND e.id < $3 ORDER BY e.id DESC LIMIT $4",
            )
            .bind(program.id)
            .bind(code)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(
                |(id, kind, journal, key, points, pack, amount, rate, eff, rec, actor)| {
                    let m = parse_movement(&kind, points, pack, amount, &rate)?;
                    Ok(PartnerEntryView {
                        id,
                        kind: m.kind,
                        journal,
                        key,
                        points,
                        pack,
                        amount,
                        rate: m.rate,
                        effective_at: eff.0,
                        recorded_at: rec.0,
                        actor,
                    })
                },
            )
            .collect()
    }

    /// A partner's figures as sums of its entries, computed in the database.
    pub async fn partner_sums(&self, program: &LoadedProgram, code: &str) -> Result<PartnerSums> {
        let rows: Vec<(String, i64, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT e.kind, CAST(SUM(e.points) AS BIGINT), CAST(SUM(e.pack) AS BIGINT), \
                 CAST(SUM(e.amount) AS BIGINT) FROM partner_entries e \
                 JOIN partners p ON p.id = e.partner_id \
                 WHERE p.program_id = $1 AND p.code = $2 GROUP BY e.kind",
            )
            .bind(program.id)
            .bind(code)
            .fetch_all(pool)
            .await?
        });
        let mut sums = PartnerSums::default();
        for (kind, points, pack, amount) in rows {
            sums.pack += pack;
            // What the partner owes comes from packs and accruals (less their reversals),
            // what it is owed from redemptions (less theirs).
            match EntryKind::parse(&kind) {
                Some(EntryKind::TopUp) => {
                    sums.bought += points;
                    sums.owed_by_partner += amount;
                }
                Some(EntryKind::Accrual | EntryKind::AccrualReversal) => {
                    sums.issued += points;
                    sums.owed_by_partner += amount;
                }
                Some(EntryKind::Redemption | EntryKind::RedemptionReversal) => {
                    sums.redeemed += points;
                    sums.owed_to_partner -= amount;
                }
                None => {
                    return Err(StoreError::Inconsistent(format!(
                        "partner entry kind {kind:?}"
                    )));
                }
            }
        }
        Ok(sums)
    }

    /// The program's events, newest first, before the event id `before`.
    pub async fn events(
        &self,
        program: &LoadedProgram,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<EventView>> {
        let rows: Vec<(i64, String, String, String, At)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, type, subject, payload, occurred_at FROM events \
                 WHERE program_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(program.id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, kind, subject, payload, at)| {
                Ok(EventView {
                    id,
                    kind,
                    subject,
                    payload: serde_json::from_str(&payload)?,
                    occurred_at: at.0,
                })
            })
            .collect()
    }
}

pub(crate) fn unknown_partner(code: &str) -> StoreError {
    StoreError::Refused(
        "unknown_partner",
        format!("no partner {code:?} in this program"),
    )
}
