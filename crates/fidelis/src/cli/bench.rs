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
    /// Member search on a large program: enrols `members` generated people (names, emails,
    /// phones) into program `search` unless there already, then times searches and lists
    /// against a lookup by external id (the baseline), each `queries` times.
    MembersSearch {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value_t = 200)]
        queries: u64,
    },
}

use fidelis_web::demo::Lcg;

const SYLLABLES: [&str; 40] = [
    "an", "ber", "car", "dal", "el", "fin", "gor", "han", "is", "jo", "kel", "lin", "mar", "nor",
    "ol", "per", "quin", "ros", "sal", "tor", "ul", "ven", "wil", "xan", "yor", "zel", "bra",
    "cle", "dre", "fro", "gla", "hel", "ri", "mo", "na", "te", "lu", "si", "ka", "do",
];

/// Person `m`: a first name of two syllables (1,600), a surname of three (64,000).
fn person(rng: &mut Lcg) -> (String, String) {
    let mut word = |parts: usize| {
        let w: String = (0..parts)
            .map(|_| SYLLABLES[rng.next(40) as usize])
            .collect();
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    (word(2), word(3))
}

/// Median and 95th percentile of `samples` (milliseconds).
fn spread(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
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
        BenchCommand::MembersSearch { members, queries } => {
            members_search(database, members, queries).await
        }
    }
}

async fn members_search(database: &str, members: u64, queries: u64) -> Result<ExitCode> {
    use chrono::{Duration, TimeZone, Utc};
    use fidelis_core::members::SearchQuery;
    use fidelis_store::{Enrollment, MemberQuery, MemberSort};
    use std::time::Instant;

    let store = connect(database).await?;
    let start = Utc
        .with_ymd_and_hms(2021, 1, 1, 0, 0, 0)
        .single()
        .context("an instant")?;
    let program = match store.program("search").await? {
        Some(p) => p,
        None => {
            let template =
                fidelis_core::templates::find("retail").context("the retail template")?;
            let document: fidelis_core::program::ProgramDocument =
                yaml_serde::from_str(template.source).context("the retail template")?;
            let program = fidelis_core::program::Program::compile(&document, Some("search"))
                .map_err(|p| anyhow::anyhow!("retail template: {}", p[0]))?;
            store
                .put_program(&program, start, &fidelis_store::Actor::cli())
                .await?;
            store.require_program("search").await?
        }
    };
    let people = |from: u64, to: u64| {
        (from..to).map(|m| {
            let mut rng = Lcg(m.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
            let (first, last) = person(&mut rng);
            (m, first, last)
        })
    };
    let enrolled = store
        .list_members(
            &program,
            &MemberQuery {
                sort: MemberSort::ExternalIdDesc,
                limit: 1,
                ..MemberQuery::default()
            },
        )
        .await?
        .members
        .first()
        .and_then(|m| m.external_id.strip_prefix('S')?.parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    if enrolled < members {
        let began = Instant::now();
        let total = members - enrolled;
        for from in (enrolled..members).step_by(10_000) {
            let batch: Vec<Enrollment> = people(from, (from + 10_000).min(members))
                .map(|(m, first, last)| Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse(&format!("S{m:08}"))
                        .expect("generated ids are valid"),
                    profile: serde_json::json!({
                        "name": format!("{first} {last}"),
                        "email": format!("{}.{}{m}@example.com", first.to_lowercase(), last.to_lowercase()),
                        "phone": format!("+44 7{:03} {:06}", m / 1_000_000 % 1_000, m % 1_000_000),
                    }),
                    enrolled_at: start + Duration::seconds((m * 157) as i64),
                })
                .collect();
            store.enroll_many(&program, &batch, Utc::now()).await?;
        }
        let seconds = began.elapsed().as_secs_f64();
        eprintln!(
            "enrolled {total} members in {seconds:.1} s ({:.0}/s)",
            total as f64 / seconds
        );
    }
    store.analyze_for_bench().await?;

    // Each kind of query, on members spread over the whole range.
    let mut rng = Lcg(20_261_202);
    let mut samples: Vec<(&str, Vec<f64>, usize)> = Vec::new();
    let kinds = [
        "lookup by external id (baseline)",
        "search a surname",
        "search first and last name",
        "search an email prefix",
        "search a phone prefix",
        "search an external id prefix",
        "list newest first, page 1",
        "list by external id, a page deep in",
        "list active, enrolled in a month",
    ];
    for kind in kinds {
        let mut times = Vec::new();
        let mut found = 0usize;
        for _ in 0..queries {
            let m = rng.next(members);
            let (_, first, last) = people(m, m + 1).next().context("a person")?;
            let search = |q: &str| SearchQuery::parse(q).map_err(|e| anyhow::anyhow!(e));
            let mut query = MemberQuery {
                limit: 50,
                ..MemberQuery::default()
            };
            match kind {
                "search a surname" => query.search = Some(search(&last)?),
                "search first and last name" => {
                    query.search = Some(search(&format!("{} {}", &first[..3], last))?)
                }
                "search an email prefix" => {
                    query.search = Some(search(&format!(
                        "{}.{}",
                        first.to_lowercase(),
                        &last.to_lowercase()[..4]
                    ))?)
                }
                "search a phone prefix" => {
                    query.search = Some(search(&format!(
                        "+44 7{:03} {:04}",
                        m / 1_000_000 % 1_000,
                        m % 1_000_000 / 100
                    ))?)
                }
                "search an external id prefix" => {
                    query.search = Some(search(&format!("S{:06}", m / 100))?)
                }
                "list newest first, page 1" => query.sort = MemberSort::EnrolledDesc,
                "list by external id, a page deep in" => {
                    query.after = Some(fidelis_store::MemberCursor::ExternalId(format!("S{m:08}")))
                }
                "list active, enrolled in a month" => {
                    let from = start + Duration::seconds((m * 157) as i64);
                    query.status = Some(fidelis_core::ledger::MemberStatus::Active);
                    query.enrolled_from = Some(from);
                    query.enrolled_until = Some(from + Duration::days(30));
                    query.sort = MemberSort::Enrolled;
                }
                _ => {}
            }
            let began = Instant::now();
            if kind.starts_with("lookup") {
                found += usize::from(store.member(&program, &format!("S{m:08}")).await?.is_some());
            } else {
                found += store.list_members(&program, &query).await?.members.len();
            }
            times.push(began.elapsed().as_secs_f64() * 1_000.0);
        }
        samples.push((kind, times, found));
    }
    let (baseline, _) = spread(samples[0].1.clone());
    let report: Vec<serde_json::Value> = samples
        .into_iter()
        .map(|(kind, times, found)| {
            let (median, p95) = spread(times);
            serde_json::json!({
                "query": kind,
                "median_ms": (median * 1000.0).round() / 1000.0,
                "p95_ms": (p95 * 1000.0).round() / 1000.0,
                "vs_lookup": (median / baseline * 10.0).round() / 10.0,
                "found_per_query": found as f64 / queries as f64,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "database": store.dialect(), "members": members, "queries": queries, "results": report,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
