//! Vouchers through the store, on SQLite and a throw-away PostgreSQL: a voucher's whole
//! life (partial value, reservation, reinstatement, validity boundaries in the program's
//! time zone), promotions issuing vouchers within a budget, merges moving them, bulk runs,
//! and two redemptions of one single-use voucher racing.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_store::{
    Actor, LoadedProgram, Prepared, Store, StoreError, VoucherAction, VoucherView,
};
use serde_json::json;

fidelis_testkit::store_tests!(
    a_voucher_lives_its_whole_life_and_its_value_is_the_sum_of_its_entries,
    promotions_issue_vouchers_within_their_budget_and_merges_move_them,
    a_single_use_voucher_redeemed_by_racing_requests_is_redeemed_once,
    a_bulk_run_issues_unique_codes_and_resumes_without_doubling,
    cancelling_a_journal_cancels_the_vouchers_it_issued,
);

mod common;
use common::utc;

async fn setup(store: &Store, members: &[&str]) -> Arc<LoadedProgram> {
    common::program_with_members(
        store,
        json!({
            "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]},
            "promotions": [{"code": "welcome", "name": "Welcome voucher", "status": "active",
                            "starts_at": "2026-01-01", "condition": "journal.amount >= 100.0",
                            "actions": [{"type": "voucher", "voucher": "coffee"}],
                            "limits": {"budget_vouchers": 2}}],
            "vouchers": [
                {"code": "gift", "name": "Gift card 50", "value": {"fixed": "50.00"},
                 "validity": {"ends_on": "2026-12-31"}, "code_format": {"prefix": "GIFT-"}},
                {"code": "coffee", "name": "Free coffee", "value": {"free_product": "COFFEE"},
                 "validity": {"days": 30}},
                {"code": "xmas", "name": "15% at Christmas", "value": {"percent": "15"},
                 "validity": {"starts_on": "2026-12-24", "ends_on": "2026-12-26"}, "uses": 2}
            ]
        }),
        members,
    )
    .await
}

fn agent() -> Actor {
    Actor {
        name: "agent-anna".into(),
        role: "agent".into(),
    }
}

async fn act(
    store: &Store,
    program: &LoadedProgram,
    code: &str,
    action: VoucherAction,
    now: DateTime<Utc>,
) -> Result<(VoucherView, bool), &'static str> {
    store
        .act_on_voucher(program, code, &action, now, &agent())
        .await
        .map_err(|e| match e {
            StoreError::Refused(code, _) => code,
            other => panic!("{other}"),
        })
}

fn redeem(key: &str, amount: Option<i64>) -> VoucherAction {
    VoucherAction::Redeem {
        key: key.into(),
        amount,
    }
}

/// The value ledger's sum.
async fn entries_sum(store: &Store, program: &LoadedProgram, code: &str) -> i64 {
    store
        .voucher_entries(program, code)
        .await
        .unwrap()
        .iter()
        .map(|e| e.amount)
        .sum()
}

async fn a_voucher_lives_its_whole_life_and_its_value_is_the_sum_of_its_entries(store: Store) {
    let program = setup(&store, &["m1"]).await;
    let now = utc("2026-12-02T10:00:00Z");
    let (gift, new) = store
        .issue_voucher(
            &program,
            "gift",
            Some("m1"),
            "agent",
            "ticket-1",
            now,
            &agent(),
        )
        .await
        .unwrap();
    assert!(new);
    assert!(
        gift.code.starts_with("GIFT-") && gift.code.len() == 5 + 12,
        "{}",
        gift.code
    );
    assert_eq!((gift.status, gift.remaining), ("issued", Some(5000)));
    // 2027-01-01T00:00 in Berlin: the first instant after the last valid day.
    assert_eq!(gift.valid_until, Some(utc("2026-12-31T23:00:00Z")));
    let (again, new) = store
        .issue_voucher(
            &program,
            "gift",
            Some("m1"),
            "agent",
            "ticket-1",
            now,
            &agent(),
        )
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(again.code, gift.code, "the same request key issues once");
    // The member hears of it once (webhooks, e-mail): one `voucher.issued` event.
    let issued: Vec<_> = store
        .events(&program, None, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "voucher.issued")
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0].payload["voucher"], gift.code.as_str());
    assert_eq!(issued[0].payload["member"], "m1");
    let code = gift.code.to_lowercase(); // typed by a person
    let c = code.as_str();

    // Partly redeemed, the rest stays; a retry changes nothing; another amount conflicts.
    let (v, changed) = act(&store, &program, c, redeem("r1", Some(1200)), now)
        .await
        .unwrap();
    assert_eq!(
        (v.status, v.remaining, changed),
        ("issued", Some(3800), true)
    );
    let (v, changed) = act(&store, &program, c, redeem("r1", Some(1200)), now)
        .await
        .unwrap();
    assert_eq!((v.remaining, changed), (Some(3800), false));
    assert_eq!(
        act(&store, &program, c, redeem("r1", Some(500)), now)
            .await
            .err(),
        Some("idempotency_conflict")
    );
    assert_eq!(
        act(&store, &program, c, redeem("r2", Some(4000)), now)
            .await
            .err(),
        Some("voucher_value_exceeded")
    );

    // Reserved for an order: nothing else may use it; the wrong order is refused.
    let reserve = |key: &str| VoucherAction::Reserve {
        key: key.into(),
        amount: Some(800),
    };
    let (v, _) = act(&store, &program, c, reserve("o1"), now).await.unwrap();
    assert_eq!((v.status, v.reserved_amount), ("reserved", Some(800)));
    assert_eq!(
        act(&store, &program, c, redeem("r3", None), now)
            .await
            .err(),
        Some("voucher_reserved")
    );
    assert_eq!(
        act(
            &store,
            &program,
            c,
            VoucherAction::RedeemReserved { key: "o2".into() },
            now
        )
        .await
        .err(),
        Some("voucher_not_reserved")
    );
    let (v, _) = act(
        &store,
        &program,
        c,
        VoucherAction::Reinstate { key: "o1".into() },
        now,
    )
    .await
    .unwrap();
    assert_eq!((v.status, v.remaining), ("issued", Some(3800)));
    act(&store, &program, c, reserve("o2"), now).await.unwrap();
    let (v, _) = act(
        &store,
        &program,
        c,
        VoucherAction::RedeemReserved { key: "o2".into() },
        now,
    )
    .await
    .unwrap();
    assert_eq!((v.status, v.remaining), ("issued", Some(3000)));
    assert_eq!(entries_sum(&store, &program, c).await, 3000);

    // The validity's end is half-open at local midnight.
    let end = utc("2026-12-31T23:00:00Z");
    let (v, _) = act(
        &store,
        &program,
        c,
        redeem("r4", Some(100)),
        end - Duration::microseconds(1),
    )
    .await
    .unwrap();
    assert_eq!(v.remaining, Some(2900));
    assert_eq!(
        act(&store, &program, c, redeem("r5", Some(100)), end)
            .await
            .err(),
        Some("voucher_expired")
    );
    // Reserved before the end, the order may still succeed; reinstated after it, the
    // voucher is expired.
    act(&store, &program, c, reserve("o3"), end - Duration::hours(1))
        .await
        .unwrap();
    let (v, _) = act(
        &store,
        &program,
        c,
        VoucherAction::Reinstate { key: "o3".into() },
        end,
    )
    .await
    .unwrap();
    assert_eq!(v.status, "expired");
    assert_eq!(
        store
            .voucher(&program, c, end)
            .await
            .unwrap()
            .unwrap()
            .status,
        "expired"
    );

    // Cancelled: what was left goes, and it cannot be used or cancelled again.
    let (v, _) = act(&store, &program, c, VoucherAction::Cancel, end)
        .await
        .unwrap();
    assert_eq!((v.status, v.remaining), ("cancelled", Some(0)));
    assert_eq!(entries_sum(&store, &program, c).await, 0);
    assert_eq!(
        act(&store, &program, c, redeem("r6", None), now)
            .await
            .err(),
        Some("voucher_cancelled")
    );
    assert_eq!(
        act(&store, &program, c, VoucherAction::Cancel, end)
            .await
            .err(),
        Some("voucher_cancelled")
    );

    // Not yet valid before its first local day; two uses, then used up.
    let (xmas, _) = store
        .issue_voucher(
            &program,
            "xmas",
            Some("m1"),
            "agent",
            "ticket-2",
            now,
            &agent(),
        )
        .await
        .unwrap();
    let x = xmas.code.as_str();
    let christmas_eve = utc("2026-12-23T23:00:00Z");
    assert_eq!(
        act(
            &store,
            &program,
            x,
            redeem("a", None),
            christmas_eve - Duration::seconds(1)
        )
        .await
        .err(),
        Some("voucher_not_yet_valid")
    );
    assert_eq!(
        act(&store, &program, x, redeem("a", Some(100)), christmas_eve)
            .await
            .err(),
        Some("invalid_amount")
    );
    act(&store, &program, x, redeem("a", None), christmas_eve)
        .await
        .unwrap();
    let (v, _) = act(&store, &program, x, redeem("b", None), christmas_eve)
        .await
        .unwrap();
    assert_eq!((v.status, v.uses_left), ("redeemed", Some(0)));
    assert_eq!(
        act(&store, &program, x, redeem("c", None), christmas_eve)
            .await
            .err(),
        Some("voucher_redeemed")
    );
    assert_eq!(
        act(&store, &program, x, VoucherAction::Cancel, christmas_eve)
            .await
            .err(),
        Some("voucher_redeemed")
    );
    assert_eq!(
        act(&store, &program, "NO-SUCH-CODE", redeem("z", None), now)
            .await
            .err(),
        Some("unknown_voucher")
    );
    let m1 = store.require_member(&program, "m1").await.unwrap();
    let listed = store.member_vouchers(m1.id, now, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].code, xmas.code, "newest first");
    // The agent's issue and cancel are in the audit log.
    let audit = store
        .audit(&fidelis_store::AuditFilter {
            program: Some("shop".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "voucher.issue").count(),
        2,
        "{actions:?}"
    );
    assert!(actions.contains(&"voucher.cancel"), "{actions:?}");
}

fn purchase(program: &LoadedProgram, id: &str, member: &str, amount: &str) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": member, "type": "purchase",
        "occurred_at": "2026-12-02T09:00:00Z", "amount": amount, "currency": "EUR"
    }))
    .unwrap();
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    Prepared::new(journal, &program.program).unwrap()
}

/// The voucher codes a journal's outcome reports.
fn issued(result: &fidelis_store::JournalResult) -> Vec<String> {
    let posted = result.as_ref().expect("posted");
    posted
        .outcome
        .promotions
        .iter()
        .flat_map(|p| &p.rewards)
        .filter_map(|r| r.voucher.clone())
        .collect()
}

async fn promotions_issue_vouchers_within_their_budget_and_merges_move_them(store: Store) {
    let program = setup(&store, &["m1", "m2", "m3"]).await;
    let now = utc("2026-12-02T10:00:00Z");
    let post = |id: &str, m: &str, amount: &str| {
        let (store, program) = (store.clone(), program.clone());
        let j = purchase(&program, id, m, amount);
        async move { store.post_realtime(&program, j, now).await.unwrap() }
    };
    let small = post("j0", "m1", "20.00").await;
    assert!(issued(&small).is_empty(), "the condition is not met");
    let first = post("j1", "m1", "120.00").await;
    let codes = issued(&first);
    assert_eq!(codes.len(), 1);
    // A retry answers the same code; nothing new is issued.
    assert_eq!(issued(&post("j1", "m1", "120.00").await), codes);
    let second = post("j2", "m2", "150.00").await;
    assert_eq!(issued(&second).len(), 1);
    // The budget of two vouchers is spent.
    let third = post("j3", "m3", "150.00").await;
    assert!(issued(&third).is_empty());
    let verdict = &third.as_ref().unwrap().outcome.promotions;
    assert!(verdict.iter().all(|p| p.result != "applied"), "{verdict:?}");
    let v = store
        .voucher(&program, &codes[0], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            v.member.as_deref(),
            v.status,
            v.source.as_str(),
            v.kind.as_str()
        ),
        (Some("m1"), "issued", "promotion:welcome", "free_product")
    );
    // 30 days from the local day of issue, to that day's end.
    assert_eq!(v.valid_until, Some(utc("2027-01-01T23:00:00Z")));

    // A merge moves the source's vouchers to the survivor.
    store
        .merge_members(&program, "m1", "m2", now, &agent())
        .await
        .unwrap();
    let v = store
        .voucher(&program, &codes[0], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.member.as_deref(), Some("m2"));
    let m2 = store.require_member(&program, "m2").await.unwrap();
    assert_eq!(
        store.member_vouchers(m2.id, now, 10).await.unwrap().len(),
        2
    );
}

async fn a_single_use_voucher_redeemed_by_racing_requests_is_redeemed_once(store: Store) {
    let program = setup(&store, &["m1"]).await;
    let now = utc("2026-12-02T10:00:00Z");
    for round in 0..3 {
        let (v, _) = store
            .issue_voucher(
                &program,
                "coffee",
                Some("m1"),
                "agent",
                &format!("race-{round}"),
                now,
                &agent(),
            )
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, program, code) = (store.clone(), program.clone(), v.code.clone());
                tokio::spawn(async move {
                    store
                        .act_on_voucher(
                            &program,
                            &code,
                            &redeem(&format!("till-{i}"), None),
                            now,
                            &agent(),
                        )
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Refused("voucher_redeemed", _)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one redemption");
        let entries = store.voucher_entries(&program, &v.code).await.unwrap();
        assert_eq!(entries.iter().filter(|e| e.kind == "redeem").count(), 1);
    }
}

async fn a_bulk_run_issues_unique_codes_and_resumes_without_doubling(store: Store) {
    let program = setup(&store, &["m1", "m2"]).await;
    let now = utc("2026-12-02T10:00:00Z");
    let mut members: Vec<Option<String>> = vec![None; 1_100];
    members[0] = Some("m1".into());
    members[1] = Some("m2".into());
    let mut seen = Vec::new();
    let n = store
        .issue_vouchers_bulk(
            &program,
            "gift",
            &members,
            "winter",
            now,
            &agent(),
            |done| seen.push(done),
        )
        .await
        .unwrap();
    assert_eq!(n, 1_100);
    assert_eq!(seen, [500, 1_000, 1_100]);
    let again = store
        .issue_vouchers_bulk(&program, "gift", &members, "winter", now, &agent(), |_| {})
        .await
        .unwrap();
    assert_eq!(again, 0, "the same run issues nothing twice");
    let m1 = store.require_member(&program, "m1").await.unwrap();
    let mine = store.member_vouchers(m1.id, now, 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].source, "bulk");
    let unknown = store
        .issue_vouchers_bulk(&program, "nope", &members, "x", now, &agent(), |_| {})
        .await;
    assert!(matches!(
        unknown,
        Err(StoreError::Refused("unknown_voucher_definition", _))
    ));
}

/// A journal cancelled takes its promotion's voucher with it, unless the member used it,
/// and gives it back to the promotion's voucher budget.
async fn cancelling_a_journal_cancels_the_vouchers_it_issued(store: Store) {
    let program = setup(&store, &["m1"]).await;
    let now = utc("2026-12-02T10:00:00Z");
    let first = store
        .post_realtime(&program, purchase(&program, "j1", "m1", "120.00"), now)
        .await
        .unwrap();
    let code = issued(&first).remove(0);
    let cancel = |id: &str, original: &str| {
        let doc: JournalDocument = serde_json::from_value(json!({
            "external_id": id, "member": "m1", "type": "cancellation",
            "occurred_at": "2026-12-02T09:30:00Z", "original_external_id": original}))
        .unwrap();
        Prepared::new(
            Journal::parse(&doc, &program.program).unwrap(),
            &program.program,
        )
        .unwrap()
    };
    store
        .post_realtime(&program, cancel("c1", "j1"), now)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let v = store.voucher(&program, &code, now).await.unwrap().unwrap();
    assert_eq!(v.status, "cancelled");
    let entries = store.voucher_entries(&program, &code).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind.as_str(), e.actor.as_str()))
            .collect::<Vec<_>>(),
        [("issue", "promotion"), ("cancel", "system")]
    );
    // A voucher already redeemed stays redeemed when its journal is cancelled.
    let second = store
        .post_realtime(&program, purchase(&program, "j2", "m1", "130.00"), now)
        .await
        .unwrap();
    let used = issued(&second).remove(0);
    act(&store, &program, &used, redeem("till-9", None), now)
        .await
        .unwrap();
    store
        .post_realtime(&program, cancel("c2", "j2"), now)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .voucher(&program, &used, now)
            .await
            .unwrap()
            .unwrap()
            .status,
        "redeemed"
    );
    // The budget of two counts what was issued less what was cancelled unused: j1's
    // voucher went back, j2's (used) did not, so one more is issued and then no more.
    let third = store
        .post_realtime(&program, purchase(&program, "j3", "m1", "140.00"), now)
        .await
        .unwrap();
    assert_eq!(
        issued(&third).len(),
        1,
        "the cancelled voucher's budget came back"
    );
    let fourth = store
        .post_realtime(&program, purchase(&program, "j4", "m1", "150.00"), now)
        .await
        .unwrap();
    assert!(issued(&fourth).is_empty(), "the budget of two is spent");
}
