//! `fidelis jobs run`: expiries and pending releases due, as of an instant.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use clap::Subcommand;

use super::{connect, parse_instant, program};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Settle every expiry and pending release due as of an instant. Idempotent: running
    /// it again for the same instant changes nothing.
    Run {
        /// One program; all programs when absent.
        #[arg(long)]
        program: Option<String>,
        /// RFC 3339; now when absent. Never after now (five minutes of clock skew allowed):
        /// what the jobs settle cannot be undone.
        #[arg(long)]
        as_of: Option<String>,
    },
}

pub async fn run(database: &str, command: JobsCommand) -> Result<ExitCode> {
    let JobsCommand::Run {
        program: code,
        as_of,
    } = command;
    let as_of = as_of
        .as_deref()
        .map(parse_instant)
        .transpose()?
        .unwrap_or_else(Utc::now);
    let as_of = fidelis_core::lifecycle::jobs_as_of(as_of, Utc::now())
        .map_err(|refused| anyhow::anyhow!("{}", refused.detail))?;
    let store = connect(database).await?;
    let codes = match code {
        Some(code) => vec![code],
        None => store
            .programs()
            .await?
            .into_iter()
            .map(|p| p.code)
            .collect(),
    };
    for code in codes {
        let program = program(&store, &code).await?;
        let report = store.run_jobs(&program, as_of).await?;
        // Audited as the API's runs are: who settled what, as of when.
        let mut audit =
            fidelis_store::Actor::cli().entry(Utc::now(), "jobs.run", Some(&code), None);
        audit.after = Some(serde_json::json!({
            "as_of": as_of, "members": report.members, "settlements": report.journals,
            "scheduled_rewards": report.scheduled_rewards, "holds_released": report.holds_released,
            "segments": report.segments.as_ref().map(|r| &r.counts)
        }));
        store.append_audit(&audit).await?;
        println!(
            "{code}: as of {}, {} member(s) settled, {} settlement journal(s) written, {} scheduled reward(s) awarded, {} expired hold(s) released",
            as_of.to_rfc3339(),
            report.members,
            report.journals,
            report.scheduled_rewards,
            report.holds_released
        );
        if let Some(segments) = &report.segments {
            let counts: Vec<String> = segments
                .counts
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            println!(
                "{code}: segments as of {}{}: {}",
                segments.as_of.to_rfc3339(),
                if segments.already {
                    " (refreshed before; unchanged)"
                } else {
                    ""
                },
                counts.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
