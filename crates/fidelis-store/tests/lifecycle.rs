//! The member lifecycle on both databases: tiers (upgrades inside journals, assessments by
//! jobs and before journals, both downgrade policies, membership years, rolling windows,
//! grace, refunds), their audit trail and manual assignment.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::book::Book;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{AuditFilter, Enrollment, LoadedProgram, Prepared, Store, StoreError};
use serde_json::json;

/// Generates, for each listed test function `f(Store)`, one test per dialect.
macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = fidelis_testkit::sqlite_db();
                    let store = fidelis_store::Store::connect(&db.url).await.expect("connect to SQLite");
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let url = fidelis_testkit::pg_url();
                    let store = fidelis_store::Store::connect(&url).await.expect("connect to PostgreSQL");
                    super::$name(store).await;
                }
            )*
        }
    };
}

both_dialects!(
    the_store_agrees_with_the_reference_book_on_tiers,
    tier_changes_and_manual_assignments_are_audited,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

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

/// Points (rolling 12 months) and status (qualifying) at 1 per euro, and three tier
/// groups: status points by calendar year (one tier down, a month's grace), visits in a
/// rolling two months (down to what the window supports), and spend by membership year
/// (kept a year longer).
fn tier_program() -> ProgramDocument {
    serde_json::from_value(json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [
            {"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "months": 12}},
            {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
        "tier_groups": [
            {"code": "status", "currency": "status", "downgrade": "one_tier", "grace": {"months": 1},
             "tiers": [{"code": "member", "threshold": 0}, {"code": "silver", "threshold": 300},
                       {"code": "gold", "threshold": 900,
                        "benefits": [{"code": "lounge"}], "expiry_extension": {"months": 3}}]},
            {"code": "visits", "measure": "activities", "period": {"type": "rolling", "months": 2},
             "downgrade": "to_qualified",
             "tiers": [{"code": "occasional", "threshold": 0}, {"code": "regular", "threshold": 3},
                       {"code": "frequent", "threshold": 6}]},
            {"code": "spend", "measure": "spend", "period": {"type": "anniversary"}, "validity_periods": 1,
             "tiers": [{"code": "low", "threshold": 0}, {"code": "mid", "threshold": 20000},
                       {"code": "high", "threshold": 60000}]}],
        "promotions": [
            {"code": "gold-bonus", "name": "Gold bonus", "status": "active",
             "condition": "member.tiers.status == 'gold' && has(member.benefits.lounge)",
             "actions": [{"type": "fixed", "currency": "points", "points": 13}]},
            {"code": "frequent-bonus", "name": "Frequent visitors", "status": "active",
             "eligibility": {"tiers": ["frequent"]},
             "actions": [{"type": "fixed", "currency": "points", "points": 7}]}]
    }))
    .unwrap()
}

async fn put(store: &Store, doc: &ProgramDocument) -> Arc<LoadedProgram> {
    let program = Program::compile(doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    store
        .put_program(
            &program,
            utc("2026-01-01T00:00:00Z"),
            &fidelis_store::Actor::cli(),
        )
        .await
        .unwrap()
        .0
}

async fn enroll_at(store: &Store, program: &LoadedProgram, member: &str, at: DateTime<Utc>) {
    store
        .enroll(
            program,
            &Enrollment {
                external_id: ExternalId::parse(member).unwrap(),
                profile: json!({}),
                enrolled_at: at,
            },
            at,
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
) -> fidelis_core::outcome::Outcome {
    let j = journal(program, doc);
    store
        .post_journals(program, &[j], utc(now), None)
        .await
        .unwrap()
        .remove(0)
        .unwrap_or_else(|e| panic!("{e}"))
        .outcome
}

async fn tier_of(store: &Store, program: &LoadedProgram, member: &str, group: &str, now: &str) -> String {
    store
        .tier_standing(program, member, utc(now))
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.group == group)
        .unwrap()
        .tier
}

/// Random histories over two years for members enrolled on different days, posted to the
/// store and to the in-memory book, with the scheduled jobs run now and then: every
/// outcome (tier changes and qualifying resets included) and every final standing agree,
/// the history reached every kind of tier change — downgrades under both policies (spend:
/// one tier, visits: to what the window supports), membership years, a rolling window, a
/// grace period — and each one is in the audit trail.
async fn the_store_agrees_with_the_reference_book_on_tiers(store: Store) {
    let program = put(&store, &tier_program()).await;
    let mut book = Book::new(program.program.clone());
    let mut reasons = std::collections::BTreeSet::new();
    let mut resets = 0;
    let mut all_names = Vec::new();
    let mut now = utc("2026-01-01T10:00:00Z");
    for seed in 1..=3u64 {
        let mut rng = Lcg(seed);
        let names: Vec<String> = ["a", "b", "c"].iter().map(|m| format!("{m}{seed}")).collect();
        for (i, name) in names.iter().enumerate() {
            let at = utc("2026-01-01T09:00:00Z") + Duration::days(37 * seed as i64 + 50 * i as i64);
            enroll_at(&store, &program, name, at).await;
            book.enroll_at(&ExternalId::parse(name).unwrap(), at);
        }
        all_names.extend(names.clone());
        now = now.max(utc("2026-06-01T10:00:00Z"));
        let mut posted: Vec<(String, String)> = Vec::new();
        for step in 0..90 {
            now += Duration::hours(rng.next(320) as i64);
            let member = names[rng.next(3) as usize].clone();
            let id = format!("t{seed}-{step}");
            let at = now.to_rfc3339();
            let doc = match rng.next(8) {
                0..=3 => json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": at,
                                "amount": format!("{}.{:02}", rng.next(260), rng.next(100)), "currency": "EUR"}),
                4 if !posted.is_empty() => {
                    let (original, owner) = posted[rng.next(posted.len() as u64) as usize].clone();
                    json!({"external_id": id, "member": owner, "type": "refund", "occurred_at": at,
                           "original_external_id": original})
                }
                5 if !posted.is_empty() => {
                    let (original, owner) = posted[rng.next(posted.len() as u64) as usize].clone();
                    json!({"external_id": id, "member": owner, "type": "cancellation", "occurred_at": at,
                           "original_external_id": original})
                }
                6 => json!({"external_id": id, "member": member, "type": "redemption", "occurred_at": at,
                            "currency": "points", "points": 1 + rng.next(80)}),
                _ => json!({"external_id": id, "member": member, "type": "adjustment", "occurred_at": at,
                            "currency": "status", "points": 1 + rng.next(300), "reason": "goodwill"}),
            };
            let j = journal(&program, doc);
            let expected = book.post(&j.journal, now).map(|(o, _)| o);
            let got = store
                .post_journals(&program, &[j.clone()], now, None)
                .await
                .unwrap()
                .remove(0)
                .map(|p| p.outcome);
            assert_eq!(got, expected, "seed {seed}, step {step}: {:?}", j.journal);
            if let Ok(o) = &got {
                reasons.extend(o.tier_changes.iter().map(|c| format!("{}:{}", c.group, c.reason)));
                resets += o.reset.len();
                if matches!(j.journal.body, fidelis_core::journal::JournalBody::Accrual(_)) {
                    posted.push((j.journal.external_id.to_string(), j.journal.member.to_string()));
                }
            }
            if rng.next(6) == 0 {
                book.settle_all(now);
                store.run_jobs(&program, now).await.unwrap();
            }
        }
    }
    book.settle_all(now);
    store.run_jobs(&program, now).await.unwrap();
    for (_, change) in book.tier_changes() {
        reasons.insert(format!("{}:{}", change.group, change.reason));
    }
    for name in &all_names {
        let ledger = book.ledger(&ExternalId::parse(name).unwrap()).unwrap();
        let expected = ledger.tiers.as_ref().unwrap();
        let standing = store.tier_standing(&program, name, now).await.unwrap();
        for (g, s) in standing.iter().enumerate() {
            let e = expected.status(&s.group).unwrap();
            assert_eq!(
                (&s.tier, s.grace_until, s.progress),
                (&e.tier, e.grace_until, expected.progress(&program.program, g, now)),
                "{name} {}",
                s.group
            );
        }
    }
    for r in [
        // Status has a grace period: its downgrades come when the grace ends.
        "status:upgrade",
        "status:grace_ended",
        "visits:upgrade",
        "visits:assessment",
        "spend:upgrade",
        "spend:assessment",
    ] {
        assert!(reasons.contains(r), "{r} never happened: {reasons:?}");
    }
    assert!(resets > 0, "no qualifying balance was ever reset");
    let audited = store
        .audit(&AuditFilter {
            program: Some("shop".into()),
            action: Some("tier.change".into()),
            limit: 1_000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), book.tier_changes().len(), "one audit entry per tier change");
}

/// An upgrade names its journal, an assessment by the jobs its period end, a manual
/// assignment its agent and reason; a refused assignment changes nothing.
async fn tier_changes_and_manual_assignments_are_audited(store: Store) {
    let program = put(&store, &tier_program()).await;
    enroll_at(&store, &program, "m", utc("2026-01-01T09:00:00Z")).await;
    let out = post(
        &store,
        &program,
        json!({"external_id": "big", "member": "m", "type": "purchase", "occurred_at": "2026-03-01T10:00:00Z",
               "amount": "350.00", "currency": "EUR"}),
        "2026-03-01T10:00:00Z",
    )
    .await;
    let ups: Vec<(&str, &str)> = out
        .tier_changes
        .iter()
        .map(|c| (c.group.as_str(), c.to.as_str()))
        .collect();
    assert_eq!(ups, [("status", "silver"), ("spend", "mid")]);
    assert_eq!(tier_of(&store, &program, "m", "status", "2026-03-02T00:00:00Z").await, "silver");

    let agent = fidelis_store::Actor {
        name: "alice".into(),
        role: "agent".into(),
    };
    let refused = store
        .assign_tier(&program, "m", "status", "platinum", None, "vip", utc("2026-04-01T10:00:00Z"), &agent)
        .await;
    assert!(matches!(refused, Err(StoreError::Refused("unknown_tier", _))), "{refused:?}");
    let change = store
        .assign_tier(
            &program,
            "m",
            "status",
            "gold",
            Some(utc("2027-07-01T00:00:00Z")),
            "complaint 4711: goodwill",
            utc("2026-04-01T10:00:00Z"),
            &agent,
        )
        .await
        .unwrap();
    assert_eq!((change.from.unwrap().as_str(), change.to.as_str()), ("silver", "gold"));
    // Gold holds past the 2026 assessment (nothing earned since), by its validity.
    store.run_jobs(&program, utc("2027-01-01T10:00:00Z")).await.unwrap();
    assert_eq!(tier_of(&store, &program, "m", "status", "2027-01-01T10:00:00Z").await, "gold");
    // The 2027 assessment, a month's grace later: one tier down.
    store.run_jobs(&program, utc("2028-02-01T10:00:00Z")).await.unwrap();
    assert_eq!(tier_of(&store, &program, "m", "status", "2028-02-01T10:00:00Z").await, "silver");

    let audit = store
        .audit(&AuditFilter {
            program: Some("shop".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let tiers: Vec<(String, String, String, String)> = audit
        .iter()
        .rev()
        .filter(|(_, e)| e.action.starts_with("tier.") && e.before.as_ref().unwrap()["group"] == "status")
        .map(|(_, e)| {
            let after = e.after.as_ref().unwrap();
            (
                e.actor.clone(),
                e.action.clone(),
                after["tier"].as_str().unwrap().to_owned(),
                after["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tiers,
        [
            ("system".into(), "tier.change".into(), "silver".into(), "upgrade".into()),
            ("alice".into(), "tier.assign".into(), "gold".into(), "complaint 4711: goodwill".into()),
            ("system".into(), "tier.change".into(), "silver".into(), "grace_ended".into()),
        ]
    );
    let upgrade = audit
        .iter()
        .find(|(_, e)| e.action == "tier.change" && e.after.as_ref().unwrap()["reason"] == "upgrade")
        .unwrap();
    assert_eq!(upgrade.1.subject.as_deref(), Some("m"));
    assert_eq!(upgrade.1.after.as_ref().unwrap()["journal"], "big");
    assert_eq!(upgrade.1.at, utc("2026-03-01T10:00:00Z"));
}
