//! The member lifecycle on both databases: tiers (upgrades inside journals, assessments by
//! jobs and before journals, both downgrade policies, membership years, rolling windows,
//! grace, refunds), their audit trail and manual assignment; transfers, reinstatement of
//! expired points, and merging members.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::book::Book;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{AuditFilter, Enrollment, LoadedProgram, Prepared, Store, StoreError};
use serde_json::json;

fidelis_testkit::store_tests!(
    the_store_agrees_with_the_reference_book_on_tiers,
    tier_changes_and_manual_assignments_are_audited,
    transfers_keep_the_daily_limit_exactly_and_show_on_both_sides,
    reinstatement_reaches_back_exactly_n_local_days,
    reinstated_inactivity_points_stay_spendable,
    tiers_follow_available_qualifying_points,
    balance_tiers_move_with_the_balance_and_manual_tiers_by_hand,
    tier_validity_counts_from_entering_the_tier_and_renews_at_its_threshold,
    merging_moves_points_tiers_and_counters_and_later_journals,
    a_referral_rewards_both_members_once_per_referee,
    households_pool_a_share_of_earning_and_their_rule_says_who_spends,
    a_journal_whose_points_arrive_expired_keeps_the_other_expiries,
    a_refund_costs_the_tier_at_the_next_assessment,
);

fn balances(ledger: &fidelis_core::ledger::MemberLedger) -> Vec<i64> {
    ledger.accounts.iter().map(|a| a.available).collect()
}

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

async fn tier_of(
    store: &Store,
    program: &LoadedProgram,
    member: &str,
    group: &str,
    now: &str,
) -> String {
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
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|m| format!("{m}{seed}"))
            .collect();
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
                0..=3 => {
                    json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": at,
                                "amount": format!("{}.{:02}", rng.next(260), rng.next(100)), "currency": "EUR"})
                }
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
                6 => {
                    json!({"external_id": id, "member": member, "type": "redemption", "occurred_at": at,
                            "currency": "points", "points": 1 + rng.next(80)})
                }
                _ => {
                    json!({"external_id": id, "member": member, "type": "adjustment", "occurred_at": at,
                            "currency": "status", "points": 1 + rng.next(300), "reason": "goodwill"})
                }
            };
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
                reasons.extend(
                    o.tier_changes
                        .iter()
                        .map(|c| format!("{}:{}", c.group, c.reason)),
                );
                resets += o.reset.len();
                if matches!(
                    j.journal.body,
                    fidelis_core::journal::JournalBody::Accrual(_)
                ) {
                    posted.push((
                        j.journal.external_id.to_string(),
                        j.journal.member.to_string(),
                    ));
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
        let mut settled = ledger.clone();
        let _ = fidelis_core::process::settle(
            &program.program,
            &mut settled,
            fidelis_core::ids::JournalId(0),
            now,
        );
        let expected = settled.tiers.as_ref().unwrap();
        let standing = store.tier_standing(&program, name, now).await.unwrap();
        for (g, s) in standing.iter().enumerate() {
            let e = expected.status(&s.group).unwrap();
            assert_eq!(
                (&s.tier, s.grace_until, s.progress),
                (
                    &e.tier,
                    e.grace_until,
                    expected.progress(&program.program, g, &balances(&settled), now)
                ),
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
    assert_eq!(
        audited.len(),
        book.tier_changes().len(),
        "one audit entry per tier change"
    );
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
    assert_eq!(
        tier_of(&store, &program, "m", "status", "2026-03-02T00:00:00Z").await,
        "silver"
    );

    let agent = fidelis_store::Actor {
        name: "alice".into(),
        role: "agent".into(),
    };
    let refused = store
        .assign_tier(
            &program,
            "m",
            "status",
            "platinum",
            None,
            "vip",
            utc("2026-04-01T10:00:00Z"),
            &agent,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused("unknown_tier", _))),
        "{refused:?}"
    );
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
    assert_eq!(
        (change.from.unwrap().as_str(), change.to.as_str()),
        ("silver", "gold")
    );
    // Gold holds past the 2026 assessment (nothing earned since), by its validity.
    store
        .run_jobs(&program, utc("2027-01-01T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&store, &program, "m", "status", "2027-01-01T10:00:00Z").await,
        "gold"
    );
    // The 2027 assessment, a month's grace later: one tier down.
    store
        .run_jobs(&program, utc("2028-02-01T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&store, &program, "m", "status", "2028-02-01T10:00:00Z").await,
        "silver"
    );

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
        .filter(|(_, e)| {
            e.action.starts_with("tier.") && e.before.as_ref().unwrap()["group"] == "status"
        })
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
            (
                "system".into(),
                "tier.change".into(),
                "silver".into(),
                "upgrade".into()
            ),
            (
                "alice".into(),
                "tier.assign".into(),
                "gold".into(),
                "complaint 4711: goodwill".into()
            ),
            (
                "system".into(),
                "tier.change".into(),
                "silver".into(),
                "grace_ended".into()
            ),
        ]
    );
    let upgrade = audit
        .iter()
        .find(|(_, e)| {
            e.action == "tier.change" && e.after.as_ref().unwrap()["reason"] == "upgrade"
        })
        .unwrap();
    assert_eq!(upgrade.1.subject.as_deref(), Some("m"));
    assert_eq!(upgrade.1.after.as_ref().unwrap()["journal"], "big");
    assert_eq!(upgrade.1.at, utc("2026-03-01T10:00:00Z"));
}

/// Points valid ten days (reinstatable for five), transferable up to 100 a day; status
/// points toward silver (100); a welcome bonus once per member.
fn points_program() -> ProgramDocument {
    serde_json::from_value(json!({
        "code": "club", "name": "Club", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [
            {"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 10},
             "transfer": {"daily_limit": 100}, "reinstate_within_days": 5},
            {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
        "tier_groups": [{"code": "status", "currency": "status",
            "tiers": [{"code": "member", "threshold": 0}, {"code": "silver", "threshold": 100}]}],
        "promotions": [{"code": "welcome", "name": "Welcome", "status": "active",
            "limits": {"per_member": {"times": 1}}, "actions": [{"type": "fixed", "currency": "points", "points": 5}]}]
    }))
    .unwrap()
}

async fn points_of(store: &Store, program: &LoadedProgram, member: &str, now: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store.balances(program, &m, utc(now)).await.unwrap()[0].available
}

fn buy(id: &str, member: &str, amount: &str, at: &str) -> serde_json::Value {
    json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": at, "amount": amount, "currency": "EUR"})
}

/// 100 a day from one member: 60 + 40 pass, 50 more is refused until the next local
/// day; a replay changes nothing; concurrent transfers never exceed the limit; the
/// points arrive with the expiry they had.
async fn transfers_keep_the_daily_limit_exactly_and_show_on_both_sides(store: Store) {
    let program = put(&store, &points_program()).await;
    for m in ["a", "b", "c"] {
        enroll_at(&store, &program, m, utc("2026-06-01T08:00:00Z")).await;
    }
    post(
        &store,
        &program,
        buy("p1", "a", "295.00", "2026-06-02T10:00:00Z"),
        "2026-06-02T10:00:00Z",
    )
    .await;
    assert_eq!(
        points_of(&store, &program, "a", "2026-06-02T10:00:00Z").await,
        300
    );
    let id = |s: &str| ExternalId::parse(s).unwrap();
    let at = utc("2026-06-03T21:30:00Z"); // 23:30 in Berlin
    let (out, replayed) = store
        .transfer(&program, "a", "b", "points", 60, &id("t1"), at)
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(out.debited[0].points, 60);
    let refused = store
        .transfer(&program, "a", "b", "points", 50, &id("t2"), at)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused("transfer_limit", _))),
        "{refused:?}"
    );
    store
        .transfer(&program, "a", "c", "points", 40, &id("t3"), at)
        .await
        .unwrap();
    let again = store
        .transfer(&program, "a", "b", "points", 60, &id("t1"), at)
        .await
        .unwrap();
    assert!(again.1, "a replay");
    let conflict = store
        .transfer(&program, "a", "b", "points", 61, &id("t1"), at)
        .await;
    assert!(
        matches!(
            conflict,
            Err(StoreError::Refused("idempotency_conflict", _))
        ),
        "{conflict:?}"
    );
    let status = store
        .transfer(&program, "a", "b", "status", 1, &id("t4"), at)
        .await;
    assert!(
        matches!(status, Err(StoreError::Refused("not_transferable", _))),
        "{status:?}"
    );
    assert_eq!(
        points_of(&store, &program, "a", "2026-06-03T22:00:00Z").await,
        200
    );
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-03T22:00:00Z").await,
        60
    );
    assert_eq!(
        points_of(&store, &program, "c", "2026-06-03T22:00:00Z").await,
        40
    );
    // The points keep their expiry: gone at 2026-06-12 10:00 UTC on both sides.
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-12T09:59:59Z").await,
        60
    );
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-12T10:00:00Z").await,
        0
    );

    // The next local day (midnight in Berlin): six concurrent transfers of 30, at most
    // three fit in the day's 100.
    let next = utc("2026-06-03T22:00:00Z");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            store
                .transfer(
                    &program,
                    "a",
                    "b",
                    "points",
                    30,
                    &ExternalId::parse(&format!("c{i}")).unwrap(),
                    next,
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Refused("transfer_limit", _)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(
        points_of(&store, &program, "a", "2026-06-04T00:00:00Z").await,
        110
    );
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-04T00:00:00Z").await,
        150
    );
    // Traceable on both sides: each ledger shows transfer entries.
    for (member, sign) in [("a", -1), ("b", 1)] {
        let m = store.require_member(&program, member).await.unwrap();
        let entries = store.ledger(&m, None, 100).await.unwrap();
        let transfers: Vec<i64> = entries
            .iter()
            .filter(|e| e.kind == "transfer")
            .map(|e| e.amount)
            .collect();
        assert!(
            !transfers.is_empty() && transfers.iter().all(|a| a.signum() == sign),
            "{member}: {transfers:?}"
        );
    }
}

/// Points that expired at the first instant of the local day five days back are
/// reinstated; a microsecond earlier they are not; reinstating twice gives nothing more.
async fn reinstatement_reaches_back_exactly_n_local_days(store: Store) {
    let program = put(&store, &points_program()).await;
    enroll_at(&store, &program, "m", utc("2026-06-01T08:00:00Z")).await;
    // 2026-06-05 00:00 Berlin (+10 days: expires 2026-06-15 00:00 Berlin = 06-14T22:00Z).
    post(
        &store,
        &program,
        buy("in", "m", "5.00", "2026-06-04T22:00:00Z"),
        "2026-06-04T22:00:00Z",
    )
    .await;
    // One microsecond earlier: expires 06-14T21:59:59.999999Z, on the 14th in Berlin.
    post(
        &store,
        &program,
        buy("out", "m", "7.00", "2026-06-04T21:59:59.999999Z"),
        "2026-06-04T22:00:01Z",
    )
    .await;
    store
        .run_jobs(&program, utc("2026-06-16T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        points_of(&store, &program, "m", "2026-06-16T00:00:00Z").await,
        0
    );
    let agent = fidelis_store::Actor {
        name: "bob".into(),
        role: "agent".into(),
    };
    let id = |s: &str| ExternalId::parse(s).unwrap();
    // Now is 2026-06-20 in Berlin: five days back is the 15th.
    let now = utc("2026-06-20T10:00:00Z");
    let (out, replayed) = store
        .reinstate(
            &program,
            "m",
            "points",
            &id("r1"),
            "expired while in hospital",
            now,
            &agent,
        )
        .await
        .unwrap();
    assert!(!replayed);
    // 5 base + 5 welcome from the first purchase; not the 7 that expired on the 14th.
    assert_eq!(
        out.awards[0].points, 10,
        "only what expired from the 15th on"
    );
    assert_eq!(
        points_of(&store, &program, "m", "2026-06-20T10:00:00Z").await,
        10
    );
    let twice = store
        .reinstate(&program, "m", "points", &id("r2"), "again", now, &agent)
        .await;
    assert!(
        matches!(twice, Err(StoreError::Refused("nothing_to_reinstate", _))),
        "{twice:?}"
    );
    let replay = store
        .reinstate(
            &program,
            "m",
            "points",
            &id("r1"),
            "expired while in hospital",
            now,
            &agent,
        )
        .await
        .unwrap();
    assert!(replay.1);
    assert_eq!(
        points_of(&store, &program, "m", "2026-06-20T10:00:00Z").await,
        10
    );
    // Status points are not reinstatable in this program.
    let status = store
        .reinstate(&program, "m", "status", &id("r3"), "x", now, &agent)
        .await;
    assert!(
        matches!(status, Err(StoreError::Refused("not_reinstatable", _))),
        "{status:?}"
    );
    let audit = store
        .audit(&AuditFilter {
            program: Some("club".into()),
            action: Some("points.reinstate".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].1.actor, "bob");
    assert_eq!(
        audit[0].1.after.as_ref().unwrap()["reason"],
        "expired while in hospital"
    );
}

/// Merging a into b: b holds both members' points (each with its expiry), the higher
/// tier, the promotion counters of both; a is closed; a journal later posted for a lands
/// on b; merging a again is refused.
async fn merging_moves_points_tiers_and_counters_and_later_journals(store: Store) {
    let program = put(&store, &points_program()).await;
    for m in ["a", "b"] {
        enroll_at(&store, &program, m, utc("2026-06-01T08:00:00Z")).await;
    }
    post(
        &store,
        &program,
        buy("a1", "a", "150.00", "2026-06-02T10:00:00Z"),
        "2026-06-02T10:00:00Z",
    )
    .await;
    post(
        &store,
        &program,
        buy("b1", "b", "20.00", "2026-06-05T10:00:00Z"),
        "2026-06-05T10:00:00Z",
    )
    .await;
    let now = utc("2026-06-06T10:00:00Z");
    let before_a = points_of(&store, &program, "a", "2026-06-06T10:00:00Z").await;
    let before_b = points_of(&store, &program, "b", "2026-06-06T10:00:00Z").await;
    assert_eq!((before_a, before_b), (155, 25));
    let agent = fidelis_store::Actor {
        name: "carol".into(),
        role: "agent".into(),
    };
    let report = store
        .merge_members(&program, "a", "b", now, &agent)
        .await
        .unwrap();
    assert_eq!(
        report
            .moved
            .iter()
            .find(|p| p.currency.as_str() == "points")
            .unwrap()
            .points,
        155
    );
    assert_eq!(report.tier_changes.len(), 1, "b takes a's silver");
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-06T10:00:00Z").await,
        180
    );
    // a's points still expire ten days after a's purchase, b's after b's.
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-12T10:00:00Z").await,
        25
    );
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-15T10:00:00Z").await,
        0
    );
    assert_eq!(
        tier_of(&store, &program, "b", "status", "2026-06-06T10:00:00Z").await,
        "silver"
    );
    let a = store.require_member(&program, "a").await.unwrap();
    assert_eq!(a.status, fidelis_core::ledger::MemberStatus::Closed);
    let b = store.require_member(&program, "b").await.unwrap();
    let counters = store.promotion_counters(&program, &b).await.unwrap();
    let welcome: i64 = counters
        .iter()
        .filter(|c| c.0 == "welcome")
        .map(|c| c.2)
        .sum();
    assert_eq!(welcome, 2, "both members' uses of the welcome bonus");
    // A journal for a's external id goes to b.
    let out = post(
        &store,
        &program,
        buy("a2", "a", "10.00", "2026-06-06T11:00:00Z"),
        "2026-06-06T11:00:00Z",
    )
    .await;
    assert_eq!(out.balances[0].available, 190);
    assert_eq!(
        points_of(&store, &program, "b", "2026-06-06T11:00:00Z").await,
        190
    );
    let again = store.merge_members(&program, "a", "b", now, &agent).await;
    assert!(
        matches!(again, Err(StoreError::Refused("member_merged", _))),
        "{again:?}"
    );
    let audit = store
        .audit(&AuditFilter {
            program: Some("club".into()),
            action: Some("member.merge".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].1.actor, "carol");
}

/// A referee's first purchase rewards referrer and referee; later purchases do not, and
/// neither do simultaneous first purchases more than once. An unknown code enrols no one.
async fn a_referral_rewards_both_members_once_per_referee(store: Store) {
    let mut doc = points_program();
    doc.referral = serde_json::from_value(json!({
        "referrer": {"currency": "points", "points": 500},
        "referee": {"currency": "points", "points": 250}}))
    .unwrap();
    let program = put(&store, &doc).await;
    enroll_at(&store, &program, "r", utc("2026-06-01T08:00:00Z")).await;
    let code = store
        .require_member(&program, "r")
        .await
        .unwrap()
        .referral_code
        .unwrap();
    assert_eq!(code.len(), 10);
    let enrol = |name: &str, code: &str| {
        let (store, program, name, code) = (
            store.clone(),
            Arc::clone(&program),
            name.to_owned(),
            code.to_owned(),
        );
        async move {
            store
                .enroll_referred(
                    &program,
                    &Enrollment {
                        external_id: ExternalId::parse(&name).unwrap(),
                        profile: json!({}),
                        enrolled_at: utc("2026-06-02T08:00:00Z"),
                    },
                    Some(&code),
                    utc("2026-06-02T08:00:00Z"),
                )
                .await
        }
    };
    let bad = enrol("x", "NOSUCHCODE").await;
    assert!(
        matches!(bad, Err(StoreError::Refused("unknown_referral_code", _))),
        "{bad:?}"
    );
    assert!(
        store.member(&program, "x").await.unwrap().is_none(),
        "nothing enrolled"
    );
    let e = enrol("e", &code).await.unwrap();
    assert_eq!(e.referred_by.as_deref(), Some("r"));
    enrol("f", &code).await.unwrap();
    let now = "2026-06-03T10:00:00Z";
    post(&store, &program, buy("e1", "e", "10.00", now), now).await;
    // e: 10 base + 5 welcome + 250; r: 500.
    assert_eq!(points_of(&store, &program, "e", now).await, 265);
    assert_eq!(points_of(&store, &program, "r", now).await, 500);
    post(&store, &program, buy("e2", "e", "10.00", now), now).await;
    assert_eq!(
        points_of(&store, &program, "r", now).await,
        500,
        "once per referee"
    );
    assert_eq!(points_of(&store, &program, "e", now).await, 275);
    // f's first purchases arrive together, in realtime.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            let j = journal(
                &program,
                buy(&format!("f{i}"), "f", "1.00", "2026-06-03T10:00:00Z"),
            );
            store
                .post_realtime(&program, j, utc("2026-06-03T10:00:00Z"))
                .await
                .unwrap()
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.run_jobs(&program, utc(now)).await.unwrap();
    assert_eq!(
        points_of(&store, &program, "r", now).await,
        1000,
        "one reward for f"
    );
    assert_eq!(points_of(&store, &program, "f", now).await, 4 + 5 + 250);
}

/// A household takes half of what its members earn (redeemable points only, with their
/// expiry), in the accruals' own transactions; only the owner may spend it.
async fn households_pool_a_share_of_earning_and_their_rule_says_who_spends(store: Store) {
    let program = put(&store, &points_program()).await;
    for m in ["a", "b", "c"] {
        enroll_at(&store, &program, m, utc("2026-06-01T08:00:00Z")).await;
    }
    let agent = fidelis_store::Actor {
        name: "dana".into(),
        role: "agent".into(),
    };
    let now = utc("2026-06-02T09:00:00Z");
    let home = ExternalId::parse("home").unwrap();
    store
        .create_group(
            &program,
            &home,
            "The Smiths",
            50,
            fidelis_store::RedeemRule::Owner,
            "a",
            now,
            &agent,
        )
        .await
        .unwrap();
    let group = store
        .join_group(&program, "home", "b", now, &agent)
        .await
        .unwrap();
    assert_eq!(group.members, ["a", "b"]);
    let twice = store
        .join_group(&program, "home", "home", now, &agent)
        .await;
    assert!(twice.is_err(), "a group cannot join itself");

    let t = "2026-06-02T10:00:00Z";
    let out = post(&store, &program, buy("a1", "a", "100.00", t), t).await;
    // 100 base + 5 welcome; half of each (rounded down) to the household.
    assert_eq!(out.pooled[0].points, 52, "{out:?}");
    assert_eq!(out.balances[0].available, 53);
    assert_eq!(points_of(&store, &program, "home", t).await, 52);
    let out = post(&store, &program, buy("b1", "b", "20.00", t), t).await;
    assert_eq!(out.pooled[0].points, 12);
    assert_eq!(points_of(&store, &program, "home", t).await, 64);
    // Status points (qualifying) stay with the member: a's tier.
    assert_eq!(tier_of(&store, &program, "a", "status", t).await, "silver");
    // c is not in the household.
    let out = post(&store, &program, buy("c1", "c", "20.00", t), t).await;
    assert!(out.pooled.is_empty());
    // The pooled points expire with the purchases': ten days on.
    assert_eq!(
        points_of(&store, &program, "home", "2026-06-12T09:59:59Z").await,
        64
    );
    assert_eq!(
        points_of(&store, &program, "home", "2026-06-12T10:00:00Z").await,
        0
    );

    // The owner may spend; another member or an outsider may not.
    for (who, ok) in [("b", false), ("c", false), ("a", true)] {
        let r = store
            .redeem_from_group(
                &program,
                "home",
                who,
                "points",
                30,
                &format!("gr-{who}"),
                utc("2026-06-03T10:00:00Z"),
            )
            .await;
        match (ok, r) {
            (true, Ok(Ok(posted))) => assert_eq!(posted.outcome.balances[0].available, 34),
            (false, Err(StoreError::Refused("not_allowed_by_group", _))) => {}
            (_, other) => panic!("{who}: {other:?}"),
        }
    }
    assert_eq!(
        points_of(&store, &program, "home", "2026-06-03T10:00:00Z").await,
        34
    );
    let into_group = store
        .transfer(
            &program,
            "a",
            "home",
            "points",
            1,
            &ExternalId::parse("tg").unwrap(),
            utc("2026-06-03T10:00:00Z"),
        )
        .await;
    assert!(
        matches!(into_group, Err(StoreError::Refused("member_is_group", _))),
        "{into_group:?}"
    );
    for m in ["a", "b", "home"] {
        let v = store.require_member(&program, m).await.unwrap();
        let sums = store.entry_sums(&v).await.unwrap();
        let balances = store
            .balances(&program, &v, utc("2026-06-03T10:00:00Z"))
            .await
            .unwrap();
        let points: i64 = sums.iter().filter(|s| s.0 == "points").map(|s| s.2).sum();
        assert_eq!(
            points,
            balances[0].available + balances[0].pending,
            "{m}: balance is the sum of entries"
        );
    }
}

/// A purchase imported after its points' expiry settles with the member's other buckets
/// loaded: its points expire at once, and the points earned earlier still expire on time
/// (settling only the buckets in memory lost their expiry from the account's schedule).
async fn a_journal_whose_points_arrive_expired_keeps_the_other_expiries(store: Store) {
    let program = put(&store, &points_program()).await;
    enroll_at(&store, &program, "m", utc("2026-06-01T08:00:00Z")).await;
    post(
        &store,
        &program,
        buy("recent", "m", "30.00", "2026-06-20T10:00:00Z"),
        "2026-06-20T10:00:00Z",
    )
    .await;
    // Dated 2026-06-02: its points expired on 2026-06-12.
    let late = post(
        &store,
        &program,
        buy("late", "m", "7.00", "2026-06-02T10:00:00Z"),
        "2026-06-21T10:00:00Z",
    )
    .await;
    assert_eq!(late.expired[0].points, 7, "{late:?}");
    assert_eq!(
        points_of(&store, &program, "m", "2026-06-21T10:00:00Z").await,
        35
    );
    // The recent purchase's points expire on 2026-06-30, found by the jobs.
    let report = store
        .run_jobs(&program, utc("2026-06-30T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.journals, 1, "the jobs expire the recent points");
    let m = store.require_member(&program, "m").await.unwrap();
    let accounts = store
        .balances(&program, &m, utc("2000-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        accounts[0].available, 0,
        "expired in the ledger, not only in the view"
    );
}

/// Two members reach silver (100 status points) in 2026; one refunds part of the purchase
/// and falls below it. Nothing changes until the year's assessment, which keeps one and
/// lowers the other.
async fn a_refund_costs_the_tier_at_the_next_assessment(store: Store) {
    let program = put(&store, &points_program()).await;
    for m in ["keeps", "refunds"] {
        enroll_at(&store, &program, m, utc("2026-06-01T08:00:00Z")).await;
        let t = "2026-06-02T10:00:00Z";
        let out = post(&store, &program, buy(&format!("{m}-1"), m, "150.00", t), t).await;
        assert_eq!(out.tier_changes[0].to.as_str(), "silver");
    }
    let t = "2026-07-01T10:00:00Z";
    let out = post(&store, &program, json!({"external_id": "r1", "member": "refunds", "type": "refund",
        "original_external_id": "refunds-1", "amount": "60.00", "currency": "EUR", "occurred_at": t}), t).await;
    assert!(
        out.tier_changes.is_empty(),
        "a refund never downgrades by itself"
    );
    assert_eq!(
        tier_of(
            &store,
            &program,
            "refunds",
            "status",
            "2026-12-31T22:59:59Z"
        )
        .await,
        "silver"
    );
    store
        .run_jobs(&program, utc("2026-12-31T23:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&store, &program, "keeps", "status", "2027-01-01T10:00:00Z").await,
        "silver"
    );
    assert_eq!(
        tier_of(
            &store,
            &program,
            "refunds",
            "status",
            "2027-01-01T10:00:00Z"
        )
        .await,
        "member"
    );
}

/// Trust item 17: reinstated points of an `inactivity` currency expired again at once (the
/// answer said 70 available, the balance said 0). The reinstatement moves the deadline.
async fn reinstated_inactivity_points_stay_spendable(store: Store) {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "idle", "name": "Idle", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                        "expiry": {"policy": "inactivity", "months": 1}, "reinstate_within_days": 30}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]}
    }))
    .unwrap();
    let program = put(&store, &doc).await;
    enroll_at(&store, &program, "m", utc("2026-01-01T08:00:00Z")).await;
    post(
        &store,
        &program,
        buy("p1", "m", "70.00", "2026-01-10T10:00:00Z"),
        "2026-01-10T10:00:00Z",
    )
    .await;
    store
        .run_jobs(&program, utc("2026-02-12T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        points_of(&store, &program, "m", "2026-02-12T00:00:00Z").await,
        0,
        "expired"
    );
    let agent = fidelis_store::Actor {
        name: "bob".into(),
        role: "agent".into(),
    };
    let now = utc("2026-02-15T10:00:00Z");
    let (out, _) = store
        .reinstate(
            &program,
            "m",
            "points",
            &ExternalId::parse("r1").unwrap(),
            "goodwill",
            now,
            &agent,
        )
        .await
        .unwrap();
    assert_eq!(out.awards[0].points, 70);
    assert_eq!(out.balances[0].available, 70);
    assert_eq!(
        points_of(&store, &program, "m", "2026-02-15T10:00:00Z").await,
        70,
        "spendable, as the answer said"
    );
    store
        .run_jobs(&program, utc("2026-02-20T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        points_of(&store, &program, "m", "2026-02-20T00:00:00Z").await,
        70,
        "the jobs leave them"
    );
    // A month without activity after the reinstatement, they expire as any points would.
    store
        .run_jobs(&program, utc("2026-03-20T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        points_of(&store, &program, "m", "2026-03-20T00:00:00Z").await,
        0
    );
}

/// Trust item 19: pending qualifying points never lifted a tier when released (upgrades
/// were checked only inside a journal), the year-end assessment did not upgrade, and with
/// a rolling period pending points counted before they were released.
async fn tiers_follow_available_qualifying_points(store: Store) {
    let doc = |gold: i64, period: serde_json::Value| -> ProgramDocument {
        serde_json::from_value(json!({
            "code": "pend", "name": "Pending", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [
                {"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}},
                {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}, "pending_days": 14}],
            "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
            "tier_groups": [{"code": "status", "currency": "status", "period": period,
                "tiers": [{"code": "member", "threshold": 0}, {"code": "gold", "threshold": gold}]}]
        }))
        .unwrap()
    };
    for period in [
        json!({"type": "rolling", "months": 12}),
        json!({"type": "calendar_year"}),
    ] {
        let program = put(&store, &doc(100, period.clone())).await;
        let m = format!("m-{}", period["type"].as_str().unwrap());
        enroll_at(&store, &program, &m, utc("2026-01-01T08:00:00Z")).await;
        let out = post(
            &store,
            &program,
            buy(&format!("{m}-p1"), &m, "150.00", "2026-03-02T10:00:00Z"),
            "2026-03-02T10:00:00Z",
        )
        .await;
        assert!(
            out.tier_changes.is_empty(),
            "{period}: pending points lifted the tier: {:?}",
            out.tier_changes
        );
        let standing = store
            .tier_standing(&program, &m, utc("2026-03-10T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(standing[0].tier, "member", "{period}: not while pending");
        // Released by the jobs, fourteen days later: the tier moves then.
        store
            .run_jobs(&program, utc("2026-03-17T00:00:00Z"))
            .await
            .unwrap();
        let standing = store
            .tier_standing(&program, &m, utc("2026-03-17T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            standing[0].tier, "gold",
            "{period}: released points lift the tier"
        );
    }
    // The year-end assessment upgrades a member whose year qualifies (here: the threshold
    // was lowered after the points were earned).
    let program = put(&store, &doc(1_000, json!({"type": "calendar_year"}))).await;
    enroll_at(&store, &program, "late", utc("2026-01-01T08:00:00Z")).await;
    post(
        &store,
        &program,
        buy("late-p1", "late", "500.00", "2026-05-02T10:00:00Z"),
        "2026-05-02T10:00:00Z",
    )
    .await;
    store
        .run_jobs(&program, utc("2026-05-20T00:00:00Z"))
        .await
        .unwrap();
    let program = put(&store, &doc(400, json!({"type": "calendar_year"}))).await;
    let standing = store
        .tier_standing(&program, "late", utc("2026-12-31T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(standing[0].tier, "member", "no journal since the change");
    store
        .run_jobs(&program, utc("2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    let standing = store
        .tier_standing(&program, "late", utc("2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(standing[0].tier, "gold", "the assessment of 2026 upgrades");
}

/// Trust item 22: tiers on the current redeemable balance, moving up and down at once as
/// the balance moves (by a journal or by expiry); tier groups assigned only by hand.
async fn balance_tiers_move_with_the_balance_and_manual_tiers_by_hand(store: Store) {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "bal", "name": "Balance", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 30}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "tier_groups": [
            {"code": "level", "measure": "balance", "currency": "points",
             "tiers": [{"code": "bronze", "threshold": 0}, {"code": "silver", "threshold": 100}, {"code": "gold", "threshold": 300}]},
            {"code": "vip", "measure": "manual", "tiers": [{"code": "none"}, {"code": "vip"}]}]
    }))
    .unwrap();
    let program = put(&store, &doc).await;
    enroll_at(&store, &program, "m", utc("2026-01-01T08:00:00Z")).await;
    let tier = |group: &'static str, now: &'static str| {
        let (store, program) = (&store, &program);
        async move { tier_of(store, program, "m", group, now).await }
    };
    post(
        &store,
        &program,
        buy("p1", "m", "350.00", "2026-03-01T10:00:00Z"),
        "2026-03-01T10:00:00Z",
    )
    .await;
    assert_eq!(tier("level", "2026-03-01T10:00:00Z").await, "gold");
    // Spending moves it down at once.
    post(&store, &program, json!({"external_id": "r1", "member": "m", "type": "redemption", "occurred_at": "2026-03-02T10:00:00Z",
        "currency": "points", "points": 200}), "2026-03-02T10:00:00Z").await;
    assert_eq!(tier("level", "2026-03-02T10:00:00Z").await, "silver");
    // Expiry too (the jobs settle it).
    store
        .run_jobs(&program, utc("2026-04-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(tier("level", "2026-04-15T00:00:00Z").await, "bronze");
    // A manual group changes only by hand; a validity given ends it.
    assert_eq!(tier("vip", "2026-04-15T00:00:00Z").await, "none");
    let agent = fidelis_store::Actor {
        name: "bob".into(),
        role: "agent".into(),
    };
    store
        .assign_tier(
            &program,
            "m",
            "vip",
            "vip",
            Some(utc("2026-06-01T00:00:00Z")),
            "board member",
            utc("2026-04-16T00:00:00Z"),
            &agent,
        )
        .await
        .unwrap();
    assert_eq!(tier("vip", "2026-05-31T00:00:00Z").await, "vip");
    post(
        &store,
        &program,
        buy("p2", "m", "1000.00", "2026-05-02T10:00:00Z"),
        "2026-05-02T10:00:00Z",
    )
    .await;
    assert_eq!(
        tier("vip", "2026-05-02T10:00:00Z").await,
        "vip",
        "no measure moves it"
    );
    store
        .run_jobs(&program, utc("2026-06-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        tier("vip", "2026-06-02T00:00:00Z").await,
        "none",
        "the validity ended"
    );
    // A balance or manual group has no qualifying period.
    let mut bad = serde_json::to_value(&doc).unwrap();
    bad["tier_groups"][0]["period"] = json!({"type": "calendar_year"});
    let bad: ProgramDocument = serde_json::from_value(bad).unwrap();
    let problems = Program::compile(&bad, None).unwrap_err();
    assert!(
        problems.iter().any(|p| p.path == "tier_groups[0].period"),
        "{problems:?}"
    );
}

/// Trust item 22: tier validity counted from the day the member entered the tier, with a
/// renewal check at its end against a renewal threshold, measured over that window; an
/// upgrade within it restarts the clock — under both downgrade policies.
async fn tier_validity_counts_from_entering_the_tier_and_renews_at_its_threshold(store: Store) {
    for downgrade in ["one_tier", "to_qualified"] {
        let doc: ProgramDocument = serde_json::from_value(json!({
            "code": format!("valid-{}", downgrade.replace('_', "-")), "name": "Validity",
            "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [
                {"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}},
                {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
            "tier_groups": [{"code": "status", "currency": "status", "downgrade": downgrade,
                "period": {"type": "tier_validity", "months": 12},
                "tiers": [{"code": "member", "threshold": 0},
                          {"code": "silver", "threshold": 100, "renewal_threshold": 50},
                          {"code": "gold", "threshold": 300, "renewal_threshold": 200}]}]
        }))
        .unwrap();
        let program = put(&store, &doc).await;
        enroll_at(&store, &program, "m", utc("2026-01-01T08:00:00Z")).await;
        let standing = |now: &'static str| {
            let (store, program) = (&store, &program);
            async move {
                let s = store
                    .tier_standing(program, "m", utc(now))
                    .await
                    .unwrap()
                    .remove(0);
                (s.tier, s.valid_until.map(|v| v.to_rfc3339()))
            }
        };
        post(
            &store,
            &program,
            buy("p1", "m", "120.00", "2026-02-10T10:00:00Z"),
            "2026-02-10T10:00:00Z",
        )
        .await;
        assert_eq!(
            standing("2026-02-10T10:00:00Z").await,
            ("silver".into(), Some("2027-02-10T10:00:00+00:00".into()))
        );
        // 60 within the silver year: above its renewal threshold (50), not its threshold.
        post(
            &store,
            &program,
            buy("p2", "m", "60.00", "2026-08-01T10:00:00Z"),
            "2026-08-01T10:00:00Z",
        )
        .await;
        store
            .run_jobs(&program, utc("2027-02-11T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            standing("2027-02-11T00:00:00Z").await,
            ("silver".into(), Some("2028-02-10T10:00:00+00:00".into())),
            "{downgrade}: renewed for another year"
        );
        // Gold reached within the new window: the clock starts again from that day.
        post(
            &store,
            &program,
            buy("p3", "m", "250.00", "2027-06-01T10:00:00Z"),
            "2027-06-01T10:00:00Z",
        )
        .await;
        post(
            &store,
            &program,
            buy("p4", "m", "100.00", "2027-07-01T10:00:00Z"),
            "2027-07-01T10:00:00Z",
        )
        .await;
        assert_eq!(
            standing("2027-07-01T10:00:00Z").await,
            ("gold".into(), Some("2028-07-01T10:00:00+00:00".into()))
        );
        // A gold year with nothing in it: one tier down, or to what renews (nothing).
        store
            .run_jobs(&program, utc("2028-07-02T00:00:00Z"))
            .await
            .unwrap();
        let expected = if downgrade == "one_tier" {
            "silver"
        } else {
            "member"
        };
        assert_eq!(
            standing("2028-07-02T00:00:00Z").await.0,
            expected,
            "{downgrade}"
        );
    }
}
