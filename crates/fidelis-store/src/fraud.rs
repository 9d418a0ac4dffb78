//! Fraud rules in the store (PRODUCT.md §10): screening journals posted through the API,
//! the queue of held journals, and an agent's decision on each.
//!
//! A held journal is not a journal yet: its document waits in `held_journals`, with no
//! entry and no points, and its external id is taken (a retry answers the hold). A held
//! redemption or transfer spends points: they are **reserved** at once by a hold of
//! Fidelis's own order (`hold:review:…`, see [`fidelis_core::journal::review_order`]),
//! written in the same transaction, so they are spendable nowhere else while the journal
//! waits (and a journal whose points are not there is refused, not held). An agent
//! **releases** it — it is then posted like any journal, as of its original activity
//! (points that expired meanwhile are credited and expired at once, as for any late
//! journal; a released redemption captures its reservation, so it spends exactly the
//! points reserved even when they would have expired since; a released transfer gives
//! the reservation back and is made now) — or **rejects** it, and it never earns (the
//! reservation goes back to the buckets it came from). Deciding is a conditional update
//! under the member's lock: two agents clicking at once decide once.
//!
//! Which journals are screened: those posted through `POST /journals` and the batch route
//! (see [`crate::Prepared::screened`]). Imports, jobs, claims an agent approved and the
//! store's own journals are not: their origin is trusted or reviewed already.
//!
//! What the rules remember of a member (`member_risk`): the last
//! [`fidelis_core::fraud::RECENT`] screened accruals and redemptions, rewritten with the
//! batch that adds to them.

use chrono::{DateTime, Utc};
use fidelis_core::fraud::{self, Facts, Recent, Verdict, Watched};
use fidelis_core::ids::{CurrencyIx, ExternalId};
use fidelis_core::journal::{HOLD_PREFIX, Journal, JournalBody, RELEASE_PREFIX, review_order};
use fidelis_core::outcome::Outcome;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::Prepared;
use crate::error::{Result, StoreError};
use crate::rows::{HeldDecision, HeldRow, LedgerTx, ScreeningSave};
use crate::{Db, in_ledger_tx, postgres};

/// A batch's screening: what was loaded, and what it will write.
#[derive(Debug, Default)]
pub(crate) struct Screen {
    /// Held journals among the batch's external ids.
    held: FxHashMap<String, HeldRow>,
    /// Each member's recent journals, oldest first.
    recent: FxHashMap<i64, Vec<Recent>>,
    /// Receipts asked for, with the members they were sent for.
    receipts: FxHashMap<String, Vec<i64>>,
    /// External ids of the members receipts were sent for.
    receipt_members: FxHashMap<i64, String>,
    /// When members' profiles last changed.
    profile_changed: FxHashMap<i64, DateTime<Utc>>,
    changed: FxHashSet<i64>,
    pub(crate) save: ScreeningSave,
}

impl Screen {
    /// What the rules need for a batch's journals: `rows` as the batch's opening read
    /// them, and the receipts its journals name (read here, when there are any).
    pub(crate) async fn load<T: LedgerTx>(
        tx: &mut T,
        program_id: i64,
        fraud: &fraud::Fraud,
        mut rows: crate::rows::Screening,
        prepared: &[Prepared],
    ) -> Result<Self> {
        let receipts: Vec<String> = match fraud.receipt_attribute() {
            Some(attribute) => {
                let mut r: Vec<String> = prepared
                    .iter()
                    .filter(|p| p.screened)
                    .filter_map(|p| fraud::receipt(&p.journal, attribute))
                    .map(|r| r.into_owned())
                    .collect();
                r.sort_unstable();
                r.dedup();
                r
            }
            None => Vec::new(),
        };
        if !receipts.is_empty() {
            rows.receipts = tx
                .load_screening(program_id, &[], &[], &receipts)
                .await?
                .receipts;
        }
        let mut screen = Self::default();
        for row in rows.held {
            screen.held.insert(row.external_id.clone(), row);
        }
        for (member, text) in rows.risk {
            screen.recent.insert(member, decode(&text));
        }
        screen.profile_changed = rows.profile_changed.into_iter().collect();
        for receipt in receipts {
            screen.receipts.insert(receipt, Vec::new());
        }
        for (receipt, member, name) in rows.receipts {
            screen.receipts.entry(receipt).or_default().push(member);
            screen.receipt_members.insert(member, name);
        }
        Ok(screen)
    }

    /// The held journal with this external id, if it is one.
    pub(crate) fn held(&self, external_id: &str) -> Option<&HeldRow> {
        self.held.get(external_id)
    }

    /// The rules' verdict on `journal` for member `member_id`.
    pub(crate) fn judge(
        &self,
        fraud: &fraud::Fraud,
        member_id: i64,
        journal: &Journal,
        enrolled_at: Option<DateTime<Utc>>,
        names: &FxHashMap<i64, String>,
        now: DateTime<Utc>,
    ) -> Option<Verdict> {
        let recent = self.recent.get(&member_id).map_or(&[][..], Vec::as_slice);
        let other = fraud
            .receipt_attribute()
            .and_then(|a| fraud::receipt(journal, a))
            .and_then(|r| self.receipts.get(r.as_ref()))
            .and_then(|members| members.iter().find(|m| **m != member_id))
            .map(|m| {
                names
                    .get(m)
                    .or_else(|| self.receipt_members.get(m))
                    .map_or("(another member)", String::as_str)
            });
        let facts = Facts {
            recent,
            enrolled_at,
            profile_changed_at: self.profile_changed.get(&member_id).copied(),
            receipt_member: other,
        };
        fraud::screen(fraud, journal, &facts, now)
    }

    /// Remembers a screened journal of the member's (held ones count as attempts, with no
    /// amount: a held amount does not move the member's usual spend).
    pub(crate) fn note(
        &mut self,
        fraud: &fraud::Fraud,
        member_id: i64,
        journal: &Journal,
        held: bool,
    ) {
        let Some(mut this) = fraud::recent_of(journal) else {
            return;
        };
        if held {
            this.amount = 0;
        }
        let recent = self.recent.entry(member_id).or_default();
        // Oldest first: a back-dated journal goes in its place.
        let at = recent.partition_point(|r| r.occurred_at <= this.occurred_at);
        recent.insert(at, this);
        if recent.len() > fraud::RECENT {
            let extra = recent.len() - fraud::RECENT;
            recent.drain(..extra);
        }
        self.changed.insert(member_id);
        if let Some(attribute) = fraud.receipt_attribute()
            && let Some(receipt) = fraud::receipt(journal, attribute)
        {
            let members = self.receipts.entry(receipt.to_string()).or_default();
            if !members.contains(&member_id) {
                members.push(member_id);
                self.save.receipts.push((receipt.into_owned(), member_id));
            }
        }
    }

    /// Keeps `journal` for review.
    pub(crate) fn hold(
        &mut self,
        member_id: i64,
        journal: &Journal,
        prepared: &Prepared,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) {
        let row = HeldRow {
            member_id,
            external_id: journal.external_id.to_string(),
            type_name: journal.body.type_code().to_string(),
            occurred_at: journal.occurred_at,
            document: prepared.document.clone(),
            rule: verdict.rule.to_owned(),
            reason: verdict.reason.clone(),
            status: "held".into(),
            held_at: now,
        };
        self.held.insert(row.external_id.clone(), row.clone());
        self.save.held.push(row);
    }

    /// The members' recent journals the batch changed, to write (in member order).
    pub(crate) fn take_risk(&mut self) -> Vec<(i64, String)> {
        let mut changed: Vec<i64> = self.changed.drain().collect();
        changed.sort_unstable();
        changed
            .into_iter()
            .filter_map(|m| self.recent.get(&m).map(|r| (m, encode(r))))
            .collect()
    }
}

/// How long a reservation's hold lasts: until the review ends it, in practice (a hold
/// needs an end; the jobs release holds past theirs).
const RESERVED_FOR_DAYS: i64 = 36_500;

/// The external id of the hold reserving the points of held journal `external_id`.
pub(crate) fn reservation_id(external_id: &str) -> Result<ExternalId> {
    ExternalId::parse(&format!("{HOLD_PREFIX}{}", review_order(external_id)))
        .map_err(|e| StoreError::Inconsistent(format!("a reservation's id {e}")))
}

/// The hold reserving what a held journal spends: for a redemption, its points as of its
/// activity; `None` for a journal that spends nothing.
pub(crate) fn reservation(journal: &Journal, now: DateTime<Utc>) -> Result<Option<Journal>> {
    let JournalBody::Redemption {
        currency, points, ..
    } = &journal.body
    else {
        return Ok(None);
    };
    Ok(Some(reserve(
        journal.external_id.as_str(),
        &journal.member,
        *currency,
        *points,
        journal.occurred_at,
        now,
    )?))
}

fn reserve(
    external_id: &str,
    member: &ExternalId,
    currency: CurrencyIx,
    points: i64,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Journal> {
    Ok(Journal {
        external_id: reservation_id(external_id)?,
        member: member.clone(),
        occurred_at: at,
        body: JournalBody::Hold {
            currency,
            points,
            until: now.max(at) + chrono::Duration::days(RESERVED_FOR_DAYS),
            partner: None,
        },
    })
}

/// The journal giving a reservation's points back (built here: documents may not name
/// Fidelis's own orders).
fn unreserve(
    program: &crate::LoadedProgram,
    external_id: &str,
    member: &str,
    now: DateTime<Utc>,
) -> Result<Prepared> {
    let order = review_order(external_id);
    let bad = |e: fidelis_core::ids::IdError| {
        StoreError::Inconsistent(format!("a reservation's release: {e}"))
    };
    let journal = Journal {
        external_id: ExternalId::parse(&format!("{RELEASE_PREFIX}{order}")).map_err(bad)?,
        member: ExternalId::parse(member).map_err(bad)?,
        occurred_at: now,
        body: JournalBody::Release {
            original: reservation_id(external_id)?,
        },
    };
    Prepared::new(journal, &program.program)
}

/// The outcome a held journal answers (and a retry of it answers again): nothing earned,
/// the balances as they stand, and why it waits.
pub(crate) fn held_outcome(
    row: &HeldRow,
    journal: &Journal,
    balances: Vec<fidelis_core::outcome::Balance>,
) -> Outcome {
    Outcome {
        status: match row.status.as_str() {
            "rejected" => "rejected".into(),
            _ => "held".into(),
        },
        external_id: Some(journal.external_id.clone()),
        journal_type: Some(journal.body.type_code()),
        hold: Some(fidelis_core::outcome::HoldReason {
            rule: row.rule.clone(),
            reason: row.reason.clone(),
        }),
        balances,
        ..Outcome::default()
    }
}

/// Whether a retry's document asks for the same as the held one: equal, or — when the
/// server filled the retry's time — equal but for `occurred_at`.
pub(crate) fn same_document(held: &str, prepared: &Prepared) -> bool {
    if held == prepared.document {
        return true;
    }
    if !prepared.time_filled {
        return false;
    }
    let strip = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("occurred_at");
                }
                v
            })
    };
    matches!((strip(held), strip(&prepared.document)), (Some(a), Some(b)) if a == b)
}

fn encode(recent: &[Recent]) -> String {
    let mut out = String::with_capacity(recent.len() * 18);
    for (i, r) in recent.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match r.kind {
            Watched::Accruals => {
                out.push_str(&format!("a{}:{}", r.occurred_at.timestamp(), r.amount));
            }
            Watched::Redemptions => out.push_str(&format!("r{}", r.occurred_at.timestamp())),
        }
    }
    out
}

/// Reads `member_risk.recent`; a part that does not read is skipped (the rules then see
/// a little less history, never a wrong one).
fn decode(text: &str) -> Vec<Recent> {
    text.split_ascii_whitespace()
        .filter_map(|part| {
            let (kind, rest) = match part.split_at_checked(1)? {
                ("a", rest) => (Watched::Accruals, rest),
                ("r", rest) => (Watched::Redemptions, rest),
                _ => return None,
            };
            let (secs, amount) = match rest.split_once(':') {
                Some((s, a)) => (s, a.parse().ok()?),
                None => (rest, 0),
            };
            Some(Recent {
                kind,
                occurred_at: DateTime::from_timestamp(secs.parse().ok()?, 0)?,
                amount,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_journals_read_back_as_written() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).expect("an instant");
        let recent = vec![
            Recent {
                kind: Watched::Accruals,
                occurred_at: at(0),
                amount: 1999,
            },
            Recent {
                kind: Watched::Redemptions,
                occurred_at: at(60),
                amount: 0,
            },
        ];
        let text = encode(&recent);
        assert_eq!(text, "a1800000000:1999 r1800000060");
        assert_eq!(decode(&text), recent);
        // Parts that do not read are skipped.
        assert_eq!(decode("x1 a1800000000:1999 a:: r1800000060").len(), 2);
    }
}

/// A held journal, for the console and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldJournal {
    pub external_id: String,
    pub member: String,
    pub journal_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The journal as posted (its canonical document).
    pub document: String,
    pub rule: String,
    pub reason: String,
    /// `held`, `released` or `rejected`.
    pub status: String,
    pub held_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
}

type HeldTuple = (
    String,
    String,
    String,
    At,
    String,
    String,
    String,
    String,
    At,
    Option<At>,
    Option<String>,
    Option<String>,
);

fn from_tuple(t: HeldTuple) -> HeldJournal {
    HeldJournal {
        external_id: t.0,
        member: t.1,
        journal_type: t.2,
        occurred_at: t.3.0,
        document: t.4,
        rule: t.5,
        reason: t.6,
        status: t.7,
        held_at: t.8.0,
        decided_at: t.9.map(|a| a.0),
        decided_by: t.10,
        note: t.11,
    }
}

const HELD_COLUMNS: &str = "h.external_id, m.external_id, h.type, h.occurred_at, h.document, h.rule, \
     h.reason, h.status, h.held_at, h.decided_at, h.decided_by, h.note";

/// How an agent's decision went.
#[derive(Debug, Clone)]
pub enum Decided {
    /// Released: the journal's outcome as processed now.
    Released(HeldJournal, Outcome),
    Rejected(HeldJournal),
}

impl crate::Store {
    /// The program's held journals, newest first: those with `status` (all when `None`),
    /// at most `limit`.
    pub async fn held_journals(
        &self,
        program: &crate::LoadedProgram,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<HeldJournal>> {
        self.held_rows(program, status, None, limit).await
    }

    /// A member's journals waiting for review, newest first (at most `limit`): what the
    /// portal tells the member is under review.
    pub async fn member_held_journals(
        &self,
        program: &crate::LoadedProgram,
        member: &str,
        limit: i64,
    ) -> Result<Vec<HeldJournal>> {
        self.held_rows(program, Some("held"), Some(member), limit)
            .await
    }

    async fn held_rows(
        &self,
        program: &crate::LoadedProgram,
        status: Option<&str>,
        member: Option<&str>,
        limit: i64,
    ) -> Result<Vec<HeldJournal>> {
        let sql = format!(
            "SELECT {HELD_COLUMNS} FROM held_journals h JOIN members m ON m.id = h.member_id \
             WHERE h.program_id = $1 AND ($2 IS NULL OR h.status = $2) \
             AND ($3 IS NULL OR m.external_id = $3) ORDER BY h.id DESC LIMIT $4"
        );
        let rows: Vec<HeldTuple> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(program.id)
                .bind(status)
                .bind(member)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(from_tuple).collect())
    }

    /// One held journal (whatever was decided since), by its external id.
    pub async fn held_journal(
        &self,
        program: &crate::LoadedProgram,
        external_id: &str,
    ) -> Result<Option<HeldJournal>> {
        let sql = format!(
            "SELECT {HELD_COLUMNS} FROM held_journals h JOIN members m ON m.id = h.member_id \
             WHERE h.program_id = $1 AND h.external_id = $2"
        );
        let row: Option<HeldTuple> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(program.id)
                .bind(external_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(from_tuple))
    }

    /// Releases a held journal: it is posted as of its original activity and earns what
    /// it would have earned then. Decided once: a second release (or one after a
    /// rejection) is refused with `already_decided`. When the journal cannot be processed
    /// now (the member was suspended, the points to redeem are gone) nothing changes and
    /// the reason is returned.
    pub async fn release_held(
        &self,
        program: &crate::LoadedProgram,
        external_id: &str,
        actor: &crate::Actor,
        now: DateTime<Utc>,
    ) -> Result<Decided> {
        self.decide(program, external_id, "released", None, actor, now)
            .await
    }

    /// Rejects a held journal: it never earns; a retry of it answers `rejected`.
    pub async fn reject_held(
        &self,
        program: &crate::LoadedProgram,
        external_id: &str,
        note: Option<&str>,
        actor: &crate::Actor,
        now: DateTime<Utc>,
    ) -> Result<Decided> {
        self.decide(program, external_id, "rejected", note, actor, now)
            .await
    }

    async fn decide(
        &self,
        program: &crate::LoadedProgram,
        external_id: &str,
        status: &'static str,
        note: Option<&str>,
        actor: &crate::Actor,
        now: DateTime<Utc>,
    ) -> Result<Decided> {
        let Some(before) = self.held_journal(program, external_id).await? else {
            return Err(StoreError::Refused(
                "not_found",
                format!("no held journal {external_id:?}"),
            ));
        };
        // A held transfer names its receiver too: both are locked, in the batches' order.
        let receiver = (before.journal_type == "transfer")
            .then(|| serde_json::from_str::<serde_json::Value>(&before.document).ok())
            .flatten()
            .and_then(|v| v["to"].as_str().map(str::to_owned));
        let lock = crate::engine::lock_keys(
            program.id,
            std::iter::once(before.member.as_str()).chain(receiver.as_deref()),
        );
        let decision = HeldDecision {
            status,
            by: &actor.name,
            note,
            at: now,
        };
        let code = program.program.code.as_str();
        let outcome = in_ledger_tx!(self, |tx| {
            async {
                // The member's lock first (as a batch takes it), then the conditional
                // update: of two agents deciding at once, the second finds it decided.
                tx.lock_members(&lock).await?;
                let Some(row) = tx.decide_held(program.id, external_id, &decision).await? else {
                    return Err(StoreError::Refused(
                        "already_decided",
                        format!("journal {external_id:?} was decided already"),
                    ));
                };
                // Held before reservations existed, a journal has none to end.
                let reserved = match row.type_name.as_str() {
                    "redemption" | "transfer" => {
                        let id = reservation_id(external_id)?;
                        !tx.load_journals_by_external_id(program.id, &[id.as_str()])
                            .await?
                            .is_empty()
                    }
                    _ => false,
                };
                // A rejection, and the release of a transfer (made now, from the points
                // as they are), give the reservation back first.
                if reserved && (status == "rejected" || row.type_name == "transfer") {
                    let back = unreserve(program, external_id, &before.member, now)?;
                    let results = crate::engine::post_batch(
                        &mut tx,
                        program,
                        std::slice::from_ref(&back),
                        now,
                        None,
                        crate::engine::Revision::AsLoaded,
                        false,
                        false,
                    )
                    .await?;
                    if let Some(Err(e)) = results.first() {
                        return Err(StoreError::Refused(
                            "release_refused",
                            format!("the reserved points cannot be given back ({}): {e}", e.code()),
                        ));
                    }
                }
                let mut outcome = None;
                if status == "released" && row.type_name == "transfer" {
                    let v: serde_json::Value = serde_json::from_str(&row.document)?;
                    let t = crate::lifecycle::Transfer {
                        from: v["from"].as_str().unwrap_or_default(),
                        to: v["to"].as_str().unwrap_or_default(),
                        currency: v["currency"].as_str().unwrap_or_default(),
                        points: v["points"].as_i64().unwrap_or_default(),
                        external_id,
                    };
                    match crate::lifecycle::transfer_tx(&mut tx, program, &t, now, false).await {
                        Ok((o, _)) => outcome = Some(o),
                        Err(StoreError::Refused(code, detail)) => {
                            return Err(StoreError::Refused(
                                "release_refused",
                                format!("the transfer cannot be made now ({code}): {detail}"),
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                } else if status == "released" {
                    let mut prepared = prepare(program, &row.document)?;
                    if reserved
                        && let JournalBody::Redemption { reserved: hold, .. } =
                            &mut prepared.journal.body
                    {
                        *hold = Some(reservation_id(external_id)?);
                    }
                    let mut results = crate::engine::post_batch(
                        &mut tx,
                        program,
                        std::slice::from_ref(&prepared),
                        now,
                        None,
                        crate::engine::Revision::AsLoaded,
                        false,
                        true,
                    )
                    .await?;
                    match results.pop() {
                        Some(Ok(posted)) => outcome = Some(posted.outcome),
                        Some(Err(e)) => {
                            return Err(StoreError::Refused(
                                "release_refused",
                                format!("the journal cannot be processed now ({}): {e}", e.code()),
                            ));
                        }
                        None => {
                            return Err(StoreError::Inconsistent(
                                "a released journal answered nothing".into(),
                            ));
                        }
                    }
                }
                let mut audit = actor.entry(now, if status == "released" { "journal.release" } else { "journal.reject" }, Some(code), Some(external_id));
                audit.before = Some(serde_json::json!({"status": "held", "rule": row.rule}));
                audit.after = Some(serde_json::json!({"status": status, "note": note}));
                tx.insert_audits(&[audit]).await?;
                let mut payload = serde_json::json!({"member": before.member, "journal": external_id,
                    "type": row.type_name, "rule": row.rule});
                if let Some(o) = &outcome {
                    payload["points"] = serde_json::to_value(
                        o.awards.iter().fold(Vec::new(), |mut acc, a| {
                            Outcome::add(&mut acc, &a.currency, a.points);
                            acc
                        }),
                    )?;
                }
                tx.insert_events(
                    program.id,
                    &[crate::partners::NewEvent {
                        kind: if status == "released" {
                            "journal.released"
                        } else {
                            "journal.rejected"
                        },
                        member_id: Some(row.member_id),
                        subject: before.member.clone(),
                        payload: payload.to_string(),
                        occurred_at: now,
                    }],
                )
                .await?;
                Ok::<_, StoreError>(outcome)
            }
            .await
        })?;
        let after = self
            .held_journal(program, external_id)
            .await?
            .ok_or_else(|| StoreError::Inconsistent("a decided journal vanished".into()))?;
        Ok(match outcome {
            Some(outcome) => Decided::Released(after, outcome),
            None => Decided::Rejected(after),
        })
    }

    /// Flags a member for review (`reason`), or clears the flag (`None`). Audited.
    pub async fn flag_member(
        &self,
        program: &crate::LoadedProgram,
        member: &str,
        reason: Option<&str>,
        actor: &crate::Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let code = program.program.code.to_string();
        let mut audit = actor.entry(now, "member.flag", Some(&code), Some(member));
        audit.after = Some(serde_json::json!({"flagged": reason}));
        in_write_tx!(self, |tx, _pg| {
            async {
                let done = sqlx::query(
                    "UPDATE members SET flagged = $1 WHERE program_id = $2 AND external_id = $3",
                )
                .bind(reason)
                .bind(program.id)
                .bind(member)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::UnknownMember(member.to_owned()));
                }
                crate::access::insert_audit!(tx, &audit);
                Ok(())
            }
            .await
        })
    }

    /// Why a member is flagged, if they are.
    pub async fn member_flag(
        &self,
        program: &crate::LoadedProgram,
        member: &str,
    ) -> Result<Option<String>> {
        let flag: Option<Option<String>> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT flagged FROM members WHERE program_id = $1 AND external_id = $2",
            )
            .bind(program.id)
            .bind(member)
            .fetch_optional(pool)
            .await?
        });
        Ok(flag.flatten())
    }
}

/// A held document as a journal to post (screening off: an agent decided).
fn prepare(program: &crate::LoadedProgram, document: &str) -> Result<Prepared> {
    let doc: fidelis_core::journal::JournalDocument = serde_json::from_str(document)?;
    let journal = Journal::parse(&doc, &program.program)
        .map_err(|e| StoreError::Inconsistent(format!("a held journal no longer reads: {e}")))?;
    Prepared::new(journal, &program.program)
}

/// What the ring rule says of a transfer.
pub(crate) enum TransferScreen {
    /// A held transfer's retry: its answer (boxed: an outcome is large).
    Replay(Box<Outcome>),
    /// Closes a ring: to hold (see [`hold_transfer`]).
    Hold(HeldRow),
}

/// The ring rule on a transfer (see [`crate::lifecycle::transfer_tx`]): `Some` when the
/// transfer is a held one's retry, or closes a ring now.
pub(crate) async fn screen_transfer<T: crate::lifecycle::TransferTx>(
    tx: &mut T,
    program: &crate::LoadedProgram,
    t: &crate::lifecycle::Transfer<'_>,
    sender_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<TransferScreen>> {
    let Some((length, within)) = program.program.fraud.ring() else {
        return Ok(None);
    };
    let document = t.document();
    let held = tx
        .load_screening(program.id, &[t.external_id], &[], &[])
        .await?
        .held;
    if let Some(row) = held.first() {
        if row.document != document {
            return Err(StoreError::Refused(
                "idempotency_conflict",
                format!(
                    "external_id {:?} was used for a different operation",
                    t.external_id
                ),
            ));
        }
        return Ok(Some(TransferScreen::Replay(Box::new(transfer_outcome(
            row,
        )))));
    }
    // Breadth first from the receiver, one statement per step, over transfers within the
    // window; at most RING_VISITS members.
    let since = now - within;
    let mut edges: Vec<fraud::Edge> = Vec::new();
    let mut seen: FxHashSet<String> = FxHashSet::default();
    seen.insert(t.to.to_owned());
    let mut frontier = vec![t.to.to_owned()];
    for _ in 1..length {
        if frontier.is_empty() {
            break;
        }
        let documents = tx
            .sent_transfers(program.id, &frontier, since, fraud::RING_VISITS as i64 * 4)
            .await?;
        frontier.clear();
        for d in documents {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&d) else {
                continue;
            };
            let (Some(from), Some(to)) = (v["from"].as_str(), v["to"].as_str()) else {
                continue;
            };
            edges.push(fraud::Edge {
                from: from.to_owned(),
                to: to.to_owned(),
            });
            if seen.len() < fraud::RING_VISITS && seen.insert(to.to_owned()) {
                frontier.push(to.to_owned());
            }
        }
    }
    let Some(ring) = fraud::ring(t.from, t.to, length, |m| {
        edges.iter().filter(|e| e.from == m).collect()
    }) else {
        return Ok(None);
    };
    let mut path = ring.join(" → ");
    path.push_str(" → ");
    path.push_str(t.from);
    let row = HeldRow {
        member_id: sender_id,
        external_id: t.external_id.to_owned(),
        type_name: "transfer".into(),
        occurred_at: now,
        document,
        rule: "transfer_ring".into(),
        reason: format!(
            "the transfer closes a ring of {} members within {}: {path}",
            ring.len(),
            fraud::span(within)
        ),
        status: "held".into(),
        held_at: now,
    };
    Ok(Some(TransferScreen::Hold(row)))
}

/// The hold of a transfer that closes a ring: its points reserved on the sender's ledger
/// (`batch` holds it, loaded; refused as the transfer would be when they are not there),
/// the held row and its `journal.held` event written.
pub(crate) async fn hold_transfer<T: crate::lifecycle::TransferTx>(
    tx: &mut T,
    batch: &mut crate::engine::Batch<'_>,
    program: &crate::LoadedProgram,
    t: &crate::lifecycle::Transfer<'_>,
    currency: CurrencyIx,
    row: HeldRow,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let sender_id = row.member_id;
    let member = ExternalId::parse(t.from)
        .map_err(|e| StoreError::Refused("invalid_request", format!("from {e}")))?;
    let journal = reserve(t.external_id, &member, currency, t.points, now, now)?;
    let document = serde_json::to_string(&journal.canonical(&program.program))?;
    let ids = tx.reserve_journal_ids(2).await?;
    let (Some(&main), Some(&settlement)) = (ids.first(), ids.get(1)) else {
        return Err(StoreError::Inconsistent(
            "too few journal ids reserved".into(),
        ));
    };
    let ids = fidelis_core::process::JournalIds {
        main: fidelis_core::ids::JournalId(main),
        settlement: fidelis_core::ids::JournalId(settlement),
    };
    if let Err(e) = batch
        .process(tx, sender_id, &journal, &document, ids)
        .await?
    {
        return Err(StoreError::Refused(e.code(), e.to_string()));
    }
    batch.write(tx).await?;
    let save = ScreeningSave {
        held: vec![row.clone()],
        ..ScreeningSave::default()
    };
    tx.save_screening(program.id, &save).await?;
    tx.insert_events(
        program.id,
        &[crate::partners::NewEvent {
            kind: "journal.held",
            member_id: Some(sender_id),
            subject: t.from.to_owned(),
            payload: serde_json::json!({"member": t.from, "journal": t.external_id,
                "type": "transfer", "rule": row.rule, "reason": row.reason})
            .to_string(),
            occurred_at: now,
        }],
    )
    .await?;
    Ok(transfer_outcome(&row))
}

fn transfer_outcome(row: &HeldRow) -> Outcome {
    Outcome {
        status: match row.status.as_str() {
            "rejected" => "rejected".into(),
            _ => "held".into(),
        },
        external_id: fidelis_core::ids::ExternalId::parse(&row.external_id).ok(),
        journal_type: fidelis_core::ids::Code::parse("transfer").ok(),
        hold: Some(fidelis_core::outcome::HoldReason {
            rule: row.rule.clone(),
            reason: row.reason.clone(),
        }),
        ..Outcome::default()
    }
}
