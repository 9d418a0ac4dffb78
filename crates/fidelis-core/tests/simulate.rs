//! `fidelis simulate`'s engine: deterministic per seed, consistent with its own ledger, and
//! like for like between two definitions.

use chrono::{DateTime, Utc};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_core::simulate::{self, Behaviour, Settings};

fn retail(edit: impl Fn(String) -> String) -> Program {
    let source = fidelis_core::templates::find("retail").unwrap().source;
    let doc: ProgramDocument = yaml_serde::from_str(&edit(source.to_owned())).unwrap();
    Program::compile(&doc, Some("sim")).unwrap()
}

fn settings(seed: u64) -> Settings {
    Settings {
        members: 400,
        months: 30,
        start: "2023-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap(),
        seed,
        behaviour: Behaviour::default(),
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_the_ledger_adds_up() {
    let program = retail(|s| s);
    let mut journals = Vec::new();
    let a = simulate::run(&program, &settings(11), |m, at, j| {
        journals.push((m.to_string(), at, j.map(|j| j.external_id.to_string())));
    })
    .unwrap();
    let mut again = Vec::new();
    let b = simulate::run(&program, &settings(11), |m, at, j| {
        again.push((m.to_string(), at, j.map(|j| j.external_id.to_string())));
    })
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(journals, again);
    let c = simulate::run(&program, &settings(12), |_, _, _| {}).unwrap();
    assert_ne!(a, c);
    // Something happened of every kind.
    let points = 0;
    assert!(a.total(|m| m.purchases as i64) > 2_000, "{:?}", a.months[0]);
    assert!(a.total(|m| m.redeemed[points]) > 0);
    assert!(a.total(|m| m.taken_back[points]) > 0);
    assert!(
        a.total(|m| m.expired[points]) > 0,
        "24-month expiry within 30 months"
    );
    assert!(
        a.months
            .iter()
            .any(|m| m.promotions.iter().any(|p| p.0 == "weekend"))
    );
    // The ledger adds up: what is held is what was issued less what left, month by month.
    let mut held = 0;
    for m in &a.months {
        held += m.issued[points] - m.taken_back[points] - m.redeemed[points] - m.expired[points];
        assert_eq!(m.outstanding[points], held, "{}", m.start);
        assert_eq!(
            m.liability,
            (m.outstanding[points] as f64 * 0.01 * 100.0).round() as i64
        );
        let status = 1;
        let qualifying: i64 = a
            .months
            .iter()
            .take_while(|x| x.start <= m.start)
            .map(|x| x.issued[status] - x.taken_back[status] - x.reset[status])
            .sum();
        assert_eq!(
            m.outstanding[status], qualifying,
            "status points at {}",
            m.start
        );
        let members: u32 = m.tiers.iter().map(|t| t.2).sum();
        assert_eq!(members, m.members);
    }
    assert_eq!(a.months.last().unwrap().members, 400);
}

#[test]
fn two_definitions_see_the_same_people_do_the_same_things() {
    let one = retail(|s| s);
    let two = retail(|s| {
        s.replacen(
            "      rate: \"1\"\n      rounding: down",
            "      rate: \"2\"\n      rounding: down",
            1,
        )
    });
    let a = simulate::run(&one, &settings(5), |_, _, _| {}).unwrap();
    let b = simulate::run(&two, &settings(5), |_, _, _| {}).unwrap();
    assert_eq!(a.total(|m| m.revenue), b.total(|m| m.revenue));
    assert_eq!(
        a.total(|m| m.purchases as i64),
        b.total(|m| m.purchases as i64)
    );
    let (ia, ib) = (a.issued(0), b.issued(0));
    assert!(
        ib as f64 > 1.6 * ia as f64,
        "twice the base points: {ia} then {ib}"
    );
    assert!(b.months.last().unwrap().liability > a.months.last().unwrap().liability);
}
