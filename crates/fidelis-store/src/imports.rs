//! Import runs: how far an import of a file got, per partition, so that a restarted import
//! resumes where the committed batches end; and the report of its rejected lines.

use chrono::{DateTime, Utc};

use crate::engine::LoadedProgram;
use crate::error::Result;
use crate::rows::RejectionRow;
use crate::sqlite::micros;
use crate::{Db, Store};

/// An import of one file into one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun {
    pub id: i64,
    /// The journals are spread over this many partitions by member, one writer each.
    pub partitions: u32,
    /// Where each partition stands, indexed by partition.
    pub progress: Vec<PartitionProgress>,
}

/// Where one partition of an import stands: every line of the partition before
/// `byte_offset` is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    pub byte_offset: u64,
    pub line: u64,
    pub applied: u64,
    pub replayed: u64,
    pub rejected: u64,
}

impl ImportRun {
    /// Where reading resumes: the partition that is furthest behind. Lines after it that
    /// other partitions committed come back as replays and change nothing.
    pub fn resume_at(&self) -> PartitionProgress {
        self.progress
            .iter()
            .copied()
            .min_by_key(|p| p.byte_offset)
            .unwrap_or_default()
    }

    /// The counts of all partitions so far.
    pub fn totals(&self) -> PartitionProgress {
        self.progress
            .iter()
            .fold(PartitionProgress::default(), |t, p| PartitionProgress {
                byte_offset: t.byte_offset.max(p.byte_offset),
                line: t.line.max(p.line),
                applied: t.applied + p.applied,
                replayed: t.replayed + p.replayed,
                rejected: t.rejected + p.rejected,
            })
    }
}

impl Store {
    /// The unfinished run importing the file with this fingerprint into the program (to
    /// resume, with its own partitioning), or a new run with `partitions` partitions.
    pub async fn begin_import(
        &self,
        program: &LoadedProgram,
        source: &str,
        fingerprint: &str,
        partitions: u32,
        now: DateTime<Utc>,
    ) -> Result<ImportRun> {
        let existing: Option<(i64, i32)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT id, partitions FROM import_runs WHERE program_id = ?1 AND fingerprint = ?2 AND finished_at IS NULL \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(program.id)
            .bind(fingerprint)
            .fetch_optional(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT id, partitions FROM import_runs WHERE program_id = $1 AND fingerprint = $2 AND finished_at IS NULL \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(program.id)
            .bind(fingerprint)
            .fetch_optional(pool)
            .await?,
        };
        if let Some((id, partitions)) = existing {
            return self.import_run(id, partitions.max(1) as u32).await;
        }
        let partitions = partitions.max(1);
        let id: i64 = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(
                "INSERT INTO import_runs (program_id, source, fingerprint, partitions, started_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            )
            .bind(program.id)
            .bind(source)
            .bind(fingerprint)
            .bind(partitions as i32)
            .bind(micros(now))
            .fetch_one(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_scalar(
                "INSERT INTO import_runs (program_id, source, fingerprint, partitions, started_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(program.id)
            .bind(source)
            .bind(fingerprint)
            .bind(partitions as i32)
            .bind(now)
            .fetch_one(pool)
            .await?,
        };
        Ok(ImportRun {
            id,
            partitions,
            progress: vec![PartitionProgress::default(); partitions as usize],
        })
    }

    /// A run and its progress.
    pub async fn import_run(&self, id: i64, partitions: u32) -> Result<ImportRun> {
        let rows: Vec<(i32, i64, i64, i64, i64, i64)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT partition, byte_offset, line, applied, replayed, rejected FROM import_progress WHERE run_id = ?1",
            )
            .bind(id)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT partition, byte_offset, line, applied, replayed, rejected FROM import_progress WHERE run_id = $1",
            )
            .bind(id)
            .fetch_all(pool)
            .await?,
        };
        let mut progress = vec![PartitionProgress::default(); partitions as usize];
        for (partition, byte_offset, line, applied, replayed, rejected) in rows {
            if let Some(p) = progress.get_mut(partition as usize) {
                *p = PartitionProgress {
                    byte_offset: byte_offset as u64,
                    line: line as u64,
                    applied: applied as u64,
                    replayed: replayed as u64,
                    rejected: rejected as u64,
                };
            }
        }
        Ok(ImportRun {
            id,
            partitions,
            progress,
        })
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

    /// Each merged member's external id with its survivor's: a journal naming the merged
    /// member posts to the survivor's ledger.
    pub async fn merged_members(&self, program: &LoadedProgram) -> Result<Vec<(String, String)>> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT m.external_id, s.external_id FROM members m JOIN members s ON s.id = m.merged_into \
                     WHERE m.program_id = ?1",
                )
                .bind(program.id)
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT m.external_id, s.external_id FROM members m JOIN members s ON s.id = m.merged_into \
                     WHERE m.program_id = $1",
                )
                .bind(program.id)
                .fetch_all(pool)
                .await?
            }
        })
    }

    /// The rejected lines of a run, by line.
    pub async fn import_rejections(&self, run_id: i64) -> Result<Vec<RejectionRow>> {
        let rows: Vec<(i64, Option<String>, String, String)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT line, external_id, code, reason FROM import_rejections WHERE run_id = ?1 ORDER BY line",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT line, external_id, code, reason FROM import_rejections WHERE run_id = $1 ORDER BY line",
            )
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
