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

type Posted = Vec<(String, DateTime<Utc>, Option<String>)>;

/// A sink that records each enrolment (member, instant) and journal (member, instant,
/// external id).
fn record(journals: &mut Posted) -> impl FnMut(simulate::Posted<'_>) + '_ {
    move |posted| {
        journals.push(match posted {
            simulate::Posted::Enrolment { member, at, .. } => (member.to_string(), at, None),
            simulate::Posted::Journal(j) => (
                j.member.to_string(),
                j.occurred_at,
                Some(j.external_id.to_string()),
            ),
        })
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_the_ledger_adds_up() {
    let program = retail(|s| s);
    let mut journals = Vec::new();
    let a = simulate::run(&program, &settings(11), record(&mut journals)).unwrap();
    let mut again = Vec::new();
    let b = simulate::run(&program, &settings(11), record(&mut again)).unwrap();
    assert_eq!(a, b);
    assert_eq!(journals, again);
    let c = simulate::run(&program, &settings(12), |_| {}).unwrap();
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
    for promotion in ["weekend", "birthday", "quarter-spender"] {
        assert!(
            a.months
                .iter()
                .any(|m| m.promotions.iter().any(|p| p.0 == promotion)),
            "{promotion}"
        );
    }
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
    let a = simulate::run(&one, &settings(5), |_| {}).unwrap();
    let b = simulate::run(&two, &settings(5), |_| {}).unwrap();
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

/// Members who share nothing are simulated one after another (each member's ledger stays
/// in the cache); each draws from their own random stream, so the figures and the
/// journals are those of all members simulated together in the order things happen.
/// With a daily cap the members share a counter: `run` then takes them together, and the
/// cap holds across members.
#[test]
fn members_simulated_one_by_one_give_what_all_together_give() {
    let program = retail(|s| s);
    let (mut one_by_one, mut together) = (Vec::new(), Vec::new());
    let a = simulate::run(&program, &settings(3), record(&mut one_by_one)).unwrap();
    let b = simulate::run_together(&program, &settings(3), record(&mut together)).unwrap();
    assert_eq!(a, b);
    assert_ne!(one_by_one, together, "one member after another");
    // The same journals at the same instants, each member's in the same order.
    let by_member = |mut v: Posted| {
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let one_by_one = by_member(one_by_one);
    assert_eq!(one_by_one, by_member(together));
    // Each member's journals come in the order they happen (a return within the month of
    // its purchase among the month's other journals, not after them), as a server
    // replaying them would take them.
    for pair in one_by_one.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(pair[0].1 <= pair[1].1, "{pair:?}");
        }
    }
    assert!(
        one_by_one
            .iter()
            .any(|j| j.2.as_deref().is_some_and(|id| id.ends_with("-return"))),
        "returns happened"
    );

    // 200 points a day for all members together, from the weekend bonus.
    let capped = retail(|s| {
        s.replacen(
            "    control_group: { share: \"0.20\" }\n",
            "    control_group: { share: \"0.20\" }\n    limits: { daily_points: 200 }\n",
            1,
        )
    });
    let (mut shared, mut all) = (Vec::new(), Vec::new());
    let c = simulate::run(&capped, &settings(3), record(&mut shared)).unwrap();
    let d = simulate::run_together(&capped, &settings(3), record(&mut all)).unwrap();
    assert_eq!(c, d);
    assert_eq!(
        shared, all,
        "a shared counter keeps the order things happen in"
    );
    let weekend = |r: &simulate::Report| -> i64 {
        r.months
            .iter()
            .flat_map(|m| &m.promotions)
            .filter(|p| p.0 == "weekend")
            .map(|p| p.2)
            .sum()
    };
    let days = (d.months.last().unwrap().start - d.months[0].start).num_days() + 31;
    assert!(
        weekend(&d) > 0 && weekend(&d) <= 200 * days,
        "{}",
        weekend(&d)
    );
    assert!(weekend(&d) < weekend(&b), "the cap cut the bonus");
}
