//! The dashboard's figures, aggregated in the database, on both databases: members and
//! activity, enrolments and points per month in the program's time zone, outstanding
//! points and the tier distribution.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, LoadedProgram, MonthPoints, Prepared, Store};
use serde_json::json;

fidelis_testkit::store_tests!(figures_fall_in_their_local_months);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test instant")
        .with_timezone(&Utc)
}

async fn program(store: &Store) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "cafe", "name": "Café", "time_zone": "Asia/Tokyo", "money_currency": "JPY",
        "currencies": [{"code": "stars", "name": "Stars", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 40}},
                       {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "stars", "rate": "1"}, {"currency": "status", "rate": "1"}]},
        "tier_groups": [{"code": "level", "currency": "status",
                         "tiers": [{"code": "green", "threshold": 0}, {"code": "gold", "threshold": 1000}]}]
    }))
    .expect("a program document");
    let program = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    store
        .put_program(&program, utc("2020-01-01T00:00:00Z"), &Actor::cli())
        .await
        .expect("stored")
        .0
}

async fn post(store: &Store, p: &LoadedProgram, doc: serde_json::Value, now: &str) {
    let doc: JournalDocument = serde_json::from_value(doc).expect("a journal document");
    let journal = Journal::parse(&doc, &p.program).expect("a journal");
    let prepared = Prepared::new(journal, &p.program).expect("prepared");
    let results = store
        .post_journals(p, &[prepared], utc(now), None)
        .await
        .expect("posted");
    assert!(results[0].is_ok(), "{:?}", results[0]);
}

async fn figures_fall_in_their_local_months(store: Store) {
    let p = program(&store).await;
    // Tokyo is UTC+9: 2026-09-30T20:00Z is 1 October in Tokyo.
    for (member, at) in [
        ("ada", "2026-08-10T00:00:00Z"),
        ("bob", "2026-09-30T20:00:00Z"),
        ("cy", "2026-10-05T00:00:00Z"),
        ("old", "2025-01-01T00:00:00Z"),
    ] {
        store
            .enroll(
                &p,
                &Enrollment {
                    external_id: ExternalId::parse(member).expect("an id"),
                    profile: json!({}),
                    enrolled_at: utc(at),
                },
                utc(at),
            )
            .await
            .expect("enrolled");
    }
    let buy = |id: &str, member: &str, at: &str, amount: &str| json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": at, "amount": amount, "currency": "JPY"});
    post(
        &store,
        &p,
        buy("b1", "ada", "2026-08-20T00:00:00Z", "300"),
        "2026-08-20T00:00:00Z",
    )
    .await;
    // Late on 31 August in UTC is September in Tokyo.
    post(
        &store,
        &p,
        buy("b2", "ada", "2026-08-31T20:00:00Z", "1200"),
        "2026-08-31T20:00:00Z",
    )
    .await;
    post(
        &store,
        &p,
        buy("b3", "cy", "2026-10-06T00:00:00Z", "50"),
        "2026-10-06T00:00:00Z",
    )
    .await;
    post(
        &store,
        &p,
        json!({"external_id": "r1", "member": "ada", "type": "redemption", "occurred_at": "2026-09-10T00:00:00Z",
               "currency": "stars", "points": 100}),
        "2026-09-10T00:00:00Z",
    )
    .await;
    post(
        &store,
        &p,
        json!({"external_id": "a1", "member": "cy", "type": "adjustment", "occurred_at": "2026-10-07T00:00:00Z",
               "currency": "stars", "points": -20, "reason": "correction"}),
        "2026-10-07T00:00:00Z",
    )
    .await;
    // Stars expire 40 days after earning: ada's first 300 on 29 September, her 1,200 on
    // 11 October (Tokyo).
    store
        .run_jobs(&p, utc("2026-10-20T00:00:00Z"))
        .await
        .expect("jobs ran");

    let tokyo = |s: &str| utc(s);
    let bounds = [
        tokyo("2026-07-31T15:00:00Z"), // 1 August, Tokyo
        tokyo("2026-08-31T15:00:00Z"), // 1 September
        tokyo("2026-09-30T15:00:00Z"), // 1 October
        tokyo("2026-10-31T15:00:00Z"), // 1 November
    ];
    let d = store
        .dashboard(&p, &bounds, utc("2026-10-20T00:00:00Z"))
        .await
        .expect("the dashboard");
    assert_eq!(d.members, 4);
    assert_eq!(
        d.enrolments,
        vec![1, 0, 2],
        "bob enrolled on 1 October, Tokyo time"
    );
    // Activity: cy bought on 6 October and ada redeemed on 10 September (within 90 days).
    assert_eq!((d.active_30, d.active_90), (1, 2));
    let stars = &d
        .points
        .iter()
        .find(|(c, _)| c == "stars")
        .expect("stars")
        .1;
    assert_eq!(
        stars,
        &vec![
            MonthPoints {
                issued: 300,
                redeemed: 0,
                expired: 0
            },
            MonthPoints {
                issued: 1200,
                redeemed: 100,
                expired: 200
            },
            MonthPoints {
                issued: 50,
                redeemed: 0,
                expired: 1200
            },
        ],
        "the negative adjustment is not issued; 200 of the first 300 expired in September \
         (100 were redeemed first), the 1,200 of 1 September on 11 October"
    );
    let outstanding = d
        .outstanding
        .iter()
        .find(|(c, _, _)| c == "stars")
        .expect("stars");
    assert_eq!(outstanding.1, 300 + 1200 + 50 - 100 - 200 - 1200 - 20);
    // Ada reached gold with 1,500 status; the others hold the first tier.
    assert_eq!(
        d.tiers,
        vec![
            ("level".to_owned(), "green".to_owned(), 3),
            ("level".to_owned(), "gold".to_owned(), 1)
        ]
    );
}
