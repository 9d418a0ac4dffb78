//! The subcommands, one module each, and what they share.

pub mod analytics;
pub mod balance;
pub mod bench;
mod bench_analytics;
pub mod catalog;
pub mod import;
pub mod jobs;
pub mod liability;
pub mod members;
pub mod program;
pub mod serve;
pub mod settlement;
pub mod simulate;
pub mod vouchers;

use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use fidelis_core::program::{Problem, Program, ProgramDocument};
use fidelis_store::{LoadedProgram, Store, StoreError};

/// Exit code for "done, but some input was refused": the report lists it.
pub const EXIT_REJECTED: u8 = 3;
/// Exit code for an invalid document (every problem is printed).
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub async fn connect(database: &str) -> Result<Store> {
    Store::connect(database)
        .await
        .with_context(|| format!("opening the database {database}"))
}

pub async fn program(store: &Store, code: &str) -> Result<std::sync::Arc<LoadedProgram>> {
    match store.program(code).await? {
        Some(p) => Ok(p),
        None => bail!(
            "no program {code:?} in this database (create one with `fidelis program apply FILE`)"
        ),
    }
}

/// Parses a program definition document, JSON or YAML (by extension; YAML is a superset
/// of JSON, so anything else is read as YAML). Structural errors name their path.
pub fn parse_program_document(
    text: &str,
    path: &Path,
) -> std::result::Result<ProgramDocument, Vec<Problem>> {
    let structural = |path: String, message: String| {
        vec![Problem {
            path: if path == "." {
                "(document)".into()
            } else {
                path
            },
            message,
        }]
    };
    if path.extension().is_some_and(|e| e == "json") {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| structural(e.path().to_string(), e.inner().to_string()))
    } else {
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| structural(e.path().to_string(), e.inner().to_string()))
    }
}

/// Compiles a document, or prints every problem.
pub fn compile(
    document: &ProgramDocument,
    code: Option<&str>,
) -> std::result::Result<Program, Vec<Problem>> {
    Program::compile(document, code)
}

pub fn print_problems(problems: &[Problem]) {
    eprintln!(
        "The program definition has {} problem(s); nothing was changed:",
        problems.len()
    );
    for p in problems {
        eprintln!("  {}: {}", p.path, p.message);
    }
}

/// Parses an RFC 3339 instant given on the command line.
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| {
            format!("{raw:?} is not an RFC 3339 instant such as 2026-11-25T00:00:00+01:00")
        })
}

/// Turns a store refusal into the CLI's messages, keeping other errors as they are.
pub fn explain(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::InvalidProgram(problems) => {
            print_problems(&problems);
            anyhow::anyhow!("invalid program definition")
        }
        other => other.into(),
    }
}
