//! The points ledger of one member: accounts, buckets and append-only entries.
//!
//! # Model
//! - Every credit opens a **bucket**: points of one currency with the instant they were
//!   credited, the instant they expire, and, while they are pending, the instant they
//!   become available. A bucket is named by the entry that opened it.
//! - Every change of a balance is an **entry**: a signed amount of one currency, in one
//!   **pool** (available or pending), on one bucket — or on no bucket, which is the
//!   account's **arrears** (points spent or taken back beyond what the buckets held).
//! - An **account** (one per member and currency) caches the sums: `available` is the sum
//!   of entries in the available pool, `pending` of those in the pending pool.
//!
//! # Invariants (checked by [`MemberLedger::check`] and the property tests)
//! - `bucket.remaining` = the sum of the bucket's entries, and `0 <= remaining <= credited`.
//! - `account.available` = Σ remaining of its available buckets + `account.pool` −
//!   `account.arrears`; `account.pending` = Σ remaining of its pending buckets.
//! - A currency whose points never expire and are never pending keeps them in the
//!   account's **pool** instead of buckets: they are all alike, and a bucket per credit
//!   would only cost a write. Entries moving the pool name the bucket [`pool_id`].
//! - `account.arrears >= 0`, and arrears exist only while no available bucket and no pool
//!   holds points (new points pay arrears back first).
//! - `account.available >= currency.floor` after any redemption.
//! - A point is spendable at `t` only if `credited_at <= t < expires_at` and it is not
//!   pending.

mod ops;
mod settle;

use chrono::{DateTime, Utc};

pub use ops::{ClawBack, JournalWriter, Moved};
pub use settle::Settled;

use crate::ids::{BucketId, CurrencyIx, EntryKey, MemberId};
use crate::program::{ExpiryPolicy, Program};

/// The bucket id entries name when they move an account's pool. Journal ids start at 1,
/// so journal 0 is free to mean "no journal's bucket".
pub fn pool_id(currency: CurrencyIx) -> BucketId {
    EntryKey {
        journal: crate::ids::JournalId(0),
        seq: u32::from(currency.0),
    }
}

/// Where an entry's points sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    Available,
    Pending,
}

impl Pool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Pending => "pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "pending" => Some(Self::Pending),
            _ => None,
        }
    }
}

/// Why an entry was written: the ledger's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Points earned by an accrual.
    Earn,
    /// Points spent.
    Redeem,
    /// Points taken back by a refund.
    Refund,
    /// A cancellation taking back or giving back what a journal did.
    Cancel,
    /// A manual correction.
    Adjust,
    /// Points that reached their expiry.
    Expire,
    /// Pending points becoming available (a pair: out of pending, into available).
    Release,
    /// A qualifying balance reset at the end of a tier qualification period.
    Reset,
    /// Points moved between members by a transfer (out of one, into the other).
    Transfer,
    /// Points moved from a merged member to the survivor.
    Merge,
    /// Expired points given back by an agent.
    Reinstate,
    /// A member's share of earned points moved to their group (household).
    Pool,
    /// An opening balance brought from another system.
    Opening,
    /// New points paying back arrears (a pair: out of a bucket, into the arrears).
    ArrearsRecovery,
    /// Points reserved for an order (negative), and their return when the hold ends
    /// (positive: by a release, or by a capture that turns them into a redemption).
    Hold,
}

impl EntryKind {
    pub const ALL: [Self; 15] = [
        Self::Earn,
        Self::Redeem,
        Self::Refund,
        Self::Cancel,
        Self::Adjust,
        Self::Expire,
        Self::Release,
        Self::ArrearsRecovery,
        Self::Reset,
        Self::Transfer,
        Self::Merge,
        Self::Reinstate,
        Self::Pool,
        Self::Opening,
        Self::Hold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Redeem => "redeem",
            Self::Refund => "refund",
            Self::Cancel => "cancel",
            Self::Adjust => "adjust",
            Self::Expire => "expire",
            Self::Release => "release",
            Self::ArrearsRecovery => "arrears_recovery",
            Self::Reset => "reset",
            Self::Transfer => "transfer",
            Self::Merge => "merge",
            Self::Reinstate => "reinstate",
            Self::Pool => "pool",
            Self::Opening => "opening",
            Self::Hold => "hold",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One append-only ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: EntryKey,
    pub currency: CurrencyIx,
    pub kind: EntryKind,
    pub pool: Pool,
    /// The bucket moved; `None` for the account's arrears.
    pub bucket: Option<BucketId>,
    pub amount: i64,
    /// When the change took effect: the activity date of an accrual, the expiry instant
    /// of an expiry, the processing instant otherwise.
    pub effective_at: DateTime<Utc>,
}

/// Points of one currency credited together, with their own validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub id: BucketId,
    pub currency: CurrencyIx,
    pub credited_at: DateTime<Utc>,
    /// `None`: never expires by date (policy `never` or `inactivity`).
    pub expires_at: Option<DateTime<Utc>>,
    /// When pending points become available (`credited_at` when never pending).
    pub available_at: DateTime<Utc>,
    pub pending: bool,
    /// Everything ever credited to the bucket (cancellations of debits give points back
    /// to the bucket they came from, so this only grows by top-ups of its own journal).
    pub credited: i64,
    pub remaining: i64,
    /// Points that left this bucket by expiry and that no refund or cancellation of its
    /// journal has accounted for yet: a later reversal of the journal counts these as
    /// already gone instead of taking other points.
    pub expired_unclaimed: i64,
    /// Written by this processing; the store persists changed buckets.
    pub changed: bool,
}

impl Bucket {
    pub fn pool(&self) -> Pool {
        if self.pending {
            Pool::Pending
        } else {
            Pool::Available
        }
    }
}

/// A member's balances in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Spendable points, minus arrears (negative while in arrears).
    pub available: i64,
    pub pending: i64,
    /// Points owed: spent or taken back beyond what the buckets held.
    pub arrears: i64,
    /// Points held without a bucket: those of a currency that never expires and is never
    /// pending, where all points are alike (part of `available`).
    pub pool: i64,
    /// The last accrual or redemption (drives inactivity expiry).
    pub last_activity_at: Option<DateTime<Utc>>,
    /// No expiry or release happens before this instant; `None` when nothing is
    /// scheduled. May be early (then settling finds nothing and recomputes it), never late.
    pub next_transition_at: Option<DateTime<Utc>>,
    pub changed: bool,
}

impl Account {
    fn note_transition(&mut self, at: Option<DateTime<Utc>>) {
        if let Some(at) = at
            && self.next_transition_at.is_none_or(|n| at < n)
        {
            self.next_transition_at = Some(at);
        }
    }

    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.next_transition_at.is_some_and(|t| t <= now)
    }
}

/// Whether a member may earn and spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    Active,
    /// No earning or burning; journals are refused with a reason.
    Suspended,
    Closed,
}

impl MemberStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// Everything the core needs of one member to process a journal.
///
/// The store loads the accounts always and the buckets only when
/// [`MemberLedger::needs_buckets`] says so: most accruals touch no existing bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLedger {
    pub member: MemberId,
    pub status: MemberStatus,
    /// One per program currency, indexed by [`CurrencyIx`].
    pub accounts: Vec<Account>,
    /// The member's open buckets (and any closed ones a cancellation refers to) when
    /// `buckets_loaded`; otherwise only buckets opened since loading.
    pub buckets: Vec<Bucket>,
    pub buckets_loaded: bool,
    /// Entries written since the ledger was loaded, in order.
    pub new_entries: Vec<Entry>,
    /// What promotion conditions may read about the member beyond balances (profile,
    /// enrolment); loaded only for programs whose conditions read them.
    pub facts: Option<std::sync::Arc<crate::promotions::MemberFacts>>,
    /// The member's standing in the program's tier groups; `None` for a program without
    /// tiers (or in tests that do not use them).
    pub tiers: Option<crate::tiers::MemberTiers>,
    /// When the member enrolled: accruals dated before it (less the program's
    /// `days_before_enrolment`) are refused. `None`: not checked.
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Benefits promotions granted the member for a period: loaded only for programs
    /// whose promotions read benefits ([`Program::reads_granted_benefits`]), and extended by the
    /// journals processed since, so a later journal of the same batch sees a grant.
    pub granted: Vec<crate::promotions::GrantedBenefit>,
}

impl MemberLedger {
    /// A ledger with zero balances, as for a member who never earned.
    pub fn new(member: MemberId, status: MemberStatus, program: &Program) -> Self {
        Self {
            member,
            status,
            accounts: vec![Account::default(); program.currencies.len()],
            buckets: Vec::new(),
            buckets_loaded: true,
            new_entries: Vec::new(),
            facts: None,
            tiers: None,
            enrolled_at: None,
            granted: Vec::new(),
        }
    }

    pub fn account(&self, currency: CurrencyIx) -> &Account {
        &self.accounts[currency.index()]
    }

    /// Whether any expiry, release or tier assessment is due at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.accounts.iter().any(|a| a.is_due(now))
            || self.tiers.as_ref().is_some_and(|t| t.is_due(now))
    }

    /// The tier held in each of the program's tier groups (empty without a standing).
    pub fn tier_indexes(&self, program: &Program) -> Vec<usize> {
        self.tiers
            .as_ref()
            .map(|t| t.current(program))
            .unwrap_or_default()
    }

    /// The instant a bucket's points stop being spendable: its own expiry, or its
    /// account's inactivity deadline.
    pub fn effective_expiry(&self, program: &Program, bucket: &Bucket) -> Option<DateTime<Utc>> {
        let currency = program.currency(bucket.currency);
        match currency.expiry {
            // The window, extended as the member's bucket expiries are (the program's
            // extension and the longest of the tiers held).
            ExpiryPolicy::Inactivity { .. } => self
                .account(bucket.currency)
                .last_activity_at
                .and_then(|t| currency.expiry.inactivity_deadline(program.time_zone, t))
                .map(|d| {
                    let extensions = program.expiry_extensions(self.tiers.as_ref());
                    crate::tiers::extend_expiry(program.time_zone, d, &extensions)
                }),
            _ => bucket.expires_at,
        }
    }

    /// Checks the invariants of the module documentation against the loaded buckets.
    /// Only meaningful when all open buckets are loaded.
    pub fn check(&self, program: &Program) -> Result<(), String> {
        for (ix, account) in program.currency_ixs().map(|(ix, _)| (ix, self.account(ix))) {
            let code = &program.currency(ix).code;
            let (mut available, mut pending) = (0i64, 0i64);
            for b in self.buckets.iter().filter(|b| b.currency == ix) {
                if b.remaining < 0 || b.remaining > b.credited {
                    return Err(format!(
                        "{code}: bucket {:?} holds {} of {}",
                        b.id, b.remaining, b.credited
                    ));
                }
                if b.pending {
                    pending += b.remaining;
                } else {
                    available += b.remaining;
                }
            }
            if account.pool < 0 {
                return Err(format!("{code}: negative pool {}", account.pool));
            }
            available += account.pool;
            if account.arrears < 0 {
                return Err(format!("{code}: negative arrears {}", account.arrears));
            }
            if account.arrears > 0 && available > 0 {
                return Err(format!(
                    "{code}: arrears {} beside {available} available",
                    account.arrears
                ));
            }
            if account.available != available - account.arrears || account.pending != pending {
                return Err(format!(
                    "{code}: account says {}/{} (available/pending), buckets {}/{} with arrears {}",
                    account.available, account.pending, available, pending, account.arrears
                ));
            }
        }
        Ok(())
    }
}
