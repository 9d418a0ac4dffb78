//! Segments on both databases: a refresh as of an instant puts members in segments by their
//! features (recent purchases and spend, profile), promotions' `eligibility.segments` reads
//! the refreshed membership on the hot path, and a refresh is idempotent per instant.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, LoadedProgram, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(segments_refresh_by_features_and_gate_promotions);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test instant")
        .with_timezone(&Utc)
}

async fn program(store: &Store) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "shop", "name": "Shop", "time_zone": "Europe/Paris", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "promotions": [{"code": "thanks", "name": "Thanks, regular", "status": "active",
                        "eligibility": {"segments": ["regulars"]},
                        "actions": [{"type": "fixed", "currency": "points", "points": 100}]}],
        "segments": [
            {"code": "regulars", "name": "Regulars", "condition": "member.purchases_90d >= 3"},
            {"code": "big", "name": "Big spenders", "condition": "member.spend_365d >= 500.0"},
            {"code": "lyon", "name": "Lyon", "condition": "member.profile.city == 'Lyon'"},
            {"code": "quiet", "name": "Quiet", "condition": "member.days_since_purchase > 100"}
        ]
    }))
    .expect("a program document");
    let program = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    store
        .put_program(&program, utc("2020-01-01T00:00:00Z"), &Actor::cli())
        .await
        .expect("stored")
        .0
}

/// Posts a purchase; the bonus points the promotion `thanks` gave it.
async fn buy(
    store: &Store,
    p: &LoadedProgram,
    id: &str,
    member: &str,
    at: &str,
    amount: &str,
) -> i64 {
    let doc: JournalDocument = serde_json::from_value(json!({"external_id": id, "member": member,
        "type": "purchase", "occurred_at": at, "amount": amount, "currency": "EUR"}))
    .expect("a journal document");
    let journal = Journal::parse(&doc, &p.program).expect("a journal");
    let prepared = Prepared::new(journal, &p.program).expect("prepared");
    let results = store
        .post_journals(p, &[prepared], utc(at), None)
        .await
        .expect("posted");
    let posted = results[0].as_ref().expect("processed");
    posted
        .outcome
        .promotions
        .iter()
        .filter(|r| r.promotion.as_str() == "thanks" && r.result == "applied")
        .flat_map(|r| r.points.iter().map(|p| p.points))
        .sum()
}

async fn segments_refresh_by_features_and_gate_promotions(store: Store) {
    let p = program(&store).await;
    for (member, city, at) in [
        ("ada", "Lyon", "2025-01-01T00:00:00Z"),
        ("bob", "Nice", "2025-01-01T00:00:00Z"),
        ("cy", "Lyon", "2025-01-01T00:00:00Z"),
        ("late", "Lyon", "2026-07-01T00:00:00Z"),
    ] {
        store
            .enroll(
                &p,
                &Enrollment {
                    external_id: ExternalId::parse(member).expect("an id"),
                    profile: json!({"city": city}),
                    enrolled_at: utc(at),
                },
                utc(at),
            )
            .await
            .expect("enrolled");
    }
    // Ada buys three times in May; before any refresh she is in no segment: no bonus.
    for (i, day) in ["05", "12", "19"].iter().enumerate() {
        let at = format!("2026-05-{day}T10:00:00Z");
        assert_eq!(
            buy(&store, &p, &format!("a{i}"), "ada", &at, "40.00").await,
            0
        );
    }
    // Bob spent 600 in January, then nothing.
    assert_eq!(
        buy(&store, &p, "b0", "bob", "2026-01-10T10:00:00Z", "600.00").await,
        0
    );

    let as_of = utc("2026-06-01T00:00:00Z");
    let report = store
        .refresh_segments(&p, as_of, as_of)
        .await
        .expect("refreshed");
    assert!(!report.already);
    // `late` enrolled after the instant; cy never bought (`quiet` reads null for her).
    assert_eq!(report.members, 3, "{report:?}");
    let counts: Vec<(&str, u64)> = report
        .counts
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        counts,
        [("big", 1), ("lyon", 2), ("quiet", 1), ("regulars", 1)],
        "{report:?}"
    );
    assert_eq!(report.unevaluable.get("quiet"), Some(&1), "{report:?}");

    // Now the hot path reads the membership: Ada is a regular, Bob is not.
    assert_eq!(
        buy(&store, &p, "a3", "ada", "2026-06-02T10:00:00Z", "40.00").await,
        100
    );
    assert_eq!(
        buy(&store, &p, "b1", "bob", "2026-06-02T11:00:00Z", "40.00").await,
        0
    );

    let ada = store.member(&p, "ada").await.expect("read").expect("ada");
    let scores = store
        .member_scores(&p, ada.id)
        .await
        .expect("read")
        .expect("scored");
    assert_eq!(scores.segments, ["lyon", "regulars"]);
    assert_eq!((scores.purchases_90d, scores.spend_90d), (3, 12_000));
    assert!(
        scores.rfm.is_some() && scores.rfm_segment.is_some(),
        "{scores:?}"
    );

    // The same instant again: nothing changes, the same report comes back; so for an
    // earlier instant.
    for again in [as_of, utc("2026-05-01T00:00:00Z")] {
        let repeat = store
            .refresh_segments(&p, again, utc("2026-06-03T00:00:00Z"))
            .await
            .expect("refreshed");
        assert!(repeat.already);
        assert_eq!(repeat.counts, report.counts);
    }
    assert_eq!(
        store
            .member_scores(&p, ada.id)
            .await
            .expect("read")
            .expect("scored")
            .purchases_90d,
        3,
        "a repeated refresh did not recount Ada's June purchase"
    );
    // A later instant sees June's purchases, and the jobs refresh too.
    let later = store
        .run_jobs(&p, utc("2026-06-10T00:00:00Z"))
        .await
        .expect("jobs ran")
        .segments
        .expect("refreshed by the jobs");
    assert!(!later.already);
    assert_eq!(later.counts["regulars"], 1);
    let ada_scores = store
        .member_scores(&p, ada.id)
        .await
        .expect("read")
        .expect("scored");
    assert_eq!(ada_scores.purchases_90d, 4);

    // A new revision (a segment added) recomputes the same instant; the old one does not.
    let mut doc = p.program.document.clone();
    doc.segments.push(
        serde_json::from_value(json!({"code": "everyone", "name": "Everyone",
            "condition": "member.status == 'active'"}))
        .expect("a segment"),
    );
    let revised = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    let (p2, _) = store
        .put_program(&revised, utc("2026-06-10T00:00:00Z"), &Actor::cli())
        .await
        .expect("stored");
    assert_ne!(p2.revision, p.revision);
    let again = store
        .refresh_segments(
            &p2,
            utc("2026-06-10T00:00:00Z"),
            utc("2026-06-11T00:00:00Z"),
        )
        .await
        .expect("refreshed");
    assert!(!again.already, "a new revision recomputes the instant");
    assert_eq!(again.counts["everyone"], 3, "{again:?}");
    let same = store
        .refresh_segments(
            &p2,
            utc("2026-06-10T00:00:00Z"),
            utc("2026-06-11T00:00:00Z"),
        )
        .await
        .expect("refreshed");
    assert!(same.already);
}
