//! The BG/NBD model of repeat purchasing (Fader, Hardie & Lee, "'Counting Your Customers'
//! the Easy Way: An Alternative to the Pareto/NBD Model", Marketing Science 24(2), 2005).
//!
//! While alive, a customer buys at Poisson rate λ (λ ~ Gamma(r, α) across customers); after
//! each purchase the customer drops out with probability p (p ~ Beta(a, b)). From a
//! customer's history in a calibration window — `x` repeat purchases, the last at `t_x`, the
//! window lasting `T` since the first — the model gives the likelihood (fitted by maximum
//! likelihood over the whole population), the probability the customer is still alive, and
//! the purchases to expect in the next `t` time units.
//!
//! Everything is computed in log space: a customer whose odds of having dropped out are
//! 10^10 to 1 (or 10^300) gives a probability near 0, never an overflow or a NaN.
//! Time units are the caller's (the paper and the CDNOW validation use weeks).

use crate::analytics::optimize::{bfgs, nelder_mead_restarted};
use crate::analytics::special::{hyp2f1, ln_beta, ln_gamma, log_add_exp};

/// One customer's summary over the calibration window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Customer {
    /// Repeat purchases: purchase occasions (days) after the first.
    pub frequency: u32,
    /// Time from the first purchase to the last (0 without repeat purchases).
    pub recency: f64,
    /// Time from the first purchase to the end of the window (`T`).
    pub age: f64,
}

impl Customer {
    /// `None` unless `0 ≤ recency ≤ age`, `age > 0`, both finite, and `recency > 0` when
    /// there are repeat purchases.
    pub fn new(frequency: u32, recency: f64, age: f64) -> Option<Self> {
        let ok = recency.is_finite()
            && age.is_finite()
            && age > 0.0
            && (0.0..=age).contains(&recency)
            && (frequency == 0 || recency > 0.0);
        ok.then_some(Self {
            frequency,
            recency,
            age,
        })
    }
}

/// The model's four parameters: the purchase rate's Gamma(r, α) and the dropout's Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// A fit: the parameters, the log-likelihood they reach, and the optimiser's effort.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub params: Params,
    pub log_likelihood: f64,
    pub evaluations: u32,
}

/// Why a fit cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("no customers to fit the model to")]
    NoCustomers,
    #[error("no repeat purchases at all: the model cannot tell rates from dropout")]
    NoRepeatPurchases,
    #[error("the optimiser did not converge")]
    NotConverged,
}

impl Params {
    /// The log-likelihood of one customer's history.
    pub fn log_likelihood(&self, c: &Customer) -> f64 {
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(c.frequency);
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_beta(a, b + x) - ln_beta(a, b);
        let a3 = -(r + x) * (alpha + c.age).ln();
        if c.frequency == 0 {
            return a1 + a2 + a3;
        }
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + c.recency).ln();
        a1 + a2 + log_add_exp(a3, a4)
    }

    /// The log of the odds that the customer has dropped out (−∞ without repeat purchases:
    /// the model has them alive for sure until a purchase gives them a chance to leave).
    fn ln_dropout_odds(&self, c: &Customer) -> f64 {
        if c.frequency == 0 {
            return f64::NEG_INFINITY;
        }
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(c.frequency);
        a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + c.age).ln() - (alpha + c.recency).ln())
    }

    /// P(alive | x, t_x, T): the probability the customer has not dropped out by the end of
    /// the window.
    pub fn p_alive(&self, c: &Customer) -> f64 {
        // 1 / (1 + e^k), computed without overflowing for any k.
        let k = self.ln_dropout_odds(c);
        if k > 0.0 {
            let e = (-k).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + k.exp())
        }
    }

    /// Purchases expected in the next `t` time units after the window, given the history
    /// (the paper's equation 10).
    pub fn expected_purchases(&self, c: &Customer, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(c.frequency);
        let z = t / (alpha + c.age + t);
        let ln_ratio = (r + x) * ((alpha + c.age).ln() - (alpha + c.age + t).ln());
        let h = hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let bracket = 1.0 - (ln_ratio + h.ln()).exp();
        let lead = (a + b + x - 1.0) / (a - 1.0);
        // Divided by 1 + odds: multiplied by P(alive).
        lead * bracket * self.p_alive(c)
    }
}

/// The population's log-likelihood at `params`.
pub fn log_likelihood(params: &Params, customers: &[Customer]) -> f64 {
    customers.iter().map(|c| params.log_likelihood(c)).sum()
}

/// Fits the model by maximum likelihood: BFGS with the analytic gradient on the logs of the
/// parameters (so they stay positive); Nelder–Mead from the same start if that fails.
///
/// The likelihood is evaluated cheaply: identical summaries are weighed once, and the
/// terms that depend only on the frequency `x` — ln Γ(r+x) − ln Γ(r) and the Beta terms,
/// which for whole `x` are sums of logarithms — are computed once per evaluation for
/// every frequency up to the largest, leaving two logarithms and one exponential per
/// distinct customer.
pub fn fit(customers: &[Customer]) -> Result<Fit, FitError> {
    if customers.is_empty() {
        return Err(FitError::NoCustomers);
    }
    if customers.iter().all(|c| c.frequency == 0) {
        return Err(FitError::NoRepeatPurchases);
    }
    // Identical summaries share one evaluation: (frequency, recency, age) → count.
    let mut distinct: Vec<(Customer, f64)> = Vec::new();
    let mut sorted: Vec<Customer> = customers.to_vec();
    sorted.sort_by(|p, q| {
        (p.frequency, p.recency, p.age)
            .partial_cmp(&(q.frequency, q.recency, q.age))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for c in sorted {
        match distinct.last_mut() {
            Some((d, n)) if *d == c => *n += 1.0,
            _ => distinct.push((c, 1.0)),
        }
    }
    // Start where the population's mean rate suggests, dropout even.
    let mean_rate = {
        let (x, t): (f64, f64) = customers.iter().fold((0.0, 0.0), |(x, t), c| {
            (x + f64::from(c.frequency), t + c.age)
        });
        (x / t).max(1e-6)
    };
    let start = [0.0, (1.0 / mean_rate).ln(), 0.0, 0.0];
    let total = customers.len() as f64;
    let mut terms = FrequencyTerms::default();
    let max_x = distinct.iter().map(|(c, _)| c.frequency).max().unwrap_or(0) as usize;
    let mut objective = |v: &[f64; 4]| -> (f64, [f64; 4]) {
        let p = Params {
            r: v[0].exp(),
            alpha: v[1].exp(),
            a: v[2].exp(),
            b: v[3].exp(),
        };
        let (ll, g) = log_likelihood_and_gradient(&p, &distinct, max_x, &mut terms);
        // Per customer, minimised, with respect to the logs.
        (
            -ll / total,
            [
                -g[0] * p.r / total,
                -g[1] * p.alpha / total,
                -g[2] * p.a / total,
                -g[3] * p.b / total,
            ],
        )
    };
    if let Some((point, value, evaluations)) = bfgs(&mut objective, start, 1e-10, 2_000)
        && value.is_finite()
    {
        return Ok(Fit {
            params: Params {
                r: point[0].exp(),
                alpha: point[1].exp(),
                a: point[2].exp(),
                b: point[3].exp(),
            },
            log_likelihood: -value * total,
            evaluations,
        });
    }
    fit_nelder_mead(&distinct, start)
}

/// What the likelihood needs per frequency x, for x = 0 … the largest: ln Γ(r+x) − ln Γ(r)
/// plus ln B(a, b+x) − ln B(a, b), its derivatives in r, a and b, and ln(b+x−1).
#[derive(Default)]
struct FrequencyTerms {
    a: Vec<f64>,
    dr: Vec<f64>,
    da: Vec<f64>,
    db: Vec<f64>,
    ln_b: Vec<f64>,
}

impl FrequencyTerms {
    fn fill(&mut self, p: &Params, max_x: usize) {
        for v in [
            &mut self.a,
            &mut self.dr,
            &mut self.da,
            &mut self.db,
            &mut self.ln_b,
        ] {
            v.clear();
        }
        let (mut a, mut dr, mut da, mut db) = (0.0, 0.0, 0.0, 0.0);
        for x in 0..=max_x {
            self.a.push(a);
            self.dr.push(dr);
            self.da.push(da);
            self.db.push(db);
            self.ln_b.push(if x == 0 {
                f64::NAN
            } else {
                (p.b + x as f64 - 1.0).ln()
            });
            // Γ(z+1) = z Γ(z): each step adds one factor.
            let k = x as f64;
            let (rk, bk, abk) = (p.r + k, p.b + k, p.a + p.b + k);
            a += rk.ln() + bk.ln() - abk.ln();
            dr += 1.0 / rk;
            da -= 1.0 / abk;
            db += 1.0 / bk - 1.0 / abk;
        }
    }
}

/// The weighted log-likelihood of distinct summaries and its gradient in (r, α, a, b).
fn log_likelihood_and_gradient(
    p: &Params,
    distinct: &[(Customer, f64)],
    max_x: usize,
    t: &mut FrequencyTerms,
) -> (f64, [f64; 4]) {
    t.fill(p, max_x);
    let Params { r, alpha, a, b } = *p;
    let (ln_alpha, ln_a) = (alpha.ln(), a.ln());
    let mut ll = 0.0;
    let mut g = [0.0; 4];
    for (c, n) in distinct {
        let xi = c.frequency as usize;
        let x = f64::from(c.frequency);
        let rx = r + x;
        let l_age = (alpha + c.age).ln();
        let u = -rx * l_age;
        if xi == 0 {
            ll += n * (r * ln_alpha + u);
            g[0] += n * (ln_alpha - l_age);
            g[1] += n * (r / alpha - rx / (alpha + c.age));
            continue;
        }
        let l_rec = (alpha + c.recency).ln();
        let v = ln_a - t.ln_b[xi] - rx * l_rec;
        // s = eᵘ / (eᵘ + eᵛ), without overflow.
        let (lse, s) = if u >= v {
            let e = (v - u).exp();
            (u + e.ln_1p(), 1.0 / (1.0 + e))
        } else {
            let e = (u - v).exp();
            (v + e.ln_1p(), e / (1.0 + e))
        };
        let q = 1.0 - s;
        ll += n * (t.a[xi] + r * ln_alpha + lse);
        g[0] += n * (t.dr[xi] + ln_alpha - s * l_age - q * l_rec);
        g[1] += n * (r / alpha - s * rx / (alpha + c.age) - q * rx / (alpha + c.recency));
        g[2] += n * (t.da[xi] + q / a);
        g[3] += n * (t.db[xi] - q / (b + x - 1.0));
    }
    (ll, g)
}

/// The derivative-free fallback.
fn fit_nelder_mead(distinct: &[(Customer, f64)], start: [f64; 4]) -> Result<Fit, FitError> {
    let mut evaluations = 0u32;
    let mut objective = |v: &[f64; 4]| -> f64 {
        evaluations += 1;
        let p = Params {
            r: v[0].exp(),
            alpha: v[1].exp(),
            a: v[2].exp(),
            b: v[3].exp(),
        };
        let ll: f64 = distinct.iter().map(|(c, n)| n * p.log_likelihood(c)).sum();
        if ll.is_finite() { -ll } else { f64::INFINITY }
    };
    let (start, best) = nelder_mead_restarted(&mut objective, start, 1e-10);
    if !best.is_finite() {
        return Err(FitError::NotConverged);
    }
    Ok(Fit {
        params: Params {
            r: start[0].exp(),
            alpha: start[1].exp(),
            a: start[2].exp(),
            b: start[3].exp(),
        },
        log_likelihood: -best,
        evaluations,
    })
}
