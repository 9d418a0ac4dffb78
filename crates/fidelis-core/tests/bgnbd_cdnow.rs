//! The BG/NBD fit against the paper: on the CDNOW 1/10 sample (2,357 customers, calibration
//! of 39 weeks ending 1997-09-30, purchases grouped per day) the maximum-likelihood
//! estimates must be the published r = 0.243, α = 4.414, a = 0.793, b = 2.426 (within 1 %)
//! with log-likelihood −9582.4 (within 0.5). And the scores stay finite and sane for
//! customers far outside the sample (odds of 10^10 and beyond).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use fidelis_core::analytics::bgnbd::{self, Customer, Params};

/// The calibration summaries (weeks) of the CDNOW sample.
fn cdnow_calibration() -> Vec<Customer> {
    let text = include_str!("data/cdnow/CDNOW_sample.txt");
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).expect("a date");
    let mut days: BTreeMap<u32, Vec<NaiveDate>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "line {}", n + 1);
        let customer: u32 = f[0].parse().expect("a customer id");
        let day = NaiveDate::parse_from_str(f[2], "%Y%m%d").expect("a date");
        days.entry(customer).or_default().push(day);
    }
    assert_eq!(days.len(), 2_357);
    days.into_values()
        .map(|mut d| {
            d.sort_unstable();
            d.dedup();
            let first = d[0];
            let seen: Vec<NaiveDate> = d.into_iter().filter(|&x| x <= end).collect();
            let weeks = |x: NaiveDate| (x - first).num_days() as f64 / 7.0;
            let last = *seen
                .last()
                .expect("every customer bought in the first quarter");
            Customer::new((seen.len() - 1) as u32, weeks(last), weeks(end)).expect("valid")
        })
        .collect()
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
