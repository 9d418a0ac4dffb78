//! `cargo xtask bench-members`: member search and listing on a large program; and
//! `cargo xtask bench-pages`: the console's pages on a large program.
//!
//! Enrols generated people (1,000,000 by default: names, emails, phones) into SQLite and a
//! throw-away PostgreSQL through the product's own code (`fidelis bench members-search`),
//! then times each kind of search and list against a lookup by external id on the same
//! database in the same run — the ratio is what to compare between runs and machines.

use std::process::Command;

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::{ensure_postgres, root, run_cmd};

/// Runs `fidelis bench SUBCOMMAND ARGS` on each database — SQLite in a file of `dir`, kept
/// between runs (generating the data is the slow part); PostgreSQL in a throw-away server —
/// prints each report with `print`, and writes them all to `dir/report.json`.
fn run_each(
    databases: &[String],
    dir_name: &str,
    sqlite_file: &str,
    bench: &[String],
    print: impl Fn(&str, &serde_json::Value) -> Result<()>,
) -> Result<()> {
    run_cmd(Command::new("cargo").args(["build", "--release", "-p", "fidelis"]))?;
    let bin = root().join("target/release/fidelis");
    let dir = root().join("target").join(dir_name);
    std::fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    for database in databases {
        let server;
        let url = match database.as_str() {
            "sqlite" => format!("sqlite://{}", dir.join(sqlite_file).display()),
            "postgres" => {
                ensure_postgres()?;
                server = PgServer::start(PgOptions {
                    durable: false,
                    watchdog: true,
                })
                .map_err(anyhow::Error::msg)?;
                server
                    .create_database("bench")
                    .map_err(anyhow::Error::msg)?
            }
            other => bail!("unknown database {other}: use sqlite or postgres"),
        };
        let out = Command::new(&bin)
            .arg("--database")
            .arg(&url)
            .arg("bench")
            .args(bench)
            .output()?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(out.status.success(), "the {database} run failed");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        print(database, &report)?;
        reports.push(report);
    }
    let file = dir.join("report.json");
    std::fs::write(&file, serde_json::to_string_pretty(&reports)?)?;
    println!("\nreport: {}", file.display());
    Ok(())
}

/// The options common to both benchmarks: `--databases` and the numeric ones named.
fn options(args: &[String], numbers: &mut [(&str, &mut u64)]) -> Result<Vec<String>> {
    let mut databases = vec!["sqlite".to_owned(), "postgres".to_owned()];
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        if flag == "--databases" {
            databases = value.split(',').map(str::to_owned).collect();
        } else if let Some((_, n)) = numbers.iter_mut().find(|(name, _)| *name == flag) {
            **n = value.parse()?;
        } else {
            bail!("unknown option {flag}");
        }
    }
    Ok(databases)
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut members, mut queries) = (1_000_000u64, 200u64);
    let databases = options(
        args,
        &mut [("--members", &mut members), ("--queries", &mut queries)],
    )?;
    let bench = [
        "members-search".to_owned(),
        "--members".to_owned(),
        members.to_string(),
        "--queries".to_owned(),
        queries.to_string(),
    ];
    run_each(
        &databases,
        "bench-members",
        &format!("members-{members}.db"),
        &bench,
        |database, report| {
            println!("\n{database}, {members} members, median of {queries} queries each:");
            println!(
                "  {:<40} {:>10} {:>10} {:>10} {:>8}",
                "query", "median ms", "p95 ms", "× lookup", "found"
            );
            for r in report["results"].as_array().context("results")? {
                println!(
                    "  {:<40} {:>10.3} {:>10.3} {:>10.1} {:>8.1}",
                    r["query"].as_str().unwrap_or(""),
                    r["median_ms"].as_f64().unwrap_or(0.0),
                    r["p95_ms"].as_f64().unwrap_or(0.0),
                    r["vs_lookup"].as_f64().unwrap_or(0.0),
                    r["found_per_query"].as_f64().unwrap_or(0.0),
                );
            }
            Ok(())
        },
    )
}

/// `cargo xtask bench-pages`: the console's member search, 360° view and dashboard on a
/// program of 1,000,000 members and 10,000,000 journals (by default) on SQLite and a
/// throw-away PostgreSQL (`fidelis bench pages`), against a member lookup in the same run.
pub fn run_pages(args: &[String]) -> Result<()> {
    let (mut members, mut journals, mut queries) = (1_000_000u64, 10_000_000u64, 200u64);
    let databases = options(
        args,
        &mut [
            ("--members", &mut members),
            ("--journals", &mut journals),
            ("--queries", &mut queries),
        ],
    )?;
    let bench = [
        "pages".to_owned(),
        "--members".to_owned(),
        members.to_string(),
        "--journals".to_owned(),
        journals.to_string(),
        "--queries".to_owned(),
        queries.to_string(),
    ];
    run_each(
        &databases,
        "bench-pages",
        &format!("pages-{members}-{journals}.db"),
        &bench,
        |database, report| {
            println!(
                "\n{database}, {} members, {} journals, {queries} requests each:",
                report["members"], report["journals"]
            );
            println!(
                "  {:<40} {:>10} {:>10} {:>10}",
                "page", "median ms", "p99 ms", "× lookup"
            );
            for r in report["results"].as_array().context("results")? {
                println!(
                    "  {:<40} {:>10.2} {:>10.2} {:>10.1}",
                    r["page"].as_str().unwrap_or(""),
                    r["median_ms"].as_f64().unwrap_or(0.0),
                    r["p99_ms"].as_f64().unwrap_or(0.0),
                    r["vs_lookup"].as_f64().unwrap_or(0.0),
                );
            }
            Ok(())
        },
    )
}
