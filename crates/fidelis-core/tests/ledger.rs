//! The ledger's rules, scenario by scenario, through the in-memory book.

mod common;

use common::*;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalError};
use fidelis_core::ledger::{EntryKind, MemberStatus};
use serde_json::json;

fn purchase(member: &str, amount: &str) -> serde_json::Value {
    json!({"member": member, "type": "purchase", "amount": amount, "currency": "EUR"})
}

fn redeem(member: &str, points: i64) -> serde_json::Value {
    json!({"member": member, "type": "redemption", "currency": "points", "points": points})
}

#[test]
fn a_purchase_earns_base_points_rounded_down() {
    let mut sim = Sim::new(points_program(""), "2026-11-25T10:42:00+01:00");
    sim.enroll("m");
    let outcome = sim.ok(purchase("m", "79.90"));
    assert_eq!(outcome.awards[0].points, 79);
    assert_eq!(outcome.balances[0].available, 79);
    assert_eq!(sim.balance("m", "points"), (79, 0));
    assert_eq!(
        sim.buckets("m", "points"),
        vec![(Some(utc("2028-11-25T10:42:00+01:00")), 79)]
    );
}

#[test]
fn redemptions_spend_the_earliest_expiry_first_and_record_their_buckets() {
    let mut sim = Sim::new(points_program(""), "2026-06-01T12:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    // Posted later, but dated earlier: its points expire first.
    sim.ok(
        json!({"member": "m", "type": "purchase", "amount": "50", "currency": "EUR",
                  "occurred_at": "2026-01-10T12:00:00+01:00"}),
    );
    sim.ok(redeem("m", 60));
    assert_eq!(
        sim.buckets("m", "points"),
        vec![
            (Some(utc("2028-01-10T12:00:00+01:00")), 0),
            (Some(utc("2028-06-01T12:00:00+02:00")), 90),
        ]
    );
    let id = sim.ledger("m").member;
    let debits: Vec<_> = sim
        .book
        .entries_of(id)
        .filter(|e| e.kind == EntryKind::Redeem)
        .collect();
    assert_eq!(debits.len(), 2, "one debit entry per bucket drawn from");
    assert_eq!(debits[0].amount, -50);
    assert_eq!(debits[1].amount, -10);
    assert_ne!(debits[0].bucket, debits[1].bucket);
}

#[test]
fn validity_is_half_open() {
    let mut sim = Sim::new(
        program(
            "  - {code: points, name: Points, kind: redeemable, expiry: {policy: rolling, days: 10}}",
        ),
        "2026-03-01T00:00:00Z",
    );
    sim.enroll("m");
    sim.ok(purchase("m", "10"));
    // Expires at 2026-03-11T00:00Z: one microsecond before, the points are spendable.
    sim.at("2026-03-10T23:59:59.999999Z");
    sim.ok(redeem("m", 4));
    sim.at("2026-03-11T00:00:00Z");
    let refused = sim.post(redeem("m", 1)).unwrap_err();
    assert!(
        matches!(
            refused,
            JournalError::InsufficientPoints { spendable: 0, .. }
        ),
        "{refused:?}"
    );
    // The refusal still left the ledger untouched, expiry included; the next journal
    // settles it.
    assert_eq!(sim.balance("m", "points"), (6, 0));
    let outcome = sim.ok(purchase("m", "1"));
    assert_eq!(points(&outcome.expired, "points"), 6);
    assert_eq!(sim.balance("m", "points"), (1, 0));
}

#[test]
fn points_credited_later_than_a_redemption_are_not_spendable_by_it() {
    let mut sim = Sim::new(points_program(""), "2026-03-01T12:00:00Z");
    sim.enroll("m");
    sim.ok(purchase("m", "10"));
    let refused = sim
        .post(
            json!({"member": "m", "type": "redemption", "currency": "points", "points": 5,
                     "occurred_at": "2026-02-28T12:00:00Z"}),
        )
        .unwrap_err();
    assert_eq!(refused.code(), "insufficient_points");
}

#[test]
fn pending_points_become_available_after_the_return_window() {
    let mut sim = Sim::new(
        points_program(", pending_days: 14"),
        "2026-11-01T10:00:00+01:00",
    );
    sim.enroll("m");
    let outcome = sim.ok(purchase("m", "50"));
    assert_eq!(
        (outcome.balances[0].available, outcome.balances[0].pending),
        (0, 50)
    );
    let refused = sim.post(redeem("m", 10)).unwrap_err();
    assert_eq!(refused.code(), "insufficient_points");
    // The refusal says what is pending and when it becomes spendable.
    assert_eq!(
        refused.to_string(),
        "10 points requested, 0 spendable; 50 more pending, the first available 2026-11-15T09:00:00Z"
    );
    // An agent's goodwill is available at once, return window or not.
    let goodwill = sim.ok(json!({"external_id": "goodwill-1", "member": "m", "type": "adjustment",
        "currency": "points", "points": 20, "reason": "goodwill", "occurred_at": "2026-11-01T10:00:00+01:00"}));
    assert_eq!(
        (goodwill.balances[0].available, goodwill.balances[0].pending),
        (20, 50)
    );
    sim.ok(redeem("m", 20));
    sim.at("2026-11-15T09:59:59+01:00");
    assert_eq!(sim.book.settle_all(sim.now), 0);
    sim.at("2026-11-15T10:00:00+01:00");
    assert_eq!(sim.book.settle_all(sim.now), 1);
    assert_eq!(sim.balance("m", "points"), (50, 0));
    assert_eq!(sim.entries("m", EntryKind::Release), vec![-50, 50]);
    // As of the same instant again: nothing more.
    assert_eq!(sim.book.settle_all(sim.now), 0);
    sim.ok(redeem("m", 10));
    assert_eq!(sim.balance("m", "points"), (40, 0));
}

#[test]
fn a_refund_inside_the_return_window_cancels_pending_points() {
    let mut sim = Sim::new(
        points_program(", pending_days: 30, return_policy: pending_only"),
        "2026-11-01T10:00:00+01:00",
    );
    sim.enroll("m");
    sim.ok(json!({"external_id": "p1", "member": "m", "type": "purchase", "amount": "80", "currency": "EUR"}));
    sim.at("2026-11-10T10:00:00+01:00");
    let outcome = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "p1", "amount": "20", "currency": "EUR"}));
    assert_eq!(points(&outcome.reversed, "points"), 20);
    assert_eq!(sim.balance("m", "points"), (0, 60));
    // After the window, pending_only takes nothing back.
    sim.at("2026-12-02T10:00:00+01:00");
    let outcome = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "p1", "amount": "20", "currency": "EUR"}));
    assert_eq!(points(&outcome.released, "points"), 60);
    assert_eq!(points(&outcome.reversed, "points"), 0);
    assert_eq!(points(&outcome.unrecovered, "points"), 20);
    assert_eq!(sim.balance("m", "points"), (60, 0));
}

#[test]
fn expiry_is_an_explicit_entry_at_the_expiry_instant_and_idempotent() {
    let mut sim = Sim::new(
        program(
            "  - {code: points, name: Points, kind: redeemable, expiry: {policy: rolling, months: 1, round_up: end_of_month}}",
        ),
        "2026-01-15T10:00:00+01:00",
    );
    sim.enroll("m");
    sim.ok(purchase("m", "30"));
    sim.ok(redeem("m", 10));
    sim.at("2026-03-01T00:00:00+01:00");
    assert_eq!(sim.book.settle_all(sim.now), 1);
    assert_eq!(sim.book.settle_all(sim.now), 0);
    assert_eq!(sim.book.settle_all(utc("2026-04-01T00:00:00Z")), 0);
    let id = sim.ledger("m").member;
    let expiry: Vec<_> = sim
        .book
        .entries_of(id)
        .filter(|e| e.kind == EntryKind::Expire)
        .collect();
    assert_eq!(expiry.len(), 1);
    assert_eq!(expiry[0].amount, -20);
    assert_eq!(expiry[0].effective_at, utc("2026-03-01T00:00:00+01:00"));
    assert_eq!(sim.balance("m", "points"), (0, 0));
}

#[test]
fn inactivity_expires_the_whole_balance_and_activity_extends_it() {
    let mut sim = Sim::new(
        program(
            "  - {code: points, name: Points, kind: redeemable, expiry: {policy: inactivity, months: 12}}",
        ),
        "2026-01-10T10:00:00Z",
    );
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    sim.at("2026-12-01T10:00:00Z");
    sim.ok(purchase("m", "5"));
    // Twelve months after the first purchase, but not after the last activity.
    assert_eq!(sim.book.settle_all(utc("2027-01-10T10:00:00Z")), 0);
    assert_eq!(sim.balance("m", "points"), (105, 0));
    assert_eq!(sim.book.settle_all(utc("2027-12-01T10:00:00Z")), 1);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    assert_eq!(
        sim.entries("m", EntryKind::Expire).iter().sum::<i64>(),
        -105
    );
}

#[test]
fn points_dated_past_their_expiry_expire_at_once() {
    let mut sim = Sim::new(points_program(""), "2026-11-25T10:00:00Z");
    sim.enroll("m");
    let outcome = sim.ok(
        json!({"member": "m", "type": "purchase", "amount": "40", "currency": "EUR",
                               "occurred_at": "2024-01-01T10:00:00Z"}),
    );
    assert_eq!(outcome.awards[0].points, 40);
    assert_eq!(points(&outcome.expired, "points"), 40);
    assert_eq!(sim.balance("m", "points"), (0, 0));
}

#[test]
fn return_policies_decide_what_a_refund_takes_back_after_spending() {
    let cases = [
        // (policy fields, reversed, unrecovered, available after, available after a new 50)
        ("", 20, 80, 0, 50),
        (", return_policy: allow_negative", 100, 0, -80, -30),
        (
            ", return_policy: allow_negative, negative_floor: -50",
            70,
            30,
            -50,
            0,
        ),
        (", return_policy: pending_only", 0, 100, 20, 70),
    ];
    for (fields, reversed, unrecovered, after, after_earning) in cases {
        let mut sim = Sim::new(points_program(fields), "2026-11-01T10:00:00Z");
        sim.enroll("m");
        sim.ok(json!({"external_id": "p1", "member": "m", "type": "purchase", "amount": "100", "currency": "EUR"}));
        sim.ok(redeem("m", 80));
        let outcome =
            sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "p1"}));
        assert_eq!(points(&outcome.reversed, "points"), reversed, "{fields}");
        assert_eq!(
            points(&outcome.unrecovered, "points"),
            unrecovered,
            "{fields}"
        );
        assert_eq!(sim.balance("m", "points").0, after, "{fields}");
        sim.ok(purchase("m", "50"));
        assert_eq!(
            sim.balance("m", "points").0,
            after_earning,
            "{fields}: arrears are paid back first"
        );
        sim.ledger("m").check(sim.book.program()).unwrap();
    }
}

#[test]
fn refunds_follow_lines_or_the_share_of_the_amount_and_never_exceed_the_purchase() {
    let mut sim = Sim::new(points_program(""), "2026-11-25T10:42:00+01:00");
    sim.enroll("m");
    let outcome = sim.ok(json!({"external_id": "pos-1", "member": "m", "type": "purchase", "amount": "79.90", "currency": "EUR",
        "lines": [{"line_id": "1", "sku": "SH-123", "category": "shoes", "quantity": 1, "amount": "59.90"},
                  {"line_id": "2", "sku": "SO-9", "category": "socks", "quantity": 2, "amount": "20.00"}]}));
    assert_eq!(outcome.awards[0].points, 79);
    let refund = |lines: serde_json::Value| json!({"member": "m", "type": "refund", "original_external_id": "pos-1", "lines": lines});
    // One pair of socks: half of line 2's 20 points.
    let outcome = sim.ok(refund(json!([{"line_id": "2", "quantity": 1}])));
    assert_eq!(points(&outcome.reversed, "points"), 10);
    assert_eq!(outcome.refunded_amount.as_deref(), Some("10.00"));
    let too_many = sim
        .post(refund(json!([{"line_id": "2", "quantity": 2}])))
        .unwrap_err();
    assert_eq!(too_many.code(), "refund_exceeds_original");
    // The shoes: exactly the 59 points their line earned.
    let outcome = sim.ok(refund(json!([{"line_id": "1"}])));
    assert_eq!(points(&outcome.reversed, "points"), 59);
    let twice = sim.post(refund(json!([{"line_id": "1"}]))).unwrap_err();
    assert_eq!(twice.code(), "refund_exceeds_original");
    let by_amount = sim
        .post(json!({"member": "m", "type": "refund", "original_external_id": "pos-1", "amount": "10.01", "currency": "EUR"}))
        .unwrap_err();
    assert_eq!(by_amount.code(), "refund_exceeds_original");
    let outcome = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "pos-1", "amount": "10.00", "currency": "EUR"}));
    assert_eq!(points(&outcome.reversed, "points"), 10);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    let unknown = sim.post(refund(json!([{"line_id": "9"}]))).unwrap_err();
    assert_eq!(unknown.code(), "invalid_journal");
}

#[test]
fn partial_refunds_by_amount_add_up_to_exactly_the_points_earned() {
    let mut sim = Sim::new(points_program(""), "2026-11-25T10:00:00Z");
    sim.enroll("m");
    sim.ok(json!({"external_id": "p", "member": "m", "type": "purchase", "amount": "99.99", "currency": "EUR"}));
    let mut reversed = 0;
    for amount in ["33.33", "33.33", "33.33"] {
        let o = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "p", "amount": amount, "currency": "EUR"}));
        reversed += points(&o.reversed, "points");
    }
    assert_eq!(reversed, 99);
    assert_eq!(sim.balance("m", "points"), (0, 0));
}

#[test]
fn cancelling_a_redemption_gives_points_back_with_their_original_expiry() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00+01:00");
    sim.enroll("m");
    sim.ok(purchase("m", "50"));
    sim.at("2026-06-01T12:00:00+02:00");
    sim.ok(purchase("m", "100"));
    let before = sim.buckets("m", "points");
    sim.ok(json!({"external_id": "r1", "member": "m", "type": "redemption", "currency": "points", "points": 120}));
    assert_eq!(sim.balance("m", "points"), (30, 0));
    sim.at("2026-07-01T12:00:00+02:00");
    let outcome =
        sim.ok(json!({"member": "m", "type": "cancellation", "original_external_id": "r1"}));
    assert_eq!(points(&outcome.restored, "points"), 120);
    assert_eq!(sim.buckets("m", "points"), before);
    let again = sim
        .post(json!({"member": "m", "type": "cancellation", "original_external_id": "r1"}))
        .unwrap_err();
    assert_eq!(again.code(), "already_cancelled");
}

#[test]
fn a_cancelled_refund_makes_its_share_refundable_again() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    sim.enroll("m");
    sim.ok(json!({"external_id": "p", "member": "m", "type": "purchase", "amount": "40", "currency": "EUR"}));
    sim.ok(
        json!({"external_id": "r", "member": "m", "type": "refund", "original_external_id": "p"}),
    );
    assert_eq!(sim.balance("m", "points"), (0, 0));
    sim.ok(json!({"member": "m", "type": "cancellation", "original_external_id": "r"}));
    assert_eq!(sim.balance("m", "points"), (40, 0));
    let o = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "p", "amount": "10", "currency": "EUR"}));
    assert_eq!(points(&o.reversed, "points"), 10);
}

#[test]
fn a_cancelled_purchase_cannot_be_refunded_and_its_refund_cannot_be_undone() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    sim.enroll("m");
    sim.ok(json!({"external_id": "p", "member": "m", "type": "purchase", "amount": "40", "currency": "EUR"}));
    sim.ok(json!({"external_id": "r", "member": "m", "type": "refund", "original_external_id": "p", "amount": "10", "currency": "EUR"}));
    let o = sim.ok(json!({"member": "m", "type": "cancellation", "original_external_id": "p"}));
    assert_eq!(points(&o.reversed, "points"), 30);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    let refund = sim.post(json!({"member": "m", "type": "refund", "original_external_id": "p", "amount": "1", "currency": "EUR"}));
    assert_eq!(refund.unwrap_err().code(), "not_refundable");
    let undo =
        sim.post(json!({"member": "m", "type": "cancellation", "original_external_id": "r"}));
    assert_eq!(undo.unwrap_err().code(), "not_cancellable");
}

#[test]
fn a_redemption_may_overdraw_down_to_an_explicit_floor_only() {
    let mut sim = Sim::new(
        points_program(", return_policy: allow_negative, negative_floor: -100"),
        "2026-01-10T12:00:00Z",
    );
    sim.enroll("m");
    sim.ok(purchase("m", "50"));
    sim.ok(redeem("m", 150));
    assert_eq!(sim.balance("m", "points"), (-100, 0));
    let refused = sim.post(redeem("m", 1)).unwrap_err();
    assert!(
        matches!(
            refused,
            JournalError::InsufficientPoints { spendable: 0, .. }
        ),
        "{refused:?}"
    );
    sim.ok(purchase("m", "120"));
    assert_eq!(sim.balance("m", "points"), (20, 0));
    sim.ledger("m").check(sim.book.program()).unwrap();
}

#[test]
fn suspended_and_closed_members_are_refused_and_nothing_changes() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    sim.enroll("m");
    sim.ok(purchase("m", "50"));
    let member = fidelis_core::ids::ExternalId::parse("m").unwrap();
    for (status, code) in [
        (MemberStatus::Suspended, "member_suspended"),
        (MemberStatus::Closed, "member_closed"),
    ] {
        sim.book.set_status(&member, status);
        assert_eq!(sim.post(purchase("m", "10")).unwrap_err().code(), code);
        assert_eq!(sim.post(redeem("m", 10)).unwrap_err().code(), code);
        assert_eq!(sim.balance("m", "points"), (50, 0));
    }
}

#[test]
fn a_replay_answers_the_first_outcome_and_a_different_document_is_refused() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    sim.enroll("m");
    let first = sim.ok(json!({"external_id": "x", "member": "m", "type": "purchase", "amount": "12.5", "currency": "EUR",
                             "occurred_at": "2026-01-10T13:00:00+01:00"}));
    // The same journal written differently (amount digits, offset) is the same journal.
    let replay = sim.ok(json!({"external_id": "x", "member": "m", "type": "purchase", "amount": "12.50", "currency": "EUR",
                              "occurred_at": "2026-01-10T12:00:00Z"}));
    assert_eq!(first, replay);
    assert_eq!(sim.balance("m", "points"), (12, 0));
    let conflict = sim
        .post(json!({"external_id": "x", "member": "m", "type": "purchase", "amount": "13", "currency": "EUR"}))
        .unwrap_err();
    assert_eq!(conflict.code(), "idempotency_conflict");
    assert_eq!(sim.balance("m", "points"), (12, 0));
}

#[test]
fn journal_documents_are_checked_with_clear_reasons() {
    let sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    let program = sim.book.program();
    let cases = [
        (
            json!({"member": "m", "type": "purchase", "occurred_at": "2026-01-10T12:00:00Z", "amount": "1", "currency": "EUR"}),
            "external_id is required",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "purchase", "occurred_at": "yesterday", "amount": "1", "currency": "EUR"}),
            "RFC 3339",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "purchase", "occurred_at": "2026-01-10T12:00:00Z", "amount": "-1", "currency": "EUR"}),
            "non-negative decimal",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "purchase", "occurred_at": "2026-01-10T12:00:00Z", "amount": "1.001", "currency": "EUR"}),
            "more decimals",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "purchase", "occurred_at": "2026-01-10T12:00:00Z", "amount": "1", "currency": "USD"}),
            "not USD",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "flight", "occurred_at": "2026-01-10T12:00:00Z"}),
            "not a journal type",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "purchase", "occurred_at": "2026-01-10T12:00:00Z", "amount": "10", "currency": "EUR",
                "lines": [{"line_id": "1", "amount": "4"}]}),
            "differs from the sum of the lines",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "redemption", "occurred_at": "2026-01-10T12:00:00Z", "currency": "points", "points": 0}),
            "points must be",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "adjustment", "occurred_at": "2026-01-10T12:00:00Z", "currency": "points", "points": 5}),
            "reason",
        ),
        (
            // i64::MIN has no absolute value: it must be refused, not overflow.
            json!({"external_id": "x", "member": "m", "type": "adjustment", "occurred_at": "2026-01-10T12:00:00Z", "currency": "points", "points": i64::MIN, "reason": "fix"}),
            "at most",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "redemption", "occurred_at": "2026-01-10T12:00:00Z", "currency": "points", "points": i64::MIN}),
            "points must be",
        ),
        (
            json!({"external_id": "x", "member": "m", "type": "redemption", "occurred_at": "2026-01-10T12:00:00Z", "currency": "gold", "points": 5}),
            "not a currency",
        ),
    ];
    for (json, want) in cases {
        let doc: fidelis_core::journal::JournalDocument =
            serde_json::from_value(json.clone()).unwrap();
        let err = fidelis_core::journal::Journal::parse(&doc, program).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{json}: got {err}, want …{want}…"
        );
    }
    let unknown_field = serde_json::from_value::<fidelis_core::journal::JournalDocument>(
        json!({"external_id": "x", "amont": "1"}),
    );
    assert!(
        unknown_field
            .unwrap_err()
            .to_string()
            .contains("unknown field `amont`")
    );
}

#[test]
fn a_future_dated_journal_is_refused() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00Z");
    sim.enroll("m");
    let err = sim
        .post(json!({"member": "m", "type": "purchase", "amount": "1", "currency": "EUR", "occurred_at": "2026-01-10T12:06:00Z"}))
        .unwrap_err();
    assert_eq!(err.code(), "future_dated");
    sim.ok(json!({"member": "m", "type": "purchase", "amount": "1", "currency": "EUR", "occurred_at": "2026-01-10T12:04:00Z"}));
}

/// Found by the property tests: cancelling a purchase whose points had already expired
/// took the same number of points from the member's other buckets.
#[test]
fn reversing_a_journal_whose_points_expired_takes_nothing_else() {
    let mut sim = Sim::new(
        program(
            "  - {code: points, name: Points, kind: redeemable, expiry: {policy: rolling, days: 30}}",
        ),
        "2026-06-01T12:00:00Z",
    );
    sim.enroll("m");
    sim.ok(purchase("m", "25"));
    let old = sim.ok(json!({"external_id": "old", "member": "m", "type": "purchase", "amount": "40", "currency": "EUR",
                           "occurred_at": "2026-04-01T12:00:00Z"}));
    assert_eq!(points(&old.expired, "points"), 40);
    let refund = sim.ok(json!({"member": "m", "type": "refund", "original_external_id": "old", "amount": "10", "currency": "EUR"}));
    assert_eq!(points(&refund.already_expired, "points"), 10);
    assert_eq!(points(&refund.reversed, "points"), 0);
    let cancel =
        sim.ok(json!({"member": "m", "type": "cancellation", "original_external_id": "old"}));
    assert_eq!(points(&cancel.already_expired, "points"), 30);
    assert_eq!(points(&cancel.reversed, "points"), 0);
    assert_eq!(sim.balance("m", "points"), (25, 0));
}

fn hold(member: &str, order: &str, points: i64, until: &str) -> serde_json::Value {
    json!({"external_id": format!("hold:{order}"), "member": member, "type": "hold",
           "currency": "points", "points": points, "expires_at": until})
}

fn end_hold(member: &str, how: &str, order: &str) -> serde_json::Value {
    json!({"external_id": format!("{how}:{order}"), "member": member, "type": how})
}

#[test]
fn a_hold_reserves_points_and_its_capture_is_a_redemption_from_the_same_buckets() {
    let mut sim = Sim::new(points_program(""), "2026-01-10T12:00:00+01:00");
    sim.enroll("m");
    sim.ok(purchase("m", "50"));
    sim.at("2026-06-01T12:00:00+02:00");
    sim.ok(purchase("m", "100"));
    let outcome = sim.ok(hold("m", "A-1", 120, "2026-06-01T12:15:00+02:00"));
    assert_eq!(points(&outcome.debited, "points"), 120);
    // Held points are not spendable elsewhere.
    assert_eq!(sim.balance("m", "points"), (30, 0));
    let refused = sim.post(redeem("m", 31)).unwrap_err();
    assert_eq!(refused.code(), "insufficient_points");
    let held_buckets = sim.buckets("m", "points");
    // Captured: the balance does not move, the held entries become redemptions.
    sim.at("2026-06-01T12:10:00+02:00");
    sim.ok(end_hold("m", "capture", "A-1"));
    assert_eq!(sim.balance("m", "points"), (30, 0));
    assert_eq!(sim.buckets("m", "points"), held_buckets);
    assert_eq!(sim.entries("m", EntryKind::Redeem), vec![-50, -70]);
    assert_eq!(
        sim.entries("m", EntryKind::Hold).iter().sum::<i64>(),
        0,
        "nothing is held any more"
    );
    // A capture is a redemption: cancelling it (the order was returned) gives the points
    // back to their buckets, with their original expiry.
    let outcome = sim
        .ok(json!({"member": "m", "type": "cancellation", "original_external_id": "capture:A-1"}));
    assert_eq!(points(&outcome.restored, "points"), 120);
    assert_eq!(sim.balance("m", "points"), (150, 0));
    assert_eq!(
        sim.buckets("m", "points"),
        vec![
            (Some(utc("2028-01-10T12:00:00+01:00")), 50),
            (Some(utc("2028-06-01T12:00:00+02:00")), 100),
        ]
    );
    // Every step happens once per order.
    let again = sim.post(end_hold("m", "release", "A-1")).unwrap_err();
    assert_eq!(again.code(), "hold_captured");
}

#[test]
fn a_released_hold_gives_points_back_and_cannot_be_captured() {
    let mut sim = Sim::new(points_program(""), "2026-06-01T12:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    let before = sim.buckets("m", "points");
    sim.ok(hold("m", "B-1", 80, "2026-06-01T12:15:00+02:00"));
    let outcome = sim.ok(end_hold("m", "release", "B-1"));
    assert_eq!(points(&outcome.restored, "points"), 80);
    assert_eq!(sim.balance("m", "points"), (100, 0));
    assert_eq!(sim.buckets("m", "points"), before);
    assert_eq!(sim.entries("m", EntryKind::Hold), vec![-80, 80]);
    let refused = sim.post(end_hold("m", "capture", "B-1")).unwrap_err();
    assert_eq!(refused.code(), "hold_released");
    // A hold is released or captured, never cancelled.
    sim.ok(hold("m", "B-2", 10, "2026-06-01T12:15:00+02:00"));
    let refused = sim
        .post(json!({"member": "m", "type": "cancellation", "original_external_id": "hold:B-2"}))
        .unwrap_err();
    assert_eq!(refused.code(), "not_cancellable");
    // Without a hold there is nothing to end.
    let refused = sim.post(end_hold("m", "capture", "nope")).unwrap_err();
    assert_eq!(refused.code(), "unknown_hold");
}

#[test]
fn a_hold_cannot_be_captured_from_its_expiry_on_and_its_points_keep_their_own_expiry() {
    // Points expiring while held: the release gives them back to their bucket, which the
    // next settlement expires, as for a cancelled redemption.
    let mut sim = Sim::new(points_program(""), "2024-06-01T09:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    sim.at("2026-06-01T08:50:00+02:00");
    sim.ok(hold("m", "C-1", 100, "2026-06-01T09:10:00+02:00"));
    // Half-open: at the hold's end it is expired.
    sim.at("2026-06-01T09:10:00+02:00");
    let refused = sim.post(end_hold("m", "capture", "C-1")).unwrap_err();
    assert_eq!(refused.code(), "hold_expired");
    assert!(
        refused.to_string().contains("2026-06-01T07:10:00Z"),
        "{refused}"
    );
    let outcome = sim.ok(end_hold("m", "release", "C-1"));
    assert_eq!(points(&outcome.restored, "points"), 100);
    // The bucket's own expiry (two years after earning) passed while it was held.
    assert_eq!(points(&outcome.expired, "points"), 100);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    // One second before its end a hold can still be captured.
    sim.ok(purchase("m", "40"));
    sim.ok(hold("m", "C-2", 40, "2026-06-01T09:20:00+02:00"));
    sim.at("2026-06-01T09:19:59+02:00");
    sim.ok(end_hold("m", "capture", "C-2"));
}

#[test]
fn hold_documents_are_checked() {
    let mut sim = Sim::new(points_program(""), "2026-06-01T12:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    for (doc, says) in [
        (
            json!({"external_id": "h1", "member": "m", "type": "hold", "currency": "points", "points": 5, "expires_at": "2026-06-01T13:00:00+02:00"}),
            "\"hold:\" followed by the order's id",
        ),
        (
            json!({"external_id": "hold:x", "member": "m", "type": "hold", "currency": "points", "points": 5}),
            "expires_at",
        ),
        (
            json!({"external_id": "hold:x", "member": "m", "type": "hold", "currency": "points", "points": 5, "expires_at": "2026-06-01T11:00:00+02:00"}),
            "after occurred_at",
        ),
        (
            json!({"external_id": "capture:x", "member": "m", "type": "capture", "points": 5}),
            "only its own fields",
        ),
        (
            json!({"external_id": "j9", "member": "m", "type": "purchase", "amount": "5", "currency": "EUR", "expires_at": "2026-06-01T13:00:00+02:00"}),
            "only holds",
        ),
    ] {
        let mut json = doc.clone();
        json.as_object_mut()
            .unwrap()
            .insert("occurred_at".into(), "2026-06-01T12:00:00+02:00".into());
        let doc: fidelis_core::journal::JournalDocument = serde_json::from_value(json).unwrap();
        let err = fidelis_core::journal::Journal::parse(&doc, sim.book.program())
            .expect_err(&doc.external_id.clone().unwrap_or_default());
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}

/// A journal the store builds itself (never from a document): the hold reserving a held
/// redemption's points, or the released redemption capturing it.
fn built(sim: &Sim, external_id: &str, body: fidelis_core::journal::JournalBody) -> Journal {
    Journal {
        external_id: ExternalId::parse(external_id).unwrap(),
        member: ExternalId::parse("m").unwrap(),
        occurred_at: sim.now,
        body,
    }
}

#[test]
fn a_redemption_held_for_review_spends_exactly_its_reserved_points_whatever_expired_meanwhile() {
    use fidelis_core::journal::{HOLD_PREFIX, JournalBody, review_order};
    let mut sim = Sim::new(points_program(""), "2024-06-01T09:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    let ix = sim.book.program().currency_ix("points").unwrap();
    // Held for review one hour before the points' expiry: the hold takes them out of
    // their bucket at once.
    sim.at("2026-06-01T08:00:00+02:00");
    let hold = format!("{HOLD_PREFIX}{}", review_order("r-1"));
    assert_eq!(hold, "hold:review:r-1");
    let reserve = built(
        &sim,
        &hold,
        JournalBody::Hold {
            currency: ix,
            points: 60,
            until: sim.now + chrono::Duration::days(36_500),
            partner: None,
        },
    );
    sim.book.post(&reserve, sim.now).unwrap();
    assert_eq!(sim.balance("m", "points"), (40, 0));
    // A day later the bucket has expired; the reserved points have not.
    assert_eq!(sim.settle_at("2026-06-02T09:00:00+02:00"), 1);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    let redemption = |points| JournalBody::Redemption {
        currency: ix,
        points,
        partner: None,
        reserved: Some(ExternalId::parse(&hold).unwrap()),
    };
    let (outcome, _) = sim
        .book
        .post(&built(&sim, "r-1", redemption(60)), sim.now)
        .unwrap();
    assert_eq!(points(&outcome.debited, "points"), 60);
    assert_eq!(sim.balance("m", "points"), (0, 0));
    assert_eq!(sim.entries("m", EntryKind::Redeem), vec![-60]);
    assert_eq!(sim.entries("m", EntryKind::Hold).iter().sum::<i64>(), 0);
    // Captured once: a second release of the same review finds the hold captured.
    let again = sim
        .book
        .post(&built(&sim, "r-1b", redemption(60)), sim.now)
        .unwrap_err();
    assert_eq!(again.code(), "hold_captured");
}

#[test]
fn review_orders_belong_to_fidelis_and_always_fit_an_external_id() {
    use fidelis_core::journal::review_order;
    let mut sim = Sim::new(points_program(""), "2026-06-01T12:00:00+02:00");
    sim.enroll("m");
    sim.ok(purchase("m", "100"));
    for how in ["hold", "capture", "release"] {
        let mut doc =
            json!({"external_id": format!("{how}:review:r-1"), "member": "m", "type": how});
        if how == "hold" {
            doc["currency"] = "points".into();
            doc["points"] = 5.into();
            doc["expires_at"] = "2026-06-01T13:00:00+02:00".into();
        }
        doc["occurred_at"] = "2026-06-01T12:00:00+02:00".into();
        let doc: fidelis_core::journal::JournalDocument = serde_json::from_value(doc).unwrap();
        let refused = Journal::parse(&doc, sim.book.program()).unwrap_err();
        assert!(refused.to_string().contains("Fidelis's own"), "{refused}");
    }
    assert_eq!(sim.balance("m", "points"), (100, 0));
    // The longest external id still names a hold that is an external id, distinct from
    // another's.
    let long = "x".repeat(ExternalId::MAX_LEN);
    let order = review_order(&long);
    assert_eq!(order.len(), "review:#".len() + 32);
    assert_ne!(order, review_order(&"y".repeat(ExternalId::MAX_LEN)));
    ExternalId::parse(&format!("capture:{order}")).unwrap();
    let fits = "z".repeat(ExternalId::MAX_LEN - "capture:review:".len());
    assert_eq!(review_order(&fits), format!("review:{fits}"));
}
