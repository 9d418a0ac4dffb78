//! Fraud rules (PRODUCT.md §10): screening a journal or a transfer before it is processed.
//!
//! A rule's only verdict is *hold*: the journal is kept, with the rule and a reason, for an
//! agent to release (it is then processed as of its original activity) or reject. Nothing
//! here reads a clock or the database: the store loads the member's [`Facts`] and the
//! transfer edges, and passes the instant.
//!
//! Each rule's cost is bounded: velocity and amounts look at the member's last
//! [`RECENT`] journals, a ring search visits at most [`RING_VISITS`] members.

use chrono::{DateTime, Duration, Utc};

use crate::journal::{Journal, JournalBody};

/// How many of a member's latest accruals and redemptions the rules look at.
pub const RECENT: usize = 50;
/// The most members a ring search visits.
pub const RING_VISITS: usize = 200;

/// Which journals a velocity rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Accruals,
    Redemptions,
}

impl Watched {
    pub fn name(self) -> &'static str {
        match self {
            Self::Accruals => "accruals",
            Self::Redemptions => "redemptions",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accruals" => Some(Self::Accruals),
            "redemptions" => Some(Self::Redemptions),
            _ => None,
        }
    }
}

/// One rule of a program's `fraud.rules`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// More than `max` journals of a kind within `within` (the journal included).
    Velocity {
        journals: Watched,
        max: u32,
        within: Duration,
    },
    /// A purchase amount far above the member's own: the modified z-score (Iglewicz and
    /// Hoaglin) of the amount's logarithm against the member's last purchases exceeds
    /// `score`, once the member has `history` purchases.
    UnusualAmount { score: f64, history: u32 },
    /// The journal's attribute `attribute` (a receipt number) was already sent for
    /// another member.
    SharedReceipt { attribute: String },
    /// A redemption within `within` of the member's enrolment or last profile change.
    RedemptionAfterChange { within: Duration },
    /// A transfer that closes a cycle of at most `length` members whose transfers all
    /// happened within `within`.
    TransferRing { length: u32, within: Duration },
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Velocity { .. } => "velocity",
            Self::UnusualAmount { .. } => "unusual_amount",
            Self::SharedReceipt { .. } => "shared_receipt",
            Self::RedemptionAfterChange { .. } => "redemption_after_change",
            Self::TransferRing { .. } => "transfer_ring",
        }
    }
}

/// The rule names a definition may use.
pub const RULES: [&str; 5] = [
    "velocity",
    "unusual_amount",
    "shared_receipt",
    "redemption_after_change",
    "transfer_ring",
];

/// A program's fraud rules (`fraud:` in the definition).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fraud {
    pub rules: Vec<Rule>,
}

impl Fraud {
    /// Whether any rule screens journals (rather than transfers).
    pub fn screens_journals(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !matches!(r, Rule::TransferRing { .. }))
    }

    /// The attribute naming a receipt, when a rule compares receipts.
    pub fn receipt_attribute(&self) -> Option<&str> {
        self.rules.iter().find_map(|r| match r {
            Rule::SharedReceipt { attribute } => Some(attribute.as_str()),
            _ => None,
        })
    }

    /// The ring rule, if the program has one: (length, within).
    pub fn ring(&self) -> Option<(u32, Duration)> {
        self.rules.iter().find_map(|r| match r {
            Rule::TransferRing { length, within } => Some((*length, *within)),
            _ => None,
        })
    }
}

/// One of a member's recent journals, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub kind: Watched,
    pub occurred_at: DateTime<Utc>,
    /// A purchase's amount in minor units (0 for a redemption or an accrual without one).
    pub amount: i64,
}

/// What the store knows of the member when a journal is screened.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The member's last accruals and redemptions (at most [`RECENT`]), oldest first.
    pub recent: &'a [Recent],
    pub enrolled_at: Option<DateTime<Utc>>,
    pub profile_changed_at: Option<DateTime<Utc>>,
    /// Another member for whom the journal's receipt was sent already.
    pub receipt_member: Option<&'a str>,
}

/// Why a journal is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: &'static str,
    pub reason: String,
}

/// What a journal adds to a member's recent journals, if the rules count it.
pub fn recent_of(journal: &Journal) -> Option<Recent> {
    match &journal.body {
        JournalBody::Accrual(a) => Some(Recent {
            kind: Watched::Accruals,
            occurred_at: journal.occurred_at,
            amount: a.amount.map_or(0, |m| m.0),
        }),
        JournalBody::Redemption { .. } => Some(Recent {
            kind: Watched::Redemptions,
            occurred_at: journal.occurred_at,
            amount: 0,
        }),
        _ => None,
    }
}

/// The receipt a journal names in `attribute`, if any (a string or a number).
pub fn receipt<'a>(journal: &'a Journal, attribute: &str) -> Option<std::borrow::Cow<'a, str>> {
    let JournalBody::Accrual(a) = &journal.body else {
        return None;
    };
    match a.attributes.get(attribute)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => {
            Some(std::borrow::Cow::Borrowed(s.trim()))
        }
        serde_json::Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Screens `journal` with the program's rules: the first rule that holds it, if any.
pub fn screen(
    fraud: &Fraud,
    journal: &Journal,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Option<Verdict> {
    let this = recent_of(journal)?;
    for rule in &fraud.rules {
        let verdict = match rule {
            Rule::Velocity {
                journals,
                max,
                within,
            } if *journals == this.kind => velocity(*journals, *max, *within, &this, facts),
            Rule::UnusualAmount { score, history }
                if this.kind == Watched::Accruals && this.amount > 0 =>
            {
                unusual(*score, *history, this.amount, facts)
            }
            Rule::SharedReceipt { .. } => facts.receipt_member.map(|other| Verdict {
                rule: "shared_receipt",
                reason: format!("the same receipt was sent for member {other}"),
            }),
            Rule::RedemptionAfterChange { within } if this.kind == Watched::Redemptions => {
                after_change(*within, facts, now)
            }
            _ => None,
        };
        if verdict.is_some() {
            return verdict;
        }
    }
    None
}

fn velocity(
    kind: Watched,
    max: u32,
    within: Duration,
    this: &Recent,
    facts: &Facts,
) -> Option<Verdict> {
    let since = this.occurred_at - within;
    let count = 1 + facts
        .recent
        .iter()
        .filter(|r| r.kind == kind && r.occurred_at > since && r.occurred_at <= this.occurred_at)
        .count();
    (count > max as usize).then(|| Verdict {
        rule: "velocity",
        reason: format!(
            "{count} {} within {} (at most {max})",
            kind.name(),
            span(within)
        ),
    })
}

/// The smallest spread of log amounts the score divides by: amounts within about 20 % of
/// each other do not make every other amount look extreme.
const MIN_SPREAD: f64 = 0.2;

fn unusual(score: f64, history: u32, amount: i64, facts: &Facts) -> Option<Verdict> {
    let mut logs: Vec<f64> = facts
        .recent
        .iter()
        .filter(|r| r.kind == Watched::Accruals && r.amount > 0)
        .map(|r| (r.amount as f64).ln())
        .collect();
    if logs.len() < history.max(1) as usize {
        return None;
    }
    let median = median_of(&mut logs);
    let mut deviations: Vec<f64> = logs.iter().map(|l| (l - median).abs()).collect();
    let mad = median_of(&mut deviations).max(MIN_SPREAD);
    let z = 0.6745 * ((amount as f64).ln() - median) / mad;
    (z > score).then(|| Verdict {
        rule: "unusual_amount",
        reason: format!(
            "the amount is {:.1} times the member's median purchase (score {z:.1}, above {score})",
            (amount as f64) / median.exp()
        ),
    })
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn after_change(within: Duration, facts: &Facts, now: DateTime<Utc>) -> Option<Verdict> {
    let recent = |at: Option<DateTime<Utc>>| at.filter(|at| now - *at < within);
    if let Some(at) = recent(facts.enrolled_at) {
        return Some(Verdict {
            rule: "redemption_after_change",
            reason: format!(
                "a redemption {} after enrolment (held within {})",
                span(now - at),
                span(within)
            ),
        });
    }
    recent(facts.profile_changed_at).map(|at| Verdict {
        rule: "redemption_after_change",
        reason: format!(
            "a redemption {} after a profile change (held within {})",
            span(now - at),
            span(within)
        ),
    })
}

/// A transfer between two members, as a ring search sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// Whether a transfer `from` → `to` closes a ring of at most `length` members: a path of
/// earlier transfers (all within the window the store read them for) from `to` back to
/// `from` with at most `length - 1` steps. `sent_by` gives a member's transfers; the
/// search visits at most [`RING_VISITS`] members. Returns the ring, `from` first.
pub fn ring<'e>(
    from: &str,
    to: &str,
    length: u32,
    sent_by: impl Fn(&str) -> Vec<&'e Edge>,
) -> Option<Vec<String>> {
    // Breadth first from `to`, remembering how each member was reached.
    let mut reached: Vec<(String, usize)> = vec![(to.to_owned(), usize::MAX)];
    let mut frontier = vec![0usize];
    for _ in 1..length.max(2) {
        let mut next = Vec::new();
        for &i in &frontier {
            let at = reached[i].0.clone();
            for edge in sent_by(&at) {
                if edge.to == from {
                    let mut path = vec![from.to_owned()];
                    let mut k = i;
                    let mut back = vec![];
                    loop {
                        back.push(reached[k].0.clone());
                        if reached[k].1 == usize::MAX {
                            break;
                        }
                        k = reached[k].1;
                    }
                    back.reverse();
                    path.extend(back);
                    return Some(path);
                }
                if reached.len() >= RING_VISITS || reached.iter().any(|(m, _)| *m == edge.to) {
                    continue;
                }
                reached.push((edge.to.clone(), i));
                next.push(reached.len() - 1);
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    None
}

/// A duration as people say it: "90 minutes", "2 hours", "3 days".
pub fn span(d: Duration) -> String {
    let minutes = d.num_minutes();
    if minutes < 120 {
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    } else if minutes < 48 * 60 {
        format!("{} hours", minutes / 60)
    } else {
        format!("{} days", minutes / (24 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("an instant")
    }

    fn accrual(minutes: i64, amount: i64) -> Recent {
        Recent {
            kind: Watched::Accruals,
            occurred_at: at(minutes),
            amount,
        }
    }

    #[test]
    fn velocity_counts_the_window_and_the_journal() {
        let recent = [accrual(0, 100), accrual(10, 100), accrual(20, 100)];
        let facts = Facts {
            recent: &recent,
            ..Facts::default()
        };
        let this = accrual(30, 100);
        // Four within an hour, at most three: held.
        let held = velocity(Watched::Accruals, 3, Duration::hours(1), &this, &facts).expect("held");
        assert!(
            held.reason.starts_with("4 accruals within 60 minutes"),
            "{held:?}"
        );
        // At most four: not held; and the first falls out of a 25-minute window.
        assert!(velocity(Watched::Accruals, 4, Duration::hours(1), &this, &facts).is_none());
        assert!(velocity(Watched::Accruals, 3, Duration::minutes(25), &this, &facts).is_none());
        // Redemptions are not accruals.
        assert!(velocity(Watched::Redemptions, 0, Duration::hours(1), &this, &facts).is_some());
        assert!(velocity(Watched::Redemptions, 1, Duration::hours(1), &this, &facts).is_none());
    }

    #[test]
    fn unusual_amounts_are_far_above_the_members_own() {
        let recent: Vec<Recent> = [1800, 2200, 2000, 2500, 1900, 2100]
            .iter()
            .enumerate()
            .map(|(i, a)| accrual(i as i64, *a))
            .collect();
        let facts = Facts {
            recent: &recent,
            ..Facts::default()
        };
        // 50.00 against a median of 20.50: ordinary. 500.00: held.
        assert!(unusual(5.0, 5, 5000, &facts).is_none());
        let held = unusual(5.0, 5, 50_000, &facts).expect("held");
        assert!(held.reason.contains("24.4 times"), "{held:?}");
        // Too little history: no verdict.
        assert!(unusual(5.0, 7, 50_000, &facts).is_none());
        // Smaller amounts are never unusual.
        assert!(unusual(5.0, 5, 1, &facts).is_none());
        // Identical amounts: the spread has a floor, so a modest rise is not held.
        let same: Vec<Recent> = (0..6).map(|i| accrual(i, 2000)).collect();
        let facts = Facts {
            recent: &same,
            ..Facts::default()
        };
        assert!(unusual(5.0, 5, 2600, &facts).is_none());
        assert!(unusual(5.0, 5, 20_000, &facts).is_some());
        // Huge amounts do not overflow.
        assert!(unusual(5.0, 5, i64::MAX, &facts).is_some());
    }

    #[test]
    fn redemptions_right_after_enrolment_or_a_profile_change() {
        let within = Duration::hours(24);
        let fresh = Facts {
            enrolled_at: Some(at(0)),
            ..Facts::default()
        };
        let held = after_change(within, &fresh, at(60)).expect("held");
        assert!(
            held.reason.contains("60 minutes after enrolment"),
            "{held:?}"
        );
        assert!(after_change(within, &fresh, at(25 * 60)).is_none());
        let changed = Facts {
            enrolled_at: Some(at(-100_000)),
            profile_changed_at: Some(at(0)),
            ..Facts::default()
        };
        let held = after_change(within, &changed, at(180)).expect("held");
        assert!(
            held.reason.contains("3 hours after a profile change"),
            "{held:?}"
        );
    }

    #[test]
    fn rings_are_found_within_their_length() {
        let edges = [
            Edge {
                from: "b".into(),
                to: "c".into(),
            },
            Edge {
                from: "c".into(),
                to: "d".into(),
            },
            Edge {
                from: "d".into(),
                to: "a".into(),
            },
            Edge {
                from: "c".into(),
                to: "x".into(),
            },
        ];
        let sent_by = |m: &str| edges.iter().filter(|e| e.from == m).collect::<Vec<_>>();
        // a → b closes a → b → c → d → a: four members.
        assert_eq!(
            ring("a", "b", 4, sent_by).expect("a ring"),
            vec!["a", "b", "c", "d"]
        );
        assert!(ring("a", "b", 3, sent_by).is_none());
        // x sends nothing: no path back, no ring (but x → b closes x → b → c → x).
        assert!(ring("b", "x", 10, sent_by).is_none());
        assert_eq!(
            ring("x", "b", 3, sent_by).expect("a ring"),
            vec!["x", "b", "c"]
        );
        // A direct pair: d → a, then a → d.
        assert_eq!(ring("a", "d", 2, sent_by).expect("a pair"), vec!["a", "d"]);
    }
}
