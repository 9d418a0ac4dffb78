//! Members: enrollment, profile and status.

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::ledger::MemberStatus;
use sqlx::Row;

use crate::access::{Actor, AuditEntry, insert_audit};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::rows::LedgerTx;
use crate::sqlite::{instant, micros};
use crate::{Db, Store, in_ledger_tx, postgres, sqlite};

mod search;
pub use search::{MemberCursor, MemberListing, MemberPage, MemberQuery, MemberSort};
use search::{insert_terms_postgres, insert_terms_sqlite, term_rows};

/// What enrolling a member takes.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub external_id: ExternalId,
    /// Name, email, phone, birth date, custom attributes: a JSON object.
    pub profile: serde_json::Value,
    pub enrolled_at: DateTime<Utc>,
}

/// Why `value` cannot be stored as JSON on both databases, if it cannot: PostgreSQL's
/// `jsonb` (profiles, program definitions) holds no U+0000 in a string or a key, and it
/// keeps numbers as decimals, which for magnitudes near the largest double do not read back
/// as one; neither database takes such a value, so the behaviour is the same on both.
pub fn unstorable_json(value: &serde_json::Value) -> Option<&'static str> {
    use serde_json::Value;
    let nul = |s: &str| s.contains('\0');
    let found = match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > 1e300) => {
            return Some("a number beyond ±1e300 cannot be stored exactly");
        }
        Value::String(s) => nul(s),
        Value::Array(items) => return items.iter().find_map(unstorable_json),
        Value::Object(fields) => {
            if fields.keys().any(|k| nul(k)) {
                true
            } else {
                return fields.values().find_map(unstorable_json);
            }
        }
        _ => false,
    };
    found.then_some("a text holds U+0000 (NUL), which cannot be stored")
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub id: i64,
    pub external_id: String,
    pub status: MemberStatus,
    pub profile: serde_json::Value,
    pub enrolled_at: DateTime<Utc>,
    /// The code others enrol with to be referred by this member.
    pub referral_code: Option<String>,
    /// The member who referred this one.
    pub referred_by: Option<String>,
    /// For a merged member: the survivor.
    pub merged_into: Option<String>,
    /// The group (household) the member belongs to.
    pub group: Option<String>,
}

/// A new referral code (and claim id's tail): ten characters without look-alikes (about
/// 50 bits).
pub(crate) fn referral_code() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

const MEMBER_COLUMNS: &str = "m.id, m.external_id, m.status, m.profile, m.enrolled_at, m.referral_code, \
     (SELECT r.external_id FROM members r WHERE r.id = m.referred_by), \
     (SELECT s.external_id FROM members s WHERE s.id = m.merged_into), \
     (SELECT g.external_id FROM members g WHERE g.id = m.group_id AND g.id <> m.id)";

fn status(raw: &str) -> Result<MemberStatus> {
    MemberStatus::parse(raw)
        .ok_or_else(|| StoreError::Inconsistent(format!("member status {raw:?}")))
}

impl Store {
    /// Enrolls a member. Refuses an external id already enrolled in the program.
    pub async fn enroll(
        &self,
        program: &LoadedProgram,
        enrollment: &Enrollment,
        now: DateTime<Utc>,
    ) -> Result<MemberView> {
        self.enroll_referred(program, enrollment, None, now).await
    }

    /// Enrolls a member, referred by the member whose referral code is given (refused,
    /// changing nothing, when no member of the program has it). The new member gets a
    /// referral code of their own.
    pub async fn enroll_referred(
        &self,
        program: &LoadedProgram,
        enrollment: &Enrollment,
        referral: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<MemberView> {
        self.enroll_with_consents(program, enrollment, referral, &[], now)
            .await
    }

    /// Enrolls a member (referred, when a referral code is given) and records the member's
    /// consents per channel (`email`, `sms`, `push`), dated `now`, in the same transaction
    /// — so the welcome message of a member who consented is made.
    pub async fn enroll_with_consents(
        &self,
        program: &LoadedProgram,
        enrollment: &Enrollment,
        referral: Option<&str>,
        consents: &[(&str, bool)],
        now: DateTime<Utc>,
    ) -> Result<MemberView> {
        for (channel, _) in consents {
            if !crate::messages::CHANNELS.contains(channel) {
                return Err(StoreError::Refused(
                    "invalid_consent",
                    format!(
                        "channel {channel:?} is not one of {}",
                        crate::messages::CHANNELS.join(", ")
                    ),
                ));
            }
        }
        if let Some(reason) = fidelis_core::members::profile_problem(&enrollment.profile) {
            return Err(StoreError::Refused(
                "invalid_member",
                format!("profile: {reason}"),
            ));
        }
        let profile = serde_json::to_string(&enrollment.profile)?;
        let referrer: Option<(i64, String)> = match referral {
            None => None,
            Some(code) => {
                let found: Option<(i64, String)> = match &self.db {
                    Db::Sqlite(pool) => sqlx::query_as(
                        "SELECT id, external_id FROM members WHERE program_id = ?1 AND referral_code = ?2",
                    )
                    .bind(program.id)
                    .bind(code)
                    .fetch_optional(pool)
                    .await?,
                    Db::Postgres(pool) => sqlx::query_as(
                        "SELECT id, external_id FROM members WHERE program_id = $1 AND referral_code = $2",
                    )
                    .bind(program.id)
                    .bind(code)
                    .fetch_optional(pool)
                    .await?,
                };
                Some(found.ok_or_else(|| {
                    StoreError::Refused(
                        "unknown_referral_code",
                        format!("no member of this program has the referral code {code:?}"),
                    )
                })?)
            }
        };
        let referred_by = referrer.as_ref().map(|r| r.0);
        let terms =
            |id: i64| term_rows([(id, enrollment.external_id.as_str(), &enrollment.profile)]);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let code = referral_code();
            let inserted: std::result::Result<i64, sqlx::Error> = match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    let id = sqlx::query_scalar(
                        "INSERT INTO members (program_id, external_id, status, profile, enrolled_at, created_at, referral_code, referred_by) \
                         VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7) RETURNING id",
                    )
                    .bind(program.id)
                    .bind(enrollment.external_id.as_str())
                    .bind(&profile)
                    .bind(micros(enrollment.enrolled_at))
                    .bind(micros(now))
                    .bind(&code)
                    .bind(referred_by)
                    .fetch_one(&mut *tx)
                    .await;
                    if let Ok(id) = id {
                        insert_terms_sqlite(&mut tx, program.id, &terms(id)).await?;
                        for (channel, granted) in consents {
                            sqlx::query(
                                "INSERT INTO member_consents (member_id, channel, program_id, granted, at, source) \
                                 VALUES ($1, $2, $3, $4, $5, 'enrollment')",
                            )
                            .bind(id)
                            .bind(*channel)
                            .bind(program.id)
                            .bind(*granted)
                            .bind(crate::dialect::At(now))
                            .execute(&mut *tx)
                            .await?;
                        }
                        let event = enrolled_event(id, enrollment, referrer.as_ref());
                        crate::partners::insert_event!(tx, program.id, &event);
                        tx.commit().await?;
                    }
                    id
                }
                Db::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    // The external id and the referral code are unique through their
                    // keys (migrations/postgres/0033_member_keys.sql): a taken one fails
                    // this statement.
                    let id = sqlx::query_scalar(
                        "WITH m AS (INSERT INTO members (program_id, external_id, status, profile, enrolled_at, created_at, \
                                                         referral_code, referred_by) \
                                    VALUES ($1, $2, 'active', $3::jsonb, $4, $5, $6, $7) RETURNING id), \
                              k AS (INSERT INTO member_keys (program_id, external_id, member_id) SELECT $1, $2, id FROM m), \
                              r AS (INSERT INTO referral_codes (program_id, code, member_id) SELECT $1, $6, id FROM m) \
                         SELECT id FROM m",
                    )
                    .bind(program.id)
                    .bind(enrollment.external_id.as_str())
                    .bind(&profile)
                    .bind(enrollment.enrolled_at)
                    .bind(now)
                    .bind(&code)
                    .bind(referred_by)
                    .fetch_one(&mut *tx)
                    .await;
                    if let Ok(id) = id {
                        insert_terms_postgres(&mut tx, program.id, &terms(id)).await?;
                        for (channel, granted) in consents {
                            sqlx::query(
                                "INSERT INTO member_consents (member_id, channel, program_id, granted, at, source) \
                                 VALUES ($1, $2, $3, $4, $5, 'enrollment')",
                            )
                            .bind(id)
                            .bind(*channel)
                            .bind(program.id)
                            .bind(*granted)
                            .bind(crate::dialect::At(now))
                            .execute(&mut *tx)
                            .await?;
                        }
                        let event = enrolled_event(id, enrollment, referrer.as_ref());
                        crate::partners::insert_event!(tx, program.id, &event);
                        tx.commit().await?;
                    }
                    id
                }
            };
            return match inserted {
                Ok(id) => Ok(MemberView {
                    id,
                    external_id: enrollment.external_id.to_string(),
                    status: MemberStatus::Active,
                    profile: enrollment.profile.clone(),
                    enrolled_at: enrollment.enrolled_at,
                    referral_code: Some(code),
                    referred_by: referrer.map(|r| r.1),
                    merged_into: None,
                    group: None,
                }),
                // A referral code drawn twice (about one in 10^15): draw again.
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation()
                        && e.message().contains("referral_code")
                        && attempt < 3 =>
                {
                    continue;
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    Err(StoreError::MemberExists(enrollment.external_id.to_string()))
                }
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Enrolls many members at once (a migration, a benchmark): they are not announced as
    /// enrolled (no `member.enrolled` event). Members already enrolled
    /// are left as they are. Returns how many were new.
    pub async fn enroll_many(
        &self,
        program: &LoadedProgram,
        enrollments: &[Enrollment],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut inserted = 0;
        for chunk in enrollments.chunks(2_000) {
            let profiles = chunk
                .iter()
                .map(|e| serde_json::to_string(&e.profile))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let by_id: std::collections::HashMap<&str, &serde_json::Value> = chunk
                .iter()
                .map(|e| (e.external_id.as_str(), &e.profile))
                .collect();
            let new_terms = |new: &[(i64, String)]| {
                term_rows(new.iter().filter_map(|(id, external_id)| {
                    Some((*id, external_id.as_str(), *by_id.get(external_id.as_str())?))
                }))
            };
            inserted += match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO members (program_id, external_id, status, profile, enrolled_at, created_at, referral_code) ",
                    );
                    q.push_values(chunk.iter().zip(&profiles), |mut b, (e, profile)| {
                        b.push_bind(program.id)
                            .push_bind(e.external_id.as_str())
                            .push_bind("active")
                            .push_bind(profile.as_str())
                            .push_bind(micros(e.enrolled_at))
                            .push_bind(micros(now))
                            .push_bind(referral_code());
                    });
                    q.push(" ON CONFLICT DO NOTHING RETURNING id, external_id");
                    let new: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
                    insert_terms_sqlite(&mut tx, program.id, &new_terms(&new)).await?;
                    tx.commit().await?;
                    new.len() as u64
                }
                Db::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    // Ids drawn first, so the keys (which decide who is new) can name them.
                    let new: Vec<(i64, String)> = sqlx::query_as(
                        "WITH u AS (SELECT nextval(pg_get_serial_sequence('members', 'id')) AS id, e, p, t, c \
                                    FROM unnest($2::text[], $3::text[], $4::timestamptz[], $6::text[]) AS u(e, p, t, c)), \
                              k AS (INSERT INTO member_keys (program_id, external_id, member_id) SELECT $1, e, id FROM u \
                                    ON CONFLICT DO NOTHING RETURNING member_id), \
                              r AS (INSERT INTO referral_codes (program_id, code, member_id) \
                                    SELECT $1, u.c, u.id FROM u JOIN k ON k.member_id = u.id), \
                              n AS (INSERT INTO members (id, program_id, external_id, status, profile, enrolled_at, created_at, referral_code) \
                                    OVERRIDING SYSTEM VALUE \
                                    SELECT u.id, $1, u.e, 'active', u.p::jsonb, u.t, $5, u.c FROM u JOIN k ON k.member_id = u.id \
                                    RETURNING id, external_id) \
                         SELECT id, external_id FROM n",
                    )
                    .bind(program.id)
                    .bind(chunk.iter().map(|e| e.external_id.as_str()).collect::<Vec<_>>())
                    .bind(&profiles)
                    .bind(chunk.iter().map(|e| e.enrolled_at).collect::<Vec<_>>())
                    .bind(now)
                    .bind(chunk.iter().map(|_| referral_code()).collect::<Vec<_>>())
                    .fetch_all(&mut *tx)
                    .await?;
                    insert_terms_postgres(&mut tx, program.id, &new_terms(&new)).await?;
                    tx.commit().await?;
                    new.len() as u64
                }
            };
        }
        Ok(inserted)
    }

    /// A member of a program by external id.
    pub async fn member(
        &self,
        program: &LoadedProgram,
        external_id: &str,
    ) -> Result<Option<MemberView>> {
        match &self.db {
            Db::Sqlite(pool) => {
                let sql = format!(
                    "SELECT {MEMBER_COLUMNS} FROM members m WHERE m.program_id = ?1 AND m.external_id = ?2"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(external_id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    Ok(MemberView {
                        id: r.try_get(0)?,
                        external_id: r.try_get(1)?,
                        status: status(r.try_get::<&str, _>(2)?)?,
                        profile: serde_json::from_str(r.try_get::<&str, _>(3)?)?,
                        enrolled_at: instant(r.try_get(4)?)?,
                        referral_code: r.try_get(5)?,
                        referred_by: r.try_get(6)?,
                        merged_into: r.try_get(7)?,
                        group: r.try_get(8)?,
                    })
                })
                .transpose()
            }
            Db::Postgres(pool) => {
                let sql = format!(
                    "SELECT {} FROM members m WHERE m.program_id = $1 AND m.external_id = $2",
                    MEMBER_COLUMNS.replace("m.profile", "m.profile::text")
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(external_id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    Ok(MemberView {
                        id: r.try_get(0)?,
                        external_id: r.try_get(1)?,
                        status: status(r.try_get::<&str, _>(2)?)?,
                        profile: serde_json::from_str(r.try_get::<&str, _>(3)?)?,
                        enrolled_at: r.try_get(4)?,
                        referral_code: r.try_get(5)?,
                        referred_by: r.try_get(6)?,
                        merged_into: r.try_get(7)?,
                        group: r.try_get(8)?,
                    })
                })
                .transpose()
            }
        }
    }

    /// The member, or [`StoreError::UnknownMember`].
    pub async fn require_member(
        &self,
        program: &LoadedProgram,
        external_id: &str,
    ) -> Result<MemberView> {
        self.member(program, external_id)
            .await?
            .ok_or_else(|| StoreError::UnknownMember(external_id.to_owned()))
    }

    /// Replaces a member's profile (checked by the caller), its search terms with it, and
    /// notes when: a redemption soon after is held by the fraud rule
    /// `redemption_after_change`. Audited with the names of the fields that changed (not
    /// their values: the audit trail keeps no personal data).
    pub async fn update_profile(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        profile: &serde_json::Value,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<MemberView> {
        let member = self.require_member(program, external_id).await?;
        if member.merged_into.is_some() || self.member_erased(member.id).await? {
            return Err(StoreError::Refused(
                "member_closed",
                format!("member {external_id:?} was merged or erased: its profile stays as it is"),
            ));
        }
        let mut fields: Vec<&str> = Vec::new();
        let (old, new) = (member.profile.as_object(), profile.as_object());
        for (k, v) in new.into_iter().flatten() {
            if old.and_then(|o| o.get(k)) != Some(v) {
                fields.push(k);
            }
        }
        for k in old.into_iter().flatten().map(|(k, _)| k) {
            if new.is_none_or(|n| !n.contains_key(k)) {
                fields.push(k);
            }
        }
        let code = program.program.code.as_str();
        let mut audit = actor.entry(now, "member.profile", Some(code), Some(external_id));
        audit.after = Some(serde_json::json!({"fields": fields}));
        let text = serde_json::to_string(profile)?;
        let terms = term_rows([(member.id, external_id, profile)]);
        let key = crate::engine::member_lock_key(program.id, external_id);
        in_ledger_tx!(self, |tx| {
            async {
                tx.lock_members(&[key]).await?;
                tx.replace_profile(program.id, member.id, &text, &terms, now, &audit)
                    .await
            }
            .await
        })?;
        Ok(MemberView {
            profile: profile.clone(),
            ..member
        })
    }

    /// Suspends, reactivates or closes a member, under the member's lock (a journal in
    /// flight for the member finishes first), and audits the change.
    pub async fn set_member_status(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        new: MemberStatus,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<MemberView> {
        let member = self.require_member(program, external_id).await?;
        if let Some(survivor) = &member.merged_into {
            // Its points and history live on in the survivor: reopening it would give the
            // same person two accounts again.
            return Err(StoreError::Refused(
                "member_merged",
                format!(
                    "member {external_id:?} was merged into {survivor:?}; its status stays closed"
                ),
            ));
        }
        if self.member_erased(member.id).await? {
            // Its personal data is gone: a member who comes back enrols anew.
            return Err(StoreError::Refused(
                "member_erased",
                format!("member {external_id:?} was erased; its status stays closed"),
            ));
        }
        let code = program.program.code.as_str();
        let mut audit = actor.entry(now, "member.status", Some(code), Some(external_id));
        audit.before = Some(serde_json::json!({"status": member.status.name()}));
        audit.after = Some(serde_json::json!({"status": new.name()}));
        let key = crate::engine::member_lock_key(program.id, external_id);
        in_ledger_tx!(self, |tx| {
            async {
                tx.lock_members(&[key]).await?;
                tx.set_member_status(member.id, new.name(), &audit).await
            }
            .await
        })?;
        Ok(MemberView {
            status: new,
            ..member
        })
    }
}

impl sqlite::SqliteTx<'_> {
    async fn replace_profile(
        &mut self,
        program_id: i64,
        id: i64,
        profile: &str,
        terms: &[(i64, String)],
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<()> {
        sqlx::query("UPDATE members SET profile = ?1, profile_changed_at = ?2 WHERE id = ?3")
            .bind(profile)
            .bind(micros(now))
            .bind(id)
            .execute(self.conn().await?)
            .await?;
        sqlx::query("DELETE FROM member_terms WHERE member_id = ?1")
            .bind(id)
            .execute(self.conn().await?)
            .await?;
        insert_terms_sqlite(self.conn().await?, program_id, terms).await?;
        let conn = self.conn().await?;
        insert_audit!(conn, audit);
        Ok(())
    }

    async fn set_member_status(&mut self, id: i64, status: &str, audit: &AuditEntry) -> Result<()> {
        sqlx::query("UPDATE members SET status = ?1 WHERE id = ?2")
            .bind(status)
            .bind(id)
            .execute(self.conn().await?)
            .await?;
        let conn = self.conn().await?;
        insert_audit!(conn, audit);
        Ok(())
    }
}

impl postgres::PgTx {
    async fn replace_profile(
        &mut self,
        program_id: i64,
        id: i64,
        profile: &str,
        terms: &[(i64, String)],
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<()> {
        let conn = self.conn().await?;
        sqlx::query(
            "UPDATE members SET profile = $1::jsonb, profile_changed_at = $2 WHERE id = $3",
        )
        .bind(profile)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM member_terms WHERE member_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        insert_terms_postgres(&mut *conn, program_id, terms).await?;
        insert_audit!(conn, audit);
        Ok(())
    }

    async fn set_member_status(&mut self, id: i64, status: &str, audit: &AuditEntry) -> Result<()> {
        let conn = self.conn().await?;
        sqlx::query("UPDATE members SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        insert_audit!(conn, audit);
        Ok(())
    }
}

/// The outbox's event of a member enrolled (with the profile they gave: a welcome message
/// needs it; erasure clears it from the event too).
fn enrolled_event(
    id: i64,
    enrollment: &Enrollment,
    referrer: Option<&(i64, String)>,
) -> crate::partners::NewEvent {
    crate::partners::NewEvent {
        kind: "member.enrolled",
        member_id: Some(id),
        subject: enrollment.external_id.to_string(),
        payload: serde_json::json!({"member": enrollment.external_id.as_str(),
            "enrolled_at": enrollment.enrolled_at, "profile": enrollment.profile,
            "referred_by": referrer.map(|r| r.1.as_str())})
        .to_string(),
        occurred_at: enrollment.enrolled_at,
    }
}
