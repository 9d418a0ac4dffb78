//! `fidelis balance`: a member's balances and what expires when.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::Utc;

use super::{connect, parse_instant, program};

#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[arg(long)]
    program: String,
    member: String,
    /// RFC 3339; now when absent.
    #[arg(long)]
    as_of: Option<String>,
    /// Print JSON instead of a table (with every date).
    #[arg(long)]
    json: bool,
    /// List every expiry and release date (the table shows the first 5 of each).
    #[arg(long)]
    all: bool,
}

pub async fn run(database: &str, args: BalanceArgs) -> Result<ExitCode> {
    let as_of = args
        .as_of
        .as_deref()
        .map(parse_instant)
        .transpose()?
        .unwrap_or_else(Utc::now);
    let store = connect(database).await?;
    let program = program(&store, &args.program).await?;
    let Some(member) = store.member(&program, &args.member).await? else {
        bail!("no member {:?} in {}", args.member, args.program);
    };
    let balances = store.balances(&program, &member, as_of).await?;
    if args.json {
        let value: Vec<serde_json::Value> = balances
            .iter()
            .map(|b| {
                serde_json::json!({
                    "currency": b.currency, "kind": b.kind, "available": b.available, "pending": b.pending,
                    "arrears": b.arrears,
                    "expiring": b.expiring.iter().map(|s| serde_json::json!({"at": s.at.to_rfc3339(), "points": s.points})).collect::<Vec<_>>(),
                    "releasing": b.releasing.iter().map(|s| serde_json::json!({"at": s.at.to_rfc3339(), "points": s.points})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"member": member.external_id, "status": member.status.name(), "balances": value})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let tz = program.program.time_zone;
    let shown = if args.all { usize::MAX } else { 5 };
    println!(
        "{} ({}) as of {}",
        member.external_id,
        member.status.name(),
        as_of.with_timezone(&tz).to_rfc3339()
    );
    for b in &balances {
        let arrears = if b.arrears > 0 {
            format!(", {} in arrears", b.arrears)
        } else {
            String::new()
        };
        println!(
            "  {:<12} {:>10} available, {:>8} pending{arrears}  ({})",
            b.currency, b.available, b.pending, b.kind
        );
        for s in b.releasing.iter().take(shown) {
            println!(
                "      {:>8} become available {}",
                s.points,
                s.at.with_timezone(&tz).format("%Y-%m-%d %H:%M")
            );
        }
        if b.releasing.len() > shown {
            println!(
                "      … {} more release dates (--all lists them)",
                b.releasing.len() - shown
            );
        }
        for s in b.expiring.iter().take(shown) {
            println!(
                "      {:>8} expire {}",
                s.points,
                s.at.with_timezone(&tz).format("%Y-%m-%d %H:%M")
            );
        }
        if b.expiring.len() > shown {
            println!(
                "      … {} more expiry dates (--all lists them)",
                b.expiring.len() - shown
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
