//! Finding members, on both databases: search by id, name words, email and phone; filters
//! by status, tier, enrolment date and balance; both sort orders; keyset pages that stay
//! whole while members enrol; search terms filled in for members enrolled before search
//! existed; profiles whose well-known fields would never match are refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::ledger::MemberStatus;
use fidelis_core::members::SearchQuery;
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{
    Actor, Enrollment, LoadedProgram, MemberQuery, MemberSort, Prepared, Store, StoreError,
};
use serde_json::json;

fidelis_testkit::store_tests!(
    members_are_found_by_what_an_operator_types,
    members_are_filtered_sorted_and_paged,
    pages_stay_whole_while_members_enrol,
    members_enrolled_before_search_are_found_after_the_upgrade,
    profiles_that_would_never_match_are_refused,
    far_cursors_page_without_error,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test instant")
        .with_timezone(&Utc)
}

async fn program(store: &Store) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(json!({
        "code": "cafe", "name": "Café", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [
            {"code": "stars", "name": "Stars", "kind": "redeemable", "expiry": {"policy": "never"}},
            {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "stars", "rate": "10"}, {"currency": "status", "rate": "1"}]},
        "tier_groups": [{"code": "level", "currency": "status", "downgrade": "one_tier",
            "tiers": [{"code": "green", "threshold": 0}, {"code": "gold", "threshold": 100}]}]
    }))
    .expect("a program document");
    let program = Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"));
    store
        .put_program(&program, utc("2026-01-01T00:00:00Z"), &Actor::cli())
        .await
        .expect("program stored")
        .0
}

async fn enroll(
    store: &Store,
    program: &LoadedProgram,
    member: &str,
    profile: serde_json::Value,
    at: &str,
) {
    store
        .enroll(
            program,
            &Enrollment {
                external_id: ExternalId::parse(member).expect("an external id"),
                profile,
                enrolled_at: utc(at),
            },
            utc(at),
        )
        .await
        .expect("enrolled");
}

async fn purchase(store: &Store, program: &LoadedProgram, id: &str, member: &str, euros: &str) {
    let doc: JournalDocument = serde_json::from_value(json!({
        "external_id": id, "member": member, "type": "purchase",
        "occurred_at": "2026-03-01T10:00:00Z", "amount": euros, "currency": "EUR"}))
    .expect("a journal document");
    let journal = Journal::parse(&doc, &program.program).unwrap_or_else(|e| panic!("{e}"));
    let prepared = Prepared::new(journal, &program.program).expect("prepared");
    let result = store
        .post_journals(program, &[prepared], utc("2026-03-01T10:00:00Z"), None)
        .await
        .expect("posted")
        .remove(0);
    assert!(result.is_ok(), "{result:?}");
}

/// The café's members: names, emails and phones as operators type them.
async fn cafe(store: &Store) -> Arc<LoadedProgram> {
    let p = program(store).await;
    let people = [
        (
            "C-1001",
            json!({"name": "Ann Smith", "email": "ann.smith@example.com", "phone": "+44 20 7946 0018"}),
            "2026-01-05T09:00:00Z",
        ),
        (
            "C-1002",
            json!({"name": "Anna Schmidt", "email": "anna@example.de", "phone": "030 1234567"}),
            "2026-01-20T09:00:00Z",
        ),
        (
            "C-1003",
            json!({"first_name": "Émile", "last_name": "Smithers", "email": "EMILE@Example.FR"}),
            "2026-02-01T09:00:00Z",
        ),
        (
            "c-2001",
            json!({"name": "Bob Annan"}),
            "2026-02-14T09:00:00Z",
        ),
        ("X-9", json!({}), "2026-03-01T09:00:00Z"),
    ];
    for (id, profile, at) in people {
        enroll(store, &p, id, profile, at).await;
    }
    p
}

fn query(q: &str) -> MemberQuery {
    MemberQuery {
        search: Some(SearchQuery::parse(q).expect("a query")),
        limit: 100,
        ..MemberQuery::default()
    }
}

async fn found(store: &Store, program: &LoadedProgram, q: MemberQuery) -> Vec<String> {
    store
        .list_members(program, &q)
        .await
        .expect("listed")
        .members
        .into_iter()
        .map(|m| m.external_id)
        .collect()
}

async fn members_are_found_by_what_an_operator_types(store: Store) {
    let p = cafe(&store).await;
    let search = async |q: &str| found(&store, &p, query(q)).await;
    // A word of the name, from its start, in any case.
    assert_eq!(search("ann").await, ["C-1001", "C-1002", "c-2001"]);
    assert_eq!(search("ANNA").await, ["C-1002", "c-2001"]);
    assert_eq!(search("smi").await, ["C-1001", "C-1003"]);
    // Every word must match: first and last name.
    assert_eq!(search("ann smi").await, ["C-1001"]);
    assert_eq!(search("smi ann").await, ["C-1001"]);
    // Beyond ASCII: É is found as é.
    assert_eq!(search("émi").await, ["C-1003"]);
    // The email, from its start, whatever case it was enrolled in.
    assert_eq!(search("emile@ex").await, ["C-1003"]);
    assert_eq!(search("anna@").await, ["C-1002"]);
    // A phone number as typed, with its punctuation: its digits.
    assert_eq!(search("+44 20 79").await, ["C-1001"]);
    assert_eq!(search("030-123").await, ["C-1002"]);
    // The external id, case-insensitively.
    assert_eq!(search("c-100").await, ["C-1001", "C-1002", "C-1003"]);
    assert_eq!(search("C-2").await, ["c-2001"]);
    // Nothing else: not the middle of a word, not another program's member.
    assert!(search("mith").await.is_empty());
    assert!(search("zz").await.is_empty());
}

async fn members_are_filtered_sorted_and_paged(store: Store) {
    let p = cafe(&store).await;
    // Ann earns 1,500 stars and gold; Anna 50 stars and stays green; Bob is suspended.
    purchase(&store, &p, "j1", "C-1001", "150.00").await;
    purchase(&store, &p, "j2", "C-1002", "5.00").await;
    store
        .set_member_status(
            &p,
            "c-2001",
            MemberStatus::Suspended,
            utc("2026-03-02T00:00:00Z"),
            &Actor::cli(),
        )
        .await
        .expect("suspended");
    let all = MemberQuery {
        limit: 100,
        ..MemberQuery::default()
    };
    let list = async |q: MemberQuery| found(&store, &p, q).await;

    assert_eq!(
        list(all.clone()).await,
        ["C-1001", "C-1002", "C-1003", "X-9", "c-2001"]
    );
    let status = |s| MemberQuery {
        status: Some(s),
        ..all.clone()
    };
    assert_eq!(list(status(MemberStatus::Suspended)).await, ["c-2001"]);
    assert_eq!(list(status(MemberStatus::Active)).await.len(), 4);
    // Gold is earned; green is the first tier, held by everyone else (with or without a
    // standing stored yet).
    let tier = |t: &str| MemberQuery {
        tier: Some(t.into()),
        ..all.clone()
    };
    assert_eq!(list(tier("gold")).await, ["C-1001"]);
    assert_eq!(
        list(tier("green")).await,
        ["C-1002", "C-1003", "X-9", "c-2001"]
    );
    // Enrolled in January (from inclusive, until exclusive).
    let january = MemberQuery {
        enrolled_from: Some(utc("2026-01-05T09:00:00Z")),
        enrolled_until: Some(utc("2026-02-01T09:00:00Z")),
        ..all.clone()
    };
    assert_eq!(list(january).await, ["C-1001", "C-1002"]);
    // Balance ranges, in the first currency or another; no account counts as 0.
    let balance = |min, max, currency: Option<&str>| MemberQuery {
        balance_min: min,
        balance_max: max,
        currency: currency.map(str::to_owned),
        ..all.clone()
    };
    assert_eq!(list(balance(Some(1_000), None, None)).await, ["C-1001"]);
    assert_eq!(list(balance(Some(1), Some(1_000), None)).await, ["C-1002"]);
    assert_eq!(
        list(balance(None, Some(0), None)).await,
        ["C-1003", "X-9", "c-2001"]
    );
    assert_eq!(
        list(balance(Some(100), None, Some("status"))).await,
        ["C-1001"]
    );
    // Filters hold together.
    let both = MemberQuery {
        search: Some(SearchQuery::parse("ann").expect("a query")),
        status: Some(MemberStatus::Active),
        ..all.clone()
    };
    assert_eq!(list(both).await, ["C-1001", "C-1002"]);

    // What a listed member shows: tiers and recorded balances.
    let page = store
        .list_members(&p, &query("ann smi"))
        .await
        .expect("listed");
    let ann = &page.members[0];
    assert_eq!(ann.tiers, [("level".to_owned(), "gold".to_owned())]);
    assert!(
        ann.balances.contains(&("stars".to_owned(), 1_500, 0)),
        "{:?}",
        ann.balances
    );
    assert_eq!(ann.profile["email"], "ann.smith@example.com");

    // Sorting both ways by either key, in pages of two that meet end to end.
    let expected = [
        (
            MemberSort::ExternalId,
            vec!["C-1001", "C-1002", "C-1003", "X-9", "c-2001"],
        ),
        (
            MemberSort::ExternalIdDesc,
            vec!["c-2001", "X-9", "C-1003", "C-1002", "C-1001"],
        ),
        (
            MemberSort::Enrolled,
            vec!["C-1001", "C-1002", "C-1003", "c-2001", "X-9"],
        ),
        (
            MemberSort::EnrolledDesc,
            vec!["X-9", "c-2001", "C-1003", "C-1002", "C-1001"],
        ),
    ];
    for (sort, want) in expected {
        let mut q = MemberQuery {
            sort,
            limit: 2,
            ..MemberQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.list_members(&p, &q).await.expect("listed");
            assert!(page.members.len() <= 2);
            seen.extend(page.members.into_iter().map(|m| m.external_id));
            match page.next {
                // Cursors survive their text form.
                Some(next) => {
                    q.after =
                        Some(fidelis_store::MemberCursor::decode(&next.encode()).expect("a cursor"))
                }
                None => break,
            }
        }
        assert_eq!(seen, want, "{sort:?}");
    }
}

#[test]
fn any_well_formed_cursor_reads_back() {
    use fidelis_store::MemberCursor;
    // Not UTF-8, and instants beyond what the databases hold: still cursors.
    assert!(matches!(
        MemberCursor::decode("xb893"),
        Some(MemberCursor::ExternalId(_))
    ));
    for far in ["t-999999999999999999.1", "t999999999999999999.1"] {
        assert!(
            matches!(MemberCursor::decode(far), Some(MemberCursor::Enrolled(..))),
            "{far}"
        );
    }
    assert_eq!(MemberCursor::decode("x4"), None);
    assert_eq!(MemberCursor::decode("t1"), None);
}

async fn pages_stay_whole_while_members_enrol(store: Store) {
    let p = program(&store).await;
    let at = utc("2026-01-01T00:00:00Z");
    let batch = |from: usize, to: usize| {
        (from..to)
            .map(|i| Enrollment {
                external_id: ExternalId::parse(&format!("M-{i:04}")).expect("an id"),
                profile: json!({"name": format!("Member {i}")}),
                enrolled_at: at + Duration::minutes(i as i64),
            })
            .collect::<Vec<_>>()
    };
    // 60 members before paging starts (even ids), 60 enrolled while it runs (odd ids,
    // falling between them in both orders).
    let before: Vec<Enrollment> = batch(0, 120).into_iter().step_by(2).collect();
    store.enroll_many(&p, &before, at).await.expect("enrolled");
    for sort in [MemberSort::ExternalId, MemberSort::EnrolledDesc] {
        let later: Vec<Enrollment> = batch(0, 120)
            .into_iter()
            .skip(1)
            .step_by(2)
            .map(|mut e| {
                e.external_id = ExternalId::parse(&format!("{}-{sort:?}", e.external_id.as_str()))
                    .expect("an id");
                e
            })
            .collect();
        let enrolling = {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move {
                for e in later {
                    store.enroll(&p, &e, at).await.expect("enrolled");
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut q = MemberQuery {
            sort,
            limit: 7,
            ..MemberQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.list_members(&p, &q).await.expect("listed");
            seen.extend(page.members.into_iter().map(|m| m.external_id));
            match page.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        enrolling.await.expect("the enrolments finished");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a member was listed twice: {seen:?}"
        );
        for e in &before {
            assert!(
                seen.contains(&e.external_id.to_string()),
                "{} was skipped",
                e.external_id
            );
        }
    }
}

async fn members_enrolled_before_search_are_found_after_the_upgrade(store: Store) {
    let p = cafe(&store).await;
    // As a database migrated from before search: members without terms, the upgrade
    // not yet done.
    store
        .forget_member_terms_for_test()
        .await
        .expect("terms removed");
    assert!(found(&store, &p, query("ann")).await.is_empty());
    // What connecting does after migrating.
    store.finish_member_terms().await.expect("terms filled in");
    assert_eq!(
        found(&store, &p, query("ann")).await,
        ["C-1001", "C-1002", "c-2001"]
    );
    assert_eq!(found(&store, &p, query("+44 20")).await, ["C-1001"]);
}

async fn profiles_that_would_never_match_are_refused(store: Store) {
    let p = program(&store).await;
    let refused = store
        .enroll(
            &p,
            &Enrollment {
                external_id: ExternalId::parse("C-1").expect("an id"),
                profile: json!({"name": "Ann", "birthday": "12/01/1990"}),
                enrolled_at: utc("2026-01-01T00:00:00Z"),
            },
            utc("2026-01-01T00:00:00Z"),
        )
        .await;
    match refused {
        Err(StoreError::Refused("invalid_member", reason)) => {
            assert!(reason.contains("YYYY-MM-DD"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.member(&p, "C-1").await.expect("read").is_none());
    enroll(
        &store,
        &p,
        "C-1",
        json!({"name": "Ann", "birthday": "1990-12-01"}),
        "2026-01-01T00:00:00Z",
    )
    .await;
}

async fn far_cursors_page_without_error(store: Store) {
    let p = cafe(&store).await;
    for raw in [
        "t-999999999999999999.1",
        "t999999999999999999.1",
        "xb893c6839d",
        "x00",
        "x410042",
    ] {
        let after = fidelis_store::MemberCursor::decode(raw).expect("a cursor");
        let sort = match after {
            fidelis_store::MemberCursor::ExternalId(_) => MemberSort::ExternalId,
            fidelis_store::MemberCursor::Enrolled(..) => MemberSort::Enrolled,
        };
        let q = MemberQuery {
            sort,
            after: Some(after),
            limit: 10,
            ..MemberQuery::default()
        };
        store
            .list_members(&p, &q)
            .await
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
    }
}
