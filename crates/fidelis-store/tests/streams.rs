//! The outbox's side of streams and leases, on SQLite and a throw-away PostgreSQL: a lease
//! has one holder until it runs out; events wait for a stream only once one is registered,
//! and then every event does (`points.earned` included) until it is marked streamed.

use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{LoadedProgram, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(
    a_lease_has_one_holder_until_it_runs_out,
    events_wait_for_a_registered_stream_until_marked,
);

mod common;
use common::utc;

async fn a_lease_has_one_holder_until_it_runs_out(store: Store) {
    let t = |s: u32| utc(&format!("2026-06-01T10:00:{s:02}Z"));
    assert!(
        store
            .take_lease("events:X", "a", t(0), t(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("events:X", "b", t(10), t(40))
            .await
            .unwrap(),
        "held by a"
    );
    // Another lease is another name.
    assert!(store.take_lease("jobs", "b", t(10), t(40)).await.unwrap());
    // The holder renews it; the other still waits.
    assert!(
        store
            .take_lease("events:X", "a", t(20), t(50))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("events:X", "b", t(40), t(59))
            .await
            .unwrap()
    );
    // Run out (a stopped renewing): b takes it, and a no longer holds it.
    assert!(
        store
            .take_lease("events:X", "b", t(50), t(59))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("events:X", "a", t(51), t(59))
            .await
            .unwrap()
    );
}

fn purchase(program: &LoadedProgram, id: &str, member: &str) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": member, "type": "purchase",
        "occurred_at": "2026-06-01T09:00:00Z", "amount": "10", "currency": "EUR"
    }))
    .unwrap();
    Prepared::new(
        Journal::parse(&doc, &program.program).unwrap(),
        &program.program,
    )
    .unwrap()
}

async fn events_wait_for_a_registered_stream_until_marked(store: Store) {
    let now = utc("2026-06-01T10:00:00Z");
    let program = common::program_with_members(
        &store,
        json!({"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
               "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
               "earning": {"base": [{"currency": "points", "rate": "1"}]}}),
        &["m1"],
    )
    .await;
    // No stream: the dispatch leaves nothing waiting, and no `points.earned` is written
    // (nobody takes it).
    store
        .post_realtime(&program, purchase(&program, "j1", "m1"), now)
        .await
        .unwrap()
        .expect("the purchase is applied");
    store.dispatch_events(100, now).await.unwrap();
    assert!(store.unstreamed_events(100).await.unwrap().is_empty());
    let before = store.events(&program, None, 100).await.unwrap();
    assert_eq!(
        before.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["member.enrolled"]
    );

    // Registered (twice: idempotent): from now on every event waits, the dispatch
    // notwithstanding, in id order, with its member.
    store.register_stream("FIDELIS", now).await.unwrap();
    store.register_stream("FIDELIS", now).await.unwrap();
    store
        .post_realtime(&program, purchase(&program, "j2", "m1"), now)
        .await
        .unwrap()
        .expect("the purchase is applied");
    store.dispatch_events(100, now).await.unwrap();
    let waiting = store.unstreamed_events(100).await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].event.kind, "points.earned");
    assert_eq!(waiting[0].event.program, "shop");
    assert_eq!(waiting[0].event.payload["member"], "m1");
    assert!(waiting[0].member.is_some());
    let mut ids: Vec<i64> = Vec::new();
    for i in 3..6 {
        store
            .post_realtime(&program, purchase(&program, &format!("j{i}"), "m1"), now)
            .await
            .unwrap()
            .expect("the purchase is applied");
    }
    let waiting = store.unstreamed_events(2).await.unwrap();
    assert_eq!(waiting.len(), 2, "the limit");
    ids.extend(waiting.iter().map(|e| e.event.id));
    assert!(ids[0] < ids[1], "oldest first");
    store.mark_streamed(&ids).await.unwrap();
    store.mark_streamed(&ids).await.unwrap();
    let rest = store.unstreamed_events(100).await.unwrap();
    assert_eq!(rest.len(), 2, "four waited, two are marked");
    assert!(rest.iter().all(|e| e.event.id > ids[1]));
}
