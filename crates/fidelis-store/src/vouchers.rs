//! Vouchers: issued (by a promotion in the journal's own transaction, by an agent, in
//! bulk), read, and changed — redeemed whole or in part, reserved for an order and then
//! redeemed or reinstated by the order's key, cancelled.
//!
//! The rules are `fidelis_core::vouchers`; this module keeps one row per voucher (its
//! current state) and its value ledger, `voucher_entries`, appended in the same
//! transaction as every change: a fixed value's `remaining` is always the sum of its
//! entries. A change locks the voucher's row (`FOR UPDATE` on PostgreSQL; SQLite's one
//! writer), so two redemptions of one single-use voucher cannot both succeed. Every change
//! with a key is idempotent: the same kind and key again answers the voucher as it is, and
//! changes nothing.

use chrono::{DateTime, Utc};
use fidelis_core::program::Program;
use fidelis_core::vouchers::{
    EntryKind, ValueChange, Voucher, VoucherDefinition, VoucherStatus, VoucherValue, normalize_code,
};

use crate::Store;
use crate::access::Actor;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};

/// Vouchers issued per transaction by a bulk run.
const BULK_ROUND: usize = 500;

/// A voucher as the API and pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherView {
    pub code: String,
    pub definition: String,
    /// The member's external id; `None` for a bulk voucher not given to anyone.
    pub member: Option<String>,
    /// `issued`, `reserved`, `redeemed`, `expired` or `cancelled`, as of the time read.
    pub status: &'static str,
    /// `fixed`, `percent` or `free_product`.
    pub kind: String,
    /// The value when issued: minor units of money (fixed), a percentage, or a SKU.
    pub value: String,
    /// Fixed value: minor units left.
    pub remaining: Option<i64>,
    pub uses_left: Option<i64>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    /// While reserved: the order's key and the amount set aside.
    pub reservation_key: Option<String>,
    pub reserved_amount: Option<i64>,
    /// `promotion:CODE`, `order`, `agent` or `bulk`.
    pub source: String,
    pub issued_at: DateTime<Utc>,
}

/// One entry of a voucher's value ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherEntry {
    pub seq: i64,
    pub kind: String,
    pub key: Option<String>,
    pub amount: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
}

/// What to do with a voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherAction {
    /// Redeem now, for `amount` of a fixed value (all that is left by default); `key`
    /// names the redemption (an order or receipt id) so a retry redeems once.
    Redeem {
        key: String,
        amount: Option<i64>,
    },
    /// Set aside for the order `key`.
    Reserve {
        key: String,
        amount: Option<i64>,
    },
    /// The order `key` succeeded.
    RedeemReserved {
        key: String,
    },
    /// The order `key` failed.
    Reinstate {
        key: String,
    },
    Cancel,
}

impl VoucherAction {
    fn kind(&self) -> EntryKind {
        match self {
            Self::Redeem { .. } | Self::RedeemReserved { .. } => EntryKind::Redeem,
            Self::Reserve { .. } => EntryKind::Reserve,
            Self::Reinstate { .. } => EntryKind::Reinstate,
            Self::Cancel => EntryKind::Cancel,
        }
    }

    /// The order or redemption key the action is idempotent by (`None`: cancel).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Redeem { key, .. }
            | Self::Reserve { key, .. }
            | Self::RedeemReserved { key }
            | Self::Reinstate { key } => Some(key),
            Self::Cancel => None,
        }
    }
}

/// A voucher to write: what the engine collects from a batch's promotion rewards, and
/// what agents and bulk runs issue.
#[derive(Debug, Clone)]
pub(crate) struct NewVoucher {
    pub member_id: Option<i64>,
    pub code: String,
    pub definition: String,
    pub source: String,
    pub source_key: String,
    pub voucher: Voucher,
    pub kind: &'static str,
    pub value: String,
    pub issue: ValueChange,
    pub actor: String,
}

impl NewVoucher {
    /// A voucher of `definition` issued at `now` with a fresh random code.
    pub(crate) fn new(
        program: &Program,
        definition: &VoucherDefinition,
        member_id: Option<i64>,
        source: String,
        source_key: String,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<Self> {
        let (voucher, issue) = definition.issue(program.time_zone, now);
        let value = match &definition.value {
            VoucherValue::Fixed(m) => m.0.to_string(),
            VoucherValue::Percent(p) => p.to_string(),
            VoucherValue::FreeProduct(sku) => sku.clone(),
        };
        Ok(Self {
            member_id,
            code: draw_code(definition)?,
            definition: definition.code.to_string(),
            source,
            source_key,
            voucher,
            kind: definition.value.kind(),
            value,
            issue,
            actor: actor.to_owned(),
        })
    }
}

/// A code of the definition's format from the operating system's CSPRNG.
pub(crate) fn draw_code(definition: &VoucherDefinition) -> Result<String> {
    let mut random = [0u8; fidelis_core::vouchers::MAX_CODE_LENGTH as usize];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut random)
        .map_err(|e| StoreError::Inconsistent(format!("no randomness for a voucher code: {e}")))?;
    definition.format.render(&random).ok_or_else(|| {
        StoreError::Inconsistent("a code format longer than its random bytes".into())
    })
}

const COLUMNS: &str = "v.id, v.code, v.definition, m.external_id, v.status, v.kind, v.value, \
     v.remaining, v.uses_left, v.valid_from, v.valid_until, v.reservation_key, \
     v.reserved_amount, v.source, v.issued_at";

type Row = (
    i64,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    At,
    Option<At>,
    Option<String>,
    Option<i64>,
    String,
    At,
);

fn state(row: &Row) -> Result<Voucher> {
    let status = VoucherStatus::parse(&row.4)
        .ok_or_else(|| StoreError::Inconsistent(format!("voucher status {:?}", row.4)))?;
    Ok(Voucher {
        status,
        valid_from: row.9.0,
        valid_until: row.10.map(|a| a.0),
        remaining: row.7,
        uses_left: row.8.and_then(|u| u32::try_from(u).ok()),
        reservation: row.11.clone().map(|k| (k, row.12)),
    })
}

fn view(row: Row, now: DateTime<Utc>) -> Result<VoucherView> {
    let status = state(&row)?.status_at(now).name();
    Ok(VoucherView {
        code: row.1,
        definition: row.2,
        member: row.3,
        status,
        kind: row.5,
        value: row.6,
        remaining: row.7,
        uses_left: row.8,
        valid_from: row.9.0,
        valid_until: row.10.map(|a| a.0),
        reservation_key: row.11,
        reserved_amount: row.12,
        source: row.13,
        issued_at: row.14.0,
    })
}

/// Cancels, on `$conn`, the vouchers still `issued` that promotions issued for the
/// journals `$journal_ids` (their source keys are `journal:ID:N`): each gets a `cancel`
/// entry taking what is left of its value, so the value ledger still sums to `remaining`.
/// A voucher already used (even in part, or one use of several) or reserved stays as it is;
/// one cancelled goes back to its promotion's voucher budget. The benefits the journals'
/// promotions granted end at `$now`.
macro_rules! cancel_journal_vouchers {
    ($conn:expr, $program_id:expr, $journal_ids:expr, $now:expr) => {{
        for id in $journal_ids {
            let prefix = format!("journal:{id}:");
            let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
            // The benefits the journal's promotions granted end now (badges stay: they
            // record what the member did).
            sqlx::query(
                "UPDATE member_benefits SET ends_at = CASE WHEN ends_at > $4 THEN $4 ELSE ends_at END \
                 WHERE program_id = $1 AND substr(source_key, 1, $2) = $3",
            )
            .bind($program_id)
            .bind(len)
            .bind(&prefix)
            .bind($crate::dialect::At($now))
            .execute(&mut *$conn)
            .await?;
            let ids: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
                "SELECT id, remaining, source FROM vouchers WHERE program_id = $1 \
                 AND status = 'issued' AND substr(source_key, 1, $2) = $3 \
                 AND NOT EXISTS (SELECT 1 FROM voucher_entries e \
                                 WHERE e.voucher_id = vouchers.id AND e.kind = 'redeem')",
            )
            .bind($program_id)
            .bind(len)
            .bind(&prefix)
            .fetch_all(&mut *$conn)
            .await?;
            // Redeemed even once (part of a fixed value, one use of several): the member
            // used it; it stays.
            for (voucher, remaining, source) in ids {
                sqlx::query(
                    "INSERT INTO voucher_entries (voucher_id, seq, kind, key, amount, at, actor) \
                     SELECT $1, COALESCE(MAX(seq), 0) + 1, 'cancel', NULL, $2, $3, 'system' \
                     FROM voucher_entries WHERE voucher_id = $1",
                )
                .bind(voucher)
                .bind(-remaining.unwrap_or(0))
                .bind($crate::dialect::At($now))
                .execute(&mut *$conn)
                .await?;
                sqlx::query(
                    "UPDATE vouchers SET status = 'cancelled', \
                     remaining = CASE WHEN remaining IS NULL THEN NULL ELSE 0 END WHERE id = $1",
                )
                .bind(voucher)
                .execute(&mut *$conn)
                .await?;
                // The promotion's voucher budget gets the voucher back (a counter that
                // exists only while the promotion has a budget).
                if let Some(promotion) = source.strip_prefix("promotion:") {
                    sqlx::query(
                        "UPDATE promotion_usage SET points = points - 1 WHERE program_id = $1 \
                         AND promotion = $2 AND member_id = $3 AND period = $4 AND points > 0",
                    )
                    .bind($program_id)
                    .bind(promotion)
                    .bind(fidelis_core::promotions::limits::EVERYONE)
                    .bind(fidelis_core::promotions::limits::VOUCHERS_PERIOD)
                    .execute(&mut *$conn)
                    .await?;
                }
            }
        }
    }};
}
pub(crate) use cancel_journal_vouchers;

/// Inserts vouchers and their issue entries through `$conn` (either dialect); vouchers
/// whose `source_key` exists already are skipped. Evaluates to how many were inserted.
///
/// On PostgreSQL a voucher's code and source key are unique through their lookup tables
/// (`voucher_codes`, `voucher_sources`: the schema is ready to be distributed, see
/// `0036_voucher_keys.sql`), written in the same statement; `$pg` says which dialect.
macro_rules! insert_vouchers {
    ($conn:expr, $pg:expr, $program_id:expr, $rows:expr, $now:expr) => {{
        let mut inserted = 0u64;
        for v in $rows {
            let v: &$crate::vouchers::NewVoucher = v;
            let id: Option<i64> = sqlx::query_scalar(if $pg {
                "WITH s AS (INSERT INTO voucher_sources (program_id, source_key, voucher_id) \
                            VALUES ($1, $12, nextval(pg_get_serial_sequence('vouchers', 'id'))) \
                            ON CONFLICT DO NOTHING RETURNING voucher_id), \
                      c AS (INSERT INTO voucher_codes (program_id, code, voucher_id) \
                            SELECT $1, $2, voucher_id FROM s) \
                 INSERT INTO vouchers (id, program_id, code, definition, member_id, status, kind, \
                 value, remaining, uses_left, valid_from, valid_until, source, source_key, issued_at) \
                 OVERRIDING SYSTEM VALUE \
                 SELECT s.voucher_id, $1, $2, $3, $4, 'issued', $5, $6, $7, $8, $9, $10, $11, $12, $13 \
                 FROM s RETURNING id"
            } else {
                "INSERT INTO vouchers (program_id, code, definition, member_id, status, kind, value, \
                 remaining, uses_left, valid_from, valid_until, source, source_key, issued_at) \
                 VALUES ($1, $2, $3, $4, 'issued', $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (program_id, source_key) DO NOTHING RETURNING id"
            })
            .bind($program_id)
            .bind(&v.code)
            .bind(&v.definition)
            .bind(v.member_id)
            .bind(v.kind)
            .bind(&v.value)
            .bind(v.voucher.remaining)
            .bind(v.voucher.uses_left.map(i64::from))
            .bind($crate::dialect::At(v.voucher.valid_from))
            .bind(v.voucher.valid_until.map($crate::dialect::At))
            .bind(&v.source)
            .bind(&v.source_key)
            .bind($crate::dialect::At($now))
            .fetch_optional(&mut *$conn)
            .await?;
            if let Some(id) = id {
                sqlx::query(
                    "INSERT INTO voucher_entries (voucher_id, seq, kind, key, amount, at, actor) \
                     VALUES ($1, 1, 'issue', NULL, $2, $3, $4)",
                )
                .bind(id)
                .bind(v.issue.amount)
                .bind($crate::dialect::At($now))
                .bind(&v.actor)
                .execute(&mut *$conn)
                .await?;
                inserted += 1;
            }
        }
        inserted
    }};
}
pub(crate) use insert_vouchers;

fn definition<'p>(program: &'p LoadedProgram, code: &str) -> Result<&'p VoucherDefinition> {
    program.program.voucher(code).ok_or_else(|| {
        StoreError::Refused(
            "unknown_voucher_definition",
            format!("the program has no voucher definition {code:?}"),
        )
    })
}

fn unknown(code: &str) -> StoreError {
    StoreError::Refused(
        "unknown_voucher",
        format!("no voucher {code:?} in this program"),
    )
}

impl Store {
    /// The voucher with this code (as typed: case and surrounding spaces do not matter).
    pub async fn voucher(
        &self,
        program: &LoadedProgram,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<VoucherView>> {
        let code = normalize_code(code);
        let sql = format!(
            "SELECT {COLUMNS} FROM vouchers v LEFT JOIN members m ON m.id = v.member_id \
             WHERE v.program_id = $1 AND v.code = $2"
        );
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(program.id)
                .bind(&code)
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| view(r, now)).transpose()
    }

    /// A member's vouchers (the member's row id), newest first, at most `limit`.
    pub async fn member_vouchers(
        &self,
        member_id: i64,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<VoucherView>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM vouchers v LEFT JOIN members m ON m.id = v.member_id \
             WHERE v.member_id = $1 ORDER BY v.id DESC LIMIT $2"
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(member_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|r| view(r, now)).collect()
    }

    /// A voucher's value ledger, oldest first.
    pub async fn voucher_entries(
        &self,
        program: &LoadedProgram,
        code: &str,
    ) -> Result<Vec<VoucherEntry>> {
        let code = normalize_code(code);
        let rows: Vec<(i64, String, Option<String>, i64, At, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT e.seq, e.kind, e.key, e.amount, e.at, e.actor FROM voucher_entries e \
                 JOIN vouchers v ON v.id = e.voucher_id \
                 WHERE v.program_id = $1 AND v.code = $2 ORDER BY e.seq",
            )
            .bind(program.id)
            .bind(&code)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(seq, kind, key, amount, at, actor)| VoucherEntry {
                seq,
                kind,
                key,
                amount,
                at: at.0,
                actor,
            })
            .collect())
    }

    /// Issues a voucher of `definition` to `member` (or to no one), once per `source_key`:
    /// the same key again answers the voucher issued first (`false`: not new). Audited.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_voucher(
        &self,
        program: &LoadedProgram,
        definition_code: &str,
        member: Option<&str>,
        source: &str,
        source_key: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(VoucherView, bool)> {
        let def = definition(program, definition_code)?;
        let key = format!("{source}:{source_key}");
        let sql = format!(
            "SELECT {COLUMNS} FROM vouchers v LEFT JOIN members m ON m.id = v.member_id \
             WHERE v.program_id = $1 AND v.source_key = $2"
        );
        in_write_tx!(self, |tx, pg| {
            async {
                let existing: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(program.id)
                    .bind(&key)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = existing {
                    if row.2 != def.code.as_str() || row.3.as_deref() != member {
                        return Err(StoreError::Refused(
                            "idempotency_conflict",
                            format!("{source_key:?} issued another voucher already"),
                        ));
                    }
                    return Ok((view(row, now)?, false));
                }
                let member_id = match member {
                    None => None,
                    Some(m) => {
                        let row: Option<(i64, String)> = sqlx::query_as(
                            "SELECT id, status FROM members WHERE program_id = $1 AND external_id = $2",
                        )
                        .bind(program.id)
                        .bind(m)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match row {
                            None => return Err(StoreError::UnknownMember(m.to_owned())),
                            Some((_, status)) if status == "closed" => {
                                return Err(StoreError::Refused(
                                    "member_closed",
                                    format!("member {m:?} is closed"),
                                ));
                            }
                            Some((id, _)) => Some(id),
                        }
                    }
                };
                let new = NewVoucher::new(
                    &program.program,
                    def,
                    member_id,
                    source.to_owned(),
                    key.clone(),
                    now,
                    &actor.name,
                )?;
                if insert_vouchers!(tx, pg, program.id, [&new], now) == 0 {
                    // A concurrent request with the same key issued it first.
                    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(program.id)
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    return Ok((view(row, now)?, false));
                }
                let mut audit = actor.entry(
                    now,
                    "voucher.issue",
                    Some(program.program.code.as_str()),
                    member,
                );
                audit.after = Some(serde_json::json!({
                    "voucher": new.code, "definition": new.definition, "source": source,
                }));
                crate::access::insert_audit!(tx, &audit);
                // A voucher given to a member is an event (webhooks, e-mail), as one a
                // promotion issues is.
                if let (Some(id), Some(m)) = (member_id, member) {
                    let event = crate::partners::NewEvent {
                        kind: "voucher.issued",
                        member_id: Some(id),
                        subject: m.to_owned(),
                        payload: serde_json::json!({"member": m, "definition": new.definition,
                            "voucher": new.code, "source": source})
                        .to_string(),
                        occurred_at: now,
                    };
                    crate::partners::insert_event!(tx, program.id, &event);
                }
                let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(program.id)
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await?;
                Ok((view(row, now)?, true))
            }
            .await
        })
    }

    /// The vouchers of the bulk run `run`, in the order they were issued: the member's
    /// external id (`None`: given to no one) and the code, for the operator to send out.
    pub async fn bulk_run_codes(
        &self,
        program: &LoadedProgram,
        run: &str,
    ) -> Result<Vec<(Option<String>, String)>> {
        let prefix = format!("bulk:{run}:");
        let rows: Vec<(Option<String>, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT m.external_id, v.code FROM vouchers v LEFT JOIN members m ON m.id = v.member_id \
                 WHERE v.program_id = $1 AND v.source = 'bulk' AND substr(v.source_key, 1, $2) = $3 \
                 ORDER BY v.id",
            )
            .bind(program.id)
            .bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
            .bind(&prefix)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Issues `members.len()` vouchers of `definition` (one per member; `None`: a voucher
    /// given to no one) as the bulk run `run`, in transactions of 500, calling `progress`
    /// with the count done after each. Running the same run again issues only what it had
    /// not (a stopped run resumes). Returns how many were issued by this call.
    pub async fn issue_vouchers_bulk(
        &self,
        program: &LoadedProgram,
        definition_code: &str,
        members: &[Option<String>],
        run: &str,
        now: DateTime<Utc>,
        actor: &Actor,
        mut progress: impl FnMut(usize),
    ) -> Result<u64> {
        let def = definition(program, definition_code)?;
        let mut issued = 0;
        for (round, chunk) in members.chunks(BULK_ROUND).enumerate() {
            let n = in_write_tx!(self, |tx, pg| {
                async {
                    let mut rows = Vec::with_capacity(chunk.len());
                    for (i, member) in chunk.iter().enumerate() {
                        let member_id = match member {
                            None => None,
                            Some(m) => Some(
                                sqlx::query_scalar::<_, i64>(
                                    "SELECT id FROM members WHERE program_id = $1 AND external_id = $2 AND status <> 'closed'",
                                )
                                .bind(program.id)
                                .bind(m)
                                .fetch_optional(&mut *tx)
                                .await?
                                .ok_or_else(|| StoreError::UnknownMember(m.clone()))?,
                            ),
                        };
                        rows.push(NewVoucher::new(
                            &program.program,
                            def,
                            member_id,
                            "bulk".into(),
                            format!("bulk:{run}:{}", round * BULK_ROUND + i),
                            now,
                            &actor.name,
                        )?);
                    }
                    let n = insert_vouchers!(tx, pg, program.id, rows.iter(), now);
                    if n > 0 {
                        let mut audit = actor.entry(
                            now,
                            "voucher.issue_bulk",
                            Some(program.program.code.as_str()),
                            None,
                        );
                        audit.after = Some(serde_json::json!({
                            "definition": def.code, "run": run, "issued": n,
                        }));
                        crate::access::insert_audit!(tx, &audit);
                    }
                    Ok::<_, StoreError>(n)
                }
                .await
            })?;
            issued += n;
            progress((round * BULK_ROUND + chunk.len()).min(members.len()));
        }
        Ok(issued)
    }

    /// Applies `action` to the voucher `code` at `now`. Returns the voucher after it and
    /// whether this call changed it (`false`: a retry of a change already made).
    pub async fn act_on_voucher(
        &self,
        program: &LoadedProgram,
        code: &str,
        action: &VoucherAction,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(VoucherView, bool)> {
        let code = normalize_code(code);
        let kind = action.kind();
        in_write_tx!(self, |tx, pg| {
            async {
                let sql = format!(
                    "SELECT {COLUMNS} FROM vouchers v LEFT JOIN members m ON m.id = v.member_id \
                     WHERE v.program_id = $1 AND v.code = $2{}",
                    if pg { " FOR UPDATE OF v" } else { "" }
                );
                let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(&code)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| unknown(&code))?;
                let id = row.0;
                if let Some(key) = action.key() {
                    let done: Option<i64> = sqlx::query_scalar(
                        "SELECT amount FROM voucher_entries WHERE voucher_id = $1 AND kind = $2 AND key = $3",
                    )
                    .bind(id)
                    .bind(kind.name())
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(amount) = done {
                        if let VoucherAction::Redeem { amount: Some(a), .. } = action
                            && -amount != *a
                        {
                            return Err(StoreError::Refused(
                                "idempotency_conflict",
                                format!("redemption {key:?} was for {} already", -amount),
                            ));
                        }
                        return Ok((view(row, now)?, false));
                    }
                }
                let mut voucher = state(&row)?;
                let change = match action {
                    VoucherAction::Redeem { amount, .. } => voucher.redeem(now, *amount),
                    VoucherAction::Reserve { key, amount } => voucher.reserve(now, key, *amount),
                    VoucherAction::RedeemReserved { key } => voucher.redeem_reserved(key),
                    VoucherAction::Reinstate { key } => voucher.reinstate(key),
                    VoucherAction::Cancel => voucher.cancel(),
                }
                .map_err(|e| StoreError::Refused(e.code(), e.to_string()))?;
                sqlx::query(
                    "UPDATE vouchers SET status = $1, remaining = $2, uses_left = $3, \
                     reservation_key = $4, reserved_amount = $5 WHERE id = $6",
                )
                .bind(voucher.status.name())
                .bind(voucher.remaining)
                .bind(voucher.uses_left.map(i64::from))
                .bind(voucher.reservation.as_ref().map(|(k, _)| k.clone()))
                .bind(voucher.reservation.as_ref().and_then(|(_, a)| *a))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO voucher_entries (voucher_id, seq, kind, key, amount, at, actor) \
                     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 \
                     FROM voucher_entries WHERE voucher_id = $1",
                )
                .bind(id)
                .bind(change.kind.name())
                .bind(action.key())
                .bind(change.amount)
                .bind(At(now))
                .bind(&actor.name)
                .execute(&mut *tx)
                .await?;
                if let VoucherAction::Cancel = action {
                    let mut audit = actor.entry(
                        now,
                        "voucher.cancel",
                        Some(program.program.code.as_str()),
                        row.3.as_deref(),
                    );
                    audit.before = Some(serde_json::json!({"voucher": code, "status": row.4}));
                    audit.after = Some(serde_json::json!({"voucher": code, "status": "cancelled"}));
                    crate::access::insert_audit!(tx, &audit);
                }
                let mut after = row;
                after.4 = voucher.status.name().to_owned();
                after.7 = voucher.remaining;
                after.8 = voucher.uses_left.map(i64::from);
                after.11 = voucher.reservation.as_ref().map(|(k, _)| k.clone());
                after.12 = voucher.reservation.as_ref().and_then(|(_, a)| *a);
                Ok((view(after, now)?, true))
            }
            .await
        })
    }
}
