//! The reward catalog and its orders.
//!
//! The rules (price per tier, who may order, when) are `fidelis_core::catalog`; this module
//! keeps items (their document, and their stock as a column counted down in SQL) and
//! orders, and moves an order through its life with the ledger doing the spending:
//!
//! - **Placing** takes one unit of stock and records the order as `placing` in one
//!   transaction (`stock = stock - 1 WHERE stock > 0`, so two orders for the last unit
//!   cannot both take it), then redeems the points as the journal `order:ORDER_ID`
//!   through [`Store::post_realtime`] (the ledger's own locks and idempotency), then marks
//!   the order `placed` — issuing the item's voucher, if it has one — or `rejected` with
//!   the stock given back. A retry of an order found `placing` (a crash between the steps)
//!   finishes it: the journal's external id makes the redemption happen once.
//! - **Cancelling** marks a placed order `cancelled` and returns its stock in one
//!   transaction, then cancels the redemption (`order-cancel:ORDER_ID`, which gives the
//!   points back to the buckets they came from with their original expiry) and the
//!   order's voucher. A retry repeats the last two steps, which are idempotent.
//! - **Fulfilling** marks a placed order `fulfilled`: the item or its voucher went out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::catalog::{
    CatalogError, CatalogItem, ORDER_CANCEL_PREFIX, ORDER_PREFIX, OrderStatus,
};
use fidelis_core::journal::{Journal, JournalDocument, JournalError};

use crate::Store;
use crate::access::Actor;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::{LoadedProgram, Prepared};
use crate::error::{Result, StoreError};
use crate::vouchers::VoucherAction;

/// An item with its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub item: CatalogItem,
    /// Units left; `None`: unlimited.
    pub stock: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// An order as the API and pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: String,
    /// The member's external id.
    pub member: String,
    pub item: String,
    pub currency: String,
    pub points: i64,
    pub status: OrderStatus,
    /// The partner that fulfils it (the item's, when ordered).
    pub partner: Option<String>,
    /// The voucher the order issued.
    pub voucher: Option<String>,
    /// Why the ledger refused a rejected order.
    pub reason: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type OrderRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    At,
    At,
);

const ORDER_COLUMNS: &str = "o.order_id, m.external_id, o.item, o.currency, o.points, o.status, \
     o.partner, o.voucher_code, o.reason, o.placed_at, o.updated_at";

fn order_view(r: OrderRow) -> Result<OrderView> {
    Ok(OrderView {
        order_id: r.0,
        member: r.1,
        item: r.2,
        currency: r.3,
        points: r.4,
        status: OrderStatus::parse(&r.5)
            .ok_or_else(|| StoreError::Inconsistent(format!("order status {:?}", r.5)))?,
        partner: r.6,
        voucher: r.7,
        reason: r.8,
        placed_at: r.9.0,
        updated_at: r.10.0,
    })
}

fn entry(document: &str, stock: Option<i64>, updated_at: At) -> Result<CatalogEntry> {
    Ok(CatalogEntry {
        item: serde_json::from_str(document)?,
        stock,
        updated_at: updated_at.0,
    })
}

fn refused(e: &CatalogError) -> StoreError {
    StoreError::Refused(e.code(), e.to_string())
}

fn unknown_item(code: &str) -> StoreError {
    StoreError::Refused("unknown_item", format!("the catalog has no item {code:?}"))
}

fn unknown_order(order: &str) -> StoreError {
    StoreError::Refused("unknown_order", format!("no order {order:?}"))
}

/// Puts one unit of `$item` back into stock (an item without stock has no count), on
/// `$tx`, a transaction of either dialect.
macro_rules! give_back_stock {
    ($tx:ident, $program_id:expr, $item:expr) => {
        sqlx::query(
            "UPDATE catalog_items SET stock = stock + 1 \
             WHERE program_id = $1 AND code = $2 AND stock IS NOT NULL",
        )
        .bind($program_id)
        .bind($item)
        .execute(&mut *$tx)
        .await?
    };
}

/// The longest order id (the shop's or portal's own).
pub const MAX_ORDER_ID_LEN: usize = 100;

impl Store {
    /// Creates or replaces an item, with its stock (`None`: unlimited). Checked against
    /// the program: every problem is returned, nothing stored. Audited. Returns whether
    /// it is new.
    pub async fn put_catalog_item(
        &self,
        program: &LoadedProgram,
        item: &CatalogItem,
        stock: Option<i64>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<bool> {
        let mut problems = item.check(&program.program);
        if stock.is_some_and(|s| !(0..=fidelis_core::catalog::MAX_STOCK).contains(&s)) {
            problems.push(fidelis_core::program::Problem {
                path: "stock".into(),
                message: format!("must be 0 to {}", fidelis_core::catalog::MAX_STOCK),
            });
        }
        if !problems.is_empty() {
            return Err(StoreError::Refused(
                "invalid_item",
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        let document = serde_json::to_string(item)?;
        in_write_tx!(self, |tx, _pg| {
            async {
                let before: Option<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT document, stock FROM catalog_items WHERE program_id = $1 AND code = $2",
                )
                .bind(program.id)
                .bind(&item.code)
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO catalog_items (program_id, code, document, stock, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id, code) DO UPDATE \
                     SET document = excluded.document, stock = excluded.stock, updated_at = excluded.updated_at",
                )
                .bind(program.id)
                .bind(&item.code)
                .bind(&document)
                .bind(stock)
                .bind(At(now))
                .execute(&mut *tx)
                .await?;
                let mut audit = actor.entry(
                    now,
                    "catalog.put",
                    Some(program.program.code.as_str()),
                    Some(&item.code),
                );
                audit.before = before
                    .as_ref()
                    .map(|(d, s)| serde_json::json!({"item": serde_json::from_str::<serde_json::Value>(d).unwrap_or_default(), "stock": s}));
                audit.after = Some(serde_json::json!({"item": item, "stock": stock}));
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>(before.is_none())
            }
            .await
        })
    }

    /// The program's items by code; inactive ones too when `all`.
    pub async fn catalog(&self, program: &LoadedProgram, all: bool) -> Result<Vec<CatalogEntry>> {
        let rows: Vec<(String, Option<i64>, At)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT document, stock, updated_at FROM catalog_items WHERE program_id = $1 ORDER BY code",
            )
            .bind(program.id)
            .fetch_all(pool)
            .await?
        });
        let mut items = Vec::with_capacity(rows.len());
        for (document, stock, at) in rows {
            let e = entry(&document, stock, at)?;
            if all || e.item.active {
                items.push(e);
            }
        }
        Ok(items)
    }

    /// One item.
    pub async fn catalog_item(
        &self,
        program: &LoadedProgram,
        code: &str,
    ) -> Result<Option<CatalogEntry>> {
        let row: Option<(String, Option<i64>, At)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT document, stock, updated_at FROM catalog_items WHERE program_id = $1 AND code = $2",
            )
            .bind(program.id)
            .bind(code)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(d, s, at)| entry(&d, s, at)).transpose()
    }

    /// The order `order_id`.
    pub async fn order(
        &self,
        program: &LoadedProgram,
        order_id: &str,
    ) -> Result<Option<OrderView>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN members m ON m.id = o.member_id \
             WHERE o.program_id = $1 AND o.order_id = $2"
        );
        let row: Option<OrderRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(program.id)
                .bind(order_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(order_view).transpose()
    }

    /// Orders newest first, at most `limit`: a member's (its row id), or the program's
    /// (optionally of one status, and only those fulfilled by `partner`).
    pub async fn orders(
        &self,
        program: &LoadedProgram,
        member_id: Option<i64>,
        status: Option<OrderStatus>,
        partner: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OrderView>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN members m ON m.id = o.member_id \
             WHERE o.program_id = $1 AND ($2 IS NULL OR o.member_id = $2) \
             AND ($3 IS NULL OR o.status = $3) AND ($4 IS NULL OR o.partner = $4) \
             ORDER BY o.id DESC LIMIT $5"
        );
        let rows: Vec<OrderRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(program.id)
                .bind(member_id)
                .bind(status.map(OrderStatus::as_str))
                .bind(partner)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(order_view).collect()
    }

    /// Places the order `order_id` of one unit of `item` for `member` (see the module's
    /// documentation). Returns the order and whether this call answers an earlier one
    /// (`true`: a retry; nothing changed now). Refusals: `unknown_item`, the item's own
    /// (`item_inactive`, `item_not_yet_available`, `item_no_longer_available`,
    /// `item_not_for_tier`, `out_of_stock`), the ledger's (`insufficient_points`,
    /// `member_not_active`, …), `idempotency_conflict` for the same order id with another
    /// member or item.
    pub async fn place_order(
        &self,
        program: &Arc<LoadedProgram>,
        order_id: &str,
        member: &str,
        item_code: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(OrderView, bool)> {
        // As stored (microseconds): a retry's journal is dated as the first one's.
        let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        if order_id.is_empty()
            || order_id.chars().count() > MAX_ORDER_ID_LEN
            || order_id.chars().any(char::is_control)
        {
            return Err(StoreError::Refused(
                "invalid_request",
                format!("an order id is 1 to {MAX_ORDER_ID_LEN} characters, no control characters"),
            ));
        }
        let order = match self.order(program, order_id).await? {
            Some(o) => o,
            None => match self
                .start_order(program, order_id, member, item_code, now)
                .await
            {
                Ok(o) => o,
                // The same order placed at the same moment by another request.
                Err(e) if e.is_unique_violation() => self
                    .order(program, order_id)
                    .await?
                    .ok_or_else(|| unknown_order(order_id))?,
                Err(e) => return Err(e),
            },
        };
        if order.member != member || order.item != item_code {
            return Err(StoreError::Refused(
                "idempotency_conflict",
                format!("order {order_id:?} was placed for another member or item"),
            ));
        }
        if order.status != OrderStatus::Placing {
            return Ok((order, true));
        }
        let resumed = order.placed_at != now;
        let journal = redemption(&order);
        match self.post_order_journal(program, journal, now).await? {
            Ok(()) => {}
            Err(e) => {
                let reason = e.to_string();
                in_write_tx!(self, |tx, _pg| {
                    async {
                        let n = sqlx::query(
                            "UPDATE orders SET status = 'rejected', reason = $3, updated_at = $4 \
                             WHERE program_id = $1 AND order_id = $2 AND status = 'placing'",
                        )
                        .bind(program.id)
                        .bind(order_id)
                        .bind(&reason)
                        .bind(At(now))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if n == 1 {
                            give_back_stock!(tx, program.id, &order.item);
                        }
                        Ok::<_, StoreError>(())
                    }
                    .await
                })?;
                return Err(StoreError::Refused(e.code(), reason));
            }
        }
        // The item's voucher, once per order (its key is the order's).
        let definition = self
            .catalog_item(program, &order.item)
            .await?
            .and_then(|e| e.item.voucher);
        let voucher = match definition {
            Some(d) if program.program.voucher(&d).is_some() => Some(
                self.issue_voucher(
                    program,
                    &d,
                    Some(&order.member),
                    "order",
                    order_id,
                    now,
                    actor,
                )
                .await?
                .0
                .code,
            ),
            _ => None,
        };
        in_write_tx!(self, |tx, _pg| {
            async {
                sqlx::query(
                    "UPDATE orders SET status = 'placed', voucher_code = $3, updated_at = $4 \
                     WHERE program_id = $1 AND order_id = $2 AND status = 'placing'",
                )
                .bind(program.id)
                .bind(order_id)
                .bind(&voucher)
                .bind(At(now))
                .execute(&mut *tx)
                .await?;
                let mut audit = actor.entry(
                    now,
                    "order.place",
                    Some(program.program.code.as_str()),
                    Some(order_id),
                );
                audit.after = Some(serde_json::json!({
                    "member": order.member, "item": order.item, "currency": order.currency,
                    "points": order.points, "voucher": voucher,
                }));
                crate::access::insert_audit!(tx, &audit);
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        let order = self
            .order(program, order_id)
            .await?
            .ok_or_else(|| unknown_order(order_id))?;
        Ok((order, resumed))
    }

    /// The first step of an order: the item's rules, one unit of stock, the order row.
    async fn start_order(
        &self,
        program: &LoadedProgram,
        order_id: &str,
        member: &str,
        item_code: &str,
        now: DateTime<Utc>,
    ) -> Result<OrderView> {
        let m = self.require_member(program, member).await?;
        let entry = self
            .catalog_item(program, item_code)
            .await?
            .ok_or_else(|| unknown_item(item_code))?;
        entry.item.orderable_at(now).map_err(|e| refused(&e))?;
        let standing = if entry.item.tiers.is_empty() && entry.item.tier_prices.is_empty() {
            Vec::new()
        } else {
            self.tier_standing(program, member, now).await?
        };
        let tiers: Vec<&str> = standing.iter().map(|s| s.tier.as_str()).collect();
        let points = entry.item.price_for(&tiers).map_err(|e| refused(&e))?;
        in_write_tx!(self, |tx, pg| {
            async {
                let taken = sqlx::query(
                    "UPDATE catalog_items SET stock = stock - 1 \
                     WHERE program_id = $1 AND code = $2 AND stock > 0",
                )
                .bind(program.id)
                .bind(item_code)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 0 && entry.stock.is_some() {
                    return Err(refused(&CatalogError::OutOfStock));
                }
                // PostgreSQL keeps the order id unique through its key (see
                // migrations/postgres/0034_order_and_claim_keys.sql): a taken one fails this.
                sqlx::query(if pg {
                    "WITH o AS (INSERT INTO orders (program_id, order_id, member_id, item, currency, points, status, \
                                                    partner, placed_at, updated_at) \
                                VALUES ($1, $2, $3, $4, $5, $6, 'placing', $7, $8, $8) RETURNING member_id, id) \
                     INSERT INTO order_keys (program_id, order_id, member_id, id) SELECT $1, $2, member_id, id FROM o"
                } else {
                    "INSERT INTO orders (program_id, order_id, member_id, item, currency, points, status, \
                     partner, placed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'placing', $7, $8, $8)"
                })
                .bind(program.id)
                .bind(order_id)
                .bind(m.id)
                .bind(item_code)
                .bind(&entry.item.currency)
                .bind(points)
                .bind(&entry.item.partner)
                .bind(At(now))
                .execute(&mut *tx)
                .await?;
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        Ok(OrderView {
            order_id: order_id.to_owned(),
            member: member.to_owned(),
            item: item_code.to_owned(),
            currency: entry.item.currency.clone(),
            points,
            status: OrderStatus::Placing,
            partner: entry.item.partner.clone(),
            voucher: None,
            reason: None,
            placed_at: now,
            updated_at: now,
        })
    }

    /// Posts an order's journal (reparsed against the program if it changed meanwhile):
    /// `Ok(Ok(()))` when applied now or before, the ledger's refusal otherwise.
    async fn post_order_journal(
        &self,
        program: &Arc<LoadedProgram>,
        document: JournalDocument,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), JournalError>> {
        let mut program = Arc::clone(program);
        let mut reloaded = false;
        loop {
            let journal = match Journal::parse(&document, &program.program) {
                Ok(j) => j,
                Err(e) => return Ok(Err(e)),
            };
            let prepared = Prepared::new(journal, &program.program)?;
            match self.post_realtime(&program, prepared, now).await {
                Err(StoreError::ProgramChanged(code)) if !reloaded => {
                    program = self.require_program(&code).await?;
                    reloaded = true;
                }
                Err(e) => return Err(e),
                Ok(result) => return Ok(result.map(|_| ())),
            }
        }
    }

    /// Cancels a placed order: its stock back, its points back to the buckets they came
    /// from (with their original expiry), its voucher cancelled. Refused for a fulfilled
    /// order (`order_fulfilled`), when its voucher was used (`order_voucher_used`), or
    /// when its member was merged into another since (`order_member_merged`).
    /// Returns the order and whether it had been cancelled before (a retry). Audited.
    pub async fn cancel_order(
        &self,
        program: &Arc<LoadedProgram>,
        order_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(OrderView, bool)> {
        let order = self
            .order(program, order_id)
            .await?
            .ok_or_else(|| unknown_order(order_id))?;
        let replayed = order.status == OrderStatus::Cancelled;
        if !replayed {
            order.status.cancel().map_err(|e| refused(&e))?;
            // The member's buckets went to a survivor with the merge: the redemption
            // cannot be reversed into them. An agent credits the survivor instead.
            let member = self.require_member(program, &order.member).await?;
            if let Some(survivor) = member.merged_into {
                return Err(StoreError::Refused(
                    "order_member_merged",
                    format!(
                        "{} was merged into {survivor} after ordering; its points cannot go \
                         back to the closed record: credit {survivor} with an adjustment instead",
                        order.member
                    ),
                ));
            }
            if let Some(code) = &order.voucher {
                // Reserved or redeemed now, or redeemed once before (part of a fixed value,
                // one use of several).
                let used = self
                    .voucher(program, code, now)
                    .await?
                    .is_some_and(|v| matches!(v.status, "redeemed" | "reserved"))
                    || self
                        .voucher_entries(program, code)
                        .await?
                        .iter()
                        .any(|e| e.kind == "redeem");
                if used {
                    return Err(StoreError::Refused(
                        "order_voucher_used",
                        format!(
                            "the order's voucher {code} was used; the order cannot be cancelled"
                        ),
                    ));
                }
            }
            let changed = in_write_tx!(self, |tx, _pg| {
                async {
                    let n = sqlx::query(
                        "UPDATE orders SET status = 'cancelled', updated_at = $3 \
                         WHERE program_id = $1 AND order_id = $2 AND status = 'placed'",
                    )
                    .bind(program.id)
                    .bind(order_id)
                    .bind(At(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        give_back_stock!(tx, program.id, &order.item);
                        let mut audit = actor.entry(
                            now,
                            "order.cancel",
                            Some(program.program.code.as_str()),
                            Some(order_id),
                        );
                        audit.before = Some(serde_json::json!({"status": order.status}));
                        audit.after = Some(serde_json::json!({"status": "cancelled"}));
                        crate::access::insert_audit!(tx, &audit);
                    }
                    Ok::<_, StoreError>(n == 1)
                }
                .await
            })?;
            if !changed {
                // Fulfilled or cancelled meanwhile: answer as it stands now.
                return Box::pin(self.cancel_order(program, order_id, now, actor)).await;
            }
        }
        // The ledger's and the voucher's part: idempotent, so a retry after a crash
        // between the steps completes them.
        let document = JournalDocument {
            external_id: Some(format!("{ORDER_CANCEL_PREFIX}{order_id}")),
            member: Some(order.member.clone()),
            kind: Some("cancellation".into()),
            occurred_at: Some(now.to_rfc3339()),
            original_external_id: Some(format!("{ORDER_PREFIX}{order_id}")),
            ..JournalDocument::default()
        };
        match self.post_order_journal(program, document, now).await? {
            Ok(()) | Err(JournalError::AlreadyCancelled(_)) => {}
            // A retry's cancellation carries another instant than the first.
            Err(JournalError::IdempotencyConflict(_)) if replayed => {}
            Err(e) => return Err(StoreError::Refused(e.code(), e.to_string())),
        }
        if let Some(code) = &order.voucher {
            match self
                .act_on_voucher(program, code, &VoucherAction::Cancel, now, actor)
                .await
            {
                Ok(_) | Err(StoreError::Refused("voucher_cancelled", _)) => {}
                Err(e) => return Err(e),
            }
        }
        let order = self
            .order(program, order_id)
            .await?
            .ok_or_else(|| unknown_order(order_id))?;
        Ok((order, replayed))
    }

    /// Marks a placed order fulfilled. Returns the order and whether it had been before
    /// (a retry). Refused for a cancelled or rejected order. Audited.
    pub async fn fulfil_order(
        &self,
        program: &LoadedProgram,
        order_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(OrderView, bool)> {
        let changed = in_write_tx!(self, |tx, _pg| {
            async {
                let n = sqlx::query(
                    "UPDATE orders SET status = 'fulfilled', updated_at = $3 \
                     WHERE program_id = $1 AND order_id = $2 AND status = 'placed'",
                )
                .bind(program.id)
                .bind(order_id)
                .bind(At(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    let mut audit = actor.entry(
                        now,
                        "order.fulfil",
                        Some(program.program.code.as_str()),
                        Some(order_id),
                    );
                    audit.after = Some(serde_json::json!({"status": "fulfilled"}));
                    crate::access::insert_audit!(tx, &audit);
                }
                Ok::<_, StoreError>(n == 1)
            }
            .await
        })?;
        let order = self
            .order(program, order_id)
            .await?
            .ok_or_else(|| unknown_order(order_id))?;
        if changed {
            return Ok((order, false));
        }
        match order.status {
            OrderStatus::Fulfilled => Ok((order, true)),
            other => Err(refused(&CatalogError::OrderState(other, "fulfilled"))),
        }
    }
}

/// The journal that spends an order's points; dated when the order was placed, so a
/// retry posts the same document and is answered, not repeated.
fn redemption(order: &OrderView) -> JournalDocument {
    JournalDocument {
        external_id: Some(format!("{ORDER_PREFIX}{}", order.order_id)),
        member: Some(order.member.clone()),
        kind: Some("redemption".into()),
        occurred_at: Some(order.placed_at.to_rfc3339()),
        currency: Some(order.currency.clone()),
        points: Some(order.points),
        ..JournalDocument::default()
    }
}
