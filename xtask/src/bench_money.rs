//! `cargo xtask bench-money`: partners' settlement statements and the points liability on a
//! large program — 1,000,000 members and 10,000,000 journals by default — computed in the
//! database.
//!
//! `fidelis bench money` builds program `money` through the product's own code (the retail
//! template as shipped, four partners, purchases, redemptions, refunds and cancellations
//! over 30 months, expiry, 24 closed months per partner). Then each report runs as its own
//! `fidelis` process under GNU time, three times: the wall time and the process's peak
//! resident memory show that the sums are made by the database, not by loading rows. A
//! member's balance read by the same CLI is the baseline (a process's start, its
//! connection and one indexed read), so the ratio is what to compare between machines.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::{ensure_postgres, root, run_cmd};

/// One timed command: its wall time (s) and peak resident memory (MiB).
pub(crate) fn timed(bin: &Path, url: &str, args: &[String]) -> Result<(f64, f64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIMED %e %M"])
        .arg(bin)
        .arg("--database")
        .arg(url)
        .args(args)
        .output()
        .context("GNU time runs the commands: apt-get install time")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "fidelis {}: {stderr}", args.join(" "));
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("TIMED "))
        .context("GNU time's line")?;
    let mut parts = line.split_whitespace();
    let seconds: f64 = parts.next().context("seconds")?.parse()?;
    let kib: f64 = parts.next().context("memory")?.parse()?;
    Ok((seconds, kib / 1024.0))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut members, mut journals, mut runs) = (1_000_000u64, 10_000_000u64, 3u64);
    let mut databases = vec!["postgres".to_owned(), "sqlite".to_owned()];
    let mut url: Option<String> = None;
    let mut bin: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--members" => members = value.parse()?,
            "--journals" => journals = value.parse()?,
            "--runs" => runs = value.parse::<u64>()?.max(1),
            "--databases" => databases = value.split(',').map(str::to_owned).collect(),
            "--url" => url = Some(value.clone()),
            // A `fidelis` already built (the release build is skipped).
            "--bin" => bin = Some(value.into()),
            other => bail!("unknown option {other}"),
        }
    }
    let bin = match bin {
        Some(b) => b,
        None => {
            run_cmd(Command::new("cargo").args(["build", "--release", "-p", "fidelis"]))?;
            root().join("target/release/fidelis")
        }
    };
    let dir = root().join("target/bench-money");
    std::fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    if url.is_some() {
        databases = vec!["url".to_owned()];
    }
    for database in &databases {
        let server;
        let (url, size): (String, Box<dyn Fn() -> Result<u64>>) = match database.as_str() {
            // A database of the caller's, built by an earlier run or kept between runs.
            "url" => (url.clone().context("the URL")?, Box::new(|| Ok(0))),
            "sqlite" => {
                let file = dir.join(format!("money-{members}-{journals}.db"));
                let f = file.clone();
                (
                    format!("sqlite://{}", file.display()),
                    Box::new(move || Ok(std::fs::metadata(&f)?.len())),
                )
            }
            "postgres" => {
                ensure_postgres()?;
                server = PgServer::start(PgOptions {
                    durable: false,
                    watchdog: true,
                })
                .map_err(anyhow::Error::msg)?;
                let url = server
                    .create_database("bench")
                    .map_err(anyhow::Error::msg)?;
                let data = server.dir.clone();
                (url, Box::new(move || directory_size(&data)))
            }
            other => bail!("unknown database {other}: use sqlite or postgres"),
        };
        eprintln!("\n{database}: building program `money` (the slow part; kept for SQLite)");
        let out = Command::new(&bin)
            .arg("--database")
            .arg(&url)
            .args([
                "bench",
                "money",
                "--members",
                &members.to_string(),
                "--journals",
                &journals.to_string(),
            ])
            .output()?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(
            out.status.success(),
            "building the {database} program failed"
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let month = |n: usize| -> Result<String> {
            summary["months"][n]
                .as_str()
                .map(str::to_owned)
                .context("a month's start")
        };
        let statement = |partner: &str, from: String, to: String| -> Vec<String> {
            [
                "settlement",
                "--program",
                "money",
                "--partner",
                partner,
                "--from",
                &from,
                "--to",
                &to,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let liability = |as_of: Option<String>| -> Vec<String> {
            let mut a = ["liability", "--program", "money"]
                .map(str::to_owned)
                .to_vec();
            if let Some(t) = as_of {
                a.extend(["--as-of".to_owned(), t]);
            }
            a
        };
        let commands: Vec<(&str, Vec<String>)> = vec![
            (
                "a member's balance (baseline)",
                ["balance", "--program", "money", "P00000001"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            (
                "statement, a closed month (as stored)",
                statement("airline", month(12)?, month(13)?),
            ),
            (
                "statement, the first open month (with adjustments)",
                statement("airline", month(24)?, month(25)?),
            ),
            (
                "statement, 30 months of the airline",
                statement("airline", month(0)?, month(30)?),
            ),
            (
                "statement, 30 months of the burn partner",
                statement("hotel", month(0)?, month(30)?),
            ),
            ("liability as of now", liability(None)),
            ("liability a year ago", liability(Some(month(18)?))),
        ];
        let mut rows = Vec::new();
        for (name, args) in &commands {
            let mut samples = Vec::new();
            for _ in 0..runs {
                samples.push(timed(&bin, &url, args)?);
            }
            let seconds = median(samples.iter().map(|s| s.0).collect());
            let mib = samples.iter().map(|s| s.1).fold(0.0, f64::max);
            rows.push((name.to_string(), seconds, mib));
        }
        let base = rows[0].1.max(0.001);
        let bytes = size()?;
        let gib = if bytes == 0 {
            "size not known".to_owned()
        } else {
            format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
        };
        println!(
            "\n{database}: {} members, {} journals stored (this run posted {}, refused {}), database {gib}, median of {runs} runs",
            summary["members"], summary["journals"], summary["posted"], summary["refused"],
        );
        println!(
            "| {:<52} | {:>9} | {:>13} | {:>10} |",
            "report (its own process)", "seconds", "peak RSS MiB", "× baseline"
        );
        println!("| {:-<52} | {:->9} | {:->13} | {:->10} |", "", "", "", "");
        let mut json_rows = Vec::new();
        for (name, seconds, mib) in &rows {
            println!(
                "| {name:<52} | {seconds:>9.2} | {mib:>13.1} | {:>10.1} |",
                seconds / base
            );
            json_rows.push(serde_json::json!({
                "report": name, "seconds": seconds, "peak_rss_mib": mib, "vs_baseline": seconds / base,
            }));
        }
        reports.push(serde_json::json!({
            "database": database, "summary": summary, "database_bytes": bytes, "results": json_rows,
        }));
    }
    let file = dir.join("report.json");
    std::fs::write(&file, serde_json::to_string_pretty(&reports)?)?;
    println!("\nreport: {}", file.display());
    Ok(())
}

/// The bytes of the files under `dir`.
fn directory_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            directory_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
