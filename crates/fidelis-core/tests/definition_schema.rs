//! The program definition's JSON Schema agrees with the validator: every shipped template
//! passes both, and definitions the schema can tell are wrong fail both.

use fidelis_core::program::{DEFINITION_SCHEMA, Program, ProgramDocument};
use serde_json::{Value, json};

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(DEFINITION_SCHEMA).expect("the schema is JSON");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// A change that breaks a definition.
type Break = Box<dyn Fn(&mut Value)>;

fn compiles(definition: &Value) -> bool {
    let document: ProgramDocument =
        serde_json::from_value(definition.clone()).expect("a definition document");
    Program::compile(&document, Some("demo")).is_ok()
}

#[test]
fn every_shipped_template_passes_the_schema_and_the_validator() {
    let validator = schema();
    for template in fidelis_core::templates::TEMPLATES {
        let definition: Value = yaml_serde::from_str(template.source).expect("YAML");
        let errors: Vec<String> = validator
            .iter_errors(&definition)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", template.name);
        assert!(compiles(&definition), "{}", template.name);
    }
}

#[test]
fn what_the_schema_refuses_the_validator_refuses() {
    let validator = schema();
    let base = json!({
        "name": "Demo", "time_zone": "Europe/Berlin", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                        "expiry": {"policy": "rolling", "months": 24}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]}
    });
    assert!(
        validator.is_valid(&base),
        "{:?}",
        validator.validate(&base).err()
    );
    assert!(compiles(&base));
    let broken: Vec<(&str, Break)> = vec![
        ("an unknown field", Box::new(|d| d["colour"] = json!("red"))),
        (
            "no time zone",
            Box::new(|d| {
                d.as_object_mut().map(|o| o.remove("time_zone"));
            }),
        ),
        (
            "an unknown time zone",
            Box::new(|d| d["time_zone"] = json!("Mars/Olympus")),
        ),
        (
            "a code with capitals",
            Box::new(|d| d["currencies"][0]["code"] = json!("Points")),
        ),
        (
            "round_up on a policy without it",
            Box::new(|d| {
                d["currencies"][0]["expiry"] =
                    json!({"policy": "never", "round_up": "end_of_month"});
            }),
        ),
        (
            "a negative window",
            Box::new(|d| d["currencies"][0]["expiry"]["months"] = json!(-3)),
        ),
        (
            "a negative grace before enrolment",
            Box::new(|d| d["earning"]["days_before_enrolment"] = json!(-1)),
        ),
        (
            "ten years and a day before enrolment",
            Box::new(|d| d["earning"]["days_before_enrolment"] = json!(3651)),
        ),
        (
            "a punch card by count per line",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "card", "name": "Card", "status": "active", "scope": "line",
                    "cumulative": {"measure": "count", "target": "10"},
                    "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]);
            }),
        ),
        (
            "a scheduled reward with a condition",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "bday", "name": "Birthday", "status": "active",
                    "trigger": {"type": "birthday"}, "condition": "journal.amount > 10.0",
                    "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]);
            }),
        ),
        (
            "a win-back without its days",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "back", "name": "Back", "status": "active",
                    "trigger": {"type": "inactivity"},
                    "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]);
            }),
        ),
        (
            "a birthday window of a week",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "bday", "name": "Birthday", "status": "active",
                    "trigger": {"type": "birthday", "window": "week"},
                    "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]);
            }),
        ),
        (
            "a scheduled reward per euro",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "bday", "name": "Birthday", "status": "active",
                    "trigger": {"type": "anniversary"},
                    "actions": [{"type": "per_money", "currency": "points", "rate": "1"}]}]);
            }),
        ),
        (
            "an anniversary with days",
            Box::new(|d| {
                d["promotions"] = json!([{"code": "anniv", "name": "Anniversary", "status": "active",
                    "trigger": {"type": "anniversary", "days": 3},
                    "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]);
            }),
        ),
    ];
    for (what, breaks) in broken {
        let mut definition = base.clone();
        breaks(&mut definition);
        assert!(
            !validator.is_valid(&definition),
            "the schema accepts {what}"
        );
        let refused = serde_json::from_value::<ProgramDocument>(definition.clone())
            .map_or(true, |document| {
                Program::compile(&document, Some("demo")).is_err()
            });
        assert!(refused, "the validator accepts {what}");
    }
}

#[test]
fn what_the_schema_accepts_the_validator_accepts() {
    let validator = schema();
    let with = |promotions: Value| {
        json!({
            "name": "Café", "time_zone": "Europe/Berlin", "money_currency": "EUR",
            "currencies": [{"code": "stars", "name": "Stars", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "stars", "rate": "10"}]},
            "promotions": promotions
        })
    };
    let good = [
        with(
            json!([{"code": "tenth-drink", "name": "Tenth drink", "status": "active", "scope": "line",
            "condition": "line.category == 'drinks'", "cumulative": {"measure": "quantity", "target": "10"},
            "actions": [{"type": "fixed", "currency": "stars", "points": 350}]}]),
        ),
        with(
            json!([{"code": "spend", "name": "Spend", "status": "active",
            "cumulative": {"measure": "amount", "target": "500.00", "period": "quarter", "repeat": false},
            "actions": [{"type": "fixed", "currency": "stars", "points": 1000}]}]),
        ),
        with(json!([
            {"code": "birthday", "name": "Birthday", "status": "active", "trigger": {"type": "birthday"},
             "actions": [{"type": "fixed", "currency": "stars", "points": 500}]},
            {"code": "birthday-month", "name": "Birthday month", "status": "active",
             "trigger": {"type": "birthday", "window": "month"}, "starts_at": "2027-01-01",
             "actions": [{"type": "fixed", "currency": "stars", "points": 5}]},
            {"code": "anniversary", "name": "Anniversary", "status": "active", "trigger": {"type": "anniversary"},
             "actions": [{"type": "fixed", "currency": "stars", "points": 100}]},
            {"code": "win-back", "name": "We miss you", "status": "paused", "trigger": {"type": "inactivity", "days": 90},
             "actions": [{"type": "fixed", "currency": "stars", "points": 200}]}])),
    ];
    for definition in good {
        let errors: Vec<String> = validator
            .iter_errors(&definition)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{definition:#}");
        let document: ProgramDocument =
            serde_json::from_value(definition.clone()).expect("a document");
        if let Err(problems) = Program::compile(&document, Some("cafe")) {
            panic!("{problems:#?}\n{definition:#}");
        }
    }
}
