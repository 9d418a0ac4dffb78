//! Vouchers: what a definition promises, the codes vouchers are issued with, and the rules
//! of a voucher's life as pure functions of its state, a request and the time.
//!
//! A voucher is `issued`, then possibly `reserved` for an order (held until the order
//! succeeds, when it is redeemed by the reservation's key, or fails, when it is reinstated),
//! and ends `redeemed` or `cancelled`; an issued voucher whose validity ended is `expired`
//! ([`Voucher::status_at`]: expiry is read at the time asked, no job needs to run).
//! Validity is half-open, `[valid_from, valid_until)`, its ends at local midnights of the
//! program's time zone where the definition names dates, like points' expiry.
//!
//! A fixed-value voucher carries a balance in the program's money currency: a redemption
//! takes part of it or all of it, and the voucher stays usable with what is left. Its value
//! is a small ledger of its own (the store's `voucher_entries`): issued +value, each
//! redemption −amount, a cancellation −what was left, so the remaining value is always the
//! sum of its entries. Percent and free-product vouchers count uses instead.
//!
//! Codes are random: [`CodeFormat::render`] turns random bytes the caller draws from the
//! operating system's CSPRNG into a code of an unambiguous 32-symbol alphabet (no `0/O`,
//! `1/I`), 5 bits per symbol, at least 10 symbols (50 bits) — never a sequence number.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::ids::Code;
use crate::money::MinorUnits;

/// The symbols of voucher codes: letters and digits without `I`, `O`, `0` and `1`.
pub const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Random symbols in a code: at least 10 (50 bits), at most 32; 12 by default.
pub const MIN_CODE_LENGTH: u8 = 10;
pub const MAX_CODE_LENGTH: u8 = 32;
pub const DEFAULT_CODE_LENGTH: u8 = 12;
/// The longest prefix a code format may give (letters, digits, `-`).
pub const MAX_PREFIX_LEN: usize = 12;
/// The most uses a multi-use voucher may have.
pub const MAX_USES: u32 = 100_000;
/// The longest key of a reservation or redemption (an order id).
pub const MAX_KEY_LEN: usize = 100;

/// A voucher definition, compiled from the program's `vouchers:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherDefinition {
    pub code: Code,
    pub name: String,
    pub value: VoucherValue,
    pub validity: Validity,
    /// How many redemptions a voucher allows; `None`: as many as its value lasts (fixed
    /// value only).
    pub uses: Option<u32>,
    pub format: CodeFormat,
}

/// What a voucher is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherValue {
    /// An amount of the program's money currency, spendable in parts.
    Fixed(MinorUnits),
    /// A percentage off an order (0 < p ≤ 100).
    Percent(Decimal),
    /// A product given free, named by the operator's SKU.
    FreeProduct(String),
}

impl VoucherValue {
    /// `fixed`, `percent` or `free_product`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed(_) => "fixed",
            Self::Percent(_) => "percent",
            Self::FreeProduct(_) => "free_product",
        }
    }
}

/// When vouchers of a definition may be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validity {
    /// The first local day (from its start); without it, from the moment of issue.
    pub starts_on: Option<NaiveDate>,
    /// The last local day (to its end).
    pub ends_on: Option<NaiveDate>,
    /// Days after the day of issue: valid to the end of the `days`-th local day after it.
    pub days: Option<u32>,
}

impl Validity {
    /// The validity window of a voucher issued at `at`: from the later of the issue and the
    /// start of `starts_on`; until the earlier of the end of `ends_on` and of the `days`-th
    /// day after issue (`None`: no end).
    pub fn window(&self, tz: Tz, at: DateTime<Utc>) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let after = |date: NaiveDate| {
            date.succ_opt()
                .map(|next| crate::calendar::start_of_day(tz, next))
        };
        let from = self
            .starts_on
            .map(|d| crate::calendar::start_of_day(tz, d))
            .map_or(at, |start| start.max(at));
        let by_date = self.ends_on.and_then(after);
        let by_days = self.days.and_then(|days| {
            crate::calendar::local_date(tz, at)
                .checked_add_days(chrono::Days::new(u64::from(days)))
                .and_then(after)
        });
        let until = match (by_date, by_days) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (from, until)
    }
}

/// How codes look: an optional prefix and a number of random symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFormat {
    pub prefix: String,
    pub length: u8,
}

impl Default for CodeFormat {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            length: DEFAULT_CODE_LENGTH,
        }
    }
}

impl CodeFormat {
    /// A code from `random`, which must hold at least `length` bytes drawn from a CSPRNG
    /// (each byte gives one symbol; 32 divides 256, so every symbol is equally likely).
    /// `None` when there are too few bytes.
    pub fn render(&self, random: &[u8]) -> Option<String> {
        let symbols = random.get(..usize::from(self.length))?;
        let mut code = String::with_capacity(self.prefix.len() + symbols.len());
        code.push_str(&self.prefix);
        code.extend(
            symbols
                .iter()
                .map(|b| char::from(CODE_ALPHABET[usize::from(b & 31)])),
        );
        Some(code)
    }
}

/// A code as typed by a person, as codes are stored: trimmed, upper case.
pub fn normalize_code(raw: &str) -> String {
    raw.trim().to_ascii_uppercase()
}

/// A voucher's status as stored; `expired` is read from the time ([`Voucher::status_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherStatus {
    Issued,
    Reserved,
    Redeemed,
    Expired,
    Cancelled,
}

impl VoucherStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Reserved => "reserved",
            Self::Redeemed => "redeemed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issued" => Self::Issued,
            "reserved" => Self::Reserved,
            "redeemed" => Self::Redeemed,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A voucher's state: what the rules read and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    pub status: VoucherStatus,
    pub valid_from: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    /// Fixed value: what is left, in minor units; `None` for other kinds.
    pub remaining: Option<i64>,
    /// Redemptions left; `None`: unlimited (a fixed value bounds them).
    pub uses_left: Option<u32>,
    /// While reserved: the order's key and the amount set aside (fixed value).
    pub reservation: Option<(String, Option<i64>)>,
}

/// Why a voucher request was refused; each has its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    #[error("the voucher is used up")]
    Redeemed,
    #[error("the voucher expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the voucher is cancelled")]
    Cancelled,
    #[error("the voucher is valid only from {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the voucher is reserved for another order")]
    Reserved,
    #[error("the voucher is not reserved for this order")]
    NotReserved,
    #[error("the voucher has {remaining} left, less than the {asked} asked for")]
    ValueExceeded { remaining: i64, asked: i64 },
    #[error("{0}")]
    InvalidAmount(&'static str),
}

impl VoucherError {
    /// The stable machine code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Redeemed => "voucher_redeemed",
            Self::Expired(_) => "voucher_expired",
            Self::Cancelled => "voucher_cancelled",
            Self::NotYetValid(_) => "voucher_not_yet_valid",
            Self::Reserved => "voucher_reserved",
            Self::NotReserved => "voucher_not_reserved",
            Self::ValueExceeded { .. } => "voucher_value_exceeded",
            Self::InvalidAmount(_) => "invalid_amount",
        }
    }
}

/// A change to a voucher's value: what its ledger records (`amount` is signed, in minor
/// units of a fixed value; 0 for other kinds and for reservations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueChange {
    pub kind: EntryKind,
    pub amount: i64,
}

/// The kinds of a voucher's ledger entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Issue,
    Reserve,
    Reinstate,
    Redeem,
    Cancel,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Reserve => "reserve",
            Self::Reinstate => "reinstate",
            Self::Redeem => "redeem",
            Self::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issue" => Self::Issue,
            "reserve" => Self::Reserve,
            "reinstate" => Self::Reinstate,
            "redeem" => Self::Redeem,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }
}

impl VoucherDefinition {
    /// A new voucher of this definition issued at `at`, with its first ledger entry.
    pub fn issue(&self, tz: Tz, at: DateTime<Utc>) -> (Voucher, ValueChange) {
        let (valid_from, valid_until) = self.validity.window(tz, at);
        let (remaining, uses_left) = match &self.value {
            VoucherValue::Fixed(amount) => (Some(amount.0), self.uses),
            _ => (None, Some(self.uses.unwrap_or(1))),
        };
        let voucher = Voucher {
            status: VoucherStatus::Issued,
            valid_from,
            valid_until,
            remaining,
            uses_left,
            reservation: None,
        };
        let change = ValueChange {
            kind: EntryKind::Issue,
            amount: remaining.unwrap_or(0),
        };
        (voucher, change)
    }
}

impl Voucher {
    /// The status as of `now`: an issued voucher past its validity is expired. A reserved
    /// one stays reserved (its order was placed in time) until redeemed or reinstated.
    pub fn status_at(&self, now: DateTime<Utc>) -> VoucherStatus {
        match self.status {
            VoucherStatus::Issued if self.valid_until.is_some_and(|end| now >= end) => {
                VoucherStatus::Expired
            }
            s => s,
        }
    }

    /// Refuses unless the voucher can be used at `now`.
    fn usable(&self, now: DateTime<Utc>) -> Result<(), VoucherError> {
        match self.status_at(now) {
            VoucherStatus::Issued if now < self.valid_from => {
                Err(VoucherError::NotYetValid(self.valid_from))
            }
            VoucherStatus::Issued => Ok(()),
            VoucherStatus::Reserved => Err(VoucherError::Reserved),
            VoucherStatus::Redeemed => Err(VoucherError::Redeemed),
            VoucherStatus::Cancelled => Err(VoucherError::Cancelled),
            VoucherStatus::Expired => Err(VoucherError::Expired(
                self.valid_until.unwrap_or(DateTime::<Utc>::MAX_UTC),
            )),
        }
    }

    /// The amount a request takes of a fixed value (all that is left when not given).
    fn take(&self, amount: Option<i64>) -> Result<Option<i64>, VoucherError> {
        match (self.remaining, amount) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(VoucherError::InvalidAmount(
                "only fixed-value vouchers are redeemed by amount",
            )),
            (Some(left), None) => Ok(Some(left)),
            (Some(_), Some(a)) if a <= 0 => {
                Err(VoucherError::InvalidAmount("the amount must be positive"))
            }
            (Some(left), Some(a)) if a > left => Err(VoucherError::ValueExceeded {
                remaining: left,
                asked: a,
            }),
            (Some(_), Some(a)) => Ok(Some(a)),
        }
    }

    /// Uses the voucher (for `amount` of a fixed value): one use less, the amount off
    /// its value; redeemed when either runs out.
    fn spend(&mut self, amount: Option<i64>) -> ValueChange {
        if let Some(uses) = self.uses_left.as_mut() {
            *uses = uses.saturating_sub(1);
        }
        if let (Some(left), Some(a)) = (self.remaining.as_mut(), amount) {
            *left -= a;
        }
        self.reservation = None;
        self.status = if self.uses_left == Some(0) || self.remaining == Some(0) {
            VoucherStatus::Redeemed
        } else {
            VoucherStatus::Issued
        };
        ValueChange {
            kind: EntryKind::Redeem,
            amount: -amount.unwrap_or(0),
        }
    }

    /// Redeems the voucher at once (for `amount` of a fixed value; all of it by default).
    pub fn redeem(
        &mut self,
        now: DateTime<Utc>,
        amount: Option<i64>,
    ) -> Result<ValueChange, VoucherError> {
        self.usable(now)?;
        let amount = self.take(amount)?;
        Ok(self.spend(amount))
    }

    /// Sets the voucher aside for the order `key` (for `amount` of a fixed value).
    pub fn reserve(
        &mut self,
        now: DateTime<Utc>,
        key: &str,
        amount: Option<i64>,
    ) -> Result<ValueChange, VoucherError> {
        self.usable(now)?;
        let amount = self.take(amount)?;
        self.status = VoucherStatus::Reserved;
        self.reservation = Some((key.to_owned(), amount));
        Ok(ValueChange {
            kind: EntryKind::Reserve,
            amount: 0,
        })
    }

    fn reserved_for(&self, key: &str) -> Result<Option<i64>, VoucherError> {
        match (&self.status, &self.reservation) {
            (VoucherStatus::Reserved, Some((k, amount))) if k == key => Ok(*amount),
            (VoucherStatus::Reserved, _) => Err(VoucherError::NotReserved),
            (VoucherStatus::Redeemed, _) => Err(VoucherError::Redeemed),
            (VoucherStatus::Cancelled, _) => Err(VoucherError::Cancelled),
            _ => Err(VoucherError::NotReserved),
        }
    }

    /// The order `key` succeeded: the reservation is redeemed (also after the validity
    /// ended, as the order was placed while it was valid).
    pub fn redeem_reserved(&mut self, key: &str) -> Result<ValueChange, VoucherError> {
        let amount = self.reserved_for(key)?;
        Ok(self.spend(amount))
    }

    /// The order `key` failed: the voucher is issued again (and so expired, when its
    /// validity ended meanwhile).
    pub fn reinstate(&mut self, key: &str) -> Result<ValueChange, VoucherError> {
        self.reserved_for(key)?;
        self.status = VoucherStatus::Issued;
        self.reservation = None;
        Ok(ValueChange {
            kind: EntryKind::Reinstate,
            amount: 0,
        })
    }

    /// Cancels the voucher: what is left of its value goes. A redeemed voucher cannot be
    /// cancelled.
    pub fn cancel(&mut self) -> Result<ValueChange, VoucherError> {
        match self.status {
            VoucherStatus::Redeemed => Err(VoucherError::Redeemed),
            VoucherStatus::Cancelled => Err(VoucherError::Cancelled),
            _ => {
                let left = self.remaining.unwrap_or(0);
                if let Some(r) = self.remaining.as_mut() {
                    *r = 0;
                }
                self.status = VoucherStatus::Cancelled;
                self.reservation = None;
                Ok(ValueChange {
                    kind: EntryKind::Cancel,
                    amount: -left,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("a time")
    }

    fn definition(value: VoucherValue, uses: Option<u32>, validity: Validity) -> VoucherDefinition {
        VoucherDefinition {
            code: Code::parse("ten-off").expect("a code"),
            name: "Ten off".into(),
            value,
            validity,
            uses,
            format: CodeFormat::default(),
        }
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn validity_is_half_open_at_local_midnights() {
        let v = Validity {
            starts_on: NaiveDate::from_ymd_opt(2026, 12, 1),
            ends_on: NaiveDate::from_ymd_opt(2026, 12, 31),
            days: None,
        };
        let (from, until) = v.window(BERLIN, at(2026, 11, 20, 12));
        assert_eq!(from, at(2026, 11, 30, 23)); // 2026-12-01T00:00 in Berlin
        assert_eq!(until, Some(at(2026, 12, 31, 23))); // 2027-01-01T00:00 in Berlin
        let d = definition(VoucherValue::Percent(Decimal::TEN), None, v);
        let (mut voucher, _) = d.issue(BERLIN, at(2026, 11, 20, 12));
        assert_eq!(
            voucher.clone().redeem(at(2026, 11, 30, 22), None),
            Err(VoucherError::NotYetValid(at(2026, 11, 30, 23)))
        );
        let last = at(2026, 12, 31, 23) - chrono::Duration::microseconds(1);
        assert!(voucher.clone().redeem(last, None).is_ok());
        assert_eq!(
            voucher.redeem(at(2026, 12, 31, 23), None),
            Err(VoucherError::Expired(at(2026, 12, 31, 23)))
        );
    }

    #[test]
    fn days_count_from_the_local_day_of_issue_and_the_earlier_end_wins() {
        let v = Validity {
            starts_on: None,
            ends_on: NaiveDate::from_ymd_opt(2026, 12, 5),
            days: Some(30),
        };
        // Issued 23:30 UTC on the 1st = 00:30 on the 2nd in Berlin: 30 days after the 2nd.
        let (from, until) = v.window(BERLIN, at(2026, 12, 1, 23));
        assert_eq!(from, at(2026, 12, 1, 23));
        assert_eq!(until, Some(at(2026, 12, 5, 23)));
        let only_days = Validity {
            days: Some(30),
            ..Validity::default()
        };
        assert_eq!(
            only_days.window(BERLIN, at(2026, 12, 1, 23)).1,
            Some(at(2027, 1, 1, 23)) // end of 2027-01-01 local
        );
    }

    #[test]
    fn a_fixed_value_is_spent_in_parts_and_its_entries_sum_to_what_is_left() {
        let d = definition(
            VoucherValue::Fixed(MinorUnits(5000)),
            None,
            Validity::default(),
        );
        let now = at(2026, 12, 2, 10);
        let (mut v, issue) = d.issue(BERLIN, now);
        let mut sum = issue.amount;
        sum += v.redeem(now, Some(1200)).expect("part").amount;
        assert_eq!((v.status, v.remaining), (VoucherStatus::Issued, Some(3800)));
        assert_eq!(
            v.redeem(now, Some(4000)),
            Err(VoucherError::ValueExceeded {
                remaining: 3800,
                asked: 4000
            })
        );
        assert_eq!(
            v.redeem(now, Some(0)).map_err(|e| e.code()),
            Err("invalid_amount")
        );
        sum += v
            .reserve(now, "order-1", Some(800))
            .expect("reserve")
            .amount;
        assert_eq!(v.redeem(now, None), Err(VoucherError::Reserved));
        assert_eq!(v.redeem_reserved("order-2"), Err(VoucherError::NotReserved));
        sum += v.redeem_reserved("order-1").expect("redeem").amount;
        assert_eq!(v.remaining, Some(3000));
        sum += v.redeem(now, None).expect("the rest").amount;
        assert_eq!(
            (v.status, v.remaining, sum),
            (VoucherStatus::Redeemed, Some(0), 0)
        );
        assert_eq!(v.redeem(now, None), Err(VoucherError::Redeemed));
        assert_eq!(v.cancel(), Err(VoucherError::Redeemed));
    }

    #[test]
    fn single_use_vouchers_are_used_once_and_multi_use_as_often_as_defined() {
        let now = at(2026, 12, 2, 10);
        let single = definition(
            VoucherValue::FreeProduct("COFFEE".into()),
            None,
            Validity::default(),
        );
        let (mut v, _) = single.issue(BERLIN, now);
        assert!(v.redeem(now, None).is_ok());
        assert_eq!(v.redeem(now, None), Err(VoucherError::Redeemed));
        assert_eq!(
            v.clone().redeem(now, Some(5)).map_err(|e| e.code()),
            Err("voucher_redeemed")
        );
        let multi = definition(
            VoucherValue::Percent(Decimal::TEN),
            Some(3),
            Validity::default(),
        );
        let (mut v, _) = multi.issue(BERLIN, now);
        for _ in 0..3 {
            assert!(v.redeem(now, None).is_ok());
        }
        assert_eq!(v.status, VoucherStatus::Redeemed);
    }

    #[test]
    fn a_reinstatement_after_the_validity_ended_leaves_the_voucher_expired() {
        let d = definition(
            VoucherValue::Percent(Decimal::TEN),
            None,
            Validity {
                days: Some(0),
                ..Validity::default()
            },
        );
        let issued = at(2026, 12, 2, 10);
        let (mut v, _) = d.issue(BERLIN, issued);
        v.reserve(issued, "o", None).expect("reserve");
        let later = at(2026, 12, 3, 10);
        assert_eq!(v.status_at(later), VoucherStatus::Reserved);
        let mut redeemed_late = v.clone();
        assert!(redeemed_late.redeem_reserved("o").is_ok());
        v.reinstate("o").expect("reinstate");
        assert_eq!(v.status_at(later), VoucherStatus::Expired);
        assert_eq!(v.status_at(issued), VoucherStatus::Issued);
        assert!(matches!(
            v.redeem(later, None),
            Err(VoucherError::Expired(_))
        ));
        let c = v.cancel().expect("an expired voucher can be cancelled");
        assert_eq!(c.amount, 0);
        assert_eq!(v.status_at(later), VoucherStatus::Cancelled);
        assert_eq!(
            v.redeem(issued, None).map_err(|e| e.code()),
            Err("voucher_cancelled")
        );
    }

    #[test]
    fn codes_use_every_symbol_evenly_and_honour_the_format() {
        let format = CodeFormat {
            prefix: "XMAS-".into(),
            length: 12,
        };
        let bytes: Vec<u8> = (0..=255).collect();
        let code = format.render(&bytes).expect("enough bytes");
        assert_eq!(code, "XMAS-ABCDEFGHJKLM");
        assert_eq!(format.render(&bytes[..11]), None);
        let all = CodeFormat {
            prefix: String::new(),
            length: 32,
        }
        .render(&bytes[224..])
        .expect("32 bytes");
        assert_eq!(all.as_bytes(), CODE_ALPHABET);
        assert_eq!(normalize_code(" xmas-abc "), "XMAS-ABC");
    }
}
