//! Tiers: upgrades inside the journal that crosses a threshold, assessment at period end
//! under both downgrade policies, membership-year and rolling periods, a refund that costs
//! the next assessment, grace, validity, manual assignment, qualifying resets, benefits and
//! expiry extensions.

mod common;

use common::*;
use fidelis_core::ids::ExternalId;
use fidelis_core::ledger::EntryKind;
use fidelis_core::outcome::Outcome;
use fidelis_core::program::{Program, ProgramDocument};
use serde_json::json;

/// A Berlin/EUR program earning 1 point and 1 status point per euro, with one tier group
/// (member 0, silver 500, gold 2000) whose extra settings are `group` (YAML mapping lines
/// indented by four spaces).
fn program(group: &str) -> Program {
    program_with(group, "", "")
}

fn program_with(group: &str, tier_extra: &str, promotions: &str) -> Program {
    let yaml = format!(
        "code: test\nname: Test\ntime_zone: Europe/Berlin\nmoney_currency: EUR\n\
         currencies:\n  - {{code: points, name: Points, kind: redeemable, expiry: {{policy: rolling, months: 12}}}}\n  \
         - {{code: status, name: Status, kind: qualifying, expiry: {{policy: never}}}}\n\
         earning:\n  base:\n    - {{currency: points, rate: \"1\"}}\n    - {{currency: status, rate: \"1\"}}\n\
         tier_groups:\n  - code: status\n    currency: status\n{group}    tiers:\n      \
         - {{code: member, threshold: 0}}\n      - {{code: silver, threshold: 500}}\n      \
         - {{code: gold, threshold: 2000{tier_extra}}}\n{promotions}"
    );
    let doc: ProgramDocument =
        yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}\n{yaml}"))
}

fn purchase(member: &str, amount: &str) -> serde_json::Value {
    json!({"member": member, "type": "purchase", "amount": amount, "currency": "EUR"})
}

fn tier(sim: &Sim, member: &str) -> String {
    sim.ledger(member)
        .tiers
        .as_ref()
        .and_then(|t| t.status("status"))
        .map(|s| s.tier.clone())
        .unwrap()
}

fn changes(outcome: &Outcome) -> Vec<(String, String, String)> {
    outcome
        .tier_changes
        .iter()
        .map(|c| {
            (
                c.from.as_ref().map(|f| f.to_string()).unwrap_or_default(),
                c.to.to_string(),
                c.reason.clone(),
            )
        })
        .collect()
}

fn t(from: &str, to: &str, why: &str) -> (String, String, String) {
    (from.into(), to.into(), why.into())
}

fn sim(program: Program, enrolled: &str) -> Sim {
    let mut sim = Sim::new(program, enrolled);
    sim.enroll_at("m", enrolled);
    sim
}

#[test]
fn the_journal_that_crosses_a_threshold_upgrades_and_says_so() {
    let mut sim = sim(program(""), "2026-01-05T10:00:00Z");
    let first = sim.at("2026-03-01T10:00:00Z").ok(purchase("m", "499.00"));
    assert!(first.tier_changes.is_empty(), "{first:?}");
    assert_eq!(tier(&sim, "m"), "member");
    let crossing = sim.ok(purchase("m", "1.00"));
    assert_eq!(changes(&crossing), vec![t("member", "silver", "upgrade")]);
    assert_eq!(crossing.tier_changes[0].measure, Some(500));
    assert_eq!(tier(&sim, "m"), "silver");
    // Two tiers at once.
    let big = sim.ok(purchase("m", "1500.00"));
    assert_eq!(changes(&big), vec![t("silver", "gold", "upgrade")]);
    // Promotions read the assessed tier.
    assert_eq!(sim.book.tier_changes().len(), 2);
}

#[test]
fn at_period_end_one_tier_policy_goes_down_one_and_to_qualified_goes_to_the_measure() {
    for (policy, expected) in [("one_tier", "silver"), ("to_qualified", "member")] {
        let mut sim = sim(
            program(&format!("    downgrade: {policy}\n")),
            "2026-01-05T10:00:00Z",
        );
        sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "2000.00"));
        assert_eq!(tier(&sim, "m"), "gold");
        // 2026 qualified gold: kept through 2027.
        let next_year = sim.at("2027-02-01T10:00:00Z").ok(purchase("m", "100.00"));
        assert!(next_year.tier_changes.is_empty(), "{policy}: {next_year:?}");
        assert_eq!(tier(&sim, "m"), "gold");
        // 2027 earned 100: assessed at its end, before the next journal.
        sim.settle_at("2028-01-01T00:00:00+01:00");
        assert_eq!(tier(&sim, "m"), expected, "{policy}");
        let (member, change) = sim.book.tier_changes().last().unwrap().clone();
        assert_eq!(member.as_str(), "m");
        assert_eq!(
            (
                change.from.unwrap().as_str(),
                change.to.as_str(),
                change.reason.as_str()
            ),
            ("gold", expected, "assessment")
        );
        assert_eq!(change.measure, Some(100));
        assert_eq!(change.at, utc("2028-01-01T00:00:00+01:00"));
    }
}

#[test]
fn the_assessment_waits_for_the_period_end_in_the_program_time_zone() {
    let mut sim = sim(program(""), "2026-01-05T10:00:00Z");
    sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "600.00"));
    sim.at("2027-05-01T10:00:00Z").ok(purchase("m", "10.00"));
    // One microsecond before midnight in Berlin (23:00 UTC) nothing happens.
    sim.settle_at("2027-12-31T22:59:59.999999Z");
    assert_eq!(tier(&sim, "m"), "silver");
    sim.settle_at("2027-12-31T23:00:00Z");
    assert_eq!(tier(&sim, "m"), "member");
}

#[test]
fn membership_years_run_from_each_member_s_enrolment() {
    let mut sim = Sim::new(
        program("    period: {type: anniversary}\n"),
        "2026-03-15T09:00:00Z",
    );
    sim.enroll_at("early", "2026-03-15T09:00:00Z");
    sim.enroll_at("late", "2026-09-20T09:00:00Z");
    sim.at("2026-10-01T10:00:00Z");
    sim.ok(purchase("early", "600.00"));
    sim.ok(purchase("late", "600.00"));
    // Early's first membership year ends 2027-03-15 09:00Z: 600 qualified silver, kept.
    // Late's year ends 2027-09-20. Neither earns in the next membership year.
    sim.settle_at("2028-03-15T08:59:59Z");
    assert_eq!(tier(&sim, "early"), "silver");
    sim.settle_at("2028-03-15T09:00:00Z");
    assert_eq!(tier(&sim, "early"), "member");
    assert_eq!(tier(&sim, "late"), "silver");
    sim.settle_at("2028-09-20T09:00:00Z");
    assert_eq!(tier(&sim, "late"), "member");
}

#[test]
fn a_rolling_window_counts_the_last_months_and_is_assessed_each_month_end() {
    let mut sim = sim(
        program("    period: {type: rolling, months: 3}\n    downgrade: to_qualified\n"),
        "2026-01-05T10:00:00Z",
    );
    sim.at("2026-01-10T10:00:00Z").ok(purchase("m", "300.00"));
    sim.at("2026-02-10T10:00:00Z").ok(purchase("m", "250.00"));
    assert_eq!(tier(&sim, "m"), "silver", "300 + 250 in the window");
    // Window Feb–Apr holds 250: below silver at the end of April.
    sim.settle_at("2026-04-30T21:59:59Z");
    assert_eq!(tier(&sim, "m"), "silver");
    sim.settle_at("2026-04-30T22:00:00Z");
    assert_eq!(tier(&sim, "m"), "member");
}

#[test]
fn a_refund_that_lowers_the_measure_costs_the_tier_at_the_next_assessment() {
    for refund in [false, true] {
        let mut sim = sim(program(""), "2026-01-05T10:00:00Z");
        sim.at("2026-05-01T10:00:00Z").ok(
            json!({"member": "m", "type": "purchase", "amount": "600.00", "currency": "EUR",
                       "external_id": "order"}),
        );
        assert_eq!(tier(&sim, "m"), "silver");
        if refund {
            let out = sim
                .at("2026-06-01T10:00:00Z")
                .ok(json!({"member": "m", "type": "refund",
                "original_external_id": "order", "amount": "200.00", "currency": "EUR"}));
            // No downgrade before the assessment.
            assert!(out.tier_changes.is_empty());
            assert_eq!(tier(&sim, "m"), "silver");
        }
        sim.settle_at("2027-01-02T00:00:00Z");
        assert_eq!(
            tier(&sim, "m"),
            if refund { "member" } else { "silver" },
            "refund: {refund}"
        );
    }
}

#[test]
fn a_grace_period_keeps_the_tier_until_it_ends_unless_the_member_requalifies() {
    for requalify in [false, true] {
        let mut sim = sim(program("    grace: {months: 2}\n"), "2026-01-05T10:00:00Z");
        sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "600.00"));
        // 2027 earns nothing: assessed at its end, the grace runs to 2028-03-01.
        sim.settle_at("2028-01-02T00:00:00Z");
        assert_eq!(tier(&sim, "m"), "silver", "in grace");
        let status = sim
            .ledger("m")
            .tiers
            .as_ref()
            .unwrap()
            .status("status")
            .unwrap()
            .clone();
        assert_eq!(status.grace_until, Some(utc("2028-03-01T00:00:00+01:00")));
        if requalify {
            sim.at("2028-02-01T10:00:00Z").ok(purchase("m", "500.00"));
        }
        sim.settle_at("2028-03-01T00:00:00+01:00");
        assert_eq!(
            tier(&sim, "m"),
            if requalify { "silver" } else { "member" },
            "requalified: {requalify}"
        );
        if !requalify {
            let (_, change) = sim.book.tier_changes().last().unwrap().clone();
            assert_eq!(change.reason, "grace_ended");
        }
    }
}

#[test]
fn validity_keeps_a_tier_through_the_next_period() {
    let mut sim = sim(program("    validity_periods: 1\n"), "2026-01-05T10:00:00Z");
    let up = sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "600.00"));
    assert_eq!(
        up.tier_changes[0].valid_until,
        Some(utc("2028-01-01T00:00:00+01:00")),
        "until the end of next year"
    );
    // Nothing earned in 2026's remainder or 2027: still silver through 2027.
    sim.settle_at("2027-12-31T12:00:00Z");
    assert_eq!(tier(&sim, "m"), "silver");
    sim.settle_at("2028-01-01T00:00:00+01:00");
    assert_eq!(tier(&sim, "m"), "member");
}

#[test]
fn an_agent_assigns_a_tier_that_holds_until_its_validity() {
    let mut sim = sim(program(""), "2026-01-05T10:00:00Z");
    let m = ExternalId::parse("m").unwrap();
    let change = sim
        .book
        .assign_tier(
            &m,
            "status",
            "gold",
            Some(utc("2028-01-01T00:00:00+01:00")),
            utc("2026-02-01T10:00:00Z"),
        )
        .unwrap();
    assert_eq!(
        (change.to.as_str(), change.reason.as_str()),
        ("gold", "manual")
    );
    sim.settle_at("2027-01-01T10:00:00Z");
    assert_eq!(tier(&sim, "m"), "gold", "valid until 2028");
    sim.settle_at("2028-01-01T10:00:00Z");
    assert_eq!(
        tier(&sim, "m"),
        "silver",
        "one tier down once validity ran out"
    );
}

#[test]
fn qualifying_points_reset_at_period_end_with_a_ledger_entry() {
    let mut sim = sim(program(""), "2026-01-05T10:00:00Z");
    sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "600.00"));
    assert_eq!(sim.balance("m", "status"), (600, 0));
    let next = sim.at("2027-01-10T10:00:00Z").ok(purchase("m", "10.00"));
    assert_eq!(next.reset.len(), 1, "{next:?}");
    assert_eq!(next.reset[0].points, 600);
    assert_eq!(sim.balance("m", "status"), (10, 0));
    assert_eq!(sim.entries("m", EntryKind::Reset), vec![-600]);
    // Kept silver: 2026 qualified.
    assert_eq!(tier(&sim, "m"), "silver");
    // Without reset, the balance stays.
    let mut keep = self::sim(program("    reset: false\n"), "2026-01-05T10:00:00Z");
    keep.at("2026-05-01T10:00:00Z").ok(purchase("m", "600.00"));
    keep.at("2027-01-10T10:00:00Z").ok(purchase("m", "10.00"));
    assert_eq!(keep.balance("m", "status"), (610, 0));
}

#[test]
fn spend_and_activity_measures() {
    let spend = |group: &str| {
        let yaml = format!(
            "code: test\nname: Test\ntime_zone: Europe/Berlin\nmoney_currency: EUR\n\
             currencies:\n  - {{code: points, name: Points, kind: redeemable, expiry: {{policy: never}}}}\n\
             earning:\n  base:\n    - {{currency: points, rate: \"1\"}}\n\
             tier_groups:\n  - code: status\n{group}    tiers:\n      \
             - {{code: member, threshold: 0}}\n      - {{code: silver, threshold: 3}}\n"
        );
        let doc: ProgramDocument = yaml_serde::from_str(&yaml).unwrap();
        Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"))
    };
    let mut by_count = sim(spend("    measure: activities\n"), "2026-01-05T10:00:00Z");
    by_count.at("2026-02-01T10:00:00Z");
    by_count.ok(purchase("m", "1.00"));
    by_count.ok(purchase("m", "1.00"));
    assert_eq!(tier(&by_count, "m"), "member");
    let third = by_count.ok(purchase("m", "1.00"));
    assert_eq!(changes(&third), vec![t("member", "silver", "upgrade")]);
    // Spend in minor units: 3 cents.
    let mut by_spend = sim(spend("    measure: spend\n"), "2026-01-05T10:00:00Z");
    let out = by_spend
        .at("2026-02-01T10:00:00Z")
        .ok(purchase("m", "0.03"));
    assert_eq!(changes(&out), vec![t("member", "silver", "upgrade")]);
}

#[test]
fn benefits_are_read_by_promotions_and_extend_expiry() {
    let program = program_with(
        "",
        ", benefits: [{code: earning_multiplier, value: 1.5}, {code: lounge_access}], expiry_extension: {months: 6}",
        "promotions:\n  - code: gold-bonus\n    name: Gold bonus\n    status: active\n    \
         condition: \"has(member.benefits.earning_multiplier) && member.benefits.earning_multiplier > 1.0\"\n    \
         actions: [{type: fixed, currency: points, points: 100}]\n",
    );
    let mut sim = sim(program, "2026-01-05T10:00:00Z");
    let up = sim.at("2026-05-01T10:00:00Z").ok(purchase("m", "2000.00"));
    assert_eq!(changes(&up), vec![t("member", "gold", "upgrade")]);
    assert!(
        up.promotions
            .iter()
            .all(|p| p.promotion.as_str() != "gold-bonus"),
        "not gold before"
    );
    let benefits = sim
        .ledger("m")
        .tiers
        .as_ref()
        .unwrap()
        .benefits(sim.book.program());
    let codes: Vec<&str> = benefits[0]
        .1
        .benefits
        .iter()
        .map(|b| b.code.as_str())
        .collect();
    assert_eq!(codes, ["earning_multiplier", "lounge_access"]);
    let next = sim.at("2026-05-02T10:00:00Z").ok(purchase("m", "10.00"));
    assert!(
        next.promotions
            .iter()
            .any(|p| p.promotion.as_str() == "gold-bonus"),
        "{next:?}"
    );
    // Points earned as gold expire 12 + 6 months after earning; the first purchase's
    // (earned while member) after 12.
    let expiries: Vec<_> = sim.buckets("m", "points").iter().map(|b| b.0).collect();
    assert_eq!(expiries[0], Some(utc("2027-05-01T10:00:00Z")));
    assert_eq!(
        expiries[1],
        Some(utc("2027-11-02T11:00:00Z")),
        "local noon, winter time"
    );
}

/// Trust item 21: the retail template's Gold `earning_multiplier` benefit changed nothing.
/// The template multiplies by it: a Gold member earns 1.25 times the base points; a Silver
/// member does not.
#[test]
fn the_retail_templates_gold_members_earn_one_and_a_quarter() {
    let template = fidelis_core::templates::find("retail").unwrap();
    let mut doc: ProgramDocument = yaml_serde::from_str(template.source).unwrap();
    doc.code = Some("retail".into());
    let program = Program::compile(&doc, None).unwrap();
    // A Wednesday: no weekend bonus.
    let mut sim = Sim::new(program, "2026-06-10T12:00:00Z");
    sim.enroll("gold");
    sim.enroll("silver");
    let multiplier = |o: &Outcome| -> i64 {
        o.awards
            .iter()
            .filter(|a| a.source == "tier-multiplier")
            .map(|a| a.points)
            .sum()
    };
    let first = sim.ok(purchase("gold", "2000"));
    assert_eq!(
        multiplier(&first),
        0,
        "not Gold before this purchase's upgrade was earned"
    );
    let o = sim.ok(purchase("gold", "100"));
    assert_eq!(multiplier(&o), 25, "{:?}", o.awards);
    sim.ok(purchase("silver", "600"));
    let o = sim.ok(purchase("silver", "100"));
    assert_eq!(multiplier(&o), 0, "{:?}", o.awards);
}
