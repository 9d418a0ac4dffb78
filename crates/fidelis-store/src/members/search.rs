//! Finding members: search terms kept beside each member, and the filtered, sorted,
//! cursor-paginated list an operator pages through (`GET /programs/{p}/members`,
//! `fidelis members list`).
//!
//! Search is a prefix match on the member's terms ([`fidelis_core::members`]): one index
//! range per word. Sorting is by external id or enrolment instant, both indexed, and pages
//! continue after the last key seen (keyset pagination): a member enrolled while an
//! operator pages appears at most once and none enrolled before the first page is skipped.

use chrono::{DateTime, Utc};
use fidelis_core::ledger::MemberStatus;
use fidelis_core::members::{SearchQuery, search_terms, upper_bound};
use sqlx::Row;

use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// How a member list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberSort {
    #[default]
    ExternalId,
    ExternalIdDesc,
    Enrolled,
    EnrolledDesc,
}

impl MemberSort {
    /// `external_id`, `-external_id`, `enrolled_at`, `-enrolled_at`.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "external_id" => Self::ExternalId,
            "-external_id" => Self::ExternalIdDesc,
            "enrolled_at" => Self::Enrolled,
            "-enrolled_at" => Self::EnrolledDesc,
            _ => return None,
        })
    }
}

/// Where the next page starts: after this member's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCursor {
    ExternalId(String),
    Enrolled(DateTime<Utc>, i64),
}

impl MemberCursor {
    /// An opaque text: `x` and the external id's bytes in hex, or `t`, the enrolment
    /// instant in microseconds, `.` and the member's row id.
    pub fn encode(&self) -> String {
        match self {
            Self::ExternalId(id) => {
                let mut out = String::with_capacity(1 + id.len() * 2);
                out.push('x');
                for b in id.as_bytes() {
                    out.push_str(&format!("{b:02x}"));
                }
                out
            }
            Self::Enrolled(at, id) => format!("t{}.{id}", at.timestamp_micros()),
        }
    }

    /// Reads a cursor back. Any well-formed one is accepted (a page after it is a page,
    /// whatever it names): hex that is not UTF-8 is read as the nearest text (U+0000
    /// dropped), an instant outside years 1 to 9999 as the nearer end.
    pub fn decode(raw: &str) -> Option<Self> {
        if let Some(hex) = raw.strip_prefix('x') {
            if hex.len() % 2 != 0 || hex.is_empty() {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            // No external id holds U+0000 (PostgreSQL's text cannot): without it the
            // cursor sorts at or before the original, so no member after it is skipped.
            let text = String::from_utf8_lossy(&bytes).replace('\0', "");
            return Some(Self::ExternalId(text));
        }
        let (micros, id) = raw.strip_prefix('t')?.split_once('.')?;
        // Years 1 to 9999: both databases hold every instant between.
        const FIRST: i64 = -62_135_596_800_000_000;
        const LAST: i64 = 253_402_300_799_999_999;
        let micros: i64 = micros.parse::<i64>().ok()?.clamp(FIRST, LAST);
        let at = DateTime::from_timestamp_micros(micros)?;
        Some(Self::Enrolled(at, id.parse().ok()?))
    }

    fn fits(&self, sort: MemberSort) -> bool {
        matches!(
            (self, sort),
            (
                Self::ExternalId(_),
                MemberSort::ExternalId | MemberSort::ExternalIdDesc
            ) | (
                Self::Enrolled(..),
                MemberSort::Enrolled | MemberSort::EnrolledDesc
            )
        )
    }
}

/// What to list: every filter is optional and they all hold together.
#[derive(Debug, Clone, Default)]
pub struct MemberQuery {
    pub search: Option<SearchQuery>,
    pub status: Option<MemberStatus>,
    /// A tier code: members holding it in any tier group (members without a standing yet
    /// hold each group's first tier).
    pub tier: Option<String>,
    /// Enrolled at or after.
    pub enrolled_from: Option<DateTime<Utc>>,
    /// Enrolled before.
    pub enrolled_until: Option<DateTime<Utc>>,
    /// The currency of the balance range (the program's first currency when not given).
    pub currency: Option<String>,
    /// Available balance at least / at most (as recorded by the last journal or job).
    pub balance_min: Option<i64>,
    pub balance_max: Option<i64>,
    pub sort: MemberSort,
    pub after: Option<MemberCursor>,
    /// 1 to 1,000.
    pub limit: i64,
}

impl MemberQuery {
    /// Refuses what names something the program lacks — a currency or tier (422
    /// `unknown_currency`, `unknown_tier`) — and a cursor from a list in another order
    /// (`cursor_mismatch`).
    pub fn check(&self, program: &LoadedProgram) -> Result<()> {
        let p = &program.program;
        if let Some(c) = &self.currency
            && p.currency_ix(c).is_none()
        {
            return Err(StoreError::Refused(
                "unknown_currency",
                format!("the program has no currency {c:?}"),
            ));
        }
        if let Some(t) = &self.tier
            && !p
                .tier_groups
                .iter()
                .any(|g| g.tiers.iter().any(|x| x.code.as_str() == t))
        {
            return Err(StoreError::Refused(
                "unknown_tier",
                format!("the program has no tier {t:?}"),
            ));
        }
        if let Some(after) = &self.after
            && !after.fits(self.sort)
        {
            return Err(StoreError::Refused(
                "cursor_mismatch",
                "the cursor is from a list in another sort order: page with the sort it came from"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// One member of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberListing {
    pub external_id: String,
    pub status: MemberStatus,
    pub profile: serde_json::Value,
    pub enrolled_at: DateTime<Utc>,
    /// (tier group, tier) per group the member has a standing in.
    pub tiers: Vec<(String, String)>,
    /// (currency, available, pending) as recorded by the last journal or job run.
    pub balances: Vec<(String, i64, i64)>,
}

/// A page of members and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    pub members: Vec<MemberListing>,
    pub next: Option<MemberCursor>,
}

/// A value bound to a list query, in the order of its placeholders.
enum Arg {
    Int(i64),
    Text(String),
    Time(DateTime<Utc>),
}

/// The terms rows to insert for members just enrolled.
pub(crate) fn term_rows<'a>(
    members: impl IntoIterator<Item = (i64, &'a str, &'a serde_json::Value)>,
) -> Vec<(i64, String)> {
    members
        .into_iter()
        .flat_map(|(id, external_id, profile)| {
            search_terms(external_id, profile)
                .into_iter()
                .map(move |t| (id, t))
        })
        .collect()
}

pub(crate) async fn insert_terms_sqlite(
    conn: &mut sqlx::SqliteConnection,
    program_id: i64,
    rows: &[(i64, String)],
) -> Result<()> {
    for chunk in rows.chunks(5_000) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO member_terms (program_id, term, member_id) ",
        );
        q.push_values(chunk, |mut b, (member, term)| {
            b.push_bind(program_id)
                .push_bind(term.as_str())
                .push_bind(*member);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn insert_terms_postgres(
    conn: &mut sqlx::PgConnection,
    program_id: i64,
    rows: &[(i64, String)],
) -> Result<()> {
    for chunk in rows.chunks(20_000) {
        sqlx::query(
            "INSERT INTO member_terms (program_id, term, member_id) \
             SELECT $1, t, m FROM unnest($2::text[], $3::bigint[]) AS u(t, m) ON CONFLICT DO NOTHING",
        )
        .bind(program_id)
        .bind(chunk.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.0).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Fills in the search terms of members enrolled before the terms existed (once, after
    /// the migration that added them; a database that had no members then has none to do).
    /// [`Store::connect`] calls it.
    #[doc(hidden)]
    pub async fn finish_member_terms(&self) -> Result<()> {
        const BATCH: i64 = 5_000;
        let done: Option<String> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT name FROM store_upgrades WHERE name = 'member_terms'")
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT name FROM store_upgrades WHERE name = 'member_terms'")
                    .fetch_optional(pool)
                    .await?
            }
        };
        if done.is_some() {
            return Ok(());
        }
        let mut after = 0i64;
        loop {
            type Raw = (i64, i64, String, String);
            let batch: Vec<Raw> = match &self.db {
                Db::Sqlite(pool) => sqlx::query_as(
                    "SELECT id, program_id, external_id, profile FROM members WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .bind(after)
                .bind(BATCH)
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT id, program_id, external_id, profile::text FROM members WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(BATCH)
                .fetch_all(pool)
                .await?,
            };
            let Some(last) = batch.last() else { break };
            after = last.0;
            let mut by_program: std::collections::BTreeMap<i64, Vec<(i64, String)>> =
                std::collections::BTreeMap::new();
            for (id, program, external_id, profile) in &batch {
                let profile: serde_json::Value = serde_json::from_str(profile)?;
                by_program.entry(*program).or_default().extend(term_rows([(
                    *id,
                    external_id.as_str(),
                    &profile,
                )]));
            }
            for (program, rows) in by_program {
                match &self.db {
                    Db::Sqlite(pool) => {
                        insert_terms_sqlite(&mut *pool.acquire().await?, program, &rows).await?
                    }
                    Db::Postgres(pool) => {
                        insert_terms_postgres(&mut *pool.acquire().await?, program, &rows).await?
                    }
                }
            }
        }
        let mark =
            "INSERT INTO store_upgrades (name) VALUES ('member_terms') ON CONFLICT DO NOTHING";
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query(mark).execute(pool).await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(mark).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Puts the database back where a migration from before search leaves it: no terms,
    /// the upgrade not done (for the upgrade's test).
    #[doc(hidden)]
    pub async fn forget_member_terms_for_test(&self) -> Result<()> {
        for sql in [
            "DELETE FROM member_terms",
            "DELETE FROM store_upgrades WHERE name = 'member_terms'",
        ] {
            match &self.db {
                Db::Sqlite(pool) => {
                    sqlx::query(sql).execute(pool).await?;
                }
                Db::Postgres(pool) => {
                    sqlx::query(sql).execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    /// Brings PostgreSQL's planner statistics up to date, as autovacuum would some time
    /// after a bulk load (a benchmark that enrols a million members and queries at once
    /// would otherwise measure plans made without them). SQLite keeps none unless asked.
    #[doc(hidden)]
    pub async fn analyze_for_bench(&self) -> Result<()> {
        if let Db::Postgres(pool) = &self.db {
            sqlx::query("ANALYZE").execute(pool).await?;
        }
        Ok(())
    }

    /// A page of the program's members matching `query`.
    pub async fn list_members(
        &self,
        program: &LoadedProgram,
        query: &MemberQuery,
    ) -> Result<MemberPage> {
        let p = &program.program;
        query.check(program)?;
        let postgres = matches!(self.db, Db::Postgres(_));
        let mut args: Vec<Arg> = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            if postgres {
                format!("${}", args.len())
            } else {
                format!("?{}", args.len())
            }
        };
        let time = |t: DateTime<Utc>| {
            if postgres {
                Arg::Time(t)
            } else {
                Arg::Int(micros(t))
            }
        };

        let profile = if postgres {
            "m.profile::text"
        } else {
            "m.profile"
        };
        let program_arg = arg(Arg::Int(program.id));
        // A search starts from the terms' index (the members whose terms match every word,
        // few as a rule) and sorts them; without one, the sort order's index is walked.
        // SQLite is held to that order with CROSS JOIN: its planner would otherwise walk
        // the sort index and test every member against the matches.
        let hits = match &query.search {
            None => None,
            Some(search) => {
                // The longest word drives (the fewest members, as a rule); every other
                // word is checked on the driver's few members through their own terms.
                let mut words: Vec<&String> = search.prefixes.iter().collect();
                words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
                let mut range = |column: &str, prefix: &str| {
                    let lower = arg(Arg::Text(prefix.to_owned()));
                    match upper_bound(prefix) {
                        Some(u) => {
                            format!("{column} >= {lower} AND {column} < {}", arg(Arg::Text(u)))
                        }
                        None => format!("{column} >= {lower}"),
                    }
                };
                let mut sql = format!(
                    "SELECT DISTINCT d.member_id FROM member_terms d WHERE d.program_id = {program_arg} AND {}",
                    range("d.term", words[0])
                );
                for word in &words[1..] {
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM member_terms o WHERE o.member_id = d.member_id AND {})",
                        range("o.term", word)
                    ));
                }
                Some(sql)
            }
        };
        let mut sql = match hits {
            None => format!(
                "SELECT m.id, m.external_id, m.status, {profile}, m.enrolled_at FROM members m"
            ),
            Some(hits) => {
                let join = if postgres { "JOIN" } else { "CROSS JOIN" };
                format!(
                    "SELECT m.id, m.external_id, m.status, {profile}, m.enrolled_at \
                     FROM ({hits}) h {join} members m ON m.id = h.member_id"
                )
            }
        };
        if query.balance_min.is_some() || query.balance_max.is_some() {
            let currency = match &query.currency {
                Some(c) => c.clone(),
                None => p
                    .currencies
                    .first()
                    .map(|c| c.code.to_string())
                    .unwrap_or_default(),
            };
            sql.push_str(&format!(
                " LEFT JOIN accounts a ON a.member_id = m.id AND a.currency = {}",
                arg(Arg::Text(currency))
            ));
        }
        sql.push_str(&format!(" WHERE m.program_id = {program_arg}"));
        if let Some(status) = query.status {
            sql.push_str(&format!(
                " AND m.status = {}",
                arg(Arg::Text(status.name().into()))
            ));
        }
        if let Some(from) = query.enrolled_from {
            sql.push_str(&format!(" AND m.enrolled_at >= {}", arg(time(from))));
        }
        if let Some(until) = query.enrolled_until {
            sql.push_str(&format!(" AND m.enrolled_at < {}", arg(time(until))));
        }
        if let Some(min) = query.balance_min {
            sql.push_str(&format!(
                " AND COALESCE(a.available, 0) >= {}",
                arg(Arg::Int(min))
            ));
        }
        if let Some(max) = query.balance_max {
            sql.push_str(&format!(
                " AND COALESCE(a.available, 0) <= {}",
                arg(Arg::Int(max))
            ));
        }
        if let Some(tier) = &query.tier {
            let first_of_a_group = p
                .tier_groups
                .iter()
                .any(|g| g.tiers.first().is_some_and(|t| t.code.as_str() == tier));
            let code = arg(Arg::Text(tier.clone()));
            let held = if postgres {
                format!(
                    "(t.state::jsonb -> 'groups') @> jsonb_build_array(jsonb_build_object('tier', {code}::text))"
                )
            } else {
                format!(
                    "EXISTS (SELECT 1 FROM json_each(t.state, '$.groups') g WHERE json_extract(g.value, '$.tier') = {code})"
                )
            };
            // Tier standings are read for the page afterwards: joining them here would
            // keep PostgreSQL from walking the sort index (a hash join loses the order).
            let standing = "SELECT 1 FROM member_tiers t WHERE t.member_id = m.id";
            if first_of_a_group {
                sql.push_str(&format!(
                    " AND (NOT EXISTS ({standing}) OR EXISTS ({standing} AND {held}))"
                ));
            } else {
                sql.push_str(&format!(" AND EXISTS ({standing} AND {held})"));
            }
        }
        if let Some(after) = &query.after {
            let desc = matches!(
                query.sort,
                MemberSort::ExternalIdDesc | MemberSort::EnrolledDesc
            );
            let op = if desc { "<" } else { ">" };
            match after {
                MemberCursor::ExternalId(id) => {
                    sql.push_str(&format!(
                        " AND m.external_id {op} {}",
                        arg(Arg::Text(id.clone()))
                    ));
                }
                MemberCursor::Enrolled(at, id) => {
                    let at = arg(time(*at));
                    let id = arg(Arg::Int(*id));
                    sql.push_str(&format!(
                        " AND (m.enrolled_at {op} {at} OR (m.enrolled_at = {at} AND m.id {op} {id}))"
                    ));
                }
            }
        }
        sql.push_str(match query.sort {
            MemberSort::ExternalId => " ORDER BY m.external_id",
            MemberSort::ExternalIdDesc => " ORDER BY m.external_id DESC",
            MemberSort::Enrolled => " ORDER BY m.enrolled_at, m.id",
            MemberSort::EnrolledDesc => " ORDER BY m.enrolled_at DESC, m.id DESC",
        });
        let limit = query.limit.clamp(1, 1_000);
        sql.push_str(&format!(" LIMIT {}", arg(Arg::Int(limit))));

        // (id, external id, status, profile, enrolled at)
        type Found = (i64, String, String, String, DateTime<Utc>);
        let rows: Vec<Found> = match &self.db {
            Db::Sqlite(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for a in args {
                    q = match a {
                        Arg::Int(i) => q.bind(i),
                        Arg::Text(t) => q.bind(t),
                        Arg::Time(t) => q.bind(micros(t)),
                    };
                }
                q.fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            instant(r.try_get(4)?)?,
                        ))
                    })
                    .collect::<Result<_>>()?
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for a in args {
                    q = match a {
                        Arg::Int(i) => q.bind(i),
                        Arg::Text(t) => q.bind(t),
                        Arg::Time(t) => q.bind(t),
                    };
                }
                q.fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                        ))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let accounts: Vec<(i64, String, i64, i64)> = if ids.is_empty() {
            Vec::new()
        } else {
            match &self.db {
                Db::Sqlite(pool) => sqlx::query_as(
                    "SELECT member_id, currency, available, pending FROM accounts \
                     WHERE member_id IN (SELECT value FROM json_each(?1)) ORDER BY member_id, currency",
                )
                .bind(serde_json::to_string(&ids)?)
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT member_id, currency, available, pending FROM accounts \
                     WHERE member_id = ANY($1) ORDER BY member_id, currency",
                )
                .bind(&ids)
                .fetch_all(pool)
                .await?,
            }
        };
        let states: Vec<(i64, String)> = if ids.is_empty() {
            Vec::new()
        } else {
            match &self.db {
                Db::Sqlite(pool) => sqlx::query_as(
                    "SELECT member_id, state FROM member_tiers WHERE member_id IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(&ids)?)
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT member_id, state FROM member_tiers WHERE member_id = ANY($1)",
                )
                .bind(&ids)
                .fetch_all(pool)
                .await?,
            }
        };
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last())
            .flatten()
            .map(|last| match query.sort {
                MemberSort::ExternalId | MemberSort::ExternalIdDesc => {
                    MemberCursor::ExternalId(last.1.clone())
                }
                MemberSort::Enrolled | MemberSort::EnrolledDesc => {
                    MemberCursor::Enrolled(last.4, last.0)
                }
            });
        let members = rows
            .into_iter()
            .map(|(id, external_id, raw_status, profile, enrolled_at)| {
                let state = states.iter().find(|s| s.0 == id).map(|s| s.1.as_str());
                let status = MemberStatus::parse(&raw_status).ok_or_else(|| {
                    StoreError::Inconsistent(format!("member status {raw_status:?}"))
                })?;
                let tiers = match state {
                    Some(state) => {
                        let standing: fidelis_core::tiers::MemberTiers =
                            serde_json::from_str(state)?;
                        standing
                            .groups
                            .into_iter()
                            .map(|g| (g.group, g.tier))
                            .collect()
                    }
                    None => p
                        .tier_groups
                        .iter()
                        .filter_map(|g| {
                            Some((g.code.to_string(), g.tiers.first()?.code.to_string()))
                        })
                        .collect(),
                };
                Ok(MemberListing {
                    balances: accounts
                        .iter()
                        .filter(|a| a.0 == id)
                        .map(|a| (a.1.clone(), a.2, a.3))
                        .collect(),
                    external_id,
                    status,
                    profile: serde_json::from_str(&profile)?,
                    enrolled_at,
                    tiers,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MemberPage { members, next })
    }
}
