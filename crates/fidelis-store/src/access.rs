//! Access and accountability: API tokens (stored hashed), users (argon2 password hashes,
//! hashed by the caller), and the append-only audit log.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// A token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub program: Option<String>,
    pub partner: Option<String>,
    pub member: Option<String>,
    /// Comma-separated permissions the token is limited to; `None`: all of its role's.
    pub scopes: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

/// What creating a token takes. `token_hash` is the hex SHA-256 of the token.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub token_hash: String,
    pub role: String,
    pub program: Option<String>,
    pub partner: Option<String>,
    pub member: Option<String>,
    pub scopes: Option<String>,
}

/// A user of the web pages. `password_hash` is an argon2 PHC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub program: Option<String>,
    pub partner: Option<String>,
    pub member: Option<String>,
}

/// Who makes an administrative change: a token's or user's name, and the role it acted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: String,
}

impl Actor {
    /// The command line, run by whoever has the database.
    pub fn cli() -> Self {
        Self {
            name: "cli".into(),
            role: "admin".into(),
        }
    }

    /// The scheduled jobs, whoever started them (what they award is audited as theirs).
    pub fn jobs() -> Self {
        Self {
            name: "jobs".into(),
            role: "system".into(),
        }
    }

    /// An entry of this actor's change.
    pub fn entry(
        &self,
        at: DateTime<Utc>,
        action: &str,
        program: Option<&str>,
        subject: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            at,
            actor: self.name.clone(),
            role: self.role.clone(),
            action: action.to_owned(),
            program: program.map(str::to_owned),
            subject: subject.map(str::to_owned),
            before: None,
            after: None,
        }
    }
}

/// One administrative change: who, when, what, before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub program: Option<String>,
    pub subject: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Which audit entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub program: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Only entries about this subject (a member's external id, a token's id…).
    pub subject: Option<String>,
    /// Entries older than this id (the previous page's last).
    pub before_id: Option<i64>,
    pub limit: i64,
}

const TOKEN_COLUMNS: &str =
    "id, name, role, program, partner, member, scopes, created_at, revoked_at";

pub(crate) fn json_text(value: &Option<serde_json::Value>) -> Result<Option<String>> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::from)
}

/// Writes an audit entry in a transaction of either dialect (one statement serves both:
/// see `dialect`).
macro_rules! insert_audit {
    ($tx:expr, $entry:expr) => {{
        let e: &$crate::access::AuditEntry = $entry;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, role, action, program, subject, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($crate::dialect::At(e.at))
        .bind(&e.actor)
        .bind(&e.role)
        .bind(&e.action)
        .bind(&e.program)
        .bind(&e.subject)
        .bind($crate::access::json_text(&e.before)?)
        .bind($crate::access::json_text(&e.after)?)
        .execute(&mut *$tx)
        .await?
    }};
}
pub(crate) use insert_audit;

impl Store {
    /// Creates a token (the caller keeps the token; only its hash is stored), and audits it.
    pub async fn create_token(&self, token: &NewToken, audit: &AuditEntry) -> Result<TokenRecord> {
        let id: i64 = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let id = sqlx::query_scalar(
                    "INSERT INTO api_tokens (name, token_hash, role, program, partner, member, scopes, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                )
                .bind(&token.name)
                .bind(&token.token_hash)
                .bind(&token.role)
                .bind(&token.program)
                .bind(&token.partner)
                .bind(&token.member)
                .bind(&token.scopes)
                .bind(micros(audit.at))
                .fetch_one(&mut *tx)
                .await?;
                insert_audit!(tx, audit);
                tx.commit().await?;
                id
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let id = sqlx::query_scalar(
                    "INSERT INTO api_tokens (name, token_hash, role, program, partner, member, scopes, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(&token.name)
                .bind(&token.token_hash)
                .bind(&token.role)
                .bind(&token.program)
                .bind(&token.partner)
                .bind(&token.member)
                .bind(&token.scopes)
                .bind(audit.at)
                .fetch_one(&mut *tx)
                .await?;
                insert_audit!(tx, audit);
                tx.commit().await?;
                id
            }
        };
        Ok(TokenRecord {
            id,
            name: token.name.clone(),
            role: token.role.clone(),
            program: token.program.clone(),
            partner: token.partner.clone(),
            member: token.member.clone(),
            scopes: token.scopes.clone(),
            created_at: audit.at,
            revoked: false,
        })
    }

    /// Makes sure a token with this name exists with this hash and role (the bootstrap
    /// admin token from the environment): inserted, or its hash replaced.
    pub async fn ensure_token(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("DELETE FROM api_tokens WHERE name = ?1 AND token_hash <> ?2")
                    .bind(name)
                    .bind(token_hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO api_tokens (name, token_hash, role, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(name)
                .bind(token_hash)
                .bind(role)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("DELETE FROM api_tokens WHERE name = $1 AND token_hash <> $2")
                    .bind(name)
                    .bind(token_hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO api_tokens (name, token_hash, role, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(name)
                .bind(token_hash)
                .bind(role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The ids and hashes of every token (revoked ones too) with an id above `after`, in
    /// id order: what a process learns of tokens created since it last asked.
    pub async fn token_hashes_after(&self, after: i64) -> Result<Vec<(i64, String)>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as("SELECT id, token_hash FROM api_tokens WHERE id > ?1 ORDER BY id")
                    .bind(after)
                    .fetch_all(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as("SELECT id, token_hash FROM api_tokens WHERE id > $1 ORDER BY id")
                    .bind(after)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// The live (not revoked) token with this hash.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let sql_sqlite = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
        );
        let sql_pg = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        match &self.db {
            Db::Sqlite(pool) => {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql_sqlite))
                    .bind(token_hash)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    token_row(
                        &r,
                        instant(r.try_get(7)?)?,
                        r.try_get::<Option<i64>, _>(8)?.is_some(),
                    )
                })
                .transpose()
            }
            Db::Postgres(pool) => {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql_pg))
                    .bind(token_hash)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    token_row(
                        &r,
                        r.try_get(7)?,
                        r.try_get::<Option<DateTime<Utc>>, _>(8)?.is_some(),
                    )
                })
                .transpose()
            }
        }
    }

    /// Every token (revoked ones too), by id.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id");
        match &self.db {
            Db::Sqlite(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        token_row(
                            r,
                            instant(r.try_get(7)?)?,
                            r.try_get::<Option<i64>, _>(8)?.is_some(),
                        )
                    })
                    .collect()
            }
            Db::Postgres(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        token_row(
                            r,
                            r.try_get(7)?,
                            r.try_get::<Option<DateTime<Utc>>, _>(8)?.is_some(),
                        )
                    })
                    .collect()
            }
        }
    }

    /// Revokes a token; false if there is no live token with this id.
    pub async fn revoke_token(&self, id: i64, audit: &AuditEntry) -> Result<bool> {
        let revoked = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let n = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                )
                .bind(micros(audit.at))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    insert_audit!(tx, audit);
                }
                tx.commit().await?;
                n > 0
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let n = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(audit.at)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    insert_audit!(tx, audit);
                }
                tx.commit().await?;
                n > 0
            }
        };
        Ok(revoked)
    }

    /// Whether any token exists (a fresh deployment has none).
    pub async fn has_tokens(&self) -> Result<bool> {
        let n: i64 = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(n > 0)
    }

    /// Creates a user; refuses an email already taken.
    pub async fn create_user(&self, user: &UserRecord, now: DateTime<Utc>) -> Result<i64> {
        // One user per address whatever its case: stored lower-cased.
        let email = user.email.trim().to_lowercase();
        let result: std::result::Result<i64, sqlx::Error> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(
                "INSERT INTO users (email, password_hash, role, program, partner, member, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            )
            .bind(&email)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(&user.program)
            .bind(&user.partner)
            .bind(&user.member)
            .bind(micros(now))
            .fetch_one(pool)
            .await,
            Db::Postgres(pool) => sqlx::query_scalar(
                "INSERT INTO users (email, password_hash, role, program, partner, member, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(&email)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(&user.program)
            .bind(&user.partner)
            .bind(&user.member)
            .bind(now)
            .fetch_one(pool)
            .await,
        };
        match result {
            Ok(id) => Ok(id),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("user {:?} exists", user.email),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The user with this email address, in any case (addresses are stored lower-cased).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let email = email.trim().to_lowercase();
        let row = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as::<_, (i64, String, String, String, Option<String>, Option<String>, Option<String>)>(
                "SELECT id, email, password_hash, role, program, partner, member FROM users WHERE email = ?1",
            )
            .bind(&email)
            .fetch_optional(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT id, email, password_hash, role, program, partner, member FROM users WHERE email = $1",
            )
            .bind(&email)
            .fetch_optional(pool)
            .await?,
        };
        Ok(row.map(
            |(id, email, password_hash, role, program, partner, member)| UserRecord {
                id,
                email,
                password_hash,
                role,
                program,
                partner,
                member,
            },
        ))
    }

    /// Appends an audit entry on its own (for changes whose own record is elsewhere, such
    /// as a journal).
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                insert_audit!(conn, entry);
            }
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                insert_audit!(conn, entry);
            }
        }
        Ok(())
    }

    /// Audit entries matching the filter, newest first, with their ids.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<(i64, AuditEntry)>> {
        let limit = filter.limit.clamp(1, 1_000);
        let before = filter.before_id.unwrap_or(i64::MAX);
        let filters = audit_filters(filter);
        type Raw = (
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (rows, ats): (Vec<Raw>, Vec<DateTime<Utc>>) = match &self.db {
            Db::Sqlite(pool) => {
                let sql = audit_sql(&filters, |n| format!("?{n}"));
                let mut query = sqlx::query_as::<
                    _,
                    (
                        i64,
                        i64,
                        String,
                        String,
                        String,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                    ),
                >(sqlx::AssertSqlSafe(sql))
                .bind(before);
                for (_, value) in &filters {
                    query = query.bind(*value);
                }
                let rows = query.bind(limit).fetch_all(pool).await?;
                let ats = rows
                    .iter()
                    .map(|r| instant(r.1))
                    .collect::<Result<Vec<_>>>()?;
                (
                    rows.into_iter()
                        .map(|r| (r.0, r.2, r.3, r.4, r.5, r.6, r.7, r.8))
                        .collect(),
                    ats,
                )
            }
            Db::Postgres(pool) => {
                let sql = audit_sql(&filters, |n| format!("${n}"));
                let mut query = sqlx::query_as::<
                    _,
                    (
                        i64,
                        DateTime<Utc>,
                        String,
                        String,
                        String,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                    ),
                >(sqlx::AssertSqlSafe(sql))
                .bind(before);
                for (_, value) in &filters {
                    query = query.bind(*value);
                }
                let rows = query.bind(limit).fetch_all(pool).await?;
                let ats = rows.iter().map(|r| r.1).collect();
                (
                    rows.into_iter()
                        .map(|r| (r.0, r.2, r.3, r.4, r.5, r.6, r.7, r.8))
                        .collect(),
                    ats,
                )
            }
        };
        let parse = |s: Option<String>| s.map(|s| serde_json::from_str(&s)).transpose();
        rows.into_iter()
            .zip(ats)
            .map(
                |((id, actor, role, action, program, subject, before, after), at)| {
                    Ok((
                        id,
                        AuditEntry {
                            at,
                            actor,
                            role,
                            action,
                            program,
                            subject,
                            before: parse(before)?,
                            after: parse(after)?,
                        },
                    ))
                },
            )
            .collect()
    }
}

/// The audit filters given, as (column, value): only these become conditions, so each
/// query is one an index on (column, id) answers — a `? IS NULL OR column = ?` condition
/// cannot use one.
fn audit_filters(filter: &AuditFilter) -> Vec<(&'static str, &str)> {
    [
        ("program", filter.program.as_deref()),
        ("actor", filter.actor.as_deref()),
        ("action", filter.action.as_deref()),
        ("subject", filter.subject.as_deref()),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v)))
    .collect()
}

/// The audit query for these filters, `mark(n)` writing the dialect's n-th placeholder:
/// `id < 1st`, each filter's column equal to the next, `LIMIT` the last.
fn audit_sql(filters: &[(&'static str, &str)], mark: impl Fn(usize) -> String) -> String {
    let mut sql = format!(
        "SELECT id, at, actor, role, action, program, subject, before, after FROM audit_log WHERE id < {}",
        mark(1)
    );
    for (i, (column, _)) in filters.iter().enumerate() {
        sql.push_str(&format!(" AND {column} = {}", mark(i + 2)));
    }
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT {}",
        mark(filters.len() + 2)
    ));
    sql
}

fn token_row<R: Row>(r: &R, created_at: DateTime<Utc>, revoked: bool) -> Result<TokenRecord>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TokenRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: r.try_get(2)?,
        program: r.try_get(3)?,
        partner: r.try_get(4)?,
        member: r.try_get(5)?,
        scopes: r.try_get(6)?,
        created_at,
        revoked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of the audit query with each single filter, on SQLite and PostgreSQL:
    /// it reads an index, not the whole log.
    #[tokio::test]
    async fn every_audit_filter_is_answered_by_an_index() {
        let sqlite = fidelis_testkit::sqlite_db();
        for url in [sqlite.url.clone(), fidelis_testkit::pg_url()] {
            let store = Store::connect(&url).await.expect("the store connects");
            for column in ["program", "actor", "action"] {
                let filters = [(column, "x")];
                let plan: String = match &store.db {
                    Db::Sqlite(pool) => {
                        let sql = format!(
                            "EXPLAIN QUERY PLAN {}",
                            audit_sql(&filters, |n| format!("?{n}"))
                        );
                        let rows: Vec<(i64, i64, i64, String)> =
                            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                                .bind(i64::MAX)
                                .bind("x")
                                .bind(10_i64)
                                .fetch_all(pool)
                                .await
                                .expect("EXPLAIN answers");
                        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
                    }
                    Db::Postgres(pool) => {
                        let mut conn = pool.acquire().await.expect("a pooled connection");
                        sqlx::query("SET enable_seqscan = off")
                            .execute(&mut *conn)
                            .await
                            .expect("the setting is accepted");
                        let sql = format!("EXPLAIN {}", audit_sql(&filters, |n| format!("${n}")));
                        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .bind(i64::MAX)
                            .bind("x")
                            .bind(10_i64)
                            .fetch_all(&mut *conn)
                            .await
                            .expect("EXPLAIN answers");
                        sqlx::query("RESET enable_seqscan")
                            .execute(&mut *conn)
                            .await
                            .expect("the setting is reset");
                        rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("; ")
                    }
                };
                assert!(
                    plan.contains(&format!("audit_log_{column}")),
                    "{url} filtering by {column}: {plan}"
                );
            }
        }
    }
}
