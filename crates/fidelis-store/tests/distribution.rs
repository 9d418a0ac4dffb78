//! The schema rule for distributing PostgreSQL by member (PRODUCT.md §17; ARCHITECTURE.md,
//! "Distributing the schema"), checked on the migrated schema of a throw-away server.
//!
//! Every table is named below in exactly one class: distributed (by the member, by the
//! voucher for vouchers and their ledger, or by its own key for a lookup table), reference (small, copied to every node) or coordinator
//! (stays on one node). A distributed table must have a primary key, and every unique
//! constraint or index must include its distribution column (Citus can enforce only those
//! on each shard); a foreign key from a distributed table names the distribution column of
//! both sides or points at a reference table; a reference table points at no distributed
//! table. A new table fails this test until it is classified and keeps the rule.
//!
//! PostgreSQL only: SQLite is never distributed. A key unique across members (an external
//! id, a code) lives in a lookup table, as the journals' external ids do (`journal_keys`).
//! A table not keyed right yet may be listed in `PENDING` with what blocks it (empty now);
//! the test checks that list too: fixing a table fails it until the table leaves the list.

use std::collections::{BTreeMap, BTreeSet};

mod common;

/// Distributed by the member: (table, distribution column).
const BY_MEMBER: &[(&str, &str)] = &[
    ("accounts", "member_id"),
    ("buckets", "member_id"),
    ("claims", "member_id"),
    ("entries", "member_id"),
    ("expiry_notices", "member_id"),
    ("held_journals", "member_id"),
    ("journals", "member_id"),
    ("member_activity", "member_id"),
    ("member_badges", "member_id"),
    ("member_benefits", "member_id"),
    ("member_consents", "member_id"),
    ("member_credentials", "member_id"),
    // A group (household) is a member record of its own.
    ("member_groups", "group_id"),
    ("member_risk", "member_id"),
    ("member_scores", "member_id"),
    ("member_segments", "member_id"),
    ("member_terms", "member_id"),
    ("member_tiers", "member_id"),
    ("members", "id"),
    ("orders", "member_id"),
    ("promotion_usage", "member_id"),
    ("scheduled_rewards", "member_id"),
];

/// Distributed by their own key: lookup tables that hold what is unique across members.
const LOOKUP: &[(&str, &str)] = &[
    ("journal_keys", "external_id"),
    ("member_keys", "external_id"),
    ("referral_codes", "code"),
    ("order_keys", "order_id"),
    ("claim_keys", "claim_id"),
    ("held_keys", "external_id"),
    // Fraud rules look a receipt up across members.
    ("journal_receipts", "receipt"),
    ("voucher_codes", "code"),
    ("voucher_sources", "source_key"),
];

/// Reference tables: small, read by every journal or page, copied to every node.
const REFERENCE: &[&str] = &[
    "api_tokens",
    "catalog_items",
    "message_templates",
    "partners",
    "programs",
    "users",
    "webhooks",
];

/// Tables that stay on the coordinator: written by one job or one operator at a time, or
/// an append-only log read in order (events, audit, deliveries, imports' bookkeeping).
const COORDINATOR: &[&str] = &[
    "_sqlx_migrations",
    "audit_log",
    "event_streams",
    "events",
    "health_probe",
    "import_progress",
    "import_rejections",
    "import_runs",
    "leases",
    "messages",
    "partner_entries",
    "points_rollup",
    "rollup_marks",
    "segment_refreshes",
    "settlements",
    "signin_links",
    "store_upgrades",
    "web_sessions",
    "webhook_deliveries",
];

/// Distributed by the voucher: a voucher may belong to no member (a bulk run's codes
/// handed out later); its value ledger is co-located with it.
const BY_VOUCHER: &[(&str, &str)] = &[("vouchers", "id"), ("voucher_entries", "voucher_id")];

/// Member-scoped tables whose keys are not ready yet, with what blocks them (each
/// violation the check finds, as "table: constraint"). None now; a table that cannot be
/// keyed right at once is listed here rather than left unclassified.
const PENDING: &[(&str, &[&str])] = &[];

/// The distribution column of a table as planned: the member's for pending ones.
fn distribution(table: &str) -> Option<&'static str> {
    BY_MEMBER
        .iter()
        .chain(LOOKUP)
        .chain(BY_VOUCHER)
        .find(|(t, _)| *t == table)
        .map(|(_, c)| *c)
        .or_else(|| match table {
            t if PENDING.iter().any(|(p, _)| *p == t) => Some("member_id"),
            _ => None,
        })
}

#[tokio::test]
async fn every_table_is_classified_and_distributed_tables_are_keyed_by_their_column() {
    let url = fidelis_testkit::pg_url();
    // Migrates the schema.
    fidelis_store::Store::connect(&url).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();

    let tables: BTreeSet<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();

    // Every table in exactly one class.
    let mut class: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, _) in BY_MEMBER {
        class.entry(t).or_default().push("by member");
    }
    for (t, _) in LOOKUP {
        class.entry(t).or_default().push("lookup");
    }
    for (t, _) in BY_VOUCHER {
        class.entry(t).or_default().push("by voucher");
    }
    for t in REFERENCE {
        class.entry(t).or_default().push("reference");
    }
    for t in COORDINATOR {
        class.entry(t).or_default().push("coordinator");
    }
    for (t, _) in PENDING {
        class.entry(t).or_default().push("pending");
    }
    let unclassified: Vec<&String> = tables
        .iter()
        .filter(|t| !class.contains_key(t.as_str()))
        .collect();
    assert!(
        unclassified.is_empty(),
        "tables in no class (say how each is distributed): {unclassified:?}"
    );
    let twice: Vec<_> = class.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(twice.is_empty(), "tables in two classes: {twice:?}");
    let gone: Vec<&&str> = class.keys().filter(|t| !tables.contains(**t)).collect();
    assert!(
        gone.is_empty(),
        "classified tables that do not exist: {gone:?}"
    );

    // Unique constraints and indexes (primary keys included) by table: (name, columns).
    let uniques: Vec<(String, String, Vec<String>, bool)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(x.indkey) AS k(n) \
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n), \
                x.indisprimary \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND x.indisunique",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut violations: BTreeSet<String> = BTreeSet::new();
    let mut has_key: BTreeSet<String> = BTreeSet::new();
    for (table, index, columns, primary) in &uniques {
        let Some(column) = distribution(table) else {
            continue;
        };
        if *primary {
            has_key.insert(table.clone());
        }
        if !columns.iter().any(|c| c == column) {
            violations.insert(format!("{table}: {index}"));
        }
    }
    for (table, _) in BY_MEMBER.iter().chain(LOOKUP).chain(BY_VOUCHER) {
        assert!(has_key.contains(*table), "{table} has no primary key");
    }
    // Foreign keys: (table, columns, referenced table, referenced columns).
    let foreign: Vec<(String, Vec<String>, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.relname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) AS k(n) \
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n), \
                r.relname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) AS k(n) \
                      JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.n) \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND c.contype = 'f'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (table, columns, referenced, referenced_columns) in &foreign {
        let reference = REFERENCE.contains(&referenced.as_str());
        match (distribution(table), distribution(referenced)) {
            (Some(column), Some(target)) => {
                let together = columns
                    .iter()
                    .zip(referenced_columns)
                    .any(|(c, r)| c == column && r == target);
                if !together {
                    violations.insert(format!("{table}: foreign key to {referenced}"));
                }
            }
            (Some(_), None) => assert!(
                reference,
                "{table} (distributed) points at {referenced}, which is not a reference table"
            ),
            (None, Some(_)) => {
                // Neither a reference table nor a coordinator's may point into shards.
                violations.insert(format!("{table}: foreign key to {referenced}"));
            }
            (None, None) => {}
        }
    }

    // What the check finds is exactly what is listed as pending.
    let pending: BTreeSet<String> = PENDING
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| s.to_string()))
        .collect();
    let new: Vec<&String> = violations.difference(&pending).collect();
    assert!(
        new.is_empty(),
        "keys that a distribution by member cannot enforce: {new:?}"
    );
    let fixed: Vec<&String> = pending.difference(&violations).collect();
    assert!(
        fixed.is_empty(),
        "listed as pending but keyed right now (take them off PENDING): {fixed:?}"
    );
}

/// What the vouchers' dropped unique constraints enforced, their lookup tables enforce: every
/// voucher issued (one by one, in bulk, by a promotion) has its code and its source key
/// there, pointing back at it, and a bulk run resumed finds its source keys taken.
#[tokio::test]
async fn vouchers_hold_their_code_and_source_key_in_the_lookup_tables() {
    let url = fidelis_testkit::pg_url();
    let store = fidelis_store::Store::connect(&url).await.unwrap();
    let program = common::program_with_members(
        &store,
        serde_json::json!({
            "code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]},
            "vouchers": [{"code": "gift", "name": "Gift card", "value": {"fixed": "5.00"},
                          "validity": {"days": 30}}]
        }),
        &["m1", "m2"],
    )
    .await;
    let now = common::utc("2026-12-02T10:00:00Z");
    let agent = fidelis_store::Actor {
        name: "agent".into(),
        role: "agent".into(),
    };
    let members = [Some("m1".to_owned()), None, Some("m2".to_owned()), None];
    for expected in [4, 0] {
        let issued = store
            .issue_vouchers_bulk(&program, "gift", &members, "spring", now, &agent, |_| {})
            .await
            .unwrap();
        assert_eq!(issued, expected, "a run resumed issues nothing twice");
    }
    let (one, fresh) = store
        .issue_voucher(&program, "gift", Some("m1"), "agent", "req-1", now, &agent)
        .await
        .unwrap();
    assert!(fresh);
    let (again, fresh) = store
        .issue_voucher(&program, "gift", Some("m1"), "agent", "req-1", now, &agent)
        .await
        .unwrap();
    assert!(!fresh, "a retry is answered with the voucher issued first");
    assert_eq!(again.code, one.code);

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (vouchers, codes, sources): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM vouchers WHERE program_id = $1), \
                (SELECT count(*) FROM vouchers v JOIN voucher_codes c \
                   ON c.program_id = v.program_id AND c.code = v.code AND c.voucher_id = v.id \
                 WHERE v.program_id = $1), \
                (SELECT count(*) FROM vouchers v JOIN voucher_sources s \
                   ON s.program_id = v.program_id AND s.source_key = v.source_key \
                  AND s.voucher_id = v.id WHERE v.program_id = $1)",
    )
    .bind(program.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((vouchers, codes, sources), (5, 5, 5));
}
