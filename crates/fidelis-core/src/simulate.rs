//! `fidelis simulate`: a synthetic population run through a program definition by the core
//! itself, on a virtual clock — no database, no wall clock — to see what the program would
//! cost and give before it runs (PRODUCT.md §16).
//!
//! Members join over the first months; each buys at their own Poisson rate and, after each
//! repeat purchase, may drop out for good (rates and dropout drawn across members as in the
//! BG/NBD model, [`crate::analytics::synthetic`]); each purchase is worth a Gamma-Gamma draw
//! around the member's own mean; some purchases are returned within two weeks; once a month
//! a member may redeem, with their own propensity, when they hold enough points. Every
//! journal goes through [`crate::process`], exactly as the server would process it, and
//! the month's figures are summed from the entries it writes. Like the in-memory
//! [`crate::book::Book`], but lean: each member's ledger and promotion counters live with
//! the member, and only what a later journal refers to (a purchase to be returned) is
//! kept; members who share no counter are simulated one after another ([`run`]). Each
//! member draws from their own random stream: the same seed gives the same population,
//! the same journals and the same figures; the same seed with another definition gives the
//! same people doing the same things, so two definitions compare like for like.

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma};

use crate::analytics::{bgnbd, gamma_gamma};
use crate::ids::{Code, ExternalId, JournalId, MemberId};
use crate::journal::{Accrual, Journal, JournalBody, JournalError, Refund};
use crate::ledger::{Entry, EntryKind, MemberLedger, MemberStatus};
use crate::money::MinorUnits;
use crate::process::{self, JournalIds, JournalRecord, ProcessError, Related};
use crate::program::{CurrencyKind, PURCHASE, Program};
use crate::promotions::limits::EVERYONE;
use crate::promotions::{Counters, MemberFacts};

/// How the population behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Purchase rate (per week) and dropout, as a BG/NBD population.
    pub purchases: bgnbd::Params,
    /// Spend per purchase, in major units of the money currency.
    pub spend: gamma_gamma::Params,
    /// Each member's monthly propensity to redeem when they can, drawn from Beta(a, b).
    pub redemption: (f64, f64),
    /// The fewest points a member redeems (then all whole hundreds they hold).
    pub redeem_from: i64,
    /// The share of purchases returned in full within two weeks.
    pub returns: f64,
    /// Members join evenly over this many first months.
    pub joining_months: u32,
}

impl Default for Behaviour {
    /// A retail population: about one purchase a month while active (Gamma(0.5, 2) per
    /// week), a mean ticket near €50, redemption propensities around one in four.
    fn default() -> Self {
        Self {
            purchases: bgnbd::Params {
                r: 0.5,
                alpha: 2.0,
                a: 0.8,
                b: 6.0,
            },
            spend: gamma_gamma::Params {
                p: 6.0,
                q: 4.0,
                gamma: 25.0,
            },
            redemption: (1.0, 3.0),
            redeem_from: 500,
            returns: 0.05,
            joining_months: 6,
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub members: u32,
    pub months: u32,
    /// The first month's first instant.
    pub start: DateTime<Utc>,
    pub seed: u64,
    pub behaviour: Behaviour,
}

/// One month's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Month {
    pub start: DateTime<Utc>,
    /// Members enrolled by the month's end, and those who bought in it.
    pub members: u32,
    pub buyers: u32,
    pub purchases: u64,
    pub journals: u64,
    /// Spend on purchases in the month and returned in it (minor units).
    pub revenue: i64,
    pub returned: i64,
    /// Per currency (the program's order): points earned (adjustments included), taken
    /// back by returns, redeemed, expired, and held by members at the month's end.
    pub issued: Vec<i64>,
    pub taken_back: Vec<i64>,
    pub redeemed: Vec<i64>,
    pub expired: Vec<i64>,
    /// Qualifying points reset at the end of a tier qualification period.
    pub reset: Vec<i64>,
    pub outstanding: Vec<i64>,
    /// The redeemable points held at the month's end, valued (minor units).
    pub liability: i64,
    /// Members per (tier group, tier) at the month's end.
    pub tiers: Vec<(String, String, u32)>,
    /// Points each promotion awarded in the month, per currency: (promotion, currency,
    /// points).
    pub promotions: Vec<(String, String, i64)>,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub currencies: Vec<String>,
    pub months: Vec<Month>,
}

impl Report {
    /// A figure summed over the months.
    pub fn total(&self, f: impl Fn(&Month) -> i64) -> i64 {
        self.months.iter().map(f).sum()
    }

    /// Points of a currency issued over the whole run.
    pub fn issued(&self, currency: usize) -> i64 {
        self.total(|m| m.issued[currency])
    }
}

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error("the behaviour's parameters must be positive and finite")]
    BadBehaviour,
    #[error("the program has no redeemable currency to redeem")]
    NothingToRedeem,
    #[error("a generated journal was refused: {0}")]
    Refused(#[from] JournalError),
    #[error("the months run past the calendar")]
    OutOfRange,
    #[error("processing failed: {0}")]
    Processing(String),
}

struct Person {
    /// The member's number in the population (from 0).
    number: u32,
    id: ExternalId,
    /// The member's own random stream: what a member does never depends on who else is
    /// simulated, or in which order.
    rng: ChaCha8Rng,
    joins: DateTime<Utc>,
    rate: f64,
    dropout: f64,
    alive: bool,
    next: DateTime<Utc>,
    /// The Gamma-Gamma scale ν of the member's purchases.
    nu: f64,
    propensity: f64,
    purchases: u32,
    /// The profile and enrolment instant, as promotions read them (the retail
    /// template's birthday bonus).
    facts: std::sync::Arc<MemberFacts>,
    ledger: Option<MemberLedger>,
    counters: Counters,
}

/// The population's distributions.
struct Draws {
    rate: Gamma<f64>,
    dropout: Beta<f64>,
    scale: Gamma<f64>,
    propensity: Beta<f64>,
    /// The key of every member's random stream (the stream is the member's number).
    key: [u8; 32],
    start: DateTime<Utc>,
    joining: f64,
}

impl Draws {
    fn person(&self, n: u32) -> Person {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(u64::from(n));
        let joins = self.start + Duration::seconds((rng.random::<f64>() * self.joining) as i64);
        // Born on any day of 55 years, so birthdays fall evenly over the calendar.
        let born = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default()
            + chrono::Days::new(rng.random_range(0..55 * 365));
        let mut profile = serde_json::Map::new();
        profile.insert("birthday".into(), crate::calendar::iso_date(born).into());
        let facts = std::sync::Arc::new(MemberFacts {
            enrolled_at: Some(joins),
            profile,
            segments: Vec::new(),
        });
        Person {
            facts,
            number: n,
            id: ExternalId::parse(&format!("S{n:07}")).unwrap_or_else(|_| unreachable!()),
            joins,
            rate: self.rate.sample(&mut rng).max(1e-9),
            dropout: self.dropout.sample(&mut rng),
            alive: true,
            next: joins,
            nu: self.scale.sample(&mut rng).max(1e-9),
            propensity: self.propensity.sample(&mut rng),
            purchases: 0,
            ledger: None,
            counters: Counters::default(),
            rng,
        }
    }
}

/// Journals of the run, processed as the server would (without its storage).
struct Engine<'p> {
    program: &'p Program,
    next_id: i64,
    /// Counters of all members (budgets, daily caps), lent to each journal.
    everyone: Counters,
    /// Purchases a later return refers to, by [`returnable_key`] (the member's number and
    /// the purchase's).
    returnable: std::collections::HashMap<u64, JournalRecord>,
}

impl Engine<'_> {
    fn id(&mut self) -> JournalId {
        self.next_id += 1;
        JournalId(self.next_id)
    }

    /// Processes one journal of `person` at its own instant; `keep` remembers its record
    /// for a later return. Returns the outcome and every entry written (the journal's and
    /// its settlement's).
    fn post(
        &mut self,
        person: &mut Person,
        journal: &Journal,
        keep: Option<u64>,
        original: Option<u64>,
    ) -> Result<(crate::outcome::Outcome, Vec<Entry>), SimulationError> {
        let ledger = person
            .ledger
            .as_mut()
            .ok_or_else(|| SimulationError::Processing("a journal before enrolment".into()))?;
        let mut related = Related {
            target: original.and_then(|o| self.returnable.get(&o).cloned()),
            brief: true,
            ..Related::default()
        };
        let mut counters = std::mem::take(&mut person.counters);
        for (k, v) in &self.everyone.counts {
            counters.counts.insert(k.clone(), *v);
        }
        related.counters = counters;
        let ids = JournalIds {
            main: self.id(),
            settlement: self.id(),
        };
        let result = process::process(
            self.program,
            ledger,
            journal,
            &mut related,
            ids,
            journal.occurred_at,
        );
        let mut counters = std::mem::take(&mut related.counters);
        counters.deltas.clear();
        let everyone: Vec<_> = counters
            .counts
            .keys()
            .filter(|k| k.member == EVERYONE)
            .cloned()
            .collect();
        for k in everyone {
            if let Some(v) = counters.counts.remove(&k) {
                self.everyone.counts.insert(k, v);
            }
        }
        person.counters = counters;
        let processed = match result {
            Ok(p) => p,
            Err(ProcessError::Refused(e)) => return Err(SimulationError::Refused(e)),
            Err(e) => return Err(SimulationError::Processing(e.to_string())),
        };
        if let Some(o) = original {
            self.returnable.remove(&o);
        }
        let mut entries = match keep {
            Some(n) => {
                let entries = processed.record.entries.clone();
                self.returnable.insert(n, processed.record);
                entries
            }
            None => processed.record.entries,
        };
        if let Some(s) = processed.settlement {
            entries.extend(s.entries);
        }
        Ok((processed.outcome, entries))
    }
}

enum Event {
    /// The member's `number`th purchase.
    Purchase {
        person: usize,
        number: u32,
        cents: i64,
    },
    Return {
        person: usize,
        original: u32,
    },
    Redeem {
        person: usize,
    },
}

/// A return due within the month: (when, the purchase's [`returnable_key`], member,
/// purchase number).
type DueReturn = (DateTime<Utc>, u64, usize, u32);

const WEEK_SECONDS: f64 = 7.0 * 86_400.0;

/// Whether a promotion counts across members (a budget, a daily cap): then the members'
/// journals must be processed in the order they happen, all members together.
fn shares_counters(program: &Program) -> bool {
    program.promotions.iter().any(|p| {
        p.limits.budget_points.is_some()
            || p.limits.daily_points.is_some()
            || p.limits.budget_vouchers.is_some()
    })
}

/// What the simulation hands its sink: an enrolment, or a journal as it is posted.
#[derive(Debug, Clone, Copy)]
pub enum Posted<'a> {
    /// A member joins, with their profile (their `birthday`).
    Enrolment {
        member: &'a ExternalId,
        at: DateTime<Utc>,
        profile: &'a serde_json::Map<String, serde_json::Value>,
    },
    Journal(&'a Journal),
}

/// Runs the simulation; `sink` sees every enrolment and every journal as it is posted (to
/// write them out or send them to a server).
///
/// Members who share nothing (no promotion counts across members) are simulated one after
/// another, each from enrolment to the last month: a member's ledger stays in the cache
/// instead of being fetched from memory for every journal, and is dropped when done. Each
/// member draws from their own random stream, so the figures are the same as when all
/// members are simulated together in the order things happen (what a program with
/// budgets or daily caps needs, and what [`run_together`] does); a member's journals
/// still come in order, but one member's after another's.
pub fn run(
    program: &Program,
    settings: &Settings,
    sink: impl FnMut(Posted<'_>),
) -> Result<Report, SimulationError> {
    let cohort = if shares_counters(program) {
        settings.members.max(1)
    } else {
        1
    };
    run_in_cohorts(program, settings, cohort, sink)
}

/// [`run`] with every member simulated together, journals in the order they happen.
pub fn run_together(
    program: &Program,
    settings: &Settings,
    sink: impl FnMut(Posted<'_>),
) -> Result<Report, SimulationError> {
    run_in_cohorts(program, settings, settings.members.max(1), sink)
}

fn run_in_cohorts(
    program: &Program,
    settings: &Settings,
    cohort: u32,
    mut sink: impl FnMut(Posted<'_>),
) -> Result<Report, SimulationError> {
    let b = &settings.behaviour;
    let rate = Gamma::new(b.purchases.r, 1.0 / b.purchases.alpha)
        .map_err(|_| SimulationError::BadBehaviour)?;
    let dropout =
        Beta::new(b.purchases.a, b.purchases.b).map_err(|_| SimulationError::BadBehaviour)?;
    let scale =
        Gamma::new(b.spend.q, 1.0 / b.spend.gamma).map_err(|_| SimulationError::BadBehaviour)?;
    let propensity =
        Beta::new(b.redemption.0, b.redemption.1).map_err(|_| SimulationError::BadBehaviour)?;
    if !(b.spend.p > 0.0 && (0.0..1.0).contains(&b.returns)) {
        return Err(SimulationError::BadBehaviour);
    }
    let value = Gamma::new(b.spend.p, 1.0).map_err(|_| SimulationError::BadBehaviour)?;
    let redeemable = program
        .currencies
        .iter()
        .position(|c| c.kind == CurrencyKind::Redeemable)
        .ok_or(SimulationError::NothingToRedeem)?;
    let money_scale = 10f64.powi(i32::from(program.money_currency.scale()));
    let month_start = |m: u32| {
        settings
            .start
            .checked_add_months(Months::new(m))
            .ok_or(SimulationError::OutOfRange)
    };
    let starts: Vec<DateTime<Utc>> = (0..=settings.months)
        .map(month_start)
        .collect::<Result<_, _>>()?;
    let end = starts[settings.months as usize];
    let draws = Draws {
        rate,
        dropout,
        scale,
        propensity,
        key: ChaCha8Rng::seed_from_u64(settings.seed).get_seed(),
        start: settings.start,
        joining: (month_start(b.joining_months.clamp(1, settings.months.max(1)))? - settings.start)
            .num_seconds()
            .max(1) as f64,
    };
    let purchase_type = Code::parse(PURCHASE).unwrap_or_else(|_| unreachable!());
    let mut engine = Engine {
        program,
        next_id: 0,
        everyone: Counters::default(),
        returnable: std::collections::HashMap::new(),
    };
    let n = program.currencies.len();
    let tier_rows: Vec<(String, String, u32)> = program
        .tier_groups
        .iter()
        .flat_map(|g| {
            g.tiers
                .iter()
                .map(move |t| (g.code.to_string(), t.code.to_string(), 0))
        })
        .collect();
    let mut report = Report {
        currencies: program
            .currencies
            .iter()
            .map(|c| c.code.to_string())
            .collect(),
        months: (0..settings.months as usize)
            .map(|m| Month {
                start: starts[m],
                issued: vec![0; n],
                taken_back: vec![0; n],
                redeemed: vec![0; n],
                expired: vec![0; n],
                reset: vec![0; n],
                outstanding: vec![0; n],
                tiers: tier_rows.clone(),
                ..Month::default()
            })
            .collect(),
    };
    // Returns falling in a later month wait here: (when, event).
    let mut later: Vec<(DateTime<Utc>, Event)> = Vec::new();
    // A month's events, kept from month to month: growing a fresh vector every month costs
    // more in first-touched pages than the simulation itself.
    let mut events: Vec<(DateTime<Utc>, Event)> = Vec::new();
    let mut waiting: Vec<(DateTime<Utc>, Event)> = Vec::new();
    let mut buyers: Vec<bool> = Vec::new();
    let mut people: Vec<Person> = Vec::new();
    let mut first = 0u32;
    while first < settings.members {
        let last = first.saturating_add(cohort).min(settings.members);
        people.clear();
        people.extend((first..last).map(|n| draws.person(n)));
        first = last;
        // What the last cohort left for after the last month.
        later.clear();
        engine.returnable.clear();
        for m in 0..settings.months {
            let (from, until) = (starts[m as usize], starts[m as usize + 1]);
            let month = &mut report.months[m as usize];
            events.clear();
            for (at, event) in later.drain(..) {
                if at < until {
                    events.push((at, event));
                } else {
                    waiting.push((at, event));
                }
            }
            std::mem::swap(&mut later, &mut waiting);
            let span = (until - from).num_seconds() as f64;
            for (i, p) in people.iter_mut().enumerate() {
                if p.joins >= until {
                    continue;
                }
                if p.ledger.is_none() {
                    let mut ledger = MemberLedger::new(
                        MemberId(i64::from(p.number) + 1),
                        MemberStatus::Active,
                        program,
                    );
                    ledger.enrolled_at = Some(p.joins);
                    if program.needs_member_facts() {
                        ledger.facts = Some(p.facts.clone());
                    }
                    if !program.tier_groups.is_empty() {
                        ledger.tiers = Some(crate::tiers::MemberTiers::start(
                            program,
                            p.joins,
                            &[],
                            p.joins,
                        ));
                    }
                    p.ledger = Some(ledger);
                    sink(Posted::Enrolment {
                        member: &p.id,
                        at: p.joins,
                        profile: &p.facts.profile,
                    });
                }
                let gap = Exp::new(p.rate).unwrap_or_else(|_| unreachable!());
                while p.alive && p.next < until {
                    let at = p.next.max(from);
                    // Gamma(p, ν) is Gamma(p, 1) scaled by 1/ν.
                    let major: f64 = value.sample(&mut p.rng) / p.nu;
                    let cents = ((major * money_scale).round() as i64).max(1);
                    p.purchases += 1;
                    events.push((
                        at,
                        Event::Purchase {
                            person: i,
                            number: p.purchases,
                            cents,
                        },
                    ));
                    if p.purchases > 1 && p.rng.random::<f64>() < p.dropout {
                        p.alive = false;
                    }
                    let weeks: f64 = gap.sample(&mut p.rng);
                    p.next = at + Duration::seconds((weeks * WEEK_SECONDS).min(1e10) as i64 + 60);
                }
                if p.rng.random::<f64>() < p.propensity {
                    let at = from + Duration::seconds((p.rng.random::<f64>() * span) as i64);
                    if at >= p.joins {
                        events.push((at, Event::Redeem { person: i }));
                    }
                }
            }
            // Chronological; the generation order breaks ties, so the run is deterministic.
            events.sort_by_key(|(at, _)| *at);
            buyers.clear();
            buyers.resize(people.len(), false);
            // Returns that fall within the month join its events in time order, the
            // purchase's key breaking ties.
            let mut soon: BinaryHeap<Reverse<DueReturn>> = BinaryHeap::new();
            let mut sorted = events.drain(..).peekable();
            loop {
                let return_first = match (sorted.peek(), soon.peek()) {
                    (Some((at, _)), Some(Reverse((back, ..)))) => back < at,
                    (None, Some(_)) => true,
                    (_, None) => false,
                };
                let next = if return_first {
                    soon.pop().map(|Reverse((back, _, person, number))| {
                        (
                            back,
                            Event::Return {
                                person,
                                original: number,
                            },
                        )
                    })
                } else {
                    sorted.next()
                };
                let Some((at, event)) = next else {
                    break;
                };
                let (mut keep, mut original) = (None, None);
                let (person, body, external) = match event {
                    Event::Purchase {
                        person,
                        number,
                        cents,
                    } => {
                        let p = &mut people[person];
                        if p.rng.random::<f64>() < b.returns {
                            let back = at
                                + Duration::seconds(
                                    (p.rng.random::<f64>() * 14.0 * 86_400.0) as i64 + 3_600,
                                );
                            let key = returnable_key(p, number);
                            if back < until {
                                keep = Some(key);
                                soon.push(Reverse((back, key, person, number)));
                            } else if back < end {
                                keep = Some(key);
                                later.push((
                                    back,
                                    Event::Return {
                                        person,
                                        original: number,
                                    },
                                ));
                            }
                        }
                        month.purchases += 1;
                        month.revenue += cents;
                        buyers[person] = true;
                        let body = JournalBody::Accrual(Accrual {
                            activity: purchase_type.clone(),
                            subtype: None,
                            amount: Some(MinorUnits(cents)),
                            lines: Vec::new(),
                            channel: None,
                            store: None,
                            partner: None,
                            attributes: serde_json::Map::new(),
                        });
                        (person, body, format!("sim-{}-{number}", p.id))
                    }
                    Event::Return {
                        person,
                        original: number,
                    } => {
                        let p = &people[person];
                        original = Some(returnable_key(p, number));
                        let body = JournalBody::Refund(Refund {
                            original: ExternalId::parse(&format!("sim-{}-{number}", p.id))
                                .unwrap_or_else(|_| unreachable!()),
                            amount: None,
                            lines: Vec::new(),
                            channel: None,
                            store: None,
                        });
                        (person, body, format!("sim-{}-{number}-return", p.id))
                    }
                    Event::Redeem { person } => {
                        let held = people[person]
                            .ledger
                            .as_ref()
                            .map_or(0, |l| l.accounts[redeemable].available);
                        if held < b.redeem_from {
                            continue;
                        }
                        let body = JournalBody::Redemption {
                            currency: crate::ids::CurrencyIx(redeemable as u16),
                            points: held / 100 * 100,
                            partner: None,
                            reserved: None,
                        };
                        (person, body, format!("sim-r{}-{}", m, people[person].id))
                    }
                };
                let mut journal = Journal {
                    external_id: ExternalId::parse(&external).unwrap_or_else(|_| unreachable!()),
                    member: people[person].id.clone(),
                    occurred_at: at,
                    body,
                };
                let (outcome, entries) =
                    match engine.post(&mut people[person], &journal, keep, original) {
                        Ok(done) => done,
                        // Points expired since the balance was read: redeem what is left, if
                        // enough.
                        Err(SimulationError::Refused(JournalError::InsufficientPoints {
                            spendable,
                            ..
                        })) => {
                            let points = spendable / 100 * 100;
                            if points < b.redeem_from.max(1) {
                                continue;
                            }
                            if let JournalBody::Redemption { points: p, .. } = &mut journal.body {
                                *p = points;
                            }
                            engine.post(&mut people[person], &journal, keep, original)?
                        }
                        Err(e) => return Err(e),
                    };
                tally(month, &entries);
                if let Some(refunded) = &outcome.refunded_amount
                    && let Ok(v) = program.money_currency.parse_amount(refunded)
                {
                    month.returned += v.0;
                }
                for award in outcome.awards.iter().filter(|a| a.source != "base") {
                    match month
                        .promotions
                        .iter_mut()
                        .find(|(p, c, _)| *p == award.source && c == award.currency.as_str())
                    {
                        Some(row) => row.2 += award.points,
                        None => month.promotions.push((
                            award.source.to_string(),
                            award.currency.to_string(),
                            award.points,
                        )),
                    }
                }
                month.journals += 1;
                sink(Posted::Journal(&journal));
            }
            // The month's end: expiry, releases and tier assessments that fell due, then
            // what each member holds — in one pass over the members.
            for p in people.iter_mut() {
                let Some(ledger) = p.ledger.as_mut() else {
                    continue;
                };
                month.members += 1;
                if ledger.is_due(until) {
                    let id = engine.id();
                    match process::settle(program, ledger, id, until) {
                        Ok((Some(record), _)) => tally(month, &record.entries),
                        Ok((None, _)) => {}
                        Err(e) => return Err(SimulationError::Processing(e.to_string())),
                    }
                }
                for (c, account) in ledger.accounts.iter().enumerate() {
                    month.outstanding[c] += account.available + account.pending;
                }
                if let Some(standing) = &ledger.tiers {
                    let mut row = 0;
                    for group in &program.tier_groups {
                        let t = standing
                            .status(group.code.as_str())
                            .map_or(0, |s| group.index_of(&s.tier));
                        month.tiers[row + t].2 += 1;
                        row += group.tiers.len();
                    }
                }
            }
            month.buyers += buyers.iter().filter(|b| **b).count() as u32;
        }
    }
    let c = &program.currencies[redeemable];
    for month in &mut report.months {
        month.liability = crate::partners::money(
            month.outstanding[redeemable],
            c.value_per_point,
            program.money_currency.scale(),
        );
        month.promotions.sort();
    }
    Ok(report)
}

/// Where a purchase a later return refers to is kept: the member's number and the
/// purchase's.
fn returnable_key(person: &Person, number: u32) -> u64 {
    (u64::from(person.number) << 32) | u64::from(number)
}

/// Adds entries to the month's figures.
fn tally(month: &mut Month, entries: &[Entry]) {
    for e in entries {
        let c = e.currency.index();
        match e.kind {
            EntryKind::Earn | EntryKind::Adjust if e.amount > 0 => month.issued[c] += e.amount,
            EntryKind::Refund => month.taken_back[c] -= e.amount,
            EntryKind::Redeem => month.redeemed[c] -= e.amount,
            EntryKind::Expire => month.expired[c] -= e.amount,
            EntryKind::Reset => month.reset[c] -= e.amount,
            _ => {}
        }
    }
}
