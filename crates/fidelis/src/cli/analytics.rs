//! `fidelis analytics`: models of the program's members fitted on its own history.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use fidelis_core::analytics::churn::{self, Horizon};
use fidelis_core::analytics::experiment;
use fidelis_store::StoreError;

use super::{EXIT_REJECTED, connect, program};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Unit {
    Day,
    Week,
}

impl Unit {
    fn days(self) -> f64 {
        match self {
            Self::Day => 1.0,
            Self::Week => 7.0,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Churn risk and lifetime value: the BG/NBD model of repeat purchases and the
    /// Gamma-Gamma model of spend, fitted by maximum likelihood on the members' purchases
    /// (grouped per day) up to the end of the calibration window; prints the parameters and
    /// totals as JSON, and with `--members FILE` every member's scores as CSV.
    Churn {
        #[arg(long)]
        program: String,
        /// The window's last day (in the program's time zone); purchases after it are not
        /// used.
        #[arg(long)]
        calibration_end: NaiveDate,
        /// The model's time unit.
        #[arg(long, value_enum, default_value = "week")]
        unit: Unit,
        /// Expected purchases are counted over this many units after the window.
        #[arg(long, default_value_t = 52.0)]
        horizon: f64,
        /// Lifetime value over this many months (of 365.25 / 12 days)…
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1200))]
        clv_months: u32,
        /// …discounted at this rate per month (0.01 = 1 %).
        #[arg(long, default_value_t = 0.01)]
        discount: f64,
        /// Write every member's scores here (CSV).
        #[arg(long)]
        members: Option<PathBuf>,
    },
    /// A promotion against its control group over a window: the members it rewarded and
    /// those held out (`control_group` in its definition), their mean spend on purchases in
    /// the window, the difference with its 95 % interval, the incremental revenue, the
    /// points' cost and the return on investment (JSON); says when the groups are too small
    /// or the difference cannot be told from chance.
    Promotion {
        #[arg(long)]
        program: String,
        #[arg(long)]
        promotion: String,
        /// The window's start, RFC 3339.
        #[arg(long)]
        from: DateTime<Utc>,
        /// Its end, excluded; now when absent.
        #[arg(long)]
        to: Option<DateTime<Utc>>,
    },
    /// The program's key figures, computed in the database, as the API's
    /// `GET …/analytics/kpis` gives them: members (total, active in 30 and 90 days), and per
    /// month of the last `--months` enrolments and points issued, redeemed and expired per
    /// currency, redemption and breakage rates, points outstanding, members per tier.
    Kpis {
        #[arg(long)]
        program: String,
        /// Months back, the current one included.
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=120))]
        months: u32,
        /// `json` (the whole report) or `csv` (one row per month and currency).
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

pub async fn run(database: &str, command: AnalyticsCommand) -> Result<ExitCode> {
    match command {
        AnalyticsCommand::Kpis {
            program: code,
            months,
            format,
        } => {
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let report = fidelis_web::kpis_report(&store, &program, months, Utc::now()).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report.body)?),
                Format::Csv => print!("{}", report.csv),
            }
            Ok(ExitCode::SUCCESS)
        }
        AnalyticsCommand::Promotion {
            program: code,
            promotion,
            from,
            to,
        } => {
            // A window that ends before it starts is empty, as the API answers it.
            let to = to.unwrap_or_else(Utc::now);
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let exposure = match store
                .promotion_exposure(&program, &promotion, from, to)
                .await
            {
                Ok(e) => e,
                Err(StoreError::Refused(code, message)) => {
                    eprintln!("error: {message} ({code})");
                    return Ok(ExitCode::from(EXIT_REJECTED));
                }
                Err(e) => return Err(e.into()),
            };
            let r = experiment::compare(&exposure.treated, &exposure.control, exposure.cost);
            let minor = 10f64.powi(i32::from(program.program.money_currency.scale()));
            let money = |v: f64| format!("{:.2}", v / minor);
            let interval = |i: Option<(f64, f64)>, f: &dyn Fn(f64) -> serde_json::Value| {
                i.map(|(lo, hi)| serde_json::json!([f(lo), f(hi)]))
            };
            let report = serde_json::json!({
                "program": program.program.code.as_str(),
                "promotion": promotion,
                "from": from,
                "to": to,
                "treated_members": r.treated,
                "control_members": r.control,
                "applied_journals": exposure.applied_journals,
                "control_journals": exposure.control_journals,
                "treated_mean_spend": money(r.treated_mean),
                "control_mean_spend": money(r.control_mean),
                "lift_per_member": money(r.lift),
                "lift_interval_95": interval(r.lift_interval, &|v| money(v).into()),
                "incremental_revenue": money(r.incremental_revenue),
                "incremental_revenue_interval_95": interval(r.revenue_interval, &|v| money(v).into()),
                "points": exposure.points.iter().map(|(c, n)| serde_json::json!({"currency": c, "points": n})).collect::<Vec<_>>(),
                "cost": money(exposure.cost as f64),
                "roi": r.roi,
                "roi_interval_95": interval(r.roi_interval, &|v| v.into()),
                "conclusion": r.conclusion.name(),
                "money_currency": program.program.money_currency.code(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        AnalyticsCommand::Churn {
            program: code,
            calibration_end,
            unit,
            horizon,
            clv_months,
            discount,
            members,
        } => {
            if !(horizon.is_finite() && horizon >= 0.0) {
                bail!("--horizon must be a number of units, 0 or more");
            }
            if !(discount.is_finite() && (0.0..1.0).contains(&discount)) {
                bail!("--discount must be at least 0 and below 1");
            }
            let store = connect(database).await?;
            let program = program(&store, &code).await?;
            let histories = store
                .purchase_histories(&program, calibration_end, unit.days())
                .await?;
            let summaries: Vec<_> = histories.members.iter().map(|m| m.summary).collect();
            let model = churn::fit(&summaries).context("fitting the purchase model")?;
            let horizon = Horizon {
                purchases: horizon,
                periods: clv_months,
                period: 365.25 / 12.0 / unit.days(),
                discount,
            };
            let money = &program.program.money_currency;
            let minor = 10f64.powi(i32::from(money.scale()));
            let mut writer = members
                .as_ref()
                .map(|path| {
                    csv::Writer::from_path(path)
                        .with_context(|| format!("cannot write {}", path.display()))
                })
                .transpose()?;
            if let Some(w) = writer.as_mut() {
                w.write_record([
                    "member",
                    "frequency",
                    "recency",
                    "age",
                    "first_purchase",
                    "last_purchase",
                    "spend",
                    "p_alive",
                    "expected_purchases",
                    "expected_spend",
                    "lifetime_value",
                    "rfm",
                    "rfm_segment",
                ])?;
            }
            let rfm = fidelis_core::analytics::rfm::score_all(
                &histories
                    .members
                    .iter()
                    .map(|m| fidelis_core::analytics::rfm::Measures {
                        recency_days: (calibration_end - m.summary.last).num_days(),
                        frequency: m.summary.customer.frequency + 1,
                        monetary: m.summary.total_spend,
                    })
                    .collect::<Vec<_>>(),
            );
            let mut segments: std::collections::BTreeMap<&str, u64> = Default::default();
            let (mut alive, mut expected, mut value, mut at_risk) = (0.0, 0.0, 0.0, 0u64);
            for (m, rfm) in histories.members.iter().zip(&rfm) {
                let s = &m.summary;
                let score = model.score(s, &horizon);
                *segments.entry(rfm.segment()).or_default() += 1;
                alive += score.p_alive;
                expected += score.expected_purchases;
                value += score.lifetime_value.unwrap_or(0.0);
                if score.p_alive < 0.5 {
                    at_risk += 1;
                }
                if let Some(w) = writer.as_mut() {
                    let money_text =
                        |v: Option<f64>| v.map_or(String::new(), |v| format!("{:.2}", v / minor));
                    w.write_record([
                        m.external_id.clone(),
                        s.customer.frequency.to_string(),
                        format!("{:.4}", s.customer.recency),
                        format!("{:.4}", s.customer.age),
                        s.first.to_string(),
                        s.last.to_string(),
                        money.format(fidelis_core::money::MinorUnits(s.total_spend)),
                        format!("{:.6}", score.p_alive),
                        format!("{:.4}", score.expected_purchases),
                        money_text(score.expected_spend),
                        money_text(score.lifetime_value),
                        format!("{}{}{}", rfm.recency, rfm.frequency, rfm.monetary),
                        rfm.segment().to_owned(),
                    ])?;
                }
            }
            if let Some(mut w) = writer {
                w.flush()?;
            }
            let bg = &model.purchases;
            let spend = match &model.spend {
                Ok(f) => serde_json::json!({
                    "p": f.params.p,
                    // γ in the money currency's units (the fit ran on minor units).
                    "gamma": f.params.gamma / minor,
                    "q": f.params.q,
                    "log_likelihood": f.log_likelihood,
                    "mean_spend": format!("{:.2}", f.params.population_mean() / minor),
                }),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            let report = serde_json::json!({
                "program": program.program.code.as_str(),
                "calibration_end": calibration_end,
                "unit": format!("{unit:?}").to_lowercase(),
                "members": histories.members.len(),
                "purchases": histories.purchases,
                "purchase_model": {
                    "r": bg.params.r,
                    "alpha": bg.params.alpha,
                    "a": bg.params.a,
                    "b": bg.params.b,
                    "log_likelihood": bg.log_likelihood,
                    "evaluations": bg.evaluations,
                },
                "spend_model": spend,
                "horizon": horizon.purchases,
                "expected_active": alive,
                "at_risk": at_risk,
                "expected_purchases": expected,
                "lifetime_value": format!("{:.2}", value / minor),
                "rfm_segments": segments,
                "money_currency": money.code(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
