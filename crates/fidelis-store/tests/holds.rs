//! Pay with points through the store, on SQLite and a throw-away PostgreSQL: holds,
//! captures, releases and the jobs that release expired holds — and the races between
//! them and redemptions.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{LoadedProgram, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(
    a_hold_is_captured_released_or_expired_once,
    holds_and_redemptions_racing_never_take_more_than_the_balance,
    one_order_holds_and_captures_once_under_concurrency,
);

mod common;
use common::utc;

async fn setup(store: &Store, members: &[&str]) -> Arc<LoadedProgram> {
    common::program_with_members(
        store,
        json!({
            "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "rolling", "months": 24}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]}
        }),
        members,
    )
    .await
}

fn journal(program: &LoadedProgram, doc: serde_json::Value) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    Prepared::new(journal, &program.program).unwrap()
}

async fn post(
    store: &Store,
    program: &Arc<LoadedProgram>,
    doc: serde_json::Value,
    now: DateTime<Utc>,
) -> fidelis_store::JournalResult {
    store
        .post_realtime(program, journal(program, doc), now)
        .await
        .unwrap()
}

fn hold(member: &str, order: &str, points: i64, at: DateTime<Utc>, ttl: i64) -> serde_json::Value {
    json!({"external_id": format!("hold:{order}"), "member": member, "type": "hold",
           "occurred_at": at.to_rfc3339(), "currency": "points", "points": points,
           "expires_at": (at + Duration::seconds(ttl)).to_rfc3339()})
}

fn end(member: &str, how: &str, order: &str, at: DateTime<Utc>) -> serde_json::Value {
    json!({"external_id": format!("{how}:{order}"), "member": member, "type": how,
           "occurred_at": at.to_rfc3339()})
}

async fn available(store: &Store, program: &LoadedProgram, member: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store
        .balances(program, &m, utc("2026-06-01T00:00:00Z"))
        .await
        .unwrap()[0]
        .available
}

/// Points held, as the member's balances show them (checked against the open holds).
async fn held(store: &Store, program: &LoadedProgram, member: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    let open: i64 = store
        .held_points(m.id)
        .await
        .unwrap()
        .iter()
        .map(|(_, p)| p)
        .sum();
    let shown: i64 = store
        .balances(program, &m, utc("2026-06-01T00:00:00Z"))
        .await
        .unwrap()
        .iter()
        .map(|b| b.held)
        .sum();
    assert_eq!(shown, open, "the balances show the points held");
    shown
}

/// Points in the member's ledger by entry kind (negative for what left the balance).
async fn by_kind(store: &Store, program: &LoadedProgram, member: &str, kind: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store
        .ledger(&m, None, 1_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.amount)
        .sum()
}

async fn a_hold_is_captured_released_or_expired_once(store: Store) {
    let program = setup(&store, &["m", "n"]).await;
    let t = utc("2026-05-01T10:00:00Z");
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": t.to_rfc3339(), "amount": "100", "currency": "EUR"}), t).await.unwrap();
    // Held: out of the available balance, readable as a hold.
    post(&store, &program, hold("m", "A", 60, t, 900), t)
        .await
        .unwrap();
    assert_eq!(available(&store, &program, "m").await, 40);
    assert_eq!(held(&store, &program, "m").await, 60);
    let a = store.hold(&program, "A", t).await.unwrap().unwrap();
    assert_eq!((a.member.as_str(), a.points, a.status), ("m", 60, "held"));
    assert_eq!(a.expires_at, t + Duration::seconds(900));
    // Captured: spent, nothing held, the balance as it was.
    let at = t + Duration::seconds(60);
    post(&store, &program, end("m", "capture", "A", at), at)
        .await
        .unwrap();
    assert_eq!(
        store.hold(&program, "A", at).await.unwrap().unwrap().status,
        "captured"
    );
    assert_eq!(held(&store, &program, "m").await, 0);
    assert_eq!(available(&store, &program, "m").await, 40);
    assert_eq!(by_kind(&store, &program, "m", "redeem").await, -60);
    let refused = post(&store, &program, end("m", "release", "A", at), at)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "hold_captured");

    // Past its end, a hold is not captured; the jobs release it, once.
    post(&store, &program, hold("m", "B", 30, t, 600), t)
        .await
        .unwrap();
    post(&store, &program, hold("m", "C", 10, t, 3_600), t)
        .await
        .unwrap();
    let late = t + Duration::seconds(600);
    assert_eq!(
        store
            .hold(&program, "B", late)
            .await
            .unwrap()
            .unwrap()
            .status,
        "expired"
    );
    let refused = post(&store, &program, end("m", "capture", "B", late), late)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "hold_expired");
    let report = store.run_jobs(&program, late).await.unwrap();
    assert_eq!(report.holds_released, 1, "B only: C is still open");
    assert_eq!(
        store.run_jobs(&program, late).await.unwrap().holds_released,
        0
    );
    assert_eq!(
        store
            .hold(&program, "B", late)
            .await
            .unwrap()
            .unwrap()
            .status,
        "released"
    );
    assert_eq!(
        store
            .hold(&program, "C", late)
            .await
            .unwrap()
            .unwrap()
            .status,
        "held"
    );
    assert_eq!(available(&store, &program, "m").await, 30);
    assert_eq!(held(&store, &program, "m").await, 10);
    // The client's own release after the jobs': the same step (`release:B`), so it
    // answers the release done, and nothing moves.
    let again = post(&store, &program, end("m", "release", "B", late), late)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(available(&store, &program, "m").await, 30);
    // Held + available + spent = earned.
    assert_eq!(
        held(&store, &program, "m").await + available(&store, &program, "m").await
            - by_kind(&store, &program, "m", "redeem").await,
        100
    );
    assert!(store.hold(&program, "none", late).await.unwrap().is_none());
    // A member holding points is not merged (the hold would stay on the closed record);
    // once the hold ends, it is.
    let refused = store
        .merge_members(&program, "m", "n", late, &fidelis_store::Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            fidelis_store::StoreError::Refused("member_has_holds", _)
        ),
        "{refused:?}"
    );
    post(&store, &program, end("m", "release", "C", late), late)
        .await
        .unwrap();
    store
        .merge_members(&program, "m", "n", late, &fidelis_store::Actor::cli())
        .await
        .expect("merged once nothing is held");
}

async fn holds_and_redemptions_racing_never_take_more_than_the_balance(store: Store) {
    let program = setup(&store, &["m"]).await;
    let t = utc("2026-05-01T10:00:00Z");
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": t.to_rfc3339(), "amount": "1000", "currency": "EUR"}), t).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            let doc = if i % 2 == 0 {
                hold("m", &format!("o{i}"), 100, t, 900)
            } else {
                json!({"external_id": format!("r{i}"), "member": "m", "type": "redemption",
                       "occurred_at": t.to_rfc3339(), "currency": "points", "points": 100})
            };
            post(&store, &program, doc, t).await
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(e) => assert_eq!(e.code(), "insufficient_points"),
        }
    }
    assert_eq!(succeeded, 10, "a thousand points cover ten of them");
    assert_eq!(available(&store, &program, "m").await, 0);
    assert_eq!(
        held(&store, &program, "m").await - by_kind(&store, &program, "m", "redeem").await,
        1_000,
        "held + spent = earned"
    );
}

async fn one_order_holds_and_captures_once_under_concurrency(store: Store) {
    let program = setup(&store, &["m"]).await;
    let t = utc("2026-05-01T10:00:00Z");
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": t.to_rfc3339(), "amount": "500", "currency": "EUR"}), t).await.unwrap();
    let race = |doc: serde_json::Value| {
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (store, program, doc) = (store.clone(), Arc::clone(&program), doc.clone());
            tasks.push(tokio::spawn(
                async move { post(&store, &program, doc, t).await },
            ));
        }
        tasks
    };
    let mut applied = 0;
    for task in race(hold("m", "X", 200, t, 900)) {
        if !task.await.unwrap().unwrap().replayed {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "the order held once");
    assert_eq!(available(&store, &program, "m").await, 300);
    let mut applied = 0;
    for task in race(end("m", "capture", "X", t)) {
        if !task.await.unwrap().unwrap().replayed {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "the order captured once");
    assert_eq!(by_kind(&store, &program, "m", "redeem").await, -200);
    assert_eq!(available(&store, &program, "m").await, 300);
    assert_eq!(held(&store, &program, "m").await, 0);
}
