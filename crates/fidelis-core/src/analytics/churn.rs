//! Churn risk and lifetime value for a program's members: both models fitted on the
//! members' summaries, then every member scored.

use crate::analytics::bgnbd;
use crate::analytics::gamma_gamma;
use crate::analytics::history::Summary;

/// The fitted models. The spend model may be missing (no repeat purchases with spend, or a
/// fit without a finite mean) while the purchase model stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub purchases: bgnbd::Fit,
    pub spend: Result<gamma_gamma::Fit, gamma_gamma::FitError>,
}

/// How far ahead to look, in the summaries' time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Horizon {
    /// Expected purchases are counted over this long after the window.
    pub purchases: f64,
    /// Lifetime value: this many periods…
    pub periods: u32,
    /// …of this length (e.g. 4.348 weeks for a month)…
    pub period: f64,
    /// …discounted at this rate per period.
    pub discount: f64,
}

/// One member's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The probability the member is still active at the window's end.
    pub p_alive: f64,
    /// Purchases expected over the horizon.
    pub expected_purchases: f64,
    /// Spend per purchase to expect (minor units), when the spend model stands.
    pub expected_spend: Option<f64>,
    /// The discounted value of the member's purchases over the lifetime horizon.
    pub lifetime_value: Option<f64>,
}

/// Fits both models on the summaries.
pub fn fit(summaries: &[Summary]) -> Result<Model, bgnbd::FitError> {
    let customers: Vec<bgnbd::Customer> = summaries.iter().map(|s| s.customer).collect();
    let purchases = bgnbd::fit(&customers)?;
    let spenders: Vec<gamma_gamma::Spender> = summaries.iter().filter_map(|s| s.spender).collect();
    let spend = gamma_gamma::fit(&spenders);
    Ok(Model { purchases, spend })
}

impl Model {
    pub fn score(&self, s: &Summary, horizon: &Horizon) -> Score {
        let bg = &self.purchases.params;
        let expected_spend = self.spend.as_ref().ok().map(|f| {
            let (x, m) = s
                .spender
                .map_or((0, 0.0), |sp| (sp.frequency, sp.mean_value));
            f.params.expected_spend(x, m)
        });
        Score {
            p_alive: bg.p_alive(&s.customer),
            expected_purchases: bg.expected_purchases(&s.customer, horizon.purchases),
            expected_spend,
            lifetime_value: expected_spend.map(|spend| {
                gamma_gamma::lifetime_value(
                    bg,
                    &s.customer,
                    spend,
                    horizon.periods,
                    horizon.period,
                    horizon.discount,
                )
            }),
        }
    }
}
