//! `fidelis bench …` (hidden): the pieces of the end-to-end import benchmark that need
//! the product's code. `cargo xtask bench-import` drives them.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::connect;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Write a members file and a journals file of generated purchases.
    Generate {
        #[arg(long)]
        members: u64,
        #[arg(long)]
        journals: u64,
        #[arg(long)]
        members_out: PathBuf,
        #[arg(long)]
        journals_out: PathBuf,
    },
    /// The physical limit: per journal only insert the journal row, insert one ledger row
    /// and update the member's balance row, set-based, `batch` journals per transaction.
    BareBatch {
        #[arg(long)]
        members: u64,
        #[arg(long)]
        journals: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
    },
}

pub async fn run(database: &str, command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Generate {
            members,
            journals,
            members_out,
            journals_out,
        } => {
            let mut out = BufWriter::new(
                std::fs::File::create(&members_out)
                    .with_context(|| members_out.display().to_string())?,
            );
            for m in 0..members {
                writeln!(
                    out,
                    r#"{{"member":"M{m:07}","profile":{{"name":"Member {m}"}},"enrolled_at":"2025-01-01T00:00:00Z"}}"#
                )?;
            }
            out.flush()?;
            let mut out = BufWriter::new(
                std::fs::File::create(&journals_out)
                    .with_context(|| journals_out.display().to_string())?,
            );
            for line in fidelis_store::bare::purchase_lines(members, journals) {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::BareBatch {
            members,
            journals,
            batch,
        } => {
            let store = connect(database).await?;
            let seconds = fidelis_store::bare::run(&store, members, journals, batch).await?;
            println!(
                "{}",
                serde_json::json!({"journals": journals, "seconds": seconds, "per_second": journals as f64 / seconds})
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
