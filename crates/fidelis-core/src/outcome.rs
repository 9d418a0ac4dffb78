//! The outcome of processing a journal: what the caller is told, and what a replay of the
//! same journal answers again. Stored with the journal, so it is a versioned format:
//! fields are only ever added, with defaults.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::ids::{Code, ExternalId};

/// What processing a journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `processed`; `held` for a journal a fraud rule keeps for review (then `rejected`
    /// if an agent rejects it).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub status: Cow<'static, str>,
    /// Why a held journal waits: the rule and its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<ExternalId>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub journal_type: Option<Code>,
    /// Points earned, by source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awards: Vec<Award>,
    /// Points spent by a redemption or taken by a negative adjustment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debited: Vec<PointsOf>,
    /// Points a refund or cancellation took back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reversed: Vec<PointsOf>,
    /// Points a refund or cancellation should have taken back but the return policy did
    /// not allow (already spent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecovered: Vec<PointsOf>,
    /// Points a refund or cancellation did not take back because they had expired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub already_expired: Vec<PointsOf>,
    /// Points a cancellation gave back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<PointsOf>,
    /// Points that expired, or became available, when the ledger was settled before
    /// (and after) this journal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<PointsOf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<PointsOf>,
    /// Qualifying points reset at the end of a tier qualification period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<PointsOf>,
    /// Promotions that applied, or whose condition could not be evaluated; a dry run lists
    /// every promotion with the reason it did or did not apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<PromotionResult>,
    /// The share of the points earned that went to the member's group (household).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pooled: Vec<PointsOf>,
    /// Tier changes: upgrades this journal earned, and assessments settled before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_changes: Vec<crate::tiers::TierChange>,
    /// The money a refund refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<String>,
    /// Balances after the journal, every currency of the program.
    pub balances: Vec<Balance>,
}

/// The fraud rule that held a journal, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReason {
    pub rule: String,
    pub reason: String,
}

/// Points earned from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// `base`, or the promotion that awarded them.
    pub source: Cow<'static, str>,
    pub currency: Code,
    pub points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsOf {
    pub currency: Code,
    pub points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub currency: Code,
    /// Spendable now (negative while in arrears).
    pub available: i64,
    /// Earned, not yet spendable.
    pub pending: i64,
}

impl Outcome {
    /// Adds `points` of `currency` to a per-currency list (nothing for zero).
    pub fn add(list: &mut Vec<PointsOf>, currency: &Code, points: i64) {
        if points == 0 {
            return;
        }
        match list.iter_mut().find(|p| p.currency == *currency) {
            Some(p) => p.points += points,
            None => list.push(PointsOf {
                currency: currency.clone(),
                points,
            }),
        }
    }
}

/// One promotion's verdict on a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionResult {
    pub promotion: Code,
    /// `applied`, `not_active`, `not_started`, `ended`, `not_for_journal`,
    /// `condition_false`, `evaluation_error`, `excluded`, `nothing_to_award`, `limit_reached`,
    /// `in_progress`, `target_reached`, `not_joined` or `not_eligible`.
    pub result: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Points it awarded, per currency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointsOf>,
    /// Vouchers and badges it awarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<RewardOf>,
}

/// A voucher or badge awarded by a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardOf {
    /// `voucher` or `badge`.
    pub kind: Cow<'static, str>,
    /// The voucher definition or the badge.
    pub code: Code,
    /// The code of the voucher issued (filled in by the store, which draws it at random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
}
