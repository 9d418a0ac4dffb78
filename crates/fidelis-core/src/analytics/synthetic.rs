//! Synthetic customers drawn from the models themselves: each one's purchase rate, dropout
//! probability and spend level drawn from the population's distributions, then their
//! purchases played forward. Deterministic for a seed (ChaCha8, whose stream is fixed by
//! its specification, not by a library version's choice of generator).
//!
//! Used to check that a fit recovers the parameters it was given, to benchmark fitting and
//! scoring at scale, and by `fidelis simulate` for its population.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma};

use crate::analytics::{bgnbd, gamma_gamma};

/// One drawn customer: their own rate, dropout probability and mean spend, and their
/// purchase times (after the first, at 0) up to `age`.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub rate: f64,
    pub dropout: f64,
    pub mean_spend: f64,
    pub age: f64,
    /// Repeat purchase times, increasing, each with its spend.
    pub purchases: Vec<(f64, f64)>,
    /// When the customer dropped out (after their last purchase), if they did by `age`.
    pub dropped: bool,
}

impl Drawn {
    /// The customer's summary for the models.
    pub fn customer(&self) -> bgnbd::Customer {
        let recency = self.purchases.last().map_or(0.0, |p| p.0);
        bgnbd::Customer::new(self.purchases.len() as u32, recency, self.age)
            .expect("drawn purchases fall inside the window")
    }

    /// The spend summary (the repeat purchases' mean), if there are repeat purchases.
    pub fn spender(&self) -> Option<gamma_gamma::Spender> {
        let n = self.purchases.len();
        let total: f64 = self.purchases.iter().map(|p| p.1).sum();
        gamma_gamma::Spender::new(n as u32, total / n.max(1) as f64)
    }
}

/// Draws customers from the BG/NBD and Gamma-Gamma populations.
pub struct Population {
    rng: ChaCha8Rng,
    rate: Gamma<f64>,
    dropout: Beta<f64>,
    scale: Gamma<f64>,
    shape: f64,
}

/// A population's parameters are not those of a distribution (not positive and finite).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("population parameters must be positive and finite")]
pub struct BadParams;

impl Population {
    pub fn new(
        purchases: bgnbd::Params,
        spend: gamma_gamma::Params,
        seed: u64,
    ) -> Result<Self, BadParams> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        let all = [
            purchases.r,
            purchases.alpha,
            purchases.a,
            purchases.b,
            spend.p,
            spend.q,
            spend.gamma,
        ];
        if !all.into_iter().all(ok) {
            return Err(BadParams);
        }
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            // λ ~ Gamma(r, α) with α a rate: scale 1/α.
            rate: Gamma::new(purchases.r, 1.0 / purchases.alpha).map_err(|_| BadParams)?,
            dropout: Beta::new(purchases.a, purchases.b).map_err(|_| BadParams)?,
            // ν ~ Gamma(q, γ) (rate γ); a purchase's value ~ Gamma(p, ν) (rate ν).
            scale: Gamma::new(spend.q, 1.0 / spend.gamma).map_err(|_| BadParams)?,
            shape: spend.p,
        })
    }

    /// The next customer, first purchase at 0, observed until `age`.
    pub fn draw(&mut self, age: f64) -> Drawn {
        let rate: f64 = self.rate.sample(&mut self.rng).max(1e-12);
        let dropout: f64 = self.dropout.sample(&mut self.rng);
        let nu: f64 = self.scale.sample(&mut self.rng).max(1e-12);
        let value = Gamma::new(self.shape, 1.0 / nu).expect("positive shape and scale");
        let gap = Exp::new(rate).expect("a positive rate");
        let mut purchases = Vec::new();
        let mut t = 0.0;
        let mut dropped = false;
        loop {
            t += gap.sample(&mut self.rng);
            if t > age {
                break;
            }
            purchases.push((t, value.sample(&mut self.rng)));
            if self.rng.random::<f64>() < dropout {
                dropped = true;
                break;
            }
        }
        Drawn {
            rate,
            dropout,
            mean_spend: self.shape / nu,
            age,
            purchases,
            dropped,
        }
    }

    /// A number in [0, 1) from the population's stream (e.g. to spread ages).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}
