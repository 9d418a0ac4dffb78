//! What the store keeps of each processed journal, as far as later journals need it:
//! a refund needs what its original earned per line, a cancellation needs the entries it
//! reverses.

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::ids::{Code, ExternalId, JournalId, MemberId};
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
    pub type_name: Code,
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
    /// Points sent to or received from another member.
    Transfer,
    /// Points moved from a merged member to the survivor (on both sides).
    Merge,
    /// Expired points given back by an agent.
    Reinstatement,
    /// A share of earned points moved from a member to their group (both sides).
    Pool,
    /// A member's state brought from another system: opening balances, tier, progress.
    Opening,
    /// Points reserved for an order (pay with points), until captured or released.
    Hold,
}

impl RecordKind {
    pub const ALL: [Self; 12] = [
        Self::Accrual,
        Self::Refund,
        Self::Redemption,
        Self::Adjustment,
        Self::Cancellation,
        Self::Settlement,
        Self::Transfer,
        Self::Merge,
        Self::Reinstatement,
        Self::Pool,
        Self::Opening,
        Self::Hold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Accrual => "accrual",
            Self::Refund => "refund",
            Self::Redemption => "redemption",
            Self::Adjustment => "adjustment",
            Self::Cancellation => "cancellation",
            Self::Settlement => "settlement",
            Self::Transfer => "transfer",
            Self::Merge => "merge",
            Self::Reinstatement => "reinstatement",
            Self::Pool => "pool",
            Self::Opening => "opening",
            Self::Hold => "hold",
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
    Hold(HoldState),
}

/// A hold: until when it may be captured, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldState {
    pub until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<HoldEnd>,
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldEnd {
    /// The points became a redemption.
    Captured,
    /// The points went back to the member.
    Released,
}

impl JournalRecord {
    /// Until when an open hold may be captured; `None` for anything else.
    pub fn open_hold_until(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            JournalState::Hold(HoldState { until, ended: None }) => Some(*until),
            _ => None,
        }
    }
}

/// What an accrual earned, and how much of it has been refunded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrualState {
    /// The amount spent, in minor units (0 for activities without an amount).
    pub amount: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refunded: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineState>,
    /// Points earned, per currency and line.
    pub components: Vec<Component>,
    /// The promotion limit counters the awards used (given back by reversals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<crate::promotions::Usage>,
    /// What the journal added to cumulative promotions' progress (taken back by
    /// refunds and cancellations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<crate::promotions::Contribution>,
}

/// A line of an accrual, with how much of it was refunded. Stored as a short array,
/// `[line_id, quantity, amount]` and, once refunded, `refunded_quantity, refunded_amount`:
/// one is written per line of every purchase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineState {
    pub line_id: String,
    pub quantity: u32,
    pub amount: i64,
    pub refunded_quantity: u32,
    pub refunded_amount: i64,
}

/// Points of one currency an accrual earned for one line (or for the whole order). Stored
/// as `[currency, line or null, points]`, then `reversed` and `source` when they are not
/// 0 and `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub currency: Code,
    /// Index into the lines; `None` for the whole order.
    pub line: Option<u32>,
    /// `base`, or the promotion that awarded the points.
    pub source: Cow<'static, str>,
    pub points: i64,
    /// Points already taken back by refunds.
    pub reversed: i64,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The source of base earning.
pub const BASE: &str = "base";

impl Serialize for LineState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let refunded = self.refunded_quantity != 0 || self.refunded_amount != 0;
        let mut seq = s.serialize_seq(Some(if refunded { 5 } else { 3 }))?;
        seq.serialize_element(&self.line_id)?;
        seq.serialize_element(&self.quantity)?;
        seq.serialize_element(&self.amount)?;
        if refunded {
            seq.serialize_element(&self.refunded_quantity)?;
            seq.serialize_element(&self.refunded_amount)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for LineState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        type Full = (String, u32, i64, Option<u32>, Option<i64>);
        let (line_id, quantity, amount, refunded_quantity, refunded_amount) =
            compact::<D, Full>(d)?;
        Ok(Self {
            line_id,
            quantity,
            amount,
            refunded_quantity: refunded_quantity.unwrap_or(0),
            refunded_amount: refunded_amount.unwrap_or(0),
        })
    }
}

impl Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let with_source = self.source != BASE;
        let len = if with_source {
            5
        } else if self.reversed != 0 {
            4
        } else {
            3
        };
        let mut seq = s.serialize_seq(Some(len))?;
        seq.serialize_element(&self.currency)?;
        seq.serialize_element(&self.line)?;
        seq.serialize_element(&self.points)?;
        if len > 3 {
            seq.serialize_element(&self.reversed)?;
        }
        if with_source {
            seq.serialize_element(&self.source)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        type Full = (Code, Option<u32>, i64, Option<i64>, Option<String>);
        let (currency, line, points, reversed, source) = compact::<D, Full>(d)?;
        Ok(Self {
            currency,
            line,
            source: source.map_or(Cow::Borrowed(BASE), Cow::Owned),
            points,
            reversed: reversed.unwrap_or(0),
        })
    }
}

/// Reads a short array of up to five elements as a five-tuple whose missing trailing
/// elements (`Option`s) are `None`.
fn compact<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    let mut values: Vec<serde_json::Value> = Vec::deserialize(d)?;
    values.resize(values.len().max(5), serde_json::Value::Null);
    T::deserialize(serde_json::Value::Array(values)).map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> Code {
        Code::parse("points").expect("a valid code")
    }

    #[test]
    fn accrual_state_is_stored_compactly_and_reads_back() {
        let state = JournalState::Accrual(AccrualState {
            usage: Vec::new(),
            progress: Vec::new(),
            amount: 7990,
            refunded: 1000,
            lines: vec![
                LineState {
                    line_id: "1".into(),
                    quantity: 1,
                    amount: 5990,
                    ..LineState::default()
                },
                LineState {
                    line_id: "2".into(),
                    quantity: 2,
                    amount: 2000,
                    refunded_quantity: 1,
                    refunded_amount: 1000,
                },
            ],
            components: vec![
                Component {
                    currency: points(),
                    line: Some(0),
                    source: BASE.into(),
                    points: 59,
                    reversed: 0,
                },
                Component {
                    currency: points(),
                    line: Some(1),
                    source: BASE.into(),
                    points: 20,
                    reversed: 10,
                },
                Component {
                    currency: points(),
                    line: None,
                    source: "weekend".into(),
                    points: 50,
                    reversed: 0,
                },
            ],
        });
        let json = serde_json::to_string(&state).expect("a state serializes");
        assert_eq!(
            json,
            r#"{"kind":"accrual","amount":7990,"refunded":1000,"lines":[["1",1,5990],["2",2,2000,1,1000]],"components":[["points",0,59],["points",1,20,10],["points",null,50,0,"weekend"]]}"#
        );
        assert_eq!(
            serde_json::from_str::<JournalState>(&json).expect("a state reads back"),
            state
        );
    }
}
