//! `cargo xtask bench-import`: the end-to-end import benchmark.
//!
//! Imports generated purchase journals through the real CLI (`fidelis journals import`,
//! durable commits) into SQLite and PostgreSQL, and in the same run measures the bare
//! batch (`fidelis bench bare-batch`: only the minimal writes of a journal, set-based)
//! into a fresh database of the same kind. Each run measures both, alternating, so a
//! noisy machine affects both alike; the report gives medians and the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::{ensure_postgres, root, run_cmd};

struct Options {
    journals: u64,
    members: u64,
    runs: u32,
    databases: Vec<String>,
    batch_size: Option<u32>,
    promotions: crate::BenchPromotions,
    /// `journals import --order member` instead of file order.
    by_member: bool,
    /// A binary to measure instead of building this checkout's (another commit's build:
    /// its ratio to the bare batch beside this one's, each in its own run).
    bin: Option<PathBuf>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        journals: 1_000_000,
        members: 100_000,
        runs: 3,
        databases: vec!["sqlite".into(), "postgres".into()],
        batch_size: None,
        promotions: crate::BenchPromotions::Shipped,
        by_member: false,
        bin: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--journals" => o.journals = value.parse()?,
            "--members" => o.members = value.parse()?,
            "--runs" => o.runs = value.parse()?,
            "--databases" => o.databases = value.split(',').map(str::to_owned).collect(),
            "--batch-size" => o.batch_size = Some(value.parse()?),
            "--promotions" => o.promotions = crate::BenchPromotions::parse(value)?,
            "--bin" => o.bin = Some(value.into()),
            "--order" => {
                o.by_member = match value.as_str() {
                    "file" => false,
                    "member" => true,
                    _ => bail!("--order is file or member"),
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

#[derive(Debug, Clone, Copy)]
struct Measurement {
    import_per_s: f64,
    bare_per_s: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let bin = match &o.bin {
        Some(bin) => bin.clone(),
        None => {
            run_cmd(Command::new("cargo").args(["build", "--release", "-p", "fidelis"]))?;
            root().join("target/release/fidelis")
        }
    };
    let dir = root().join("target/bench-import");
    std::fs::create_dir_all(&dir)?;
    let members_file = dir.join(format!("members-{}.ndjson", o.members));
    let journals_file = dir.join(format!("journals-{}-{}.ndjson", o.members, o.journals));
    if !journals_file.exists() || !members_file.exists() {
        eprintln!(
            "generating {} journals for {} members…",
            o.journals, o.members
        );
        let status = Command::new(&bin)
            .args([
                "bench",
                "generate",
                "--members",
                &o.members.to_string(),
                "--journals",
                &o.journals.to_string(),
            ])
            .arg("--members-out")
            .arg(&members_file)
            .arg("--journals-out")
            .arg(&journals_file)
            .status()?;
        anyhow::ensure!(status.success(), "generating the files failed");
    }
    let server = if o.databases.iter().any(|d| d == "postgres") {
        ensure_postgres()?;
        Some(
            PgServer::start(PgOptions {
                durable: true,
                watchdog: true,
            })
            .map_err(anyhow::Error::msg)?,
        )
    } else {
        None
    };
    let mut results: Vec<(String, Vec<Measurement>)> = o
        .databases
        .iter()
        .map(|d| (d.clone(), Vec::new()))
        .collect();
    for run in 1..=o.runs {
        for (database, measurements) in &mut results {
            let (import_url, bare_url) = match database.as_str() {
                "sqlite" => {
                    for name in [format!("import-{run}.db"), format!("bare-{run}.db")] {
                        for suffix in ["", "-wal", "-shm"] {
                            let _ = std::fs::remove_file(dir.join(format!("{name}{suffix}")));
                        }
                    }
                    (
                        format!(
                            "sqlite://{}",
                            dir.join(format!("import-{run}.db")).display()
                        ),
                        format!("sqlite://{}", dir.join(format!("bare-{run}.db")).display()),
                    )
                }
                "postgres" => {
                    let server = server.as_ref().context("no PostgreSQL server")?;
                    (
                        server
                            .create_database(&format!("import{run}"))
                            .map_err(anyhow::Error::msg)?,
                        server
                            .create_database(&format!("bare{run}"))
                            .map_err(anyhow::Error::msg)?,
                    )
                }
                other => bail!("unknown database {other}: use sqlite or postgres"),
            };
            let import_per_s = import(&bin, &import_url, &members_file, &journals_file, &o)?;
            let bare_per_s = bare(&bin, &bare_url, o.members, o.journals)?;
            eprintln!(
                "run {run} {database}: import {import_per_s:.0} journals/s, bare batch {bare_per_s:.0} journals/s, ratio {:.2}",
                import_per_s / bare_per_s
            );
            measurements.push(Measurement {
                import_per_s,
                bare_per_s,
            });
        }
    }
    if let Some(server) = server {
        server.stop();
    }
    report(&o, &results, &dir)
}

fn fidelis(bin: &Path, url: &str) -> Command {
    let mut c = Command::new(bin);
    c.arg("--database").arg(url);
    c
}

/// Creates the program and members (not timed), then times the import of the journals.
fn import(bin: &Path, url: &str, members: &Path, journals: &Path, o: &Options) -> Result<f64> {
    let count = o.journals;
    let quiet = |c: &mut Command| -> Result<()> {
        let out = c.output()?;
        anyhow::ensure!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    crate::create_bench_program(
        bin,
        url,
        members.parent().unwrap_or(members),
        true,
        o.promotions,
    )?;
    quiet(
        fidelis(bin, url)
            .args(["members", "import", "--program", "bench"])
            .arg(members),
    )?;
    let mut cmd = fidelis(bin, url);
    cmd.args(["journals", "import", "--program", "bench"])
        .arg(journals);
    if let Some(size) = o.batch_size {
        cmd.args(["--batch-size", &size.to_string()]);
    }
    if o.by_member {
        cmd.args(["--order", "member"]);
    }
    let started = Instant::now();
    let out = cmd.output()?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        stdout.contains(&format!(": {count} applied,")),
        "not every journal was applied: {stdout}"
    );
    Ok(count as f64 / seconds)
}

fn bare(bin: &Path, url: &str, members: u64, journals: u64) -> Result<f64> {
    let out = fidelis(bin, url)
        .args([
            "bench",
            "bare-batch",
            "--members",
            &members.to_string(),
            "--journals",
            &journals.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bare batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the bare batch's output")?;
    value["per_second"]
        .as_f64()
        .context("no per_second in the bare batch's output")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(o: &Options, results: &[(String, Vec<Measurement>)], dir: &Path) -> Result<()> {
    let mut json = String::from("{\n");
    println!(
        "\n{} journals, {} members, {} run(s), durable commits, the retail template with promotions {}{}; medians:\n",
        o.journals,
        o.members,
        o.runs,
        o.promotions.name(),
        if o.by_member {
            ", imported grouped by member (--order member)"
        } else {
            ""
        }
    );
    let mut ratio_lines = Vec::new();
    println!("| database | import (journals/s) | bare batch (journals/s) | import / bare |");
    println!("| --- | --- | --- | --- |");
    for (i, (database, m)) in results.iter().enumerate() {
        let import = median(m.iter().map(|m| m.import_per_s).collect());
        let bare = median(m.iter().map(|m| m.bare_per_s).collect());
        let ratio = median(m.iter().map(|m| m.import_per_s / m.bare_per_s).collect());
        println!("| {database} | {import:.0} | {bare:.0} | {ratio:.2} |");
        // One line per database a script can read, after the table.
        ratio_lines.push(format!(
            "RATIO bench-import {database} promotions={}{} {ratio:.3}",
            o.promotions.name().replace(' ', "-"),
            if o.by_member { " order=member" } else { "" }
        ));
        json.push_str(&format!(
            "  \"{database}\": {{\"import_per_s\": {import:.0}, \"bare_per_s\": {bare:.0}, \"ratio\": {ratio:.3}}}{}\n",
            if i + 1 < results.len() { "," } else { "" }
        ));
    }
    println!();
    for line in &ratio_lines {
        println!("{line}");
    }
    json.push('}');
    let path: PathBuf = dir.join("results.json");
    std::fs::write(&path, json)?;
    println!("\n(written to {})", path.display());
    Ok(())
}
