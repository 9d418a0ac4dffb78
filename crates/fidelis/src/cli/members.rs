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
    /// List members: search, filter, sort; a table, CSV or NDJSON.
    ///
    /// `--search` matches the start of the external id, a word of the name, the email or
    /// the phone's digits (every word must match). Balances are as recorded by each
    /// member's last journal or job run.
    List {
        #[arg(long)]
        program: String,
        /// What to look for (e.g. `ann smi`, `+44 20 79`, `C-1004`).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, value_parser = ["active", "suspended", "closed"])]
        status: Option<String>,
        /// A tier code: members holding it.
        #[arg(long)]
        tier: Option<String>,
        /// Enrolled at or after (RFC 3339).
        #[arg(long)]
        enrolled_from: Option<String>,
        /// Enrolled before (RFC 3339).
        #[arg(long)]
        enrolled_until: Option<String>,
        /// The currency of --balance-min/--balance-max (the program's first by default).
        #[arg(long)]
        currency: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        balance_min: Option<i64>,
        #[arg(long, allow_hyphen_values = true)]
        balance_max: Option<i64>,
        #[arg(long, default_value = "external_id", allow_hyphen_values = true,
              value_parser = ["external_id", "-external_id", "enrolled_at", "-enrolled_at"])]
        sort: String,
        /// At most this many members (every match when absent).
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "ndjson"])]
        format: String,
    },
    /// Set a member's status: active, suspended (no earning or redemption) or closed.
    Status {
        #[arg(long)]
        program: String,
        member: String,
        #[arg(value_parser = ["active", "suspended", "closed"])]
        status: String,
    },
    /// Everything held about a member (and the members merged into it) as one JSON
    /// document: every table's rows, password and token hashes left out.
    Export {
        #[arg(long)]
        program: String,
        member: String,
        /// Write to this file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a member's personal data: profile, sign-in, claim notes and every copy of
    /// its external id and profile values. The member stays, closed, under a new
    /// pseudonymous id (printed), with every journal and balance unchanged.
    Erase {
        #[arg(long)]
        program: String,
        member: String,
        /// The member's external id again: erasure cannot be undone.
        #[arg(long)]
        confirm: String,
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
        MembersCommand::List {
            program: code,
            search,
            status,
            tier,
            enrolled_from,
            enrolled_until,
            currency,
            balance_min,
            balance_max,
            sort,
            limit,
            format,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let p = &program.program;
            let mut query = fidelis_store::MemberQuery {
                search: search
                    .as_deref()
                    .map(fidelis_core::members::SearchQuery::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--search: {e}"))?,
                status: status.as_deref().and_then(MemberStatus::parse),
                tier,
                enrolled_from: enrolled_from.as_deref().map(parse_instant).transpose()?,
                enrolled_until: enrolled_until.as_deref().map(parse_instant).transpose()?,
                currency,
                balance_min,
                balance_max,
                sort: fidelis_store::MemberSort::parse(&sort).context("--sort")?,
                after: None,
                limit: 1_000,
            };
            let currencies: Vec<String> = p.currencies.iter().map(|c| c.code.to_string()).collect();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut csv = (format == "csv").then(|| csv::Writer::from_writer(std::io::stdout()));
            if let Some(w) = csv.as_mut() {
                let mut header: Vec<String> = [
                    "member",
                    "status",
                    "name",
                    "email",
                    "phone",
                    "birthday",
                    "enrolled_at",
                    "tiers",
                ]
                .map(str::to_owned)
                .to_vec();
                for c in &currencies {
                    header.push(format!("{c}_available"));
                    header.push(format!("{c}_pending"));
                }
                w.write_record(&header)?;
            }
            if format == "table" {
                use std::io::Write;
                writeln!(
                    out,
                    "{:<20} {:<9} {:<28} {:<32} {:<20} balances",
                    "member", "status", "name", "email", "enrolled"
                )?;
            }
            let mut shown = 0u64;
            loop {
                if let Some(max) = limit {
                    query.limit = (max - shown).min(1_000) as i64;
                    if query.limit == 0 {
                        break;
                    }
                }
                let page = store.list_members(&program, &query).await?;
                for m in &page.members {
                    use std::io::Write;
                    let text = |key: &str| {
                        m.profile
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    let tiers = m
                        .tiers
                        .iter()
                        .map(|(g, t)| format!("{g}:{t}"))
                        .collect::<Vec<_>>()
                        .join(";");
                    let balance = |c: &str| {
                        m.balances
                            .iter()
                            .find(|b| b.0 == c)
                            .map_or((0, 0), |b| (b.1, b.2))
                    };
                    match format.as_str() {
                        "csv" => {
                            let mut record = vec![
                                m.external_id.clone(),
                                m.status.name().to_owned(),
                                text("name"),
                                text("email"),
                                text("phone"),
                                text("birthday"),
                                m.enrolled_at.to_rfc3339(),
                                tiers,
                            ];
                            for c in &currencies {
                                let (available, pending) = balance(c);
                                record.push(available.to_string());
                                record.push(pending.to_string());
                            }
                            if let Some(w) = csv.as_mut() {
                                w.write_record(&record)?;
                            }
                        }
                        "ndjson" => {
                            let line = serde_json::json!({
                                "member": m.external_id,
                                "status": m.status.name(),
                                "profile": m.profile,
                                "enrolled_at": m.enrolled_at,
                                "tiers": m.tiers.iter().map(|(g, t)| serde_json::json!({"group": g, "tier": t})).collect::<Vec<_>>(),
                                "balances": m.balances.iter().map(|(c, a, p)| serde_json::json!({"currency": c, "available": a, "pending": p})).collect::<Vec<_>>(),
                            });
                            writeln!(out, "{line}")?;
                        }
                        _ => {
                            let balances = currencies
                                .iter()
                                .map(|c| {
                                    let (a, p) = balance(c);
                                    if p == 0 {
                                        format!("{c} {a}")
                                    } else {
                                        format!("{c} {a} (+{p} pending)")
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(", ");
                            writeln!(
                                out,
                                "{:<20} {:<9} {:<28} {:<32} {:<20} {balances}",
                                m.external_id,
                                m.status.name(),
                                text("name"),
                                text("email"),
                                m.enrolled_at.format("%Y-%m-%d %H:%M"),
                            )?;
                        }
                    }
                    shown += 1;
                }
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            use std::io::Write;
            out.flush()?;
            if let Some(w) = csv.as_mut() {
                w.flush()?;
            }
            if format == "table" {
                eprintln!("{shown} member(s)");
            }
            Ok(ExitCode::SUCCESS)
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
        MembersCommand::Export {
            program: code,
            member,
            out,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let document = match store.export_member(&program, &member, Utc::now()).await {
                Ok(d) => d,
                Err(StoreError::UnknownMember(m)) => bail!("no member {m:?} in {code}"),
                Err(e) => return Err(e.into()),
            };
            let text = serde_json::to_string_pretty(&document)?;
            match out {
                Some(path) => std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        MembersCommand::Erase {
            program: code,
            member,
            confirm,
        } => {
            if confirm != member {
                bail!("--confirm must repeat the member's external id: erasure cannot be undone");
            }
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            match store
                .erase_member(&program, &member, Utc::now(), &fidelis_store::Actor::cli())
                .await
            {
                Ok(done) => {
                    println!(
                        "erased {} member(s); the ledger lives on as {}",
                        done.members, done.member
                    );
                    for (table, rows) in &done.rows {
                        println!("  {table}: {rows} row(s)");
                    }
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
    if let Some(reason) = fidelis_core::members::profile_problem(&profile)
        .or_else(|| fidelis_store::unstorable_json(&profile).map(str::to_owned))
    {
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
