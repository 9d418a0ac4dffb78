//! The analytics benchmarks' measurements (`cargo xtask bench-churn`): the fits on the
//! CDNOW sample, timed in process so the comparison with Python's `lifetimes` times the
//! same thing (a fit from summaries), and a large drawn population written as files for
//! the operator's import path.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{Duration, NaiveDate};
use fidelis_core::analytics::{bgnbd, gamma_gamma, history, synthetic};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Summarises the CDNOW sample (weeks, window ending 1997-09-30), writes the summaries as
/// CSV (frequency, recency, T, monetary value in dollars) for the other side of the
/// comparison, and times both fits `runs` times.
pub fn cdnow(sample: &Path, summaries_out: &Path, runs: u32) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(sample).with_context(|| sample.display().to_string())?;
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).context("date")?;
    let mut purchases: BTreeMap<String, Vec<(NaiveDate, i64)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(f.len() == 5, "line {}: five fields expected", n + 1);
        let day =
            NaiveDate::parse_from_str(f[2], "%Y%m%d").with_context(|| format!("line {}", n + 1))?;
        let cents = (f[4]
            .parse::<f64>()
            .with_context(|| format!("line {}", n + 1))?
            * 100.0)
            .round();
        purchases
            .entry(f[0].to_owned())
            .or_default()
            .push((day, cents as i64));
    }
    let summaries: Vec<history::Summary> = purchases
        .into_values()
        .filter_map(|mut p| history::summarize(&mut p, end, 7.0))
        .collect();
    let mut out = BufWriter::new(std::fs::File::create(summaries_out)?);
    writeln!(out, "frequency,recency,T,monetary_value")?;
    for s in &summaries {
        let c = s.customer;
        let m = s.spender.map_or(0.0, |sp| sp.mean_value / 100.0);
        writeln!(
            out,
            "{},{:.17},{:.17},{:.17}",
            c.frequency, c.recency, c.age, m
        )?;
    }
    out.flush()?;
    let customers: Vec<bgnbd::Customer> = summaries.iter().map(|s| s.customer).collect();
    let spenders: Vec<gamma_gamma::Spender> = summaries
        .iter()
        .filter_map(|s| s.spender)
        .filter_map(|sp| gamma_gamma::Spender::new(sp.frequency, sp.mean_value / 100.0))
        .collect();
    let (mut bg_times, mut gg_times) = (Vec::new(), Vec::new());
    let (mut bg, mut gg) = (None, None);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        bg = Some(bgnbd::fit(&customers)?);
        bg_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        gg = Some(gamma_gamma::fit(&spenders)?);
        gg_times.push(t.elapsed().as_secs_f64());
    }
    let (bg, gg) = (bg.context("a fit")?, gg.context("a fit")?);
    Ok(serde_json::json!({
        "customers": customers.len(),
        "spenders": spenders.len(),
        "bgnbd_seconds": median(bg_times),
        "gamma_gamma_seconds": median(gg_times),
        "bgnbd": {"r": bg.params.r, "alpha": bg.params.alpha, "a": bg.params.a, "b": bg.params.b,
                  "log_likelihood": bg.log_likelihood},
        "gamma_gamma": {"p": gg.params.p, "q": gg.params.q, "gamma": gg.params.gamma},
    }))
}

/// Draws `members` customers with the CDNOW estimates (first purchases spread over a
/// year before 2026-01-01, observed to 2026-06-30), fits and scores them in process (the
/// models' own cost), and when `out` is given writes them as a members file (NDJSON) and
/// a purchases file (CSV, dollars) for `fidelis members import` and `journals import`.
pub fn population(
    members: u64,
    seed: u64,
    out: Option<(&Path, &Path)>,
) -> Result<serde_json::Value> {
    let purchases = bgnbd::Params {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let spend = gamma_gamma::Params {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };
    let mut population = synthetic::Population::new(purchases, spend, seed)?;
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).context("date")?;
    let end = NaiveDate::from_ymd_opt(2026, 6, 30).context("date")?;
    let mut writers = match out {
        Some((m, j)) => {
            let mut jw =
                BufWriter::new(std::fs::File::create(j).with_context(|| j.display().to_string())?);
            writeln!(jw, "external_id,member,type,occurred_at,amount,currency")?;
            Some((
                BufWriter::new(std::fs::File::create(m).with_context(|| m.display().to_string())?),
                jw,
            ))
        }
        None => None,
    };
    let t = Instant::now();
    let mut summaries = Vec::with_capacity(members as usize);
    let mut journals = 0u64;
    let mut days: Vec<(NaiveDate, i64)> = Vec::new();
    for n in 0..members {
        let first = start + Duration::days((population.uniform() * 365.0) as i64);
        let age = (end - first).num_days() as f64 / 7.0;
        let drawn = population.draw(age);
        // The first purchase's value: the customer's own mean (it is not modelled).
        let mut all = vec![(0.0, drawn.mean_spend)];
        all.extend(drawn.purchases.iter().copied());
        days.clear();
        for (week, dollars) in &all {
            let day = first + Duration::days((week * 7.0).floor() as i64);
            let cents = (dollars * 100.0).round().max(1.0) as i64;
            days.push((day, cents));
        }
        if let Some((mw, jw)) = writers.as_mut() {
            writeln!(
                mw,
                r#"{{"member":"S{n:07}","enrolled_at":"2024-12-31T00:00:00Z"}}"#
            )?;
            for (i, (day, cents)) in days.iter().enumerate() {
                writeln!(
                    jw,
                    "s{n}-{i},S{n:07},purchase,{day}T12:00:00Z,{}.{:02},USD",
                    cents / 100,
                    cents % 100
                )?;
            }
        }
        journals += days.len() as u64;
        if let Some(s) = history::summarize(&mut days, end, 7.0) {
            summaries.push(s);
        }
    }
    if let Some((mut mw, mut jw)) = writers {
        mw.flush()?;
        jw.flush()?;
    }
    let drawn_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let model = fidelis_core::analytics::churn::fit(&summaries)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let horizon = fidelis_core::analytics::churn::Horizon {
        purchases: 52.0,
        periods: 12,
        period: 365.25 / 12.0 / 7.0,
        discount: 0.01,
    };
    let t = Instant::now();
    let mut value = 0.0;
    for s in &summaries {
        value += model.score(s, &horizon).lifetime_value.unwrap_or(0.0);
    }
    let score_seconds = t.elapsed().as_secs_f64();
    let p = model.purchases.params;
    Ok(serde_json::json!({
        "members": summaries.len(),
        "journals": journals,
        "draw_seconds": drawn_seconds,
        "fit_seconds": fit_seconds,
        "evaluations": model.purchases.evaluations,
        "score_seconds": score_seconds,
        "bgnbd": {"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b},
        "lifetime_value_cents": value,
    }))
}
