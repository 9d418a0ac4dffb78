//! Sign-in for the pages: browser sessions, members' portal passwords and the one-time
//! links that set them. The web crate makes the secrets and hashes them; this module only
//! keeps hashes.

use chrono::{DateTime, Utc};

use crate::access::UserRecord;
use crate::error::Result;
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// A session to start: a staff user's (`user_id`) or a member's (`program` and `member`).
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the cookie's random id.
    pub id_hash: String,
    pub user_id: Option<i64>,
    pub program: Option<String>,
    pub member: Option<String>,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The staff user, as stored now.
    pub user: Option<UserRecord>,
    /// A member session's program and member (external id).
    pub program: Option<String>,
    pub member: Option<String>,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A session row: program, member, csrf, then the user's id, email, password hash, role,
/// program, partner and member, then the expiry (an instant in each dialect's type).
type SessionRow<At> = (
    Option<String>,
    Option<String>,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    At,
);

const SESSION_SELECT: &str = "SELECT s.program, s.member, s.csrf, u.id, u.email, u.password_hash, u.role, u.program, u.partner, u.member, s.expires_at \
     FROM web_sessions s LEFT JOIN users u ON u.id = s.user_id";

fn session_record<At>(row: SessionRow<At>, expires_at: DateTime<Utc>) -> SessionRecord {
    let (program, member, csrf, id, email, hash, role, u_program, u_partner, u_member, _) = row;
    let user = match (id, email, hash, role) {
        (Some(id), Some(email), Some(password_hash), Some(role)) => Some(UserRecord {
            id,
            email,
            password_hash,
            role,
            program: u_program,
            partner: u_partner,
            member: u_member,
        }),
        _ => None,
    };
    SessionRecord {
        user,
        program,
        member,
        csrf,
        expires_at,
    }
}

impl Store {
    /// Starts a session (and forgets sessions that expired before it began).
    pub async fn create_session(&self, session: &NewSession) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("DELETE FROM web_sessions WHERE expires_at < ?1")
                    .bind(micros(session.created_at))
                    .execute(pool)
                    .await?;
                sqlx::query(
                    "INSERT INTO web_sessions (id_hash, user_id, program, member, csrf, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .bind(&session.id_hash)
                .bind(session.user_id)
                .bind(&session.program)
                .bind(&session.member)
                .bind(&session.csrf)
                .bind(micros(session.created_at))
                .bind(micros(session.expires_at))
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
                    .bind(session.created_at)
                    .execute(pool)
                    .await?;
                sqlx::query(
                    "INSERT INTO web_sessions (id_hash, user_id, program, member, csrf, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&session.id_hash)
                .bind(session.user_id)
                .bind(&session.program)
                .bind(&session.member)
                .bind(&session.csrf)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The session with this id hash, if it exists and has not expired at `now`.
    pub async fn session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let sql = format!("{SESSION_SELECT} WHERE s.id_hash = ?1 AND s.expires_at > ?2");
                let row: Option<SessionRow<i64>> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(id_hash)
                    .bind(micros(now))
                    .fetch_optional(pool)
                    .await?;
                match row {
                    Some(row) => {
                        let expires = instant(row.10)?;
                        Some(session_record(row, expires))
                    }
                    None => None,
                }
            }
            Db::Postgres(pool) => {
                let sql = format!("{SESSION_SELECT} WHERE s.id_hash = $1 AND s.expires_at > $2");
                let row: Option<SessionRow<DateTime<Utc>>> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(id_hash)
                        .bind(now)
                        .fetch_optional(pool)
                        .await?;
                row.map(|row| {
                    let expires = row.10;
                    session_record(row, expires)
                })
            }
        })
    }

    /// Ends a session (signing out); ending one that does not exist is not an error.
    pub async fn end_session(&self, id_hash: &str) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?1")
                    .bind(id_hash)
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records a one-time link that lets member row `member_id` set a portal password.
    pub async fn create_signin_link(
        &self,
        member_id: i64,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO signin_links (token_hash, member_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(token_hash)
                .bind(member_id)
                .bind(micros(now))
                .bind(micros(expires_at))
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO signin_links (token_hash, member_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(token_hash)
                .bind(member_id)
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The member row a one-time link is for, if it is unused and unexpired at `now`
    /// (without using it).
    pub async fn signin_link(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(
                "SELECT member_id FROM signin_links WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            )
            .bind(token_hash)
            .bind(micros(now))
            .fetch_optional(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_scalar(
                "SELECT member_id FROM signin_links WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?,
        })
    }

    /// Uses a one-time link to set its member's portal password: once only (a second use,
    /// even concurrent, finds it used and changes nothing). Answers the member row, or
    /// `None` when the link is unknown, used or expired.
    pub async fn use_signin_link(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let member: Option<i64> = sqlx::query_scalar(
                    "UPDATE signin_links SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
                     RETURNING member_id",
                )
                .bind(token_hash)
                .bind(micros(now))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(member) = member {
                    sqlx::query(
                        "INSERT INTO member_credentials (member_id, password_hash, updated_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (member_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                    )
                    .bind(member)
                    .bind(password_hash)
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                member
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let member: Option<i64> = sqlx::query_scalar(
                    "UPDATE signin_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING member_id",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(member) = member {
                    sqlx::query(
                        "INSERT INTO member_credentials (member_id, password_hash, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (member_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                    )
                    .bind(member)
                    .bind(password_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                member
            }
        })
    }

    /// A member row's portal password hash, if one was set.
    pub async fn member_password(&self, member_id: i64) -> Result<Option<String>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT password_hash FROM member_credentials WHERE member_id = ?1",
                )
                .bind(member_id)
                .fetch_optional(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT password_hash FROM member_credentials WHERE member_id = $1",
                )
                .bind(member_id)
                .fetch_optional(pool)
                .await?
            }
        })
    }

    /// The program code and external id of a member row.
    pub async fn member_key(&self, member_id: i64) -> Result<Option<(String, String)>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT p.code, m.external_id FROM members m JOIN programs p ON p.id = m.program_id WHERE m.id = ?1",
            )
            .bind(member_id)
            .fetch_optional(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT p.code, m.external_id FROM members m JOIN programs p ON p.id = m.program_id WHERE m.id = $1",
            )
            .bind(member_id)
            .fetch_optional(pool)
            .await?,
        })
    }

    /// Sets a user's password hash; answers whether the user exists.
    pub async fn set_user_password(&self, email: &str, password_hash: &str) -> Result<bool> {
        let email = email.trim().to_lowercase();
        let n = match &self.db {
            Db::Sqlite(pool) => sqlx::query("UPDATE users SET password_hash = ?2 WHERE email = ?1")
                .bind(&email)
                .bind(password_hash)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Postgres(pool) => {
                sqlx::query("UPDATE users SET password_hash = $2 WHERE email = $1")
                    .bind(&email)
                    .bind(password_hash)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(n > 0)
    }

    /// Every user (staff and others), by email.
    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        let rows: Vec<(i64, String, String, String, Option<String>, Option<String>, Option<String>)> =
            match &self.db {
                Db::Sqlite(pool) => sqlx::query_as(
                    "SELECT id, email, password_hash, role, program, partner, member FROM users ORDER BY email",
                )
                .fetch_all(pool)
                .await?,
                Db::Postgres(pool) => sqlx::query_as(
                    "SELECT id, email, password_hash, role, program, partner, member FROM users ORDER BY email",
                )
                .fetch_all(pool)
                .await?,
            };
        Ok(rows
            .into_iter()
            .map(
                |(id, email, password_hash, role, program, partner, member)| UserRecord {
                    id,
                    email,
                    password_hash,
                    role,
                    program,
                    partner,
                    member,
                },
            )
            .collect())
    }
}
