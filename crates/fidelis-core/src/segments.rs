//! Segments (PRODUCT.md §13): named groups of members, each defined by a CEL condition over
//! what the program knows about a member — profile, status, enrolment, tiers, purchases and
//! spend over the last 30, 90 and 365 days, RFM scores, and the churn model's P(alive),
//! expected purchases and lifetime value.
//!
//! Membership is not decided per journal: the scheduled jobs *refresh* it as of an instant
//! (the store gathers every member's [`Features`] as of then, [`evaluate`] decides each
//! segment, and the store keeps the result), so a promotion's `eligibility.segments` reads a
//! stored membership and costs the hot path one small lookup. A refresh is a pure function
//! of the journals before its instant, so it can be repeated for the same instant.
//!
//! A condition sees one variable, `member`:
//!
//! | field | type | |
//! |---|---|---|
//! | `external_id`, `status` | string | the operator's number; `active`, `suspended`, `closed` |
//! | `profile` | map | the profile given at enrolment |
//! | `enrolled_at` | string | local date, `YYYY-MM-DD` |
//! | `tenure_days` | int | whole days since enrolment |
//! | `tiers` | map | tier group → tier code |
//! | `purchases_30d`, `_90d`, `_365d` | int | purchase journals in the last N days |
//! | `spend_30d`, `_90d`, `_365d` | double | their spend, in the money currency |
//! | `days_since_purchase` | int or null | null when the member never bought |
//! | `rfm` | map or null | `{recency, frequency, monetary}` scores 1–5, `score` (`"545"`), `segment` (`champions`…) |
//! | `p_alive` | double or null | the probability the member is still active |
//! | `expected_purchases_90d` | double or null | purchase days to expect in the next 90 days |
//! | `clv_12m` | double or null | discounted spend to expect in the next 12 months |
//!
//! The model's values are null for a member who has not bought (or bought only on the
//! refresh's day) and when the model cannot be fitted; a comparison with null is an error,
//! and a condition that gives an error does not put the member in the segment (the refresh
//! counts such members per segment).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;

use crate::analytics::rfm;
use crate::ids::Code;
use crate::money::MoneyCurrency;
use crate::promotions::condition::{self, Condition};

/// The most segments a program defines.
pub const MAX_SEGMENTS: usize = 100;

/// The windows, in days, of the `purchases_*` and `spend_*` fields.
pub const WINDOWS: [i64; 3] = [30, 90, 365];

/// The fields a condition may read under `member.`.
pub const FIELDS: &[&str] = &[
    "external_id",
    "status",
    "profile",
    "enrolled_at",
    "tenure_days",
    "tiers",
    "purchases_30d",
    "purchases_90d",
    "purchases_365d",
    "spend_30d",
    "spend_90d",
    "spend_365d",
    "days_since_purchase",
    "rfm",
    "p_alive",
    "expected_purchases_90d",
    "clv_12m",
];

/// A segment as the program defines it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub code: Code,
    pub name: String,
    pub description: Option<String>,
    pub condition: Condition,
}

/// Checks that a condition reads only `member` fields that exist: a misspelt field would
/// otherwise leave the segment empty without a word.
pub fn check_fields(condition: &Condition) -> Result<(), String> {
    let unknown: Vec<String> = condition
        .member_fields()
        .into_iter()
        .filter(|f| !FIELDS.contains(&f.as_str()))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "member has no field {} (it has {})",
            unknown
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            FIELDS.join(", ")
        ))
    }
}

/// Purchases and spend in the [`WINDOWS`] before an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    pub purchases: [i64; 3],
    /// In minor units of the money currency.
    pub spend: [i64; 3],
    /// The instant of the last purchase before the refresh.
    pub last: Option<DateTime<Utc>>,
}

impl Recent {
    /// Counts a purchase at `at` with `spend` (minor units), seen from `as_of`; purchases at
    /// or after `as_of` are not counted.
    pub fn add(&mut self, at: DateTime<Utc>, spend: i64, as_of: DateTime<Utc>) {
        if at >= as_of {
            return;
        }
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        let age = as_of - at;
        for (i, days) in WINDOWS.iter().enumerate() {
            if age <= chrono::Duration::days(*days) {
                self.purchases[i] += 1;
                self.spend[i] += spend;
            }
        }
    }
}

/// The churn model's scores of a member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub p_alive: f64,
    pub expected_purchases: f64,
    /// In minor units, when the spend model stands.
    pub lifetime_value: Option<f64>,
}

/// What a refresh knows about one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub external_id: String,
    pub status: String,
    pub profile: serde_json::Map<String, serde_json::Value>,
    pub enrolled_at: DateTime<Utc>,
    /// (tier group, tier) codes.
    pub tiers: Vec<(String, String)>,
    pub recent: Recent,
    pub rfm: Option<rfm::Score>,
    pub scores: Option<Scores>,
}

/// A refresh's frame: the instant, and how to read money and dates.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub as_of: DateTime<Utc>,
    pub time_zone: Tz,
    pub money: &'a MoneyCurrency,
}

/// Whether the member is in each segment (in the order given): `Err` with the reason when
/// the condition could not be evaluated for this member (the member is then not in it).
pub fn evaluate(
    segments: &[Segment],
    features: &Features,
    frame: Frame<'_>,
) -> Vec<Result<bool, String>> {
    if segments.is_empty() {
        return Vec::new();
    }
    let widest = features
        .profile
        .values()
        .map(crate::promotions::widest_json)
        .max()
        .unwrap_or(0)
        .max(features.profile.len())
        .max(features.tiers.len());
    let mut context = condition::context();
    context.add_variable_from_value("member", member_value(features, frame));
    segments
        .iter()
        .map(|s| {
            if s.condition.cost_bound(widest) > condition::EVALUATION_BUDGET {
                return Err("the condition could cost more than the evaluation budget on this member's profile".into());
            }
            s.condition.holds(&context)
        })
        .collect()
}

fn member_value(f: &Features, frame: Frame<'_>) -> Value {
    let minor = 10f64.powi(i32::from(frame.money.scale()));
    let local = |at: DateTime<Utc>| at.with_timezone(&frame.time_zone).date_naive();
    let today: NaiveDate = local(frame.as_of);
    let enrolled: NaiveDate = local(f.enrolled_at);
    let profile: HashMap<cel::objects::Key, Value> = f
        .profile
        .iter()
        .map(|(k, v)| (Arc::new(k.clone()).into(), crate::promotions::json_value(v)))
        .collect();
    let tiers: HashMap<cel::objects::Key, Value> = f
        .tiers
        .iter()
        .map(|(g, t)| (Arc::new(g.clone()).into(), Value::from(t.as_str())))
        .collect();
    let rfm = f.rfm.map_or(Value::Null, |s| {
        crate::promotions::map([
            ("recency", Value::Int(i64::from(s.recency))),
            ("frequency", Value::Int(i64::from(s.frequency))),
            ("monetary", Value::Int(i64::from(s.monetary))),
            (
                "score",
                Value::from(format!("{}{}{}", s.recency, s.frequency, s.monetary)),
            ),
            ("segment", Value::from(s.segment())),
        ])
    });
    let score = |pick: &dyn Fn(&Scores) -> Option<f64>| {
        f.scores
            .as_ref()
            .and_then(pick)
            .filter(|v| v.is_finite())
            .map_or(Value::Null, Value::Float)
    };
    let r = &f.recent;
    crate::promotions::map([
        ("external_id", Value::from(f.external_id.as_str())),
        ("status", Value::from(f.status.as_str())),
        ("profile", Value::Map(profile.into())),
        ("enrolled_at", Value::from(enrolled.to_string())),
        (
            "tenure_days",
            Value::Int((today - enrolled).num_days().max(0)),
        ),
        ("tiers", Value::Map(tiers.into())),
        ("purchases_30d", Value::Int(r.purchases[0])),
        ("purchases_90d", Value::Int(r.purchases[1])),
        ("purchases_365d", Value::Int(r.purchases[2])),
        ("spend_30d", Value::Float(r.spend[0] as f64 / minor)),
        ("spend_90d", Value::Float(r.spend[1] as f64 / minor)),
        ("spend_365d", Value::Float(r.spend[2] as f64 / minor)),
        (
            "days_since_purchase",
            r.last
                .map_or(Value::Null, |l| Value::Int((today - local(l)).num_days())),
        ),
        ("rfm", rfm),
        ("p_alive", score(&|s| Some(s.p_alive))),
        (
            "expected_purchases_90d",
            score(&|s| Some(s.expected_purchases)),
        ),
        ("clv_12m", score(&|s| s.lifetime_value.map(|v| v / minor))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    fn segment(code: &str, source: &str) -> Segment {
        Segment {
            code: Code::parse(code).expect("code"),
            name: code.into(),
            description: None,
            condition: Condition::compile(source).expect("compiles"),
        }
    }

    fn features() -> Features {
        let as_of = utc("2026-06-01T12:00:00Z");
        let mut recent = Recent::default();
        recent.add(utc("2026-05-20T10:00:00Z"), 4_000, as_of);
        recent.add(utc("2026-01-10T10:00:00Z"), 10_000, as_of);
        recent.add(utc("2026-06-01T13:00:00Z"), 99_999, as_of); // after the refresh
        Features {
            external_id: "C-1".into(),
            status: "active".into(),
            profile: serde_json::json!({"city": "Lyon", "tags": ["vip"]})
                .as_object()
                .cloned()
                .expect("object"),
            enrolled_at: utc("2025-06-01T08:00:00Z"),
            tiers: vec![("status".into(), "gold".into())],
            recent,
            rfm: Some(rfm::Score {
                recency: 5,
                frequency: 2,
                monetary: 4,
            }),
            scores: Some(Scores {
                p_alive: 0.42,
                expected_purchases: 1.5,
                lifetime_value: None,
            }),
        }
    }

    fn frame(money: &MoneyCurrency) -> Frame<'_> {
        Frame {
            as_of: utc("2026-06-01T12:00:00Z"),
            time_zone: chrono_tz::Europe::Paris,
            money,
        }
    }

    #[test]
    fn every_field_reads_as_documented() {
        let money = MoneyCurrency::parse("EUR").expect("EUR");
        let cases = [
            (
                "member.purchases_30d == 1 && member.purchases_365d == 2",
                true,
            ),
            (
                "member.spend_30d == 40.0 && member.spend_365d == 140.0",
                true,
            ),
            ("member.spend_90d > 40.0", false),
            ("member.days_since_purchase == 12", true),
            ("member.tenure_days == 365", true),
            ("member.enrolled_at == '2025-06-01'", true),
            ("member.tiers.status == 'gold'", true),
            (
                "member.profile.city == 'Lyon' && 'vip' in member.profile.tags",
                true,
            ),
            (
                "member.rfm.score == '524' && member.rfm.segment == 'potential_loyalists'",
                true,
            ),
            (
                "member.p_alive < 0.5 && member.expected_purchases_90d > 1.0",
                true,
            ),
            ("member.clv_12m == null", true),
            (
                "member.status == 'active' && member.external_id == 'C-1'",
                true,
            ),
        ];
        let segments: Vec<Segment> = cases
            .iter()
            .enumerate()
            .map(|(i, (s, _))| segment(&format!("s{i}"), s))
            .collect();
        let got = evaluate(&segments, &features(), frame(&money));
        for ((source, want), got) in cases.iter().zip(got) {
            assert_eq!(got, Ok(*want), "{source}");
        }
    }

    #[test]
    fn an_unknown_value_keeps_the_member_out_with_a_reason() {
        let money = MoneyCurrency::parse("EUR").expect("EUR");
        let got = evaluate(
            &[segment("valuable", "member.clv_12m > 100.0")],
            &features(),
            frame(&money),
        );
        assert!(got[0].is_err(), "{got:?}");
    }

    #[test]
    fn misspelt_fields_are_refused_when_the_program_is_saved() {
        let ok = Condition::compile("member.spend_90d > 10.0 && has(member.profile.city)")
            .expect("compiles");
        assert_eq!(check_fields(&ok), Ok(()));
        let bad =
            Condition::compile("member.spend_91d > 10.0 || member.palive < 0.2").expect("compiles");
        let err = check_fields(&bad).expect_err("refused");
        assert!(
            err.contains("\"spend_91d\"") && err.contains("\"palive\""),
            "{err}"
        );
    }

    #[test]
    fn windows_end_at_the_refresh_and_include_their_first_day() {
        let as_of = utc("2026-06-01T00:00:00Z");
        let mut r = Recent::default();
        r.add(utc("2026-05-02T00:00:00Z"), 1, as_of); // exactly 30 days before
        r.add(utc("2026-05-01T23:59:59Z"), 10, as_of); // just over
        assert_eq!(r.purchases, [1, 2, 2]);
        assert_eq!(r.spend, [1, 11, 11]);
    }
}
