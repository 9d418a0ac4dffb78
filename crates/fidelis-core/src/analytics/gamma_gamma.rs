//! The Gamma-Gamma model of spend per purchase (Fader & Hardie, "The Gamma-Gamma Model of
//! Monetary Value", 2013; after Colombo & Jiang 1999), and the customer lifetime value it
//! gives with the BG/NBD forecast.
//!
//! A customer's purchases are worth Gamma(p, ν) each around their own mean, and ν varies
//! across customers as Gamma(q, γ). Fitted on the customers with repeat purchases — their
//! count `x` and the mean value `m̄` of those purchases — it gives each customer's expected
//! spend per purchase: a weighted mean of the population's and the customer's own, the
//! customer's weighing more the more purchases there are. The model assumes spend does not
//! depend on how often one buys; check that the two are not strongly correlated in the
//! program's data before trusting the values.

use crate::analytics::bgnbd;
use crate::analytics::optimize::{bfgs, nelder_mead_restarted};
use crate::analytics::special::{digamma, ln_gamma};

/// A customer with repeat purchases: their count and their mean value (in any unit of
/// money, e.g. minor units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spender {
    pub frequency: u32,
    pub mean_value: f64,
}

impl Spender {
    /// `None` without repeat purchases or without a positive, finite mean value.
    pub fn new(frequency: u32, mean_value: f64) -> Option<Self> {
        (frequency > 0 && mean_value.is_finite() && mean_value > 0.0).then_some(Self {
            frequency,
            mean_value,
        })
    }
}

/// The model's parameters: the shape `p` of a purchase's value, and the Gamma(q, γ) of its
/// scale across customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub params: Params,
    pub log_likelihood: f64,
    pub evaluations: u32,
}

/// Why a fit cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("no customer with repeat purchases and a positive spend")]
    NoSpenders,
    #[error("the optimiser did not converge")]
    NotConverged,
    #[error("the fitted q is not above 1: the population's mean spend is not finite")]
    NoFiniteMean,
}

impl Params {
    /// The log-likelihood of one customer's mean value given their purchase count (the
    /// density of m̄, so it depends on the unit of money only by a constant).
    pub fn log_likelihood(&self, s: &Spender) -> f64 {
        let Params { p, q, gamma } = *self;
        let x = f64::from(s.frequency);
        let m = s.mean_value;
        let px = p * x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
            + q * gamma.ln()
            + (px - 1.0) * m.ln()
            + px * x.ln()
            - (px + q) * (x * m + gamma).ln()
    }

    /// The population's mean spend per purchase: p·γ / (q − 1) (infinite unless q > 1).
    pub fn population_mean(&self) -> f64 {
        if self.q > 1.0 {
            self.p * self.gamma / (self.q - 1.0)
        } else {
            f64::INFINITY
        }
    }

    /// E[spend per purchase | x, m̄]: for a customer without repeat purchases (x = 0), the
    /// population's mean.
    pub fn expected_spend(&self, frequency: u32, mean_value: f64) -> f64 {
        let Params { p, q, gamma } = *self;
        let x = f64::from(frequency);
        let m = if frequency == 0 { 0.0 } else { mean_value };
        p * (gamma + x * m) / (p * x + q - 1.0)
    }
}

/// Fits by maximum likelihood: BFGS with the analytic gradient on the logs of the
/// parameters; Nelder–Mead from the same start if that fails.
pub fn fit(spenders: &[Spender]) -> Result<Fit, FitError> {
    if spenders.is_empty() {
        return Err(FitError::NoSpenders);
    }
    // Start from a mean near the data's: p = 1, q = 2, γ = the mean of the means.
    let mean = spenders.iter().map(|s| s.mean_value).sum::<f64>() / spenders.len() as f64;
    let start = [0.0, 2f64.ln(), mean.ln()];
    // (x, ln x, ln m̄, m̄) per spender: the logs do not change with the parameters.
    let data: Vec<(f64, f64, f64, f64)> = spenders
        .iter()
        .map(|s| {
            let x = f64::from(s.frequency);
            (x, x.ln(), s.mean_value.ln(), s.mean_value)
        })
        .collect();
    let total = spenders.len() as f64;
    let mut objective = |v: &[f64; 3]| -> (f64, [f64; 3]) {
        let (p, q, gamma) = (v[0].exp(), v[1].exp(), v[2].exp());
        let (ln_gamma_q, digamma_q, ln_g) = (ln_gamma(q), digamma(q), gamma.ln());
        let (mut ll, mut gp, mut gq, mut gg) = (0.0, 0.0, 0.0, 0.0);
        for &(x, ln_x, ln_m, m) in &data {
            let px = p * x;
            let ln_xm_g = (x * m + gamma).ln();
            let psi_pxq = digamma(px + q);
            ll += ln_gamma(px + q) - ln_gamma(px) - ln_gamma_q
                + q * ln_g
                + (px - 1.0) * ln_m
                + px * ln_x
                - (px + q) * ln_xm_g;
            gp += x * (psi_pxq - digamma(px) + ln_m + ln_x - ln_xm_g);
            gq += psi_pxq - digamma_q + ln_g - ln_xm_g;
            gg += q / gamma - (px + q) / (x * m + gamma);
        }
        (
            -ll / total,
            [-gp * p / total, -gq * q / total, -gg * gamma / total],
        )
    };
    if let Some((point, value, evaluations)) = bfgs(&mut objective, start, 1e-10, 2_000)
        && value.is_finite()
    {
        let params = Params {
            p: point[0].exp(),
            q: point[1].exp(),
            gamma: point[2].exp(),
        };
        if params.q <= 1.0 {
            return Err(FitError::NoFiniteMean);
        }
        return Ok(Fit {
            params,
            log_likelihood: -value * total,
            evaluations,
        });
    }
    fit_nelder_mead(spenders, start)
}

/// The derivative-free fallback.
fn fit_nelder_mead(spenders: &[Spender], start: [f64; 3]) -> Result<Fit, FitError> {
    let mut evaluations = 0u32;
    let mut objective = |v: &[f64; 3]| -> f64 {
        evaluations += 1;
        let params = Params {
            p: v[0].exp(),
            q: v[1].exp(),
            gamma: v[2].exp(),
        };
        let ll: f64 = spenders.iter().map(|s| params.log_likelihood(s)).sum();
        if ll.is_finite() { -ll } else { f64::INFINITY }
    };
    let (start, best) = nelder_mead_restarted(&mut objective, start, 1e-12);
    if !best.is_finite() {
        return Err(FitError::NotConverged);
    }
    let params = Params {
        p: start[0].exp(),
        q: start[1].exp(),
        gamma: start[2].exp(),
    };
    if params.q <= 1.0 {
        return Err(FitError::NoFiniteMean);
    }
    Ok(Fit {
        params,
        log_likelihood: -best,
        evaluations,
    })
}

/// The value of a customer's purchases over the next `periods` periods of `period` time
/// units each (e.g. 12 months of 4.348 weeks), each period's expected purchases times the
/// expected spend per purchase, discounted at `discount` per period (0.01 = 1 % a period)
/// to the end of the window: Σᵢ (E[X(i·period)] − E[X((i−1)·period)]) · spend / (1 + d)ⁱ.
pub fn lifetime_value(
    purchases: &bgnbd::Params,
    customer: &bgnbd::Customer,
    spend: f64,
    periods: u32,
    period: f64,
    discount: f64,
) -> f64 {
    let mut value = 0.0;
    let mut before = 0.0;
    let mut factor = 1.0;
    for i in 1..=periods {
        let upto = purchases.expected_purchases(customer, f64::from(i) * period);
        factor /= 1.0 + discount;
        value += (upto - before).max(0.0) * spend * factor;
        before = upto;
    }
    value
}
