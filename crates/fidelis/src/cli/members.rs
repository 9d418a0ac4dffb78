//! `fidelis members …`: enrollment, one at a time or from a file, and status.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Subcommand;
use fidelis_core::ids::ExternalId;
use fidelis_core::ledger::MemberStatus;
use fidelis_store::{Enrollment, StoreError};
use serde_json::{Map, Value};

use super::{EXIT_REJECTED, connect, parse_instant, program};

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Enroll one member.
    Enroll {
        #[arg(long)]
        program: String,
        /// The member's external id (the operator's customer number).
        member: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// RFC 3339; now when absent.
        #[arg(long)]
        enrolled_at: Option<String>,
        /// More profile fields, as a JSON object.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Enroll members from an NDJSON file: {"member": "…", "profile": {…}, "enrolled_at": "…"}
    /// per line. A line may also bring the member's state from another system — `balances`
    /// ([{currency, points, earned_at, expires_at?, available_at?}]), `tiers` ([{group, tier,
    /// since, valid_until?, progress?}]), `promotions` ([{promotion, progress}]) — written
    /// as one `opening` journal, once, for a member without journals.
    Import {
        #[arg(long)]
        program: String,
        file: PathBuf,
    },
    /// Set a member's status: active, suspended (no earning or redemption) or closed.
    Status {
        #[arg(long)]
        program: String,
        member: String,
        #[arg(value_parser = ["active", "suspended", "closed"])]
        status: String,
    },
}

pub async fn run(database: &str, command: MembersCommand) -> Result<ExitCode> {
    match command {
        MembersCommand::Enroll {
            program: code,
            member,
            name,
            email,
            enrolled_at,
            profile,
        } => {
            let mut fields: Map<String, Value> = match profile {
                Some(raw) => {
                    match serde_json::from_str(&raw).context("--profile must be a JSON object")? {
                        Value::Object(map) => map,
                        _ => bail!("--profile must be a JSON object"),
                    }
                }
                None => Map::new(),
            };
            if let Some(name) = name {
                fields.insert("name".into(), name.into());
            }
            if let Some(email) = email {
                fields.insert("email".into(), email.into());
            }
            if let Some(reason) = fidelis_store::unstorable_json(&Value::Object(fields.clone())) {
                bail!("--profile: {reason}");
            }
            let enrollment = Enrollment {
                external_id: ExternalId::parse(&member)
                    .map_err(|e| anyhow::anyhow!("member {member:?} {e}"))?,
                profile: Value::Object(fields),
                enrolled_at: enrolled_at
                    .as_deref()
                    .map(parse_instant)
                    .transpose()?
                    .unwrap_or_else(Utc::now),
            };
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            match store.enroll(&program, &enrollment, Utc::now()).await {
                Ok(m) => {
                    println!("enrolled {} in {}", m.external_id, program.program.code);
                    Ok(ExitCode::SUCCESS)
                }
                Err(StoreError::MemberExists(m)) => {
                    bail!("member {m:?} is already enrolled in {code}")
                }
                Err(e) => Err(e.into()),
            }
        }
        MembersCommand::Import {
            program: code,
            file,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let (mut batch, mut enrolled, mut refused) = (Vec::new(), 0u64, 0u64);
            let (mut opened, mut already, mut existed) = (0u64, 0u64, 0u64);
            // Enrolls a batch; members already enrolled are counted, not enrolled again.
            let flush = async |batch: &mut Vec<Enrollment>,
                               enrolled: &mut u64,
                               existed: &mut u64|
                   -> Result<()> {
                let inserted = store.enroll_many(&program, batch, Utc::now()).await?;
                *enrolled += inserted;
                *existed += batch.len() as u64 - inserted;
                batch.clear();
                Ok(())
            };
            for (i, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", file.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                if let Some(document) = opening(&line) {
                    // Enrollments before it first, in file order.
                    flush(&mut batch, &mut enrolled, &mut existed).await?;
                    match store
                        .open_member(
                            &program,
                            &document,
                            Utc::now(),
                            &fidelis_store::Actor::cli(),
                        )
                        .await
                    {
                        Ok(o) if o.replayed => already += 1,
                        Ok(o) => {
                            opened += 1;
                            enrolled += u64::from(o.enrolled);
                        }
                        Err(StoreError::Refused(code, reason)) => {
                            refused += 1;
                            eprintln!("line {}: {code}: {reason}", i + 1);
                        }
                        Err(e) => return Err(e.into()),
                    }
                    continue;
                }
                match enrollment(&line) {
                    Ok(e) => batch.push(e),
                    Err(reason) => {
                        refused += 1;
                        eprintln!("line {}: {reason}", i + 1);
                    }
                }
                if batch.len() == 10_000 {
                    flush(&mut batch, &mut enrolled, &mut existed).await?;
                }
            }
            flush(&mut batch, &mut enrolled, &mut existed).await?;
            println!(
                "{enrolled} member(s) enrolled, {existed} already enrolled, {opened} opened with their balances ({already} already), {refused} line(s) refused"
            );
            Ok(if refused > 0 {
                ExitCode::from(EXIT_REJECTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        MembersCommand::Status {
            program: code,
            member,
            status,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let status = MemberStatus::parse(&status).context("status")?;
            match store
                .set_member_status(
                    &program,
                    &member,
                    status,
                    Utc::now(),
                    &fidelis_store::Actor::cli(),
                )
                .await
            {
                Ok(m) => {
                    println!("{} is {}", m.external_id, status.name());
                    Ok(ExitCode::SUCCESS)
                }
                Err(StoreError::UnknownMember(m)) => bail!("no member {m:?} in {code}"),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// A line bringing a member's state (balances, tiers or promotion progress), if it is one.
fn opening(line: &str) -> Option<fidelis_core::lifecycle::OpeningDocument> {
    let document: fidelis_core::lifecycle::OpeningDocument = serde_json::from_str(line).ok()?;
    (!document.balances.is_empty() || !document.tiers.is_empty() || !document.promotions.is_empty())
        .then_some(document)
}

fn enrollment(line: &str) -> std::result::Result<Enrollment, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        member: String,
        #[serde(default)]
        profile: Option<Map<String, Value>>,
        #[serde(default)]
        enrolled_at: Option<String>,
    }
    let l: Line = serde_json::from_str(line).map_err(|e| format!("not a member line: {e}"))?;
    let profile = Value::Object(l.profile.unwrap_or_default());
    if let Some(reason) = fidelis_store::unstorable_json(&profile) {
        return Err(format!("profile: {reason}"));
    }
    Ok(Enrollment {
        external_id: ExternalId::parse(&l.member).map_err(|e| format!("member {e}"))?,
        profile,
        enrolled_at: match l.enrolled_at {
            Some(raw) => parse_instant(&raw).map_err(|e| e.to_string())?,
            None => Utc::now(),
        },
    })
}
