//! Ledger operations: credit, debit, claw back, restore. Each writes its entries through a
//! [`JournalWriter`] and keeps accounts and buckets equal to the sum of the entries.
//!
//! Operations that can fail check first and change nothing when they refuse.

use chrono::{DateTime, Utc};

use super::{Bucket, Entry, EntryKind, MemberLedger, Pool, pool_id};
use crate::calendar;
use crate::ids::{BucketId, CurrencyIx, EntryKey, JournalId};
use crate::program::{Program, ReturnPolicy};

/// Collects the entries one journal writes, numbering them.
#[derive(Debug)]
pub struct JournalWriter {
    pub journal: JournalId,
    pub entries: Vec<Entry>,
}

impl JournalWriter {
    pub fn new(journal: JournalId) -> Self {
        Self {
            journal,
            entries: Vec::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        currency: CurrencyIx,
        kind: EntryKind,
        pool: Pool,
        bucket: Option<BucketId>,
        amount: i64,
        effective_at: DateTime<Utc>,
    ) -> EntryKey {
        debug_assert!(amount != 0, "an entry moves points");
        let key = EntryKey {
            journal: self.journal,
            seq: self.entries.len() as u32,
        };
        self.entries.push(Entry {
            key,
            currency,
            kind,
            pool,
            bucket,
            amount,
            effective_at,
        });
        key
    }
}

/// The validity points keep when they move to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub credited_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub available_at: DateTime<Utc>,
    pub pending: bool,
}

/// What a claw-back took, what had expired already, and what it could not take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClawBack {
    pub taken: i64,
    pub already_expired: i64,
    pub unrecovered: i64,
}

/// Where spendable points are: a bucket (by index), or the account's pool of points
/// that never expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Bucket(usize),
    Pool,
}

impl MemberLedger {
    fn apply(&mut self, currency: CurrencyIx, pool: Pool, amount: i64) {
        let account = &mut self.accounts[currency.index()];
        match pool {
            Pool::Available => account.available += amount,
            Pool::Pending => account.pending += amount,
        }
        account.changed = true;
    }

    /// Moves `amount` (signed) on the bucket at `idx`, in the bucket's current pool.
    pub(super) fn move_bucket(
        &mut self,
        w: &mut JournalWriter,
        idx: usize,
        kind: EntryKind,
        amount: i64,
        at: DateTime<Utc>,
    ) {
        let bucket = &mut self.buckets[idx];
        bucket.remaining += amount;
        bucket.changed = true;
        debug_assert!(bucket.remaining >= 0 && bucket.remaining <= bucket.credited);
        let (currency, pool, id) = (bucket.currency, bucket.pool(), bucket.id);
        w.push(currency, kind, pool, Some(id), amount, at);
        self.apply(currency, pool, amount);
    }

    /// Moves `amount` (signed) on the account's pool.
    fn move_pool(
        &mut self,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        kind: EntryKind,
        amount: i64,
        at: DateTime<Utc>,
    ) {
        w.push(
            currency,
            kind,
            Pool::Available,
            Some(pool_id(currency)),
            amount,
            at,
        );
        self.apply(currency, Pool::Available, amount);
        self.accounts[currency.index()].pool += amount;
        debug_assert!(self.accounts[currency.index()].pool >= 0);
    }

    fn remaining(&self, source: Source, currency: CurrencyIx) -> i64 {
        match source {
            Source::Bucket(idx) => self.buckets[idx].remaining,
            Source::Pool => self.account(currency).pool,
        }
    }

    fn take(
        &mut self,
        w: &mut JournalWriter,
        source: Source,
        currency: CurrencyIx,
        kind: EntryKind,
        amount: i64,
        at: DateTime<Utc>,
    ) {
        match source {
            Source::Bucket(idx) => self.move_bucket(w, idx, kind, amount, at),
            Source::Pool => self.move_pool(w, currency, kind, amount, at),
        }
    }

    /// Moves `amount` (signed) on the account's arrears: negative to owe more.
    fn move_arrears(
        &mut self,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        kind: EntryKind,
        amount: i64,
        at: DateTime<Utc>,
    ) {
        w.push(currency, kind, Pool::Available, None, amount, at);
        self.apply(currency, Pool::Available, amount);
        self.accounts[currency.index()].arrears -= amount;
        debug_assert!(self.accounts[currency.index()].arrears >= 0);
    }

    pub(crate) fn bucket_index(&self, id: BucketId) -> Option<usize> {
        self.buckets.iter().position(|b| b.id == id)
    }

    /// Credits `points` into a new bucket whose validity follows the currency's policy (or
    /// into the account's pool, for a currency whose points never expire and are never
    /// pending), then pays back arrears from them. Returns the bucket.
    pub fn credit(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        credited_at: DateTime<Utc>,
        kind: EntryKind,
    ) -> BucketId {
        self.credit_with(program, w, currency, points, credited_at, kind, true)
    }

    /// Credits points that do not wait out the currency's return window: an agent's
    /// goodwill adjustment or reinstated points are nothing a customer can send back.
    pub fn credit_now(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        credited_at: DateTime<Utc>,
        kind: EntryKind,
    ) -> BucketId {
        self.credit_with(program, w, currency, points, credited_at, kind, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn credit_with(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        credited_at: DateTime<Utc>,
        kind: EntryKind,
        return_window: bool,
    ) -> BucketId {
        debug_assert!(points > 0);
        let def = program.currency(currency);
        if def.is_fungible() {
            self.move_pool(w, currency, kind, points, credited_at);
            self.recover_arrears_from_pool(w, currency, credited_at);
            return pool_id(currency);
        }
        let tz = program.time_zone;
        let extensions = program.expiry_extensions(self.tiers.as_ref());
        let expires_at = def
            .expiry
            .bucket_expiry(tz, credited_at)
            .map(|e| crate::tiers::extend_expiry(tz, e, &extensions));
        let pending = return_window && def.pending_days > 0;
        let available_at = if pending {
            calendar::add_days(tz, credited_at, def.pending_days)
        } else {
            credited_at
        };
        let validity = Moved {
            credited_at,
            expires_at,
            available_at,
            pending,
        };
        self.open_bucket(w, currency, points, &validity, kind, credited_at)
    }

    /// Opens a bucket of `points` with the given validity (an entry at `at`), notes its
    /// transitions on the account, and pays back arrears from it if it is available.
    fn open_bucket(
        &mut self,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        validity: &Moved,
        kind: EntryKind,
        at: DateTime<Utc>,
    ) -> BucketId {
        let pool = if validity.pending {
            Pool::Pending
        } else {
            Pool::Available
        };
        let id = EntryKey {
            journal: w.journal,
            seq: w.entries.len() as u32,
        };
        w.push(currency, kind, pool, Some(id), points, at);
        self.apply(currency, pool, points);
        self.buckets.push(Bucket {
            id,
            currency,
            credited_at: validity.credited_at,
            expires_at: validity.expires_at,
            available_at: validity.available_at,
            pending: validity.pending,
            credited: points,
            remaining: points,
            expired_unclaimed: 0,
            changed: true,
        });
        let idx = self.buckets.len() - 1;
        let account = &mut self.accounts[currency.index()];
        account.note_transition(validity.expires_at);
        if validity.pending {
            account.note_transition(Some(validity.available_at));
        } else {
            self.recover_arrears(w, idx, at);
        }
        id
    }

    /// Credits points that keep the validity they had elsewhere (a transfer or a merge
    /// moves them between members): a new bucket with the given instants, or the pool for
    /// a currency whose points are all alike; then pays back arrears from them.
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        moved: &Moved,
        kind: EntryKind,
        at: DateTime<Utc>,
    ) {
        debug_assert!(points > 0);
        if program.currency(currency).is_fungible() {
            self.move_pool(w, currency, kind, points, at);
            self.recover_arrears_from_pool(w, currency, at);
            return;
        }
        let validity = Moved {
            credited_at: moved.credited_at.min(at),
            ..*moved
        };
        self.open_bucket(w, currency, points, &validity, kind, at);
    }

    /// Takes up to `points` out of one bucket (or the pool, for [`pool_id`]) that a journal
    /// just credited, in whatever pool they are (pending points stay pending), and answers
    /// how many with their validity, for another member to receive.
    pub fn take_share(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        bucket: BucketId,
        points: i64,
        kind: EntryKind,
        at: DateTime<Utc>,
    ) -> Option<(i64, Moved)> {
        if bucket == pool_id(currency) {
            let taken = points.min(self.account(currency).pool);
            if taken <= 0 {
                return None;
            }
            self.move_pool(w, currency, kind, -taken, at);
            return Some((
                taken,
                Moved {
                    credited_at: at,
                    expires_at: None,
                    available_at: at,
                    pending: false,
                },
            ));
        }
        let idx = self.bucket_index(bucket)?;
        let b = &self.buckets[idx];
        let taken = points.min(b.remaining);
        if taken <= 0 {
            return None;
        }
        let moved = Moved {
            credited_at: b.credited_at,
            expires_at: self.effective_expiry(program, b),
            available_at: b.available_at,
            pending: b.pending,
        };
        self.move_bucket(w, idx, kind, -taken, at);
        Some((taken, moved))
    }

    /// Takes every point of the member's open buckets and pool out (a merge), each with
    /// its validity. The member must owe no arrears.
    pub fn take_all(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        kind: EntryKind,
        at: DateTime<Utc>,
    ) -> Vec<(CurrencyIx, i64, Moved)> {
        let mut out = Vec::new();
        for idx in 0..self.buckets.len() {
            let b = &self.buckets[idx];
            if b.remaining <= 0 {
                continue;
            }
            let moved = Moved {
                credited_at: b.credited_at,
                expires_at: self.effective_expiry(program, b),
                available_at: b.available_at,
                pending: b.pending,
            };
            let (currency, points) = (b.currency, b.remaining);
            self.move_bucket(w, idx, kind, -points, at);
            out.push((currency, points, moved));
        }
        for (ix, _) in program.currency_ixs() {
            let pool = self.account(ix).pool;
            if pool > 0 {
                self.move_pool(w, ix, kind, -pool, at);
                out.push((
                    ix,
                    pool,
                    Moved {
                        credited_at: at,
                        expires_at: None,
                        available_at: at,
                        pending: false,
                    },
                ));
            }
        }
        out
    }

    /// Pays arrears back from the (available) bucket at `idx`.
    pub(crate) fn recover_arrears(&mut self, w: &mut JournalWriter, idx: usize, at: DateTime<Utc>) {
        let currency = self.buckets[idx].currency;
        let owed = self.accounts[currency.index()].arrears;
        let recovered = owed.min(self.buckets[idx].remaining);
        if recovered > 0 && !self.buckets[idx].pending {
            self.move_bucket(w, idx, EntryKind::ArrearsRecovery, -recovered, at);
            self.move_arrears(w, currency, EntryKind::ArrearsRecovery, recovered, at);
        }
    }

    fn recover_arrears_from_pool(
        &mut self,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        at: DateTime<Utc>,
    ) {
        let account = self.account(currency);
        let recovered = account.arrears.min(account.pool);
        if recovered > 0 {
            self.move_pool(w, currency, EntryKind::ArrearsRecovery, -recovered, at);
            self.move_arrears(w, currency, EntryKind::ArrearsRecovery, recovered, at);
        }
    }

    /// Where the points spendable at `t` are, in the order they are spent: earliest expiry
    /// first, then earliest credit; the pool (which never expires) last.
    fn spend_order(
        &self,
        program: &Program,
        currency: CurrencyIx,
        t: DateTime<Utc>,
    ) -> Vec<Source> {
        let mut order: Vec<(Option<DateTime<Utc>>, DateTime<Utc>, BucketId, usize)> = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.currency == currency && !b.pending && b.remaining > 0 && b.credited_at <= t
            })
            .filter_map(|(i, b)| {
                let expiry = self.effective_expiry(program, b);
                match expiry {
                    Some(e) if e <= t => None,
                    _ => Some((expiry, b.credited_at, b.id, i)),
                }
            })
            .collect();
        order.sort_by(|a, b| {
            let expiry_a = a.0.unwrap_or(DateTime::<Utc>::MAX_UTC);
            let expiry_b = b.0.unwrap_or(DateTime::<Utc>::MAX_UTC);
            (expiry_a, a.1, a.2).cmp(&(expiry_b, b.1, b.2))
        });
        let mut sources: Vec<Source> = order.into_iter().map(|(.., i)| Source::Bucket(i)).collect();
        if self.account(currency).pool > 0 {
            sources.push(Source::Pool);
        }
        sources
    }

    /// Points spendable at `t`.
    pub fn spendable(&self, program: &Program, currency: CurrencyIx, t: DateTime<Utc>) -> i64 {
        self.spend_order(program, currency, t)
            .into_iter()
            .map(|source| self.remaining(source, currency))
            .sum()
    }

    /// Spends `points` at `t`, earliest expiry first. Beyond the buckets, the balance may
    /// go down to the currency's redemption floor as arrears. Refuses (changing nothing)
    /// with the most that could be spent.
    pub fn debit(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        t: DateTime<Utc>,
        kind: EntryKind,
    ) -> Result<(), i64> {
        let order = self.spend_order(program, currency, t);
        let spendable: i64 = order.iter().map(|&s| self.remaining(s, currency)).sum();
        let overdraft_room = {
            let floor = program.currency(currency).redemption_floor();
            (-floor - self.account(currency).arrears).max(0)
        };
        if points > spendable.saturating_add(overdraft_room) {
            return Err(spendable.saturating_add(overdraft_room));
        }
        let mut need = points;
        for source in order {
            if need == 0 {
                break;
            }
            let take = need.min(self.remaining(source, currency));
            self.take(w, source, currency, kind, -take, t);
            need -= take;
        }
        if need > 0 {
            self.move_arrears(w, currency, kind, -need, t);
        }
        Ok(())
    }

    /// Takes back `points` that the journal `origin` credited, as the currency's return
    /// policy allows: first from the origin's own buckets, then (unless `pending_only`)
    /// from other spendable points, then (with `allow_negative`) as arrears down to the
    /// floor. What cannot be taken is reported as unrecovered, never silently dropped.
    /// A cancellation (`kind` [`EntryKind::Cancel`]) treats `pending_only` as
    /// `within_balance`.
    pub fn claw_back(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        currency: CurrencyIx,
        points: i64,
        origin: JournalId,
        t: DateTime<Utc>,
        kind: EntryKind,
    ) -> ClawBack {
        // `pending_only` is a rule for returns. A cancellation says the journal should
        // never have happened, so it takes back what the balance holds as well.
        let policy = match (program.currency(currency).return_policy, kind) {
            (ReturnPolicy::PendingOnly, EntryKind::Cancel) => ReturnPolicy::WithinBalance,
            (policy, _) => policy,
        };
        let mut need = points;
        let own: Vec<usize> = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.id.journal == origin && b.currency == currency && b.remaining > 0)
            .filter(|(_, b)| policy != ReturnPolicy::PendingOnly || b.pending)
            .map(|(i, _)| i)
            .collect();
        for idx in own {
            let take = need.min(self.buckets[idx].remaining);
            if take > 0 {
                self.move_bucket(w, idx, kind, -take, t);
                need -= take;
            }
        }
        // The origin's points that expired left the balance already.
        let mut already_expired = 0;
        for bucket in self.buckets.iter_mut() {
            if bucket.id.journal != origin || bucket.currency != currency || need == 0 {
                continue;
            }
            let absorbed = need.min(bucket.expired_unclaimed);
            if absorbed > 0 {
                bucket.expired_unclaimed -= absorbed;
                bucket.changed = true;
                already_expired += absorbed;
                need -= absorbed;
            }
        }
        if need > 0 && policy != ReturnPolicy::PendingOnly {
            for source in self.spend_order(program, currency, t) {
                if need == 0 {
                    break;
                }
                let take = need.min(self.remaining(source, currency));
                self.take(w, source, currency, kind, -take, t);
                need -= take;
            }
        }
        if need > 0 && policy == ReturnPolicy::AllowNegative {
            let floor = program.currency(currency).arrears_floor();
            let room = floor
                .checked_neg()
                .map_or(i64::MAX, |f| (f - self.account(currency).arrears).max(0));
            let take = need.min(room);
            if take > 0 {
                self.move_arrears(w, currency, kind, -take, t);
                need -= take;
            }
        }
        ClawBack {
            taken: points - need - already_expired,
            already_expired,
            unrecovered: need,
        }
    }

    /// Gives back what a debit entry took: to the bucket it came from (with that bucket's
    /// original expiry) or the pool, or, for arrears it created, by reducing the arrears.
    /// Points of arrears already paid back come back as a fresh credit. The entries are of
    /// `kind`: `cancel`, or `hold` for a released hold (so a member's held points are always
    /// minus the sum of their `hold` entries). Returns the points restored.
    pub fn restore(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        debit: &Entry,
        now: DateTime<Utc>,
        kind: EntryKind,
    ) -> Result<i64, String> {
        let points = -debit.amount;
        if points <= 0 {
            return Ok(0);
        }
        match debit.bucket {
            Some(bucket) if bucket == pool_id(debit.currency) => {
                self.move_pool(w, debit.currency, kind, points, now);
                self.recover_arrears_from_pool(w, debit.currency, now);
            }
            Some(bucket) => {
                let idx = self
                    .bucket_index(bucket)
                    .ok_or_else(|| format!("bucket {bucket:?} is not loaded"))?;
                self.move_bucket(w, idx, kind, points, now);
                let b = &self.buckets[idx];
                let (currency, expiry, pending, available_at) = (
                    b.currency,
                    self.effective_expiry(program, b),
                    b.pending,
                    b.available_at,
                );
                let account = &mut self.accounts[debit.currency.index()];
                account.note_transition(expiry);
                if pending {
                    account.note_transition(Some(available_at));
                } else {
                    self.recover_arrears(w, idx, now);
                }
                debug_assert_eq!(currency, debit.currency);
            }
            None => {
                let owed = self.account(debit.currency).arrears;
                let reduce = owed.min(points);
                if reduce > 0 {
                    self.move_arrears(w, debit.currency, kind, reduce, now);
                }
                if points > reduce {
                    self.credit(program, w, debit.currency, points - reduce, now, kind);
                }
            }
        }
        Ok(points)
    }

    /// Turns held points into a redemption: for each entry of the hold, its points come
    /// back to the hold (`hold`, positive) and are spent (`redeem`) from the same bucket at
    /// the instant they were held, so buckets, balances and validity stay as they are and
    /// a later cancellation gives the points back where they came from.
    pub fn capture(&mut self, w: &mut JournalWriter, held: &[Entry]) {
        for e in held
            .iter()
            .filter(|e| e.kind == EntryKind::Hold && e.amount < 0)
        {
            w.push(
                e.currency,
                EntryKind::Hold,
                e.pool,
                e.bucket,
                -e.amount,
                e.effective_at,
            );
            w.push(
                e.currency,
                EntryKind::Redeem,
                e.pool,
                e.bucket,
                e.amount,
                e.effective_at,
            );
        }
    }

    /// Records an accrual or redemption at `t`: it extends inactivity deadlines.
    pub fn note_activity(&mut self, program: &Program, t: DateTime<Utc>) {
        for (ix, _) in program.currency_ixs() {
            self.note_activity_in(program, ix, t);
        }
    }

    /// Records activity in one currency at `t` (an inactivity currency's deadline moves):
    /// points given back by a reinstatement are spendable for a whole inactivity period,
    /// not expired again by the deadline that expired them.
    pub fn note_activity_in(&mut self, program: &Program, ix: CurrencyIx, t: DateTime<Utc>) {
        let currency = program.currency(ix);
        let account = &mut self.accounts[ix.index()];
        if let crate::program::ExpiryPolicy::Inactivity { .. } = currency.expiry
            && account.last_activity_at.is_none_or(|last| last < t)
        {
            account.last_activity_at = Some(t);
            account.changed = true;
            let deadline = currency
                .expiry
                .inactivity_deadline(program.time_zone, t)
                .map(|d| {
                    let extensions = program.expiry_extensions(self.tiers.as_ref());
                    crate::tiers::extend_expiry(program.time_zone, d, &extensions)
                });
            let account = &mut self.accounts[ix.index()];
            account.note_transition(deadline);
        }
    }
}
