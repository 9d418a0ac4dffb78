//! A property of spending, on SQLite and a throw-away PostgreSQL: across random sequences of
//! earning, redemptions, holds, captures, releases, catalog orders, their cancellations,
//! hold expiries and point expiries (the jobs run as time passes), for every member
//!
//!   available + held + spent + expired = earned
//!
//! where `available`, `held` and `expired` are read from the store and `spent` is what the
//! store said it spent (redemptions, captures, orders less cancelled orders). Each step's
//! success is also predicted from the state before it (enough points, an open hold, stock
//! left), so a step the store wrongly refused or wrongly accepted fails the test too.
//!
//! The sequences come from proptest strategies run by a deterministic runner (the same
//! sequences every run; a failure prints its case and steps).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::catalog::CatalogItem;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, LoadedProgram, Prepared, Store, StoreError};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;

fidelis_testkit::store_tests!(held_available_spent_and_expired_add_up_to_what_was_earned);

/// Random histories per database, and steps per history.
const CASES: usize = 24;
const STEPS: std::ops::Range<usize> = 5..40;

#[derive(Debug, Clone)]
enum Op {
    Earn(i64),
    Redeem(i64),
    Hold {
        points: i64,
        minutes: i64,
    },
    Capture(usize),
    Release(usize),
    /// An order of item 0 (50 points, 2 in stock) or 1 (120 points, unlimited).
    Order(usize),
    CancelOrder(usize),
    /// Time passes (minutes), then the jobs run.
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..400).prop_map(Op::Earn),
        1 => (1i64..300).prop_map(Op::Redeem),
        2 => ((1i64..300), (1i64..180)).prop_map(|(points, minutes)| Op::Hold { points, minutes }),
        2 => (0usize..8).prop_map(Op::Capture),
        1 => (0usize..8).prop_map(Op::Release),
        2 => (0usize..2).prop_map(Op::Order),
        1 => (0usize..8).prop_map(Op::CancelOrder),
        2 => prop_oneof![(1i64..240), (1440i64..40 * 1440)].prop_map(Op::Wait),
    ]
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn setup(store: &Store) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                        "expiry": {"policy": "rolling", "days": 30}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]}
    }))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap_or_else(|e| panic!("{e:?}"));
    let (loaded, _) = store
        .put_program(&program, utc("2026-01-01T00:00:00Z"), &Actor::cli())
        .await
        .unwrap();
    loaded
}

/// What a history did, as the store answered it, and what that predicts.
#[derive(Default)]
struct Model {
    earned: i64,
    spent: i64,
    /// Holds: order id, points, end, and whether still open.
    holds: Vec<(String, i64, DateTime<Utc>, bool)>,
    /// Orders placed: order id, item, price, and whether still placed.
    orders: Vec<(String, usize, i64, bool)>,
}

struct Facts {
    available: i64,
    held: i64,
    expired: i64,
    earned_entries: i64,
}

async fn facts(store: &Store, program: &LoadedProgram, member: &str, now: DateTime<Utc>) -> Facts {
    let m = store.require_member(program, member).await.unwrap();
    let available = store.balances(program, &m, now).await.unwrap()[0].available;
    let held = store
        .held_points(m.id)
        .await
        .unwrap()
        .iter()
        .map(|(_, p)| p)
        .sum();
    let entries = store.ledger(&m, None, 100_000).await.unwrap();
    let sum = |kind: &str| -> i64 {
        entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.amount)
            .sum()
    };
    Facts {
        available,
        held,
        expired: -sum("expire"),
        earned_entries: sum("earn"),
    }
}

async fn post(
    store: &Store,
    program: &Arc<LoadedProgram>,
    doc: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).map_err(|e| e.code().to_owned())?;
    store
        .post_realtime(
            program,
            Prepared::new(journal, &program.program).unwrap(),
            now,
        )
        .await
        .unwrap()
        .map(|_| ())
        .map_err(|e| e.code().to_owned())
}

async fn held_available_spent_and_expired_add_up_to_what_was_earned(store: Store) {
    let program = setup(&store).await;
    let prices = [50, 120];
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(), STEPS);
    // What the histories covered: captures, releases (by a client or the jobs), orders,
    // cancelled orders, points expired.
    let mut covered = [0usize; 5];
    for case in 0..CASES {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let member = format!("m{case}");
        let mut now = utc("2026-02-01T10:00:00Z");
        store
            .enroll(
                &program,
                &Enrollment {
                    external_id: ExternalId::parse(&member).unwrap(),
                    profile: json!({}),
                    enrolled_at: now,
                },
                now,
            )
            .await
            .unwrap();
        // Each history has its own items: the mug's stock is its own.
        for (i, price) in prices.iter().enumerate() {
            let item: CatalogItem = serde_json::from_value(json!({
                "code": format!("c{case}-{i}"), "name": "Item", "currency": "points", "points": price}))
            .unwrap();
            let stock = (i == 0).then_some(2);
            store
                .put_catalog_item(&program, &item, stock, now, &Actor::cli())
                .await
                .unwrap();
        }
        let mut model = Model::default();
        let mut stock0 = 2;
        for (step, op) in ops.iter().enumerate() {
            now += Duration::seconds(30);
            let ctx = || format!("case {case}, step {step}: {op:?} in {ops:?}");
            let before = facts(&store, &program, &member, now).await;
            match op {
                Op::Earn(amount) => {
                    post(&store, &program, json!({"external_id": format!("c{case}-e{step}"), "member": member,
                        "type": "purchase", "occurred_at": now.to_rfc3339(), "amount": amount.to_string(),
                        "currency": "EUR"}), now).await.unwrap_or_else(|e| panic!("{e}: {}", ctx()));
                    model.earned += amount;
                }
                Op::Redeem(points) => {
                    let result = post(
                        &store,
                        &program,
                        json!({"external_id": format!("c{case}-r{step}"), "member": member,
                        "type": "redemption", "occurred_at": now.to_rfc3339(), "currency": "points",
                        "points": points}),
                        now,
                    )
                    .await;
                    assert_eq!(
                        result.is_ok(),
                        *points <= before.available,
                        "{result:?} {}",
                        ctx()
                    );
                    if result.is_ok() {
                        model.spent += points;
                    }
                }
                Op::Hold { points, minutes } => {
                    let until = now + Duration::minutes(*minutes);
                    let result = post(&store, &program, json!({"external_id": format!("hold:c{case}-h{step}"),
                        "member": member, "type": "hold", "occurred_at": now.to_rfc3339(), "currency": "points",
                        "points": points, "expires_at": until.to_rfc3339()}), now).await;
                    assert_eq!(
                        result.is_ok(),
                        *points <= before.available,
                        "{result:?} {}",
                        ctx()
                    );
                    if result.is_ok() {
                        model
                            .holds
                            .push((format!("c{case}-h{step}"), *points, until, true));
                    }
                }
                Op::Capture(i) | Op::Release(i) => {
                    let Some((id, points, until, open)) = model.holds.get(*i).cloned() else {
                        continue;
                    };
                    let how = if matches!(op, Op::Capture(_)) {
                        "capture"
                    } else {
                        "release"
                    };
                    let result = post(
                        &store,
                        &program,
                        json!({"external_id": format!("{how}:{id}"),
                        "member": member, "type": how, "occurred_at": now.to_rfc3339()}),
                        now,
                    )
                    .await;
                    // Open holds end once; a capture also needs the hold's end not passed.
                    let expected = open && (how == "release" || now < until);
                    assert_eq!(result.is_ok(), expected, "{result:?} {}", ctx());
                    if result.is_ok() {
                        model.holds[*i].3 = false;
                        if how == "capture" {
                            model.spent += points;
                            covered[0] += 1;
                        } else {
                            covered[1] += 1;
                        }
                    }
                }
                Op::Order(item) => {
                    let price = prices[*item];
                    let result = store
                        .place_order(
                            &program,
                            &format!("c{case}-o{step}"),
                            &member,
                            &format!("c{case}-{item}"),
                            now,
                            &Actor::cli(),
                        )
                        .await;
                    let in_stock = *item == 1 || stock0 > 0;
                    let expected = in_stock && price <= before.available;
                    match &result {
                        Ok(_)
                        | Err(StoreError::Refused("out_of_stock" | "insufficient_points", _)) => {}
                        Err(e) => panic!("{e}: {}", ctx()),
                    }
                    assert_eq!(result.is_ok(), expected, "{result:?} {}", ctx());
                    if result.is_ok() {
                        model.spent += price;
                        covered[2] += 1;
                        model
                            .orders
                            .push((format!("c{case}-o{step}"), *item, price, true));
                        if *item == 0 {
                            stock0 -= 1;
                        }
                    }
                }
                Op::CancelOrder(i) => {
                    let Some((id, item, price, placed)) = model.orders.get(*i).cloned() else {
                        continue;
                    };
                    let (_, replayed) = store
                        .cancel_order(&program, &id, now, &Actor::cli())
                        .await
                        .unwrap_or_else(|e| panic!("{e}: {}", ctx()));
                    assert_eq!(replayed, !placed, "{}", ctx());
                    if placed {
                        model.orders[*i].3 = false;
                        covered[3] += 1;
                        model.spent -= price;
                        if item == 0 {
                            stock0 += 1;
                        }
                    }
                }
                Op::Wait(minutes) => {
                    now += Duration::minutes(*minutes);
                    store.run_jobs(&program, now).await.unwrap();
                    for h in &mut model.holds {
                        if h.3 && h.2 <= now {
                            h.3 = false;
                            covered[1] += 1;
                        }
                    }
                }
            }
            let after = facts(&store, &program, &member, now).await;
            let held: i64 = model.holds.iter().filter(|h| h.3).map(|h| h.1).sum();
            assert_eq!(after.held, held, "held: {}", ctx());
            assert_eq!(after.earned_entries, model.earned, "earned: {}", ctx());
            assert_eq!(
                after.available + after.held + model.spent + after.expired,
                model.earned,
                "available {} + held {} + spent {} + expired {} ≠ earned {}: {}",
                after.available,
                after.held,
                model.spent,
                after.expired,
                model.earned,
                ctx()
            );
            let stock = store
                .catalog_item(&program, &format!("c{case}-0"))
                .await
                .unwrap()
                .unwrap()
                .stock;
            assert_eq!(stock, Some(stock0), "stock: {}", ctx());
            if step + 1 == ops.len() && after.expired > 0 {
                covered[4] += 1;
            }
        }
    }
    assert!(
        covered.iter().all(|n| *n > 0),
        "captures, releases, orders, cancellations, expiries: {covered:?}"
    );
}
