//! Operations on members beyond journals: transfers of points between members, merging
//! a duplicate member into a survivor, and reinstating expired points. Each is pure: the
//! store loads the ledgers (under both members' locks) and writes what comes back.
//!
//! Points keep their validity when they move: a transfer or a merge gives the receiver
//! buckets with the expiry (and, while pending, the release) the points had, so moving
//! points never rejuvenates them and a merge conserves every expiry date.

use chrono::{DateTime, Utc};

use crate::calendar;
use crate::ids::{Code, CurrencyIx, ExternalId, JournalId};
use crate::ledger::{EntryKind, JournalWriter, MemberLedger, MemberStatus, Moved};
use crate::outcome::{Outcome, PointsOf};
use crate::process::{self, JournalRecord, JournalState, RecordKind, RecordStatus};
use crate::program::Program;
use crate::tiers::TierChange;

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    /// Machine-readable: `not_transferable`, `transfer_limit`, `insufficient_points`,
    /// `member_not_active`, `same_member`, `member_in_arrears`, `nothing_to_reinstate`,
    /// `not_reinstatable`, `invalid_points`, `as_of_in_future`.
    pub code: &'static str,
    pub detail: String,
}

/// How far ahead of the clock a job's `as_of` may lie: the clock skew between a scheduler
/// and the server. Anything later is refused by [`jobs_as_of`].
pub const JOBS_CLOCK_SKEW_SECONDS: i64 = 300;

/// Time-driven jobs (expiry, pending release, tier assessment) settle what is due *as of*
/// an instant, and what they settle cannot be undone: expired points do not come back on
/// their own, a reset of status points stays. So they never run ahead of the clock: an
/// `as_of` more than [`JOBS_CLOCK_SKEW_SECONDS`] after `now` is refused (`as_of_in_future`).
/// An `as_of` in the past is fine: it settles what was due then and nothing after.
pub fn jobs_as_of(as_of: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, Refused> {
    if as_of > now + chrono::TimeDelta::seconds(JOBS_CLOCK_SKEW_SECONDS) {
        return Err(refused(
            "as_of_in_future",
            format!(
                "as_of {} is after now ({}): jobs settle what is due and cannot be undone, \
                 so they never run ahead of the clock",
                as_of.to_rfc3339(),
                now.to_rfc3339()
            ),
        ));
    }
    Ok(as_of)
}

fn refused(code: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        code,
        detail: detail.into(),
    }
}

fn record(
    id: JournalId,
    external_id: Option<ExternalId>,
    ledger: &MemberLedger,
    kind: RecordKind,
    w: JournalWriter,
    now: DateTime<Utc>,
) -> JournalRecord {
    JournalRecord {
        id,
        external_id,
        member: ledger.member,
        kind,
        type_name: Code::parse(kind.name()).expect("record kinds are valid codes"),
        occurred_at: now,
        recorded_at: now,
        status: RecordStatus::Processed,
        original: None,
        state: JournalState::None,
        entries: w.entries,
        changed: false,
    }
}

/// A transfer's two journals and the sender's outcome.
#[derive(Debug)]
pub struct Transferred {
    pub sent: JournalRecord,
    pub received: JournalRecord,
    pub outcome: Outcome,
}

/// Moves `points` of `currency` from `from` to `to` at `now`. `sent_today` is what the
/// sender already transferred on `now`'s local day; the currency's daily limit applies
/// to it plus `points`. The points spent first (earliest expiry) arrive with their
/// expiry dates. Refuses, changing nothing, when the currency is not transferable, the
/// limit or the spendable balance would be exceeded, or either member is not active.
#[allow(clippy::too_many_arguments)]
pub fn transfer(
    program: &Program,
    from: &mut MemberLedger,
    to: &mut MemberLedger,
    currency: CurrencyIx,
    points: i64,
    sent_today: i64,
    external_id: ExternalId,
    ids: (JournalId, JournalId),
    now: DateTime<Utc>,
) -> Result<Transferred, Refused> {
    let def = program.currency(currency);
    let Some(limit) = def.transfer_limit else {
        return Err(refused(
            "not_transferable",
            format!("{} cannot be transferred", def.code),
        ));
    };
    if points <= 0 {
        return Err(refused("invalid_points", "points must be positive"));
    }
    if from.member == to.member {
        return Err(refused(
            "same_member",
            "a member cannot transfer to themselves",
        ));
    }
    for ledger in [&*from, &*to] {
        if ledger.status != MemberStatus::Active {
            return Err(refused(
                "member_not_active",
                format!(
                    "a {} member cannot send or receive points",
                    ledger.status.name()
                ),
            ));
        }
    }
    if sent_today.saturating_add(points) > limit {
        return Err(refused(
            "transfer_limit",
            format!(
                "{points} would exceed the daily transfer limit of {limit} {} ({sent_today} sent today)",
                def.code
            ),
        ));
    }
    let spendable = from.spendable(program, currency, now);
    if spendable < points {
        return Err(refused(
            "insufficient_points",
            format!("{spendable} {} can be transferred, not {points}", def.code),
        ));
    }
    let mut out = JournalWriter::new(ids.0);
    from.debit(
        program,
        &mut out,
        currency,
        points,
        now,
        EntryKind::Transfer,
    )
    .map_err(|s| {
        refused(
            "insufficient_points",
            format!("{s} {} can be transferred", def.code),
        )
    })?;
    let mut inn = JournalWriter::new(ids.1);
    for e in &out.entries {
        let moved = e
            .bucket
            .and_then(|id| from.buckets.iter().find(|b| b.id == id))
            .map(|b| Moved {
                credited_at: b.credited_at,
                expires_at: from.effective_expiry(program, b),
                available_at: b.available_at,
                pending: false,
            })
            .unwrap_or(Moved {
                credited_at: now,
                expires_at: None,
                available_at: now,
                pending: false,
            });
        to.receive(
            program,
            &mut inn,
            currency,
            -e.amount,
            &moved,
            EntryKind::Transfer,
            now,
        );
    }
    let mut outcome = Outcome {
        status: "processed".into(),
        external_id: Some(external_id.clone()),
        journal_type: Code::parse("transfer").ok(),
        ..Outcome::default()
    };
    outcome.debited.push(PointsOf {
        currency: def.code.clone(),
        points,
    });
    // Balance-measured tiers follow both balances.
    for (ledger, report) in [(&mut *from, true), (&mut *to, false)] {
        let balances: Vec<i64> = ledger.accounts.iter().map(|a| a.available).collect();
        if let Some(tiers) = ledger.tiers.as_mut() {
            let changes = tiers.follow_balances(program, &balances, now);
            if report {
                outcome.tier_changes.extend(changes);
            }
        }
    }
    outcome.balances = process::balances(program, from);
    Ok(Transferred {
        sent: record(
            ids.0,
            Some(external_id),
            from,
            RecordKind::Transfer,
            out,
            now,
        ),
        received: record(ids.1, None, to, RecordKind::Transfer, inn, now),
        outcome,
    })
}

/// What merging produced.
#[derive(Debug)]
pub struct Merged {
    /// The merged member's journal (every point out) and the survivor's (every point in).
    pub source: JournalRecord,
    pub survivor: JournalRecord,
    /// The survivor's tier changes (it keeps the higher tier of each group).
    pub tier_changes: Vec<TierChange>,
    /// Points moved per currency.
    pub moved: Vec<PointsOf>,
}

/// Merges `source` (a duplicate) into `survivor`: every point of every open bucket moves
/// with its expiry (pending points stay pending until their release), the higher tier of
/// each group is kept, and the source is closed. The total of points is unchanged.
/// Both ledgers must have all open buckets loaded. Refuses a source that owes points
/// (arrears) or a closed member.
pub fn merge(
    program: &Program,
    source: &mut MemberLedger,
    survivor: &mut MemberLedger,
    ids: (JournalId, JournalId),
    now: DateTime<Utc>,
) -> Result<Merged, Refused> {
    if source.member == survivor.member {
        return Err(refused(
            "same_member",
            "a member cannot be merged into itself",
        ));
    }
    for ledger in [&*source, &*survivor] {
        if ledger.status == MemberStatus::Closed {
            return Err(refused(
                "member_not_active",
                "a closed member cannot be merged",
            ));
        }
    }
    if let Some((ix, a)) = program
        .currency_ixs()
        .map(|(ix, _)| (ix, source.account(ix)))
        .find(|(_, a)| a.arrears > 0)
    {
        return Err(refused(
            "member_in_arrears",
            format!(
                "the member merged owes {} {}; settle the arrears first",
                a.arrears,
                program.currency(ix).code
            ),
        ));
    }
    let mut out = JournalWriter::new(ids.0);
    let taken = source.take_all(program, &mut out, EntryKind::Merge, now);
    let mut inn = JournalWriter::new(ids.1);
    let mut moved: Vec<PointsOf> = Vec::new();
    for (currency, points, validity) in &taken {
        survivor.receive(
            program,
            &mut inn,
            *currency,
            *points,
            validity,
            EntryKind::Merge,
            now,
        );
        Outcome::add(&mut moved, &program.currency(*currency).code, *points);
    }
    let mut tier_changes = match (survivor.tiers.as_mut(), source.tiers.as_ref()) {
        (Some(ours), Some(theirs)) => ours.absorb(program, theirs, now),
        _ => Vec::new(),
    };
    let balances: Vec<i64> = survivor.accounts.iter().map(|a| a.available).collect();
    if let Some(tiers) = survivor.tiers.as_mut() {
        tier_changes.extend(tiers.follow_balances(program, &balances, now));
    }
    source.status = MemberStatus::Closed;
    Ok(Merged {
        source: record(ids.0, None, source, RecordKind::Merge, out, now),
        survivor: record(ids.1, None, survivor, RecordKind::Merge, inn, now),
        tier_changes,
        moved,
    })
}

/// A group's share of an accrual: the member's journal giving it and the group's
/// receiving it, and the points per currency.
#[derive(Debug)]
pub struct Pooled {
    pub given: JournalRecord,
    pub received: JournalRecord,
    pub points: Vec<PointsOf>,
}

/// Moves `share_percent` of the redeemable points an accrual (`earned`: its record's
/// entries) credited to `member` into `group`'s ledger, rounded down per credit, each with
/// its validity (pending points stay pending). `None` when nothing is to move.
pub fn pool(
    program: &Program,
    member: &mut MemberLedger,
    group: &mut MemberLedger,
    earned: &[crate::ledger::Entry],
    share_percent: u32,
    ids: (JournalId, JournalId),
    now: DateTime<Utc>,
) -> Option<Pooled> {
    let mut out = JournalWriter::new(ids.0);
    let mut inn = JournalWriter::new(ids.1);
    let mut points: Vec<PointsOf> = Vec::new();
    for e in earned {
        let def = program.currency(e.currency);
        if e.kind != EntryKind::Earn
            || e.amount <= 0
            || def.kind != crate::program::CurrencyKind::Redeemable
        {
            continue;
        }
        let Some(bucket) = e.bucket else { continue };
        let share = e.amount.saturating_mul(i64::from(share_percent)) / 100;
        if share <= 0 {
            continue;
        }
        if let Some((taken, moved)) = member.take_share(
            program,
            &mut out,
            e.currency,
            bucket,
            share,
            EntryKind::Pool,
            now,
        ) {
            group.receive(
                program,
                &mut inn,
                e.currency,
                taken,
                &moved,
                EntryKind::Pool,
                now,
            );
            Outcome::add(&mut points, &def.code, taken);
        }
    }
    if points.is_empty() {
        return None;
    }
    Some(Pooled {
        given: record(ids.0, None, member, RecordKind::Pool, out, now),
        received: record(ids.1, None, group, RecordKind::Pool, inn, now),
        points,
    })
}

/// Points that expired: the expiry entry (by its journal and sequence), how many, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub journal: i64,
    pub seq: i64,
    pub points: i64,
    pub at: DateTime<Utc>,
}

/// The earliest expiry instant reinstatement may reach back to at `now`: the start of the
/// local day `days` days ago (that whole day is included).
pub fn reinstate_cutoff(program: &Program, days: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = calendar::local_date(program.time_zone, now);
    let first = today - chrono::Days::new(u64::from(days));
    calendar::start_of_day(program.time_zone, first)
}

/// Reinstates the points of `currency` that expired within the currency's window
/// (`expired`: expiries not reinstated before). They come back as a new bucket valid by
/// the currency's policy from `now`. Returns the journal and the expiries it reinstated.
pub fn reinstate(
    program: &Program,
    ledger: &mut MemberLedger,
    currency: CurrencyIx,
    expired: &[Expired],
    external_id: ExternalId,
    id: JournalId,
    now: DateTime<Utc>,
) -> Result<(JournalRecord, Vec<Expired>, Outcome), Refused> {
    let def = program.currency(currency);
    let Some(days) = def.reinstate_within_days else {
        return Err(refused(
            "not_reinstatable",
            format!("expired {} cannot be reinstated", def.code),
        ));
    };
    if ledger.status == MemberStatus::Closed {
        return Err(refused(
            "member_not_active",
            "a closed member cannot be given points",
        ));
    }
    let cutoff = reinstate_cutoff(program, days, now);
    let within: Vec<Expired> = expired
        .iter()
        .copied()
        .filter(|e| e.at >= cutoff && e.at <= now && e.points > 0)
        .collect();
    let points: i64 = within.iter().map(|e| e.points).sum();
    if points == 0 {
        return Err(refused(
            "nothing_to_reinstate",
            format!(
                "no {} expired since {} (the last {days} days) that was not reinstated already",
                def.code,
                calendar::local_date(program.time_zone, cutoff)
            ),
        ));
    }
    let mut w = JournalWriter::new(id);
    // For an inactivity currency the whole balance expires at one deadline: the one that
    // expired these points. The reinstatement moves it, or they would expire again at once.
    ledger.note_activity_in(program, currency, now);
    ledger.credit_now(program, &mut w, currency, points, now, EntryKind::Reinstate);
    let mut outcome = Outcome {
        status: "processed".into(),
        external_id: Some(external_id.clone()),
        journal_type: Code::parse("reinstatement").ok(),
        ..Outcome::default()
    };
    outcome.awards.push(crate::outcome::Award {
        source: "reinstatement".into(),
        currency: def.code.clone(),
        points,
    });
    outcome.balances = process::balances(program, ledger);
    Ok((
        record(
            id,
            Some(external_id),
            ledger,
            RecordKind::Reinstatement,
            w,
            now,
        ),
        within,
        outcome,
    ))
}

/// Points of one currency brought from another system with their own validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningPoints {
    pub currency: CurrencyIx,
    pub points: i64,
    /// When they were earned (their bucket's credit instant).
    pub earned_at: DateTime<Utc>,
    /// When they expire; by the currency's policy from `earned_at` when not given.
    pub expires_at: Option<DateTime<Utc>>,
    /// When pending points become available (`None`: available now).
    pub available_at: Option<DateTime<Utc>>,
}

/// A tier held in another system: since when, until when, and the measure of the current
/// period (or window) so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningTier {
    pub group: usize,
    pub tier: usize,
    pub since: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    pub progress: i64,
}

/// Brings a member's state from another system as an `opening` journal: each balance as a
/// bucket with its own instants (expiry and tier assessment then run on them as on any
/// other points), and each tier with its dates and progress. The caller makes sure the
/// member has no ledger entries yet.
pub fn open(
    program: &Program,
    ledger: &mut MemberLedger,
    opening: &Opening,
    counters: &mut crate::promotions::Counters,
    external_id: ExternalId,
    id: JournalId,
    now: DateTime<Utc>,
) -> Result<(JournalRecord, Outcome), Refused> {
    let (points, tiers) = (&opening.points, &opening.tiers);
    if ledger.status == MemberStatus::Closed {
        return Err(refused(
            "member_not_active",
            "a closed member cannot be opened",
        ));
    }
    let tz = program.time_zone;
    for (i, p) in points.iter().enumerate() {
        let at = |field: &str, detail: &str| {
            refused("invalid_opening", format!("balances[{i}].{field} {detail}"))
        };
        if !(1..=crate::journal::MAX_POINTS).contains(&p.points) {
            return Err(at(
                "points",
                &format!("must be 1 to {}", crate::journal::MAX_POINTS),
            ));
        }
        if p.earned_at > now || p.earned_at < program.starts_at {
            return Err(at(
                "earned_at",
                "must be in the past, not before the program began",
            ));
        }
        let expires = p.expires_at.or_else(|| {
            program
                .currency(p.currency)
                .expiry
                .bucket_expiry(tz, p.earned_at)
        });
        if expires.is_some_and(|e| e <= now) {
            return Err(at("expires_at", "is past: expired points are not opened"));
        }
        if p.available_at.is_some_and(|a| a < p.earned_at) {
            return Err(at("available_at", "is before earned_at"));
        }
    }
    for t in tiers {
        if t.group >= program.tier_groups.len()
            || t.tier >= program.tier_groups[t.group].tiers.len()
            || t.since > now
            || t.progress < 0
        {
            return Err(refused(
                "invalid_opening",
                "a tier names no tier of the group, starts in the future or has negative progress",
            ));
        }
    }
    let mut w = JournalWriter::new(id);
    let mut outcome = Outcome {
        status: "processed".into(),
        external_id: Some(external_id.clone()),
        journal_type: Code::parse("opening").ok(),
        ..Outcome::default()
    };
    for p in points {
        let expires_at = p.expires_at.or_else(|| {
            program
                .currency(p.currency)
                .expiry
                .bucket_expiry(tz, p.earned_at)
        });
        let available_at = p.available_at.unwrap_or(p.earned_at);
        let moved = crate::ledger::Moved {
            credited_at: p.earned_at,
            expires_at,
            available_at,
            pending: available_at > now,
        };
        ledger.receive(
            program,
            &mut w,
            p.currency,
            p.points,
            &moved,
            EntryKind::Opening,
            now,
        );
        // An inactivity window runs from the latest points earned.
        ledger.note_activity_in(program, p.currency, p.earned_at);
        outcome.awards.push(crate::outcome::Award {
            source: "opening".into(),
            currency: program.currency(p.currency).code.clone(),
            points: p.points,
        });
    }
    if let Some(standing) = ledger.tiers.as_mut() {
        for t in tiers {
            outcome.tier_changes.push(standing.open(
                program,
                t.group,
                t.tier,
                t.since,
                t.valid_until,
                t.progress,
                now,
            ));
        }
    }
    // Cumulative promotions' progress, counted in the current period.
    for (ix, value) in &opening.progress {
        let promotion = &program.promotions[*ix];
        if let Some(cumulative) = &promotion.cumulative {
            let key = cumulative.key(&promotion.code, ledger.member, tz, now);
            counters.add(&key, 0, *value);
        }
    }
    outcome.balances = process::balances(program, ledger);
    let mut record = record(id, Some(external_id), ledger, RecordKind::Opening, w, now);
    record.type_name = Code::parse("opening").expect("a valid code");
    Ok((record, outcome))
}

/// One member's state as another system holds it (a line of `fidelis members import`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningDocument {
    pub member: String,
    /// For a member not enrolled yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balances: Vec<OpeningBalanceDocument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<OpeningTierDocument>,
    /// Cumulative promotions' progress: a count, or money (`"120.00"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<OpeningProgressDocument>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningBalanceDocument {
    pub currency: String,
    pub points: i64,
    pub earned_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Pending points: when they become available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningTierDocument {
    pub group: String,
    pub tier: String,
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// The measure so far in the current period (points, minor units of money, or
    /// activities).
    #[serde(default)]
    pub progress: i64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningProgressDocument {
    pub promotion: String,
    pub progress: String,
}

/// An opening document checked against the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub points: Vec<OpeningPoints>,
    pub tiers: Vec<OpeningTier>,
    /// (promotion index, progress) of cumulative promotions.
    pub progress: Vec<(usize, i64)>,
}

impl OpeningDocument {
    /// Checks every field against the program: what is refused names its place.
    pub fn parse(&self, program: &Program) -> Result<Opening, Refused> {
        let bad = |at: String, detail: &str| refused("invalid_opening", format!("{at} {detail}"));
        let instant = |at: String, raw: &str| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad(at, "is not an RFC 3339 instant"))
        };
        let mut out = Opening {
            points: Vec::new(),
            tiers: Vec::new(),
            progress: Vec::new(),
        };
        for (i, b) in self.balances.iter().enumerate() {
            let currency = program.currency_ix(&b.currency).ok_or_else(|| {
                bad(
                    format!("balances[{i}].currency"),
                    "is not a currency of the program",
                )
            })?;
            out.points.push(OpeningPoints {
                currency,
                points: b.points,
                earned_at: instant(format!("balances[{i}].earned_at"), &b.earned_at)?,
                expires_at: b
                    .expires_at
                    .as_deref()
                    .map(|e| instant(format!("balances[{i}].expires_at"), e))
                    .transpose()?,
                available_at: b
                    .available_at
                    .as_deref()
                    .map(|a| instant(format!("balances[{i}].available_at"), a))
                    .transpose()?,
            });
        }
        for (i, t) in self.tiers.iter().enumerate() {
            let group = program
                .tier_groups
                .iter()
                .position(|g| g.code.as_str() == t.group)
                .ok_or_else(|| {
                    bad(
                        format!("tiers[{i}].group"),
                        "is not a tier group of the program",
                    )
                })?;
            let tier = program.tier_groups[group]
                .tiers
                .iter()
                .position(|x| x.code.as_str() == t.tier)
                .ok_or_else(|| bad(format!("tiers[{i}].tier"), "is not a tier of the group"))?;
            out.tiers.push(OpeningTier {
                group,
                tier,
                since: instant(format!("tiers[{i}].since"), &t.since)?,
                valid_until: t
                    .valid_until
                    .as_deref()
                    .map(|v| instant(format!("tiers[{i}].valid_until"), v))
                    .transpose()?,
                progress: t.progress,
            });
        }
        for (i, p) in self.promotions.iter().enumerate() {
            let at = format!("promotions[{i}]");
            let (ix, promotion) = program
                .promotions
                .iter()
                .enumerate()
                .find(|(_, x)| x.code.as_str() == p.promotion)
                .ok_or_else(|| {
                    bad(
                        format!("{at}.promotion"),
                        "is not a promotion of the program",
                    )
                })?;
            let Some(cumulative) = &promotion.cumulative else {
                return Err(bad(
                    format!("{at}.promotion"),
                    "is not a cumulative promotion",
                ));
            };
            let value = match cumulative.measure {
                crate::promotions::Measure::Count | crate::promotions::Measure::Quantity => {
                    p.progress.trim().parse::<i64>().ok()
                }
                crate::promotions::Measure::Amount => program
                    .money_currency
                    .parse_amount(p.progress.trim())
                    .ok()
                    .map(|m| m.0),
            }
            .filter(|v| *v >= 0)
            .ok_or_else(|| {
                bad(
                    format!("{at}.progress"),
                    "is not a count or an amount of money",
                )
            })?;
            out.progress.push((ix, value));
        }
        Ok(out)
    }
}
