//! What the store keeps of each processed journal, as far as later journals need it:
//! a refund needs what its original earned per line, a cancellation needs the entries it
//! reverses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ExternalId, JournalId, MemberId};
use crate::ledger::Entry;

/// A processed journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    pub id: JournalId,
    /// `None` for journals Fidelis writes itself (settlements).
    pub external_id: Option<ExternalId>,
    pub member: MemberId,
    pub kind: RecordKind,
    /// `purchase`, a custom activity, `refund`, `redemption`… as in documents.
    pub type_name: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub status: RecordStatus,
    /// The journal a refund or cancellation refers to.
    pub original: Option<JournalId>,
    pub state: JournalState,
    /// The entries this journal wrote, in order.
    pub entries: Vec<Entry>,
    /// Changed by processing another journal (a refund of it, a cancellation); the store
    /// writes the new status and state back.
    pub changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Accrual,
    Refund,
    Redemption,
    Adjustment,
    Cancellation,
    /// Expiry and pending release, written by settling a ledger.
    Settlement,
}

impl RecordKind {
    pub const ALL: [Self; 6] = [
        Self::Accrual,
        Self::Refund,
        Self::Redemption,
        Self::Adjustment,
        Self::Cancellation,
        Self::Settlement,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Accrual => "accrual",
            Self::Refund => "refund",
            Self::Redemption => "redemption",
            Self::Adjustment => "adjustment",
            Self::Cancellation => "cancellation",
            Self::Settlement => "settlement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordStatus {
    Processed,
    Cancelled,
}

impl RecordStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "processed" => Some(Self::Processed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The part of a journal's record that later journals change or read. A storage format:
/// stored as JSON, tagged by kind; fields are only ever added, with defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalState {
    #[default]
    None,
    Accrual(AccrualState),
    Refund(RefundState),
}

/// What an accrual earned, and how much of it has been refunded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrualState {
    /// The amount spent, in minor units (0 for activities without an amount).
    pub amount: i64,
    #[serde(default)]
    pub refunded: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineState>,
    /// Points earned, per currency and line.
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineState {
    pub line_id: String,
    pub quantity: u32,
    pub amount: i64,
    #[serde(default)]
    pub refunded_quantity: u32,
    #[serde(default)]
    pub refunded_amount: i64,
}

/// Points of one currency an accrual earned for one line (or for the whole order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub currency: String,
    /// Index into the lines; `None` for the whole order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub source: String,
    pub points: i64,
    /// Points already taken back by refunds.
    #[serde(default)]
    pub reversed: i64,
}

impl Component {
    /// Points to have reversed once `refunded` of `total` money has come back. Exact for a
    /// full refund; rounds down for a partial one, so the sum never exceeds the points.
    pub fn reversal_target(&self, refunded: i64, total: i64) -> i64 {
        if total <= 0 || refunded >= total {
            return self.points;
        }
        let target = i128::from(self.points) * i128::from(refunded) / i128::from(total);
        i64::try_from(target).unwrap_or(self.points)
    }
}

/// What a refund took from its original, so cancelling the refund can give it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    pub amount: i64,
    /// (line index, quantity, amount) refunded per line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<(u32, u32, i64)>,
    /// (component index, points) reversed per component of the original.
    pub components: Vec<(u32, i64)>,
}
