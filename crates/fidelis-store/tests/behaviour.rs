//! The store's behaviour suite: every test runs against SQLite and against a throw-away
//! PostgreSQL server.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::book::Book;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument, JournalError};
use fidelis_core::ledger::MemberStatus;
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Enrollment, LoadedProgram, Prepared, Store, StoreError};
use serde_json::json;

fidelis_testkit::store_tests!(
    programs_round_trip_and_keep_currencies_in_use,
    members_enroll_once,
    purchases_earn_and_redemptions_spend,
    replays_answer_the_first_outcome_and_conflicts_change_nothing,
    refunds_and_cancellations_reverse_across_transactions,
    suspended_members_are_refused,
    jobs_settle_expiry_and_release_once,
    concurrent_redemptions_never_overdraw,
    concurrent_duplicates_credit_once,
    one_external_id_sent_for_several_members_is_applied_once,
    a_batch_applies_good_journals_and_refuses_bad_ones,
    a_refused_journal_sent_again_in_the_same_batch_is_tried_again,
    the_ledger_pages_newest_first,
    the_store_agrees_with_the_reference_book,
    the_store_agrees_with_the_reference_book_on_promotions,
    realtime_journals_arriving_together_keep_their_own_outcomes,
    a_program_changed_meanwhile_is_noticed_before_posting,
    promotions_award_refund_and_dry_runs_leave_no_trace,
    promotion_conditions_read_the_members_profile,
    promotion_limits_hold_exactly_under_concurrency,
    cumulative_progress_is_kept_per_member_and_period,
    opt_in_promotions_need_the_member_to_join,
    a_punch_card_completes_once_under_concurrent_purchases,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn program_doc(extra_points: serde_json::Value) -> ProgramDocument {
    let mut points = json!({"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "rolling", "months": 24}, "value_per_point": "0.01"});
    for (k, v) in extra_points.as_object().unwrap() {
        points[k] = v.clone();
    }
    serde_json::from_value(json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [points, {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "2"}]}
    }))
    .unwrap()
}

async fn setup(
    store: &Store,
    extra_points: serde_json::Value,
    members: &[&str],
) -> Arc<LoadedProgram> {
    let program = Program::compile(&program_doc(extra_points), None).unwrap();
    let (loaded, created) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    assert!(created);
    for m in members {
        enroll(store, &loaded, m).await;
    }
    loaded
}

async fn enroll(store: &Store, program: &LoadedProgram, member: &str) {
    store
        .enroll(
            program,
            &Enrollment {
                external_id: ExternalId::parse(member).unwrap(),
                profile: json!({"name": format!("Member {member}")}),
                enrolled_at: utc("2026-01-01T00:00:00Z"),
            },
            utc("2026-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
}

fn journal(program: &LoadedProgram, doc: serde_json::Value) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(doc).unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    Prepared::new(journal, &program.program).unwrap()
}

async fn post(
    store: &Store,
    program: &LoadedProgram,
    doc: serde_json::Value,
    now: &str,
) -> fidelis_store::JournalResult {
    let j = journal(program, doc);
    store
        .post_journals(program, &[j], utc(now), None)
        .await
        .unwrap()
        .remove(0)
}

async fn available(store: &Store, program: &LoadedProgram, member: &str, now: &str) -> (i64, i64) {
    let m = store.require_member(program, member).await.unwrap();
    let b = store.balances(program, &m, utc(now)).await.unwrap();
    (b[0].available, b[0].pending)
}

/// The account rows equal the sums of the ledger's entries.
async fn assert_sums(store: &Store, program: &LoadedProgram, member: &str) {
    let m = store.require_member(program, member).await.unwrap();
    let sums = store.entry_sums(&m).await.unwrap();
    let balances = store
        .balances(program, &m, utc("2000-01-01T00:00:00Z"))
        .await
        .unwrap();
    for b in balances {
        let sum = |pool: &str| {
            sums.iter()
                .filter(|(c, p, _)| *c == b.currency && p == pool)
                .map(|s| s.2)
                .sum::<i64>()
        };
        assert_eq!(
            b.available,
            sum("available"),
            "{member} {}: available = Σ entries",
            b.currency
        );
        assert_eq!(
            b.pending,
            sum("pending"),
            "{member} {}: pending = Σ entries",
            b.currency
        );
    }
}

async fn programs_round_trip_and_keep_currencies_in_use(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let again = store.require_program("shop").await.unwrap();
    assert_eq!(again.revision, 1);
    assert_eq!(
        serde_json::to_value(&again.program.document).unwrap(),
        serde_json::to_value(&program.program.document).unwrap()
    );
    post(&store, &program, json!({"external_id": "p1", "member": "m", "type": "purchase", "amount": "10", "currency": "EUR",
        "occurred_at": "2026-02-01T10:00:00Z"}), "2026-02-01T10:00:00Z").await.unwrap();
    // Dropping a currency members hold is refused; the program is unchanged.
    let mut doc = program_doc(json!({}));
    doc.currencies
        .retain(|c| c.code.as_deref() != Some("status"));
    doc.earning
        .base
        .retain(|b| b.currency.as_deref() != Some("status"));
    let smaller = Program::compile(&doc, None).unwrap();
    let err = store
        .put_program(
            &smaller,
            utc("2026-02-02T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidProgram(p) if p[0].message.contains("\"status\"")),
        "{err:?}"
    );
    assert_eq!(store.require_program("shop").await.unwrap().revision, 1);
    // A change that keeps the currencies is a new revision.
    let mut doc = program_doc(json!({"pending_days": 3}));
    doc.name = Some("Shop 2".into());
    let (loaded, created) = store
        .put_program(
            &Program::compile(&doc, None).unwrap(),
            utc("2026-02-02T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(loaded.revision, 2);
    assert_eq!(store.programs().await.unwrap()[0].name, "Shop 2");
}

async fn members_enroll_once(store: Store) {
    let program = setup(&store, json!({}), &["C-100234"]).await;
    let member = store.require_member(&program, "C-100234").await.unwrap();
    assert_eq!(member.status, MemberStatus::Active);
    assert_eq!(member.profile["name"], "Member C-100234");
    let again = store
        .enroll(
            &program,
            &Enrollment {
                external_id: ExternalId::parse("C-100234").unwrap(),
                profile: json!({}),
                enrolled_at: utc("2026-01-01T00:00:00Z"),
            },
            utc("2026-01-01T00:00:00Z"),
        )
        .await;
    assert!(matches!(again, Err(StoreError::MemberExists(_))));
    assert!(store.member(&program, "nobody").await.unwrap().is_none());
}

async fn purchases_earn_and_redemptions_spend(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let outcome = post(&store, &program, json!({"external_id": "pos-1", "member": "m", "type": "purchase",
        "occurred_at": "2026-11-25T10:42:00+01:00", "amount": "79.90", "currency": "EUR",
        "lines": [{"line_id": "1", "sku": "SH-123", "category": "shoes", "quantity": 1, "amount": "59.90"},
                  {"line_id": "2", "sku": "SO-9", "category": "socks", "quantity": 2, "amount": "20.00"}]}),
        "2026-11-25T09:43:00Z").await.unwrap();
    assert!(!outcome.replayed);
    assert_eq!(outcome.outcome.awards.len(), 2);
    assert_eq!(outcome.outcome.balances[0].available, 79);
    assert_eq!(outcome.outcome.balances[1].available, 159);
    let redeemed = post(
        &store,
        &program,
        json!({"external_id": "r-1", "member": "m", "type": "redemption",
        "currency": "points", "points": 30, "occurred_at": "2026-11-26T10:00:00Z"}),
        "2026-11-26T10:00:00Z",
    )
    .await
    .unwrap();
    assert_eq!(redeemed.outcome.balances[0].available, 49);
    let refused = post(
        &store,
        &program,
        json!({"external_id": "r-2", "member": "m", "type": "redemption",
        "currency": "points", "points": 50, "occurred_at": "2026-11-26T10:00:00Z"}),
        "2026-11-26T10:00:00Z",
    )
    .await;
    assert_eq!(
        refused.unwrap_err(),
        JournalError::InsufficientPoints {
            currency: "points".into(),
            spendable: 49,
            requested: 50,
            pending: 0,
            releases_at: None,
        }
    );
    let m = store.require_member(&program, "m").await.unwrap();
    let balances = store
        .balances(&program, &m, utc("2026-11-26T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(balances[0].available, 49);
    assert_eq!(balances[0].expiring[0].at, utc("2028-11-25T10:42:00+01:00"));
    assert_eq!(balances[0].expiring[0].points, 49);
    assert_sums(&store, &program, "m").await;
    let stored = store.journal(&program, "pos-1").await.unwrap().unwrap();
    assert_eq!(stored.member, "m");
    assert_eq!(stored.document.unwrap()["amount"], "79.90");
}

async fn replays_answer_the_first_outcome_and_conflicts_change_nothing(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let doc = json!({"external_id": "x", "member": "m", "type": "purchase", "amount": "12.5", "currency": "EUR",
                     "occurred_at": "2026-03-01T13:00:00+01:00"});
    let first = post(&store, &program, doc.clone(), "2026-03-01T12:00:00Z")
        .await
        .unwrap();
    // The same journal, written differently and posted later.
    let same = json!({"external_id": "x", "member": "m", "type": "purchase", "amount": "12.50", "currency": "EUR",
                      "occurred_at": "2026-03-01T12:00:00Z"});
    let replay = post(&store, &program, same, "2026-03-05T12:00:00Z")
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.outcome, first.outcome);
    let mut different = doc.clone();
    different["amount"] = "13".into();
    let conflict = post(&store, &program, different, "2026-03-05T12:00:00Z")
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), "idempotency_conflict");
    // Within one batch too.
    let batch = vec![
        journal(
            &program,
            json!({"external_id": "y", "member": "m", "type": "purchase", "amount": "1", "currency": "EUR", "occurred_at": "2026-03-05T12:00:00Z"}),
        ),
        journal(
            &program,
            json!({"external_id": "y", "member": "m", "type": "purchase", "amount": "1", "currency": "EUR", "occurred_at": "2026-03-05T12:00:00Z"}),
        ),
        journal(
            &program,
            json!({"external_id": "y", "member": "m", "type": "purchase", "amount": "2", "currency": "EUR", "occurred_at": "2026-03-05T12:00:00Z"}),
        ),
    ];
    let results = store
        .post_journals(&program, &batch, utc("2026-03-05T12:00:00Z"), None)
        .await
        .unwrap();
    assert!(!results[0].as_ref().unwrap().replayed);
    assert!(results[1].as_ref().unwrap().replayed);
    assert_eq!(
        results[2].as_ref().unwrap_err().code(),
        "idempotency_conflict"
    );
    assert_eq!(
        available(&store, &program, "m", "2026-03-05T12:00:00Z").await,
        (13, 0)
    );
    assert_sums(&store, &program, "m").await;
}

async fn refunds_and_cancellations_reverse_across_transactions(store: Store) {
    let program = setup(&store, json!({"return_policy": "allow_negative"}), &["m"]).await;
    let now = "2026-05-01T10:00:00Z";
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": now, "amount": "80", "currency": "EUR",
        "lines": [{"line_id": "a", "quantity": 2, "amount": "60"}, {"line_id": "b", "amount": "20"}]}), now).await.unwrap();
    post(&store, &program, json!({"external_id": "q", "member": "m", "type": "purchase", "occurred_at": now, "amount": "50", "currency": "EUR"}), now).await.unwrap();
    let r = post(&store, &program, json!({"external_id": "r", "member": "m", "type": "redemption", "occurred_at": now, "currency": "points", "points": 100}), now).await.unwrap();
    assert_eq!(r.outcome.balances[0].available, 30);
    // One of two items of line a: 30 of its 60 points; 30 were left, so the balance is 0.
    let refund = post(&store, &program, json!({"external_id": "f1", "member": "m", "type": "refund", "occurred_at": now, "original_external_id": "p",
        "lines": [{"line_id": "a", "quantity": 1}]}), now).await.unwrap();
    assert_eq!(refund.outcome.reversed[0].points, 30);
    assert_eq!(refund.outcome.balances[0].available, 0);
    let exceeded = post(&store, &program, json!({"external_id": "f2", "member": "m", "type": "refund", "occurred_at": now, "original_external_id": "p",
        "lines": [{"line_id": "a", "quantity": 2}]}), now).await.unwrap_err();
    assert_eq!(exceeded.code(), "refund_exceeds_original");
    // Cancel the redemption: 100 points back, to the buckets they came from.
    let later = "2026-05-02T10:00:00Z";
    let cancelled = post(&store, &program, json!({"external_id": "c1", "member": "m", "type": "cancellation", "occurred_at": later, "original_external_id": "r"}), later).await.unwrap();
    assert_eq!(cancelled.outcome.restored[0].points, 100);
    assert_eq!(available(&store, &program, "m", later).await, (100, 0));
    let again = post(&store, &program, json!({"external_id": "c2", "member": "m", "type": "cancellation", "occurred_at": later, "original_external_id": "r"}), later).await.unwrap_err();
    assert_eq!(again.code(), "already_cancelled");
    // Cancel the refund: line a is refundable again.
    post(&store, &program, json!({"external_id": "c3", "member": "m", "type": "cancellation", "occurred_at": later, "original_external_id": "f1"}), later).await.unwrap();
    assert_eq!(available(&store, &program, "m", later).await, (130, 0));
    let full = post(&store, &program, json!({"external_id": "f3", "member": "m", "type": "refund", "occurred_at": later, "original_external_id": "p",
        "lines": [{"line_id": "a", "quantity": 2}]}), later).await.unwrap();
    assert_eq!(full.outcome.reversed[0].points, 60);
    // Cancel the whole purchase: the 20 points of line b remain to take.
    let whole = post(&store, &program, json!({"external_id": "c4", "member": "m", "type": "cancellation", "occurred_at": later, "original_external_id": "p"}), later).await.unwrap();
    assert_eq!(whole.outcome.reversed[0].points, 20);
    assert_eq!(available(&store, &program, "m", later).await, (50, 0));
    let m = store.require_member(&program, "m").await.unwrap();
    assert_eq!(
        store.journal(&program, "p").await.unwrap().unwrap().status,
        "cancelled"
    );
    assert_eq!(
        store.balances(&program, &m, utc(later)).await.unwrap()[1].available,
        100,
        "status points of q"
    );
    assert_sums(&store, &program, "m").await;
}

async fn suspended_members_are_refused(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let now = "2026-05-01T10:00:00Z";
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}), now).await.unwrap();
    store
        .set_member_status(
            &program,
            "m",
            MemberStatus::Suspended,
            utc(now),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    let refused = post(&store, &program, json!({"external_id": "q", "member": "m", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}), now).await;
    assert_eq!(refused.unwrap_err(), JournalError::MemberSuspended);
    assert!(store.journal(&program, "q").await.unwrap().is_none());
    store
        .set_member_status(
            &program,
            "m",
            MemberStatus::Active,
            utc(now),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    post(&store, &program, json!({"external_id": "q", "member": "m", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}), now).await.unwrap();
    assert_eq!(available(&store, &program, "m", now).await, (20, 0));
    let unknown = post(&store, &program, json!({"external_id": "z", "member": "ghost", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}), now).await;
    assert_eq!(unknown.unwrap_err().code(), "unknown_member");
}

async fn jobs_settle_expiry_and_release_once(store: Store) {
    let program = setup(&store, json!({"pending_days": 14, "expiry": {"policy": "rolling", "months": 1, "round_up": "end_of_month"}}), &["a", "b"]).await;
    let t0 = "2026-01-10T10:00:00+01:00";
    for m in ["a", "b"] {
        post(&store, &program, json!({"external_id": format!("p-{m}"), "member": m, "type": "purchase", "occurred_at": t0, "amount": "30", "currency": "EUR"}), t0).await.unwrap();
    }
    // Balances read as of an instant apply what is due, without the jobs.
    assert_eq!(available(&store, &program, "a", t0).await, (0, 30));
    assert_eq!(
        available(&store, &program, "a", "2026-01-24T10:00:00+01:00").await,
        (30, 0)
    );
    let release = store
        .run_jobs(&program, utc("2026-01-24T10:00:00+01:00"))
        .await
        .unwrap();
    assert_eq!((release.members, release.journals), (2, 2));
    let again = store
        .run_jobs(&program, utc("2026-01-24T10:00:00+01:00"))
        .await
        .unwrap();
    assert_eq!(
        again.journals, 0,
        "a second run as of the same instant changes nothing"
    );
    post(&store, &program, json!({"external_id": "r", "member": "a", "type": "redemption", "occurred_at": "2026-01-25T10:00:00Z", "currency": "points", "points": 10}), "2026-01-25T10:00:00Z").await.unwrap();
    // Expiry: end of February, Berlin time.
    let expiry = store
        .run_jobs(&program, utc("2026-03-01T00:00:00+01:00"))
        .await
        .unwrap();
    assert_eq!(expiry.journals, 2);
    assert_eq!(
        store
            .run_jobs(&program, utc("2026-03-01T00:00:00+01:00"))
            .await
            .unwrap()
            .journals,
        0
    );
    assert_eq!(
        available(&store, &program, "a", "2026-03-02T00:00:00Z").await,
        (0, 0)
    );
    let a = store.require_member(&program, "a").await.unwrap();
    let ledger = store.ledger(&a, None, 100).await.unwrap();
    let expired: Vec<_> = ledger.iter().filter(|e| e.kind == "expire").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].amount, -20);
    assert_eq!(expired[0].effective_at, utc("2026-03-01T00:00:00+01:00"));
    assert_sums(&store, &program, "a").await;
    assert_sums(&store, &program, "b").await;
}

async fn concurrent_redemptions_never_overdraw(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let now = "2026-05-01T10:00:00Z";
    post(&store, &program, json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": now, "amount": "1000", "currency": "EUR"}), now).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            let j = journal(&program, json!({"external_id": format!("r{i}"), "member": "m", "type": "redemption", "occurred_at": now, "currency": "points", "points": 100}));
            store.post_journals(&program, &[j], utc(now), None).await.unwrap().remove(0)
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(e) => assert_eq!(e.code(), "insufficient_points"),
        }
    }
    assert_eq!(succeeded, 10);
    assert_eq!(available(&store, &program, "m", now).await, (0, 0));
    assert_sums(&store, &program, "m").await;
}

async fn concurrent_duplicates_credit_once(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    let now = "2026-05-01T10:00:00Z";
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            let j = journal(&program, json!({"external_id": "same", "member": "m", "type": "purchase", "occurred_at": now, "amount": "100", "currency": "EUR"}));
            store.post_journals(&program, &[j], utc(now), None).await.unwrap().remove(0).unwrap()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if !t.await.unwrap().replayed {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(available(&store, &program, "m", now).await, (100, 0));
    assert_sums(&store, &program, "m").await;
}

/// An external id is unique in the program, not per member: the same id sent at once for
/// several members (each under its own lock) is applied for one and refused for the others.
/// What stops the second is the unique key (on PostgreSQL `journal_keys`).
async fn one_external_id_sent_for_several_members_is_applied_once(store: Store) {
    let members = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let program = setup(&store, json!({}), &members).await;
    let now = "2026-05-01T10:00:00Z";
    for round in 0..10 {
        let mut tasks = Vec::new();
        for m in members {
            let (store, program) = (store.clone(), Arc::clone(&program));
            tasks.push(tokio::spawn(async move {
                let j = journal(&program, json!({"external_id": format!("shared-{round}"), "member": m, "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}));
                store.post_journals(&program, &[j], utc(now), None).await.unwrap().remove(0)
            }));
        }
        let (mut applied, mut conflicts) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(p) => {
                    assert!(!p.replayed, "another member's journal is no replay");
                    applied += 1;
                }
                Err(JournalError::IdempotencyConflict(_)) => conflicts += 1,
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
        assert_eq!(
            (applied, conflicts),
            (1, members.len() - 1),
            "round {round}"
        );
    }
    let mut total = 0;
    for m in members {
        total += available(&store, &program, m, now).await.0;
        assert_sums(&store, &program, m).await;
    }
    assert_eq!(total, 10 * 10, "one purchase of 10 per round");
}

/// A refused journal leaves nothing behind, so the same journal sent again is judged
/// afresh — within one batch as across batches (an import's outcome must not depend on
/// where its batches end): a redemption refused for want of points passes once a purchase
/// in between has earned them, and a third copy then replays it.
async fn a_refused_journal_sent_again_in_the_same_batch_is_tried_again(store: Store) {
    let program = setup(&store, json!({}), &["a"]).await;
    let now = "2026-05-01T10:00:00Z";
    let redemption = json!({"external_id": "r", "member": "a", "type": "redemption", "occurred_at": now, "currency": "points", "points": 30});
    let batch = vec![
        journal(&program, redemption.clone()),
        journal(
            &program,
            json!({"external_id": "p", "member": "a", "type": "purchase", "occurred_at": now, "amount": "50", "currency": "EUR"}),
        ),
        journal(&program, redemption.clone()),
        journal(&program, redemption),
    ];
    let results = store
        .post_journals(&program, &batch, utc(now), None)
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(e) if e.code() == "insufficient_points"),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[2], Ok(p) if !p.replayed),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(&results[3], Ok(p) if p.replayed),
        "{:?}",
        results[3]
    );
    assert_eq!(available(&store, &program, "a", now).await, (20, 0));
    assert_sums(&store, &program, "a").await;
}

async fn a_batch_applies_good_journals_and_refuses_bad_ones(store: Store) {
    let program = setup(&store, json!({}), &["a", "b"]).await;
    let now = "2026-05-01T10:00:00Z";
    let batch = vec![
        journal(
            &program,
            json!({"external_id": "1", "member": "a", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}),
        ),
        journal(
            &program,
            json!({"external_id": "2", "member": "ghost", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}),
        ),
        journal(
            &program,
            json!({"external_id": "3", "member": "b", "type": "redemption", "occurred_at": now, "currency": "points", "points": 5}),
        ),
        journal(
            &program,
            json!({"external_id": "4", "member": "a", "type": "redemption", "occurred_at": now, "currency": "points", "points": 4}),
        ),
        journal(
            &program,
            json!({"external_id": "5", "member": "a", "type": "refund", "occurred_at": now, "original_external_id": "1", "amount": "11", "currency": "EUR"}),
        ),
        journal(
            &program,
            json!({"external_id": "6", "member": "a", "type": "refund", "occurred_at": now, "original_external_id": "1", "amount": "5", "currency": "EUR"}),
        ),
    ];
    let results = store
        .post_journals(&program, &batch, utc(now), None)
        .await
        .unwrap();
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "unknown_member",
            "insufficient_points",
            "ok",
            "refund_exceeds_original",
            "ok"
        ]
    );
    assert_eq!(available(&store, &program, "a", now).await, (1, 0));
    assert_eq!(available(&store, &program, "b", now).await, (0, 0));
    assert!(store.journal(&program, "3").await.unwrap().is_none());
    assert_sums(&store, &program, "a").await;
}

async fn the_ledger_pages_newest_first(store: Store) {
    let program = setup(&store, json!({}), &["m"]).await;
    for i in 0..5 {
        let now = format!("2026-05-0{}T10:00:00Z", i + 1);
        post(&store, &program, json!({"external_id": format!("p{i}"), "member": "m", "type": "purchase", "occurred_at": now, "amount": "1", "currency": "EUR"}), &now).await.unwrap();
    }
    let m = store.require_member(&program, "m").await.unwrap();
    let first = store.ledger(&m, None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(first[0].journal_external_id.as_deref(), Some("p4"));
    let last = first.last().unwrap();
    let rest = store
        .ledger(&m, Some((last.journal_id, last.seq)), 100)
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        6,
        "10 entries in all: points and status for each of 5 purchases"
    );
    assert_eq!(
        rest.last().unwrap().journal_external_id.as_deref(),
        Some("p0")
    );
}

/// A tiny deterministic generator, so a failure names its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The SQL store and the in-memory reference book, fed the same random history, answer
/// every journal the same way and end with the same balances.
async fn the_store_agrees_with_the_reference_book(store: Store) {
    let program = setup(
        &store,
        json!({"pending_days": 3, "return_policy": "allow_negative", "negative_floor": -50,
                                       "expiry": {"policy": "rolling", "days": 20}}),
        &[],
    )
    .await;
    for seed in 1..=4u64 {
        let mut book = Book::new(program.program.clone());
        agree_with_the_book(&store, &program, &mut book, seed).await;
    }
}

/// The same differential test on a program whose promotions have conditions, limits
/// (per member, per period, a budget, a daily cap), cumulative progress and stacking: the
/// store's counters must follow the book's through refunds and cancellations.
async fn the_store_agrees_with_the_reference_book_on_promotions(store: Store) {
    let mut doc = program_doc(
        json!({"return_policy": "allow_negative", "expiry": {"policy": "rolling", "days": 40}}),
    );
    doc.promotions = serde_json::from_value(json!([
        {"code": "big-basket", "name": "Big basket", "status": "active", "priority": 3,
         "condition": "journal.amount >= 40.0",
         "limits": {"per_member": {"times": 3}, "budget_points": 400},
         "actions": [{"type": "fixed", "currency": "points", "points": 60}]},
        {"code": "double", "name": "Double, capped daily", "status": "active", "priority": 2,
         "limits": {"daily_points": 90, "per_member_per_period": {"period": "week", "points": 70}},
         "actions": [{"type": "multiplier", "currency": "points", "factor": "2"}]},
        {"code": "fifth-visit", "name": "Every fifth visit", "status": "active", "priority": 1,
         "cumulative": {"measure": "count", "target": "5", "period": "month"},
         "actions": [{"type": "fixed", "currency": "status", "points": 25}]},
        {"code": "spend-100", "name": "Spend 100 a month", "status": "active", "exclusive": true,
         "cumulative": {"measure": "amount", "target": "100.00", "period": "month", "repeat": false},
         "actions": [{"type": "per_money", "currency": "points", "rate": "0.5"}]},
        {"code": "silver-plus", "name": "Silver and gold", "status": "active", "priority": -1,
         "eligibility": {"tiers": ["silver", "gold"]},
         "actions": [{"type": "fixed", "currency": "points", "points": 11}]},
        {"code": "gold-cel", "name": "Gold by condition", "status": "active", "priority": -2,
         "condition": "member.tier == 'gold'",
         "actions": [{"type": "fixed", "currency": "points", "points": 13}]},
        {"code": "may", "name": "May in Berlin", "status": "active", "priority": -3,
         "starts_at": "2026-05-01", "ends_at": "2026-06-01T00:00",
         "actions": [{"type": "fixed", "currency": "points", "points": 17}]}
    ]))
    .unwrap();
    doc.tier_groups = serde_json::from_value(json!([
        {"code": "status", "name": "Status", "currency": "status", "tiers": [
            {"code": "member", "name": "Member", "threshold": 0},
            {"code": "silver", "name": "Silver", "threshold": 150},
            {"code": "gold", "name": "Gold", "threshold": 400}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (program, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    // One book for every seed: the budget is the program's, across all members.
    let mut book = Book::new(program.program.clone());
    let mut verdicts = std::collections::BTreeSet::new();
    for seed in 1..=3u64 {
        verdicts.extend(agree_with_the_book(&store, &program, &mut book, seed).await);
    }
    // The history reached every kind of outcome the program can give.
    for v in [
        "big-basket:applied",
        "big-basket:limit_reached",
        "double:applied",
        "double:limit_reached",
        "fifth-visit:applied",
        "fifth-visit:in_progress",
        "spend-100:applied",
        "spend-100:in_progress",
        "silver-plus:applied",
        "gold-cel:applied",
        "may:applied",
    ] {
        assert!(verdicts.contains(v), "{v} never happened: {verdicts:?}");
    }
}

/// Posts a random history for three fresh members to the store and to the in-memory book,
/// and checks every outcome and the final balances agree.
async fn agree_with_the_book(
    store: &Store,
    program: &Arc<LoadedProgram>,
    book: &mut Book,
    seed: u64,
) -> std::collections::BTreeSet<String> {
    let mut verdicts = std::collections::BTreeSet::new();
    let store = store.clone();
    let program = Arc::clone(program);
    let members = ["a", "b", "c"];
    {
        let mut rng = Lcg(seed);
        let names: Vec<String> = members.iter().map(|m| format!("{m}{seed}")).collect();
        for name in &names {
            enroll(&store, &program, name).await;
            book.enroll(&ExternalId::parse(name).unwrap());
        }
        let mut now = utc("2026-01-01T10:00:00Z") + Duration::days(100 * seed as i64);
        let mut posted: Vec<(String, String)> = Vec::new();
        for step in 0..60 {
            now += Duration::hours(rng.next(150) as i64);
            let member = names[rng.next(3) as usize].clone();
            let id = format!("s{seed}-{step}");
            let at = now.to_rfc3339();
            let doc = match rng.next(6) {
                0 | 1 => {
                    json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": at,
                                "amount": format!("{}.{:02}", rng.next(90), rng.next(100)), "currency": "EUR"})
                }
                2 => {
                    json!({"external_id": id, "member": member, "type": "redemption", "occurred_at": at, "currency": "points", "points": 1 + rng.next(60)})
                }
                3 if !posted.is_empty() => {
                    let (original, owner) = posted[rng.next(posted.len() as u64) as usize].clone();
                    json!({"external_id": id, "member": owner, "type": "refund", "occurred_at": at, "original_external_id": original})
                }
                4 if !posted.is_empty() => {
                    let (original, owner) = posted[rng.next(posted.len() as u64) as usize].clone();
                    json!({"external_id": id, "member": owner, "type": "cancellation", "occurred_at": at, "original_external_id": original})
                }
                _ => {
                    json!({"external_id": id, "member": member, "type": "adjustment", "occurred_at": at, "currency": "points",
                            "points": rng.next(80) as i64 - 30, "reason": "goodwill"})
                }
            };
            if doc["points"] == 0 {
                continue;
            }
            let j = journal(&program, doc);
            let expected = book.post(&j.journal, now).map(|(o, _)| o);
            let got = store
                .post_journals(&program, std::slice::from_ref(&j), now, None)
                .await
                .unwrap()
                .remove(0)
                .map(|p| p.outcome);
            assert_eq!(got, expected, "seed {seed}, step {step}: {:?}", j.journal);
            if let Ok(o) = &got {
                verdicts.extend(
                    o.promotions
                        .iter()
                        .map(|r| format!("{}:{}", r.promotion, r.result)),
                );
            }
            if got.is_ok() {
                posted.push((
                    j.journal.external_id.to_string(),
                    j.journal.member.to_string(),
                ));
            }
            if rng.next(10) == 0 {
                book.settle_all(now);
                store.run_jobs(&program, now).await.unwrap();
            }
        }
        for name in &names {
            let ledger = book.ledger(&ExternalId::parse(name).unwrap()).unwrap();
            let m = store.require_member(&program, name).await.unwrap();
            let balances = store.balances(&program, &m, now).await.unwrap();
            let mut settled = ledger.clone();
            let _ = fidelis_core::process::settle(
                &program.program,
                &mut settled,
                fidelis_core::ids::JournalId(0),
                now,
            );
            for (ix, b) in balances.iter().enumerate() {
                let a = &settled.accounts[ix];
                assert_eq!(
                    (b.available, b.pending, b.arrears),
                    (a.available, a.pending, a.arrears),
                    "seed {seed}: {name} {}",
                    b.currency
                );
            }
            assert_sums(&store, &program, name).await;
        }
    }
    verdicts
}

/// Realtime journals posted at the same moment share group-commit transactions; each must
/// still get exactly the outcome it would get alone: applied, replayed, refused for its own
/// reason, and nothing of a refused one written.
async fn realtime_journals_arriving_together_keep_their_own_outcomes(store: Store) {
    let members = ["a", "b", "c", "d"];
    let program = setup(&store, json!({}), &members).await;
    let now = "2026-05-01T10:00:00Z";
    let mut tasks = Vec::new();
    let spawn = |doc: serde_json::Value| {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tokio::spawn(async move {
            let j = journal(&program, doc);
            store
                .post_realtime(&program, j, utc(now))
                .await
                .expect("no store error")
        })
    };
    // Per member: 20 purchases of 10, one of them sent 5 times, one conflicting copy.
    for m in members {
        for i in 0..20 {
            let copies = if i == 0 { 5 } else { 1 };
            for _ in 0..copies {
                tasks.push((format!("{m}-p{i}"), spawn(json!({"external_id": format!("{m}-p{i}"), "member": m, "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}))));
            }
        }
        tasks.push((format!("{m}-conflict"), spawn(json!({"external_id": format!("{m}-p1"), "member": m, "type": "purchase", "occurred_at": now, "amount": "99", "currency": "EUR"}))));
    }
    tasks.push(("unknown".into(), spawn(json!({"external_id": "u-1", "member": "nobody", "type": "purchase", "occurred_at": now, "amount": "10", "currency": "EUR"}))));
    let mut applied = std::collections::HashMap::<String, usize>::new();
    let (mut replayed, mut conflicts, mut unknown) = (0, 0, 0);
    for (name, task) in tasks {
        match task.await.unwrap() {
            Ok(p) if p.replayed => replayed += 1,
            Ok(_) => *applied.entry(name).or_default() += 1,
            Err(JournalError::IdempotencyConflict(_)) => conflicts += 1,
            Err(JournalError::UnknownMember(_)) => unknown += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    // Every distinct purchase applied once; the copies replayed (or, for a conflicting
    // copy that came first, the conflict and the purchase swap roles: count both).
    assert_eq!(applied.len() + conflicts, 80 + 4, "{applied:?}");
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(replayed, 4 * 4);
    assert_eq!(unknown, 1);
    for m in members {
        let (points, _) = available(&store, &program, m, now).await;
        // 20 purchases of 10 (or 19 and a 99 when the conflicting copy won the race).
        assert!(points == 200 || points == 190 + 99, "{m}: {points}");
        assert_sums(&store, &program, m).await;
    }

    // Redemptions racing for the same points: never more than the balance.
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(spawn(json!({"external_id": format!("r{i}"), "member": "a", "type": "redemption", "occurred_at": now, "currency": "points", "points": 10})));
    }
    let mut redeemed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => redeemed += 10,
            Err(e) => assert_eq!(e.code(), "insufficient_points"),
        }
    }
    let (left, _) = available(&store, &program, "a", now).await;
    assert!(
        redeemed <= 289 && (0..10).contains(&left),
        "redeemed {redeemed}, left {left}"
    );
    assert_sums(&store, &program, "a").await;
}

/// A journal parsed against a program revision that is no longer current is refused with
/// `ProgramChanged` (the API then reloads the program and retries) and writes nothing.
async fn a_program_changed_meanwhile_is_noticed_before_posting(store: Store) {
    let stale = setup(&store, json!({}), &["m"]).await;
    let program = Program::compile(&program_doc(json!({"pending_days": 3})), None).unwrap();
    let (current, created) = store
        .put_program(
            &program,
            utc("2026-02-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(current.revision, stale.revision + 1);
    let now = "2026-05-01T10:00:00Z";
    let doc = json!({"external_id": "p", "member": "m", "type": "purchase", "occurred_at": now, "amount": "100", "currency": "EUR"});
    match store
        .post_realtime(&stale, journal(&stale, doc.clone()), utc(now))
        .await
    {
        Err(StoreError::ProgramChanged(code)) => assert_eq!(code, "shop"),
        other => panic!("expected ProgramChanged, got {other:?}"),
    }
    assert_eq!(available(&store, &current, "m", now).await, (0, 0));
    // On the current revision it posts, with its rules (three pending days).
    let posted = store
        .post_realtime(&current, journal(&current, doc), utc(now))
        .await
        .unwrap()
        .unwrap();
    assert!(!posted.replayed);
    assert_eq!(available(&store, &current, "m", now).await, (0, 100));
}

async fn promotions_award_refund_and_dry_runs_leave_no_trace(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "shoes-double", "name": "Double on shoes", "status": "active", "scope": "line",
         "condition": "line.category == 'shoes'",
         "actions": [{"type": "multiplier", "currency": "points", "factor": "2"}]},
        {"code": "web-bonus", "name": "Web bonus", "status": "active", "priority": 5,
         "condition": "journal.channel == 'web'",
         "actions": [{"type": "fixed", "currency": "points", "points": 25}, {"type": "badge", "badge": "online"}]},
        {"code": "later", "name": "Starts in July", "status": "active", "starts_at": "2026-07-01",
         "actions": [{"type": "fixed", "currency": "points", "points": 1000}]}
    ]))
    .unwrap();
    doc.badges =
        serde_json::from_value(json!([{"code": "online", "name": "Shops online"}])).unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    enroll(&store, &p, "ada").await;
    let order = json!({"external_id": "o-1", "member": "ada", "type": "purchase", "channel": "web",
        "occurred_at": "2026-06-01T10:00:00Z", "amount": "80.00", "currency": "EUR",
        "lines": [{"line_id": "1", "category": "shoes", "quantity": 1, "amount": "60.00"},
                  {"line_id": "2", "category": "socks", "quantity": 1, "amount": "20.00"}]});

    // A dry run answers every promotion's verdict and changes nothing.
    let dry = store
        .dry_run(&p, &journal(&p, order.clone()), utc("2026-06-01T10:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let verdicts: Vec<(&str, &str)> = dry
        .outcome
        .promotions
        .iter()
        .map(|r| (r.promotion.as_str(), r.result.as_ref()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("web-bonus", "applied"),
            ("shoes-double", "applied"),
            ("later", "not_started")
        ]
    );
    assert_eq!(
        available(&store, &p, "ada", "2026-06-01T10:00:00Z").await,
        (0, 0)
    );

    // Posted for real: base 80, the shoes' double 60, the web bonus 25.
    let posted = post(&store, &p, order.clone(), "2026-06-01T10:00:00Z")
        .await
        .unwrap();
    assert!(!posted.replayed, "the dry run left no journal behind");
    let by_source = |o: &fidelis_core::outcome::Outcome, source: &str| -> i64 {
        o.awards
            .iter()
            .filter(|a| a.source == source && a.currency.as_str() == "points")
            .map(|a| a.points)
            .sum()
    };
    assert_eq!(by_source(&posted.outcome, "base"), 80);
    assert_eq!(by_source(&posted.outcome, "shoes-double"), 60);
    assert_eq!(by_source(&posted.outcome, "web-bonus"), 25);
    assert_eq!(
        available(&store, &p, "ada", "2026-06-01T10:00:00Z").await,
        (165, 0)
    );
    // Only the promotions that applied are kept in the outcome; a replay answers it again.
    let replay = post(&store, &p, order, "2026-06-01T11:00:00Z")
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.outcome, posted.outcome);
    assert_eq!(posted.outcome.promotions.len(), 2);

    // Refunding the shoes takes back their base and their double, and of the web bonus
    // (the whole order's) the refunded share: 60/80 of 25, rounded down, 18.
    post(
        &store,
        &p,
        json!({"external_id": "r-1", "member": "ada", "type": "refund", "original_external_id": "o-1",
               "occurred_at": "2026-06-02T10:00:00Z", "lines": [{"line_id": "1", "quantity": 1}]}),
        "2026-06-02T10:00:00Z",
    )
    .await
    .unwrap();
    let (points, _) = available(&store, &p, "ada", "2026-06-02T10:00:00Z").await;
    assert_eq!(points, 165 - 60 - 60 - 18);
    assert_sums(&store, &p, "ada").await;

    // Past-dated journals meet the promotions of their own date: `later` starts at local
    // midnight of 1 July in Berlin (22:00 UTC on 30 June), and both are posted in August.
    let later = |id: &str, at: &str| {
        json!({"external_id": id, "member": "ada", "type": "purchase", "occurred_at": at,
               "amount": "1", "currency": "EUR"})
    };
    let before = post(
        &store,
        &p,
        later("late-1", "2026-06-30T21:59:59Z"),
        "2026-08-01T10:00:00Z",
    )
    .await
    .unwrap();
    assert_eq!(by_source(&before.outcome, "later"), 0);
    let after = post(
        &store,
        &p,
        later("late-2", "2026-06-30T22:00:00Z"),
        "2026-08-01T10:00:00Z",
    )
    .await
    .unwrap();
    assert_eq!(by_source(&after.outcome, "later"), 1000);
}

async fn promotion_conditions_read_the_members_profile(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "birthday", "name": "Birthday", "status": "active",
         "condition": "member.birthday_today && member.profile.tier_hint == 'gold'",
         "actions": [{"type": "fixed", "currency": "points", "points": 100}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    for (member, birthday) in [("ada", "1990-06-13"), ("bob", "1990-06-14")] {
        store
            .enroll(
                &p,
                &Enrollment {
                    external_id: ExternalId::parse(member).unwrap(),
                    profile: json!({"birthday": birthday, "tier_hint": "gold"}),
                    enrolled_at: utc("2026-01-01T00:00:00Z"),
                },
                utc("2026-01-01T00:00:00Z"),
            )
            .await
            .unwrap();
    }
    // Both in one batch: each is judged on its own profile.
    let batch = [
        journal(
            &p,
            json!({"external_id": "a1", "member": "ada", "type": "purchase",
            "occurred_at": "2026-06-13T09:00:00Z", "amount": "10", "currency": "EUR"}),
        ),
        journal(
            &p,
            json!({"external_id": "b1", "member": "bob", "type": "purchase",
            "occurred_at": "2026-06-13T09:00:00Z", "amount": "10", "currency": "EUR"}),
        ),
    ];
    let results = store
        .post_journals(&p, &batch, utc("2026-06-13T10:00:00Z"), None)
        .await
        .unwrap();
    let applied = |i: usize| -> Vec<String> {
        results[i]
            .as_ref()
            .unwrap()
            .outcome
            .promotions
            .iter()
            .map(|r| format!("{}:{}", r.promotion, r.result))
            .collect()
    };
    assert_eq!(applied(0), ["birthday:applied"]);
    assert!(applied(1).is_empty(), "{:?}", applied(1));
    assert_eq!(
        available(&store, &p, "ada", "2026-06-13T10:00:00Z").await.0,
        110
    );
    assert_eq!(
        available(&store, &p, "bob", "2026-06-13T10:00:00Z").await.0,
        10
    );
}

async fn promotion_limits_hold_exactly_under_concurrency(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "budgeted", "name": "Budget of 100", "status": "active",
         "limits": {"budget_points": 100},
         "actions": [{"type": "fixed", "currency": "points", "points": 30}]},
        {"code": "once", "name": "Once per member", "status": "active",
         "limits": {"per_member": {"times": 1}},
         "actions": [{"type": "fixed", "currency": "status", "points": 7}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    let members: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    for m in &members {
        enroll(&store, &p, m).await;
    }
    let now = "2026-05-01T10:00:00Z";
    // 24 purchases at once: two per member, realtime and in batches of one.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (store, p) = (store.clone(), Arc::clone(&p));
        let member = members[i % members.len()].clone();
        tasks.push(tokio::spawn(async move {
            let j = journal(
                &p,
                json!({"external_id": format!("c{i}"), "member": member, "type": "purchase",
                                      "occurred_at": now, "amount": "1", "currency": "EUR"}),
            );
            if i % 2 == 0 {
                store.post_realtime(&p, j, utc(now)).await.unwrap().unwrap()
            } else {
                store
                    .post_journals(&p, &[j], utc(now), None)
                    .await
                    .unwrap()
                    .remove(0)
                    .unwrap()
            }
        }));
    }
    let (mut budgeted, mut once) = (Vec::new(), 0);
    for t in tasks {
        let posted = t.await.unwrap();
        for a in &posted.outcome.awards {
            match a.source.as_ref() {
                "budgeted" => budgeted.push(a.points),
                "once" => once += 1,
                _ => {}
            }
        }
    }
    budgeted.sort_unstable();
    // Exactly the budget: three full awards and one cut to what was left.
    assert_eq!(budgeted, [10, 30, 30, 30]);
    // Exactly once per member.
    assert_eq!(once, members.len());
    // The counters agree: nothing is left to award.
    let dry = store
        .dry_run(
            &p,
            &journal(
                &p,
                json!({"external_id": "later", "member": "m0", "type": "purchase",
                                "occurred_at": now, "amount": "1", "currency": "EUR"}),
            ),
            utc(now),
        )
        .await
        .unwrap()
        .unwrap();
    let verdicts: Vec<(&str, &str)> = dry
        .outcome
        .promotions
        .iter()
        .map(|r| (r.promotion.as_str(), r.result.as_ref()))
        .collect();
    assert_eq!(
        verdicts,
        [("budgeted", "limit_reached"), ("once", "limit_reached")]
    );
}

async fn cumulative_progress_is_kept_per_member_and_period(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "third-visit", "name": "Every third visit", "status": "active",
         "cumulative": {"measure": "count", "target": "3", "period": "month"},
         "actions": [{"type": "fixed", "currency": "points", "points": 50}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    enroll(&store, &p, "ada").await;
    enroll(&store, &p, "bob").await;
    let buy = |id: &str, member: &str, at: &str| {
        journal(
            &p,
            json!({"external_id": id, "member": member, "type": "purchase",
                           "occurred_at": at, "amount": "1", "currency": "EUR"}),
        )
    };
    // Two of ada's visits in one batch, one alone, one of bob's between; then July.
    let now = utc("2026-07-10T00:00:00Z");
    let first = store
        .post_journals(
            &p,
            &[
                buy("a1", "ada", "2026-06-01T10:00:00Z"),
                buy("b1", "bob", "2026-06-01T10:00:00Z"),
                buy("a2", "ada", "2026-06-02T10:00:00Z"),
            ],
            now,
            None,
        )
        .await
        .unwrap();
    assert!(
        first.iter().all(|r| r
            .as_ref()
            .unwrap()
            .outcome
            .awards
            .iter()
            .all(|a| a.source == "base")),
        "base only so far"
    );
    let third = store
        .post_journals(&p, &[buy("a3", "ada", "2026-06-03T10:00:00Z")], now, None)
        .await
        .unwrap();
    let awards = &third[0].as_ref().unwrap().outcome.awards;
    assert!(
        awards
            .iter()
            .any(|a| a.source == "third-visit" && a.points == 50),
        "{awards:?}"
    );
    store
        .post_journals(&p, &[buy("a4", "ada", "2026-07-01T10:00:00Z")], now, None)
        .await
        .unwrap();
    let ada = store.require_member(&p, "ada").await.unwrap();
    let counters = store.promotion_counters(&p, &ada).await.unwrap();
    assert_eq!(
        counters,
        [
            ("third-visit".to_owned(), "c:m:2026-06".to_owned(), 1, 0),
            ("third-visit".to_owned(), "c:m:2026-07".to_owned(), 0, 1),
        ]
    );
    let bob = store.require_member(&p, "bob").await.unwrap();
    let counters = store.promotion_counters(&p, &bob).await.unwrap();
    assert_eq!(
        counters,
        [("third-visit".to_owned(), "c:m:2026-06".to_owned(), 0, 1)]
    );
}

async fn opt_in_promotions_need_the_member_to_join(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "club", "name": "Club bonus", "status": "active", "opt_in": true,
         "actions": [{"type": "fixed", "currency": "points", "points": 5}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap();
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    enroll(&store, &p, "ada").await;
    let now = "2026-05-01T10:00:00Z";
    let buy = |id: &str| {
        json!({"external_id": id, "member": "ada", "type": "purchase",
                                "occurred_at": now, "amount": "10", "currency": "EUR"})
    };
    let before = post(&store, &p, buy("p1"), now).await.unwrap();
    assert!(before.outcome.awards.iter().all(|a| a.source != "club"));
    let ada = store.require_member(&p, "ada").await.unwrap();
    store.join_promotion(&p, &ada, "club").await.unwrap();
    store.join_promotion(&p, &ada, "club").await.unwrap();
    let after = post(&store, &p, buy("p2"), now).await.unwrap();
    assert!(
        after
            .outcome
            .awards
            .iter()
            .any(|a| a.source == "club" && a.points == 5)
    );
    let counters = store.promotion_counters(&p, &ada).await.unwrap();
    assert_eq!(counters, [("club".to_owned(), "j:".to_owned(), 1, 0)]);
}

/// Twelve purchases of one drink each, all at once, on a card of ten: exactly one reward,
/// and two stamps carried on; a refunded drink of a counted purchase takes its stamp back.
async fn a_punch_card_completes_once_under_concurrent_purchases(store: Store) {
    let mut doc = program_doc(json!({}));
    doc.promotions = serde_json::from_value(json!([
        {"code": "tenth-drink", "name": "The 10th drink", "status": "active", "scope": "line",
         "condition": "line.category == 'drinks'",
         "cumulative": {"measure": "quantity", "target": "10"},
         "actions": [{"type": "fixed", "currency": "points", "points": 350}]}
    ]))
    .unwrap();
    let program = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    let (p, _) = store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap();
    enroll(&store, &p, "ada").await;
    let now = "2026-05-01T10:00:00Z";
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (store, p) = (store.clone(), Arc::clone(&p));
        tasks.push(tokio::spawn(async move {
            let j = journal(
                &p,
                json!({"external_id": format!("d{i}"), "member": "ada", "type": "purchase",
                       "occurred_at": now, "currency": "EUR",
                       "lines": [{"line_id": "1", "category": "drinks", "quantity": 1, "amount": "3.50"},
                                 {"line_id": "2", "category": "food", "quantity": 2, "amount": "4.00"}]}),
            );
            if i % 2 == 0 {
                store.post_realtime(&p, j, utc(now)).await.unwrap().unwrap()
            } else {
                store.post_journals(&p, &[j], utc(now), None).await.unwrap().remove(0).unwrap()
            }
        }));
    }
    let mut rewards = 0;
    for t in tasks {
        let posted = t.await.unwrap();
        rewards += posted
            .outcome
            .awards
            .iter()
            .filter(|a| a.source == "tenth-drink")
            .map(|a| a.points)
            .sum::<i64>();
    }
    assert_eq!(rewards, 350, "one card, one reward");
    let ada = store.require_member(&p, "ada").await.unwrap();
    let counters = store.promotion_counters(&p, &ada).await.unwrap();
    assert_eq!(
        counters,
        [("tenth-drink".to_owned(), "c:".to_owned(), 1, 2)]
    );
    // Refunding the food of one purchase changes nothing; its drink takes one stamp.
    let refund = |id: &str, line: &str| {
        json!({"external_id": id, "member": "ada", "type": "refund", "occurred_at": now,
               "original_external_id": "d0", "lines": [{"line_id": line}]})
    };
    post(&store, &p, refund("f1", "2"), now).await.unwrap();
    assert_eq!(store.promotion_counters(&p, &ada).await.unwrap()[0].3, 2);
    post(&store, &p, refund("f2", "1"), now).await.unwrap();
    assert_eq!(store.promotion_counters(&p, &ada).await.unwrap()[0].3, 1);
    assert_sums(&store, &p, "ada").await;
}
