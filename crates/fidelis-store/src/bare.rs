//! The bare batch: the physical limit an import is measured against.
//!
//! Per journal it does only the minimal writes — insert the journal row, insert one
//! ledger row, update the member's balance row — set-based, one transaction per batch,
//! on the store's own connections (so with the same durability settings), into tables of
//! the same shape and keys as the real ones. No rules, no reads, no idempotency checks:
//! no real import can be faster. Used by the end-to-end benchmark only.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqlx::QueryBuilder;

use crate::error::Result;
use crate::sqlite::micros;
use crate::{Db, Store};

/// Generated purchase journals, one JSON document per line: `journals` purchases spread
/// over `members` members (`M0000000`…) and the year 2025, with one or two lines each.
pub fn purchase_lines(members: u64, journals: u64) -> impl Iterator<Item = String> {
    let start = Utc
        .with_ymd_and_hms(2025, 1, 1, 8, 0, 0)
        .single()
        .unwrap_or_default();
    (0..journals).map(move |i| {
        let member = (i.wrapping_mul(7_919)) % members.max(1);
        let at = start + Duration::seconds((i * 31_536_000 / journals.max(1)) as i64);
        let cents = 500 + (i * 7_727) % 25_000;
        let shoes = cents * 3 / 4;
        format!(
            r#"{{"external_id":"pos-{i:09}","member":"M{member:07}","type":"purchase","occurred_at":"{}","amount":"{}.{:02}","currency":"EUR","channel":"store","store":"berlin-{:02}","lines":[{{"line_id":"1","sku":"SH-{:03}","category":"shoes","quantity":1,"amount":"{}.{:02}"}},{{"line_id":"2","sku":"SO-9","category":"socks","quantity":2,"amount":"{}.{:02}"}}]}}"#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cents / 100,
            cents % 100,
            i % 40,
            i % 500,
            shoes / 100,
            shoes % 100,
            (cents - shoes) / 100,
            (cents - shoes) % 100,
        )
    })
}

const SQLITE_TABLES: &[&str] = &[
    "DROP INDEX IF EXISTS bare_journals_member",
    "DROP TABLE IF EXISTS bare_journals",
    "DROP TABLE IF EXISTS bare_ledger",
    "DROP TABLE IF EXISTS bare_balances",
    "CREATE TABLE bare_journals (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL, program_id INTEGER NOT NULL, \
     external_id TEXT, kind TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, occurred_at INTEGER NOT NULL, \
     recorded_at INTEGER NOT NULL, document TEXT, UNIQUE (program_id, external_id))",
    "CREATE INDEX bare_journals_member ON bare_journals (member_id, id)",
    "CREATE TABLE bare_ledger (member_id INTEGER NOT NULL, journal_id INTEGER NOT NULL, seq INTEGER NOT NULL, \
     currency TEXT NOT NULL, amount INTEGER NOT NULL, effective_at INTEGER NOT NULL, \
     PRIMARY KEY (journal_id, seq)) WITHOUT ROWID",
    "CREATE TABLE bare_balances (member_id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
];

const PG_TABLES: &[&str] = &[
    "DROP TABLE IF EXISTS bare_journals, bare_ledger, bare_balances",
    "CREATE TABLE bare_journals (member_id BIGINT NOT NULL, id BIGINT NOT NULL, program_id BIGINT NOT NULL, \
     external_id TEXT COLLATE \"C\", kind TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL, \
     recorded_at TIMESTAMPTZ NOT NULL, document TEXT, PRIMARY KEY (member_id, id), UNIQUE (program_id, external_id))",
    "CREATE TABLE bare_ledger (member_id BIGINT NOT NULL, journal_id BIGINT NOT NULL, seq INTEGER NOT NULL, \
     currency TEXT COLLATE \"C\" NOT NULL, amount BIGINT NOT NULL, effective_at TIMESTAMPTZ NOT NULL, \
     PRIMARY KEY (journal_id, seq))",
    "CREATE TABLE bare_balances (member_id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) WITH (fillfactor = 80)",
];

struct Row {
    member: i64,
    id: i64,
    external_id: String,
    at: DateTime<Utc>,
    document: String,
    points: i64,
}

/// Runs the bare batch and returns the seconds its writes took (setup excluded).
pub async fn run(store: &Store, members: u64, journals: u64, batch: u64) -> Result<f64> {
    match &store.db {
        Db::Sqlite(pool) => {
            for sql in SQLITE_TABLES {
                sqlx::query(*sql).execute(pool).await?;
            }
            sqlx::query("WITH RECURSIVE n(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM n WHERE m + 1 < ?1) INSERT INTO bare_balances SELECT m, 0 FROM n")
                .bind(members as i64)
                .execute(pool)
                .await?;
        }
        Db::Postgres(pool) => {
            for sql in PG_TABLES {
                sqlx::query(*sql).execute(pool).await?;
            }
            sqlx::query(
                "INSERT INTO bare_balances SELECT m, 0 FROM generate_series(0, $1 - 1) AS m",
            )
            .bind(members as i64)
            .execute(pool)
            .await?;
            sqlx::query("VACUUM ANALYZE bare_balances")
                .execute(pool)
                .await?;
        }
    }
    let mut lines = purchase_lines(members, journals).enumerate();
    let started = Instant::now();
    loop {
        let rows: Vec<Row> = lines
            .by_ref()
            .take(batch as usize)
            .map(|(i, document)| Row {
                member: ((i as u64).wrapping_mul(7_919) % members.max(1)) as i64,
                id: i as i64 + 1,
                external_id: format!("pos-{i:09}"),
                at: Utc::now(),
                points: 10 + (i as i64 % 240),
                document,
            })
            .collect();
        if rows.is_empty() {
            break;
        }
        let mut deltas: HashMap<i64, i64> = HashMap::new();
        for r in &rows {
            *deltas.entry(r.member).or_default() += r.points;
        }
        let (delta_members, delta_points): (Vec<i64>, Vec<i64>) = deltas.into_iter().unzip();
        match &store.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for chunk in rows.chunks(2_000) {
                    let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO bare_journals (member_id, id, program_id, external_id, kind, type, status, occurred_at, recorded_at, document) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.member)
                            .push_bind(r.id)
                            .push_bind(1i64)
                            .push_bind(r.external_id.as_str())
                            .push_bind("accrual")
                            .push_bind("purchase")
                            .push_bind("processed")
                            .push_bind(micros(r.at))
                            .push_bind(micros(r.at))
                            .push_bind(r.document.as_str());
                    });
                    q.build().execute(&mut *tx).await?;
                    let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO bare_ledger (member_id, journal_id, seq, currency, amount, effective_at) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.member)
                            .push_bind(r.id)
                            .push_bind(0)
                            .push_bind("points")
                            .push_bind(r.points)
                            .push_bind(micros(r.at));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let pairs: Vec<[i64; 2]> = delta_members
                    .iter()
                    .zip(&delta_points)
                    .map(|(m, d)| [*m, *d])
                    .collect();
                sqlx::query(
                    "UPDATE bare_balances SET balance = balance + v.d \
                     FROM (SELECT value ->> 0 AS m, value ->> 1 AS d FROM json_each(?1)) AS v WHERE member_id = v.m",
                )
                .bind(serde_json::to_string(&pairs)?)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO bare_journals (member_id, id, program_id, external_id, kind, type, status, occurred_at, recorded_at, document) \
                     SELECT m, i, 1, e, 'accrual', 'purchase', 'processed', t, t, d \
                     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[]) AS u(m, i, e, t, d)",
                )
                .bind(rows.iter().map(|r| r.member).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.document.as_str()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO bare_ledger (member_id, journal_id, seq, currency, amount, effective_at) \
                     SELECT m, i, 0, 'points', p, t FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[]) AS u(m, i, p, t)",
                )
                .bind(rows.iter().map(|r| r.member).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.points).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE bare_balances b SET balance = b.balance + u.d FROM unnest($1::bigint[], $2::bigint[]) AS u(m, d) WHERE b.member_id = u.m",
                )
                .bind(&delta_members)
                .bind(&delta_points)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
    }
    Ok(started.elapsed().as_secs_f64())
}
