//! The fits recover the parameters of a population drawn from the models themselves, and
//! the draw is the same for the same seed.

use fidelis_core::analytics::synthetic::Population;
use fidelis_core::analytics::{bgnbd, gamma_gamma};

const PURCHASES: bgnbd::Params = bgnbd::Params {
    r: 0.5,
    alpha: 5.0,
    a: 0.8,
    b: 2.5,
};
const SPEND: gamma_gamma::Params = gamma_gamma::Params {
    p: 6.0,
    q: 4.0,
    gamma: 15.0,
};

#[test]
fn fits_recover_the_parameters_of_a_drawn_population() {
    let mut population = Population::new(PURCHASES, SPEND, 7).unwrap();
    let drawn: Vec<_> = (0..20_000)
        .map(|_| {
            let age = 26.0 + 52.0 * population.uniform();
            population.draw(age)
        })
        .collect();
    let customers: Vec<_> = drawn.iter().map(|d| d.customer()).collect();
    let fit = bgnbd::fit(&customers).unwrap();
    let p = fit.params;
    for (name, got, truth, tolerance) in [
        ("r", p.r, PURCHASES.r, 0.1),
        ("alpha", p.alpha, PURCHASES.alpha, 0.1),
        ("a", p.a, PURCHASES.a, 0.25),
        ("b", p.b, PURCHASES.b, 0.25),
    ] {
        assert!(
            (got / truth - 1.0).abs() < tolerance,
            "{name} = {got}, drawn with {truth} ({fit:?})"
        );
    }
    let spenders: Vec<_> = drawn.iter().filter_map(|d| d.spender()).collect();
    let fit = gamma_gamma::fit(&spenders).unwrap();
    let g = fit.params;
    assert!(
        (g.population_mean() / SPEND.population_mean() - 1.0).abs() < 0.05,
        "{fit:?}"
    );
    for (name, got, truth) in [
        ("p", g.p, SPEND.p),
        ("q", g.q, SPEND.q),
        ("gamma", g.gamma, SPEND.gamma),
    ] {
        assert!(
            (got / truth - 1.0).abs() < 0.25,
            "{name} = {got}, drawn with {truth} ({fit:?})"
        );
    }
    // P(alive) sorts the drawn customers: those it calls alive mostly are, and the dropped
    // mostly score low.
    let (mut alive_scored, mut dropped_scored, mut alive_n, mut dropped_n) = (0.0, 0.0, 0.0, 0.0);
    for (d, c) in drawn.iter().zip(&customers) {
        let score = p.p_alive(c);
        if d.dropped {
            dropped_scored += score;
            dropped_n += 1.0;
        } else {
            alive_scored += score;
            alive_n += 1.0;
        }
    }
    assert!(alive_scored / alive_n > dropped_scored / dropped_n + 0.2);
}

#[test]
fn the_same_seed_draws_the_same_population() {
    let draw = |seed| {
        let mut population = Population::new(PURCHASES, SPEND, seed).unwrap();
        (0..100).map(|_| population.draw(52.0)).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    let bad = bgnbd::Params {
        r: -1.0,
        ..PURCHASES
    };
    assert!(Population::new(bad, SPEND, 1).is_err());
}
