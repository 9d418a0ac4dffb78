//! `fidelis liability`: the program's points liability as of an instant.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;

use super::{connect, program};

/// The points members hold as of an instant (now by default), valued at each currency's
/// `value_per_point`, with each partner's share, the expected breakage from the program's
/// own history and month-end balances — as JSON, summed in the database.
#[derive(Debug, Args)]
pub struct LiabilityArgs {
    #[arg(long)]
    program: String,
    /// RFC 3339; now when absent.
    #[arg(long)]
    as_of: Option<DateTime<Utc>>,
}

pub async fn run(database: &str, args: LiabilityArgs) -> Result<ExitCode> {
    let store = connect(database).await?;
    let program = program(&store, &args.program).await?;
    let l = store
        .liability(&program, args.as_of.unwrap_or_else(Utc::now))
        .await?;
    let money = &program.program.money_currency;
    let amount = |v: i64| money.format(fidelis_core::money::MinorUnits(v));
    let report = serde_json::json!({
        "as_of": l.as_of,
        "money_currency": l.money_currency,
        "currencies": l.currencies.iter().map(|c| serde_json::json!({
            "currency": c.currency,
            "value_per_point": c.value_per_point.normalize().to_string(),
            "outstanding_points": c.outstanding,
            "value": amount(c.value),
            "breakage_rate": c.breakage_rate,
            "expected_breakage_points": c.expected_breakage,
            "net_value": c.net_value.map(amount),
        })).collect::<Vec<_>>(),
        "partners": l.partners.iter().map(|p| serde_json::json!({
            "partner": p.partner, "currency": p.currency,
            "outstanding_points": p.outstanding, "value": amount(p.value),
        })).collect::<Vec<_>>(),
        "history": l.history.iter().map(|h| serde_json::json!({
            "month": h.month, "currency": h.currency,
            "outstanding_points": h.outstanding, "value": amount(h.value),
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
