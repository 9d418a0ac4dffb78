//! Validation of a program definition: every problem, each with its path, or a compiled
//! [`Program`].

use std::collections::HashSet;
use std::fmt;

use rust_decimal::Decimal;

use super::*;
use crate::money::Rounding;
use crate::promotions::limits::Period as LimitPeriod;
use crate::promotions::{
    Action, Condition, Cumulative, Limits, MAX_ACTIONS, MAX_PROMOTIONS, Measure, Promotion,
    PromotionStatus, Scope,
};

/// One thing wrong with a definition, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where, as a path into the document: `currencies[1].expiry.months`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Limits on a definition's values. Generous for real programs; they keep calendar and
/// integer arithmetic far from overflow.
const MAX_PENDING_DAYS: u32 = 3_650;
const MAX_EXPIRY_DAYS: u32 = 36_500;
const MAX_EXPIRY_MONTHS: u32 = 1_200;
const MAX_NAME_LEN: usize = 200;
const MAX_ACTIVITY_TYPES: usize = 100;
const MAX_TIERS: usize = 32;

/// Collects problems while walking the document.
struct Check {
    problems: Vec<Problem>,
    /// The codes of all currency documents, valid or not.
    declared_currencies: Vec<String>,
}

impl Check {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, path: &str, unknown: &UnknownFields) {
        for field in unknown.keys() {
            let at = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            self.add(at, "unknown field");
        }
    }

    fn required<'a>(&mut self, path: String, value: &'a Option<String>) -> Option<&'a str> {
        match value.as_deref() {
            Some(v) => Some(v),
            None => {
                self.add(path, "is required");
                None
            }
        }
    }

    fn code(&mut self, path: String, value: &Option<String>) -> Option<Code> {
        let raw = self.required(path.clone(), value)?;
        match Code::parse(raw) {
            Ok(code) => Some(code),
            Err(e) => {
                self.add(path, format!("{raw:?} {e}"));
                None
            }
        }
    }

    /// A listed definition's `code` (unique among those `seen`), `name` and optional
    /// `description` (at most 500 characters), checked at `at`: badges, segments.
    fn entry(
        &mut self,
        at: &str,
        seen: &mut HashSet<Code>,
        (code, name, description): (&Option<String>, &Option<String>, &Option<String>),
    ) -> (Option<Code>, Option<String>) {
        let code = self.code(format!("{at}.code"), code);
        if let Some(code) = &code
            && !seen.insert(code.clone())
        {
            self.add(format!("{at}.code"), format!("{code:?} is defined twice"));
        }
        let name = self.name(format!("{at}.name"), name);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 500)
        {
            self.add(format!("{at}.description"), "at most 500 characters");
        }
        (code, name)
    }

    fn name(&mut self, path: String, value: &Option<String>) -> Option<String> {
        let raw = self.required(path.clone(), value)?;
        if raw.trim().is_empty() || raw.chars().count() > MAX_NAME_LEN {
            self.add(path, format!("must be 1 to {MAX_NAME_LEN} characters"));
            return None;
        }
        Some(raw.to_owned())
    }
}

pub(super) fn compile(doc: &ProgramDocument, code: Option<&str>) -> Result<Program, Vec<Problem>> {
    let mut check = Check {
        problems: Vec::new(),
        declared_currencies: doc
            .currencies
            .iter()
            .filter_map(|c| c.code.clone())
            .collect(),
    };
    check.unknown("", &doc.unknown);

    let code = program_code(&mut check, doc, code);
    let name = check.name("name".into(), &doc.name);
    let time_zone = check
        .required("time_zone".into(), &doc.time_zone)
        .and_then(|tz| match tz.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                check.add(
                    "time_zone",
                    format!("{tz:?} is not an IANA time zone such as \"Europe/Berlin\""),
                );
                None
            }
        });
    let money_currency = check
        .required("money_currency".into(), &doc.money_currency)
        .and_then(|m| match MoneyCurrency::parse(m) {
            Ok(m) => Some(m),
            Err(e) => {
                check.add("money_currency", e.to_string());
                None
            }
        });
    let starts_on =
        doc.starts_on.as_deref().and_then(|raw| {
            match chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
                Ok(date) if (1970..=9999).contains(&chrono::Datelike::year(&date)) => Some(date),
                _ => {
                    check.add(
                        "starts_on",
                        format!("{raw:?} is not a date from 1970 on such as \"2019-04-01\""),
                    );
                    None
                }
            }
        });
    let expiry_extension = doc
        .expiry_extension
        .as_ref()
        .and_then(|e| length(&mut check, "expiry_extension", e));
    let activity_types = activity_types(&mut check, &doc.activity_types);
    let currencies = currencies(&mut check, &doc.currencies);
    let base_earning = base_earning(&mut check, &doc.earning, &currencies, &activity_types);
    let days_before_enrolment = match doc.earning.days_before_enrolment {
        None => 0,
        Some(days @ 0..=3650) => days,
        Some(days) => {
            check.add(
                "earning.days_before_enrolment",
                format!("{days} is not 0 to 3650"),
            );
            0
        }
    };
    let tier_groups = tier_groups(&mut check, &doc.tier_groups, &currencies);
    let promotions = promotions(
        &mut check,
        &doc.promotions,
        &currencies,
        &activity_types,
        time_zone,
        money_currency.as_ref(),
        &tier_groups,
    );

    let referral = doc
        .referral
        .as_ref()
        .and_then(|r| referral(&mut check, r, &currencies, &activity_types));
    let vouchers = vouchers(&mut check, &doc.vouchers, money_currency.as_ref());
    let badges = badges(&mut check, &doc.badges);
    let segments = segments(&mut check, &doc.segments);
    let messaging = doc
        .messaging
        .as_ref()
        .map(|m| messaging(&mut check, m))
        .unwrap_or_default();
    let fraud = doc
        .fraud
        .as_ref()
        .map(|f| fraud(&mut check, f))
        .unwrap_or_default();
    for (i, p) in doc.promotions.iter().enumerate() {
        let listed = p.eligibility.as_ref().and_then(|e| e.segments.as_ref());
        for (j, code) in listed.into_iter().flatten().enumerate() {
            if !doc.segments.iter().any(|d| d.code.as_deref() == Some(code)) {
                check.add(
                    format!("promotions[{i}].eligibility.segments[{j}]"),
                    format!("{code:?} is not one of the program's segments"),
                );
            }
        }
    }
    for (i, p) in doc.promotions.iter().enumerate() {
        for (j, a) in p.actions.iter().enumerate() {
            if let (Some("badge"), Some(b)) = (a.kind.as_deref(), a.badge.as_deref())
                && !doc.badges.iter().any(|d| d.code.as_deref() == Some(b))
            {
                check.add(
                    format!("promotions[{i}].actions[{j}].badge"),
                    format!("{b:?} is not one of the program's badges"),
                );
            }
            if let (Some("voucher"), Some(v)) = (a.kind.as_deref(), a.voucher.as_deref())
                && !doc.vouchers.iter().any(|d| d.code.as_deref() == Some(v))
            {
                check.add(
                    format!("promotions[{i}].actions[{j}].voucher"),
                    format!("{v:?} is not one of the program's vouchers"),
                );
            }
        }
    }

    match (code, name, time_zone, money_currency) {
        (Some(code), Some(name), Some(time_zone), Some(money_currency))
            if check.problems.is_empty() =>
        {
            let mut document = doc.clone();
            document.code = Some(code.to_string());
            Ok(Program {
                code,
                name,
                time_zone,
                money_currency,
                expiry_extension,
                starts_at: starts_on.map_or(DateTime::<Utc>::UNIX_EPOCH, |d| {
                    crate::calendar::start_of_day(time_zone, d)
                }),
                activity_types,
                currencies: currencies.into_iter().flatten().collect(),
                base_earning,
                tier_groups,
                base_stacks: doc.earning.base_stacks_with_promotions.unwrap_or(true),
                days_before_enrolment,
                promotions,
                referral,
                vouchers,
                badges,
                segments,
                messaging,
                fraud,
                document,
            })
        }
        _ => Err(check.problems),
    }
}

fn program_code(
    check: &mut Check,
    doc: &ProgramDocument,
    given: Option<&str>,
) -> Option<ProgramCode> {
    let raw = match (given, doc.code.as_deref()) {
        (Some(given), Some(own)) if given != own => {
            check.add(
                "code",
                format!("{own:?} differs from the program being written, {given:?}"),
            );
            return None;
        }
        (Some(code), _) | (None, Some(code)) => code,
        (None, None) => {
            check.add("code", "is required");
            return None;
        }
    };
    match ProgramCode::parse(raw) {
        Ok(code) => Some(code),
        Err(e) => {
            check.add("code", format!("{raw:?} {e}"));
            None
        }
    }
}

fn activity_types(check: &mut Check, raw: &[String]) -> Vec<Code> {
    if raw.len() > MAX_ACTIVITY_TYPES {
        check.add(
            "activity_types",
            format!("at most {MAX_ACTIVITY_TYPES} are allowed"),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let path = format!("activity_types[{i}]");
        match Code::parse(t) {
            Ok(_) if RESERVED_TYPES.contains(&t.as_str()) => {
                check.add(path, format!("{t:?} is built in and cannot be declared"));
            }
            Ok(_) if !seen.insert(t.as_str()) => {
                check.add(path, format!("{t:?} is declared twice"))
            }
            Ok(code) => out.push(code),
            Err(e) => check.add(path, format!("{t:?} {e}")),
        }
    }
    out
}

/// Journal types with a fixed meaning.
const RESERVED_TYPES: &[&str] = &[
    PURCHASE,
    "refund",
    "redemption",
    "adjustment",
    "cancellation",
    "expiry",
    "release",
];

/// One slot per currency document, `None` where it was invalid, so indexes line up with
/// paths for the checks that follow.
fn currencies(check: &mut Check, docs: &[CurrencyDocument]) -> Vec<Option<Currency>> {
    if docs.is_empty() {
        check.add("currencies", "a program needs at least one currency");
    }
    if docs.len() > MAX_CURRENCIES {
        check.add(
            "currencies",
            format!("at most {MAX_CURRENCIES} are allowed"),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("currencies[{i}]");
        let currency = currency(check, &at, doc);
        if let Some(c) = &currency
            && !seen.insert(c.code.clone())
        {
            check.add(
                format!("{at}.code"),
                format!("{:?} is defined twice", c.code.as_str()),
            );
        }
        out.push(currency);
    }
    out
}

fn currency(check: &mut Check, at: &str, doc: &CurrencyDocument) -> Option<Currency> {
    check.unknown(at, &doc.unknown);
    let code = check.code(format!("{at}.code"), &doc.code);
    let name = check.name(format!("{at}.name"), &doc.name);
    let kind = match check.required(format!("{at}.kind"), &doc.kind) {
        Some("redeemable") => Some(CurrencyKind::Redeemable),
        Some("qualifying") => Some(CurrencyKind::Qualifying),
        Some(other) => {
            check.add(
                format!("{at}.kind"),
                format!("{other:?} is not one of redeemable, qualifying"),
            );
            None
        }
        None => None,
    };
    let expiry = match &doc.expiry {
        Some(e) => expiry(check, &format!("{at}.expiry"), e),
        None => {
            check.add(
                format!("{at}.expiry"),
                "is required (use {policy: never} for points that never expire)",
            );
            None
        }
    };
    let pending_days = doc.pending_days.unwrap_or(0);
    if pending_days > MAX_PENDING_DAYS {
        check.add(
            format!("{at}.pending_days"),
            format!("at most {MAX_PENDING_DAYS}"),
        );
    }
    let return_policy = match doc.return_policy.as_deref() {
        None => Some(ReturnPolicy::WithinBalance),
        Some(raw) => ReturnPolicy::parse(raw).or_else(|| {
            check.add(
                format!("{at}.return_policy"),
                format!("{raw:?} is not one of {}", ReturnPolicy::NAMES),
            );
            None
        }),
    };
    let negative_floor = match (doc.negative_floor, return_policy) {
        (None, _) => None,
        (Some(f), _) if f > 0 => {
            check.add(format!("{at}.negative_floor"), "must be zero or negative");
            None
        }
        (Some(f), Some(ReturnPolicy::AllowNegative)) => Some(f),
        (Some(_), _) => {
            check.add(
                format!("{at}.negative_floor"),
                "a negative floor needs return_policy allow_negative",
            );
            None
        }
    };
    let value_per_point = match doc.value_per_point.as_deref() {
        None => Some(Decimal::ZERO),
        Some(raw) => match raw.parse::<Decimal>() {
            Ok(v) if !v.is_sign_negative() => Some(v),
            _ => {
                check.add(
                    format!("{at}.value_per_point"),
                    format!("{raw:?} is not a non-negative decimal such as \"0.01\""),
                );
                None
            }
        },
    };
    if kind == Some(CurrencyKind::Qualifying) && return_policy == Some(ReturnPolicy::AllowNegative)
    {
        check.add(
            format!("{at}.return_policy"),
            "a qualifying currency cannot go negative",
        );
    }
    let transfer_limit = match &doc.transfer {
        None => Some(None),
        Some(t) => {
            check.unknown(&format!("{at}.transfer"), &t.unknown);
            match t.daily_limit {
                Some(l) if l > 0 && kind != Some(CurrencyKind::Qualifying) => Some(Some(l)),
                Some(l) if l > 0 => {
                    check.add(
                        format!("{at}.transfer"),
                        "qualifying points cannot be transferred",
                    );
                    None
                }
                _ => {
                    check.add(
                        format!("{at}.transfer.daily_limit"),
                        "a positive number of points is required",
                    );
                    None
                }
            }
        }
    };
    let reinstate_within_days = doc.reinstate_within_days;
    if reinstate_within_days.is_some_and(|d| d == 0 || d > MAX_EXPIRY_DAYS) {
        check.add(
            format!("{at}.reinstate_within_days"),
            format!("must be 1 to {MAX_EXPIRY_DAYS}"),
        );
    }
    let payment = match &doc.payment {
        None => Some(None),
        Some(p) => payment(check, &format!("{at}.payment"), p, kind),
    };
    Some(Currency {
        code: code?,
        name: name?,
        kind: kind?,
        expiry: expiry?,
        pending_days,
        return_policy: return_policy?,
        negative_floor,
        value_per_point: value_per_point?,
        transfer_limit: transfer_limit?,
        reinstate_within_days,
        payment: payment?,
    })
}

/// A currency's pay-with-points conversion; only for redeemable currencies.
fn payment(
    check: &mut Check,
    at: &str,
    doc: &super::document::PaymentDocument,
    kind: Option<CurrencyKind>,
) -> Option<Option<crate::holds::Payment>> {
    check.unknown(at, &doc.unknown);
    if kind == Some(CurrencyKind::Qualifying) {
        check.add(at.to_owned(), "qualifying points cannot pay for anything");
        return None;
    }
    let money_per_point = match doc.money_per_point.as_deref() {
        None => {
            check.add(format!("{at}.money_per_point"), "is required");
            None
        }
        Some(raw) => match raw.parse::<Decimal>() {
            Ok(v) if v > Decimal::ZERO && v <= Decimal::from(1_000_000) && v.scale() <= 6 => {
                Some(v)
            }
            _ => {
                check.add(
                    format!("{at}.money_per_point"),
                    format!(
                        "{raw:?} is not a positive decimal of at most 6 decimals such as \"0.01\""
                    ),
                );
                None
            }
        },
    };
    let minimum_points = doc.minimum_points.unwrap_or(0);
    if !(0..=crate::journal::MAX_POINTS).contains(&minimum_points) {
        check.add(
            format!("{at}.minimum_points"),
            format!("must be 0 to {}", crate::journal::MAX_POINTS),
        );
    }
    let rounding = match doc.rounding.as_deref() {
        None => Some(crate::money::Rounding::Up),
        Some(raw) => crate::money::Rounding::parse(raw).or_else(|| {
            check.add(
                format!("{at}.rounding"),
                format!("{raw:?} is not one of {}", crate::money::Rounding::NAMES),
            );
            None
        }),
    };
    Some(Some(crate::holds::Payment {
        money_per_point: money_per_point?,
        minimum_points,
        rounding: rounding?,
    }))
}

fn expiry(check: &mut Check, at: &str, doc: &ExpiryDocument) -> Option<ExpiryPolicy> {
    check.unknown(at, &doc.unknown);
    let policy = check.required(format!("{at}.policy"), &doc.policy)?;
    let allowed: &[&str] = match policy {
        "never" => &[],
        "rolling" => &["days", "months", "round_up"],
        "fixed_date" => &["month", "day", "years_after"],
        "inactivity" => &["months"],
        other => {
            check.add(
                format!("{at}.policy"),
                format!("{other:?} is not one of never, rolling, fixed_date, inactivity"),
            );
            return None;
        }
    };
    let present = [
        ("days", doc.days.is_some()),
        ("months", doc.months.is_some()),
        ("round_up", doc.round_up.is_some()),
        ("month", doc.month.is_some()),
        ("day", doc.day.is_some()),
        ("years_after", doc.years_after.is_some()),
    ];
    for (field, is_set) in present {
        if is_set && !allowed.contains(&field) {
            check.add(
                format!("{at}.{field}"),
                format!("does not apply to policy {policy}"),
            );
        }
    }
    match policy {
        "never" => Some(ExpiryPolicy::Never),
        "rolling" => {
            let period = match (doc.days, doc.months) {
                (Some(d), None) if (1..=MAX_EXPIRY_DAYS).contains(&d) => Some(Period::Days(d)),
                (None, Some(m)) if (1..=MAX_EXPIRY_MONTHS).contains(&m) => Some(Period::Months(m)),
                (Some(_), Some(_)) => {
                    check.add(at, "give days or months, not both");
                    None
                }
                (None, None) => {
                    check.add(at, "a rolling expiry needs days or months");
                    None
                }
                _ => {
                    check.add(
                        at,
                        format!(
                            "days must be 1 to {MAX_EXPIRY_DAYS}, months 1 to {MAX_EXPIRY_MONTHS}"
                        ),
                    );
                    None
                }
            };
            let round_up = match doc.round_up.as_deref() {
                None => Some(None),
                Some(raw) => match RoundUp::parse(raw) {
                    Some(r) => Some(Some(r)),
                    None => {
                        check.add(
                            format!("{at}.round_up"),
                            format!("{raw:?} is not one of {}", RoundUp::NAMES),
                        );
                        None
                    }
                },
            };
            Some(ExpiryPolicy::Rolling {
                period: period?,
                round_up: round_up?,
            })
        }
        "fixed_date" => {
            let month = doc.month.filter(|m| (1..=12).contains(m));
            let day = doc.day.filter(|d| (1..=31).contains(d));
            if month.is_none() {
                check.add(format!("{at}.month"), "is required, 1 to 12");
            }
            if day.is_none() {
                check.add(format!("{at}.day"), "is required, 1 to 31");
            }
            // A day the month never has (30 February, 31 April) is refused rather than
            // silently moved; 29 February is the last day of February in common years.
            if let (Some(m), Some(d)) = (month, day)
                && chrono::NaiveDate::from_ymd_opt(2024, m, d).is_none()
            {
                check.add(format!("{at}.day"), format!("month {m} has no day {d}"));
            }
            let years_after = doc.years_after.unwrap_or(0);
            if years_after > 100 {
                check.add(format!("{at}.years_after"), "at most 100");
            }
            Some(ExpiryPolicy::FixedDate {
                month: month?,
                day: day?,
                years_after,
            })
        }
        _ => match doc.months {
            Some(months) if (1..=MAX_EXPIRY_MONTHS).contains(&months) => {
                Some(ExpiryPolicy::Inactivity { months })
            }
            _ => {
                check.add(
                    format!("{at}.months"),
                    format!("is required, 1 to {MAX_EXPIRY_MONTHS}"),
                );
                None
            }
        },
    }
}

fn base_earning(
    check: &mut Check,
    doc: &EarningDocument,
    currencies: &[Option<Currency>],
    activity_types: &[Code],
) -> Vec<BaseEarning> {
    check.unknown("earning", &doc.unknown);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, rule) in doc.base.iter().enumerate() {
        let at = format!("earning.base[{i}]");
        check.unknown(&at, &rule.unknown);
        let currency = check
            .required(format!("{at}.currency"), &rule.currency)
            .and_then(|code| lookup_currency(check, &format!("{at}.currency"), code, currencies));
        if let Some(ix) = currency
            && !seen.insert(ix)
        {
            check.add(format!("{at}.currency"), "has a second base rule");
        }
        let rate = points_rate(check, &at, &rule.rate, &rule.rounding);
        let journal_types = journal_types(check, &at, &rule.journal_types, activity_types);
        if let (Some(currency), Some(rate)) = (currency, rate) {
            out.push(BaseEarning {
                currency,
                rate,
                journal_types,
            });
        }
    }
    out
}

/// Points per unit of money (`rate`, a decimal string) with its rounding rule (`down`
/// when absent), as base earning and `per_money` actions write them.
fn points_rate(
    check: &mut Check,
    at: &str,
    rate: &Option<String>,
    rounding: &Option<String>,
) -> Option<PointsRate> {
    let rounding = match rounding.as_deref() {
        None => Some(Rounding::Down),
        Some(raw) => Rounding::parse(raw).or_else(|| {
            check.add(
                format!("{at}.rounding"),
                format!("{raw:?} is not one of {}", Rounding::NAMES),
            );
            None
        }),
    };
    let raw = check.required(format!("{at}.rate"), rate)?;
    match (raw.parse::<Decimal>(), rounding) {
        (Ok(d), Some(r)) => PointsRate::new(d, r).or_else(|| {
            check.add(
                format!("{at}.rate"),
                format!("{raw:?} must be between 0 and 1000000 with at most 6 decimals"),
            );
            None
        }),
        (Ok(_), None) => None,
        (Err(_), _) => {
            check.add(
                format!("{at}.rate"),
                format!("{raw:?} is not a decimal such as \"1\" or \"2.5\""),
            );
            None
        }
    }
}

fn journal_types(
    check: &mut Check,
    at: &str,
    types: &Option<Vec<String>>,
    activity_types: &[Code],
) -> Vec<Code> {
    match types {
        None => vec![Code::parse(PURCHASE).expect("purchase is a valid code")],
        Some(types) => {
            let mut out = Vec::new();
            for (j, t) in types.iter().enumerate() {
                let known = t == PURCHASE || activity_types.iter().any(|a| a.as_str() == t);
                match Code::parse(t) {
                    Ok(code) if known => out.push(code),
                    _ => check.add(
                        format!("{at}.journal_types[{j}]"),
                        format!("{t:?} is neither purchase nor a declared activity type"),
                    ),
                }
            }
            out
        }
    }
}

fn promotions(
    check: &mut Check,
    docs: &[PromotionDocument],
    currencies: &[Option<Currency>],
    activity_types: &[Code],
    time_zone: Option<Tz>,
    money: Option<&MoneyCurrency>,
    tier_groups: &[TierGroup],
) -> Vec<Promotion> {
    // Benefits the promotions' `benefit` actions grant, with the values a multiplier may
    // take from them (read beside the tiers' benefits).
    let granted: Vec<(&str, Option<Decimal>)> = docs
        .iter()
        .flat_map(|d| &d.actions)
        .filter(|a| a.kind.as_deref() == Some("benefit"))
        .filter_map(|a| a.benefit.as_ref())
        .filter_map(|b| {
            let value = match &b.value {
                Some(serde_json::Value::String(v)) => v.parse::<Decimal>().ok(),
                Some(serde_json::Value::Number(n)) => n.to_string().parse::<Decimal>().ok(),
                _ => None,
            };
            Some((b.code.as_deref()?, value))
        })
        .collect();
    if docs.len() > MAX_PROMOTIONS {
        check.add(
            "promotions",
            format!(
                "has {} promotions; at most {MAX_PROMOTIONS} are allowed",
                docs.len()
            ),
        );
        return Vec::new();
    }
    // Indexes match the program's only when every currency is valid; otherwise the
    // program is refused anyway.
    let valid_currencies: Vec<Currency> = currencies.iter().flatten().cloned().collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("promotions[{i}]");
        check.unknown(&at, &doc.unknown);
        let code = check.code(format!("{at}.code"), &doc.code);
        if let Some(code) = &code
            && !seen.insert(code.clone())
        {
            check.add(format!("{at}.code"), format!("{code} is defined twice"));
        }
        let name = check.name(format!("{at}.name"), &doc.name);
        let status = check
            .required(format!("{at}.status"), &doc.status)
            .and_then(|raw| {
                PromotionStatus::parse(raw).or_else(|| {
                    check.add(
                        format!("{at}.status"),
                        format!("{raw:?} is not one of {}", PromotionStatus::NAMES),
                    );
                    None
                })
            });
        let mut instant = |field: &str,
                           raw: &Option<String>|
         -> Result<Option<DateTime<Utc>>, ()> {
            let Some(raw) = raw else { return Ok(None) };
            match (parse_local(raw), time_zone) {
                (Some(local), Some(tz)) => Ok(Some(calendar::local_to_utc(tz, local))),
                (Some(_), None) => Err(()), // the time zone's own problem is reported
                (None, _) => {
                    check.add(
                        format!("{at}.{field}"),
                        format!("{raw:?} is not a local date-time such as \"2026-12-01T00:00\" or a date"),
                    );
                    Err(())
                }
            }
        };
        let starts_at = instant("starts_at", &doc.starts_at);
        let ends_at = instant("ends_at", &doc.ends_at);
        if let (Ok(Some(s)), Ok(Some(e))) = (starts_at, ends_at)
            && e <= s
        {
            check.add(format!("{at}.ends_at"), "must be after starts_at");
        }
        let journal_types = journal_types(check, &at, &doc.journal_types, activity_types);
        let mut subtypes = Vec::new();
        for (j, raw) in doc.subtypes.iter().flatten().enumerate() {
            match Code::parse(raw) {
                Ok(c) => subtypes.push(c),
                Err(e) => check.add(format!("{at}.subtypes[{j}]"), format!("{raw:?} {e}")),
            }
        }
        let scope = match doc.scope.as_deref() {
            None | Some("journal") => Some(Scope::Journal),
            Some("line") => Some(Scope::Line),
            Some(other) => {
                check.add(
                    format!("{at}.scope"),
                    format!("{other:?} is not one of journal, line"),
                );
                None
            }
        };
        let condition = match doc.condition.as_deref() {
            None => Ok(None),
            Some(source) => Condition::compile(source)
                .map(|c| Some(c.with_fast_path(&valid_currencies, scope == Some(Scope::Line))))
                .map_err(|e| {
                    check.add(
                        format!("{at}.condition"),
                        format!("invalid expression: {e}"),
                    );
                }),
        };
        if doc.actions.is_empty() {
            check.add(format!("{at}.actions"), "needs at least one action");
        }
        if doc.actions.len() > MAX_ACTIONS {
            check.add(
                format!("{at}.actions"),
                format!("at most {MAX_ACTIONS} actions are allowed"),
            );
        }
        let actions: Vec<Option<Action>> = doc
            .actions
            .iter()
            .enumerate()
            .map(|(j, a)| {
                action(
                    check,
                    &format!("{at}.actions[{j}]"),
                    a,
                    currencies,
                    (tier_groups, &granted),
                )
            })
            .collect();
        let limits = limits(check, &at, doc.limits.as_ref());
        let mut tiers = Vec::new();
        let mut segments = Vec::new();
        if let Some(e) = &doc.eligibility {
            check.unknown(&format!("{at}.eligibility"), &e.unknown);
            for (j, code) in e.segments.iter().flatten().enumerate() {
                // Whether the program defines it is checked with the program's segments.
                match Code::parse(code) {
                    Ok(code) if !segments.contains(&code) => segments.push(code),
                    Ok(_) => {}
                    Err(e) => check.add(format!("{at}.eligibility.segments[{j}]"), e.to_string()),
                }
            }
            for (j, code) in e.tiers.iter().flatten().enumerate() {
                let found = tier_groups.iter().enumerate().find_map(|(g, group)| {
                    group
                        .tiers
                        .iter()
                        .position(|t| t.code.as_str() == code)
                        .map(|t| (g, t))
                });
                match found {
                    Some(gt) => tiers.push(gt),
                    None => check.add(
                        format!("{at}.eligibility.tiers[{j}]"),
                        format!("{code:?} is not a tier of this program"),
                    ),
                }
            }
        }
        let control = doc.control_group.as_ref().and_then(|c| {
            check.unknown(&format!("{at}.control_group"), &c.unknown);
            let share = c.share.as_deref().and_then(|raw| raw.parse::<Decimal>().ok());
            match share {
                Some(v) if v >= Decimal::new(1, 4) && v <= Decimal::new(9, 1) => {
                    let bp = (v * Decimal::from(10_000)).round();
                    u16::try_from(bp.mantissa() / 10i128.pow(bp.scale()))
                        .ok()
                        .map(|share_bp| crate::promotions::ControlGroup { share_bp })
                }
                _ => {
                    check.add(
                        format!("{at}.control_group.share"),
                        "the share of members held out: a decimal from 0.0001 to 0.9 (\"0.20\" is 20 %)",
                    );
                    None
                }
            }
        });
        let cumulative = match &doc.cumulative {
            None => Ok(None),
            Some(c) => cumulative(check, &at, c, money).map(Some).ok_or(()),
        };
        if doc
            .cumulative
            .as_ref()
            .is_some_and(|c| c.measure.as_deref() != Some("quantity"))
            && scope == Some(Scope::Line)
        {
            check.add(
                format!("{at}.scope"),
                "a cumulative promotion by count or amount counts whole journals (measure: quantity counts matching lines)",
            );
        }
        let trigger = doc.trigger.as_ref().and_then(|t| trigger(check, &at, t));
        if doc.trigger.is_some() {
            let misfits = [
                ("journal_types", doc.journal_types.is_some()),
                ("subtypes", doc.subtypes.is_some()),
                ("condition", doc.condition.is_some()),
                ("cumulative", doc.cumulative.is_some()),
                ("limits", doc.limits.is_some()),
                ("opt_in", doc.opt_in == Some(true)),
                ("eligibility", doc.eligibility.is_some()),
                ("control_group", doc.control_group.is_some()),
                ("scope", scope == Some(Scope::Line)),
            ];
            for (field, present) in misfits {
                if present {
                    check.add(
                        format!("{at}.{field}"),
                        "a scheduled reward (trigger) has no journal: it takes no journal types, subtypes, condition, scope, cumulative progress, limits, opt-in, eligibility or control group",
                    );
                }
            }
            for (j, action) in doc.actions.iter().enumerate() {
                if action.kind.as_deref() != Some("fixed") {
                    check.add(
                        format!("{at}.actions[{j}].type"),
                        "a scheduled reward awards fixed points (type: fixed)",
                    );
                }
            }
        }
        let journal_types = if doc.trigger.is_some() {
            Vec::new()
        } else {
            journal_types
        };
        if let (
            Some(code),
            Some(name),
            Some(status),
            Ok(starts_at),
            Ok(ends_at),
            Some(scope),
            Ok(condition),
        ) = (code, name, status, starts_at, ends_at, scope, condition)
            && actions.iter().all(Option::is_some)
        {
            out.push(Promotion {
                code,
                name,
                status,
                starts_at,
                ends_at,
                journal_types,
                subtypes,
                scope,
                condition,
                actions: actions.into_iter().flatten().collect(),
                priority: doc.priority.unwrap_or(0),
                exclusive: doc.exclusive.unwrap_or(false),
                limits: limits.unwrap_or_default(),
                cumulative: cumulative.unwrap_or_default(),
                opt_in: doc.opt_in.unwrap_or(false),
                tiers,
                trigger,
                control,
                segments,
            });
        }
    }
    // Stable: equal priorities keep their definition order.
    out.sort_by_key(|p| std::cmp::Reverse(p.priority));
    out
}

fn trigger(
    check: &mut Check,
    at: &str,
    doc: &crate::program::document::TriggerDocument,
) -> Option<crate::promotions::scheduled::Trigger> {
    use crate::promotions::scheduled::Trigger;
    let at = format!("{at}.trigger");
    check.unknown(&at, &doc.unknown);
    let kind = check.required(format!("{at}.type"), &doc.kind)?;
    let misplaced = |check: &mut Check, field: &str, present: bool| {
        if present {
            check.add(
                format!("{at}.{field}"),
                format!("a {kind} trigger takes no {field}"),
            );
        }
    };
    match kind {
        "birthday" => {
            misplaced(check, "days", doc.days.is_some());
            match doc.window.as_deref() {
                None | Some("day") => Some(Trigger::Birthday { whole_month: false }),
                Some("month") => Some(Trigger::Birthday { whole_month: true }),
                Some(other) => {
                    check.add(
                        format!("{at}.window"),
                        format!("{other:?} is not one of day, month"),
                    );
                    None
                }
            }
        }
        "anniversary" => {
            misplaced(check, "days", doc.days.is_some());
            misplaced(check, "window", doc.window.is_some());
            Some(Trigger::Anniversary)
        }
        "inactivity" => {
            misplaced(check, "window", doc.window.is_some());
            match doc.days {
                Some(days @ 1..=3650) => Some(Trigger::Inactivity { days }),
                Some(days) => {
                    check.add(format!("{at}.days"), format!("{days} is not 1 to 3650"));
                    None
                }
                None => {
                    check.add(
                        format!("{at}.days"),
                        "is required: days without activity, 1 to 3650",
                    );
                    None
                }
            }
        }
        other => {
            check.add(
                format!("{at}.type"),
                format!("{other:?} is not one of birthday, anniversary, inactivity"),
            );
            None
        }
    }
}

fn cumulative(
    check: &mut Check,
    at: &str,
    doc: &CumulativeDocument,
    money: Option<&MoneyCurrency>,
) -> Option<Cumulative> {
    let at = format!("{at}.cumulative");
    check.unknown(&at, &doc.unknown);
    let measure = match check.required(format!("{at}.measure"), &doc.measure)? {
        "count" => Measure::Count,
        "amount" => Measure::Amount,
        "quantity" => Measure::Quantity,
        other => {
            check.add(
                format!("{at}.measure"),
                format!("{other:?} is not one of count, amount, quantity"),
            );
            return None;
        }
    };
    let raw = check.required(format!("{at}.target"), &doc.target)?;
    let target = match measure {
        Measure::Count | Measure::Quantity => raw
            .parse::<i64>()
            .ok()
            .filter(|t| (1..=1_000_000).contains(t)),
        Measure::Amount => money?
            .parse_amount(raw)
            .ok()
            .map(|m| m.0)
            .filter(|t| *t > 0),
    };
    let Some(target) = target else {
        check.add(
            format!("{at}.target"),
            match measure {
                Measure::Count | Measure::Quantity => {
                    format!("{raw:?} must be a whole number from 1 to 1000000")
                }
                Measure::Amount => format!("{raw:?} must be a positive amount such as \"500.00\""),
            },
        );
        return None;
    };
    let period = match doc.period.as_deref() {
        None => None,
        Some(raw) => Some(LimitPeriod::parse(raw).or_else(|| {
            check.add(
                format!("{at}.period"),
                format!("{raw:?} is not one of {}", LimitPeriod::NAMES),
            );
            None
        })?),
    };
    Some(Cumulative {
        measure,
        target,
        period,
        repeat: doc.repeat.unwrap_or(true),
    })
}

fn limits(check: &mut Check, at: &str, doc: Option<&LimitsDocument>) -> Option<Limits> {
    let Some(doc) = doc else {
        return Some(Limits::default());
    };
    let at = format!("{at}.limits");
    check.unknown(&at, &doc.unknown);
    let before = check.problems.len();
    let cap = |check: &mut Check, path: String, value: Option<i64>| -> Option<i64> {
        match value {
            Some(v) if !(1..=crate::journal::MAX_POINTS).contains(&v) => {
                check.add(path, format!("must be 1 to {}", crate::journal::MAX_POINTS));
                None
            }
            other => other,
        }
    };
    let mut out = Limits::default();
    if let Some(m) = &doc.per_member {
        let p = format!("{at}.per_member");
        check.unknown(&p, &m.unknown);
        if m.period.is_some() {
            check.add(format!("{p}.period"), "belongs in per_member_per_period");
        }
        out.member_times = cap(check, format!("{p}.times"), m.times);
        out.member_points = cap(check, format!("{p}.points"), m.points);
        if m.times.is_none() && m.points.is_none() {
            check.add(p, "needs times, points or both");
        }
    }
    if let Some(m) = &doc.per_member_per_period {
        let p = format!("{at}.per_member_per_period");
        check.unknown(&p, &m.unknown);
        out.period = match m.period.as_deref() {
            None => {
                check.add(format!("{p}.period"), "is required");
                None
            }
            Some(raw) => LimitPeriod::parse(raw).or_else(|| {
                check.add(
                    format!("{p}.period"),
                    format!("{raw:?} is not one of {}", LimitPeriod::NAMES),
                );
                None
            }),
        };
        out.period_times = cap(check, format!("{p}.times"), m.times);
        out.period_points = cap(check, format!("{p}.points"), m.points);
        if m.times.is_none() && m.points.is_none() {
            check.add(p, "needs times, points or both");
        }
    }
    out.budget_points = cap(check, format!("{at}.budget_points"), doc.budget_points);
    out.budget_vouchers = cap(check, format!("{at}.budget_vouchers"), doc.budget_vouchers);
    out.daily_points = cap(check, format!("{at}.daily_points"), doc.daily_points);
    (check.problems.len() == before).then_some(out)
}

/// `2026-12-01T00:00`, `2026-12-01T00:00:00` or `2026-12-01` (its midnight).
/// Years 1900 to 9999 only: calendar arithmetic near chrono's limits would overflow.
fn parse_local(raw: &str) -> Option<chrono::NaiveDateTime> {
    use chrono::Datelike;
    chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M"))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .filter(|t| (1900..=9999).contains(&t.year()))
}

fn action(
    check: &mut Check,
    at: &str,
    doc: &ActionDocument,
    currencies: &[Option<Currency>],
    (tier_groups, granted): (&[TierGroup], &[(&str, Option<Decimal>)]),
) -> Option<Action> {
    check.unknown(at, &doc.unknown);
    let kind = check.required(format!("{at}.type"), &doc.kind)?;
    let currency = |check: &mut Check| {
        check
            .required(format!("{at}.currency"), &doc.currency)
            .and_then(|code| lookup_currency(check, &format!("{at}.currency"), code, currencies))
    };
    match kind {
        "fixed" | "per_unit" => {
            let currency = currency(check);
            let points = match doc.points {
                Some(p) if (1..=crate::journal::MAX_POINTS).contains(&p) => Some(p),
                Some(_) => {
                    check.add(
                        format!("{at}.points"),
                        format!("must be 1 to {}", crate::journal::MAX_POINTS),
                    );
                    None
                }
                None => {
                    check.add(format!("{at}.points"), "is required");
                    None
                }
            };
            if kind == "per_unit" {
                Some(Action::PerUnit {
                    currency: currency?,
                    points: points?,
                })
            } else {
                Some(Action::Fixed {
                    currency: currency?,
                    points: points?,
                })
            }
        }
        "per_money" => {
            let currency = currency(check);
            let rate = points_rate(check, at, &doc.rate, &doc.rounding);
            Some(Action::PerMoney {
                currency: currency?,
                rate: rate?,
            })
        }
        "multiplier" if doc.factor_benefit.is_some() => {
            let currency = currency(check);
            if doc.factor.is_some() {
                check.add(
                    format!("{at}.factor"),
                    "give factor or factor_benefit, not both",
                );
            }
            let code = check.code(format!("{at}.factor_benefit"), &doc.factor_benefit)?;
            let valued = tier_groups
                .iter()
                .flat_map(|g| &g.tiers)
                .flat_map(|t| &t.benefits)
                .map(|b| (b.code.as_str(), b.value))
                .chain(granted.iter().copied())
                .any(|(c, value)| {
                    c == code.as_str()
                        && value.is_some_and(|v| v > Decimal::ONE && v <= Decimal::from(100))
                });
            if !valued {
                check.add(
                    format!("{at}.factor_benefit"),
                    format!(
                        "no tier has, and no promotion grants, a benefit {:?} with a value above 1 and at most 100",
                        code.as_str()
                    ),
                );
                return None;
            }
            Some(Action::Multiplier {
                currency: currency?,
                factor: crate::promotions::Factor::Benefit(code),
            })
        }
        "multiplier" => {
            let currency = currency(check);
            let factor = check
                .required(format!("{at}.factor"), &doc.factor)
                .and_then(|raw| match raw.parse::<Decimal>().map(|f| f.normalize()) {
                    Ok(f) if f > Decimal::ONE && f <= Decimal::from(100) && f.scale() <= 6 => {
                        Some(f)
                    }
                    _ => {
                        check.add(
                            format!("{at}.factor"),
                            format!(
                                "{raw:?} must be a decimal above 1 and at most 100, with at most 6 decimals"
                            ),
                        );
                        None
                    }
                });
            Some(Action::Multiplier {
                currency: currency?,
                factor: crate::promotions::Factor::Fixed(factor?),
            })
        }
        "voucher" => Some(Action::Voucher {
            definition: check.code(format!("{at}.voucher"), &doc.voucher)?,
        }),
        "badge" => Some(Action::Badge {
            badge: check.code(format!("{at}.badge"), &doc.badge)?,
        }),
        "benefit" => {
            let Some(benefit) = &doc.benefit else {
                check.add(format!("{at}.benefit"), "is required: {code, name, value}");
                return None;
            };
            let granted = benefits(check, at, std::slice::from_ref(benefit));
            let days = match doc.days {
                Some(d @ 1..=MAX_BENEFIT_DAYS) => Some(d),
                _ => {
                    check.add(
                        format!("{at}.days"),
                        format!("is required: 1 to {MAX_BENEFIT_DAYS} days"),
                    );
                    None
                }
            };
            Some(Action::Benefit {
                benefit: granted.into_iter().next()?,
                days: days?,
            })
        }
        other => {
            check.add(
                format!("{at}.type"),
                format!(
                    "{other:?} is not one of fixed, per_unit, per_money, multiplier, voucher, badge, benefit"
                ),
            );
            None
        }
    }
}

fn lookup_currency(
    check: &mut Check,
    at: &str,
    code: &str,
    currencies: &[Option<Currency>],
) -> Option<CurrencyIx> {
    let found = currencies
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.code.as_str() == code));
    match found {
        Some(i) => Some(CurrencyIx(i as u16)),
        None => {
            // A declared currency that failed its own validation is reported already.
            if !check.declared_currencies.iter().any(|c| c == code) {
                check.add(at, format!("{code:?} is not a currency of this program"));
            }
            None
        }
    }
}

fn tier_groups(
    check: &mut Check,
    docs: &[TierGroupDocument],
    currencies: &[Option<Currency>],
) -> Vec<TierGroup> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("tier_groups[{i}]");
        check.unknown(&at, &doc.unknown);
        let code = check.code(format!("{at}.code"), &doc.code);
        if let Some(code) = &code
            && !seen.insert(code.clone())
        {
            check.add(
                format!("{at}.code"),
                format!("{:?} is defined twice", code.as_str()),
            );
        }
        let measure = match doc.measure.as_deref().unwrap_or("points") {
            "points" => check
                .required(format!("{at}.currency"), &doc.currency)
                .and_then(|c| lookup_currency(check, &format!("{at}.currency"), c, currencies))
                .and_then(|ix| {
                    if currencies[ix.index()].as_ref().map(|c| c.kind)
                        != Some(CurrencyKind::Qualifying)
                    {
                        check.add(
                            format!("{at}.currency"),
                            "tiers are held on a qualifying currency",
                        );
                        None
                    } else {
                        Some(TierMeasure::Points(ix))
                    }
                }),
            other => {
                if doc.currency.is_some() && other != "balance" {
                    check.add(
                        format!("{at}.currency"),
                        "only the points and balance measures count a currency",
                    );
                }
                match other {
                    "spend" => Some(TierMeasure::Spend),
                    "activities" => Some(TierMeasure::Activities),
                    "manual" => Some(TierMeasure::Manual),
                    "balance" => None,
                    _ => {
                        check.add(
                            format!("{at}.measure"),
                            format!(
                                "{other:?} is not one of points, spend, activities, balance, manual"
                            ),
                        );
                        None
                    }
                }
            }
        };
        // The balance measure counts a redeemable currency's current balance.
        let measure = if doc.measure.as_deref() == Some("balance") {
            check
                .required(format!("{at}.currency"), &doc.currency)
                .and_then(|c| lookup_currency(check, &format!("{at}.currency"), c, currencies))
                .map(TierMeasure::Balance)
        } else {
            measure
        };
        let periodic = !matches!(doc.measure.as_deref(), Some("balance" | "manual"));
        if !periodic {
            for (field, given) in [
                ("period", doc.period.is_some()),
                ("grace", doc.grace.is_some()),
                ("validity_periods", doc.validity_periods.is_some()),
                ("reset", doc.reset.is_some()),
            ] {
                if given {
                    check.add(
                        format!("{at}.{field}"),
                        "a balance or manual tier group has no qualifying period",
                    );
                }
            }
        }
        let period = match &doc.period {
            None => Some(QualifyingPeriod::CalendarYear),
            Some(p) => {
                let pat = format!("{at}.period");
                check.unknown(&pat, &p.unknown);
                match (p.kind.as_deref(), p.months) {
                    (Some("calendar_year"), None) => Some(QualifyingPeriod::CalendarYear),
                    (Some("anniversary"), None) => Some(QualifyingPeriod::Anniversary),
                    (Some("rolling"), Some(m)) if (1..=120).contains(&m) => {
                        Some(QualifyingPeriod::Rolling { months: m })
                    }
                    (Some("tier_validity"), Some(m)) if (1..=120).contains(&m) => {
                        Some(QualifyingPeriod::TierValidity { months: m })
                    }
                    (Some("tier_validity"), _) => {
                        check.add(
                            format!("{pat}.months"),
                            "a tier's validity needs 1 to 120 months",
                        );
                        None
                    }
                    (Some("rolling"), _) => {
                        check.add(
                            format!("{pat}.months"),
                            "a rolling window needs 1 to 120 months",
                        );
                        None
                    }
                    (Some("calendar_year" | "anniversary"), Some(_)) => {
                        check.add(format!("{pat}.months"), "only a rolling window has months");
                        None
                    }
                    (other, _) => {
                        check.add(
                            format!("{pat}.type"),
                            format!("{other:?} is not one of calendar_year, anniversary, rolling, tier_validity"),
                        );
                        None
                    }
                }
            }
        };
        let downgrade = match doc.downgrade.as_deref() {
            None => Some(Downgrade::OneTier),
            Some(raw) => Downgrade::parse(raw).or_else(|| {
                check.add(
                    format!("{at}.downgrade"),
                    format!("{raw:?} is not one of {}", Downgrade::NAMES),
                );
                None
            }),
        };
        let grace = doc
            .grace
            .as_ref()
            .map(|g| length(check, &format!("{at}.grace"), g));
        let validity_periods = doc.validity_periods.unwrap_or(0);
        if validity_periods > 100 {
            check.add(format!("{at}.validity_periods"), "must be 0 to 100");
        }
        let by_validity = matches!(period, Some(QualifyingPeriod::TierValidity { .. }));
        if by_validity {
            // The window is the tier's validity; renewal thresholds say what keeps it.
            for (field, given) in [
                ("grace", doc.grace.is_some()),
                ("validity_periods", doc.validity_periods.is_some()),
                ("reset", doc.reset.is_some()),
            ] {
                if given {
                    check.add(
                        format!("{at}.{field}"),
                        "a tier_validity group renews by renewal_threshold instead",
                    );
                }
            }
        }
        for (j, tier) in doc.tiers.iter().enumerate() {
            match tier.renewal_threshold {
                Some(_) if !by_validity => check.add(
                    format!("{at}.tiers[{j}].renewal_threshold"),
                    "only tiers of a tier_validity group renew",
                ),
                Some(r) if r < 0 => check.add(
                    format!("{at}.tiers[{j}].renewal_threshold"),
                    "must be 0 or more",
                ),
                _ => {}
            }
        }
        if doc.tiers.is_empty() || doc.tiers.len() > MAX_TIERS {
            check.add(
                format!("{at}.tiers"),
                format!("a tier group needs 1 to {MAX_TIERS} tiers"),
            );
        }
        let mut tiers = Vec::new();
        let mut codes = HashSet::new();
        let mut previous: Option<i64> = None;
        for (j, tier) in doc.tiers.iter().enumerate() {
            let tat = format!("{at}.tiers[{j}]");
            check.unknown(&tat, &tier.unknown);
            let code = check.code(format!("{tat}.code"), &tier.code);
            if let Some(code) = &code
                && !codes.insert(code.clone())
            {
                check.add(
                    format!("{tat}.code"),
                    format!("{:?} is defined twice", code.as_str()),
                );
            }
            // Tiers given by hand need no thresholds: their order is their rank.
            let given = if doc.measure.as_deref() == Some("manual") {
                tier.threshold.or(Some(j as i64))
            } else {
                tier.threshold
            };
            let threshold = match (given, previous) {
                (None, _) => {
                    check.add(format!("{tat}.threshold"), "is required");
                    None
                }
                (Some(t), _) if j == 0 && t != 0 => {
                    check.add(
                        format!("{tat}.threshold"),
                        "the first tier's threshold is 0",
                    );
                    None
                }
                (Some(t), Some(p)) if t <= p => {
                    check.add(
                        format!("{tat}.threshold"),
                        "thresholds must increase from tier to tier",
                    );
                    None
                }
                (Some(t), _) => Some(t),
            };
            previous = given.or(previous);
            let name = tier
                .name
                .clone()
                .or_else(|| code.as_ref().map(|c| c.to_string()))
                .unwrap_or_default();
            let benefits = benefits(check, &tat, &tier.benefits);
            let expiry_extension = tier
                .expiry_extension
                .as_ref()
                .map(|e| length(check, &format!("{tat}.expiry_extension"), e));
            if let (Some(code), Some(threshold)) = (code, threshold) {
                tiers.push(Tier {
                    code,
                    name,
                    threshold,
                    renewal_threshold: tier.renewal_threshold,
                    benefits,
                    expiry_extension: expiry_extension.flatten(),
                });
            }
        }
        if let (Some(code), Some(measure), Some(period), Some(downgrade), false) =
            (code, measure, period, downgrade, tiers.is_empty())
        {
            let name = doc.name.clone().unwrap_or_else(|| code.to_string());
            out.push(TierGroup {
                code,
                name,
                measure,
                period,
                downgrade,
                grace: grace.flatten(),
                validity_periods,
                reset: doc.reset.unwrap_or(true),
                tiers,
            });
        }
    }
    out
}

/// The most voucher definitions a program may have.
const MAX_VOUCHERS: usize = 200;

fn vouchers(
    check: &mut Check,
    docs: &[VoucherDocument],
    money: Option<&MoneyCurrency>,
) -> Vec<crate::vouchers::VoucherDefinition> {
    use crate::vouchers::{
        CodeFormat, MAX_CODE_LENGTH, MAX_PREFIX_LEN, MAX_USES, MIN_CODE_LENGTH, Validity,
        VoucherDefinition, VoucherValue,
    };
    if docs.len() > MAX_VOUCHERS {
        check.add("vouchers", format!("at most {MAX_VOUCHERS} are allowed"));
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("vouchers[{i}]");
        check.unknown(&at, &doc.unknown);
        let code = check.code(format!("{at}.code"), &doc.code);
        if let Some(code) = &code
            && !seen.insert(code.clone())
        {
            check.add(format!("{at}.code"), format!("{code} is defined twice"));
        }
        let name = check.name(format!("{at}.name"), &doc.name);
        let value = match &doc.value {
            None => {
                check.add(format!("{at}.value"), "is required");
                None
            }
            Some(v) => {
                let vat = format!("{at}.value");
                check.unknown(&vat, &v.unknown);
                match (&v.fixed, &v.percent, &v.free_product) {
                    (Some(raw), None, None) => money.and_then(|m| match m.parse_amount(raw) {
                        Ok(a) if a.0 > 0 && a.0 <= crate::journal::MAX_POINTS => {
                            Some(VoucherValue::Fixed(a))
                        }
                        _ => {
                            check.add(
                                format!("{vat}.fixed"),
                                format!("{raw:?} is not a positive amount of {}", m.code()),
                            );
                            None
                        }
                    }),
                    (None, Some(raw), None) => {
                        match raw.parse::<Decimal>().map(|p| p.normalize()) {
                            Ok(p)
                                if p > Decimal::ZERO
                                    && p <= Decimal::ONE_HUNDRED
                                    && p.scale() <= 4 =>
                            {
                                Some(VoucherValue::Percent(p))
                            }
                            _ => {
                                check.add(
                                    format!("{vat}.percent"),
                                    format!("{raw:?} is not a percentage above 0 and at most 100"),
                                );
                                None
                            }
                        }
                    }
                    (None, None, Some(sku)) => {
                        if sku.trim().is_empty() || sku.chars().count() > 100 {
                            check.add(format!("{vat}.free_product"), "must be 1 to 100 characters");
                            None
                        } else {
                            Some(VoucherValue::FreeProduct(sku.clone()))
                        }
                    }
                    _ => {
                        check.add(vat, "needs exactly one of fixed, percent, free_product");
                        None
                    }
                }
            }
        };
        let mut validity = Validity::default();
        if let Some(v) = &doc.validity {
            let vat = format!("{at}.validity");
            check.unknown(&vat, &v.unknown);
            let mut date = |field: &str, raw: &Option<String>| {
                raw.as_deref().and_then(|raw| {
                    match chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
                        Ok(d) if (1970..=9999).contains(&chrono::Datelike::year(&d)) => Some(d),
                        _ => {
                            check.add(
                                format!("{vat}.{field}"),
                                format!("{raw:?} is not a date such as \"2026-12-31\""),
                            );
                            None
                        }
                    }
                })
            };
            validity.starts_on = date("starts_on", &v.starts_on);
            validity.ends_on = date("ends_on", &v.ends_on);
            if let (Some(s), Some(e)) = (validity.starts_on, validity.ends_on)
                && e < s
            {
                check.add(format!("{vat}.ends_on"), "is before starts_on");
            }
            validity.days = match v.days {
                Some(d) if d > 36_500 => {
                    check.add(format!("{vat}.days"), format!("{d} is not 0 to 36500"));
                    None
                }
                d => d,
            };
        }
        let uses = match doc.uses {
            Some(u) if u == 0 || u > MAX_USES => {
                check.add(format!("{at}.uses"), format!("{u} is not 1 to {MAX_USES}"));
                None
            }
            u => u,
        };
        let mut format = CodeFormat::default();
        if let Some(f) = &doc.code_format {
            let fat = format!("{at}.code_format");
            check.unknown(&fat, &f.unknown);
            if let Some(prefix) = &f.prefix {
                if prefix.len() > MAX_PREFIX_LEN
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
                {
                    check.add(
                        format!("{fat}.prefix"),
                        format!(
                            "{prefix:?} must be at most {MAX_PREFIX_LEN} upper-case letters, digits or -"
                        ),
                    );
                } else {
                    format.prefix = prefix.clone();
                }
            }
            match f.length {
                Some(l) if !(MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&l) => check.add(
                    format!("{fat}.length"),
                    format!(
                        "{l} is not {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} (random symbols, 5 bits each)"
                    ),
                ),
                Some(l) => format.length = l,
                None => {}
            }
        }
        if let (Some(code), Some(name), Some(value)) = (code, name, value) {
            out.push(VoucherDefinition {
                code,
                name,
                value,
                validity,
                uses,
                format,
            });
        }
    }
    out
}

fn referral(
    check: &mut Check,
    doc: &ReferralDocument,
    currencies: &[Option<Currency>],
    activity_types: &[Code],
) -> Option<Referral> {
    check.unknown("referral", &doc.unknown);
    let journal_types = match &doc.journal_types {
        None => vec![Code::parse(PURCHASE).expect("a valid code")],
        some => journal_types(check, "referral.journal_types", some, activity_types),
    };
    let mut reward = |side: &str, r: &Option<ReferralRewardDocument>| {
        let at = format!("referral.{side}");
        let Some(r) = r else {
            check.add(at, "is required");
            return None;
        };
        check.unknown(&at, &r.unknown);
        let currency = check
            .required(format!("{at}.currency"), &r.currency)
            .and_then(|c| lookup_currency(check, &format!("{at}.currency"), c, currencies));
        let points = match r.points {
            Some(p) if (1..=1_000_000_000).contains(&p) => Some(p),
            _ => {
                check.add(format!("{at}.points"), "must be 1 to 1000000000");
                None
            }
        };
        Some((currency?, points?))
    };
    let referrer = reward("referrer", &doc.referrer);
    let referee = reward("referee", &doc.referee);
    Some(Referral {
        journal_types,
        referrer: referrer?,
        referee: referee?,
    })
}

fn messaging(
    check: &mut Check,
    doc: &crate::program::document::MessagingDocument,
) -> crate::messaging::Messaging {
    use crate::messaging::{LANGUAGES, Messaging, QuietHours};
    check.unknown("messaging", &doc.unknown);
    let mut out = Messaging::default();
    if let Some(lang) = &doc.default_language {
        match LANGUAGES.iter().find(|l| **l == lang.as_str()) {
            Some(l) => out.default_language = l,
            None => check.add(
                "messaging.default_language",
                format!("must be one of {}", LANGUAGES.join(", ")),
            ),
        }
    }
    if let Some(q) = &doc.quiet_hours {
        check.unknown("messaging.quiet_hours", &q.unknown);
        let mut time = |field: &str, v: &Option<String>| {
            let at = format!("messaging.quiet_hours.{field}");
            match v
                .as_deref()
                .map(|s| chrono::NaiveTime::parse_from_str(s, "%H:%M"))
            {
                Some(Ok(t)) => Some(t),
                _ => {
                    check.add(at, "must be a local time HH:MM");
                    None
                }
            }
        };
        let (from, to) = (time("from", &q.from), time("to", &q.to));
        if let (Some(from), Some(to)) = (from, to) {
            out.quiet_hours = Some(QuietHours { from, to });
        }
    }
    out
}

fn fraud(check: &mut Check, doc: &crate::program::document::FraudDocument) -> crate::fraud::Fraud {
    use crate::fraud::{Fraud, RECENT, RULES, Rule, Watched};
    check.unknown("fraud", &doc.unknown);
    let mut out = Fraud::default();
    for (i, r) in doc.rules.iter().enumerate() {
        let at = format!("fraud.rules[{i}]");
        check.unknown(&at, &r.unknown);
        // Each rule reads only its own settings: another's is a mistake worth naming.
        let settings: [(&str, bool); 9] = [
            ("journals", r.journals.is_some()),
            ("max", r.max.is_some()),
            ("within_minutes", r.within_minutes.is_some()),
            ("within_hours", r.within_hours.is_some()),
            ("within_days", r.within_days.is_some()),
            ("score", r.score.is_some()),
            ("history", r.history.is_some()),
            ("attribute", r.attribute.is_some()),
            ("length", r.length.is_some()),
        ];
        let only = |check: &mut Check, allowed: &[&str]| {
            for (name, given) in settings {
                if given && !allowed.contains(&name) {
                    check.add(format!("{at}.{name}"), "is not a setting of this rule");
                }
            }
        };
        let within = |check: &mut Check, field: &str, v: Option<u32>, max: u32| match v {
            Some(v) if (1..=max).contains(&v) => Some(v),
            Some(_) => {
                check.add(format!("{at}.{field}"), format!("must be 1 to {max}"));
                None
            }
            None => {
                check.add(format!("{at}.{field}"), "is required");
                None
            }
        };
        let rule = match r.rule.as_deref() {
            Some("velocity") => {
                only(check, &["journals", "max", "within_minutes"]);
                let journals = match r.journals.as_deref().map(Watched::parse) {
                    Some(Some(w)) => Some(w),
                    _ => {
                        check.add(format!("{at}.journals"), "must be accruals or redemptions");
                        None
                    }
                };
                let minutes = within(check, "within_minutes", r.within_minutes, 31 * 24 * 60);
                let max = within(check, "max", r.max, RECENT as u32 - 1);
                match (journals, minutes, max) {
                    (Some(journals), Some(m), Some(max)) => Some(Rule::Velocity {
                        journals,
                        max,
                        within: chrono::Duration::minutes(i64::from(m)),
                    }),
                    _ => None,
                }
            }
            Some("unusual_amount") => {
                only(check, &["score", "history"]);
                let score = r.score.unwrap_or(5.0);
                let history = r.history.unwrap_or(10);
                let mut ok = true;
                if !(score.is_finite() && (1.0..=100.0).contains(&score)) {
                    check.add(format!("{at}.score"), "must be 1 to 100");
                    ok = false;
                }
                if !(3..=RECENT as u32).contains(&history) {
                    check.add(format!("{at}.history"), format!("must be 3 to {RECENT}"));
                    ok = false;
                }
                ok.then_some(Rule::UnusualAmount { score, history })
            }
            Some("shared_receipt") => {
                only(check, &["attribute"]);
                let attribute = r.attribute.clone().unwrap_or_else(|| "receipt".into());
                if attribute.is_empty() || attribute.len() > 64 {
                    check.add(format!("{at}.attribute"), "must be 1 to 64 characters");
                    None
                } else {
                    Some(Rule::SharedReceipt { attribute })
                }
            }
            Some("redemption_after_change") => {
                only(check, &["within_hours"]);
                within(check, "within_hours", r.within_hours, 24 * 30).map(|h| {
                    Rule::RedemptionAfterChange {
                        within: chrono::Duration::hours(i64::from(h)),
                    }
                })
            }
            Some("transfer_ring") => {
                only(check, &["length", "within_days"]);
                let days = within(check, "within_days", r.within_days, 365);
                let length = r.length.unwrap_or(4);
                if !(2..=6).contains(&length) {
                    check.add(format!("{at}.length"), "must be 2 to 6");
                }
                days.filter(|_| (2..=6).contains(&length))
                    .map(|d| Rule::TransferRing {
                        length,
                        within: chrono::Duration::days(i64::from(d)),
                    })
            }
            Some(other) => {
                check.add(
                    format!("{at}.rule"),
                    format!(
                        "{other:?} is not a rule; the rules are {}",
                        RULES.join(", ")
                    ),
                );
                None
            }
            None => {
                check.add(
                    format!("{at}.rule"),
                    format!("is required: one of {}", RULES.join(", ")),
                );
                None
            }
        };
        if let Some(rule) = rule {
            if rule.name() != "velocity" && out.rules.iter().any(|o| o.name() == rule.name()) {
                check.add(format!("{at}.rule"), "is given twice");
                continue;
            }
            out.rules.push(rule);
        }
    }
    out
}

/// A length of days or months (grace periods, expiry extensions).
fn length(check: &mut Check, at: &str, doc: &LengthDocument) -> Option<Period> {
    check.unknown(at, &doc.unknown);
    match (doc.days, doc.months) {
        (Some(d), None) if (1..=MAX_EXPIRY_DAYS).contains(&d) => Some(Period::Days(d)),
        (None, Some(m)) if (1..=MAX_EXPIRY_MONTHS).contains(&m) => Some(Period::Months(m)),
        (Some(_), Some(_)) => {
            check.add(at, "give days or months, not both");
            None
        }
        (None, None) => {
            check.add(at, "give days or months");
            None
        }
        _ => {
            check.add(
                at,
                format!("days must be 1 to {MAX_EXPIRY_DAYS}, months 1 to {MAX_EXPIRY_MONTHS}"),
            );
            None
        }
    }
}

/// The longest a granted benefit lasts: ten years.
pub const MAX_BENEFIT_DAYS: u32 = 3650;
/// The most badges a program defines.
const MAX_BADGES: usize = 200;

fn badges(check: &mut Check, docs: &[BadgeDocument]) -> Vec<super::BadgeDefinition> {
    if docs.len() > MAX_BADGES {
        check.add("badges", format!("at most {MAX_BADGES} are allowed"));
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("badges[{i}]");
        check.unknown(&at, &doc.unknown);
        let (code, name) = check.entry(&at, &mut seen, (&doc.code, &doc.name, &doc.description));
        if let (Some(code), Some(name)) = (code, name) {
            out.push(super::BadgeDefinition {
                code,
                name,
                description: doc.description.clone(),
                repeatable: doc.repeatable,
            });
        }
    }
    out
}

fn segments(check: &mut Check, docs: &[SegmentDocument]) -> Vec<crate::segments::Segment> {
    use crate::segments::MAX_SEGMENTS;
    if docs.len() > MAX_SEGMENTS {
        check.add("segments", format!("at most {MAX_SEGMENTS} are allowed"));
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("segments[{i}]");
        check.unknown(&at, &doc.unknown);
        let (code, name) = check.entry(&at, &mut seen, (&doc.code, &doc.name, &doc.description));
        let condition = match doc.condition.as_deref() {
            None => {
                check.add(format!("{at}.condition"), "is required");
                None
            }
            Some(source) => match Condition::compile(source) {
                Err(e) => {
                    check.add(
                        format!("{at}.condition"),
                        format!("invalid expression: {e}"),
                    );
                    None
                }
                Ok(c) => match crate::segments::check_fields(&c) {
                    Err(e) => {
                        check.add(format!("{at}.condition"), e);
                        None
                    }
                    Ok(()) => Some(c),
                },
            },
        };
        if let (Some(code), Some(name), Some(condition)) = (code, name, condition) {
            out.push(crate::segments::Segment {
                code,
                name,
                description: doc.description.clone(),
                condition,
            });
        }
    }
    out
}

fn benefits(check: &mut Check, at: &str, docs: &[BenefitDocument]) -> Vec<Benefit> {
    let mut out = Vec::new();
    if docs.len() > 50 {
        check.add(format!("{at}.benefits"), "a tier has at most 50 benefits");
        return out;
    }
    for (k, doc) in docs.iter().enumerate() {
        let bat = format!("{at}.benefits[{k}]");
        check.unknown(&bat, &doc.unknown);
        let code = check.code(format!("{bat}.code"), &doc.code);
        let value = match &doc.value {
            None => Some(None),
            Some(serde_json::Value::Number(n)) => n.to_string().parse::<Decimal>().ok().map(Some),
            Some(serde_json::Value::String(s)) => s.parse::<Decimal>().ok().map(Some),
            Some(_) => None,
        };
        if value.is_none() {
            check.add(format!("{bat}.value"), "must be a number");
        }
        if let (Some(code), Some(value)) = (code, value) {
            let name = doc.name.clone().unwrap_or_else(|| code.to_string());
            out.push(Benefit { code, name, value });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ProgramDocument {
        serde_json::from_str(json).expect("a definition document")
    }

    #[test]
    fn a_fixed_date_the_month_never_has_is_refused_not_moved() {
        let with = |month: u32, day: u32| {
            parse(&format!(
                r#"{{"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                    "currencies": [{{"code": "points", "name": "Points", "kind": "redeemable",
                                    "expiry": {{"policy": "fixed_date", "month": {month}, "day": {day}}}}}],
                    "earning": {{"base": [{{"currency": "points", "rate": "1"}}]}}}}"#
            ))
        };
        for (month, day) in [(2, 30), (2, 31), (4, 31), (11, 31)] {
            let problems = Program::compile(&with(month, day), None).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == "currencies[0].expiry.day"
                        && p.message.contains("has no day")),
                "{month}/{day}: {problems:?}"
            );
        }
        for (month, day) in [(2, 29), (12, 31), (4, 30)] {
            assert!(
                Program::compile(&with(month, day), None).is_ok(),
                "{month}/{day}"
            );
        }
    }

    #[test]
    fn a_payment_rate_is_positive_and_only_for_redeemable_points() {
        let with = |kind: &str, payment: &str| {
            parse(&format!(
                r#"{{"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                    "currencies": [{{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {{"policy": "never"}}}},
                                   {{"code": "extra", "name": "Extra", "kind": "{kind}", "expiry": {{"policy": "never"}},
                                    "payment": {payment}}}],
                    "earning": {{"base": [{{"currency": "points", "rate": "1"}}]}}}}"#
            ))
        };
        let ok = Program::compile(
            &with(
                "redeemable",
                r#"{"money_per_point": "0.01", "minimum_points": 500}"#,
            ),
            None,
        )
        .expect("compiles");
        let payment = ok.currencies[1].payment.expect("a payment");
        assert_eq!(payment.money_per_point, Decimal::new(1, 2));
        assert_eq!(payment.minimum_points, 500);
        assert_eq!(
            payment.rounding,
            crate::money::Rounding::Up,
            "up by default"
        );
        for (kind, payment, path, says) in [
            (
                "qualifying",
                r#"{"money_per_point": "0.01"}"#,
                "currencies[1].payment",
                "qualifying",
            ),
            (
                "redeemable",
                r#"{"money_per_point": "0"}"#,
                "currencies[1].payment.money_per_point",
                "positive",
            ),
            (
                "redeemable",
                r#"{"money_per_point": "0.0000001"}"#,
                "currencies[1].payment.money_per_point",
                "6 decimals",
            ),
            (
                "redeemable",
                r#"{}"#,
                "currencies[1].payment.money_per_point",
                "required",
            ),
            (
                "redeemable",
                r#"{"money_per_point": "0.01", "minimum_points": -1}"#,
                "currencies[1].payment.minimum_points",
                "0 to",
            ),
            (
                "redeemable",
                r#"{"money_per_point": "0.01", "rounding": "sideways"}"#,
                "currencies[1].payment.rounding",
                "not one of",
            ),
        ] {
            let problems = Program::compile(&with(kind, payment), None).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == path && p.message.contains(says)),
                "{payment}: {problems:?}"
            );
        }
    }

    #[test]
    fn voucher_definitions_are_checked_and_promotions_name_existing_ones() {
        let with = |vouchers: &str, action: &str| {
            parse(&format!(
                r#"{{"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                    "currencies": [{{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {{"policy": "never"}}}}],
                    "earning": {{"base": [{{"currency": "points", "rate": "1"}}]}},
                    "promotions": [{{"code": "p", "name": "P", "status": "active",
                                    "actions": [{{"type": "voucher", "voucher": "{action}"}}],
                                    "limits": {{"budget_vouchers": 100}}}}],
                    "vouchers": {vouchers}}}"#
            ))
        };
        let ok = Program::compile(
            &with(
                r#"[{"code": "gift", "name": "Gift", "value": {"fixed": "25.00"},
                     "validity": {"starts_on": "2026-12-01", "ends_on": "2026-12-31", "days": 10},
                     "uses": 3, "code_format": {"prefix": "G-", "length": 16}}]"#,
                "gift",
            ),
            None,
        )
        .expect("compiles");
        let gift = ok.voucher("gift").expect("the definition");
        assert_eq!(
            gift.value,
            crate::vouchers::VoucherValue::Fixed(crate::money::MinorUnits(2500))
        );
        assert_eq!((gift.uses, gift.format.length), (Some(3), 16));
        assert_eq!(ok.promotions[0].limits.budget_vouchers, Some(100));
        for (vouchers, action, path, says) in [
            (
                r#"[]"#,
                "gift",
                "promotions[0].actions[0].voucher",
                "not one of",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"fixed": "-1"}}]"#,
                "gift",
                "vouchers[0].value.fixed",
                "positive",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"fixed": "1", "percent": "5"}}]"#,
                "gift",
                "vouchers[0].value",
                "exactly one",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "120"}}]"#,
                "gift",
                "vouchers[0].value.percent",
                "at most 100",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "5"}, "code_format": {"length": 6}}]"#,
                "gift",
                "vouchers[0].code_format.length",
                "5 bits",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "5"}, "code_format": {"prefix": "a b"}}]"#,
                "gift",
                "vouchers[0].code_format.prefix",
                "upper-case",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "5"},
                     "validity": {"starts_on": "2026-12-31", "ends_on": "2026-12-01"}}]"#,
                "gift",
                "vouchers[0].validity.ends_on",
                "before",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "5"}, "uses": 0}]"#,
                "gift",
                "vouchers[0].uses",
                "1 to",
            ),
            (
                r#"[{"code": "gift", "name": "Gift", "value": {"percent": "5"}},
                    {"code": "gift", "name": "Again", "value": {"percent": "5"}}]"#,
                "gift",
                "vouchers[1].code",
                "twice",
            ),
        ] {
            let problems = Program::compile(&with(vouchers, action), None).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == path && p.message.contains(says)),
                "{vouchers}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_minimal_program_compiles() {
        let doc = parse(
            r#"{"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                                "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]}}"#,
        );
        let program = Program::compile(&doc, None).expect("the program compiles");
        assert_eq!(program.code.as_str(), "shop");
        assert_eq!(
            program.currencies[0].return_policy,
            ReturnPolicy::WithinBalance
        );
        assert_eq!(program.currencies[0].redemption_floor(), 0);
        assert!(program.base_earning[0].applies_to("purchase"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let doc = parse(
            r#"{"code": "Shop!", "time_zone": "Mars/Olympus", "money_currency": "euro",
                "activity_types": ["review", "review", "refund"],
                "colour": "blue",
                "currencies": [
                  {"code": "points", "name": "Points", "kind": "spendable",
                   "expiry": {"policy": "rolling", "months": 0, "round_up": "end_of_week"},
                   "return_policy": "whatever", "negative_floor": 5, "value_per_point": "-1"},
                  {"code": "points", "name": "Again", "kind": "qualifying",
                   "expiry": {"policy": "fixed_date", "month": 13, "days": 3}},
                  {"code": "miles", "name": "Miles", "kind": "redeemable",
                   "expiry": {"policy": "inactivity"}, "negative_floor": -100}
                ],
                "earning": {"base": [{"currency": "stars", "rate": "abc", "rounding": "sideways",
                                      "journal_types": ["flight"]}]},
                "tier_groups": [{"code": "status", "currency": "nosuch",
                                 "tiers": [{"code": "blue", "threshold": 10}, {"code": "gold", "threshold": 5}]}]
               }"#,
        );
        let problems = Program::compile(&doc, None).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        let expected = [
            "colour",
            "code",
            "name",
            "time_zone",
            "money_currency",
            "activity_types[1]",
            "activity_types[2]",
            "currencies[0].kind",
            "currencies[0].expiry",
            "currencies[0].expiry.round_up",
            "currencies[0].return_policy",
            "currencies[0].negative_floor",
            "currencies[0].value_per_point",
            "currencies[1].expiry.days",
            "currencies[1].expiry.month",
            "currencies[1].expiry.day",
            "currencies[2].expiry.months",
            "currencies[2].negative_floor",
            "earning.base[0].currency",
            "earning.base[0].rounding",
            "earning.base[0].rate",
            "earning.base[0].journal_types[0]",
            "tier_groups[0].currency",
            "tier_groups[0].tiers[0].threshold",
            "tier_groups[0].tiers[1].threshold",
        ];
        for path in expected {
            assert!(
                paths.contains(&path),
                "no problem at {path}; got {problems:#?}"
            );
        }
    }

    #[test]
    fn the_code_in_the_url_and_the_document_must_agree() {
        let doc = parse(
            r#"{"code": "a", "name": "A", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [{"code": "p", "name": "P", "kind": "redeemable", "expiry": {"policy": "never"}}]}"#,
        );
        let problems = Program::compile(&doc, Some("b")).unwrap_err();
        assert_eq!(problems[0].path, "code");
        assert!(Program::compile(&doc, Some("a")).is_ok());
    }
}
