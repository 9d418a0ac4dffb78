//! `fidelis vouchers issue`: vouchers of one definition in bulk — one per member of a
//! list, or a number given to no one (for print, a partner, a campaign) — with progress,
//! resumable, and the codes written out for the operator to send.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Subcommand;
use fidelis_store::Actor;

use super::{connect, program};

#[derive(Debug, Subcommand)]
pub enum VouchersCommand {
    /// Issue vouchers of a definition in bulk, in transactions of 500.
    ///
    /// `--run` names the run: running the same command again after it stopped issues only
    /// what it had not, and `--codes` then lists the whole run.
    Issue {
        #[arg(long)]
        program: String,
        /// The voucher definition's code (the program's `vouchers:`).
        #[arg(long)]
        definition: String,
        /// A file of members' external ids, one per line: a voucher each.
        #[arg(long, conflicts_with = "count", required_unless_present = "count")]
        members: Option<PathBuf>,
        /// This many vouchers given to no member.
        #[arg(long)]
        count: Option<usize>,
        /// The run's name, unique in the program (e.g. `spring-2027-print`).
        #[arg(long)]
        run: String,
        /// Write `member,code` lines (CSV with a header) of the run to this file.
        #[arg(long)]
        codes: Option<PathBuf>,
    },
}

/// The most vouchers one run may ask for.
const MAX_RUN: usize = 10_000_000;

pub async fn run(database: &str, command: VouchersCommand) -> Result<ExitCode> {
    let VouchersCommand::Issue {
        program: code,
        definition,
        members,
        count,
        run,
        codes,
    } = command;
    if run.is_empty() || run.len() > 100 || run.chars().any(char::is_control) {
        bail!("--run must be 1 to 100 printable characters");
    }
    let recipients: Vec<Option<String>> = match (members, count) {
        (Some(path), _) => {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut list = Vec::new();
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
                let member = line.trim();
                if !member.is_empty() {
                    list.push(Some(member.to_owned()));
                }
            }
            list
        }
        (None, Some(n)) => vec![None; n],
        (None, None) => bail!("give --members FILE or --count N"),
    };
    if recipients.is_empty() || recipients.len() > MAX_RUN {
        bail!("a run issues 1 to {MAX_RUN} vouchers");
    }
    let store = connect(database).await?;
    let program = program(&store, &code).await?;
    let total = recipients.len();
    let mut stderr = std::io::stderr();
    let issued = store
        .issue_vouchers_bulk(
            &program,
            &definition,
            &recipients,
            &run,
            Utc::now(),
            &Actor::cli(),
            |done| {
                let _ = write!(stderr, "\rissuing vouchers: {done}/{total}");
                let _ = stderr.flush();
            },
        )
        .await;
    eprintln!();
    let issued = issued?;
    println!(
        "{code}: run {run:?} of {definition:?}: {issued} voucher(s) issued now, {} already issued by an earlier attempt",
        total as u64 - issued.min(total as u64)
    );
    if let Some(path) = codes {
        let list = store.bulk_run_codes(&program, &run).await?;
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(out, "member,code")?;
        for (member, code) in &list {
            // External ids are free text: quoted as CSV wants when they need it.
            let member = member.as_deref().unwrap_or("");
            if member.contains([',', '"', '\n', '\r']) {
                writeln!(out, "\"{}\",{code}", member.replace('"', "\"\""))?;
            } else {
                writeln!(out, "{member},{code}")?;
            }
        }
        out.flush()?;
        println!("{} code(s) written to {}", list.len(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}
