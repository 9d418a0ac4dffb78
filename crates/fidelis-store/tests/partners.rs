//! Partners and their ledger through the store, on SQLite and a throw-away PostgreSQL:
//! pack arithmetic over top-ups, accruals, refunds, cancellations and redemptions at a
//! burn partner; the alert raised once when the pack crosses its threshold; a pack that
//! refuses what it cannot cover, also under concurrent accruals; and a partner's figures
//! always the sums of its entries.

use std::sync::Arc;

use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::partners::PartnerDocument;
use fidelis_store::{Actor, LoadedProgram, Prepared, Store, StoreError};
use serde_json::json;

fidelis_testkit::store_tests!(
    a_partner_ledger_counts_packs_bills_and_reimbursements_exactly,
    concurrent_accruals_never_take_a_refusing_pack_below_zero,
    a_closed_statement_never_changes_and_a_late_journal_lands_on_the_next,
    the_liability_is_what_members_hold_and_history_estimates_breakage,
);

mod common;
use common::utc;

fn manager() -> Actor {
    Actor {
        name: "finance-fay".into(),
        role: "program_manager".into(),
    }
}

const NOW: &str = "2026-06-01T10:00:00Z";

async fn setup(store: &Store, members: &[String]) -> Arc<LoadedProgram> {
    let loaded = common::program_with_members(
        store,
        json!({
            "code": "air", "name": "Air", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "miles", "name": "Miles", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "miles", "rate": "1"}]}
        }),
        members,
    )
    .await;
    for (code, partner) in [
        (
            "cars",
            json!({"name": "Car rental", "roles": "earn", "billing": "prepaid",
                   "cost_per_point": "0.008", "alert_below": 500}),
        ),
        (
            "bank",
            json!({"name": "Bank card", "roles": "earn", "billing": "postpaid",
                   "cost_per_point": "0.0125"}),
        ),
        (
            "hotel",
            json!({"name": "Hotel", "roles": "burn", "reimbursement_per_point": "0.006"}),
        ),
    ] {
        let doc: PartnerDocument = serde_json::from_value(partner).unwrap();
        store
            .put_partner(&loaded, code, &doc, utc(NOW), &manager())
            .await
            .unwrap();
    }
    loaded
}

fn journal(program: &LoadedProgram, v: serde_json::Value) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(v).unwrap();
    Prepared::new(
        Journal::parse(&doc, &program.program).unwrap(),
        &program.program,
    )
    .unwrap()
}

async fn post(
    store: &Store,
    program: &Arc<LoadedProgram>,
    v: serde_json::Value,
) -> Result<fidelis_store::Posted, &'static str> {
    store
        .post_realtime(program, journal(program, v), utc(NOW))
        .await
        .unwrap()
        .map_err(|e| e.code())
}

fn purchase(id: &str, member: &str, amount: &str, partner: &str) -> serde_json::Value {
    json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": NOW,
           "amount": amount, "currency": "EUR", "partner": partner})
}

async fn pack(store: &Store, program: &LoadedProgram, code: &str) -> i64 {
    let view = store.partner(program, code).await.unwrap().unwrap();
    let sums = store.partner_sums(program, code).await.unwrap();
    assert_eq!(view.pack, sums.pack, "the pack is the sum of its entries");
    view.pack
}

async fn miles(store: &Store, program: &LoadedProgram, member: &str) -> i64 {
    let m = store.require_member(program, member).await.unwrap();
    store.balances(program, &m, utc(NOW)).await.unwrap()[0].available
}

async fn a_partner_ledger_counts_packs_bills_and_reimbursements_exactly(store: Store) {
    let program = setup(&store, &["m".to_owned()]).await;
    let now = utc(NOW);
    // A pack of 1,000 miles bought at 0.008: €8.00 owed by the partner.
    let (top_up, replayed) = store
        .top_up_partner(&program, "cars", "inv-1", 1_000, now, &manager())
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(
        (top_up.points, top_up.pack, top_up.amount),
        (1_000, 1_000, 800)
    );
    let (_, replayed) = store
        .top_up_partner(&program, "cars", "inv-1", 1_000, now, &manager())
        .await
        .unwrap();
    assert!(replayed, "the same top-up again is a retry");
    let e = store
        .top_up_partner(&program, "cars", "inv-1", 900, now, &manager())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("idempotency_conflict", _)),
        "{e}"
    );
    let e = store
        .top_up_partner(&program, "bank", "inv-2", 10, now, &manager())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("partner_not_prepaid", _)),
        "{e}"
    );
    assert_eq!(pack(&store, &program, "cars").await, 1_000);

    // Accruals debit the pack; the third crossing below 500 raises one alert. (A webhook
    // takes `points.earned`: without one, that event is not written.)
    store
        .create_webhook(
            &program,
            &fidelis_store::NewWebhook {
                url: "http://127.0.0.1:9/hook".into(),
                events: vec!["points.earned".into()],
                description: String::new(),
                secret: "s".into(),
            },
            &Actor::cli().entry(utc("2026-06-01T10:00:00Z"), "webhook.create", None, None),
            utc("2026-06-01T10:00:00Z"),
        )
        .await
        .unwrap();
    post(&store, &program, purchase("j1", "m", "300.00", "cars"))
        .await
        .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 700);
    post(&store, &program, purchase("j2", "m", "250.00", "cars"))
        .await
        .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 450);
    post(&store, &program, purchase("j3", "m", "100.00", "cars"))
        .await
        .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 350);
    // One pack_low event for the one crossing, beside the outbox's other events (the
    // enrolment and each accrual's points, written with them).
    let all = store.events(&program, None, 10).await.unwrap();
    let kinds: Vec<&str> = all.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "member.enrolled",
            "points.earned",
            "partner.pack_low",
            "points.earned",
            "points.earned"
        ],
        "{all:?}"
    );
    let events: Vec<_> = all
        .iter()
        .filter(|e| e.kind == "partner.pack_low")
        .collect();
    assert_eq!(events[0].subject, "cars");
    assert_eq!(events[0].payload["pack"], 450);

    // A refund of part of j2, then its cancellation: the pack gets back what was taken.
    post(
        &store,
        &program,
        json!({"external_id": "f2", "member": "m", "type": "refund", "occurred_at": NOW,
               "original_external_id": "j2", "amount": "100.00", "currency": "EUR"}),
    )
    .await
    .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 450);
    post(
        &store,
        &program,
        json!({"external_id": "c2", "member": "m", "type": "cancellation", "occurred_at": NOW,
               "original_external_id": "j2"}),
    )
    .await
    .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 600);
    assert_eq!(
        store
            .events(&program, None, 50)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == "partner.pack_low")
            .count(),
        1,
        "no new alert"
    );

    // More than the pack holds: refused, nothing changes for the member or the partner.
    let before = miles(&store, &program, "m").await;
    assert_eq!(
        post(&store, &program, purchase("j4", "m", "700.00", "cars"))
            .await
            .unwrap_err(),
        "partner_pack_empty"
    );
    assert_eq!(miles(&store, &program, "m").await, before);
    assert_eq!(pack(&store, &program, "cars").await, 600);
    // Exactly what is left is fine.
    post(&store, &program, purchase("j5", "m", "600.00", "cars"))
        .await
        .unwrap();
    assert_eq!(pack(&store, &program, "cars").await, 0);

    // Postpaid: billed at the cost per point, rounded once per entry (333 × 0.0125 =
    // 4.1625 → €4.16).
    post(&store, &program, purchase("b1", "m", "333.00", "bank"))
        .await
        .unwrap();
    // A burn partner is reimbursed for what is redeemed with it, less what comes back.
    post(
        &store,
        &program,
        json!({"external_id": "r1", "member": "m", "type": "redemption", "occurred_at": NOW,
               "currency": "miles", "points": 500, "partner": "hotel"}),
    )
    .await
    .unwrap();
    post(
        &store,
        &program,
        json!({"external_id": "r2", "member": "m", "type": "redemption", "occurred_at": NOW,
               "currency": "miles", "points": 200, "partner": "hotel"}),
    )
    .await
    .unwrap();
    post(
        &store,
        &program,
        json!({"external_id": "c3", "member": "m", "type": "cancellation", "occurred_at": NOW,
               "original_external_id": "r2"}),
    )
    .await
    .unwrap();

    let cars = store.partner_sums(&program, "cars").await.unwrap();
    assert_eq!(
        (
            cars.pack,
            cars.issued,
            cars.bought,
            cars.owed_by_partner,
            cars.owed_to_partner
        ),
        (0, 300 + 100 + 600, 1_000, 800, 0)
    );
    let bank = store.partner_sums(&program, "bank").await.unwrap();
    assert_eq!(
        (bank.pack, bank.issued, bank.owed_by_partner),
        (0, 333, 416)
    );
    let hotel = store.partner_sums(&program, "hotel").await.unwrap();
    assert_eq!(
        (hotel.redeemed, hotel.owed_to_partner, hotel.owed_by_partner),
        (500, 300, 0),
        "700 redeemed, 200 of them given back: 500 × 0.006"
    );
    // Paying with points at a burn partner: the capture is the redemption there (a hold
    // alone, or one released, is not). A hold and its capture in one batch count too, and
    // cancelling a capture gives the reimbursement back.
    let hold = |order: &str, points: i64| {
        json!({"external_id": format!("hold:{order}"), "member": "m", "type": "hold",
               "occurred_at": NOW, "currency": "miles", "points": points, "partner": "hotel",
               "expires_at": "2026-06-02T10:00:00Z"})
    };
    let end = |how: &str, order: &str| {
        json!({"external_id": format!("{how}:{order}"), "member": "m", "type": how,
               "occurred_at": NOW})
    };
    post(&store, &program, hold("H1", 100)).await.unwrap();
    post(&store, &program, hold("H2", 40)).await.unwrap();
    let redeemed = |s: fidelis_store::PartnerSums| (s.redeemed, s.owed_to_partner);
    assert_eq!(
        redeemed(store.partner_sums(&program, "hotel").await.unwrap()),
        (500, 300),
        "points held are not redeemed yet"
    );
    post(&store, &program, end("capture", "H1")).await.unwrap();
    post(&store, &program, end("release", "H2")).await.unwrap();
    let results = store
        .post_journals(
            &program,
            &[
                journal(&program, hold("H3", 50)),
                journal(&program, end("capture", "H3")),
            ],
            utc(NOW),
            None,
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        redeemed(store.partner_sums(&program, "hotel").await.unwrap()),
        (650, 390),
        "H1's 100 and H3's 50 captured at 0.006; H2 released"
    );
    post(
        &store,
        &program,
        json!({"external_id": "c-H1", "member": "m", "type": "cancellation", "occurred_at": NOW,
               "original_external_id": "capture:H1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        redeemed(store.partner_sums(&program, "hotel").await.unwrap()),
        (550, 330),
        "the cancelled capture's 100 given back"
    );
    // Every entry names the journal that caused it; the cancellation's reversal of j2
    // took only what the refund had left.
    let entries = store
        .partner_entries(&program, "cars", None, 100)
        .await
        .unwrap();
    let listed: Vec<(&str, Option<&str>, i64, i64)> = entries
        .iter()
        .rev()
        .map(|e| (e.kind.name(), e.journal.as_deref(), e.points, e.pack))
        .collect();
    assert_eq!(
        listed,
        [
            ("top_up", None, 1_000, 1_000),
            ("accrual", Some("j1"), 300, -300),
            ("accrual", Some("j2"), 250, -250),
            ("accrual", Some("j3"), 100, -100),
            ("accrual_reversal", Some("f2"), -100, 100),
            ("accrual_reversal", Some("c2"), -150, 150),
            ("accrual", Some("j5"), 600, -600),
        ]
    );
    // A replayed journal makes no second entry.
    post(&store, &program, purchase("j1", "m", "300.00", "cars"))
        .await
        .unwrap();
    assert_eq!(
        store
            .partner_entries(&program, "cars", None, 100)
            .await
            .unwrap()
            .len(),
        7
    );

    // A cancelled refund is undone at the partner too: the bill is charged again, and the
    // purchase has all of it left to reverse for a later refund (€2.50 billed for 200
    // miles; a refund of 100 cancelled; then a refund of 160: 160/200 of €2.50 = €2.00).
    let refund = |id: &str, amount: &str| {
        json!({"external_id": id, "member": "m", "type": "refund", "occurred_at": NOW,
               "original_external_id": "b9", "amount": amount, "currency": "EUR"})
    };
    post(&store, &program, purchase("b9", "m", "200.00", "bank"))
        .await
        .unwrap();
    post(&store, &program, refund("f9", "100.00"))
        .await
        .unwrap();
    post(
        &store,
        &program,
        json!({"external_id": "c9", "member": "m", "type": "cancellation", "occurred_at": NOW,
               "original_external_id": "f9"}),
    )
    .await
    .unwrap();
    let bank = store.partner_sums(&program, "bank").await.unwrap();
    assert_eq!(
        (bank.issued, bank.owed_by_partner),
        (333 + 200, 416 + 250),
        "the refund and its cancellation cancel out"
    );
    post(&store, &program, refund("g9", "160.00"))
        .await
        .unwrap();
    let bank = store.partner_sums(&program, "bank").await.unwrap();
    assert_eq!(
        (bank.issued, bank.owed_by_partner),
        (333 + 200 - 160, 416 + 250 - 200)
    );
}

async fn concurrent_accruals_never_take_a_refusing_pack_below_zero(store: Store) {
    let members: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let program = setup(&store, &members).await;
    store
        .top_up_partner(&program, "cars", "inv-1", 1_000, utc(NOW), &manager())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for m in members.clone() {
        let (store, program) = (store.clone(), Arc::clone(&program));
        tasks.push(tokio::spawn(async move {
            post(
                &store,
                &program,
                purchase(&format!("p-{m}"), &m, "150.00", "cars"),
            )
            .await
            .map(|_| m)
        }));
    }
    let mut awarded = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(m) => awarded.push(m),
            Err(code) => assert_eq!(code, "partner_pack_empty"),
        }
    }
    assert_eq!(awarded.len(), 6, "1,000 covers six accruals of 150");
    assert_eq!(pack(&store, &program, "cars").await, 100);
    let mut earned = 0;
    for m in &members {
        earned += miles(&store, &program, m).await;
    }
    assert_eq!(earned, 900, "only the accruals the pack covered earned");
}

/// Bank-card accruals in May and June: May's statement is closed on 2 June and stays as it
/// was when a journal dated in May arrives on 3 June; that one is an adjustment of June's
/// statement. Periods close once over and in order.
async fn a_closed_statement_never_changes_and_a_late_journal_lands_on_the_next(store: Store) {
    let program = setup(&store, &["m".to_owned()]).await;
    let at = |id: &str, occurred: &str, amount: &str, now: &str| {
        let (store, program) = (store.clone(), Arc::clone(&program));
        let doc = json!({"external_id": id, "member": "m", "type": "purchase", "occurred_at": occurred,
                         "amount": amount, "currency": "EUR", "partner": "bank"});
        let now = utc(now);
        async move {
            store
                .post_realtime(&program, journal(&program, doc), now)
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    at("b1", "2026-05-10T10:00:00Z", "200", "2026-05-10T10:00:00Z").await;
    at("b2", "2026-05-20T10:00:00Z", "100", "2026-05-20T10:00:00Z").await;
    at("b3", "2026-06-05T10:00:00Z", "300", "2026-06-05T10:00:00Z").await;
    let (may, june, july) = (
        utc("2026-05-01T00:00:00Z"),
        utc("2026-06-01T00:00:00Z"),
        utc("2026-07-01T00:00:00Z"),
    );
    let open = store.settlement(&program, "bank", may, june).await.unwrap();
    assert_eq!(open.status, "open");
    assert_eq!(
        (
            open.totals.points_issued,
            open.totals.owed_by_partner,
            open.totals.net
        ),
        (300, 375, 375),
        "200 × 0.0125 + 100 × 0.0125"
    );
    // Not over yet: it cannot close.
    let e = store
        .close_settlement(
            &program,
            "bank",
            may,
            june,
            utc("2026-05-31T00:00:00Z"),
            &manager(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("period_not_over", _)),
        "{e}"
    );
    let (closed, replayed) = store
        .close_settlement(
            &program,
            "bank",
            may,
            june,
            utc("2026-06-02T08:00:00Z"),
            &manager(),
        )
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(closed.status, "closed");
    assert_eq!(closed.totals, open.totals);
    let (again, replayed) = store
        .close_settlement(
            &program,
            "bank",
            may,
            june,
            utc("2026-06-09T08:00:00Z"),
            &manager(),
        )
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(again, closed);

    // A journal dated in May arrives on 3 June: May stays as closed.
    at("b4", "2026-05-25T10:00:00Z", "100", "2026-06-03T10:00:00Z").await;
    assert_eq!(
        store.settlement(&program, "bank", may, june).await.unwrap(),
        closed,
        "a closed statement never changes"
    );
    let next = store
        .settlement(&program, "bank", june, july)
        .await
        .unwrap();
    assert_eq!(next.status, "open");
    assert_eq!(
        next.lines
            .iter()
            .map(|l| (l.kind.as_str(), l.points, l.amount))
            .collect::<Vec<_>>(),
        [("accrual", 300, 375)]
    );
    assert_eq!(
        next.adjustments
            .iter()
            .map(|l| (l.kind.as_str(), l.points, l.amount))
            .collect::<Vec<_>>(),
        [("accrual", 100, 125)],
        "the late journal is June's adjustment"
    );
    assert_eq!((next.totals.points_issued, next.totals.net), (400, 500));
    let csv = next.to_csv();
    assert!(csv.contains("period,accrual,1,300,0,375\n"), "{csv}");
    assert!(csv.contains("adjustment,accrual,1,100,0,125\n"), "{csv}");
    assert!(csv.ends_with("total,net,,,,500\n"), "{csv}");

    // Periods close in order, without gaps or overlaps.
    let e = store
        .close_settlement(
            &program,
            "bank",
            july,
            utc("2026-08-01T00:00:00Z"),
            utc("2026-09-02T00:00:00Z"),
            &manager(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("period_not_next", _)),
        "{e}"
    );
    let (june_closed, _) = store
        .close_settlement(
            &program,
            "bank",
            june,
            july,
            utc("2026-07-02T00:00:00Z"),
            &manager(),
        )
        .await
        .unwrap();
    assert_eq!(june_closed.totals, next.totals);
    assert_eq!(june_closed.adjustments, next.adjustments);
    let e = store
        .close_settlement(
            &program,
            "bank",
            utc("2026-05-15T00:00:00Z"),
            june,
            utc("2026-09-02T00:00:00Z"),
            &manager(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Refused("period_overlaps", _)),
        "{e}"
    );
}

/// Liability as of any instant is the points members hold times the value per point,
/// checked against their balances; a partner's share is what is left in the buckets its
/// accruals credited; breakage is the share of resolved points that expired.
async fn the_liability_is_what_members_hold_and_history_estimates_breakage(store: Store) {
    let program = common::program_with_members(
        &store,
        json!({
            "code": "air", "name": "Air", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [{"code": "miles", "name": "Miles", "kind": "redeemable", "value_per_point": "0.01",
                            "expiry": {"policy": "rolling", "days": 30}},
                           {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "miles", "rate": "1"}, {"currency": "status", "rate": "1"}]}
        }),
        &["m1", "m2"],
    )
    .await;
    let doc: PartnerDocument = serde_json::from_value(
        json!({"name": "Bank card", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.01"}),
    )
    .unwrap();
    store
        .put_partner(&program, "bank", &doc, utc(NOW), &manager())
        .await
        .unwrap();
    let post = |v: serde_json::Value| {
        let (store, program) = (store.clone(), Arc::clone(&program));
        let now = utc(v["occurred_at"].as_str().unwrap());
        async move {
            store
                .post_realtime(&program, journal(&program, v), now)
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    let earn = |id: &str, m: &str, at: &str, amount: &str, partner: Option<&str>| {
        json!({"external_id": id, "member": m, "type": "purchase", "occurred_at": at,
               "amount": amount, "currency": "EUR", "partner": partner})
    };
    let redeem = |id: &str, m: &str, at: &str, points: i64| {
        json!({"external_id": id, "member": m, "type": "redemption", "occurred_at": at,
               "currency": "miles", "points": points})
    };
    // January: m2 earns 1,500, spends 500; the other 1,000 expire in February.
    post(earn("a1", "m2", "2026-01-10T10:00:00Z", "1500", None)).await;
    post(redeem("a2", "m2", "2026-01-20T10:00:00Z", 500)).await;
    store
        .run_jobs(&program, utc("2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    // March: m1 earns 1,000 at the bank and 500 elsewhere, spends 300 (from the bank's
    // points: they expire first).
    post(earn(
        "b1",
        "m1",
        "2026-03-05T10:00:00Z",
        "1000",
        Some("bank"),
    ))
    .await;
    post(earn("b2", "m1", "2026-03-10T10:00:00Z", "500", None)).await;
    post(redeem("b3", "m1", "2026-03-12T10:00:00Z", 300)).await;

    let l = store
        .liability(&program, utc("2026-03-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(l.currencies.len(), 1, "qualifying points are no liability");
    let miles = &l.currencies[0];
    assert_eq!(
        (miles.outstanding, miles.value),
        (1_200, 1_200),
        "1,200 × €0.01"
    );
    // What members hold, by their balances.
    let mut held = 0;
    for m in ["m1", "m2"] {
        let member = store.require_member(&program, m).await.unwrap();
        let b = &store
            .balances(&program, &member, utc("2026-03-15T00:00:00Z"))
            .await
            .unwrap()[0];
        held += b.available + b.pending;
    }
    assert_eq!(miles.outstanding, held);
    // 1,000 expired of 1,800 resolved (1,500 in January, 300 spent in March).
    let rate = miles.breakage_rate.unwrap();
    assert!((rate - 1_000.0 / 1_800.0).abs() < 1e-9, "{rate}");
    assert_eq!(miles.expected_breakage, Some(667));
    assert_eq!(miles.net_value, Some(1_200 - 667));
    assert_eq!(
        l.partners
            .iter()
            .map(|p| (p.partner.as_str(), p.outstanding, p.value))
            .collect::<Vec<_>>(),
        [("bank", 700, 700)]
    );
    assert_eq!(
        l.history
            .iter()
            .map(|h| (h.month.as_str(), h.outstanding))
            .collect::<Vec<_>>(),
        [("2026-01", 1_000), ("2026-02", 0), ("2026-03", 1_200)]
    );
    // As of earlier instants.
    let early = store
        .liability(&program, utc("2026-03-07T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(early.currencies[0].outstanding, 1_000);
    assert_eq!(early.partners[0].outstanding, 1_000);
    let january = store
        .liability(&program, utc("2026-01-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(january.currencies[0].outstanding, 1_500);
    assert!(january.partners.is_empty());
}
