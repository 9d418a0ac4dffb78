//! Fraud rules through the store, on SQLite and a throw-away PostgreSQL: each rule holds
//! the journal it should and not the one beside it; a released journal earns exactly what
//! it would have (points that expired meanwhile included), a rejected one nothing; two
//! agents releasing at once release once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{Actor, Decided, LoadedProgram, Prepared, Store, StoreError};
use serde_json::{Value, json};

fidelis_testkit::store_tests!(
    each_rule_holds_what_it_should_and_nothing_else,
    a_released_journal_earns_what_it_would_have_and_a_rejected_one_nothing,
    concurrent_releases_process_once,
    unscreened_journals_are_not_held,
    held_redemptions_and_transfers_reserve_their_points_until_decided,
);

mod common;
use common::utc;

fn definition(rules: Value) -> Value {
    json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                        "expiry": {"policy": "rolling", "days": 30},
                        "transfer": {"daily_limit": 100000}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "promotions": [{"code": "big", "name": "Big baskets", "status": "active",
                        "condition": "journal.amount >= 100.0",
                        "actions": [{"type": "fixed", "currency": "points", "points": 50}]}],
        "fraud": {"rules": rules}
    })
}

fn all_rules() -> Value {
    json!([
        {"rule": "velocity", "journals": "accruals", "max": 3, "within_minutes": 60},
        {"rule": "velocity", "journals": "redemptions", "max": 2, "within_minutes": 60},
        {"rule": "unusual_amount", "score": 5, "history": 5},
        {"rule": "shared_receipt", "attribute": "receipt"},
        {"rule": "redemption_after_change", "within_hours": 24},
        {"rule": "transfer_ring", "length": 3, "within_days": 30}
    ])
}

async fn setup(store: &Store, rules: Value, members: &[&str]) -> Arc<LoadedProgram> {
    // Enrolled 1 January 2026 (`program_with_members`): long before the journals below.
    common::program_with_members(store, definition(rules), members).await
}

fn prepared(program: &LoadedProgram, doc: Value) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    Prepared::new(journal, &program.program).unwrap()
}

/// Posts as the API does (screened); the outcome's status: `processed` or `held`.
async fn post(
    store: &Store,
    program: &Arc<LoadedProgram>,
    doc: Value,
    now: DateTime<Utc>,
) -> fidelis_store::Posted {
    store
        .post_realtime(program, prepared(program, doc).screened(), now)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("refused: {e}"))
}

fn purchase(id: &str, member: &str, amount: &str, at: DateTime<Utc>) -> Value {
    json!({"external_id": id, "member": member, "type": "purchase",
           "occurred_at": at.to_rfc3339(), "amount": amount, "currency": "EUR"})
}

fn status(p: &fidelis_store::Posted) -> String {
    if p.outcome.status.is_empty() {
        "processed".into()
    } else {
        p.outcome.status.to_string()
    }
}

fn rule(p: &fidelis_store::Posted) -> String {
    p.outcome
        .hold
        .as_ref()
        .map(|h| h.rule.clone())
        .unwrap_or_default()
}

async fn available(store: &Store, program: &LoadedProgram, member: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store
        .balances(program, &m, utc("2026-06-02T00:00:00Z"))
        .await
        .unwrap()[0]
        .available
}

async fn each_rule_holds_what_it_should_and_nothing_else(store: Store) {
    let program = setup(
        &store,
        all_rules(),
        &["fast", "steady", "usual", "a", "b", "x", "y", "z", "moved"],
    )
    .await;
    let t = utc("2026-06-01T10:00:00Z");

    // Velocity: three purchases within the hour pass, the fourth is held; three spread
    // over the day are not.
    for i in 0..3 {
        let p = post(
            &store,
            &program,
            purchase(&format!("f{i}"), "fast", "10", t + Duration::minutes(i)),
            t + Duration::minutes(i),
        )
        .await;
        assert_eq!(status(&p), "processed");
    }
    let held = post(
        &store,
        &program,
        purchase("f3", "fast", "10", t + Duration::minutes(5)),
        t + Duration::minutes(5),
    )
    .await;
    assert_eq!(
        (status(&held), rule(&held)),
        ("held".into(), "velocity".into())
    );
    assert!(
        held.outcome.awards.is_empty(),
        "a held journal earns nothing"
    );
    assert_eq!(available(&store, &program, "fast").await, 30);
    for i in 0..4 {
        let at = t + Duration::minutes(50 * i);
        let p = post(
            &store,
            &program,
            purchase(&format!("s{i}"), "steady", "10", at),
            at,
        )
        .await;
        assert_eq!(status(&p), "processed", "steady {i}");
    }

    // An amount far above the member's own: held after the usual ones, not a modest rise.
    for i in 0..5 {
        let at = t + Duration::days(i + 1);
        let amount = ["18.00", "22.00", "20.00", "25.00", "19.00"][i as usize];
        let p = post(
            &store,
            &program,
            purchase(&format!("u{i}"), "usual", amount, at),
            at,
        )
        .await;
        assert_eq!(status(&p), "processed");
    }
    let at = t + Duration::days(8);
    let p = post(&store, &program, purchase("u5", "usual", "45.00", at), at).await;
    assert_eq!(status(&p), "processed", "twice the usual is not unusual");
    let p = post(
        &store,
        &program,
        purchase("u6", "usual", "2500.00", at + Duration::hours(2)),
        at + Duration::hours(2),
    )
    .await;
    assert_eq!(
        (status(&p), rule(&p)),
        ("held".into(), "unusual_amount".into())
    );
    assert!(
        p.outcome
            .hold
            .as_ref()
            .unwrap()
            .reason
            .contains("times the member's median")
    );

    // The same receipt for a second member: held; the same member again is not (that is a
    // duplicate purchase, not a shared receipt).
    let with_receipt = |id: &str, member: &str, receipt: &str| {
        let mut doc = purchase(id, member, "15", t);
        doc["attributes"] = json!({"receipt": receipt});
        doc
    };
    assert_eq!(
        status(&post(&store, &program, with_receipt("r1", "a", "R-1"), t).await),
        "processed"
    );
    assert_eq!(
        status(&post(&store, &program, with_receipt("r2", "a", "R-1"), t).await),
        "processed"
    );
    let p = post(&store, &program, with_receipt("r3", "b", "R-1"), t).await;
    assert_eq!(
        (status(&p), rule(&p)),
        ("held".into(), "shared_receipt".into())
    );
    assert!(p.outcome.hold.as_ref().unwrap().reason.contains("member a"));
    assert_eq!(
        status(&post(&store, &program, with_receipt("r4", "b", "R-2"), t).await),
        "processed"
    );

    // Redemptions: right after enrolment, held; a member enrolled long ago redeems; the
    // third redemption within the hour is held by velocity.
    store
        .enroll(
            &program,
            &fidelis_store::Enrollment {
                external_id: fidelis_core::ids::ExternalId::parse("fresh").unwrap(),
                profile: json!({}),
                enrolled_at: t,
            },
            t,
        )
        .await
        .unwrap();
    let adjust = |id: &str, member: &str| {
        json!({"external_id": id, "member": member, "type": "adjustment", "occurred_at": t.to_rfc3339(),
               "currency": "points", "points": 500, "reason": "goodwill"})
    };
    assert_eq!(
        status(&post(&store, &program, adjust("g1", "fresh"), t).await),
        "processed"
    );
    assert_eq!(
        status(&post(&store, &program, adjust("g2", "steady"), t).await),
        "processed"
    );
    let redeem = |id: &str, member: &str, at: DateTime<Utc>| {
        json!({"external_id": id, "member": member, "type": "redemption", "occurred_at": at.to_rfc3339(),
               "currency": "points", "points": 10})
    };
    let later = t + Duration::hours(3);
    let p = post(&store, &program, redeem("d1", "fresh", later), later).await;
    assert_eq!(
        (status(&p), rule(&p)),
        ("held".into(), "redemption_after_change".into())
    );
    let next_day = t + Duration::hours(30);
    assert_eq!(
        status(&post(&store, &program, redeem("d2", "fresh", next_day), next_day).await),
        "processed"
    );
    // … and right after a profile change (an e-mail changed, then points spent).
    store
        .update_profile(
            &program,
            "moved",
            &json!({"email": "new@example.net"}),
            t,
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(
        status(&post(&store, &program, adjust("g3", "moved"), t).await),
        "processed"
    );
    let p = post(&store, &program, redeem("d3", "moved", later), later).await;
    assert_eq!(
        (status(&p), rule(&p)),
        ("held".into(), "redemption_after_change".into())
    );
    assert!(
        p.outcome
            .hold
            .as_ref()
            .unwrap()
            .reason
            .contains("after a profile change")
    );
    assert_eq!(
        status(&post(&store, &program, redeem("d4", "moved", next_day), next_day).await),
        "processed"
    );
    for i in 0..2 {
        let at = later + Duration::minutes(i);
        assert_eq!(
            status(&post(&store, &program, redeem(&format!("e{i}"), "steady", at), at).await),
            "processed"
        );
    }
    let at = later + Duration::minutes(3);
    let p = post(&store, &program, redeem("e2", "steady", at), at).await;
    assert_eq!((status(&p), rule(&p)), ("held".into(), "velocity".into()));

    // Transfers: x → y → z pass; z → x closes a ring of three and is held (nothing moves);
    // z → a does not.
    for who in ["x", "y", "z"] {
        post(&store, &program, adjust(&format!("g-{who}"), who), t).await;
    }
    let id = |s: &str| fidelis_core::ids::ExternalId::parse(s).unwrap();
    for (from, to, tid) in [("x", "y", "t1"), ("y", "z", "t2")] {
        let (o, _) = store
            .transfer_screened(&program, from, to, "points", 20, &id(tid), t)
            .await
            .unwrap();
        assert_ne!(o.status, "held");
    }
    let before = available(&store, &program, "z").await;
    let (o, replayed) = store
        .transfer_screened(&program, "z", "x", "points", 20, &id("t3"), t)
        .await
        .unwrap();
    assert_eq!((o.status.as_ref(), replayed), ("held", false));
    let reason = &o.hold.as_ref().unwrap().reason;
    assert!(reason.contains("z → x → y → z"), "{reason}");
    assert_eq!(
        available(&store, &program, "z").await,
        before - 20,
        "nothing moved, the 20 points are reserved"
    );
    // Its retry answers the hold; the same id for another transfer is a conflict.
    let (o, replayed) = store
        .transfer_screened(&program, "z", "x", "points", 20, &id("t3"), t)
        .await
        .unwrap();
    assert_eq!((o.status.as_ref(), replayed), ("held", true));
    assert!(
        store
            .transfer_screened(&program, "z", "x", "points", 21, &id("t3"), t)
            .await
            .is_err()
    );
    let (o, _) = store
        .transfer_screened(&program, "z", "a", "points", 20, &id("t4"), t)
        .await
        .unwrap();
    assert_ne!(o.status, "held");

    // A held journal's retry answers the hold again; another document under its id is a
    // conflict. The queue lists every hold, with its reason.
    let again = post(
        &store,
        &program,
        purchase("f3", "fast", "10", t + Duration::minutes(5)),
        t + Duration::minutes(6),
    )
    .await;
    assert!(again.replayed);
    assert_eq!(status(&again), "held");
    let conflict = store
        .post_realtime(
            &program,
            prepared(&program, purchase("f3", "fast", "11", t)).screened(),
            t,
        )
        .await
        .unwrap();
    assert_eq!(conflict.unwrap_err().code(), "idempotency_conflict");
    let queue = store
        .held_journals(&program, Some("held"), 100)
        .await
        .unwrap();
    let mut rules: Vec<&str> = queue.iter().map(|h| h.rule.as_str()).collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "redemption_after_change",
            "redemption_after_change",
            "shared_receipt",
            "transfer_ring",
            "unusual_amount",
            "velocity",
            "velocity"
        ]
    );
    assert!(queue.iter().all(|h| !h.reason.is_empty()));
}

async fn a_released_journal_earns_what_it_would_have_and_a_rejected_one_nothing(store: Store) {
    let rules =
        json!([{"rule": "velocity", "journals": "accruals", "max": 1, "within_minutes": 60}]);
    let program = setup(&store, rules, &["held", "twin", "late", "other"]).await;
    let agent = Actor {
        name: "agent@example.com".into(),
        role: "agent".into(),
    };
    let t = utc("2026-06-01T10:00:00Z");

    // The second purchase within the hour is held; its twin, alone, earns at once.
    post(&store, &program, purchase("h0", "held", "10", t), t).await;
    let basket = |id: &str, member: &str| purchase(id, member, "120.00", t + Duration::minutes(1));
    let held = post(
        &store,
        &program,
        basket("h1", "held"),
        t + Duration::minutes(1),
    )
    .await;
    assert_eq!(status(&held), "held");
    let twin = post(
        &store,
        &program,
        basket("w1", "twin"),
        t + Duration::minutes(1),
    )
    .await;
    assert_eq!(status(&twin), "processed");
    assert_eq!(available(&store, &program, "held").await, 10);

    // Released a week later: processed as of its activity, earning what the twin earned.
    let week = t + Duration::days(7);
    let Decided::Released(row, outcome) = store
        .release_held(&program, "h1", &agent, week)
        .await
        .unwrap()
    else {
        panic!("released");
    };
    assert_eq!(row.status, "released");
    assert_eq!(row.decided_by.as_deref(), Some("agent@example.com"));
    assert_eq!(
        outcome.awards, twin.outcome.awards,
        "the same awards as its twin"
    );
    assert_eq!(available(&store, &program, "held").await, 10 + 170);
    let journal = store
        .journal(&program, "h1")
        .await
        .unwrap()
        .expect("the journal exists now");
    assert_eq!(journal.occurred_at, t + Duration::minutes(1));
    // Deciding again is refused; the retry of the journal answers its processed outcome.
    let again = store
        .release_held(&program, "h1", &agent, week)
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::Refused("already_decided", _)),
        "{again:?}"
    );
    let retry = post(&store, &program, basket("h1", "held"), week).await;
    assert!(retry.replayed);
    assert_eq!(retry.outcome.awards, twin.outcome.awards);

    // Held, and released after its points would have expired (30 days): credited and
    // expired at once, as they would have been — nothing spendable, the expiry recorded.
    post(&store, &program, purchase("l0", "late", "10", t), t).await;
    let p = post(
        &store,
        &program,
        purchase("l1", "late", "40.00", t + Duration::minutes(2)),
        t + Duration::minutes(2),
    )
    .await;
    assert_eq!(status(&p), "held");
    let after_expiry = t + Duration::days(45);
    let Decided::Released(_, outcome) = store
        .release_held(&program, "l1", &agent, after_expiry)
        .await
        .unwrap()
    else {
        panic!("released");
    };
    assert_eq!(outcome.awards.iter().map(|a| a.points).sum::<i64>(), 40);
    let expired: i64 = outcome.expired.iter().map(|e| e.points).sum();
    assert_eq!(expired, 50, "its 40 points and l0's 10 expired by then");
    assert_eq!(available(&store, &program, "late").await, 0);

    // Rejected: never earns; its retry answers `rejected`; releasing it is refused.
    post(&store, &program, purchase("o0", "other", "10", t), t).await;
    let p = post(
        &store,
        &program,
        purchase("o1", "other", "60", t + Duration::minutes(3)),
        t + Duration::minutes(3),
    )
    .await;
    assert_eq!(status(&p), "held");
    let Decided::Rejected(row) = store
        .reject_held(&program, "o1", Some("card reported stolen"), &agent, week)
        .await
        .unwrap()
    else {
        panic!("rejected");
    };
    assert_eq!(
        (row.status.as_str(), row.note.as_deref()),
        ("rejected", Some("card reported stolen"))
    );
    assert_eq!(available(&store, &program, "other").await, 10);
    let retry = post(
        &store,
        &program,
        purchase("o1", "other", "60", t + Duration::minutes(3)),
        week,
    )
    .await;
    assert_eq!((status(&retry), retry.replayed), ("rejected".into(), true));
    assert!(
        store
            .release_held(&program, "o1", &agent, week)
            .await
            .is_err()
    );
    assert!(store.journal(&program, "o1").await.unwrap().is_none());
    // Both decisions are audited.
    let audit = store
        .audit(&fidelis_store::AuditFilter {
            program: Some("shop".into()),
            actor: None,
            action: None,
            subject: None,
            before_id: None,
            limit: 100,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(_, e)| e.action.as_str()).collect();
    assert!(
        actions.contains(&"journal.release") && actions.contains(&"journal.reject"),
        "{actions:?}"
    );
}

async fn concurrent_releases_process_once(store: Store) {
    let rules =
        json!([{"rule": "velocity", "journals": "accruals", "max": 1, "within_minutes": 60}]);
    let program = setup(&store, rules, &["m"]).await;
    let t = utc("2026-06-01T10:00:00Z");
    post(&store, &program, purchase("p0", "m", "10", t), t).await;
    let p = post(&store, &program, purchase("p1", "m", "30", t), t).await;
    assert_eq!(status(&p), "held");
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, program) = (Arc::clone(&store), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            let agent = Actor {
                name: format!("agent{i}"),
                role: "agent".into(),
            };
            store
                .release_held(&program, "p1", &agent, t + Duration::hours(1))
                .await
        }));
    }
    let mut released = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Decided::Released(..)) => released += 1,
            Err(StoreError::Refused("already_decided", _)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(released, 1, "released once");
    assert_eq!(available(&store, &program, "m").await, 40);
}

async fn unscreened_journals_are_not_held(store: Store) {
    // Imports and the store's own journals are not screened, whatever the rules.
    let rules =
        json!([{"rule": "velocity", "journals": "accruals", "max": 1, "within_minutes": 60}]);
    let program = setup(&store, rules, &["m"]).await;
    let t = utc("2026-06-01T10:00:00Z");
    let batch: Vec<Prepared> = (0..5)
        .map(|i| prepared(&program, purchase(&format!("i{i}"), "m", "10", t)))
        .collect();
    let results = store
        .post_journals(&program, &batch, t, None)
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(p) if p.outcome.status != "held"))
    );
    assert_eq!(available(&store, &program, "m").await, 50);
    assert!(
        store
            .held_journals(&program, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn available_at(
    store: &Store,
    program: &LoadedProgram,
    member: &str,
    at: DateTime<Utc>,
) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store.balances(program, &m, at).await.unwrap()[0].available
}

async fn held_redemptions_and_transfers_reserve_their_points_until_decided(store: Store) {
    let rules = json!([
        {"rule": "velocity", "journals": "redemptions", "max": 1, "within_minutes": 60},
        {"rule": "transfer_ring", "length": 2, "within_days": 30}
    ]);
    let program = setup(&store, rules, &["r", "s", "a", "b"]).await;
    let agent = Actor {
        name: "agent@example.com".into(),
        role: "agent".into(),
    };
    let t = utc("2026-06-01T10:00:00Z");
    let redeem = |id: &str, member: &str, points: i64, at: DateTime<Utc>| {
        json!({"external_id": id, "member": member, "type": "redemption",
               "occurred_at": at.to_rfc3339(), "currency": "points", "points": points})
    };
    for m in ["r", "s", "a", "b"] {
        post(
            &store,
            &program,
            purchase(&format!("p-{m}"), m, "99.00", t),
            t,
        )
        .await;
        let first = post(&store, &program, redeem(&format!("first-{m}"), m, 9, t), t).await;
        assert_eq!(status(&first), "processed");
    }
    let soon = t + Duration::minutes(5);

    // Held: its 70 points are reserved at once, so the member cannot spend them twice;
    // the answer shows what is left.
    let held = post(&store, &program, redeem("r1", "r", 70, soon), soon).await;
    assert_eq!(
        (status(&held), rule(&held)),
        ("held".into(), "velocity".into())
    );
    assert_eq!(held.outcome.balances[0].available, 20);
    assert_eq!(available_at(&store, &program, "r", soon).await, 20);
    let hold = store
        .hold(&program, "review:r1", soon)
        .await
        .unwrap()
        .expect("a reservation");
    assert_eq!((hold.points, hold.status), (70, "held"));
    // A redemption whose points are not there is refused as it would be, not held.
    let refused = store
        .post_realtime(
            &program,
            prepared(&program, redeem("r2", "r", 30, soon)).screened(),
            soon,
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), "insufficient_points");
    let queue = store.held_journals(&program, None, 10).await.unwrap();
    assert_eq!(
        queue
            .iter()
            .map(|h| h.external_id.as_str())
            .collect::<Vec<_>>(),
        ["r1"]
    );
    // No client can end the review's reservation itself.
    let doc: JournalDocument = serde_json::from_value(json!({"external_id": "capture:review:r1",
        "member": "r", "type": "capture", "occurred_at": soon.to_rfc3339()}))
    .unwrap();
    assert!(Journal::parse(&doc, &program.program).is_err());

    // Released 45 days later, when the 20 points left have expired (30 days): the
    // reserved 70 are spent, exactly, and the balance is what it would have been.
    let late = t + Duration::days(45);
    let Decided::Released(_, outcome) = store
        .release_held(&program, "r1", &agent, late)
        .await
        .unwrap()
    else {
        panic!("released");
    };
    assert_eq!(outcome.debited.iter().map(|d| d.points).sum::<i64>(), 70);
    assert_eq!(available_at(&store, &program, "r", late).await, 0);
    let journal = store
        .journal(&program, "r1")
        .await
        .unwrap()
        .expect("r1 is a journal now");
    assert_eq!(journal.occurred_at, soon);
    let hold = store
        .hold(&program, "review:r1", late)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.status, "captured");
    let retry = post(&store, &program, redeem("r1", "r", 70, soon), late).await;
    assert!(retry.replayed);

    // Rejected, for a member suspended meanwhile: the reserved points go back.
    let held = post(&store, &program, redeem("s1", "s", 50, soon), soon).await;
    assert_eq!(status(&held), "held");
    assert_eq!(available_at(&store, &program, "s", soon).await, 40);
    store
        .set_member_status(
            &program,
            "s",
            fidelis_core::ledger::MemberStatus::Suspended,
            soon,
            &agent,
        )
        .await
        .unwrap();
    let week = t + Duration::days(7);
    let Decided::Rejected(_) = store
        .reject_held(&program, "s1", Some("account takeover"), &agent, week)
        .await
        .unwrap()
    else {
        panic!("rejected");
    };
    assert_eq!(available_at(&store, &program, "s", week).await, 90);
    assert!(store.journal(&program, "s1").await.unwrap().is_none());
    assert_eq!(
        store
            .hold(&program, "review:s1", week)
            .await
            .unwrap()
            .unwrap()
            .status,
        "released"
    );

    // A transfer closing a ring: held with the sender's points reserved; rejected, they
    // come back; the next one released, the receiver gets them.
    let id = |s: &str| fidelis_core::ids::ExternalId::parse(s).unwrap();
    let (o, _) = store
        .transfer_screened(&program, "a", "b", "points", 20, &id("t1"), soon)
        .await
        .unwrap();
    assert_ne!(o.status, "held");
    let (o, _) = store
        .transfer_screened(&program, "b", "a", "points", 30, &id("t2"), soon)
        .await
        .unwrap();
    assert_eq!(o.status, "held");
    assert_eq!(
        available_at(&store, &program, "b", soon).await,
        90 + 20 - 30
    );
    // More than is left is refused, not held.
    assert!(
        store
            .transfer_screened(&program, "b", "a", "points", 81, &id("t3"), soon)
            .await
            .is_err()
    );
    store
        .reject_held(&program, "t2", None, &agent, week)
        .await
        .unwrap();
    assert_eq!(available_at(&store, &program, "b", week).await, 110);
    let (o, _) = store
        .transfer_screened(&program, "b", "a", "points", 40, &id("t4"), week)
        .await
        .unwrap();
    assert_eq!(o.status, "held");
    assert_eq!(available_at(&store, &program, "b", week).await, 70);
    store
        .release_held(&program, "t4", &agent, week)
        .await
        .unwrap();
    assert_eq!(available_at(&store, &program, "b", week).await, 70);
    assert_eq!(
        available_at(&store, &program, "a", week).await,
        90 - 20 + 40
    );
}
