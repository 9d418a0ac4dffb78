//! The reward catalog through the store, on SQLite and a throw-away PostgreSQL: orders for
//! the last unit racing, one order id posted twice, cancellations giving points back with
//! their original expiry and the stock back, tier prices and restrictions, windows, and an
//! order the ledger refuses.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::catalog::{CatalogItem, OrderStatus};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{Actor, LoadedProgram, Prepared, Store, StoreError};
use serde_json::json;

fidelis_testkit::store_tests!(
    two_orders_for_the_last_unit_place_one,
    a_cancelled_order_gives_back_points_with_their_expiry_stock_and_voucher,
    prices_follow_tiers_windows_and_the_ledger,
    an_order_outlives_a_merge_and_a_voucher_used_once_of_two_keeps_it,
);

mod common;
use common::utc;

fn agent() -> Actor {
    Actor {
        name: "agent-anna".into(),
        role: "agent".into(),
    }
}

async fn setup(store: &Store, members: &[&str]) -> Arc<LoadedProgram> {
    common::program_with_members(
        store,
        json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [
            {"code": "points", "name": "Points", "kind": "redeemable",
             "expiry": {"policy": "rolling", "months": 12, "round_up": "end_of_month"}},
            {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
        "tier_groups": [{"code": "main", "name": "Main", "currency": "status", "tiers": [
            {"code": "base", "name": "Base", "threshold": 0},
            {"code": "gold", "name": "Gold", "threshold": 1000}]}],
        "vouchers": [{"code": "ten", "name": "€10", "value": {"fixed": "10.00"}, "validity": {"days": 90}},
                     {"code": "twice", "name": "10% twice", "value": {"percent": "10"}, "uses": 2}]
    }),
        members,
    )
    .await
}

async fn earn(
    store: &Store,
    program: &Arc<LoadedProgram>,
    member: &str,
    id: &str,
    amount: &str,
    at: &str,
) {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": member, "type": "purchase", "occurred_at": at,
        "amount": amount, "currency": "EUR"}))
    .unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap();
    store
        .post_realtime(
            program,
            Prepared::new(journal, &program.program).unwrap(),
            utc(at),
        )
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
}

fn item(v: serde_json::Value) -> CatalogItem {
    serde_json::from_value(v).unwrap()
}

async fn put(store: &Store, program: &LoadedProgram, v: serde_json::Value, stock: Option<i64>) {
    store
        .put_catalog_item(
            program,
            &item(v),
            stock,
            utc("2026-01-01T00:00:00Z"),
            &agent(),
        )
        .await
        .unwrap();
}

async fn order(
    store: &Store,
    program: &Arc<LoadedProgram>,
    id: &str,
    member: &str,
    item: &str,
    now: DateTime<Utc>,
) -> Result<(fidelis_store::OrderView, bool), &'static str> {
    store
        .place_order(program, id, member, item, now, &agent())
        .await
        .map_err(|e| match e {
            StoreError::Refused(code, _) => code,
            other => panic!("{other}"),
        })
}

async fn points(
    store: &Store,
    program: &LoadedProgram,
    member: &str,
    at: DateTime<Utc>,
) -> fidelis_store::BalanceView {
    let m = store.require_member(program, member).await.unwrap();
    store.balances(program, &m, at).await.unwrap().remove(0)
}

async fn stock(store: &Store, program: &LoadedProgram, code: &str) -> Option<i64> {
    store
        .catalog_item(program, code)
        .await
        .unwrap()
        .unwrap()
        .stock
}

async fn two_orders_for_the_last_unit_place_one(store: Store) {
    let members: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    let program = setup(&store, &names).await;
    for m in &names {
        earn(
            &store,
            &program,
            m,
            &format!("p-{m}"),
            "500",
            "2026-03-01T10:00:00Z",
        )
        .await;
    }
    put(
        &store,
        &program,
        json!({"code": "lamp", "name": "Lamp", "currency": "points", "points": 300}),
        Some(1),
    )
    .await;
    let now = utc("2026-03-02T10:00:00Z");
    let mut tasks = Vec::new();
    for m in members.clone() {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            order(&store, &program, &format!("o-{m}"), &m, "lamp", now).await
        }));
    }
    let mut placed = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((o, false)) => placed.push(o),
            Ok((o, true)) => panic!("a new order answered as a retry: {o:?}"),
            Err(code) => assert_eq!(code, "out_of_stock"),
        }
    }
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0].status, OrderStatus::Placed);
    assert_eq!(stock(&store, &program, "lamp").await, Some(0));
    // Only the winner spent points; the others kept theirs.
    let mut spent = 0;
    for m in &names {
        spent += 500 - points(&store, &program, m, now).await.available;
    }
    assert_eq!(spent, 300);
    // The same order id again: one effect, answered as a retry.
    let winner = placed[0].member.clone();
    let (again, replayed) = order(
        &store,
        &program,
        &placed[0].order_id,
        &winner,
        "lamp",
        now + Duration::minutes(1),
    )
    .await
    .unwrap();
    assert!(replayed);
    assert_eq!(again, placed[0]);
    assert_eq!(points(&store, &program, &winner, now).await.available, 200);
    // … with another item or member it is a conflict.
    put(
        &store,
        &program,
        json!({"code": "mug", "name": "Mug", "currency": "points", "points": 10}),
        None,
    )
    .await;
    assert_eq!(
        order(&store, &program, &placed[0].order_id, &winner, "mug", now)
            .await
            .unwrap_err(),
        "idempotency_conflict"
    );
    // A unit restocked is orderable again.
    put(
        &store,
        &program,
        json!({"code": "lamp", "name": "Lamp", "currency": "points", "points": 300}),
        Some(1),
    )
    .await;
    let loser = names.iter().find(|m| **m != winner).unwrap();
    let (o, _) = order(&store, &program, "late", loser, "lamp", now)
        .await
        .unwrap();
    assert_eq!(o.status, OrderStatus::Placed);
}

async fn a_cancelled_order_gives_back_points_with_their_expiry_stock_and_voucher(store: Store) {
    let program = setup(&store, &["m"]).await;
    // Two buckets: 100 points expiring end of March 2027, 400 end of May 2027.
    earn(&store, &program, "m", "p1", "100", "2026-03-10T10:00:00Z").await;
    earn(&store, &program, "m", "p2", "400", "2026-05-10T10:00:00Z").await;
    let now = utc("2026-06-01T10:00:00Z");
    let before = points(&store, &program, "m", now).await;
    assert_eq!(before.available, 500);
    assert_eq!(before.expiring.len(), 2, "{before:?}");
    put(
        &store,
        &program,
        json!({"code": "gift", "name": "€10 gift", "currency": "points", "points": 250,
                                  "voucher": "ten", "partner": "acme"}),
        Some(5),
    )
    .await;
    let (placed, replayed) = order(&store, &program, "A-1", "m", "gift", now)
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(
        (placed.status, placed.points, placed.partner.as_deref()),
        (OrderStatus::Placed, 250, Some("acme"))
    );
    let code = placed
        .voucher
        .clone()
        .expect("the order issued its voucher");
    let voucher = store.voucher(&program, &code, now).await.unwrap().unwrap();
    assert_eq!(
        (
            voucher.member.as_deref(),
            voucher.status,
            voucher.source.as_str()
        ),
        (Some("m"), "issued", "order")
    );
    assert_eq!(stock(&store, &program, "gift").await, Some(4));
    let during = points(&store, &program, "m", now).await;
    assert_eq!(during.available, 250);
    // The earliest expiry was spent first: 100 of March's and 150 of May's.
    assert_eq!(
        during.expiring.iter().map(|s| s.points).collect::<Vec<_>>(),
        [250]
    );

    let later = now + Duration::days(3);
    let (cancelled, replayed) = store
        .cancel_order(&program, "A-1", later, &agent())
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    let after = points(&store, &program, "m", later).await;
    assert_eq!(after.available, 500);
    assert_eq!(
        after.expiring, before.expiring,
        "the points came back with their original expiry"
    );
    assert_eq!(stock(&store, &program, "gift").await, Some(5));
    assert_eq!(
        store
            .voucher(&program, &code, later)
            .await
            .unwrap()
            .unwrap()
            .status,
        "cancelled"
    );
    // Again: a retry, nothing more given back.
    let (_, replayed) = store
        .cancel_order(&program, "A-1", later + Duration::hours(1), &agent())
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(points(&store, &program, "m", later).await.available, 500);
    assert_eq!(stock(&store, &program, "gift").await, Some(5));
    let refused = store
        .fulfil_order(&program, "A-1", later, &agent())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Refused("order_cancelled", _)),
        "{refused}"
    );

    // A fulfilled order stays; one whose voucher was spent cannot be cancelled.
    let (b, _) = order(&store, &program, "B-2", "m", "gift", later)
        .await
        .unwrap();
    let (f, replayed) = store
        .fulfil_order(&program, "B-2", later, &agent())
        .await
        .unwrap();
    assert_eq!((f.status, replayed), (OrderStatus::Fulfilled, false));
    assert!(
        store
            .fulfil_order(&program, "B-2", later, &agent())
            .await
            .unwrap()
            .1
    );
    let e = store
        .cancel_order(&program, "B-2", later, &agent())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("order_fulfilled", _)),
        "{e}"
    );
    let (c, _) = order(&store, &program, "C-3", "m", "gift", later)
        .await
        .unwrap();
    store
        .act_on_voucher(
            &program,
            c.voucher.as_deref().unwrap(),
            &fidelis_store::VoucherAction::Redeem {
                key: "till-1".into(),
                amount: Some(100),
            },
            later,
            &agent(),
        )
        .await
        .unwrap();
    let e = store
        .cancel_order(&program, "C-3", later, &agent())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("order_voucher_used", _)),
        "{e}"
    );
    assert_eq!(points(&store, &program, "m", later).await.available, 0);
    assert_ne!(b.voucher, c.voucher);
    // Every step is in the audit log under the agent's name.
    let audit = store
        .audit(&fidelis_store::AuditFilter {
            program: Some("shop".into()),
            actor: Some("agent-anna".into()),
            action: None,
            subject: None,
            before_id: None,
            limit: 50,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(_, e)| e.action.as_str()).collect();
    for a in ["catalog.put", "order.place", "order.cancel", "order.fulfil"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}

/// A member merged away after ordering: the order cannot be cancelled into the closed
/// record (a clear refusal that changes nothing), and the survivor orders on. A voucher of
/// two uses redeemed once was used: its order stays.
async fn an_order_outlives_a_merge_and_a_voucher_used_once_of_two_keeps_it(store: Store) {
    let program = setup(&store, &["a", "b"]).await;
    earn(&store, &program, "a", "pa", "500", "2026-03-10T10:00:00Z").await;
    earn(&store, &program, "b", "pb", "100", "2026-03-10T10:00:00Z").await;
    put(
        &store,
        &program,
        json!({"code": "mug", "name": "Mug", "currency": "points", "points": 200,
               "voucher": "twice"}),
        Some(3),
    )
    .await;
    let now = utc("2026-04-01T10:00:00Z");
    let (m1, _) = order(&store, &program, "M-1", "a", "mug", now)
        .await
        .unwrap();
    assert_eq!(points(&store, &program, "a", now).await.available, 300);
    store
        .merge_members(&program, "a", "b", now, &agent())
        .await
        .unwrap();
    assert_eq!(points(&store, &program, "b", now).await.available, 400);
    let later = now + Duration::hours(1);
    let e = store
        .cancel_order(&program, "M-1", later, &agent())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("order_member_merged", _)),
        "{e}"
    );
    let o = store.order(&program, "M-1").await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Placed);
    assert_eq!(points(&store, &program, "b", later).await.available, 400);
    assert_eq!(stock(&store, &program, "mug").await, Some(2));
    // The order's voucher moved with the merge.
    let v = store
        .voucher(&program, m1.voucher.as_deref().unwrap(), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.member.as_deref(), v.status), (Some("b"), "issued"));

    let (m2, _) = order(&store, &program, "M-2", "b", "mug", later)
        .await
        .unwrap();
    let code = m2.voucher.clone().unwrap();
    store
        .act_on_voucher(
            &program,
            &code,
            &fidelis_store::VoucherAction::Redeem {
                key: "till-2".into(),
                amount: None,
            },
            later,
            &agent(),
        )
        .await
        .unwrap();
    let v = store
        .voucher(&program, &code, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.status, v.uses_left), ("issued", Some(1)));
    let e = store
        .cancel_order(&program, "M-2", later, &agent())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("order_voucher_used", _)),
        "{e}"
    );
    assert_eq!(points(&store, &program, "b", later).await.available, 200);
}

async fn prices_follow_tiers_windows_and_the_ledger(store: Store) {
    let program = setup(&store, &["plain", "golden"]).await;
    earn(
        &store,
        &program,
        "plain",
        "p1",
        "300",
        "2026-03-01T10:00:00Z",
    )
    .await;
    earn(
        &store,
        &program,
        "golden",
        "p2",
        "1500",
        "2026-03-01T10:00:00Z",
    )
    .await;
    let now = utc("2026-03-02T10:00:00Z");
    put(
        &store,
        &program,
        json!({"code": "bag", "name": "Bag", "currency": "points", "points": 200,
                                  "tier_prices": [{"tier": "gold", "points": 150}]}),
        Some(10),
    )
    .await;
    put(
        &store,
        &program,
        json!({"code": "lounge", "name": "Lounge", "currency": "points", "points": 100,
                                  "tiers": ["gold"]}),
        None,
    )
    .await;
    put(&store, &program, json!({"code": "xmas", "name": "Xmas", "currency": "points", "points": 1,
                                  "available_from": "2026-12-01T00:00:00Z", "available_until": "2026-12-27T00:00:00Z"}), None).await;
    put(
        &store,
        &program,
        json!({"code": "old", "name": "Old", "currency": "points", "points": 1, "active": false}),
        None,
    )
    .await;
    let (o, _) = order(&store, &program, "g1", "golden", "bag", now)
        .await
        .unwrap();
    assert_eq!(o.points, 150, "gold's price");
    let (o, _) = order(&store, &program, "p1", "plain", "bag", now)
        .await
        .unwrap();
    assert_eq!(o.points, 200);
    assert_eq!(
        order(&store, &program, "p2", "plain", "lounge", now)
            .await
            .unwrap_err(),
        "item_not_for_tier"
    );
    assert!(
        order(&store, &program, "g2", "golden", "lounge", now)
            .await
            .is_ok()
    );
    assert_eq!(
        order(&store, &program, "p3", "plain", "xmas", now)
            .await
            .unwrap_err(),
        "item_not_yet_available"
    );
    assert_eq!(
        order(
            &store,
            &program,
            "p4",
            "plain",
            "xmas",
            utc("2026-12-27T00:00:00Z")
        )
        .await
        .unwrap_err(),
        "item_no_longer_available"
    );
    assert_eq!(
        order(&store, &program, "p5", "plain", "old", now)
            .await
            .unwrap_err(),
        "item_inactive"
    );
    assert_eq!(
        order(&store, &program, "p6", "plain", "nothing", now)
            .await
            .unwrap_err(),
        "unknown_item"
    );
    // The ledger refuses: the order is rejected, its stock given back, nothing spent.
    assert_eq!(stock(&store, &program, "bag").await, Some(8));
    assert_eq!(
        order(&store, &program, "p7", "plain", "bag", now)
            .await
            .unwrap_err(),
        "insufficient_points"
    );
    assert_eq!(stock(&store, &program, "bag").await, Some(8));
    let rejected = store.order(&program, "p7").await.unwrap().unwrap();
    assert_eq!(rejected.status, OrderStatus::Rejected);
    assert!(rejected.reason.unwrap().contains("spendable"));
    assert_eq!(points(&store, &program, "plain", now).await.available, 100);
    // A member's orders, newest first; the program's by status.
    let plain = store.require_member(&program, "plain").await.unwrap();
    let mine = store
        .orders(&program, Some(plain.id), None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(),
        ["p7", "p1"]
    );
    let placed = store
        .orders(&program, None, Some(OrderStatus::Placed), None, 10)
        .await
        .unwrap();
    assert_eq!(placed.len(), 3);
    // A bad item is refused with every problem named, nothing stored.
    let bad = store
        .put_catalog_item(
            &program,
            &item(json!({"code": "x", "name": "X", "currency": "status", "points": 0})),
            Some(-1),
            now,
            &agent(),
        )
        .await
        .unwrap_err();
    match bad {
        StoreError::Refused("invalid_item", detail) => {
            assert!(
                detail.contains("currency:")
                    && detail.contains("points:")
                    && detail.contains("stock:"),
                "{detail}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(store.catalog_item(&program, "x").await.unwrap().is_none());
    assert_eq!(store.catalog(&program, false).await.unwrap().len(), 3);
    assert_eq!(store.catalog(&program, true).await.unwrap().len(), 4);
}
