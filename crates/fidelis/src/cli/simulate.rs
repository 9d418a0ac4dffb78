//! `fidelis simulate`: a synthetic population run through a program definition by the
//! core on a virtual clock (see `fidelis_core::simulate`), with `--compare` for a second
//! definition seeing the same people do the same things.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, ValueEnum};
use fidelis_core::ids::ExternalId;
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_core::simulate::{self, Behaviour, Posted, Report, Settings};

mod target;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Run a synthetic population through a program definition for some months — no database,
/// no wall clock — and report points issued, redeemed and expired, the liability over
/// time, the cost per member and per unit of revenue, tiers and promotion costs.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A template's name (`retail`, …) or a definition file (YAML or JSON).
    definition: String,
    /// A second definition run with the same population, side by side.
    #[arg(long)]
    compare: Option<String>,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    members: u32,
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=240))]
    months: u32,
    /// The first month (YYYY-MM), UTC; two years before the current month by default.
    #[arg(long)]
    start: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mean purchases per member and month while active (scales the rate distribution).
    #[arg(long)]
    purchases_per_month: Option<f64>,
    /// Mean spend per purchase, in the money currency.
    #[arg(long)]
    mean_spend: Option<f64>,
    /// The share of purchases returned.
    #[arg(long)]
    returns: Option<f64>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write SVG charts (points per month, liability, tiers) into this directory.
    #[arg(long)]
    charts: Option<PathBuf>,
    /// Write the generated enrolments (NDJSON, for `members import`)…
    #[arg(long, requires = "journals_out")]
    members_out: Option<PathBuf>,
    /// …and journals (NDJSON, for `journals import`) of the first definition's run.
    #[arg(long, requires = "members_out")]
    journals_out: Option<PathBuf>,
    /// A load generator: send the first run's members and journals to the server at this
    /// address (`http://host:port`) — the program is created from the definition there
    /// when it does not exist — and report how fast it took them.
    #[arg(long, requires = "token")]
    target: Option<String>,
    /// The API token for `--target` (a program manager's or an admin's).
    #[arg(long, env = "FIDELIS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The program's code on the target.
    #[arg(long, default_value = "simulated")]
    program: String,
    /// Concurrent requests to the target; a member's journals always go in order on one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    connections: u16,
}

fn load(definition: &str) -> Result<Program> {
    let source = match fidelis_core::templates::find(definition) {
        Some(t) => t.source.to_owned(),
        None => std::fs::read_to_string(definition)
            .with_context(|| format!("{definition} is neither a template nor a readable file"))?,
    };
    let doc: ProgramDocument =
        yaml_serde::from_str(&source).with_context(|| format!("reading {definition}"))?;
    Program::compile(&doc, Some("simulated")).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "{definition} has {} problem(s):\n  {}",
            list.len(),
            list.join("\n  ")
        )
    })
}

pub async fn run(args: SimulateArgs) -> Result<ExitCode> {
    let first = load(&args.definition)?;
    let second = args.compare.as_deref().map(load).transpose()?;
    let start = match &args.start {
        Some(s) => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
            .with_context(|| format!("--start {s}: YYYY-MM expected"))?,
        None => {
            let today = Utc::now().date_naive();
            NaiveDate::from_ymd_opt(
                chrono::Datelike::year(&today) - 2,
                chrono::Datelike::month(&today),
                1,
            )
            .context("the start month")?
        }
    };
    let mut behaviour = Behaviour::default();
    if let Some(per_month) = args.purchases_per_month {
        if !(per_month.is_finite() && per_month > 0.0) {
            bail!("--purchases-per-month must be above 0");
        }
        // The mean weekly rate is r / α; a month is 365.25 / 12 / 7 weeks.
        behaviour.purchases.alpha = behaviour.purchases.r * (365.25 / 12.0 / 7.0) / per_month;
    }
    if let Some(spend) = args.mean_spend {
        if !(spend.is_finite() && spend > 0.0) {
            bail!("--mean-spend must be above 0");
        }
        // The mean is p γ / (q − 1).
        let s = &mut behaviour.spend;
        s.gamma = spend * (s.q - 1.0) / s.p;
    }
    if let Some(r) = args.returns {
        if !(0.0..1.0).contains(&r) {
            bail!("--returns must be at least 0 and below 1");
        }
        behaviour.returns = r;
    }
    let settings = Settings {
        members: args.members,
        months: args.months,
        start: DateTime::<Utc>::from_naive_utc_and_offset(
            start.and_time(chrono::NaiveTime::MIN),
            Utc,
        ),
        seed: args.seed,
        behaviour,
    };
    let mut writers = match (&args.members_out, &args.journals_out) {
        (Some(m), Some(j)) => Some((create(m)?, create(j)?)),
        _ => None,
    };
    // For `--target`: every enrolment, and every journal as its canonical JSON.
    let mut outbound: Option<target::Load> = args.target.as_ref().map(|_| target::Load::default());
    let clock = Instant::now();
    let mut write_error: Option<std::io::Error> = None;
    let report = simulate::run(&first, &settings, |posted| {
        // An enrolment as `members import` and `POST …/members` take it.
        let enrolment = |member: &ExternalId, at: DateTime<Utc>, profile| serde_json::json!({"member": member.as_str(), "enrolled_at": at.to_rfc3339(), "profile": profile});
        if let Some(load) = outbound.as_mut() {
            match posted {
                Posted::Enrolment {
                    member,
                    at,
                    profile,
                } => load.members.push(enrolment(member, at, profile)),
                Posted::Journal(j) => {
                    if let Ok(line) = serde_json::to_string(&j.canonical(&first)) {
                        load.journals
                            .push((j.member.as_str().to_owned(), j.occurred_at, line));
                    }
                }
            }
        }
        let Some((members, journals)) = writers.as_mut() else {
            return;
        };
        let result = match posted {
            Posted::Enrolment {
                member,
                at,
                profile,
            } => writeln!(members, "{}", enrolment(member, at, profile)),
            Posted::Journal(j) => serde_json::to_string(&j.canonical(&first))
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(journals, "{line}")),
        };
        if let Err(e) = result {
            write_error.get_or_insert(e);
        }
    })?;
    let seconds = clock.elapsed().as_secs_f64();
    if let Some(e) = write_error {
        return Err(e).context("writing the generated files");
    }
    if let Some((mut m, mut j)) = writers {
        m.flush()?;
        j.flush()?;
    }
    let journals: u64 = report.months.iter().map(|m| m.journals).sum();
    eprintln!(
        "simulated {} members over {} months: {journals} journals in {seconds:.2} s ({:.0} journals/s)",
        args.members,
        args.months,
        journals as f64 / seconds.max(1e-9)
    );
    if let (Some(url), Some(load)) = (&args.target, outbound) {
        let definition = serde_json::to_value(&first.document)?;
        let sent = target::send(
            url,
            args.token.as_deref().unwrap_or_default(),
            &args.program,
            definition,
            load,
            usize::from(args.connections),
        )
        .await?;
        eprintln!("{sent}");
        if sent.failed > 0 {
            eprintln!(
                "error: the target refused {} request(s) or line(s)",
                sent.failed
            );
            return Ok(ExitCode::from(super::EXIT_REJECTED));
        }
    }
    let other = second
        .as_ref()
        .map(|p| simulate::run(p, &settings, |_| {}))
        .transpose()?;
    if let Some(dir) = &args.charts {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        charts(dir, &first, &report, other.as_ref().zip(second.as_ref()))?;
    }
    let runs: Vec<(&str, &Program, &Report)> =
        std::iter::once((args.definition.as_str(), &first, &report))
            .chain(
                other
                    .as_ref()
                    .zip(second.as_ref())
                    .map(|(r, p)| (args.compare.as_deref().unwrap_or(""), p, r)),
            )
            .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json(&runs, args.members))?
        ),
        Format::Csv => csv(&runs)?,
        Format::Table => table(&runs, args.members),
    }
    Ok(ExitCode::SUCCESS)
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>> {
    Ok(BufWriter::new(
        std::fs::File::create(path).with_context(|| path.display().to_string())?,
    ))
}

/// The run's totals: the figures the table, JSON and comparison show.
struct Totals {
    revenue: i64,
    purchases: i64,
    issued: i64,
    redeemed: i64,
    expired: i64,
    outstanding: i64,
    liability: i64,
    cost: i64,
    promotions: Vec<(String, i64)>,
}

fn totals(program: &Program, r: &Report) -> Totals {
    let c = program
        .currencies
        .iter()
        .position(|c| c.kind == fidelis_core::program::CurrencyKind::Redeemable)
        .unwrap_or(0);
    let issued = r.issued(c) - r.total(|m| m.taken_back[c]);
    let mut promotions: Vec<(String, i64)> = Vec::new();
    let currency = program.currencies[c].code.as_str();
    for m in &r.months {
        for (p, cur, n) in m.promotions.iter().filter(|p| p.1 == currency) {
            let _ = cur;
            match promotions.iter_mut().find(|x| x.0 == *p) {
                Some(x) => x.1 += n,
                None => promotions.push((p.clone(), *n)),
            }
        }
    }
    let last = r.months.last();
    Totals {
        revenue: r.total(|m| m.revenue - m.returned),
        purchases: r.total(|m| m.purchases as i64),
        issued,
        redeemed: r.total(|m| m.redeemed[c]),
        expired: r.total(|m| m.expired[c]),
        outstanding: last.map_or(0, |m| m.outstanding[c]),
        liability: last.map_or(0, |m| m.liability),
        cost: fidelis_core::partners::money(
            issued,
            program.currencies[c].value_per_point,
            program.money_currency.scale(),
        ),
        promotions,
    }
}

fn json(runs: &[(&str, &Program, &Report)], members: u32) -> serde_json::Value {
    let list: Vec<serde_json::Value> = runs
        .iter()
        .map(|(name, program, r)| {
            let t = totals(program, r);
            let money = |v: i64| program.money_currency.format(fidelis_core::money::MinorUnits(v));
            serde_json::json!({
                "definition": name,
                "members": members,
                "purchases": t.purchases,
                "revenue": money(t.revenue),
                "points_issued": t.issued,
                "points_redeemed": t.redeemed,
                "points_expired": t.expired,
                "points_outstanding": t.outstanding,
                "liability": money(t.liability),
                "cost": money(t.cost),
                "cost_per_member": money(t.cost / i64::from(members.max(1))),
                "cost_per_revenue": if t.revenue > 0 { t.cost as f64 / t.revenue as f64 } else { 0.0 },
                "promotions": t.promotions.iter().map(|(p, n)| serde_json::json!({"promotion": p, "points": n})).collect::<Vec<_>>(),
                "months": r.months.iter().map(|m| serde_json::json!({
                    "month": m.start.format("%Y-%m").to_string(),
                    "members": m.members, "buyers": m.buyers, "purchases": m.purchases, "journals": m.journals,
                    "revenue": money(m.revenue), "returned": money(m.returned),
                    "issued": m.issued, "taken_back": m.taken_back, "redeemed": m.redeemed,
                    "expired": m.expired, "reset": m.reset, "outstanding": m.outstanding, "liability": money(m.liability),
                    "tiers": m.tiers.iter().map(|(g, t, n)| serde_json::json!({"group": g, "tier": t, "members": n})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "currencies": r.currencies,
            })
        })
        .collect();
    serde_json::json!({ "runs": list })
}

fn csv(runs: &[(&str, &Program, &Report)]) -> Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout());
    w.write_record([
        "definition",
        "month",
        "currency",
        "members",
        "buyers",
        "purchases",
        "revenue",
        "issued",
        "taken_back",
        "redeemed",
        "expired",
        "outstanding",
        "liability",
    ])?;
    for (name, program, r) in runs {
        let money = |v: i64| {
            program
                .money_currency
                .format(fidelis_core::money::MinorUnits(v))
        };
        for m in &r.months {
            for (c, code) in r.currencies.iter().enumerate() {
                w.write_record([
                    name.to_string(),
                    m.start.format("%Y-%m").to_string(),
                    code.clone(),
                    m.members.to_string(),
                    m.buyers.to_string(),
                    m.purchases.to_string(),
                    money(m.revenue),
                    m.issued[c].to_string(),
                    m.taken_back[c].to_string(),
                    m.redeemed[c].to_string(),
                    m.expired[c].to_string(),
                    m.outstanding[c].to_string(),
                    money(m.liability),
                ])?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn table(runs: &[(&str, &Program, &Report)], members: u32) {
    let all: Vec<(String, Totals, &Program)> = runs
        .iter()
        .map(|(n, p, r)| (n.to_string(), totals(p, r), *p))
        .collect();
    let mut codes: Vec<String> = all
        .iter()
        .flat_map(|(_, t, _)| t.promotions.iter().map(|p| p.0.clone()))
        .collect();
    codes.sort();
    codes.dedup();
    let promotion = |code: &str| format!("promotion {code} (points)");
    // The labels' column fits the longest promotion's.
    let width = codes
        .iter()
        .map(|c| promotion(c).chars().count() + 2)
        .max()
        .unwrap_or(0)
        .max(28);
    let row = |label: &str, f: &dyn Fn(&Totals, &Program) -> String| {
        let cells: Vec<String> = all
            .iter()
            .map(|(_, t, p)| format!("{:>18}", f(t, p)))
            .collect();
        println!("{label:<width$}{}", cells.join(""));
    };
    let money = |p: &Program, v: i64| p.money_currency.format(fidelis_core::money::MinorUnits(v));
    let names: Vec<String> = all.iter().map(|(n, _, _)| format!("{:>18}", n)).collect();
    println!("{:<width$}{}", "", names.join(""));
    row("members", &|_, _| members.to_string());
    row("purchases", &|t, _| t.purchases.to_string());
    row("revenue (net of returns)", &|t, p| money(p, t.revenue));
    row("points issued (net)", &|t, _| t.issued.to_string());
    row("points redeemed", &|t, _| t.redeemed.to_string());
    row("points expired", &|t, _| t.expired.to_string());
    row("points outstanding at end", &|t, _| {
        t.outstanding.to_string()
    });
    row("liability at end", &|t, p| money(p, t.liability));
    row("cost of points issued", &|t, p| money(p, t.cost));
    row("cost per member", &|t, p| {
        money(p, t.cost / i64::from(members.max(1)))
    });
    row("cost per unit of revenue", &|t, _| {
        format!(
            "{:.4}",
            if t.revenue > 0 {
                t.cost as f64 / t.revenue as f64
            } else {
                0.0
            }
        )
    });
    for code in &codes {
        row(&promotion(code), &|t, _| {
            t.promotions
                .iter()
                .find(|p| p.0 == *code)
                .map_or(0, |p| p.1)
                .to_string()
        });
    }
}

fn charts(
    dir: &Path,
    program: &Program,
    report: &Report,
    other: Option<(&Report, &Program)>,
) -> Result<()> {
    let labels: Vec<String> = report
        .months
        .iter()
        .map(|m| m.start.format("%Y-%m").to_string())
        .collect();
    let c = program
        .currencies
        .iter()
        .position(|c| c.kind == fidelis_core::program::CurrencyKind::Redeemable)
        .unwrap_or(0);
    let per_month = |f: &dyn Fn(&simulate::Month) -> i64, r: &Report| -> Vec<f64> {
        r.months.iter().map(|m| f(m) as f64).collect()
    };
    let points = fidelis_web::charts::bars(
        &labels,
        &[
            (
                "issued",
                per_month(&|m| m.issued[c] - m.taken_back[c], report),
            ),
            ("redeemed", per_month(&|m| m.redeemed[c], report)),
            ("expired", per_month(&|m| m.expired[c], report)),
        ],
    );
    std::fs::write(dir.join("points.svg"), points)?;
    let minor = 10f64.powi(i32::from(program.money_currency.scale()));
    let mut liability = vec![(
        "liability",
        per_month(&|m| m.liability, report)
            .iter()
            .map(|v| v / minor)
            .collect(),
    )];
    if let Some((r, p)) = other {
        let minor = 10f64.powi(i32::from(p.money_currency.scale()));
        liability.push((
            "compared",
            per_month(&|m| m.liability, r)
                .iter()
                .map(|v| v / minor)
                .collect(),
        ));
    }
    std::fs::write(
        dir.join("liability.svg"),
        fidelis_web::charts::lines(&labels, &liability),
    )?;
    let tiers: Vec<(String, Vec<f64>)> = report
        .months
        .last()
        .map(|m| {
            m.tiers
                .iter()
                .map(|(g, t, _)| format!("{g}/{t}"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name,
                report
                    .months
                    .iter()
                    .map(|m| f64::from(m.tiers[i].2))
                    .collect(),
            )
        })
        .collect();
    if !tiers.is_empty() {
        let list: Vec<(&str, Vec<f64>)> =
            tiers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        std::fs::write(
            dir.join("tiers.svg"),
            fidelis_web::charts::lines(&labels, &list),
        )?;
    }
    Ok(())
}
