//! `fidelis settlement`: a partner's settlement statement for a period, and closing it.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use fidelis_store::{Actor, StoreError};

use super::{EXIT_REJECTED, connect, program};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

/// A partner's statement for [from, to): points issued and redeemed, the money owed each
/// way and the net; with `--close`, the period is closed and its statement never changes
/// again (later journals dated inside it go to the next statement's adjustments).
#[derive(Debug, Args)]
pub struct SettlementArgs {
    #[arg(long)]
    program: String,
    #[arg(long)]
    partner: String,
    /// The period's start, RFC 3339 (`2026-05-01T00:00:00+02:00`).
    #[arg(long)]
    from: DateTime<Utc>,
    /// Its end, excluded.
    #[arg(long)]
    to: DateTime<Utc>,
    /// Close the period (it must be over, and start where the last closed one ended).
    #[arg(long)]
    close: bool,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

pub async fn run(database: &str, args: SettlementArgs) -> Result<ExitCode> {
    let store = connect(database).await?;
    let program = program(&store, &args.program).await?;
    let result = if args.close {
        store
            .close_settlement(
                &program,
                &args.partner,
                args.from,
                args.to,
                Utc::now(),
                &Actor::cli(),
            )
            .await
            .map(|(s, _)| s)
    } else {
        store
            .settlement(&program, &args.partner, args.from, args.to)
            .await
    };
    let statement = match result {
        Ok(s) => s,
        Err(StoreError::Refused(code, detail)) => {
            eprintln!("refused ({code}): {detail}");
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
        Err(e) => bail!(e),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&statement)?),
        Format::Csv => print!("{}", statement.to_csv()),
    }
    Ok(ExitCode::SUCCESS)
}
