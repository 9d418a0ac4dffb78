//! Rewards no purchase triggers, on both databases: birthday (on the day, in the program's
//! time zone, and during the birthday month), membership anniversary and win-back — once
//! per period across repeated runs and a run that crashed between awarding and recording,
//! never for suspended members, and audited.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::ledger::MemberStatus;
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, AuditFilter, Enrollment, LoadedProgram, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(
    birthdays_are_rewarded_on_the_local_day_once_a_year,
    anniversaries_and_win_backs_are_rewarded_once_per_period,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test instant")
        .with_timezone(&Utc)
}

async fn program(store: &Store, promotions: serde_json::Value) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "cafe", "name": "Café", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "stars", "name": "Stars", "kind": "redeemable", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "stars", "rate": "1"}]},
        "promotions": promotions
    }))
    .expect("a program document");
    let program = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    store
        .put_program(&program, utc("2020-01-01T00:00:00Z"), &Actor::cli())
        .await
        .expect("stored")
        .0
}

async fn enroll(
    store: &Store,
    p: &LoadedProgram,
    member: &str,
    profile: serde_json::Value,
    at: &str,
) {
    store
        .enroll(
            p,
            &Enrollment {
                external_id: ExternalId::parse(member).expect("an id"),
                profile,
                enrolled_at: utc(at),
            },
            utc(at),
        )
        .await
        .expect("enrolled");
}

async fn stars(store: &Store, p: &LoadedProgram, member: &str) -> i64 {
    let m = store.require_member(p, member).await.expect("a member");
    store
        .balances(p, &m, utc("2030-01-01T00:00:00Z"))
        .await
        .expect("balances")[0]
        .available
}

async fn jobs(store: &Store, p: &LoadedProgram, at: &str) -> u64 {
    store
        .run_jobs(p, utc(at))
        .await
        .expect("jobs ran")
        .scheduled_rewards
}

async fn birthdays_are_rewarded_on_the_local_day_once_a_year(store: Store) {
    let p = program(
        &store,
        json!([
            {"code": "birthday", "name": "Birthday treat", "status": "active",
             "trigger": {"type": "birthday"},
             "actions": [{"type": "fixed", "currency": "stars", "points": 500}]},
            {"code": "birthday-month", "name": "Birthday month", "status": "active",
             "trigger": {"type": "birthday", "window": "month"},
             "actions": [{"type": "fixed", "currency": "stars", "points": 7}]}
        ]),
    )
    .await;
    let at = "2026-01-01T00:00:00Z";
    enroll(&store, &p, "ada", json!({"birthday": "1990-06-15"}), at).await;
    enroll(&store, &p, "bob", json!({"birthday": "2000-02-29"}), at).await;
    enroll(&store, &p, "cy", json!({"birthday": "1985-06-15"}), at).await;
    enroll(&store, &p, "dee", json!({"name": "No birthday given"}), at).await;
    store
        .set_member_status(&p, "cy", MemberStatus::Suspended, utc(at), &Actor::cli())
        .await
        .expect("suspended");

    // The dry run, looking ahead to 15 June: what the jobs would award, writing nothing.
    let due = store
        .scheduled_rewards_due(&p, utc("2026-06-14T22:30:00Z"), 100)
        .await
        .expect("the dry run");
    let due: Vec<(&str, &str, &str, i64)> = due
        .iter()
        .map(|d| {
            (
                d.promotion.as_str(),
                d.member.as_str(),
                d.period.as_str(),
                d.points,
            )
        })
        .collect();
    assert_eq!(
        due,
        [
            ("birthday", "ada", "2026", 500),
            ("birthday-month", "ada", "2026", 7)
        ]
    );
    assert_eq!(stars(&store, &p, "ada").await, 0);
    // 14 June, 23:30 in Berlin: not yet. The month reward is due all June.
    assert_eq!(jobs(&store, &p, "2026-06-14T21:30:00Z").await, 1);
    assert_eq!(stars(&store, &p, "ada").await, 7);
    // 15 June, 00:30 in Berlin (still the 14th in UTC): the birthday.
    assert_eq!(jobs(&store, &p, "2026-06-14T22:30:00Z").await, 1);
    assert_eq!(stars(&store, &p, "ada").await, 507);
    // Again that day, and later in June: nothing more.
    assert_eq!(jobs(&store, &p, "2026-06-15T10:00:00Z").await, 0);
    assert_eq!(jobs(&store, &p, "2026-06-30T10:00:00Z").await, 0);
    assert!(
        store
            .scheduled_rewards_due(&p, utc("2026-06-15T10:00:00Z"), 100)
            .await
            .expect("the dry run")
            .is_empty()
    );
    // A run that crashed after awarding but before recording: the next one awards
    // nothing twice (the journals' external ids are the same).
    store
        .forget_scheduled_rewards_for_test()
        .await
        .expect("forgotten");
    assert_eq!(jobs(&store, &p, "2026-06-15T11:00:00Z").await, 0);
    assert_eq!(stars(&store, &p, "ada").await, 507);
    // Never for a suspended member; a member without a birthday is never due.
    assert_eq!(stars(&store, &p, "cy").await, 0);
    assert_eq!(stars(&store, &p, "dee").await, 0);
    // Born on 29 February: celebrated on the 28th in 2027.
    assert_eq!(jobs(&store, &p, "2027-02-28T12:00:00Z").await, 2);
    assert_eq!(stars(&store, &p, "bob").await, 507);
    // Next year, again once.
    assert_eq!(jobs(&store, &p, "2027-06-15T12:00:00Z").await, 2);
    assert_eq!(jobs(&store, &p, "2027-06-15T13:00:00Z").await, 0);
    assert_eq!(stars(&store, &p, "ada").await, 1014);
    // Audited, per promotion and run that awarded something.
    let audit = store
        .audit(&AuditFilter {
            action: Some("promotion.scheduled".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("the audit log");
    assert_eq!(audit.len(), 6, "{audit:#?}");
    assert!(audit.iter().all(|(_, e)| e.actor == "jobs"));
}

async fn anniversaries_and_win_backs_are_rewarded_once_per_period(store: Store) {
    let p = program(
        &store,
        json!([
            {"code": "anniversary", "name": "Thank you for a year", "status": "active",
             "trigger": {"type": "anniversary"},
             "actions": [{"type": "fixed", "currency": "stars", "points": 100}]},
            {"code": "win-back", "name": "We miss you", "status": "active",
             "trigger": {"type": "inactivity", "days": 30},
             "actions": [{"type": "fixed", "currency": "stars", "points": 20}]}
        ]),
    )
    .await;
    // Ada enrolled on 10 March 2025 (Berlin), late in the evening UTC of the 9th.
    enroll(&store, &p, "ada", json!({}), "2025-03-09T23:30:00Z").await;
    enroll(&store, &p, "bob", json!({}), "2026-03-01T10:00:00Z").await;
    let buy = |id: &str, member: &str, at: &str| {
        let doc: JournalDocument = serde_json::from_value(json!({
            "external_id": id, "member": member, "type": "purchase", "occurred_at": at,
            "amount": "10.00", "currency": "EUR"}))
        .expect("a journal");
        Prepared::new(
            Journal::parse(&doc, &p.program).expect("parsed"),
            &p.program,
        )
        .expect("prepared")
    };
    let post = async |j: Prepared, now: &str| {
        store
            .post_journals(&p, &[j], utc(now), None)
            .await
            .expect("posted")
            .remove(0)
            .expect("applied");
    };
    post(
        buy("a1", "ada", "2026-03-01T10:00:00Z"),
        "2026-03-01T10:00:00Z",
    )
    .await;
    post(
        buy("b1", "bob", "2026-03-05T10:00:00Z"),
        "2026-03-05T10:00:00Z",
    )
    .await;

    // 10 March 2026, 00:30 in Berlin (UTC+1): ada's first anniversary (no one is inactive 30 days yet).
    assert_eq!(
        jobs(&store, &p, "2026-03-09T22:30:00Z").await,
        0,
        "23:30 in Berlin: not yet"
    );
    assert_eq!(jobs(&store, &p, "2026-03-09T23:30:00Z").await, 1);
    assert_eq!(stars(&store, &p, "ada").await, 10 + 100);
    assert_eq!(jobs(&store, &p, "2026-03-10T20:00:00Z").await, 0);
    // 31 March: ada's last purchase was 30 days ago; bob's 26.
    assert_eq!(jobs(&store, &p, "2026-03-31T10:00:00Z").await, 1);
    assert_eq!(stars(&store, &p, "ada").await, 10 + 100 + 20);
    // The reward is no activity: still inactive, still the same stretch — once.
    assert_eq!(
        jobs(&store, &p, "2026-05-01T10:00:00Z").await,
        1,
        "bob's turn only"
    );
    assert_eq!(jobs(&store, &p, "2026-06-01T10:00:00Z").await, 0);
    assert_eq!(stars(&store, &p, "bob").await, 10 + 20);
    // Ada buys again: a new stretch, rewarded once it too lasts 30 days.
    post(
        buy("a2", "ada", "2026-06-02T10:00:00Z"),
        "2026-06-02T10:00:00Z",
    )
    .await;
    assert_eq!(jobs(&store, &p, "2026-06-20T10:00:00Z").await, 0);
    assert_eq!(jobs(&store, &p, "2026-07-03T10:00:00Z").await, 1);
    assert_eq!(stars(&store, &p, "ada").await, 10 + 100 + 20 + 10 + 20);
}
