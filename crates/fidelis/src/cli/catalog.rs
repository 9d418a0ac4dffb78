//! `fidelis catalog …`: the reward catalog from a file, and a look at it.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Subcommand;
use fidelis_core::catalog::CatalogItem;
use fidelis_store::{Actor, StoreError};

use super::{EXIT_REJECTED, connect, program};

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Create or replace items from an NDJSON file, one item per line: {"code", "name",
    /// "currency", "points", "tier_prices", "tiers", "available_from", "available_until",
    /// "partner", "voucher", "active", "stock"}. Each line is checked against the program;
    /// bad lines are reported by number and reason, the others applied (audited).
    Import {
        #[arg(long)]
        program: String,
        file: PathBuf,
    },
    /// The items, with price and stock.
    List {
        #[arg(long)]
        program: String,
    },
}

pub async fn run(database: &str, command: CatalogCommand) -> Result<ExitCode> {
    match command {
        CatalogCommand::Import {
            program: code,
            file,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let (mut applied, mut rejected) = (0u64, 0u64);
            for (n, line) in reader.lines().enumerate() {
                let number = n + 1;
                let line = line.with_context(|| format!("reading line {number}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let parsed =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line)
                        .map_err(|e| e.to_string())
                        .and_then(|mut fields| {
                            let stock = match fields.remove("stock") {
                                None | Some(serde_json::Value::Null) => None,
                                Some(v) => Some(v.as_i64().ok_or("stock must be a whole number")?),
                            };
                            let item: CatalogItem =
                                serde_json::from_value(serde_json::Value::Object(fields))
                                    .map_err(|e| e.to_string())?;
                            Ok::<_, String>((item, stock))
                        });
                let result = match parsed {
                    Err(reason) => Err(reason),
                    Ok((item, stock)) => store
                        .put_catalog_item(&program, &item, stock, Utc::now(), &Actor::cli())
                        .await
                        .map_err(|e| match e {
                            StoreError::Refused(_, detail) => detail,
                            other => other.to_string(),
                        }),
                };
                match result {
                    Ok(_) => applied += 1,
                    Err(reason) => {
                        rejected += 1;
                        eprintln!("line {number}: {reason}");
                    }
                }
            }
            println!("{code}: {applied} item(s) written, {rejected} line(s) rejected");
            Ok(if rejected > 0 {
                ExitCode::from(EXIT_REJECTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        CatalogCommand::List { program: code } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            println!(
                "{:<24} {:<32} {:>10} {:<10} {:>8} {}",
                "CODE", "NAME", "POINTS", "CURRENCY", "STOCK", "ACTIVE"
            );
            for e in store.catalog(&program, true).await? {
                println!(
                    "{:<24} {:<32} {:>10} {:<10} {:>8} {}",
                    e.item.code,
                    e.item.name.chars().take(32).collect::<String>(),
                    e.item.points,
                    e.item.currency,
                    e.stock.map_or("∞".to_owned(), |s| s.to_string()),
                    if e.item.active { "yes" } else { "no" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
