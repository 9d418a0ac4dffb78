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

fidelis_testkit::store_tests!(
    figures_fall_in_their_local_months,
    figures_kept_incrementally_match
);

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

/// The same history, with the dashboard computed after every step (so the rollup folds the
/// ledger piece by piece, and on PostgreSQL moves its horizon several times), ends with the
/// figures of one computation at the end.
async fn figures_kept_incrementally_match(store: Store) {
    let p = program(&store).await;
    let bounds = [
        utc("2026-07-31T15:00:00Z"),
        utc("2026-08-31T15:00:00Z"),
        utc("2026-09-30T15:00:00Z"),
        utc("2026-10-31T15:00:00Z"),
    ];
    let now = utc("2026-10-20T00:00:00Z");
    for member in ["ada", "cy"] {
        store
            .enroll(
                &p,
                &Enrollment {
                    external_id: ExternalId::parse(member).expect("an id"),
                    profile: json!({}),
                    enrolled_at: utc("2026-08-01T00:00:00Z"),
                },
                utc("2026-08-01T00:00:00Z"),
            )
            .await
            .expect("enrolled");
    }
    let steps = [
        json!({"external_id": "b1", "member": "ada", "type": "purchase", "occurred_at": "2026-08-20T00:00:00Z", "amount": "300", "currency": "JPY"}),
        json!({"external_id": "b2", "member": "ada", "type": "purchase", "occurred_at": "2026-08-31T20:00:00Z", "amount": "1200", "currency": "JPY"}),
        json!({"external_id": "r1", "member": "ada", "type": "redemption", "occurred_at": "2026-09-10T00:00:00Z", "currency": "stars", "points": 100}),
        json!({"external_id": "b3", "member": "cy", "type": "purchase", "occurred_at": "2026-10-06T00:00:00Z", "amount": "50", "currency": "JPY"}),
    ];
    for doc in steps {
        let at = doc["occurred_at"].as_str().expect("a time").to_owned();
        post(&store, &p, doc, &at).await;
        for _ in 0..2 {
            store
                .dashboard(&p, &bounds, now)
                .await
                .expect("the dashboard");
        }
    }
    store.run_jobs(&p, now).await.expect("jobs ran");
    let mut last = None;
    for _ in 0..3 {
        let d = store
            .dashboard(&p, &bounds, now)
            .await
            .expect("the dashboard");
        if let Some(before) = &last {
            assert_eq!(before, &d, "computing again changes nothing");
        }
        last = Some(d);
    }
    let d = last.expect("figures");
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
        ]
    );
    assert_eq!((d.active_30, d.active_90), (1, 2));
    assert!(
        store.roll_up().await.expect("rolled up") > 0,
        "the rollup caught up"
    );
}

/// On PostgreSQL a transaction may commit a journal after later ones: the rollup must not
/// pass it while it is open, or its points would never be counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rollup_waits_for_open_transactions() {
    let url = fidelis_testkit::pg_url();
    let store = Store::connect(&url).await.expect("connect to PostgreSQL");
    let raw = sqlx::PgPool::connect(&url)
        .await
        .expect("a second connection");
    let p = program(&store).await;
    let at = "2026-08-20T00:00:00Z";
    store
        .enroll(
            &p,
            &Enrollment {
                external_id: ExternalId::parse("ada").expect("an id"),
                profile: json!({}),
                enrolled_at: utc(at),
            },
            utc(at),
        )
        .await
        .expect("enrolled");
    let buy = |id: &str| json!({"external_id": id, "member": "ada", "type": "purchase", "occurred_at": at, "amount": "300", "currency": "JPY"});
    post(&store, &p, buy("b1"), at).await;
    // A writer that drew its journal id and has not committed (as the engine does: its
    // transaction id first, then the journal id).
    let mut open = raw.begin().await.expect("begin");
    let journal: i64 = sqlx::query_scalar(
        "SELECT nextval('journal_ids') FROM generate_series(1, 1) WHERE pg_current_xact_id() IS NOT NULL",
    )
    .fetch_one(&mut *open)
    .await
    .expect("an id");
    let member: i64 = sqlx::query_scalar("SELECT id FROM members WHERE external_id = 'ada'")
        .fetch_one(&mut *open)
        .await
        .expect("ada");
    sqlx::query(
        "INSERT INTO entries (journal_id, member_id, seq, program_id, currency, kind, pool, amount, effective_at) \
         VALUES ($1, $2, 0, $3, 'stars', 'earn', 'available', 7, $4)",
    )
    .bind(journal)
    .bind(member)
    .bind(p.id)
    .bind(utc(at))
    .execute(&mut *open)
    .await
    .expect("an entry");
    // Later journals commit first; the rollup runs again and again meanwhile.
    post(&store, &p, buy("b2"), at).await;
    let bounds = [utc("2026-07-31T15:00:00Z"), utc("2026-08-31T15:00:00Z")];
    let now = utc("2026-08-21T00:00:00Z");
    let issued = |d: &fidelis_store::Dashboard| {
        d.points
            .iter()
            .find(|(c, _)| c == "stars")
            .expect("stars")
            .1[0]
            .issued
    };
    for _ in 0..4 {
        assert!(
            store.roll_up().await.expect("rolled up") < journal,
            "the rollup waits"
        );
        let d = store
            .dashboard(&p, &bounds, now)
            .await
            .expect("the dashboard");
        assert_eq!(issued(&d), 600, "what is committed, nothing else");
    }
    open.commit().await.expect("commit");
    for _ in 0..3 {
        let d = store
            .dashboard(&p, &bounds, now)
            .await
            .expect("the dashboard");
        assert_eq!(issued(&d), 607, "the late commit is counted, once");
    }
    // Transactions of other tests on the same server may hold the horizon back a moment.
    let mut through = 0;
    for _ in 0..100 {
        through = store.roll_up().await.expect("rolled up");
        if through >= journal {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        through >= journal,
        "the rollup passed the late journal once it committed"
    );
    let d = store
        .dashboard(&p, &bounds, now)
        .await
        .expect("the dashboard");
    assert_eq!(issued(&d), 607);
}
