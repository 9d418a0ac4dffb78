//! The BG/NBD fit against the paper: on the CDNOW 1/10 sample (2,357 customers, calibration
//! of 39 weeks ending 1997-09-30, purchases grouped per day) the maximum-likelihood
//! estimates must be the published r = 0.243, α = 4.414, a = 0.793, b = 2.426 (within 1 %)
//! with log-likelihood −9582.4 (within 0.5). And the scores stay finite and sane for
//! customers far outside the sample (odds of 10^10 and beyond).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use fidelis_core::analytics::bgnbd::{self, Customer, Params};
use fidelis_core::analytics::gamma_gamma;
use fidelis_core::analytics::history::{self, Summary};

/// The calibration summaries (weeks) of the CDNOW sample, with spend in cents.
fn cdnow_summaries() -> Vec<Summary> {
    let text = include_str!("data/cdnow/CDNOW_sample.txt");
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).expect("a date");
    let mut purchases: BTreeMap<u32, Vec<(NaiveDate, i64)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "line {}", n + 1);
        let customer: u32 = f[0].parse().expect("a customer id");
        let day = NaiveDate::parse_from_str(f[2], "%Y%m%d").expect("a date");
        let dollars: f64 = f[4].parse().expect("an amount");
        purchases
            .entry(customer)
            .or_default()
            .push((day, (dollars * 100.0).round() as i64));
    }
    assert_eq!(purchases.len(), 2_357);
    purchases
        .into_values()
        .map(|mut p| {
            history::summarize(&mut p, end, 7.0)
                .expect("every customer bought in the first quarter")
        })
        .collect()
}

fn cdnow_calibration() -> Vec<Customer> {
    cdnow_summaries().iter().map(|s| s.customer).collect()
}

#[test]
fn the_fit_reproduces_the_published_cdnow_estimates() {
    let customers = cdnow_calibration();
    let fit = bgnbd::fit(&customers).expect("a fit");
    eprintln!("{fit:?}");
    let p = fit.params;
    for (name, got, published) in [
        ("r", p.r, 0.243),
        ("alpha", p.alpha, 4.414),
        ("a", p.a, 0.793),
        ("b", p.b, 2.426),
    ] {
        assert!(
            (got / published - 1.0).abs() < 0.01,
            "{name} = {got}, published {published} ({fit:?})"
        );
    }
    assert!(
        (fit.log_likelihood - -9582.4).abs() < 0.5,
        "log-likelihood {} ({fit:?})",
        fit.log_likelihood
    );
    // The optimum is a maximum: nudging any parameter lowers the likelihood.
    for (i, step) in [
        (0, 1.01),
        (1, 1.01),
        (2, 1.01),
        (3, 1.01),
        (0, 0.99),
        (3, 0.99),
    ] {
        let mut q = [p.r, p.alpha, p.a, p.b];
        q[i] *= step;
        let nudged = Params {
            r: q[0],
            alpha: q[1],
            a: q[2],
            b: q[3],
        };
        assert!(bgnbd::log_likelihood(&nudged, &customers) < fit.log_likelihood);
    }
}

/// The Gamma-Gamma fit on the same sample's 946 repeat customers (mean spend of their
/// repeat purchase days in the calibration window) reproduces the published p = 6.25,
/// q = 3.74, γ = 15.44 (Fader & Hardie 2013, dollars) within 1 %.
#[test]
fn the_spend_model_reproduces_the_published_cdnow_estimates() {
    let spenders: Vec<gamma_gamma::Spender> = cdnow_summaries()
        .iter()
        .filter_map(|s| s.spender)
        .map(|s| gamma_gamma::Spender::new(s.frequency, s.mean_value / 100.0).expect("positive"))
        .collect();
    assert_eq!(spenders.len(), 946);
    let fit = gamma_gamma::fit(&spenders).expect("a fit");
    eprintln!("{fit:?}");
    let p = fit.params;
    for (name, got, published) in [
        ("p", p.p, 6.25),
        ("q", p.q, 3.74),
        ("gamma", p.gamma, 15.44),
    ] {
        assert!(
            (got / published - 1.0).abs() < 0.01,
            "{name} = {got}, published {published} ({fit:?})"
        );
    }
    // A customer with many purchases is valued near their own mean, one with few near the
    // population's ($35.0 when p = 6.25, q = 3.74, γ = 15.44 ≈ 6.25 · 15.44 / 2.74).
    let population = p.population_mean();
    assert!((population - 35.2).abs() < 0.5, "{population}");
    let many = p.expected_spend(50, 100.0);
    let few = p.expected_spend(1, 100.0);
    assert!(
        many > few && few > population && many < 100.0,
        "{many} {few}"
    );
    assert!((p.expected_spend(0, 0.0) - population).abs() < 1e-9);
}

#[test]
fn scores_stay_finite_for_extreme_customers() {
    let p = Params {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    // Bought 200 times in the first week of a ten-year window, never again: the odds of
    // having dropped out are astronomically high (far beyond 10^10), P(alive) ≈ 0.
    let gone = Customer::new(200, 1.0, 520.0).expect("valid");
    let alive = p.p_alive(&gone);
    assert!((0.0..1e-10).contains(&alive), "{alive}");
    let expected = p.expected_purchases(&gone, 39.0);
    assert!(
        expected.is_finite() && (0.0..1e-6).contains(&expected),
        "{expected}"
    );
    assert!(p.log_likelihood(&gone).is_finite());
    // Bought steadily up to the window's end: alive, with many purchases ahead.
    let steady = Customer::new(30, 38.9, 39.0).expect("valid");
    assert!(p.p_alive(&steady) > 0.9);
    assert!(p.expected_purchases(&steady, 39.0) > 10.0);
    // No repeat purchase: alive by the model's assumption, fewer purchases expected.
    let once = Customer::new(0, 0.0, 39.0).expect("valid");
    assert_eq!(p.p_alive(&once), 1.0);
    let e = p.expected_purchases(&once, 39.0);
    assert!(e > 0.0 && e < p.expected_purchases(&steady, 39.0));
    // Bad summaries are refused, not scored.
    assert!(Customer::new(2, 40.0, 39.0).is_none());
    assert!(Customer::new(2, 0.0, 39.0).is_none());
    assert!(Customer::new(0, 0.0, f64::NAN).is_none());
}
