//! Programs: stored definition documents, compiled once and cached per revision.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::program::{Problem, Program, ProgramDocument};
use sqlx::Row;

use crate::access::{Actor, insert_audit};
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::sqlite::{instant, micros};
use crate::{Db, Store};

/// A program's code, name and revision, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSummary {
    pub code: String,
    pub name: String,
    pub revision: i32,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Creates or replaces a program, and audits it (the definitions before and after).
    /// Refuses (changing nothing) to drop a currency that members hold balances in.
    /// Returns the stored program and whether it was created.
    pub async fn put_program(
        &self,
        program: &Program,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(Arc<LoadedProgram>, bool)> {
        let code = program.code.as_str();
        let previous = self.program(code).await?;
        if let Some(previous) = &previous {
            let mut problems = Vec::new();
            for (i, old) in previous.program.currencies.iter().enumerate() {
                if program.currency_ix(old.code.as_str()).is_none()
                    && self.currency_in_use(previous.id, old.code.as_str()).await?
                {
                    problems.push(Problem {
                        path: "currencies".into(),
                        message: format!(
                            "currency {:?} (formerly currencies[{i}]) holds member balances and cannot be removed",
                            old.code.as_str()
                        ),
                    });
                }
            }
            if !problems.is_empty() {
                return Err(StoreError::InvalidProgram(problems));
            }
        }
        let definition = serde_json::to_string(&program.document)?;
        let mut audit = actor.entry(
            now,
            if previous.is_some() {
                "program.update"
            } else {
                "program.create"
            },
            Some(code),
            Some(code),
        );
        audit.before = previous
            .as_ref()
            .map(|p| serde_json::to_value(&p.program.document))
            .transpose()?;
        audit.after = Some(serde_json::to_value(&program.document)?);
        let (id, revision): (i64, i32) = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let row = sqlx::query(
                    "INSERT INTO programs (code, name, definition, revision, created_at, updated_at) VALUES (?1, ?2, ?3, 1, ?4, ?4) \
                     ON CONFLICT (code) DO UPDATE SET name = excluded.name, definition = excluded.definition, \
                     revision = programs.revision + 1, updated_at = excluded.updated_at RETURNING id, revision",
                )
                .bind(code)
                .bind(program.name.as_str())
                .bind(&definition)
                .bind(micros(now))
                .fetch_one(&mut *tx)
                .await?;
                insert_audit!(tx, &audit);
                tx.commit().await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let row = sqlx::query(
                    "INSERT INTO programs (code, name, definition, revision, created_at, updated_at) VALUES ($1, $2, $3::jsonb, 1, $4, $4) \
                     ON CONFLICT (code) DO UPDATE SET name = excluded.name, definition = excluded.definition, \
                     revision = programs.revision + 1, updated_at = excluded.updated_at RETURNING id, revision",
                )
                .bind(code)
                .bind(program.name.as_str())
                .bind(&definition)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                insert_audit!(tx, &audit);
                tx.commit().await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        };
        let loaded = Arc::new(LoadedProgram {
            id,
            revision,
            program: program.clone(),
        });
        self.cache_program(&loaded);
        Ok((loaded, revision == 1))
    }

    async fn currency_in_use(&self, program_id: i64, currency: &str) -> Result<bool> {
        let found: Option<i64> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT 1 FROM accounts WHERE program_id = ?1 AND currency = ?2 LIMIT 1",
                )
                .bind(program_id)
                .bind(currency)
                .fetch_optional(pool)
                .await?
            }
            Db::Postgres(pool) => sqlx::query_scalar(
                "SELECT 1::bigint FROM accounts WHERE program_id = $1 AND currency = $2 LIMIT 1",
            )
            .bind(program_id)
            .bind(currency)
            .fetch_optional(pool)
            .await?,
        };
        Ok(found.is_some())
    }

    fn cache_program(&self, loaded: &Arc<LoadedProgram>) {
        if let Ok(mut cache) = self.programs.write() {
            cache.insert(loaded.program.code.to_string(), Arc::clone(loaded));
        }
    }

    /// The current revision of a program, compiled. Reads the revision from the database
    /// every time (another process may have changed the program) and recompiles only when
    /// it changed.
    pub async fn program(&self, code: &str) -> Result<Option<Arc<LoadedProgram>>> {
        let current: Option<(i64, i32)> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as("SELECT id, revision FROM programs WHERE code = ?1")
                    .bind(code)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as("SELECT id, revision FROM programs WHERE code = $1")
                    .bind(code)
                    .fetch_optional(pool)
                    .await?
            }
        };
        let Some((id, revision)) = current else {
            return Ok(None);
        };
        let cached = self.programs.read().ok().and_then(|c| c.get(code).cloned());
        if let Some(cached) = cached.filter(|c| c.id == id && c.revision == revision) {
            return Ok(Some(cached));
        }
        let definition: String = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT definition FROM programs WHERE id = ?1")
                    .bind(id)
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT definition::text FROM programs WHERE id = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await?
            }
        };
        let document: ProgramDocument = serde_json::from_str(&definition)?;
        let program = Program::compile(&document, Some(code)).map_err(|problems| {
            StoreError::Inconsistent(format!("stored program {code}: {}", problems[0]))
        })?;
        let loaded = Arc::new(LoadedProgram {
            id,
            revision,
            program,
        });
        self.cache_program(&loaded);
        Ok(Some(loaded))
    }

    /// The program as this process last read it, without asking the database (`None` if
    /// it was never read). Another process may have changed it since: for journals, post
    /// with [`Store::post_realtime`], which refuses a stale revision with
    /// [`StoreError::ProgramChanged`].
    pub fn cached_program(&self, code: &str) -> Option<Arc<LoadedProgram>> {
        self.programs.read().ok().and_then(|c| c.get(code).cloned())
    }

    /// The program, or [`StoreError::UnknownProgram`].
    pub async fn require_program(&self, code: &str) -> Result<Arc<LoadedProgram>> {
        self.program(code)
            .await?
            .ok_or_else(|| StoreError::UnknownProgram(code.to_owned()))
    }

    /// Every program, by code.
    pub async fn programs(&self) -> Result<Vec<ProgramSummary>> {
        match &self.db {
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT code, name, revision, updated_at FROM programs ORDER BY code",
                )
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(ProgramSummary {
                            code: r.try_get(0)?,
                            name: r.try_get(1)?,
                            revision: r.try_get(2)?,
                            updated_at: instant(r.try_get(3)?)?,
                        })
                    })
                    .collect()
            }
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT code, name, revision, updated_at FROM programs ORDER BY code",
                )
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(ProgramSummary {
                            code: r.try_get(0)?,
                            name: r.try_get(1)?,
                            revision: r.try_get(2)?,
                            updated_at: r.try_get(3)?,
                        })
                    })
                    .collect()
            }
        }
    }
}
