//! The industry templates earn as their comments say: the airline's miles by cabin and at
//! partners, the hotel's elite nights per night and suite bonus, the coffee card's tenth
//! drink free.

mod common;

use common::*;
use fidelis_core::outcome::Outcome;
use fidelis_core::program::{Program, ProgramDocument};
use serde_json::json;

fn template(name: &str) -> Program {
    let t = fidelis_core::templates::find(name).unwrap();
    let doc: ProgramDocument = yaml_serde::from_str(t.source).unwrap();
    Program::compile(&doc, Some(name)).unwrap_or_else(|p| panic!("{name}: {p:#?}"))
}

fn from(o: &Outcome, source: &str, currency: &str) -> i64 {
    o.awards
        .iter()
        .filter(|a| a.source == source && a.currency.as_str() == currency)
        .map(|a| a.points)
        .sum()
}

#[test]
fn airline_miles_follow_the_fare_the_cabin_and_the_partner() {
    // A Wednesday.
    let mut sim = Sim::new(template("airline"), "2026-06-10T12:00:00Z");
    sim.enroll("flyer");
    let o = sim.ok(json!({"member": "flyer", "type": "flight", "amount": "400.00", "currency": "EUR",
        "lines": [{"line_id": "1", "sku": "CDG-JFK", "category": "economy", "quantity": 1, "amount": "100.00"},
                  {"line_id": "2", "sku": "JFK-CDG", "category": "business", "quantity": 1, "amount": "300.00"}]}));
    assert_eq!(from(&o, "base", "miles"), 2_000, "{:?}", o.awards);
    assert_eq!(from(&o, "premium-cabins", "miles"), 1_500, "{:?}", o.awards);
    assert_eq!(from(&o, "base", "credits"), 400);
    // Purchases earn nothing unless made at a partner; the car rental partner earns triple.
    let o = sim
        .ok(json!({"member": "flyer", "type": "purchase", "amount": "50.00", "currency": "EUR"}));
    assert!(o.awards.is_empty(), "{:?}", o.awards);
    let o = sim.ok(
        json!({"member": "flyer", "type": "purchase", "amount": "100.00", "currency": "EUR",
        "partner": "car-rental"}),
    );
    assert_eq!(
        from(&o, "partner-miles", "miles") + from(&o, "car-rental-triple", "miles"),
        300
    );
    assert_eq!(sim.balance("flyer", "miles").0, 3_800);
}

#[test]
fn hotel_nights_count_per_night_and_suites_earn_per_night() {
    let mut sim = Sim::new(template("hotel"), "2026-06-10T12:00:00Z");
    sim.enroll("guest");
    let o = sim.ok(json!({"member": "guest", "type": "stay", "amount": "900.00", "currency": "GBP",
        "lines": [{"line_id": "1", "sku": "suite", "category": "room", "quantity": 3, "amount": "750.00"},
                  {"line_id": "2", "sku": "dinner", "category": "dining", "quantity": 2, "amount": "150.00"}]}));
    assert_eq!(from(&o, "elite-nights", "nights"), 3, "{:?}", o.awards);
    assert_eq!(from(&o, "base", "points"), 9_000);
    assert_eq!(from(&o, "suite-nights", "points"), 1_500);
    let o = sim.ok(json!({"member": "guest", "type": "stay", "amount": "120.00", "currency": "GBP",
        "lines": [{"line_id": "1", "sku": "double", "category": "room", "quantity": 1, "amount": "120.00"}]}));
    assert_eq!(from(&o, "elite-nights", "nights"), 1);
    assert_eq!(from(&o, "suite-nights", "points"), 0);
    assert_eq!(sim.balance("guest", "nights").0, 4);
}

#[test]
fn coffee_the_ninth_drink_bought_earns_a_free_one() {
    // A Wednesday: no double stars.
    let mut sim = Sim::new(template("coffee"), "2026-06-10T12:00:00Z");
    sim.enroll("fan");
    let buy = |drinks: u32| {
        json!({"member": "fan", "type": "purchase", "amount": "9.00", "currency": "USD",
            "lines": [{"line_id": "1", "sku": "LATTE", "category": "drink", "quantity": drinks, "amount": "8.00"},
                      {"line_id": "2", "sku": "MUFFIN", "category": "food", "quantity": 1, "amount": "1.00"}]})
    };
    let vouchers = |o: &Outcome| -> usize {
        o.promotions
            .iter()
            .filter(|p| p.promotion.as_str() == "tenth-free")
            .map(|p| p.rewards.len())
            .sum()
    };
    let o = sim.ok(buy(5));
    assert_eq!(from(&o, "base", "stars"), 18);
    assert_eq!(vouchers(&o), 0);
    let o = sim.ok(buy(3));
    assert_eq!(vouchers(&o), 0, "eight drinks");
    let o = sim.ok(buy(2));
    assert_eq!(vouchers(&o), 1, "the ninth: {:?}", o.promotions);
    // Counting starts again from what was left over (one drink).
    let o = sim.ok(buy(7));
    assert_eq!(vouchers(&o), 0);
    let o = sim.ok(buy(1));
    assert_eq!(vouchers(&o), 1);
    // Tuesday: double stars.
    sim.at("2026-06-16T12:00:00Z");
    let o =
        sim.ok(json!({"member": "fan", "type": "purchase", "amount": "5.00", "currency": "USD"}));
    assert_eq!(
        from(&o, "base", "stars") + from(&o, "double-tuesday", "stars"),
        20
    );
}
