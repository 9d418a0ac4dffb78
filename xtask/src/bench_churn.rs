//! `cargo xtask bench-churn`: the churn and lifetime-value models' cost.
//!
//! 1. On the CDNOW sample, the BG/NBD and Gamma-Gamma fits against Python's `lifetimes`
//!    (pip-installed into a throw-away venv under `target/`), both fitting the same
//!    summaries (written by `fidelis bench churn-cdnow`) in the same run: the ratio of the
//!    median fit times, and the parameters side by side.
//! 2. A population of 1,000,000 members drawn from the models: fitted and scored in one
//!    process (the models' own cost), then imported through the operator's path (members
//!    and purchase journals) into each database and scored by `fidelis analytics churn`,
//!    under GNU time for wall time and peak memory, beside a member's balance read.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::bench_money::{median, timed};
use crate::{ensure_postgres, root, run_cmd};

/// The `lifetimes` release compared with; its dependencies as pip resolves them.
const LIFETIMES: &str = "lifetimes==0.11.3";

const SCRIPT: &str = r#"
import json, sys, time
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter

data = pd.read_csv(sys.argv[1])
runs = int(sys.argv[2])
bg_times, gg_times = [], []
spenders = data[(data["frequency"] > 0) & (data["monetary_value"] > 0)]
for _ in range(runs):
    t = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(data["frequency"], data["recency"], data["T"])
    bg_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    ggf.fit(spenders["frequency"], spenders["monetary_value"])
    gg_times.append(time.perf_counter() - t)
bg_times.sort(); gg_times.sort()
print(json.dumps({
    "bgnbd_seconds": bg_times[len(bg_times) // 2],
    "gamma_gamma_seconds": gg_times[len(gg_times) // 2],
    "bgnbd": {k: float(v) for k, v in bgf.params_.items()},
    "log_likelihood": -float(bgf._negative_log_likelihood_) * len(data),
    "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()},
}))
"#;

fn python_venv() -> Result<std::path::PathBuf> {
    crate::python::venv("bench-churn-venv", &[LIFETIMES])
}

fn json_of(out: std::process::Output, what: &str) -> Result<serde_json::Value> {
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what}'s output"))
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut members, mut runs) = (1_000_000u64, 5u32);
    let mut databases = vec!["sqlite".to_owned(), "postgres".to_owned()];
    let mut bin: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--members" => members = value.parse()?,
            "--runs" => runs = value.parse::<u32>()?.max(1),
            "--databases" => {
                databases = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
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
    let dir = root().join("target/bench-churn");
    std::fs::create_dir_all(&dir)?;

    // 1. CDNOW against lifetimes.
    let python = python_venv()?;
    let summaries = dir.join("cdnow-summaries.csv");
    let sample = root().join("crates/fidelis-core/tests/data/cdnow/CDNOW_sample.txt");
    let ours = json_of(
        Command::new(&bin)
            .args([
                "bench",
                "churn-cdnow",
                "--runs",
                &runs.to_string(),
                "--sample",
            ])
            .arg(&sample)
            .arg("--summaries-out")
            .arg(&summaries)
            .output()?,
        "fidelis bench churn-cdnow",
    )?;
    let script = dir.join("lifetimes_fit.py");
    std::fs::write(&script, SCRIPT)?;
    let theirs = json_of(
        Command::new(python.join("python"))
            .arg(&script)
            .arg(&summaries)
            .arg(runs.to_string())
            .output()?,
        "the lifetimes fit",
    )?;
    let ratio = |key: &str| -> Result<f64> {
        let t = theirs[key].as_f64().context("lifetimes' time")?;
        let o = ours[key].as_f64().context("our time")?;
        Ok(t / o)
    };
    println!(
        "\nCDNOW sample ({} customers, {} with repeat purchases), median of {runs} fits:",
        ours["customers"], ours["spenders"]
    );
    println!(
        "{:<12} {:>14} {:>14} {:>10}",
        "model", "fidelis (s)", "lifetimes (s)", "faster"
    );
    for (name, key) in [
        ("BG/NBD", "bgnbd_seconds"),
        ("Gamma-Gamma", "gamma_gamma_seconds"),
    ] {
        println!(
            "{name:<12} {:>14.6} {:>14.6} {:>9.1}×",
            ours[key].as_f64().unwrap_or(f64::NAN),
            theirs[key].as_f64().unwrap_or(f64::NAN),
            ratio(key)?
        );
    }
    println!("parameters, fidelis / lifetimes:");
    for (ours_key, theirs_key) in [("r", "r"), ("alpha", "alpha"), ("a", "a"), ("b", "b")] {
        println!(
            "  {ours_key:<6} {:.6} / {:.6}",
            ours["bgnbd"][ours_key].as_f64().unwrap_or(f64::NAN),
            theirs["bgnbd"][theirs_key].as_f64().unwrap_or(f64::NAN)
        );
    }
    for (ours_key, theirs_key) in [("p", "p"), ("q", "q"), ("gamma", "v")] {
        println!(
            "  {ours_key:<6} {:.6} / {:.6}",
            ours["gamma_gamma"][ours_key].as_f64().unwrap_or(f64::NAN),
            theirs["gamma_gamma"][theirs_key]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
    }

    // 2. A large population: the models in process, then through a database.
    let member_file = dir.join(format!("members-{members}.ndjson"));
    let journal_file = dir.join(format!("purchases-{members}.csv"));
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIMED %e %M"])
        .arg(&bin)
        .args([
            "bench",
            "churn-population",
            "--members",
            &members.to_string(),
            "--members-out",
        ])
        .arg(&member_file)
        .arg("--journals-out")
        .arg(&journal_file)
        .output()
        .context("GNU time runs the commands: apt-get install time")?;
    let peak_mib = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("TIMED "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0);
    let in_process = json_of(out, "fidelis bench churn-population")?;
    println!(
        "\n{members} drawn members, {} purchase journals, in process: fit {:.2} s ({} evaluations), score {:.2} s, peak {:.0} MiB (drawing and writing the files included)",
        in_process["journals"],
        in_process["fit_seconds"].as_f64().unwrap_or(f64::NAN),
        in_process["evaluations"],
        in_process["score_seconds"].as_f64().unwrap_or(f64::NAN),
        peak_mib,
    );
    for database in &databases {
        let server;
        let url = match database.as_str() {
            "sqlite" => {
                let file = dir.join(format!("churn-{members}.db"));
                let _ = std::fs::remove_file(&file);
                format!("sqlite://{}", file.display())
            }
            "postgres" => {
                ensure_postgres()?;
                server = PgServer::start(PgOptions {
                    durable: false,
                    watchdog: true,
                })
                .map_err(anyhow::Error::msg)?;
                server
                    .create_database("churn")
                    .map_err(anyhow::Error::msg)?
            }
            other => bail!("unknown database {other}: use sqlite or postgres"),
        };
        let program = dir.join("churn.yaml");
        std::fs::write(
            &program,
            "code: churn\nname: Churn\ntime_zone: UTC\nmoney_currency: USD\ncurrencies:\n  - {code: points, name: Points, kind: redeemable, expiry: {policy: never}}\nearning:\n  base:\n    - {currency: points, rate: \"1\"}\n",
        )?;
        let step = |args: &[&str], file: &Path| -> Result<()> {
            let out = Command::new(&bin)
                .arg("--database")
                .arg(&url)
                .args(args)
                .arg(file)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "fidelis {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!("{}", String::from_utf8_lossy(&out.stdout));
            Ok(())
        };
        eprintln!("\n{database}: importing the population");
        step(&["program", "apply"], &program)?;
        step(&["members", "import", "--program", "churn"], &member_file)?;
        step(&["journals", "import", "--program", "churn"], &journal_file)?;
        let churn: Vec<String> = [
            "analytics",
            "churn",
            "--program",
            "churn",
            "--calibration-end",
            "2026-06-30",
            "--members",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([dir.join("scores.csv").display().to_string()])
        .collect();
        let balance: Vec<String> = ["balance", "--program", "churn", "S0000001"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (mut base, mut scored, mut memory) = (Vec::new(), Vec::new(), 0f64);
        for _ in 0..runs.min(3) {
            base.push(timed(&bin, &url, &balance)?.0);
            let (seconds, mib) = timed(&bin, &url, &churn)?;
            scored.push(seconds);
            memory = memory.max(mib);
        }
        println!(
            "{database}: fidelis analytics churn over {members} members (read, fit, score, CSV written): {:.2} s, peak {:.0} MiB; a balance read {:.3} s",
            median(scored),
            memory,
            median(base)
        );
    }
    Ok(())
}
