//! P(alive) and the expected purchases of the BG/NBD model against an independent
//! computation: the model's definition integrated numerically over the purchase rate λ
//! (Gamma(r, α)) and the dropout probability p (Beta(a, b)), instead of the closed forms
//! (with their hypergeometric function) the module uses. Includes a customer silent for
//! years and one who never came back.

use fidelis_core::analytics::bgnbd::{Customer, Params};

const P: Params = Params {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

/// ln Σ eᵛ over `values`, scaled by the grid step `h` (a trapezoid rule whose ends vanish).
fn ln_integral(values: impl Iterator<Item = f64>, h: f64) -> f64 {
    let v: Vec<f64> = values.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + h.ln()
}

fn grid(from: f64, to: f64, n: usize) -> (Vec<f64>, f64) {
    let h = (to - from) / n as f64;
    ((0..=n).map(|i| from + h * i as f64).collect(), h)
}

fn ln_sigmoid(s: f64) -> f64 {
    -(-s).exp().ln_1p().max(if s < -30.0 { -s } else { 0.0 })
}

/// ln of ∫ λ^(x+r−1) e^(−(α+t)λ) dλ, with λ = eˢ (down to e^−200: with r ≈ 0.24 the
/// small rates weigh in slowly).
fn ln_rate_part(x: f64, t: f64, lam: &(Vec<f64>, f64)) -> f64 {
    ln_integral(
        lam.0
            .iter()
            .map(|&s| (x + P.r) * s - (P.alpha + t) * s.exp()),
        lam.1,
    )
}

/// ln of ∫ p^(a'−1) (1−p)^(b'−1) dp, with p = σ(s).
fn ln_dropout_part(a: f64, b: f64, pg: &(Vec<f64>, f64)) -> f64 {
    ln_integral(
        pg.0.iter().map(|&s| a * ln_sigmoid(s) + b * ln_sigmoid(-s)),
        pg.1,
    )
}

/// (P(alive), expected purchases in the next `t`) by integration.
fn integrated(c: &Customer, t: f64) -> (f64, f64) {
    let lam = grid(-200.0, 8.0, 8_000);
    let pg = grid(-40.0, 40.0, 2_000);
    let x = f64::from(c.frequency);
    let alive = ln_rate_part(x, c.age, &lam) + ln_dropout_part(P.a, P.b + x, &pg);
    let total = if c.frequency == 0 {
        alive
    } else {
        let dead =
            ln_rate_part(x, c.recency, &lam) + ln_dropout_part(P.a + 1.0, P.b + x - 1.0, &pg);
        let m = alive.max(dead);
        m + ((alive - m).exp() + (dead - m).exp()).ln()
    };
    // Alive at the window's end with rate λ and dropout p, a customer makes
    // (1 − e^(−λpt)) / p purchases in the next t on average (the paper's equation 7).
    let (lam, pg) = (grid(-120.0, 6.0, 2_000), grid(-30.0, 30.0, 600));
    let mut terms = Vec::with_capacity(lam.0.len() * pg.0.len());
    for &s in &lam.0 {
        let l = s.exp();
        let ln_rate = (x + P.r) * s - (P.alpha + c.age) * l;
        for &q in &pg.0 {
            let p = 1.0 / (1.0 + (-q).exp());
            let ln_p = P.a * ln_sigmoid(q) + (P.b + x) * ln_sigmoid(-q);
            let ahead = -(-l * p * t).exp_m1() / p;
            terms.push(ln_rate + ln_p + ahead.ln());
        }
    }
    let expected = ln_integral(terms.into_iter(), lam.1 * pg.1);
    ((alive - total).exp(), (expected - total).exp())
}

#[test]
fn p_alive_and_forecasts_agree_with_numerical_integration() {
    for (x, tx, age) in [
        (0, 0.0, 38.0),  // never came back
        (2, 30.4, 38.9), // a few purchases, recent
        (7, 35.0, 39.0), // frequent and recent
        (5, 2.0, 300.0), // busy in the first weeks, silent for almost six years
        (1, 20.0, 25.0),
    ] {
        let c = Customer::new(x, tx, age).expect("valid");
        let (p_alive, expected) = integrated(&c, 39.0);
        let (model_alive, model_expected) = (P.p_alive(&c), P.expected_purchases(&c, 39.0));
        assert!(
            (model_alive - p_alive).abs() < 1e-6 * p_alive.max(1e-12) + 1e-9,
            "P(alive) of {c:?}: model {model_alive}, integrated {p_alive}"
        );
        assert!(
            (model_expected / expected - 1.0).abs() < 1e-4,
            "expected purchases of {c:?}: model {model_expected}, integrated {expected}"
        );
    }
}
