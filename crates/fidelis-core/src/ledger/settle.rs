//! Settling a ledger as of an instant: pending points whose return window has passed
//! become available, and points past their expiry leave through an explicit `expire`
//! entry dated at the expiry instant.
//!
//! Settling is idempotent: settling again as of the same (or an earlier) instant finds
//! nothing due and writes nothing. It runs before every journal a member posts, so
//! processing never depends on when the scheduled jobs last ran, and from the jobs for
//! members who post nothing.

use chrono::{DateTime, Utc};

use super::{EntryKind, JournalWriter, MemberLedger, Pool};
use crate::program::Program;

/// What settling did, per currency index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub released: Vec<(crate::ids::CurrencyIx, i64)>,
    pub expired: Vec<(crate::ids::CurrencyIx, i64)>,
}

impl Settled {
    pub fn is_empty(&self) -> bool {
        self.released.is_empty() && self.expired.is_empty()
    }

    fn add(
        list: &mut Vec<(crate::ids::CurrencyIx, i64)>,
        currency: crate::ids::CurrencyIx,
        points: i64,
    ) {
        match list.iter_mut().find(|(c, _)| *c == currency) {
            Some((_, p)) => *p += points,
            None => list.push((currency, points)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Declaration order is the order at equal instants: release first, so points that
    // become available and expire at the same instant pay arrears before they go.
    Release,
    Expire,
}

impl MemberLedger {
    /// Applies every release and expiry due at `now`, in time order. Needs all open
    /// buckets loaded. Afterwards each account's `next_transition_at` is exact.
    pub fn settle(
        &mut self,
        program: &Program,
        w: &mut JournalWriter,
        now: DateTime<Utc>,
    ) -> Settled {
        debug_assert!(self.buckets_loaded, "settling needs the open buckets");
        let mut events: Vec<(DateTime<Utc>, Event, usize)> = Vec::new();
        for (idx, bucket) in self.buckets.iter().enumerate() {
            if bucket.remaining <= 0 {
                continue;
            }
            if bucket.pending && bucket.available_at <= now {
                events.push((bucket.available_at, Event::Release, idx));
            }
            if let Some(expiry) = self.effective_expiry(program, bucket)
                && expiry <= now
            {
                events.push((expiry, Event::Expire, idx));
            }
        }
        events.sort();
        let mut settled = Settled::default();
        for (at, event, idx) in events {
            let bucket = &self.buckets[idx];
            let (currency, remaining) = (bucket.currency, bucket.remaining);
            if remaining <= 0 {
                continue;
            }
            match event {
                Event::Release => {
                    if !bucket.pending {
                        continue;
                    }
                    let id = bucket.id;
                    w.push(
                        currency,
                        EntryKind::Release,
                        Pool::Pending,
                        Some(id),
                        -remaining,
                        at,
                    );
                    w.push(
                        currency,
                        EntryKind::Release,
                        Pool::Available,
                        Some(id),
                        remaining,
                        at,
                    );
                    self.apply_release(idx, remaining);
                    Settled::add(&mut settled.released, currency, remaining);
                    self.recover_arrears(w, idx, at);
                }
                Event::Expire => {
                    self.move_bucket(w, idx, EntryKind::Expire, -remaining, at);
                    self.buckets[idx].expired_unclaimed += remaining;
                    Settled::add(&mut settled.expired, currency, remaining);
                }
            }
        }
        self.recompute_transitions(program);
        settled
    }

    fn apply_release(&mut self, idx: usize, points: i64) {
        let bucket = &mut self.buckets[idx];
        bucket.pending = false;
        bucket.changed = true;
        let account = &mut self.accounts[bucket.currency.index()];
        account.pending -= points;
        account.available += points;
        account.changed = true;
    }

    /// Sets each account's next transition to the earliest release or expiry of its open
    /// buckets.
    pub(crate) fn recompute_transitions(&mut self, program: &Program) {
        let mut next: Vec<Option<DateTime<Utc>>> = vec![None; self.accounts.len()];
        for bucket in self.buckets.iter().filter(|b| b.remaining > 0) {
            let slot = &mut next[bucket.currency.index()];
            let candidates = [
                bucket.pending.then_some(bucket.available_at),
                self.effective_expiry(program, bucket),
            ];
            for t in candidates.into_iter().flatten() {
                if slot.is_none_or(|s| t < s) {
                    *slot = Some(t);
                }
            }
        }
        for (account, next) in self.accounts.iter_mut().zip(next) {
            if account.next_transition_at != next {
                account.next_transition_at = next;
                account.changed = true;
            }
        }
    }
}
