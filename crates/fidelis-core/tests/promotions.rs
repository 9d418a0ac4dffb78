//! Promotions: every action type, stacking and exclusivity, windows in the program's time
//! zone, past-dated journals, line scope, refunds taking promotion points back, and
//! evaluation errors that never fail a journal.

mod common;

use common::*;
use fidelis_core::outcome::Outcome;
use fidelis_core::program::{Program, ProgramDocument};
use serde_json::json;

/// A Berlin/EUR program: `points` (redeemable, 1 per euro base) and `status`
/// (qualifying), with the given promotions (YAML list items) and earning options.
fn program_with(promotions: &str, earning_extra: &str) -> Program {
    let yaml = format!(
        "code: test\nname: Test\ntime_zone: Europe/Berlin\nmoney_currency: EUR\n\
         currencies:\n  - {{code: points, name: Points, kind: redeemable, expiry: {{policy: never}}}}\n  \
         - {{code: status, name: Status, kind: qualifying, expiry: {{policy: never}}}}\n\
         earning:\n  base:\n    - {{currency: points, rate: \"1\"}}\n{earning_extra}\
         promotions:\n{promotions}\n"
    );
    let doc: ProgramDocument =
        yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}\n{yaml}"))
}

fn problems(promotions: &str) -> Vec<String> {
    let yaml = format!(
        "code: test\nname: Test\ntime_zone: Europe/Berlin\nmoney_currency: EUR\n\
         currencies:\n  - {{code: points, name: Points, kind: redeemable, expiry: {{policy: never}}}}\n\
         promotions:\n{promotions}\n"
    );
    let doc: ProgramDocument = yaml_serde::from_str(&yaml).unwrap();
    match Program::compile(&doc, None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn sim(program: Program) -> Sim {
    let mut sim = Sim::new(program, "2026-06-10T12:00:00Z");
    sim.enroll("m");
    sim
}

fn points(outcome: &Outcome, source: &str, currency: &str) -> i64 {
    outcome
        .awards
        .iter()
        .filter(|a| a.source == source && a.currency.as_str() == currency)
        .map(|a| a.points)
        .sum()
}

fn balance(outcome: &Outcome, currency: &str) -> i64 {
    outcome
        .balances
        .iter()
        .find(|b| b.currency.as_str() == currency)
        .map_or(0, |b| b.available)
}

fn purchase(amount: &str) -> serde_json::Value {
    json!({"member": "m", "type": "purchase", "amount": amount, "currency": "EUR"})
}

fn shoes_and_socks() -> serde_json::Value {
    json!({"member": "m", "type": "purchase", "amount": "80.00", "currency": "EUR",
           "lines": [{"line_id": "1", "sku": "SH-1", "category": "shoes", "quantity": 1, "amount": "60.00"},
                     {"line_id": "2", "sku": "SO-1", "category": "socks", "quantity": 2, "amount": "20.00"}]})
}

#[test]
fn every_action_type_awards_what_it_says() {
    let program = program_with(
        r#"
  - code: welcome
    name: Fixed bonus
    status: active
    actions: [{type: fixed, currency: points, points: 50}]
  - code: per-euro
    name: Two per euro
    status: active
    actions: [{type: per_money, currency: points, rate: "2", rounding: down}]
  - code: triple
    name: Triple base
    status: active
    actions: [{type: multiplier, currency: points, factor: "3"}]
  - code: status-points
    name: Qualifying points
    status: active
    actions: [{type: per_money, currency: status, rate: "0.5"}]
  - code: goodies
    name: Voucher and badge
    status: active
    actions: [{type: voucher, voucher: ten-off}, {type: badge, badge: first-buy}]
"#,
        "vouchers:\n  - {code: ten-off, name: Ten off, value: {fixed: \"10.00\"}}\nbadges:\n  - {code: first-buy, name: First buy}\n",
    );
    let mut sim = sim(program);
    let o = sim.ok(purchase("25.50"));
    assert_eq!(points(&o, "base", "points"), 25);
    assert_eq!(points(&o, "welcome", "points"), 50);
    assert_eq!(points(&o, "per-euro", "points"), 51);
    // Three times the base in total: 50 beside the base's 25.
    assert_eq!(points(&o, "triple", "points"), 50);
    assert_eq!(points(&o, "status-points", "status"), 12);
    assert_eq!(balance(&o, "points"), 25 + 50 + 51 + 50);
    assert_eq!(balance(&o, "status"), 12);
    let goodies = o
        .promotions
        .iter()
        .find(|p| p.promotion.as_str() == "goodies")
        .expect("the voucher promotion is reported");
    let rewards: Vec<(&str, &str)> = goodies
        .rewards
        .iter()
        .map(|r| (r.kind.as_ref(), r.code.as_str()))
        .collect();
    assert_eq!(rewards, [("voucher", "ten-off"), ("badge", "first-buy")]);
}

#[test]
fn line_scope_awards_the_matching_lines_and_refunds_take_them_back() {
    let program = program_with(
        r#"
  - code: shoes-double
    name: Double points on shoes
    status: active
    scope: line
    condition: "line.category == 'shoes'"
    actions: [{type: multiplier, currency: points, factor: "2"}]
  - code: per-shoe-line
    name: 10 per shoe line
    status: active
    scope: line
    condition: "line.category == 'shoes' && line.quantity >= 1"
    actions: [{type: fixed, currency: points, points: 10}]
"#,
        "",
    );
    let mut sim = sim(program);
    let o = sim.ok(json!({"external_id": "order-1", "member": "m", "type": "purchase", "amount": "80.00", "currency": "EUR",
           "lines": [{"line_id": "1", "category": "shoes", "quantity": 1, "amount": "60.00"},
                     {"line_id": "2", "category": "socks", "quantity": 2, "amount": "20.00"}]}));
    assert_eq!(points(&o, "base", "points"), 80);
    assert_eq!(points(&o, "shoes-double", "points"), 60);
    assert_eq!(points(&o, "per-shoe-line", "points"), 10);
    assert_eq!(balance(&o, "points"), 150);
    // Refunding the shoes takes back their base, their double and their line bonus.
    let r = sim.ok(
        json!({"member": "m", "type": "refund", "original_external_id": "order-1",
                          "lines": [{"line_id": "1", "quantity": 1}]}),
    );
    assert_eq!(balance(&r, "points"), 20);
    // Refunding the socks takes the rest; nothing is left.
    let r = sim.ok(
        json!({"member": "m", "type": "refund", "original_external_id": "order-1",
                          "lines": [{"line_id": "2", "quantity": 2}]}),
    );
    assert_eq!(balance(&r, "points"), 0);
}

#[test]
fn a_cancelled_purchase_takes_its_promotion_points_back() {
    let program = program_with(
        r#"
  - code: bonus
    name: Bonus
    status: active
    actions: [{type: fixed, currency: points, points: 100}, {type: fixed, currency: status, points: 5}]
"#,
        "",
    );
    let mut sim = sim(program);
    let o = sim.ok(json!({"external_id": "p1", "member": "m", "type": "purchase", "amount": "10", "currency": "EUR"}));
    assert_eq!(balance(&o, "points"), 110);
    let c = sim.ok(json!({"member": "m", "type": "cancellation", "original_external_id": "p1"}));
    assert_eq!(balance(&c, "points"), 0);
    assert_eq!(balance(&c, "status"), 0);
}

#[test]
fn priority_and_exclusivity_decide_what_stacks() {
    let program = program_with(
        r#"
  - code: low
    name: Low
    status: active
    priority: 1
    actions: [{type: fixed, currency: points, points: 1}]
  - code: vip
    name: VIP exclusive
    status: active
    priority: 10
    exclusive: true
    condition: "journal.amount >= 100.0"
    actions: [{type: fixed, currency: points, points: 500}]
  - code: high
    name: High
    status: active
    priority: 20
    actions: [{type: fixed, currency: points, points: 7}]
"#,
        "",
    );
    let mut sim = sim(program);
    // Below 100: the exclusive one does not apply, so everything else stacks.
    let o = sim.ok(purchase("50"));
    let applied: Vec<&str> = o.promotions.iter().map(|p| p.promotion.as_str()).collect();
    assert_eq!(applied, ["high", "low"]);
    // From 100: `high` (higher priority) still applies, `vip` applies, `low` is excluded.
    let o = sim.ok(purchase("100"));
    let applied: Vec<&str> = o.promotions.iter().map(|p| p.promotion.as_str()).collect();
    assert_eq!(applied, ["high", "vip"]);
    assert_eq!(points(&o, "low", "points"), 0);
}

#[test]
fn base_earning_may_be_replaced_by_a_promotion() {
    let promotions = r#"
  - code: double
    name: Double
    status: active
    actions: [{type: multiplier, currency: points, factor: "2"}]
"#;
    let stacking = program_with(promotions, "");
    let replacing = program_with(promotions, "  base_stacks_with_promotions: false\n");
    let o = sim(stacking).ok(purchase("40"));
    assert_eq!(
        (points(&o, "base", "points"), points(&o, "double", "points")),
        (40, 40)
    );
    let o = sim(replacing).ok(purchase("40"));
    assert_eq!(
        (points(&o, "base", "points"), points(&o, "double", "points")),
        (0, 80)
    );
    assert_eq!(balance(&o, "points"), 80);
}

#[test]
fn a_window_ends_at_local_midnight_and_past_dated_journals_use_their_own_date() {
    // Berlin is UTC+1 in winter: local midnight of 1 December is 23:00 UTC on 30 November.
    let program = program_with(
        r#"
  - code: november
    name: November bonus
    status: active
    starts_at: "2026-11-01"
    ends_at: "2026-12-01T00:00"
    actions: [{type: fixed, currency: points, points: 30}]
"#,
        "",
    );
    let mut sim = Sim::new(program, "2026-12-05T12:00:00Z");
    sim.enroll("m");
    let mut at = |occurred_at: &str| {
        let mut doc = purchase("10");
        doc["occurred_at"] = occurred_at.into();
        let o = sim.ok(doc);
        points(&o, "november", "points")
    };
    assert_eq!(at("2026-11-30T22:59:59Z"), 30, "23:59:59 local is inside");
    assert_eq!(at("2026-11-30T23:00:00Z"), 0, "local midnight is outside");
    // Posted on 5 December, but the purchase was on 15 November: the promotion applies.
    assert_eq!(at("2026-11-15T10:00:00Z"), 30);
    assert_eq!(
        at("2026-10-31T22:59:00Z"),
        0,
        "before the start (local 23:59 on 31 October)"
    );
    assert_eq!(
        at("2026-10-31T23:00:00Z"),
        30,
        "the start, local midnight, is inside"
    );
}

#[test]
fn conditions_see_the_journal_the_member_and_the_local_time() {
    let program = program_with(
        r#"
  - code: weekend
    name: Weekend
    status: active
    condition: "local.weekday >= 6"
    actions: [{type: fixed, currency: points, points: 1}]
  - code: web-shoes
    name: Web shoes
    status: active
    condition: "journal.channel == 'web' && journal.lines.exists(l, l.category == 'shoes')"
    actions: [{type: fixed, currency: points, points: 2}]
  - code: rich
    name: Members with 100 points
    status: active
    condition: "member.balances.points >= 100"
    actions: [{type: fixed, currency: points, points: 4}]
  - code: vip-attr
    name: Attribute
    status: active
    condition: "has(journal.attributes.coupon) && journal.attributes.coupon == 'VIP'"
    actions: [{type: fixed, currency: points, points: 8}]
"#,
        "",
    );
    let mut sim = sim(program);
    sim.at("2026-06-17T12:00:00Z"); // a Wednesday
    // Saturday 13 June 2026, 10:00 in Berlin.
    let mut doc = shoes_and_socks();
    doc["occurred_at"] = "2026-06-13T08:00:00Z".into();
    doc["channel"] = "web".into();
    doc["attributes"] = json!({"coupon": "VIP"});
    let o = sim.ok(doc);
    let applied: Vec<&str> = o.promotions.iter().map(|p| p.promotion.as_str()).collect();
    assert_eq!(applied, ["weekend", "web-shoes", "vip-attr"], "{o:?}");
    // Now the member has 80 + 11 points; a weekday store purchase with no attributes.
    let mut doc = purchase("10");
    doc["occurred_at"] = "2026-06-10T08:00:00Z".into();
    let o = sim.ok(doc);
    let applied: Vec<&str> = o.promotions.iter().map(|p| p.promotion.as_str()).collect();
    assert!(applied.is_empty(), "{applied:?}");
    let o = sim.ok(purchase("1"));
    let applied: Vec<&str> = o.promotions.iter().map(|p| p.promotion.as_str()).collect();
    assert_eq!(applied, ["rich"]);
}

#[test]
fn an_evaluation_error_means_does_not_apply_and_is_recorded() {
    let program = program_with(
        r#"
  - code: broken
    name: Compares a missing field
    status: active
    condition: "journal.attributes.coupon == 'X'"
    actions: [{type: fixed, currency: points, points: 5}]
"#,
        "",
    );
    let mut sim = sim(program);
    let o = sim.ok(purchase("10"));
    assert_eq!(
        balance(&o, "points"),
        10,
        "the journal is processed with its base points"
    );
    let broken = &o.promotions[0];
    assert_eq!(broken.result, "evaluation_error");
    assert!(
        broken.detail.as_deref().unwrap_or("").contains("coupon"),
        "{broken:?}"
    );
}

#[test]
fn statuses_other_than_active_never_award() {
    let program = program_with(
        r#"
  - code: draft
    name: Draft
    status: draft
    actions: [{type: fixed, currency: points, points: 1}]
  - code: paused
    name: Paused
    status: paused
    actions: [{type: fixed, currency: points, points: 1}]
  - code: ended
    name: Ended
    status: ended
    actions: [{type: fixed, currency: points, points: 1}]
"#,
        "",
    );
    let o = sim(program).ok(purchase("10"));
    assert_eq!(balance(&o, "points"), 10);
    assert!(o.promotions.is_empty());
}

#[test]
fn invalid_promotions_are_refused_with_every_problem_and_its_path() {
    let found = problems(
        r#"
  - code: a
    name: Bad condition
    status: active
    condition: "journal.amount > "
    actions: [{type: fixed, currency: points, points: 1}]
  - code: a
    name: Duplicate code, bad status, no actions
    status: running
    actions: []
  - code: c
    name: Bad actions
    status: active
    starts_at: "262142-12-31T23:59"
    ends_at: "yesterday"
    actions: [{type: multiplier, currency: points, factor: "1.0000000000000000000000000001"}, {type: fixed, currency: gold, points: 1}, {type: teleport}]
"#,
    );
    let expect = [
        "promotions[0].condition: invalid expression",
        "promotions[1].code: a is defined twice",
        "promotions[1].status: \"running\" is not one of",
        "promotions[1].actions: needs at least one action",
        "promotions[2].starts_at:",
        "promotions[2].ends_at:",
        "promotions[2].actions[0].factor:",
        "promotions[2].actions[1].currency: \"gold\" is not a currency",
        "promotions[2].actions[2].type: \"teleport\"",
    ];
    for e in expect {
        assert!(
            found.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
}

#[test]
fn hostile_expressions_are_refused_without_a_crash() {
    let promotion = |condition: &str| {
        format!(
            "  - code: h\n    name: Hostile\n    status: active\n    condition: '{}'\n    actions: [{{type: fixed, currency: points, points: 1}}]\n",
            condition.replace('\'', "''")
        )
    };
    let long = format!("journal.store == \"{}\"", "x".repeat(10_000));
    let deep = format!("{}true{}", "(".repeat(1_000), ")".repeat(1_000));
    let list = format!("journal.amount in [{}]", vec!["1.0"; 50_000].join(", "));
    let deep_list = format!("{}1{}", "[".repeat(1_000), "]".repeat(1_000));
    for (condition, want) in [
        (long, "bytes long"),
        (deep, "nests deeper"),
        (list, "bytes long"),
        (deep_list, "nests deeper"),
    ] {
        let found = problems(&promotion(&condition));
        assert!(
            found
                .iter()
                .any(|p| p.contains("promotions[0].condition") && p.contains(want)),
            "{want}: {found:#?}"
        );
    }
}

#[test]
fn conditions_read_the_members_profile_birthday_and_tenure() {
    let program = program_with(
        r#"
  - code: birthday
    name: Birthday bonus
    status: active
    condition: "member.birthday_today"
    actions: [{type: fixed, currency: points, points: 100}]
  - code: loyal
    name: A year with us
    status: active
    condition: "member.tenure_days >= 365 && member.profile.segment == 'vip'"
    actions: [{type: fixed, currency: points, points: 7}]
"#,
        "",
    );
    assert!(program.needs_member_facts());
    let mut sim = Sim::new(program, "2026-06-30T12:00:00Z");
    sim.enroll("m");
    let member = fidelis_core::ids::ExternalId::parse("m").unwrap();
    sim.book.set_facts(
        &member,
        fidelis_core::promotions::MemberFacts {
            enrolled_at: Some(utc("2025-06-14T08:00:00Z")),
            profile: serde_json::from_value(json!({"birthday": "1990-06-13", "segment": "vip"}))
                .unwrap(),
            segments: Vec::new(),
        },
    );
    let mut on = |occurred_at: &str| {
        let mut doc = purchase("10");
        doc["occurred_at"] = occurred_at.into();
        let o = sim.ok(doc);
        o.promotions
            .iter()
            .map(|p| p.promotion.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    // 13 June in Berlin, 364 days after enrolment: the birthday, not yet a year.
    assert_eq!(on("2026-06-12T22:30:00Z"), ["birthday"]);
    // 14 June: a year (365 days) with us, no birthday.
    assert_eq!(on("2026-06-14T10:00:00Z"), ["loyal"]);
}

#[test]
fn eligibility_by_segment_reads_the_members_refreshed_segments() {
    let program = program_with(
        r#"
  - code: win-back
    name: Come back
    status: active
    eligibility: {segments: [lapsing, dormant]}
    actions: [{type: fixed, currency: points, points: 50}]
segments:
  - {code: lapsing, name: Lapsing, condition: "member.p_alive < 0.5"}
  - {code: dormant, name: Dormant, condition: "member.days_since_purchase > 180"}
  - {code: vip, name: VIP, condition: "member.spend_365d > 1000.0"}
"#,
        "",
    );
    assert!(program.reads_segments() && program.needs_member_facts());
    let mut sim = Sim::new(program, "2026-06-30T12:00:00Z");
    sim.enroll("m");
    let member = fidelis_core::ids::ExternalId::parse("m").unwrap();
    let mut with_segments = |segments: &[&str], at: &str| {
        sim.book.set_facts(
            &member,
            fidelis_core::promotions::MemberFacts {
                enrolled_at: Some(utc("2025-06-14T08:00:00Z")),
                profile: serde_json::Map::new(),
                segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            },
        );
        let mut doc = purchase("10");
        doc["occurred_at"] = at.into();
        let o = sim.ok(doc);
        o.promotions
            .iter()
            .filter(|p| p.result == "applied")
            .map(|p| (p.promotion.as_str().to_owned(), p.points[0].points))
            .collect::<Vec<_>>()
    };
    assert_eq!(with_segments(&["vip"], "2026-06-20T10:00:00Z"), []);
    assert_eq!(
        with_segments(&["vip", "dormant"], "2026-06-21T10:00:00Z"),
        [("win-back".to_owned(), 50)]
    );
}

#[test]
fn eligibility_names_only_the_programs_segments_and_segment_conditions_are_checked() {
    let found = problems(
        r#"
  - code: win-back
    name: Come back
    status: active
    eligibility: {segments: [lapsing, nobody]}
    actions: [{type: fixed, currency: points, points: 50}]
segments:
  - {code: lapsing, name: Lapsing, condition: "member.p_alive < 0.5"}
  - {code: typo, name: Typo, condition: "member.spend_91d > 1.0"}
  - {code: broken, name: Broken, condition: "member.p_alive <"}
  - {code: lapsing, name: Again, condition: "true"}
"#,
    );
    for want in [
        "promotions[0].eligibility.segments[1]",
        "segments[1].condition",
        "spend_91d",
        "segments[2].condition",
        "invalid expression",
        "segments[3].code",
        "defined twice",
    ] {
        assert!(found.iter().any(|p| p.contains(want)), "{want}: {found:#?}");
    }
    assert_eq!(found.len(), 4, "{found:#?}");
}

#[test]
fn without_profile_facts_a_member_condition_is_an_evaluation_error_not_a_failure() {
    let program = program_with(
        r#"
  - code: birthday
    name: Birthday bonus
    status: active
    condition: "member.birthday_today"
    actions: [{type: fixed, currency: points, points: 100}]
"#,
        "",
    );
    let o = sim(program).ok(purchase("10"));
    assert_eq!(balance(&o, "points"), 10);
    assert_eq!(o.promotions[0].result, "evaluation_error");
}

fn limited(limits: &str, points: i64) -> Program {
    program_with(
        &format!(
            r#"
  - code: bonus
    name: Limited bonus
    status: active
    limits: {limits}
    actions: [{{type: fixed, currency: points, points: {points}}}]
"#
        ),
        "",
    )
}

/// What the bonus gave each of the journals posted by `members` at `at`.
fn bonus_for(sim: &mut Sim, posts: &[(&str, &str)]) -> Vec<i64> {
    posts
        .iter()
        .map(|(member, at)| {
            let mut doc = purchase("1");
            doc["member"] = (*member).into();
            doc["occurred_at"] = (*at).into();
            let o = sim.ok(doc);
            points(&o, "bonus", "points")
        })
        .collect()
}

#[test]
fn per_member_limits_count_times_and_cut_points_at_the_cap() {
    let mut sim = Sim::new(
        limited("{per_member: {times: 2}}", 100),
        "2026-12-31T00:00:00Z",
    );
    sim.enroll("a");
    sim.enroll("b");
    let at = "2026-06-01T10:00:00Z";
    assert_eq!(
        bonus_for(&mut sim, &[("a", at), ("a", at), ("a", at), ("b", at)]),
        [100, 100, 0, 100]
    );
    let mut sim = Sim::new(
        limited("{per_member: {points: 250}}", 100),
        "2026-12-31T00:00:00Z",
    );
    sim.enroll("a");
    assert_eq!(bonus_for(&mut sim, &[("a", at); 4]), [100, 100, 50, 0]);
    // The refused one says why.
    let mut doc = purchase("1");
    doc["member"] = "a".into();
    let o = sim.ok(doc);
    assert_eq!(o.promotions[0].result, "limit_reached");
    assert!(
        o.promotions[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("250 points"),
        "{:?}",
        o.promotions[0]
    );
}

#[test]
fn period_limits_reset_at_the_local_period_boundary() {
    let mut sim = Sim::new(
        limited("{per_member_per_period: {period: month, times: 1}}", 10),
        "2026-12-31T00:00:00Z",
    );
    sim.enroll("a");
    // 30 June 23:30 in Berlin is still June; 22:30 UTC on 30 June is 00:30 on 1 July there.
    assert_eq!(
        bonus_for(
            &mut sim,
            &[
                ("a", "2026-06-01T10:00:00Z"),
                ("a", "2026-06-30T21:30:00Z"),
                ("a", "2026-06-30T22:30:00Z"),
                ("a", "2026-07-15T10:00:00Z"),
            ]
        ),
        [10, 0, 10, 0]
    );
}

#[test]
fn budgets_and_daily_caps_count_all_members() {
    let at = "2026-06-01T10:00:00Z";
    let mut sim = Sim::new(limited("{budget_points: 250}", 100), "2026-12-31T00:00:00Z");
    for m in ["a", "b", "c", "d"] {
        sim.enroll(m);
    }
    assert_eq!(
        bonus_for(&mut sim, &[("a", at), ("b", at), ("c", at), ("d", at)]),
        [100, 100, 50, 0]
    );
    let mut sim = Sim::new(limited("{daily_points: 150}", 100), "2026-12-31T00:00:00Z");
    for m in ["a", "b", "c"] {
        sim.enroll(m);
    }
    assert_eq!(
        bonus_for(
            &mut sim,
            &[
                ("a", at),
                ("b", at),
                ("c", at),
                ("c", "2026-06-02T10:00:00Z")
            ]
        ),
        [100, 50, 0, 100]
    );
}

#[test]
fn a_cancelled_or_refunded_award_gives_its_units_back() {
    let mut sim = Sim::new(
        program_with(
            r#"
  - code: bonus
    name: Limited bonus
    status: active
    limits: {budget_points: 100, per_member: {times: 1}}
    actions: [{type: per_money, currency: points, rate: "1"}]
"#,
            "",
        ),
        "2026-12-31T00:00:00Z",
    );
    for m in ["a", "b"] {
        sim.enroll(m);
    }
    let buy = |member: &str, id: &str, amount: &str| {
        json!({"external_id": id, "member": member, "type": "purchase", "amount": amount,
               "currency": "EUR", "occurred_at": "2026-06-01T10:00:00Z"})
    };
    let o = sim.ok(buy("a", "a1", "100"));
    assert_eq!(points(&o, "bonus", "points"), 100);
    assert_eq!(points(&sim.ok(buy("b", "b1", "40")), "bonus", "points"), 0);
    // Refunding 40 of a's 100 gives 40 points back to the budget (a's use stays).
    sim.ok(json!({"member": "a", "type": "refund", "original_external_id": "a1", "amount": "40", "currency": "EUR"}));
    assert_eq!(points(&sim.ok(buy("b", "b2", "60")), "bonus", "points"), 40);
    // Cancelling b's purchase gives back its 40 points and its use.
    sim.ok(json!({"member": "b", "type": "cancellation", "original_external_id": "b2"}));
    assert_eq!(points(&sim.ok(buy("b", "b3", "30")), "bonus", "points"), 30);
    // a already used the promotion once.
    assert_eq!(points(&sim.ok(buy("a", "a2", "5")), "bonus", "points"), 0);
}

#[test]
fn invalid_limits_are_refused_with_their_paths() {
    let found = problems(
        r#"
  - code: a
    name: Bad limits
    status: active
    limits: {per_member: {}, per_member_per_period: {period: fortnight, times: 0}, budget_points: -5, sometimes: 1}
    actions: [{type: fixed, currency: points, points: 1}]
"#,
    );
    for e in [
        "promotions[0].limits.per_member: needs times, points or both",
        "promotions[0].limits.per_member_per_period.period: \"fortnight\"",
        "promotions[0].limits.per_member_per_period.times: must be 1",
        "promotions[0].limits.budget_points: must be 1",
        "promotions[0].limits.sometimes: unknown field",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
}

#[test]
fn cumulative_promotions_count_toward_a_target_and_reset_by_period() {
    let program = program_with(
        r#"
  - code: tenth-coffee
    name: Every 10th coffee
    status: active
    condition: "journal.lines.exists(l, l.category == 'coffee')"
    cumulative: {measure: count, target: "10"}
    actions: [{type: fixed, currency: points, points: 300}]
  - code: quarter-spend
    name: Spend 500 in a quarter
    status: active
    cumulative: {measure: amount, target: "500.00", period: quarter, repeat: false}
    actions: [{type: fixed, currency: points, points: 1000}]
"#,
        "",
    );
    let mut sim = sim(program);
    sim.at("2026-12-31T00:00:00Z");
    let coffee = |at: &str| {
        json!({"member": "m", "type": "purchase", "amount": "3.00", "currency": "EUR", "occurred_at": at,
               "lines": [{"line_id": "1", "category": "coffee", "quantity": 1, "amount": "3.00"}]})
    };
    let mut tenth = Vec::new();
    for day in 1..=11 {
        let o = sim.ok(coffee(&format!("2026-02-{day:02}T10:00:00Z")));
        let r = o
            .promotions
            .iter()
            .find(|p| p.promotion.as_str() == "tenth-coffee")
            .unwrap();
        tenth.push((r.result.to_string(), r.detail.clone().unwrap_or_default()));
    }
    assert_eq!(tenth[8], ("in_progress".into(), "9 of 10".into()));
    assert_eq!(tenth[9].0, "applied");
    assert_eq!(tenth[10], ("in_progress".into(), "1 of 10".into()));

    // 33 from the coffees so far in Q1; 200 + 300 more reaches 500 once; the quarter's
    // later spend does not fire it again; Q2 starts from zero.
    let spend = |sim: &mut Sim, amount: &str, at: &str| {
        let mut doc = purchase(amount);
        doc["occurred_at"] = at.into();
        let o = sim.ok(doc);
        let r = o
            .promotions
            .iter()
            .find(|p| p.promotion.as_str() == "quarter-spend")
            .unwrap();
        (r.result.to_string(), points(&o, "quarter-spend", "points"))
    };
    assert_eq!(
        spend(&mut sim, "200", "2026-03-01T10:00:00Z"),
        ("in_progress".into(), 0)
    );
    assert_eq!(
        spend(&mut sim, "300", "2026-03-02T10:00:00Z"),
        ("applied".into(), 1000)
    );
    // Reached already this quarter: said plainly, not "in progress".
    assert_eq!(
        spend(&mut sim, "600", "2026-03-03T10:00:00Z"),
        ("target_reached".into(), 0)
    );
    assert_eq!(
        spend(&mut sim, "499", "2026-04-01T10:00:00Z"),
        ("in_progress".into(), 0)
    );
    assert_eq!(
        spend(&mut sim, "1", "2026-04-02T10:00:00Z"),
        ("applied".into(), 1000)
    );
}

/// Trust item 20: buy 300, refund 300, buy 200 fired a "spend 500" bonus. Progress falls
/// with a refund (by what it refunds) and a cancellation (by all the journal added).
#[test]
fn cumulative_progress_falls_with_refunds_and_cancellations() {
    let program = program_with(
        r#"
  - code: spend-500
    name: Spend 500
    status: active
    cumulative: {measure: amount, target: "500.00"}
    actions: [{type: fixed, currency: points, points: 1000}]
  - code: fifth-visit
    name: Every 3rd visit
    status: active
    cumulative: {measure: count, target: "3"}
    actions: [{type: fixed, currency: points, points: 7}]
"#,
        "",
    );
    let mut sim = sim(program);
    let result = |o: &Outcome, code: &str| {
        let r = o
            .promotions
            .iter()
            .find(|p| p.promotion.as_str() == code)
            .unwrap();
        (r.result.to_string(), r.detail.clone().unwrap_or_default())
    };
    let buy = |id: &str, amount: &str| json!({"external_id": id, "member": "m", "type": "purchase", "amount": amount, "currency": "EUR"});
    let o = sim.ok(buy("p1", "300"));
    assert_eq!(
        result(&o, "spend-500"),
        ("in_progress".into(), "300.00 of 500.00".into())
    );
    sim.ok(json!({"external_id": "f1", "member": "m", "type": "refund", "original_external_id": "p1", "amount": "300", "currency": "EUR"}));
    let o = sim.ok(buy("p2", "200"));
    assert_eq!(
        result(&o, "spend-500"),
        ("in_progress".into(), "200.00 of 500.00".into())
    );
    // p1, refunded entirely, no longer counts as a visit: p2 was the first that counts.
    assert_eq!(
        result(&o, "fifth-visit"),
        ("in_progress".into(), "1 of 3".into())
    );
    // A partial refund takes back what it refunds.
    sim.ok(json!({"external_id": "f2", "member": "m", "type": "refund", "original_external_id": "p2", "amount": "50", "currency": "EUR"}));
    let o = sim.ok(buy("p3", "100"));
    assert_eq!(
        result(&o, "spend-500"),
        ("in_progress".into(), "250.00 of 500.00".into())
    );
    assert_eq!(
        result(&o, "fifth-visit"),
        ("in_progress".into(), "2 of 3".into())
    );
    // A cancellation takes back all the journal added.
    sim.ok(json!({"external_id": "c3", "member": "m", "type": "cancellation", "original_external_id": "p3"}));
    let o = sim.ok(buy("p4", "300"));
    assert_eq!(
        result(&o, "spend-500"),
        ("in_progress".into(), "450.00 of 500.00".into())
    );
    let o = sim.ok(buy("p5", "50"));
    assert_eq!(result(&o, "spend-500"), ("applied".into(), String::new()));
    assert_eq!(points(&o, "spend-500", "points"), 1000);
}

#[test]
fn punch_cards_count_items_on_matching_lines_and_give_them_back() {
    let program = program_with(
        r#"
  - code: tenth-drink
    name: Buy 9 drinks, the 10th is on us
    status: active
    scope: line
    condition: "line.category == 'drinks'"
    cumulative: {measure: quantity, target: "10"}
    actions: [{type: fixed, currency: points, points: 350}]
"#,
        "",
    );
    let mut sim = sim(program);
    let result = |o: &Outcome| {
        let r = o
            .promotions
            .iter()
            .find(|p| p.promotion.as_str() == "tenth-drink")
            .unwrap_or_else(|| panic!("the punch card is not reported: {o:#?}"));
        (r.result.to_string(), r.detail.clone().unwrap_or_default())
    };
    let line = |id: &str, category: &str, quantity: u32, amount: &str| json!({"line_id": id, "category": category, "quantity": quantity, "amount": amount});
    let buy = |id: &str, lines: Vec<serde_json::Value>| json!({"external_id": id, "member": "m", "type": "purchase", "currency": "EUR", "lines": lines});
    // Two lattes are two stamps; the croissant is none.
    let o = sim.ok(buy(
        "p1",
        vec![line("1", "drinks", 2, "7.00"), line("2", "food", 1, "3.00")],
    ));
    assert_eq!(result(&o), ("in_progress".into(), "2 of 10".into()));
    let o = sim.ok(buy(
        "p2",
        vec![
            line("1", "drinks", 3, "10.50"),
            line("2", "drinks", 1, "2.50"),
        ],
    ));
    assert_eq!(result(&o), ("in_progress".into(), "6 of 10".into()));
    // The refunded latte takes its stamp back; the refunded croissant takes nothing.
    sim.ok(
        json!({"external_id": "f1", "member": "m", "type": "refund", "original_external_id": "p1",
                  "lines": [{"line_id": "1", "quantity": 1}, {"line_id": "2"}]}),
    );
    let o = sim.ok(buy("p3", vec![line("1", "food", 4, "12.00")]));
    assert_eq!(points(&o, "tenth-drink", "points"), 0);
    let o = sim.ok(buy("p4", vec![line("1", "drinks", 4, "14.00")]));
    assert_eq!(result(&o), ("in_progress".into(), "9 of 10".into()));
    // The tenth drink completes the card: one reward for the journal, not one per line.
    let o = sim.ok(buy(
        "p5",
        vec![
            line("1", "drinks", 2, "7.00"),
            line("2", "drinks", 1, "3.50"),
        ],
    ));
    assert_eq!(result(&o), ("applied".into(), String::new()));
    assert_eq!(points(&o, "tenth-drink", "points"), 350);
    // 2 left over; an office order of 18 completes it twice.
    let o = sim.ok(buy("p6", vec![line("1", "drinks", 18, "63.00")]));
    assert_eq!(points(&o, "tenth-drink", "points"), 700);
    // Cancelling that order takes both rewards back and the card back to 2 stamps.
    let c = sim.ok(json!({"external_id": "c6", "member": "m", "type": "cancellation", "original_external_id": "p6"}));
    let reversed: i64 = c
        .reversed
        .iter()
        .filter(|r| r.currency.as_str() == "points")
        .map(|r| r.points)
        .sum();
    assert_eq!(reversed, 700 + 63, "{c:?}");
    let o = sim.ok(buy("p7", vec![line("1", "drinks", 7, "24.50")]));
    assert_eq!(result(&o), ("in_progress".into(), "9 of 10".into()));
}

#[test]
fn opt_in_promotions_apply_only_to_members_who_joined() {
    let program = program_with(
        r#"
  - code: double-december
    name: Double points for those who join
    status: active
    opt_in: true
    actions: [{type: multiplier, currency: points, factor: "2"}]
"#,
        "",
    );
    let mut sim = sim(program);
    let o = sim.ok(purchase("10"));
    assert_eq!(points(&o, "double-december", "points"), 0);
    assert!(
        o.promotions.is_empty(),
        "not joined is not notable in a real outcome"
    );
    // Joining is a counter the store keeps; the book takes it through the same path.
    let member = sim
        .book
        .ledger(&fidelis_core::ids::ExternalId::parse("m").unwrap())
        .unwrap()
        .member;
    sim.book.join(&fidelis_core::promotions::joined_key(
        &fidelis_core::ids::Code::parse("double-december").unwrap(),
        member,
    ));
    let o = sim.ok(purchase("10"));
    assert_eq!(points(&o, "double-december", "points"), 10);
}

#[test]
fn eligibility_and_conditions_see_the_members_tier_before_the_journal() {
    let program = program_with(
        r#"
  - code: status-earning
    name: Status points
    status: active
    actions: [{type: per_money, currency: status, rate: "10"}]
  - code: gold-only
    name: Gold members
    status: active
    eligibility: {tiers: [gold]}
    actions: [{type: fixed, currency: points, points: 7}]
  - code: silver-cel
    name: Silver by condition
    status: active
    condition: "member.tier == 'silver'"
    actions: [{type: fixed, currency: points, points: 3}]
"#,
        "tier_groups:\n  - {code: status, name: Status, currency: status, tiers: [{code: member, name: Member, threshold: 0}, {code: silver, name: Silver, threshold: 100}, {code: gold, name: Gold, threshold: 500}]}\n",
    );
    let mut sim = sim(program);
    let mut fired = |amount: &str| {
        let o = sim.ok(purchase(amount));
        o.promotions
            .iter()
            .filter(|p| p.result == "applied" && p.promotion.as_str() != "status-earning")
            .map(|p| p.promotion.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(fired("10").is_empty(), "status 0 before: member tier");
    assert_eq!(fired("10"), ["silver-cel"], "status 100 before: silver");
    assert_eq!(fired("40"), ["silver-cel"], "status 200 before: silver");
    assert_eq!(fired("1"), ["gold-only"], "status 600 before: gold");
    // An unknown tier is refused with its path.
    let found = problems(
        r#"
  - code: x
    name: Unknown tier
    status: active
    eligibility: {tiers: [platinum]}
    actions: [{type: fixed, currency: points, points: 1}]
"#,
    );
    assert!(
        found.iter().any(
            |p| p.starts_with("promotions[0].eligibility.tiers[0]: \"platinum\" is not a tier")
        ),
        "{found:#?}"
    );
}

#[test]
fn conditions_read_cumulative_progress_as_it_stood_before_the_journal() {
    let program = program_with(
        r#"
  - code: fifth
    name: Every fifth purchase
    status: active
    cumulative: {measure: count, target: "5"}
    actions: [{type: fixed, currency: points, points: 50}]
  - code: almost-there
    name: A nudge on the fourth
    status: active
    condition: "member.progress.fifth == 3"
    actions: [{type: fixed, currency: points, points: 1}]
"#,
        "",
    );
    let mut sim = sim(program);
    let nudged: Vec<i64> = (0..6)
        .map(|_| points(&sim.ok(purchase("1")), "almost-there", "points"))
        .collect();
    assert_eq!(nudged, [0, 0, 0, 1, 0, 0]);
}

/// A promotion with a 20 % control group: about a fifth of the members who qualify are
/// held out — their outcome says `control` and they earn only the base — always the same
/// members for the same promotion, and a different fifth for another promotion.
#[test]
fn a_control_group_is_evaluated_but_never_awarded() {
    let program = program_with(
        r#"
  - code: double
    name: Double points
    status: active
    control_group: {share: "0.20"}
    actions: [{type: multiplier, currency: points, factor: "2"}]
"#,
        "",
    );
    let mut sim = Sim::new(program, "2026-06-10T12:00:00Z");
    let (mut held, mut awarded) = (Vec::new(), 0);
    for m in 0..1_000 {
        let member = format!("m{m}");
        sim.enroll(&member);
        let o = sim
            .ok(json!({"member": member, "type": "purchase", "amount": "10", "currency": "EUR"}));
        let verdicts: Vec<&str> = o.promotions.iter().map(|p| p.result.as_ref()).collect();
        match verdicts.as_slice() {
            ["control"] => {
                assert_eq!(points(&o, "double", "points"), 0);
                assert_eq!(balance(&o, "points"), 10, "the base only");
                held.push(member);
            }
            ["applied"] => {
                assert_eq!(balance(&o, "points"), 20);
                awarded += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        (150..=250).contains(&held.len()),
        "{} of 1000 held out",
        held.len()
    );
    assert_eq!(held.len() + awarded, 1_000);
    // The same members again: the same group, every time.
    for member in &held[..20] {
        let o = sim
            .ok(json!({"member": member, "type": "purchase", "amount": "10", "currency": "EUR"}));
        assert_eq!(o.promotions[0].result, "control");
    }
    // The draw is per promotion: another code holds out other members.
    let control = fidelis_core::promotions::ControlGroup { share_bp: 2_000 };
    let code = |c: &str| fidelis_core::ids::Code::parse(c).unwrap();
    let both = (0..1_000)
        .map(|m| format!("m{m}"))
        .filter(|m| control.holds_out(&code("double"), m) && control.holds_out(&code("triple"), m))
        .count();
    assert!(
        both < 80,
        "{both}: the two draws should be nearly independent (≈ 40)"
    );
    // A share out of range is refused with its path.
    let refused = problems(
        r#"
  - code: bad
    name: Bad
    status: active
    control_group: {share: "0.95"}
    actions: [{type: fixed, currency: points, points: 1}]
"#,
    );
    assert!(
        refused.iter().any(|p| p.contains("control_group.share")),
        "{refused:?}"
    );
}
