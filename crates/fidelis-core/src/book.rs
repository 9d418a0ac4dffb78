//! An in-memory ledger book: the reference shell around [`crate::process`].
//!
//! It does in memory what the store does in a database — keeps members' ledgers and
//! journal records, answers replays, loads what a journal refers to — so the core's
//! rules can be exercised (property tests, the simulator) without a database. The SQL
//! store must behave exactly like it; the store's behaviour suite checks that.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::ids::{ExternalId, JournalId, MemberId};
use crate::journal::{Journal, JournalDocument, JournalError};
use crate::ledger::{Entry, MemberLedger, MemberStatus};
use crate::outcome::Outcome;
use crate::process::{self, JournalIds, JournalRecord, ProcessError, Related};
use crate::program::Program;

/// Members, journals and entries of one program, in memory.
#[derive(Debug, Clone)]
pub struct Book {
    program: Program,
    members: HashMap<ExternalId, MemberLedger>,
    journals: HashMap<JournalId, StoredJournal>,
    by_external_id: HashMap<ExternalId, JournalId>,
    /// Every entry ever written, in order.
    entries: Vec<(MemberId, Entry)>,
    next_id: i64,
    /// Promotion limit counters.
    counters: crate::promotions::Counters,
    /// Every tier change, in order: the audit trail's tier lines.
    tier_changes: Vec<(ExternalId, crate::tiers::TierChange)>,
}

#[derive(Debug, Clone)]
struct StoredJournal {
    record: JournalRecord,
    document: Option<JournalDocument>,
    outcome: Option<Outcome>,
}

impl Book {
    pub fn new(program: Program) -> Self {
        Self {
            program,
            members: HashMap::new(),
            journals: HashMap::new(),
            by_external_id: HashMap::new(),
            entries: Vec::new(),
            next_id: 1,
            counters: crate::promotions::Counters::default(),
            tier_changes: Vec::new(),
        }
    }

    /// Every entry written so far, in order, with its member.
    pub fn entries(&self) -> &[(MemberId, Entry)] {
        &self.entries
    }

    /// Every member's ledger, in no particular order.
    pub fn ledgers(&self) -> impl Iterator<Item = (&ExternalId, &MemberLedger)> {
        self.members.iter()
    }

    /// Every tier change so far, with the member.
    pub fn tier_changes(&self) -> &[(ExternalId, crate::tiers::TierChange)] {
        &self.tier_changes
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Enrolls a member (again: no change) at the Unix epoch; see [`Book::enroll_at`].
    pub fn enroll(&mut self, member: &ExternalId) -> MemberId {
        self.enroll_at(member, DateTime::UNIX_EPOCH)
    }

    /// Enrolls a member at `at` (again: no change); a program with tiers starts the member
    /// at the lowest tier of each group, membership years counting from `at`.
    pub fn enroll_at(&mut self, member: &ExternalId, at: DateTime<Utc>) -> MemberId {
        if let Some(ledger) = self.members.get(member) {
            return ledger.member;
        }
        let id = MemberId(self.next_id());
        let mut ledger = MemberLedger::new(id, MemberStatus::Active, &self.program);
        if !self.program.tier_groups.is_empty() {
            ledger.tiers = Some(crate::tiers::MemberTiers::start(&self.program, at, &[], at));
        }
        self.members.insert(member.clone(), ledger);
        id
    }

    /// Merges member `source` into `survivor` (see [`crate::lifecycle::merge`]).
    pub fn merge(
        &mut self,
        source: &ExternalId,
        survivor: &ExternalId,
        now: DateTime<Utc>,
    ) -> Result<crate::lifecycle::Merged, crate::lifecycle::Refused> {
        let ids = (JournalId(self.next_id()), JournalId(self.next_id()));
        let (Some(mut from), Some(mut to)) = (
            self.members.get(source).cloned(),
            self.members.get(survivor).cloned(),
        ) else {
            return Err(crate::lifecycle::Refused {
                code: "unknown_member",
                detail: "no such member".into(),
            });
        };
        let merged = crate::lifecycle::merge(&self.program, &mut from, &mut to, ids, now)?;
        for change in &merged.tier_changes {
            self.tier_changes.push((survivor.clone(), change.clone()));
        }
        let (a, b) = (from.member, to.member);
        self.store(a, merged.source.clone(), None, None);
        self.store(b, merged.survivor.clone(), None, None);
        self.members.insert(source.clone(), from);
        self.members.insert(survivor.clone(), to);
        Ok(merged)
    }

    /// Transfers points between members (see [`crate::lifecycle::transfer`]), the daily
    /// limit counted from the book's transfer entries.
    pub fn transfer(
        &mut self,
        from: &ExternalId,
        to: &ExternalId,
        currency: crate::ids::CurrencyIx,
        points: i64,
        external_id: ExternalId,
        now: DateTime<Utc>,
    ) -> Result<Outcome, crate::lifecycle::Refused> {
        let unknown = || crate::lifecycle::Refused {
            code: "unknown_member",
            detail: "no such member".into(),
        };
        let mut sender = self.members.get(from).cloned().ok_or_else(unknown)?;
        let mut receiver = self.members.get(to).cloned().ok_or_else(unknown)?;
        let tz = self.program.time_zone;
        let day = crate::calendar::local_date(tz, now);
        let sent_today: i64 = self
            .entries_of(sender.member)
            .filter(|e| {
                e.kind == crate::ledger::EntryKind::Transfer
                    && e.currency == currency
                    && e.amount < 0
                    && crate::calendar::local_date(tz, e.effective_at) == day
            })
            .map(|e| -e.amount)
            .sum();
        let ids = (JournalId(self.next_id()), JournalId(self.next_id()));
        let done = crate::lifecycle::transfer(
            &self.program,
            &mut sender,
            &mut receiver,
            currency,
            points,
            sent_today,
            external_id,
            ids,
            now,
        )?;
        self.store(sender.member, done.sent, None, None);
        self.store(receiver.member, done.received, None, None);
        self.members.insert(from.clone(), sender);
        self.members.insert(to.clone(), receiver);
        Ok(done.outcome)
    }

    /// Gives a member a tier by hand, as an agent does.
    pub fn assign_tier(
        &mut self,
        member: &ExternalId,
        group: &str,
        tier: &str,
        valid_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<crate::tiers::TierChange> {
        let program = &self.program;
        let g = program
            .tier_groups
            .iter()
            .find(|g| g.code.as_str() == group)?;
        let t = g.tiers.iter().position(|t| t.code.as_str() == tier)?;
        let ledger = self.members.get_mut(member)?;
        let change = ledger
            .tiers
            .as_mut()?
            .assign(program, g, t, valid_until, now);
        self.tier_changes.push((member.clone(), change.clone()));
        Some(change)
    }

    /// Records a member joined an opt-in promotion (the key from
    /// [`crate::promotions::joined_key`]), as the store does.
    pub fn join(&mut self, key: &crate::promotions::limits::CounterKey) {
        self.counters.counts.insert(
            key.clone(),
            crate::promotions::limits::Count {
                times: 1,
                points: 0,
            },
        );
    }

    /// Gives a member the profile and enrolment promotion conditions may read.
    pub fn set_facts(&mut self, member: &ExternalId, facts: crate::promotions::MemberFacts) {
        if let Some(ledger) = self.members.get_mut(member) {
            ledger.facts = Some(std::sync::Arc::new(facts));
        }
    }

    pub fn set_status(&mut self, member: &ExternalId, status: MemberStatus) {
        if let Some(ledger) = self.members.get_mut(member) {
            ledger.status = status;
        }
    }

    pub fn ledger(&self, member: &ExternalId) -> Option<&MemberLedger> {
        self.members.get(member)
    }

    /// Every entry written for a member.
    pub fn entries_of(&self, member: MemberId) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |(m, _)| *m == member)
            .map(|(_, e)| e)
    }

    /// Posts a journal at `now`: processes it, or answers the first outcome of a replay.
    /// Returns the outcome and whether it was a replay.
    pub fn post(
        &mut self,
        journal: &Journal,
        now: DateTime<Utc>,
    ) -> Result<(Outcome, bool), JournalError> {
        let document = journal.canonical(&self.program);
        if let Some(id) = self.by_external_id.get(&journal.external_id) {
            let stored = &self.journals[id];
            return match (&stored.document, &stored.outcome) {
                (Some(first), Some(outcome)) if *first == document => Ok((outcome.clone(), true)),
                _ => Err(JournalError::IdempotencyConflict(
                    journal.external_id.to_string(),
                )),
            };
        }
        let Some(mut ledger) = self.members.remove(&journal.member) else {
            return Err(JournalError::UnknownMember(journal.member.to_string()));
        };
        let mut related = self.related(journal);
        related.counters = std::mem::take(&mut self.counters);
        let ids = JournalIds {
            main: JournalId(self.next_id()),
            settlement: JournalId(self.next_id()),
        };
        let result = process::process(&self.program, &mut ledger, journal, &mut related, ids, now);
        let member = ledger.member;
        self.members.insert(journal.member.clone(), ledger);
        self.counters = std::mem::take(&mut related.counters);
        self.put_back(related);
        let processed = match result {
            Ok(p) => p,
            Err(ProcessError::Refused(e)) => return Err(e),
            Err(e) => panic!("the in-memory book holds every bucket: {e}"),
        };
        if let Some(settlement) = processed.settlement {
            self.store(member, settlement, None, None);
        }
        for change in &processed.outcome.tier_changes {
            self.tier_changes
                .push((journal.member.clone(), change.clone()));
        }
        self.by_external_id
            .insert(journal.external_id.clone(), processed.record.id);
        self.store(
            member,
            processed.record,
            Some(document),
            Some(processed.outcome.clone()),
        );
        Ok((processed.outcome, false))
    }

    /// Runs the scheduled settlement (expiry, pending release) for every member as of
    /// `as_of`. Returns the number of settlement journals written.
    pub fn settle_all(&mut self, as_of: DateTime<Utc>) -> usize {
        let mut members: Vec<ExternalId> = self.members.keys().cloned().collect();
        members.sort();
        let mut written = 0;
        for external in members {
            let id = JournalId(self.next_id());
            let Some(ledger) = self.members.get_mut(&external) else {
                continue;
            };
            if !ledger.is_due(as_of) {
                continue;
            }
            let member = ledger.member;
            match process::settle(&self.program, ledger, id, as_of) {
                Ok((record, changes)) => {
                    for change in changes {
                        self.tier_changes.push((external.clone(), change));
                    }
                    if let Some(record) = record {
                        self.store(member, record, None, None);
                        written += 1;
                    }
                }
                Err(e) => panic!("the in-memory book holds every bucket: {e}"),
            }
        }
        written
    }

    fn related(&mut self, journal: &Journal) -> Related {
        let mut related = Related::default();
        let Some(original) = journal.body.original() else {
            return related;
        };
        let Some(id) = self.by_external_id.get(original).copied() else {
            return related;
        };
        let target = self.journals.get(&id).map(|s| s.record.clone());
        if let Some(refunded) = target.as_ref().and_then(|t| t.original) {
            related.target_original = self.journals.get(&refunded).map(|s| s.record.clone());
        }
        related.target = target;
        related
    }

    fn put_back(&mut self, related: Related) {
        for record in [related.target, related.target_original]
            .into_iter()
            .flatten()
        {
            if record.changed
                && let Some(stored) = self.journals.get_mut(&record.id)
            {
                stored.record = JournalRecord {
                    changed: false,
                    ..record
                };
            }
        }
    }

    fn store(
        &mut self,
        member: MemberId,
        record: JournalRecord,
        document: Option<JournalDocument>,
        outcome: Option<Outcome>,
    ) {
        self.entries
            .extend(record.entries.iter().map(|e| (member, e.clone())));
        self.journals.insert(
            record.id,
            StoredJournal {
                record,
                document,
                outcome,
            },
        );
    }
}
