//! Missing-points claims through the store, on SQLite and a throw-away PostgreSQL: filed
//! once per member and reference, refused for a transaction already processed, approved
//! exactly once however many approvals race, rejected with a reason, every decision an
//! event.

use std::sync::Arc;

use chrono::Duration;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::money::MinorUnits;
use fidelis_store::{Actor, LoadedProgram, NewClaim, Prepared, Store, StoreError};
use serde_json::json;

mod common;
use common::utc;

fidelis_testkit::store_tests!(claims_are_decided_once_and_never_pay_twice);

fn agent(name: &str) -> Actor {
    Actor {
        name: name.into(),
        role: "agent".into(),
    }
}

fn claim(reference: &str, amount: i64) -> NewClaim {
    NewClaim {
        member: "m".into(),
        reference: reference.into(),
        occurred_at: utc("2026-05-30T12:00:00Z"),
        amount: MinorUnits(amount),
        partner: Some("cars".into()),
        note: Some("the receipt was not scanned".into()),
    }
}

fn code(e: StoreError) -> &'static str {
    match e {
        StoreError::Refused(code, _) => code,
        other => panic!("{other}"),
    }
}

async fn available(store: &Store, program: &LoadedProgram) -> i64 {
    let m = store.require_member(program, "m").await.unwrap();
    store
        .balances(program, &m, utc("2026-06-01T12:00:00Z"))
        .await
        .unwrap()[0]
        .available
}

async fn claims_are_decided_once_and_never_pay_twice(store: Store) {
    let program = common::program_with_members(
        &store,
        json!({
            "code": "air", "name": "Air", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [{"code": "miles", "name": "Miles", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "miles", "rate": "1"}]}
        }),
        &["m"],
    )
    .await;
    let now = utc("2026-06-01T10:00:00Z");
    let filed = store
        .file_claim(&program, &claim("R-1", 12_000), now, &agent("member-m"))
        .await
        .unwrap();
    assert_eq!(
        (
            filed.status.as_str(),
            filed.amount,
            filed.partner.as_deref()
        ),
        ("open", 12_000, Some("cars"))
    );
    assert!(filed.claim_id.starts_with("CL-"));
    // Once per member and reference.
    let e = store
        .file_claim(&program, &claim("R-1", 12_000), now, &agent("member-m"))
        .await
        .unwrap_err();
    assert_eq!(code(e), "claim_exists");
    // A transaction the program processed already cannot be claimed.
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": "R-2", "member": "m", "type": "purchase", "occurred_at": "2026-05-31T10:00:00Z",
        "amount": "10", "currency": "EUR"}))
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
    let e = store
        .file_claim(&program, &claim("R-2", 1_000), now, &agent("member-m"))
        .await
        .unwrap_err();
    assert_eq!(code(e), "claim_already_processed");
    // Bad input changes nothing.
    let mut future = claim("R-9", 100);
    future.occurred_at = now + Duration::days(1);
    let e = store
        .file_claim(&program, &future, now, &agent("member-m"))
        .await
        .unwrap_err();
    assert_eq!(code(e), "invalid_claim");
    assert_eq!(available(&store, &program).await, 10);

    // Four agents click approve at once: the transaction is processed once.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (store, program, id) = (store.clone(), Arc::clone(&program), filed.claim_id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .approve_claim(&program, &id, now, &agent(&format!("agent-{i}")))
                .await
                .unwrap()
        }));
    }
    let mut first = 0;
    for t in tasks {
        let (c, replayed) = t.await.unwrap();
        assert_eq!(c.status, "approved");
        first += usize::from(!replayed);
    }
    assert_eq!(first, 1, "one approval decided; the others answered it");
    assert_eq!(available(&store, &program).await, 10 + 120);
    let e = store
        .reject_claim(
            &program,
            &filed.claim_id,
            "too late",
            now,
            &agent("agent-9"),
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), "claim_approved");

    // Rejected with a reason; then it cannot be approved, and a retry answers it.
    let other = store
        .file_claim(&program, &claim("R-3", 5_000), now, &agent("agent-0"))
        .await
        .unwrap();
    let (rejected, replayed) = store
        .reject_claim(
            &program,
            &other.claim_id,
            "no such receipt",
            now,
            &agent("agent-1"),
        )
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(
        (
            rejected.status.as_str(),
            rejected.reason.as_deref(),
            rejected.decided_by.as_deref()
        ),
        ("rejected", Some("no such receipt"), Some("agent-1"))
    );
    assert!(
        store
            .reject_claim(
                &program,
                &other.claim_id,
                "no such receipt",
                now,
                &agent("agent-1")
            )
            .await
            .unwrap()
            .1
    );
    let e = store
        .approve_claim(&program, &other.claim_id, now, &agent("agent-2"))
        .await
        .unwrap_err();
    assert_eq!(code(e), "claim_rejected");
    assert_eq!(available(&store, &program).await, 130);

    // The queue, oldest first, and the decisions as events and in the audit log.
    let open = store
        .claims(&program, Some("open"), None, 10)
        .await
        .unwrap();
    assert!(open.is_empty());
    let all = store.claims(&program, None, Some("m"), 10).await.unwrap();
    assert_eq!(all.len(), 2);
    let events = store.events(&program, None, 10).await.unwrap();
    let decided: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind == "claim.decided")
        .map(|e| (e.subject.as_str(), e.payload["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        decided,
        [
            (other.claim_id.as_str(), "rejected"),
            (filed.claim_id.as_str(), "approved")
        ]
    );
    let audit = store
        .audit(&fidelis_store::AuditFilter {
            program: Some("air".into()),
            actor: None,
            action: None,
            subject: None,
            before_id: None,
            limit: 50,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "claim.approve").count(),
        1,
        "{actions:?}"
    );
    for a in ["claim.file", "claim.reject"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}
