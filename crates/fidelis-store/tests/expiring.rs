//! Points about to expire are announced once, on both databases: the jobs write one
//! `points.expiring` event per member, currency and expiry instant within 30 days, never
//! again for the same expiry however often they run, and not for points already spent.

use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{LoadedProgram, Prepared, Store};
use serde_json::json;

mod common;
use common::utc;

fidelis_testkit::store_tests!(expiries_within_thirty_days_are_announced_once);

async fn post(store: &Store, program: &std::sync::Arc<LoadedProgram>, doc: serde_json::Value) {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap();
    let now = journal.occurred_at;
    store
        .post_realtime(
            program,
            Prepared::new(journal, &program.program).unwrap(),
            now,
        )
        .await
        .unwrap()
        .unwrap();
}

async fn expiring(store: &Store, program: &LoadedProgram) -> Vec<serde_json::Value> {
    store
        .events(program, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "points.expiring")
        .map(|e| e.payload)
        .collect()
}

async fn expiries_within_thirty_days_are_announced_once(store: Store) {
    let program = common::program_with_members(
        &store,
        json!({
            "code": "shop", "name": "Shop", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "rolling", "days": 60}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]}
        }),
        &["ann", "bo"],
    )
    .await;
    // Ann earns 100 on 1 February (expiring 2 April); Bo earns 40 and spends them all.
    for (id, member, amount) in [("a-1", "ann", "100"), ("b-1", "bo", "40")] {
        post(
            &store,
            &program,
            json!({"external_id": id, "member": member, "type": "purchase",
            "occurred_at": "2026-02-01T10:00:00Z", "amount": amount, "currency": "EUR"}),
        )
        .await;
    }
    post(
        &store,
        &program,
        json!({"external_id": "b-2", "member": "bo", "type": "redemption",
        "occurred_at": "2026-02-02T10:00:00Z", "currency": "points", "points": 40}),
    )
    .await;

    // No webhook takes `points.earned`: the outbox holds none (the enrolments and the
    // redemption are there).
    let kinds: Vec<String> = store
        .events(&program, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(!kinds.iter().any(|k| k == "points.earned"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "points.redeemed"), "{kinds:?}");

    // Two months ahead of the expiry: nothing to say yet.
    let report = store
        .run_jobs(&program, utc("2026-02-20T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.expiring_announced, 0);
    assert!(expiring(&store, &program).await.is_empty());

    // Within 30 days of it: one event for Ann, none for Bo (nothing left to expire).
    let report = store
        .run_jobs(&program, utc("2026-03-10T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.expiring_announced, 1);
    let events = expiring(&store, &program).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["member"], "ann");
    assert_eq!(events[0]["points"], 100);
    assert_eq!(events[0]["currency"], "points");
    assert_eq!(
        events[0]["expires_at"].as_str().unwrap()[..10],
        *"2026-04-02"
    );

    // Running again, the same day or later, announces nothing twice.
    for day in ["2026-03-10T00:00:00Z", "2026-03-20T00:00:00Z"] {
        let report = store.run_jobs(&program, utc(day)).await.unwrap();
        assert_eq!(report.expiring_announced, 0, "{day}");
    }
    assert_eq!(expiring(&store, &program).await.len(), 1);

    // A new earning with its own expiry is announced when its time comes.
    post(
        &store,
        &program,
        json!({"external_id": "a-2", "member": "ann", "type": "purchase",
        "occurred_at": "2026-03-20T10:00:00Z", "amount": "7", "currency": "EUR"}),
    )
    .await;
    let report = store
        .run_jobs(&program, utc("2026-04-25T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.expiring_announced, 1);
    let events = expiring(&store, &program).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["points"], 7, "{events:?}");
}
