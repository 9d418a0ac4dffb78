//! Segment refreshes (see [`fidelis_core::segments`]): every member's features as of an
//! instant — profile, tiers, recent purchases, RFM and the churn model's scores, fitted on
//! the program's own purchases before that instant — each segment's condition decided for
//! each member, and the result written in one transaction: which members each segment
//! holds (read by promotions' `eligibility.segments`), every buying member's scores (the
//! member's 360° view), and a row for the refresh.
//!
//! A refresh is idempotent per instant: for an instant already refreshed under the same
//! program revision it changes nothing and answers what that refresh found (a revision
//! saved since — a segment added or changed — recomputes that instant); for an instant
//! before the last refresh it changes nothing either (segments do not go back in time).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fidelis_core::analytics::{churn, rfm};
use fidelis_core::segments::{self, Features, Frame, Recent, Scores};
use futures::TryStreamExt;

use crate::Store;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRefresh {
    pub as_of: DateTime<Utc>,
    /// Members considered (enrolled by `as_of`, not merged into another).
    pub members: u64,
    /// Members per segment code.
    pub counts: BTreeMap<String, u64>,
    /// Per segment, members whose condition could not be evaluated (a field that is null
    /// for them, say); they are not in the segment.
    pub unevaluable: BTreeMap<String, u64>,
    /// Members the churn model scored, and why it could not be fitted (if it could not).
    pub scored: u64,
    pub model_error: Option<String>,
    /// The refresh had been done already (for this instant or a later one): nothing changed.
    #[serde(skip)]
    pub already: bool,
}

/// A member's scores as the last refresh left them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemberScores {
    pub as_of: DateTime<Utc>,
    pub purchases_90d: i64,
    /// In minor units.
    pub spend_90d: i64,
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// `"545"`: recency, frequency and monetary scores.
    pub rfm: Option<String>,
    pub rfm_segment: Option<String>,
    pub p_alive: Option<f64>,
    pub expected_purchases_90d: Option<f64>,
    /// In minor units.
    pub lifetime_value: Option<f64>,
    pub segments: Vec<String>,
}

/// The week is the model's time unit.
const UNIT_DAYS: f64 = 7.0;
/// Members whose rows one statement writes.
const CHUNK: usize = 5_000;

/// The refresh a refresh for `$2` under revision `$3` leaves alone: one for a later
/// instant, or for `$2` itself under that revision.
const REFRESHED: &str = "SELECT report FROM segment_refreshes WHERE program_id = $1 \
     AND (as_of > $2 OR (as_of = $2 AND revision = $3)) \
     ORDER BY (as_of = $2) DESC, as_of DESC LIMIT 1";

const SQLITE_MEMBERS: &str = "SELECT m.id, m.external_id, m.status, m.profile, m.enrolled_at, t.state \
     FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id \
     WHERE m.program_id = $1 AND m.enrolled_at <= $2 AND m.merged_into IS NULL ORDER BY m.id";
const PG_MEMBERS: &str = "SELECT m.id, m.external_id, m.status, m.profile::text, m.enrolled_at, t.state \
     FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id \
     WHERE m.program_id = $1 AND m.enrolled_at <= $2 AND m.merged_into IS NULL ORDER BY m.id";

type MemberRow = (i64, String, String, String, At, Option<String>);

/// A score row as JSON for the bulk insert: member, purchases and spend in 90 days, last
/// purchase (µs since the epoch), RFM, its segment, P(alive), expected purchases, CLV.
type ScoreRow = (
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<&'static str>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

impl Store {
    /// Refreshes the program's segments as of `as_of` (see the module's documentation).
    pub async fn refresh_segments(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SegmentRefresh> {
        if let Some(done) = self.refreshed(program, as_of).await? {
            return Ok(SegmentRefresh {
                already: true,
                ..done
            });
        }
        let p = &program.program;
        let histories = self
            .purchase_histories_as_of(program, as_of, UNIT_DAYS)
            .await?;
        let summaries: Vec<_> = histories.members.iter().map(|m| m.summary).collect();
        // Fitting the model is the one long computation here (an optimisation over every
        // member's history): on a blocking thread, so that requests go on meanwhile (on
        // SQLite `serve` has a single runtime thread).
        let fitted = tokio::task::spawn_blocking(move || churn::fit(&summaries))
            .await
            .map_err(|e| {
                StoreError::Inconsistent(format!("fitting the churn model stopped: {e}"))
            })?;
        let (model, model_error) = match fitted {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let horizon = churn::Horizon {
            purchases: 90.0 / UNIT_DAYS,
            periods: 12,
            period: 365.25 / 12.0 / UNIT_DAYS,
            discount: 0.01,
        };
        let end = as_of.with_timezone(&p.time_zone).date_naive();
        let rfm_scores = rfm::score_all(
            &histories
                .members
                .iter()
                .map(|m| rfm::Measures {
                    recency_days: (end - m.summary.last).num_days(),
                    frequency: m.summary.customer.frequency + 1,
                    monetary: m.summary.total_spend,
                })
                .collect::<Vec<_>>(),
        );
        // Both sorted by member id, as the members are read.
        let mut summarised = histories.members.iter().zip(&rfm_scores).peekable();
        let mut recent = histories.recent.iter().peekable();

        let frame = Frame {
            as_of,
            time_zone: p.time_zone,
            money: &p.money_currency,
        };
        let mut report = SegmentRefresh {
            as_of,
            members: 0,
            counts: p.segments.iter().map(|s| (s.code.to_string(), 0)).collect(),
            unevaluable: BTreeMap::new(),
            scored: 0,
            model_error,
            already: false,
        };
        let mut members_of: Vec<Vec<i64>> = vec![Vec::new(); p.segments.len()];
        let mut scores: Vec<ScoreRow> = Vec::new();
        let sql = match &self.db {
            crate::Db::Sqlite(_) => SQLITE_MEMBERS,
            crate::Db::Postgres(_) => PG_MEMBERS,
        };
        let mut visit = |row: MemberRow| -> Result<()> {
            let (id, external_id, status, profile, enrolled_at, tiers) = row;
            report.members += 1;
            while summarised.next_if(|(m, _)| m.member_id < id).is_some() {}
            while recent.next_if(|(m, _)| *m < id).is_some() {}
            let history = summarised.next_if(|(m, _)| m.member_id == id);
            let recent = recent
                .next_if(|(m, _)| *m == id)
                .map_or_else(Recent::default, |(_, r)| *r);
            let score = match (&model, history) {
                (Some(model), Some((h, _))) => {
                    let s = model.score(&h.summary, &horizon);
                    Some(Scores {
                        p_alive: s.p_alive,
                        expected_purchases: s.expected_purchases,
                        lifetime_value: s.lifetime_value,
                    })
                }
                _ => None,
            };
            let rfm = history.map(|(_, r)| *r);
            let profile = match serde_json::from_str::<serde_json::Value>(&profile)? {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            let features = Features {
                external_id,
                status,
                profile,
                enrolled_at: enrolled_at.0,
                tiers: tiers_of(p, tiers.as_deref())?,
                recent,
                rfm,
                scores: score,
            };
            for (i, decided) in segments::evaluate(&p.segments, &features, frame)
                .into_iter()
                .enumerate()
            {
                let code = p.segments[i].code.as_str();
                match decided {
                    Ok(true) => {
                        members_of[i].push(id);
                        *report.counts.entry(code.to_owned()).or_default() += 1;
                    }
                    Ok(false) => {}
                    Err(_) => *report.unevaluable.entry(code.to_owned()).or_default() += 1,
                }
            }
            if score.is_some() {
                report.scored += 1;
            }
            if recent.last.is_some() {
                scores.push((
                    id,
                    recent.purchases[1],
                    recent.spend[1],
                    recent.last.map(|l| l.timestamp_micros()),
                    rfm.map(|r| format!("{}{}{}", r.recency, r.frequency, r.monetary)),
                    rfm.map(|r| r.segment()),
                    score.map(|s| s.p_alive).filter(|v| v.is_finite()),
                    score
                        .map(|s| s.expected_purchases)
                        .filter(|v| v.is_finite()),
                    score
                        .and_then(|s| s.lifetime_value)
                        .filter(|v| v.is_finite()),
                ));
            }
            Ok(())
        };
        with_pool!(self, |conn| {
            let mut rows = sqlx::query_as::<_, MemberRow>(sql)
                .bind(program.id)
                .bind(At(as_of))
                .fetch(conn);
            while let Some(row) = rows.try_next().await? {
                visit(row)?;
            }
            Ok::<_, StoreError>(())
        })?;

        let stored = serde_json::to_string(&report)?;
        let done: Option<String> = in_write_tx!(self, |tx, pg| {
            async {
                // Another refresh may have finished meanwhile: the later instant wins.
                let done: Option<(String,)> = sqlx::query_as(REFRESHED)
                    .bind(program.id)
                    .bind(At(as_of))
                    .bind(i64::from(program.revision))
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((done,)) = done {
                    return Ok(Some(done));
                }
                // The same instant under an earlier revision is recomputed.
                sqlx::query("DELETE FROM segment_refreshes WHERE program_id = $1 AND as_of = $2")
                    .bind(program.id)
                    .bind(At(as_of))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM member_segments WHERE program_id = $1")
                    .bind(program.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM member_scores WHERE program_id = $1")
                    .bind(program.id)
                    .execute(&mut *tx)
                    .await?;
                let insert_members = if pg {
                    "INSERT INTO member_segments (program_id, segment, member_id) \
                     SELECT $1, $2, value::bigint FROM jsonb_array_elements_text($3::jsonb)"
                } else {
                    "INSERT INTO member_segments (program_id, segment, member_id) \
                     SELECT $1, $2, value FROM json_each($3)"
                };
                for (segment, ids) in p.segments.iter().zip(&members_of) {
                    for chunk in ids.chunks(CHUNK * 4) {
                        sqlx::query(insert_members)
                            .bind(program.id)
                            .bind(segment.code.as_str())
                            .bind(serde_json::to_string(chunk)?)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let insert_scores = if pg {
                    "INSERT INTO member_scores (member_id, program_id, as_of, purchases_90d, spend_90d, \
                     last_purchase_at, rfm, rfm_segment, p_alive, expected_purchases, lifetime_value) \
                     SELECT (v->>0)::bigint, $1, $2, (v->>1)::bigint, (v->>2)::bigint, \
                     TIMESTAMPTZ 'epoch' + ((v->>3)::bigint) * INTERVAL '1 microsecond', v->>4, v->>5, \
                     (v->>6)::double precision, (v->>7)::double precision, (v->>8)::double precision \
                     FROM jsonb_array_elements($3::jsonb) AS e(v)"
                } else {
                    "INSERT INTO member_scores (member_id, program_id, as_of, purchases_90d, spend_90d, \
                     last_purchase_at, rfm, rfm_segment, p_alive, expected_purchases, lifetime_value) \
                     SELECT json_extract(value, '$[0]'), $1, $2, json_extract(value, '$[1]'), \
                     json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), \
                     json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'), \
                     json_extract(value, '$[8]') FROM json_each($3)"
                };
                for chunk in scores.chunks(CHUNK) {
                    sqlx::query(insert_scores)
                        .bind(program.id)
                        .bind(At(as_of))
                        .bind(serde_json::to_string(chunk)?)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO segment_refreshes (program_id, as_of, refreshed_at, revision, members, report) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(program.id)
                .bind(At(as_of))
                .bind(At(now))
                .bind(i64::from(program.revision))
                .bind(report.members as i64)
                .bind(&stored)
                .execute(&mut *tx)
                .await?;
                Ok::<_, StoreError>(None)
            }
            .await
        })?;
        match done {
            Some(stored) => Ok(SegmentRefresh {
                already: true,
                ..serde_json::from_str(&stored)?
            }),
            None => Ok(report),
        }
    }

    /// What a refresh for `as_of` leaves alone: a later refresh, or one for `as_of` itself
    /// under the program's current revision.
    async fn refreshed(
        &self,
        program: &LoadedProgram,
        as_of: DateTime<Utc>,
    ) -> Result<Option<SegmentRefresh>> {
        let row: Option<(String,)> = with_pool!(self, |conn| {
            sqlx::query_as(REFRESHED)
                .bind(program.id)
                .bind(At(as_of))
                .bind(i64::from(program.revision))
                .fetch_optional(conn)
                .await
        })?;
        row.map(|(report,)| serde_json::from_str(&report).map_err(StoreError::from))
            .transpose()
    }

    /// The latest refresh of the program, if any.
    pub async fn last_refresh(&self, program: &LoadedProgram) -> Result<Option<SegmentRefresh>> {
        let row: Option<(String,)> = with_pool!(self, |conn| {
            sqlx::query_as(
                "SELECT report FROM segment_refreshes WHERE program_id = $1 \
                 ORDER BY as_of DESC LIMIT 1",
            )
            .bind(program.id)
            .fetch_optional(conn)
            .await
        })?;
        row.map(|(report,)| serde_json::from_str(&report).map_err(StoreError::from))
            .transpose()
    }

    /// The member's scores and segments as the last refresh left them; `None` before any
    /// refresh saw the member buy.
    pub async fn member_scores(
        &self,
        program: &LoadedProgram,
        member_id: i64,
    ) -> Result<Option<MemberScores>> {
        type Row = (
            At,
            i64,
            i64,
            Option<At>,
            Option<String>,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        );
        let row: Option<Row> = with_pool!(self, |conn| {
            sqlx::query_as(
                "SELECT as_of, purchases_90d, spend_90d, last_purchase_at, rfm, rfm_segment, \
                 p_alive, expected_purchases, lifetime_value FROM member_scores \
                 WHERE program_id = $1 AND member_id = $2",
            )
            .bind(program.id)
            .bind(member_id)
            .fetch_optional(conn)
            .await
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let segments = self.member_segment_codes(program, member_id).await?;
        Ok(Some(MemberScores {
            as_of: r.0.0,
            purchases_90d: r.1,
            spend_90d: r.2,
            last_purchase_at: r.3.map(|a| a.0),
            rfm: r.4,
            rfm_segment: r.5,
            p_alive: r.6,
            expected_purchases_90d: r.7,
            lifetime_value: r.8,
            segments,
        }))
    }

    /// The segments the member was in at the last refresh, by code.
    pub async fn member_segment_codes(
        &self,
        program: &LoadedProgram,
        member_id: i64,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = with_pool!(self, |conn| {
            sqlx::query_as(
                "SELECT segment FROM member_segments WHERE program_id = $1 AND member_id = $2 \
                 ORDER BY segment",
            )
            .bind(program.id)
            .bind(member_id)
            .fetch_all(conn)
            .await
        })?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }
}

/// The tier held in each tier group: the stored standing's, or the group's lowest.
fn tiers_of(
    program: &fidelis_core::program::Program,
    state: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let standing: Option<fidelis_core::tiers::MemberTiers> =
        state.map(serde_json::from_str).transpose()?;
    Ok(program
        .tier_groups
        .iter()
        .filter_map(|g| {
            let held = standing
                .as_ref()
                .and_then(|s| s.status(g.code.as_str()))
                .map(|s| s.tier.clone())
                .or_else(|| g.tiers.first().map(|t| t.code.to_string()))?;
            Some((g.code.to_string(), held))
        })
        .collect())
}
