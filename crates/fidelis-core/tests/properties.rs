//! Properties of the ledger over random histories: earn, redeem, refund, cancel, adjust,
//! replay, settle and time passing, on programs with different expiry, pending and return
//! policies.
//!
//! After every step: each balance is the sum of its entries and of its buckets' remainders;
//! no balance is below its floor; no debit ever drew on a bucket outside its validity; a
//! refused journal changed nothing; a replay changed nothing and answered the first
//! outcome; and a cancellation posted right after a journal restored the exact balances.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use common::utc;
use fidelis_core::book::Book;
use fidelis_core::ids::{BucketId, ExternalId};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::ledger::{EntryKind, MemberLedger, Pool};
use fidelis_core::outcome::Outcome;
use fidelis_core::program::{Program, ProgramDocument};
use proptest::prelude::*;
use serde_json::json;

const MEMBERS: [&str; 2] = ["a", "b"];

/// Three programs that between them exercise every expiry kind, pending points and every
/// return policy.
fn programs() -> Vec<(&'static str, Program)> {
    let variants = [
        (
            "rolling, pending, allow_negative with floor",
            "{policy: rolling, days: 60, round_up: end_of_month}",
            "pending_days: 5, return_policy: allow_negative, negative_floor: -150",
        ),
        (
            "inactivity, within_balance",
            "{policy: inactivity, months: 2}",
            "return_policy: within_balance",
        ),
        (
            "fixed date, pending_only",
            "{policy: fixed_date, month: 3, day: 31}",
            "pending_days: 10, return_policy: pending_only",
        ),
        // Never expiring, never pending: the points live in the account's pool.
        (
            "never, allow_negative with floor",
            "{policy: never}",
            "return_policy: allow_negative, negative_floor: -80",
        ),
    ];
    variants
        .into_iter()
        .map(|(name, expiry, fields)| {
            let yaml = format!(
                "code: p\nname: P\ntime_zone: America/New_York\nmoney_currency: USD\ncurrencies:\n  - {{code: points, name: Points, kind: redeemable, expiry: {expiry}, {fields}}}\n  - {{code: status, name: Status, kind: qualifying, expiry: {{policy: rolling, months: 3}}}}\nearning:\n  base:\n    - {{currency: points, rate: \"1.5\", rounding: half_up}}\n    - {{currency: status, rate: \"1\"}}\n"
            );
            let doc: ProgramDocument = yaml_serde::from_str(&yaml).unwrap();
            (name, Program::compile(&doc, None).unwrap())
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Earn {
        member: usize,
        cents: u32,
        lines: bool,
        hours_back: u16,
        cancel: bool,
    },
    Redeem {
        member: usize,
        points: i64,
        cancel: bool,
    },
    Refund {
        target: usize,
        how: u8,
        pct: u8,
        cancel: bool,
    },
    Adjust {
        member: usize,
        points: i64,
        cancel: bool,
    },
    Cancel {
        target: usize,
    },
    Replay {
        target: usize,
    },
    Advance {
        hours: u32,
    },
    Settle,
    /// Pay with points: a hold for an order, open for `ttl_hours`.
    Hold {
        member: usize,
        points: i64,
        ttl_hours: u16,
    },
    /// Ends a hold (one of those placed) by capture or release.
    EndHold {
        target: usize,
        capture: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS.len();
    prop_oneof![
        4 => (member.clone(), 1u32..30_000, any::<bool>(), 0u16..300, prop::bool::weighted(0.15))
            .prop_map(|(member, cents, lines, hours_back, cancel)| Op::Earn { member, cents, lines, hours_back, cancel }),
        3 => (member.clone(), 1i64..400, prop::bool::weighted(0.15))
            .prop_map(|(member, points, cancel)| Op::Redeem { member, points, cancel }),
        2 => (any::<usize>(), 0u8..3, 1u8..=100, prop::bool::weighted(0.15))
            .prop_map(|(target, how, pct, cancel)| Op::Refund { target, how, pct, cancel }),
        1 => (member.clone(), -200i64..300, prop::bool::weighted(0.15))
            .prop_map(|(member, points, cancel)| Op::Adjust { member, points, cancel }),
        1 => any::<usize>().prop_map(|target| Op::Cancel { target }),
        1 => any::<usize>().prop_map(|target| Op::Replay { target }),
        3 => (1u32..1_500).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Settle),
        2 => (member.clone(), 1i64..400, 1u16..100)
            .prop_map(|(member, points, ttl_hours)| Op::Hold { member, points, ttl_hours }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(target, capture)| Op::EndHold { target, capture }),
    ]
}

struct World {
    book: Book,
    now: DateTime<Utc>,
    seq: usize,
    /// Every journal posted successfully, with its first outcome.
    posted: Vec<(Journal, Outcome)>,
    /// External ids of purchases, for refunds.
    purchases: Vec<(String, usize, bool)>,
    /// Holds placed: order, member, points, until, and whether still open.
    holds: Vec<(String, usize, i64, DateTime<Utc>, bool)>,
}

impl World {
    fn new(program: Program) -> Self {
        let mut book = Book::new(program);
        for m in MEMBERS {
            book.enroll(&ExternalId::parse(m).unwrap());
        }
        Self {
            book,
            now: utc("2026-01-01T09:00:00Z"),
            seq: 0,
            posted: Vec::new(),
            purchases: Vec::new(),
            holds: Vec::new(),
        }
    }

    fn ledger(&self, member: &str) -> MemberLedger {
        self.book
            .ledger(&ExternalId::parse(member).unwrap())
            .unwrap()
            .clone()
    }

    fn journal(&mut self, mut doc: serde_json::Value, occurred_at: DateTime<Utc>) -> Journal {
        self.seq += 1;
        doc["external_id"] = format!("j{}", self.seq).into();
        doc["occurred_at"] = occurred_at.to_rfc3339().into();
        let doc: JournalDocument = serde_json::from_value(doc).unwrap();
        Journal::parse(&doc, self.book.program()).unwrap()
    }

    /// Posts; a refusal must leave the member's ledger exactly as it was.
    fn post(&mut self, journal: Journal) -> Option<Outcome> {
        let before = self.ledger(journal.member.as_str());
        match self.book.post(&journal, self.now) {
            Ok((outcome, replayed)) => {
                assert!(!replayed);
                self.posted.push((journal, outcome.clone()));
                Some(outcome)
            }
            Err(e) => {
                assert_eq!(
                    self.ledger(journal.member.as_str()),
                    before,
                    "refused with {e}, yet the ledger changed"
                );
                None
            }
        }
    }

    /// Posts, and if `cancel`, cancels right away: the balances must be back exactly.
    fn post_then_maybe_cancel(&mut self, journal: Journal, cancel: bool) {
        let member = journal.member.to_string();
        // Expiries and releases already due would happen with the journal anyway; they
        // are not the journal's to reverse.
        self.book.settle_all(self.now);
        let before = balances_and_buckets(&self.ledger(&member));
        let external_id = journal.external_id.to_string();
        if self.post(journal).is_some() && cancel {
            let j = self.journal(json!({"member": member, "type": "cancellation", "original_external_id": external_id}), self.now);
            assert!(
                self.post(j).is_some(),
                "cancelling {external_id} right after it was refused"
            );
            let after = balances_and_buckets(&self.ledger(&member));
            assert_eq!(before.0, after.0, "balances after cancelling {external_id}");
            for (bucket, remaining) in &after.1 {
                let was = before.1.get(bucket).copied().unwrap_or(0);
                assert_eq!(
                    *remaining, was,
                    "bucket {bucket:?} after cancelling {external_id}"
                );
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Earn {
                member,
                cents,
                lines,
                hours_back,
                cancel,
            } => {
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                let mut doc = json!({"member": MEMBERS[member], "type": "purchase", "amount": amount, "currency": "USD"});
                if lines && cents >= 2 {
                    let first = cents / 3;
                    doc["lines"] = json!([
                        {"line_id": "1", "quantity": 3, "amount": format!("{}.{:02}", first / 100, first % 100)},
                        {"line_id": "2", "amount": format!("{}.{:02}", (cents - first) / 100, (cents - first) % 100)},
                    ]);
                }
                let j = self.journal(doc, self.now - Duration::hours(i64::from(hours_back)));
                let external_id = j.external_id.to_string();
                let lined = lines && cents >= 2;
                let posted_before = self.posted.len();
                self.post_then_maybe_cancel(j, cancel);
                if self.posted.len() > posted_before {
                    self.purchases.push((external_id, member, lined));
                }
            }
            Op::Redeem {
                member,
                points,
                cancel,
            } => {
                let j = self.journal(json!({"member": MEMBERS[member], "type": "redemption", "currency": "points", "points": points}), self.now);
                self.post_then_maybe_cancel(j, cancel);
            }
            Op::Adjust {
                member,
                points,
                cancel,
            } => {
                if points == 0 {
                    return;
                }
                let j = self.journal(
                    json!({"member": MEMBERS[member], "type": "adjustment", "currency": "points", "points": points, "reason": "goodwill"}),
                    self.now,
                );
                self.post_then_maybe_cancel(j, cancel);
            }
            Op::Refund {
                target,
                how,
                pct,
                cancel,
            } => {
                if self.purchases.is_empty() {
                    return;
                }
                let (original, member, lined) =
                    self.purchases[target % self.purchases.len()].clone();
                let mut doc = json!({"member": MEMBERS[member], "type": "refund", "original_external_id": original});
                match how {
                    1 => {
                        let cents = (u32::from(pct) * 3).max(1);
                        doc["amount"] = format!("{}.{:02}", cents / 100, cents % 100).into();
                        doc["currency"] = "USD".into();
                    }
                    2 if lined => {
                        doc["lines"] = json!([{"line_id": if pct % 2 == 0 { "1" } else { "2" }}])
                    }
                    _ => {}
                }
                let j = self.journal(doc, self.now);
                self.post_then_maybe_cancel(j, cancel);
            }
            Op::Cancel { target } => {
                if self.posted.is_empty() {
                    return;
                }
                let (journal, _) = self.posted[target % self.posted.len()].clone();
                let j = self.journal(
                    json!({"member": journal.member.as_str(), "type": "cancellation", "original_external_id": journal.external_id.as_str()}),
                    self.now,
                );
                self.post(j);
            }
            Op::Replay { target } => {
                if self.posted.is_empty() {
                    return;
                }
                let (journal, first) = self.posted[target % self.posted.len()].clone();
                let before = self.ledger(journal.member.as_str());
                let (outcome, replayed) = self.book.post(&journal, self.now).unwrap();
                assert!(replayed);
                assert_eq!(outcome, first, "a replay answers the first outcome");
                assert_eq!(
                    self.ledger(journal.member.as_str()),
                    before,
                    "a replay changes nothing"
                );
            }
            Op::Hold {
                member,
                points,
                ttl_hours,
            } => {
                self.seq += 1;
                let order = format!("o{}", self.seq);
                let until = self.now + Duration::hours(i64::from(ttl_hours));
                let doc: JournalDocument = serde_json::from_value(json!({
                    "external_id": format!("hold:{order}"), "member": MEMBERS[member], "type": "hold",
                    "currency": "points", "points": points, "occurred_at": self.now.to_rfc3339(),
                    "expires_at": until.to_rfc3339(),
                }))
                .unwrap();
                let j = Journal::parse(&doc, self.book.program()).unwrap();
                if self.post(j).is_some() {
                    self.holds.push((order, member, points, until, true));
                }
            }
            Op::EndHold { target, capture } => {
                if self.holds.is_empty() {
                    return;
                }
                let at = target % self.holds.len();
                let (order, member, _, until, open) = self.holds[at].clone();
                let how = if capture { "capture" } else { "release" };
                let doc: JournalDocument = serde_json::from_value(json!({
                    "external_id": format!("{how}:{order}"), "member": MEMBERS[member], "type": how,
                    "occurred_at": self.now.to_rfc3339(),
                }))
                .unwrap();
                let j = Journal::parse(&doc, self.book.program()).unwrap();
                if !open {
                    // Ended already: a replay of that end, or a refusal; nothing moves.
                    let before = self.ledger(MEMBERS[member]);
                    let _ = self.book.post(&j, self.now);
                    assert_eq!(
                        self.ledger(MEMBERS[member]),
                        before,
                        "{how} of an ended hold"
                    );
                    return;
                }
                // Settling first: what is due is not the hold's to move.
                self.book.settle_all(self.now);
                let before = balances_and_buckets(&self.ledger(MEMBERS[member]));
                let done = self.post(j).is_some();
                let expect = !capture || self.now < until;
                assert_eq!(
                    done, expect,
                    "{how} of {order} at {} (until {until})",
                    self.now
                );
                if done {
                    self.holds[at].4 = false;
                    let after = balances_and_buckets(&self.ledger(MEMBERS[member]));
                    if capture {
                        assert_eq!(before, after, "a capture moves no balance and no bucket");
                    }
                }
            }
            Op::Advance { hours } => self.now += Duration::hours(i64::from(hours)),
            Op::Settle => {
                self.book.settle_all(self.now);
                let again = self.book.settle_all(self.now);
                assert_eq!(again, 0, "settling twice as of one instant");
            }
        }
    }

    fn check_invariants(&self) {
        let program = self.book.program();
        for (i, m) in MEMBERS.iter().enumerate() {
            let ledger = self.ledger(m);
            ledger
                .check(program)
                .unwrap_or_else(|e| panic!("member {m}: {e}"));
            let entries: Vec<_> = self.book.entries_of(ledger.member).collect();
            // Held points are exactly the open holds' points: held + available + spent
            // and the rest account for every point earned.
            let held: i64 = -entries
                .iter()
                .filter(|e| e.kind == EntryKind::Hold)
                .map(|e| e.amount)
                .sum::<i64>();
            let open: i64 = self
                .holds
                .iter()
                .filter(|h| h.1 == i && h.4)
                .map(|h| h.2)
                .sum();
            assert_eq!(held, open, "{m}: held points = the open holds' points");
            let buckets: HashMap<BucketId, _> = ledger.buckets.iter().map(|b| (b.id, b)).collect();
            for (ix, currency) in program.currency_ixs() {
                let account = ledger.account(ix);
                let sum = |pool| {
                    entries
                        .iter()
                        .filter(|e| e.currency == ix && e.pool == pool)
                        .map(|e| e.amount)
                        .sum::<i64>()
                };
                assert_eq!(
                    account.available,
                    sum(Pool::Available),
                    "{m} {}: available = Σ entries",
                    currency.code
                );
                assert_eq!(
                    account.pending,
                    sum(Pool::Pending),
                    "{m} {}: pending = Σ entries",
                    currency.code
                );
                let floor = currency
                    .arrears_floor()
                    .max(currency.redemption_floor().min(currency.arrears_floor()));
                assert!(
                    account.available >= floor,
                    "{m} {}: {} below the floor {floor}",
                    currency.code,
                    account.available
                );
            }
            for (ix, currency) in program.currency_ixs() {
                let pool: i64 = entries
                    .iter()
                    .filter(|e| e.bucket == Some(fidelis_core::ledger::pool_id(ix)))
                    .map(|e| e.amount)
                    .sum();
                assert_eq!(
                    ledger.account(ix).pool,
                    pool,
                    "{m} {}: pool = Σ its entries",
                    currency.code
                );
            }
            for bucket in buckets.values() {
                let sum: i64 = entries
                    .iter()
                    .filter(|e| e.bucket == Some(bucket.id))
                    .map(|e| e.amount)
                    .sum();
                assert_eq!(
                    bucket.remaining, sum,
                    "{m}: bucket {:?} = Σ its entries",
                    bucket.id
                );
            }
            for debit in entries.iter().filter(|e| {
                e.kind == EntryKind::Redeem
                    || (e.kind == EntryKind::Adjust && e.amount < 0)
                    || (e.kind == EntryKind::Hold && e.amount < 0)
            }) {
                let Some(bucket) = debit.bucket.and_then(|b| buckets.get(&b)) else {
                    continue;
                };
                assert!(
                    bucket.credited_at <= debit.effective_at,
                    "{m}: spent before credited"
                );
                if let Some(expires_at) = bucket.expires_at {
                    assert!(
                        debit.effective_at < expires_at,
                        "{m}: an expired bucket was spent"
                    );
                }
                assert!(
                    !(bucket.pending && bucket.available_at > debit.effective_at),
                    "{m}: a pending bucket was spent"
                );
            }
        }
    }
}

/// Balances (available, pending, arrears per currency) and every bucket's remainder.
fn balances_and_buckets(ledger: &MemberLedger) -> (Vec<(i64, i64, i64)>, HashMap<BucketId, i64>) {
    (
        ledger
            .accounts
            .iter()
            .map(|a| (a.available, a.pending, a.arrears))
            .collect(),
        ledger.buckets.iter().map(|b| (b.id, b.remaining)).collect(),
    )
}

proptest! {
    #[test]
    fn ledger_invariants_hold_over_random_histories(ops in prop::collection::vec(op(), 1..80)) {
        for (_, program) in programs() {
            let mut world = World::new(program);
            for op in &ops {
                world.apply(op);
                world.check_invariants();
            }
        }
    }
}

type Validity = (u16, Option<DateTime<Utc>>, bool, Option<DateTime<Utc>>);

/// Points per (currency, expiry, pending, release) of a ledger's open buckets and pool:
/// what a merge must carry over unchanged. Pool points count with no expiry.
fn open_points(program: &Program, ledger: &MemberLedger) -> Vec<(Validity, i64)> {
    let mut out: Vec<_> = ledger
        .buckets
        .iter()
        .filter(|b| b.remaining > 0)
        .map(|b| {
            (
                (
                    b.currency.0,
                    ledger.effective_expiry(program, b),
                    b.pending,
                    b.pending.then_some(b.available_at),
                ),
                b.remaining,
            )
        })
        .collect();
    for (ix, _) in program.currency_ixs() {
        let pool = ledger.account(ix).pool;
        if pool > 0 {
            out.push(((ix.0, None, false, None), pool));
        }
    }
    summed(out)
}

fn summed(points: Vec<(Validity, i64)>) -> Vec<(Validity, i64)> {
    let mut by: std::collections::BTreeMap<Validity, i64> = std::collections::BTreeMap::new();
    for (k, p) in points {
        *by.entry(k).or_insert(0) += p;
    }
    by.into_iter().collect()
}

proptest! {
    /// Merging member a into b after a random history: the survivor holds every point
    /// both held, each with its expiry (and release) date, its ledger invariants hold,
    /// and the merged member is closed and empty. A merge the rules refuse (a member
    /// owing points) changes nothing.
    #[test]
    fn merging_conserves_points_and_expiry_dates(ops in prop::collection::vec(op(), 1..60)) {
        for (name, program) in programs() {
            let inactivity = name.starts_with("inactivity");
            let mut world = World::new(program.clone());
            for op in &ops {
                world.apply(op);
            }
            let (a, b) = (world.ledger("a"), world.ledger("b"));
            let totals = |l: &MemberLedger| -> Vec<i64> {
                l.accounts.iter().map(|x| x.available + x.pending).collect()
            };
            let before: Vec<i64> = totals(&a).iter().zip(totals(&b)).map(|(x, y)| x + y).collect();
            let mut expected = open_points(&program, &a);
            expected.extend(open_points(&program, &b));
            let expected = summed(expected);
            let b_arrears = b.accounts.iter().any(|x| x.arrears > 0);
            let result = world.book.merge(
                &ExternalId::parse("a").unwrap(),
                &ExternalId::parse("b").unwrap(),
                world.now,
            );
            let (a2, b2) = (world.ledger("a"), world.ledger("b"));
            match result {
                Err(refused) => {
                    prop_assert_eq!(refused.code, "member_in_arrears");
                    prop_assert_eq!(&a2, &a);
                    prop_assert_eq!(&b2, &b);
                }
                Ok(_) => {
                    prop_assert_eq!(totals(&b2), before.clone(), "{}: points conserved", name);
                    prop_assert!(totals(&a2).iter().all(|t| *t == 0), "{}: the merged member is empty", name);
                    prop_assert_eq!(a2.status, fidelis_core::ledger::MemberStatus::Closed);
                    if let Err(e) = b2.check(&program) {
                        return Err(TestCaseError::fail(format!("{name}: {e}")));
                    }
                    if !inactivity && !b_arrears {
                        prop_assert_eq!(open_points(&program, &b2), expected, "{}: expiry dates kept", name);
                    }
                }
            }
        }
    }
}
