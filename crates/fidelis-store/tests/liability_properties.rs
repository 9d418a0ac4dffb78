//! A property of the points liability, on SQLite and a throw-away PostgreSQL: across random
//! histories of earning (at a partner or not), redemptions, refunds, cancellations and
//! expiries (the jobs run as time passes), over several members of a program,
//!
//! - the liability as of now is what the members hold (available and pending, by their
//!   balances), valued at the currency's value per point;
//! - no partner's share is negative, and together they are at most the whole;
//! - the liability as of every earlier step's instant is, at the end, what it was then
//!   (the ledger is append-only and nothing is backdated here).
//!
//! The histories come from proptest strategies run by a deterministic runner.

use chrono::Duration;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::partners::PartnerDocument;
use fidelis_store::{Actor, LoadedProgram, Prepared, Store};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;

mod common;
use common::utc;

fidelis_testkit::store_tests!(the_liability_is_what_members_hold_at_every_instant);

const CASES: usize = 12;
const STEPS: std::ops::Range<usize> = 5..30;
const MEMBERS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// A member earns an amount, at the partner or not.
    Earn(usize, i64, bool),
    Redeem(usize, i64),
    /// A refund of part of one of the earlier purchases.
    Refund(usize, i64),
    /// The cancellation of one of the earlier journals.
    Cancel(usize),
    /// Time passes (minutes).
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ((0usize..3), (1i64..500), any::<bool>()).prop_map(|(m, a, p)| Op::Earn(m, a, p)),
        2 => ((0usize..3), (1i64..300)).prop_map(|(m, p)| Op::Redeem(m, p)),
        1 => ((0usize..16), (1i64..200)).prop_map(|(j, a)| Op::Refund(j, a)),
        1 => (0usize..16).prop_map(Op::Cancel),
        2 => prop_oneof![(1i64..600), (1440i64..40 * 1440)].prop_map(Op::Wait),
    ]
}

async fn post(
    store: &Store,
    program: &std::sync::Arc<LoadedProgram>,
    doc: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    store
        .post_realtime(
            program,
            Prepared::new(journal, &program.program).unwrap(),
            now,
        )
        .await
        .unwrap()
        .is_ok()
}

async fn the_liability_is_what_members_hold_at_every_instant(store: Store) {
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(), STEPS);
    for case in 0..CASES {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let program = common::program_with_members(
            &store,
            json!({
                "code": format!("l{case}"), "name": "Liability", "time_zone": "Europe/Berlin",
                "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                                "value_per_point": "0.005", "pending_days": 1, "return_policy": "allow_negative",
                                "expiry": {"policy": "rolling", "days": 20}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]}
            }),
            &MEMBERS,
        )
        .await;
        let partner: PartnerDocument = serde_json::from_value(
            json!({"name": "Bank", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.01"}),
        )
        .unwrap();
        store
            .put_partner(
                &program,
                "bank",
                &partner,
                utc("2026-01-01T00:00:00Z"),
                &Actor::cli(),
            )
            .await
            .unwrap();
        let mut now = utc("2026-02-01T10:00:00Z");
        // Purchases (id, member) and every journal posted, for refunds and cancellations.
        let mut purchases: Vec<(String, usize)> = Vec::new();
        let mut journals: Vec<(String, usize)> = Vec::new();
        let mut seen = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            now += Duration::seconds(30);
            let ctx = || format!("case {case}, step {step}: {op:?} in {ops:?}");
            let at = now.to_rfc3339();
            let id = format!("j{step}");
            match op {
                Op::Earn(m, amount, at_partner) => {
                    let mut doc = json!({"external_id": id, "member": MEMBERS[*m], "type": "purchase",
                                         "occurred_at": at, "amount": amount.to_string(), "currency": "EUR"});
                    if *at_partner {
                        doc["partner"] = json!("bank");
                    }
                    assert!(post(&store, &program, doc, now).await, "{}", ctx());
                    purchases.push((id.clone(), *m));
                    journals.push((id, *m));
                }
                Op::Redeem(m, points) => {
                    let doc = json!({"external_id": id, "member": MEMBERS[*m], "type": "redemption",
                                     "occurred_at": at, "currency": "points", "points": points});
                    if post(&store, &program, doc, now).await {
                        journals.push((id, *m));
                    }
                }
                Op::Refund(j, amount) => {
                    if let Some((original, m)) = purchases.get(*j).cloned() {
                        let doc = json!({"external_id": id, "member": MEMBERS[m], "type": "refund",
                                         "occurred_at": at, "original_external_id": original,
                                         "amount": amount.to_string(), "currency": "EUR"});
                        post(&store, &program, doc, now).await;
                    }
                }
                Op::Cancel(j) => {
                    if let Some((original, m)) = journals.get(*j).cloned() {
                        let doc = json!({"external_id": id, "member": MEMBERS[m], "type": "cancellation",
                                         "occurred_at": at, "original_external_id": original});
                        post(&store, &program, doc, now).await;
                    }
                }
                Op::Wait(minutes) => now += Duration::minutes(*minutes),
            }
            // The jobs record what expired and became available by now.
            store.run_jobs(&program, now).await.unwrap();
            let liability = store.liability(&program, now).await.unwrap();
            let points = &liability.currencies[0];
            let mut held = 0;
            for m in MEMBERS {
                let member = store.require_member(&program, m).await.unwrap();
                let b = &store.balances(&program, &member, now).await.unwrap()[0];
                held += b.available + b.pending - b.arrears;
            }
            assert_eq!(points.outstanding, held, "{}", ctx());
            assert_eq!(
                points.value,
                fidelis_core::partners::money(held, "0.005".parse().unwrap(), 2),
                "{}",
                ctx()
            );
            let shares: i64 = liability.partners.iter().map(|p| p.outstanding).sum();
            assert!(
                liability.partners.iter().all(|p| p.outstanding >= 0) && shares <= held.max(0),
                "partner shares {:?} of {held}: {}",
                liability.partners,
                ctx()
            );
            seen.push((now, points.outstanding));
        }
        for (at, outstanding) in seen {
            let again = store.liability(&program, at).await.unwrap();
            assert_eq!(
                again.currencies[0].outstanding, outstanding,
                "case {case}: as of {at}"
            );
        }
    }
}
