//! Helpers for the core's tests: programs from YAML, journals from JSON, a book with a
//! clock.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use fidelis_core::book::Book;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument, JournalError};
use fidelis_core::ledger::{EntryKind, MemberLedger};
use fidelis_core::outcome::Outcome;
use fidelis_core::program::{Program, ProgramDocument};

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// A program from YAML; `currencies` is spliced into a Berlin/EUR program with base
/// earning of one point per euro into the first currency.
pub fn program(currencies_yaml: &str) -> Program {
    let yaml = format!(
        "code: test\nname: Test\ntime_zone: Europe/Berlin\nmoney_currency: EUR\nactivity_types: [review]\ncurrencies:\n{currencies_yaml}\nearning:\n  base:\n    - {{currency: points, rate: \"1\"}}\n"
    );
    let doc: ProgramDocument =
        yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Program::compile(&doc, None).unwrap_or_else(|p| panic!("{p:#?}"))
}

/// Points with a rolling expiry of `months`, and the given extra YAML fields.
pub fn points_program(extra: &str) -> Program {
    program(&format!(
        "  - {{code: points, name: Points, kind: redeemable, expiry: {{policy: rolling, months: 24}}{extra}}}"
    ))
}

pub struct Sim {
    pub book: Book,
    pub now: DateTime<Utc>,
    seq: u64,
}

impl Sim {
    pub fn new(program: Program, now: &str) -> Self {
        Self {
            book: Book::new(program),
            now: utc(now),
            seq: 0,
        }
    }

    pub fn enroll(&mut self, member: &str) {
        self.book.enroll(&ExternalId::parse(member).unwrap());
    }

    pub fn enroll_at(&mut self, member: &str, at: &str) {
        self.book
            .enroll_at(&ExternalId::parse(member).unwrap(), utc(at));
    }

    /// Moves the clock to `now` and runs the scheduled settlement there.
    pub fn settle_at(&mut self, now: &str) -> usize {
        self.now = utc(now);
        self.book.settle_all(self.now)
    }

    pub fn at(&mut self, now: &str) -> &mut Self {
        self.now = utc(now);
        self
    }

    pub fn doc(&self, json: serde_json::Value) -> Journal {
        let doc: JournalDocument = serde_json::from_value(json).unwrap();
        Journal::parse(&doc, self.book.program()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Posts a journal document; `occurred_at` defaults to now and `external_id` to a
    /// fresh one.
    pub fn post(&mut self, mut json: serde_json::Value) -> Result<Outcome, JournalError> {
        self.seq += 1;
        let obj = json.as_object_mut().unwrap();
        obj.entry("occurred_at")
            .or_insert_with(|| self.now.to_rfc3339().into());
        obj.entry("external_id")
            .or_insert_with(|| format!("j{}", self.seq).into());
        let journal = self.doc(json);
        self.book.post(&journal, self.now).map(|(o, _)| o)
    }

    pub fn ok(&mut self, json: serde_json::Value) -> Outcome {
        let text = json.to_string();
        self.post(json).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    pub fn ledger(&self, member: &str) -> &MemberLedger {
        self.book
            .ledger(&ExternalId::parse(member).unwrap())
            .unwrap()
    }

    /// (available, pending) of a currency.
    pub fn balance(&self, member: &str, currency: &str) -> (i64, i64) {
        let program = self.book.program();
        let ix = program.currency_ix(currency).unwrap();
        let a = self.ledger(member).account(ix);
        (a.available, a.pending)
    }

    /// Remaining points per bucket of a currency, as (expires_at, remaining), ordered by
    /// credit.
    pub fn buckets(&self, member: &str, currency: &str) -> Vec<(Option<DateTime<Utc>>, i64)> {
        let ix = self.book.program().currency_ix(currency).unwrap();
        let mut buckets: Vec<_> = self
            .ledger(member)
            .buckets
            .iter()
            .filter(|b| b.currency == ix)
            .collect();
        buckets.sort_by_key(|b| (b.credited_at, b.id));
        buckets
            .iter()
            .map(|b| (b.expires_at, b.remaining))
            .collect()
    }

    pub fn entries(&self, member: &str, kind: EntryKind) -> Vec<i64> {
        let id = self.ledger(member).member;
        self.book
            .entries_of(id)
            .filter(|e| e.kind == kind)
            .map(|e| e.amount)
            .collect()
    }
}

pub fn points(outcome: &[fidelis_core::outcome::PointsOf], currency: &str) -> i64 {
    outcome
        .iter()
        .filter(|p| p.currency == currency)
        .map(|p| p.points)
        .sum()
}
