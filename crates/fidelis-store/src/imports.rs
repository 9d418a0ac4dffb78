//! Import runs: how far an import of a file got, so that a restarted import resumes where
//! the last committed batch ended, and the report of its rejected lines.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::engine::LoadedProgram;
use crate::error::Result;
use crate::rows::RejectionRow;
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// An import of one file into one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun {
    pub id: i64,
    /// Where the next unread line starts.
    pub byte_offset: u64,
    /// The last line committed.
    pub line: u64,
    pub applied: u64,
    pub replayed: u64,
    pub rejected: u64,
    pub started_at: DateTime<Utc>,
    pub finished: bool,
}

const RUN_COLUMNS: &str =
    "id, byte_offset, line, applied, replayed, rejected, started_at, finished_at";

impl Store {
    /// The unfinished run importing the file with this fingerprint into the program, to
    /// resume; or a new run from the start.
    pub async fn begin_import(
        &self,
        program: &LoadedProgram,
        source: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<ImportRun> {
        let existing = self.find_run(program, fingerprint).await?;
        if let Some(run) = existing {
            return Ok(run);
        }
        let id: i64 = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(
                "INSERT INTO import_runs (program_id, source, fingerprint, byte_offset, line, applied, replayed, rejected, started_at, updated_at) \
                 VALUES (?1, ?2, ?3, 0, 0, 0, 0, 0, ?4, ?4) RETURNING id",
            )
            .bind(program.id)
            .bind(source)
            .bind(fingerprint)
            .bind(micros(now))
            .fetch_one(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_scalar(
                "INSERT INTO import_runs (program_id, source, fingerprint, byte_offset, line, applied, replayed, rejected, started_at, updated_at) \
                 VALUES ($1, $2, $3, 0, 0, 0, 0, 0, $4, $4) RETURNING id",
            )
            .bind(program.id)
            .bind(source)
            .bind(fingerprint)
            .bind(now)
            .fetch_one(pool)
            .await?,
        };
        Ok(ImportRun {
            id,
            byte_offset: 0,
            line: 0,
            applied: 0,
            replayed: 0,
            rejected: 0,
            started_at: now,
            finished: false,
        })
    }

    async fn find_run(
        &self,
        program: &LoadedProgram,
        fingerprint: &str,
    ) -> Result<Option<ImportRun>> {
        match &self.db {
            Db::Sqlite(pool) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM import_runs WHERE program_id = ?1 AND fingerprint = ?2 AND finished_at IS NULL ORDER BY id DESC LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(fingerprint)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    Ok(ImportRun {
                        id: r.try_get(0)?,
                        byte_offset: r.try_get::<i64, _>(1)? as u64,
                        line: r.try_get::<i64, _>(2)? as u64,
                        applied: r.try_get::<i64, _>(3)? as u64,
                        replayed: r.try_get::<i64, _>(4)? as u64,
                        rejected: r.try_get::<i64, _>(5)? as u64,
                        started_at: instant(r.try_get(6)?)?,
                        finished: r.try_get::<Option<i64>, _>(7)?.is_some(),
                    })
                })
                .transpose()
            }
            Db::Postgres(pool) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM import_runs WHERE program_id = $1 AND fingerprint = $2 AND finished_at IS NULL ORDER BY id DESC LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(program.id)
                    .bind(fingerprint)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| {
                    Ok(ImportRun {
                        id: r.try_get(0)?,
                        byte_offset: r.try_get::<i64, _>(1)? as u64,
                        line: r.try_get::<i64, _>(2)? as u64,
                        applied: r.try_get::<i64, _>(3)? as u64,
                        replayed: r.try_get::<i64, _>(4)? as u64,
                        rejected: r.try_get::<i64, _>(5)? as u64,
                        started_at: r.try_get(6)?,
                        finished: r.try_get::<Option<DateTime<Utc>>, _>(7)?.is_some(),
                    })
                })
                .transpose()
            }
        }
    }

    /// Marks a run finished: a later import of the same file starts afresh (and finds
    /// every journal already applied).
    pub async fn finish_import(&self, run_id: i64, now: DateTime<Utc>) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("UPDATE import_runs SET finished_at = ?1 WHERE id = ?2")
                    .bind(micros(now))
                    .bind(run_id)
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query("UPDATE import_runs SET finished_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(run_id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The rejected lines of a run, by line.
    pub async fn import_rejections(&self, run_id: i64) -> Result<Vec<RejectionRow>> {
        let rows: Vec<(i64, Option<String>, String, String)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as("SELECT line, external_id, code, reason FROM import_rejections WHERE run_id = ?1 ORDER BY line")
                .bind(run_id)
                .fetch_all(pool)
                .await?,
            Db::Postgres(pool) => sqlx::query_as("SELECT line, external_id, code, reason FROM import_rejections WHERE run_id = $1 ORDER BY line")
                .bind(run_id)
                .fetch_all(pool)
                .await?,
        };
        Ok(rows
            .into_iter()
            .map(|(line, external_id, code, reason)| RejectionRow {
                line,
                external_id,
                code,
                reason,
            })
            .collect())
    }
}
