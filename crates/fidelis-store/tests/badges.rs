//! Badges and granted benefits through the store, on SQLite and a throw-away PostgreSQL:
//! a badge held once, a repeatable one counted, a benefit granted for a period, and a
//! replayed journal awarding nothing again.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, LoadedProgram, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(
    badges_are_held_once_or_counted_and_benefits_last_their_period,
    a_granted_benefit_counts_in_promotions_while_it_holds,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn setup(store: &Store) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "badges": [{"code": "first-buy", "name": "First buy"},
                   {"code": "big-basket", "name": "Big basket", "repeatable": true}],
        "promotions": [
            {"code": "welcome", "name": "Welcome", "status": "active",
             "actions": [{"type": "badge", "badge": "first-buy"}]},
            {"code": "big", "name": "Big baskets", "status": "active", "condition": "journal.amount >= 100.0",
             "actions": [{"type": "badge", "badge": "big-basket"},
                         {"type": "benefit", "benefit": {"code": "free_shipping", "name": "Free shipping"}, "days": 30}]}
        ]
    }))
    .unwrap();
    load_with_member(store, &doc).await
}

/// Stores the program and enrols the member `m` in it.
async fn load_with_member(store: &Store, doc: &ProgramDocument) -> Arc<LoadedProgram> {
    let program = Program::compile(doc, None).unwrap_or_else(|e| panic!("{e:?}"));
    let (loaded, _) = store
        .put_program(&program, utc("2026-01-01T00:00:00Z"), &Actor::cli())
        .await
        .unwrap();
    store
        .enroll(
            &loaded,
            &Enrollment {
                external_id: ExternalId::parse("m").unwrap(),
                profile: json!({}),
                enrolled_at: utc("2026-01-01T00:00:00Z"),
            },
            utc("2026-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    loaded
}

async fn buy(
    store: &Store,
    program: &Arc<LoadedProgram>,
    id: &str,
    amount: &str,
    at: DateTime<Utc>,
) -> serde_json::Value {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": "m", "type": "purchase", "occurred_at": at.to_rfc3339(),
        "amount": amount, "currency": "EUR"}))
    .unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap();
    let posted = store
        .post_realtime(
            program,
            Prepared::new(journal, &program.program).unwrap(),
            at,
        )
        .await
        .unwrap()
        .unwrap();
    serde_json::to_value(&posted.outcome.promotions).unwrap()
}

async fn badges_are_held_once_or_counted_and_benefits_last_their_period(store: Store) {
    let program = setup(&store).await;
    let t = utc("2026-03-01T10:00:00Z");
    let rewards = buy(&store, &program, "p1", "120.00", t).await;
    let kinds: Vec<&str> = rewards
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["rewards"].as_array().unwrap())
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{rewards}");
    buy(&store, &program, "p2", "150.00", t + Duration::days(10)).await;
    buy(&store, &program, "p3", "20.00", t + Duration::days(11)).await;
    // A replay is answered, not processed: nothing is awarded again.
    buy(&store, &program, "p2", "150.00", t + Duration::days(10)).await;
    let m = store.require_member(&program, "m").await.unwrap();
    let badges = store.member_badges(&program.program, m.id).await.unwrap();
    let held: Vec<(&str, &str, i64)> = badges
        .iter()
        .map(|b| (b.badge.as_str(), b.name.as_str(), b.times))
        .collect();
    assert_eq!(
        held,
        [
            ("big-basket", "Big basket", 2),
            ("first-buy", "First buy", 1)
        ]
    );
    assert_eq!(badges[1].source, "promotion:welcome");
    assert_eq!(badges[0].last_at, t + Duration::days(10));
    // Two grants of free shipping, each for 30 days from its journal.
    let now = t + Duration::days(20);
    let granted = store.member_benefits(m.id, now).await.unwrap();
    let ends: Vec<DateTime<Utc>> = granted.iter().map(|g| g.ends_at).collect();
    assert_eq!(ends, [t + Duration::days(30), t + Duration::days(40)]);
    assert!(
        granted
            .iter()
            .all(|g| g.code == "free_shipping" && g.source == "promotion:big")
    );
    assert_eq!(
        store
            .member_benefits(m.id, t + Duration::days(30))
            .await
            .unwrap()
            .len(),
        1,
        "the first ended: half-open"
    );
    assert!(
        store
            .member_benefits(m.id, t + Duration::days(40))
            .await
            .unwrap()
            .is_empty()
    );
    // A merge brings the source's badges and benefits to the survivor; a badge both hold
    // stays the survivor's.
    store
        .enroll(
            &program,
            &Enrollment {
                external_id: ExternalId::parse("n").unwrap(),
                profile: json!({}),
                enrolled_at: utc("2026-01-01T00:00:00Z"),
            },
            utc("2026-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": "n1", "member": "n", "type": "purchase", "occurred_at": now.to_rfc3339(),
        "amount": "200.00", "currency": "EUR"}))
    .unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap();
    store
        .post_realtime(
            &program,
            Prepared::new(journal, &program.program).unwrap(),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .merge_members(&program, "n", "m", now, &Actor::cli())
        .await
        .unwrap();
    let badges = store.member_badges(&program.program, m.id).await.unwrap();
    assert_eq!(
        badges
            .iter()
            .map(|b| (b.badge.as_str(), b.times))
            .collect::<Vec<_>>(),
        [("big-basket", 2), ("first-buy", 1)]
    );
    assert_eq!(store.member_benefits(m.id, now).await.unwrap().len(), 3);
    // A badge action must name a defined badge.
    let mut doc = program.program.document.clone();
    doc.badges.clear();
    let problems = Program::compile(&doc, None).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "promotions[0].actions[0].badge"),
        "{problems:?}"
    );
}

fn journal(program: &LoadedProgram, id: &str, amount: &str, at: DateTime<Utc>) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": "m", "type": "purchase", "occurred_at": at.to_rfc3339(),
        "amount": amount, "currency": "EUR"}))
    .unwrap();
    Prepared::new(
        Journal::parse(&doc, &program.program).unwrap(),
        &program.program,
    )
    .unwrap()
}

/// Points a journal's outcome awarded in total.
fn earned(result: &fidelis_store::JournalResult) -> i64 {
    let posted = result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let awards = serde_json::to_value(&posted.outcome.awards).unwrap();
    awards
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["points"].as_i64().unwrap())
        .sum()
}

/// A big basket grants "double points" for 7 days: a multiplier by that benefit's value and
/// a condition reading `member.benefits` see it from the next journal on — in the same
/// batch as well as in later ones — until it ends (half-open), and not before it started.
async fn a_granted_benefit_counts_in_promotions_while_it_holds(store: Store) {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "boost", "name": "Boost", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "promotions": [
            {"code": "grant", "name": "Big basket", "status": "active", "condition": "journal.amount >= 500.0",
             "actions": [{"type": "benefit", "benefit": {"code": "double", "name": "Double points", "value": "2"}, "days": 7}]},
            {"code": "doubled", "name": "Double points", "status": "active",
             "actions": [{"type": "multiplier", "currency": "points", "factor_benefit": "double"}]},
            {"code": "thanks", "name": "Thanks", "status": "active", "condition": "'double' in member.benefits",
             "actions": [{"type": "fixed", "currency": "points", "points": 5}]}
        ]
    }))
    .unwrap();
    let program = load_with_member(&store, &doc).await;
    assert!(program.program.reads_granted_benefits());
    let t = utc("2026-03-01T10:00:00Z");
    // One batch: the grant, then a journal that already earns double and the thanks.
    let results = store
        .post_journals(
            &program,
            &[
                journal(&program, "b1", "600.00", t),
                journal(&program, "b2", "100.00", t + Duration::hours(1)),
            ],
            t + Duration::hours(2),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        earned(&results[0]),
        600,
        "the granting journal itself is not doubled"
    );
    assert_eq!(earned(&results[1]), 205);
    // Later, realtime: still doubled on day 6, no longer at the end of day 7.
    let post = |id: &'static str, at: DateTime<Utc>| {
        let (store, program) = (store.clone(), program.clone());
        async move {
            store
                .post_realtime(&program, journal(&program, id, "100.00", at), at)
                .await
                .unwrap()
        }
    };
    assert_eq!(earned(&post("r1", t + Duration::days(6)).await), 205);
    assert_eq!(earned(&post("r2", t + Duration::days(7)).await), 100);
    // A journal dated before the grant does not see it.
    assert_eq!(
        earned(&post("r0", t - Duration::hours(1)).await),
        100,
        "backdated before the grant"
    );
    // A grant ends with the cancellation of its journal.
    let later = t + Duration::days(20);
    assert_eq!(earned(&post("g2", later).await), 100);
    let big = store
        .post_realtime(&program, journal(&program, "g3", "700.00", later), later)
        .await
        .unwrap();
    assert_eq!(earned(&big), 700);
    assert_eq!(earned(&post("g4", later + Duration::hours(1)).await), 205);
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": "c3", "member": "m", "type": "cancellation",
        "occurred_at": (later + Duration::hours(2)).to_rfc3339(), "original_external_id": "g3"}))
    .unwrap();
    let cancel = Prepared::new(
        Journal::parse(&doc, &program.program).unwrap(),
        &program.program,
    )
    .unwrap();
    store
        .post_realtime(&program, cancel, later + Duration::hours(2))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(earned(&post("g5", later + Duration::hours(3)).await), 100);
    let m = store.require_member(&program, "m").await.unwrap();
    assert!(
        store
            .member_benefits(m.id, later + Duration::hours(3))
            .await
            .unwrap()
            .is_empty()
    );
}
