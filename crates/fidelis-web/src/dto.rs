//! What goes over the wire: request and response bodies with their OpenAPI schemas.
//!
//! The core's documents and outcomes carry no HTTP or OpenAPI types; these mirror them
//! and convert explicitly, so the wire format is stated here once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fidelis_core::journal::{JournalDocument, LineDocument};
use fidelis_core::outcome::{Award, Balance, Outcome, PointsOf};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A journal: every event that may change points (see the API reference).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalRequest {
    /// Idempotency key, unique per program.
    pub external_id: Option<String>,
    /// The member's external id.
    pub member: Option<String>,
    /// `purchase`, `refund`, `redemption`, `adjustment`, `cancellation`, or an activity type
    /// the program declares.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subtype: Option<String>,
    /// RFC 3339; now when absent (and then a retry of the same request, given another now,
    /// still replays the first outcome).
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// Money as a decimal string (`"79.90"`).
    #[schema(example = "79.90")]
    #[serde(default, deserialize_with = "fidelis_core::journal::decimal_text")]
    pub amount: Option<String>,
    /// ISO 4217 for an amount; a loyalty currency code for a redemption or adjustment.
    pub currency: Option<String>,
    pub points: Option<i64>,
    pub reason: Option<String>,
    pub original_external_id: Option<String>,
    pub channel: Option<String>,
    pub store: Option<String>,
    pub partner: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::object::optional_list")]
    pub lines: Option<Vec<LineRequest>>,
    /// Custom attributes.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub line_id: Option<String>,
    pub sku: Option<String>,
    pub category: Option<String>,
    #[schema(minimum = 0)]
    pub quantity: Option<u32>,
    /// The line's total.
    #[serde(default, deserialize_with = "fidelis_core::journal::decimal_text")]
    pub amount: Option<String>,
    #[serde(default, deserialize_with = "fidelis_core::journal::decimal_text")]
    pub unit_price: Option<String>,
}

impl From<JournalRequest> for JournalDocument {
    fn from(r: JournalRequest) -> Self {
        Self {
            external_id: r.external_id,
            member: r.member,
            kind: r.kind,
            subtype: r.subtype,
            occurred_at: r.occurred_at,
            amount: r.amount,
            currency: r.currency,
            points: r.points,
            reason: r.reason,
            original_external_id: r.original_external_id,
            channel: r.channel,
            store: r.store,
            partner: r.partner,
            lines: r.lines.map(|lines| {
                lines
                    .into_iter()
                    .map(|l| LineDocument {
                        line_id: l.line_id,
                        sku: l.sku,
                        category: l.category,
                        quantity: l.quantity,
                        amount: l.amount,
                        unit_price: l.unit_price,
                    })
                    .collect()
            }),
            attributes: r.attributes,
            expires_at: None,
        }
    }
}

/// What processing a journal did. A partner's answer shows only what the journal did with
/// its own points and the promotions that applied: `balances`, `expired`, `released`,
/// `reset`, `pooled` and `tier_changes` are empty for partners, who may not read members.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutcomeBody {
    /// `processed`; `held` when a fraud rule keeps the journal for review (`rejected` once
    /// an agent rejected it).
    pub status: String,
    /// Why a held journal waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldReasonBody>,
    pub external_id: String,
    #[serde(rename = "type")]
    pub journal_type: String,
    /// True when this answers a replay: the first outcome, and nothing changed.
    pub replayed: bool,
    pub awards: Vec<AwardBody>,
    pub debited: Vec<PointsBody>,
    pub reversed: Vec<PointsBody>,
    /// Points a refund could not take back (already spent).
    pub unrecovered: Vec<PointsBody>,
    /// Points a refund did not take back because they had expired.
    pub already_expired: Vec<PointsBody>,
    pub restored: Vec<PointsBody>,
    pub expired: Vec<PointsBody>,
    pub released: Vec<PointsBody>,
    /// Qualifying points reset at the end of a tier qualification period.
    pub reset: Vec<PointsBody>,
    /// The share of the points earned that went to the member's group (household).
    pub pooled: Vec<PointsBody>,
    /// Tier changes: upgrades this journal earned, assessments settled before it.
    pub tier_changes: Vec<TierChangeBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<String>,
    /// Promotions that applied or could not be evaluated; a dry run (`simulate`) lists
    /// every promotion with the reason it did or did not apply.
    pub promotions: Vec<PromotionResultBody>,
    pub balances: Vec<BalanceBody>,
}

/// The fraud rule that held a journal, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HoldReasonBody {
    /// `velocity`, `unusual_amount`, `shared_receipt`, `redemption_after_change` or
    /// `transfer_ring`.
    pub rule: String,
    pub reason: String,
}

/// One promotion's verdict on a journal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromotionResultBody {
    pub promotion: String,
    /// `applied`, `not_active`, `not_started`, `ended`, `not_for_journal`,
    /// `condition_false`, `evaluation_error`, `excluded`, `nothing_to_award`, `limit_reached`,
    /// `in_progress`, `target_reached`, `not_joined` or `not_eligible`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub points: Vec<PointsBody>,
    pub rewards: Vec<RewardBody>,
}

/// A member's tier changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierChangeBody {
    pub group: String,
    pub from: Option<String>,
    pub to: String,
    /// `upgrade`, `assessment`, `grace_ended`, `manual` or `merge`.
    pub reason: String,
    /// The measure that decided (upgrades and assessments).
    pub measure: Option<i64>,
    pub at: DateTime<Utc>,
    /// The tier is not lost at an assessment before this instant.
    pub valid_until: Option<DateTime<Utc>>,
}

impl From<&fidelis_core::tiers::TierChange> for TierChangeBody {
    fn from(c: &fidelis_core::tiers::TierChange) -> Self {
        Self {
            group: c.group.to_string(),
            from: c.from.as_ref().map(ToString::to_string),
            to: c.to.to_string(),
            reason: c.reason.clone(),
            measure: c.measure,
            at: c.at,
            valid_until: c.valid_until,
        }
    }
}

/// A member's standing in every tier group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TiersBody {
    pub member: String,
    pub as_of: DateTime<Utc>,
    pub tiers: Vec<TierStandingBody>,
}

/// A member's standing in one tier group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierStandingBody {
    pub group: String,
    pub group_name: String,
    pub tier: String,
    pub tier_name: String,
    pub since: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    /// The end of the current qualifying period (for rolling windows: of the month).
    pub next_assessment_at: DateTime<Utc>,
    /// Set after a failed assessment: the tier is kept until then to re-qualify.
    pub grace_until: Option<DateTime<Utc>>,
    /// `points`, `spend` (minor units) or `activities`.
    pub measure: String,
    /// The measure so far in the current period (rolling: the current window).
    pub progress: i64,
    pub next_tier: Option<String>,
    pub next_threshold: Option<i64>,
    pub benefits: Vec<BenefitBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BenefitBody {
    pub code: String,
    pub name: String,
    /// For a benefit with a value (an earning multiplier), as a decimal string.
    pub value: Option<String>,
}

impl From<&fidelis_store::TierStanding> for TierStandingBody {
    fn from(s: &fidelis_store::TierStanding) -> Self {
        Self {
            group: s.group.clone(),
            group_name: s.group_name.clone(),
            tier: s.tier.clone(),
            tier_name: s.tier_name.clone(),
            since: s.since,
            valid_until: s.valid_until,
            next_assessment_at: s.next_assessment_at,
            grace_until: s.grace_until,
            measure: s.measure.to_owned(),
            progress: s.progress,
            next_tier: s.next_tier.as_ref().map(|(c, _)| c.clone()),
            next_threshold: s.next_tier.as_ref().map(|(_, t)| *t),
            benefits: s
                .benefits
                .iter()
                .map(|b| BenefitBody {
                    code: b.code.to_string(),
                    name: b.name.clone(),
                    value: b.value.map(|v| v.to_string()),
                })
                .collect(),
        }
    }
}

/// An agent gives a member a tier by hand.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignTierRequest {
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub tier: String,
    /// Kept at least until then (RFC 3339); the end of the current period when absent.
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// Why (audited).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

/// Points sent from the path's member to another member.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Idempotency key: sending the same transfer again answers the first outcome.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    /// The receiving member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub to: String,
    /// A transferable currency (`transfer` in its definition).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    #[schema(minimum = 1)]
    pub points: i64,
}

/// Merging the path's member (a duplicate) into another.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The surviving member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub into: String,
}

/// What a merge did.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct MergeBody {
    pub source: String,
    pub survivor: String,
    /// Points moved per currency, each with its expiry date kept.
    pub moved: Vec<PointsBody>,
    pub tier_changes: Vec<TierChangeBody>,
}

/// Reinstating a member's expired points (an agent's action).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinstateRequest {
    /// Idempotency key.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    /// Why (audited).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

/// Creating a group (household).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// The group's external id (it has a ledger of its own).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub group: String,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub name: String,
    /// The share of each member's earned redeemable points that goes to the group.
    #[schema(minimum = 1, maximum = 100)]
    pub share_percent: i32,
    /// Who may spend the group's points: `owner` or `any_member`.
    #[schema(value_type = RedeemRuleName)]
    pub redeem: String,
    /// The owning member (who joins the group).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub owner: String,
}

/// Adding a member to a group.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
}

/// A group (household).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupBody {
    pub group: String,
    pub share_percent: i32,
    pub redeem: String,
    pub owner: String,
    pub members: Vec<String>,
    pub balances: Vec<CurrencyBalanceBody>,
}

/// A member spending the group's points.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRedemptionRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    /// The member redeeming (the group's rule must allow them).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
}

/// A voucher or badge a promotion awarded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RewardBody {
    /// `voucher` or `badge`.
    pub kind: String,
    /// The voucher definition or the badge.
    pub code: String,
    /// The code of the voucher issued (what the member shows at the till).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AwardBody {
    pub source: String,
    pub currency: String,
    pub points: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PointsBody {
    pub currency: String,
    pub points: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BalanceBody {
    pub currency: String,
    pub available: i64,
    pub pending: i64,
}

pub(crate) fn points(list: &[PointsOf]) -> Vec<PointsBody> {
    list.iter()
        .map(|p| PointsBody {
            currency: p.currency.to_string(),
            points: p.points,
        })
        .collect()
}

impl OutcomeBody {
    /// What a partner sees of an outcome: what this journal did with its own points and
    /// the promotions that applied to it. Nothing of the member's standing — balances,
    /// expiries and releases settled before it, tier changes, shares pooled to a
    /// household, verdicts of promotions that did not apply (a condition on the tier or
    /// the progress says something about the member) — since partners may not read
    /// members, and an outcome must not be the way round that.
    pub fn for_partner(mut self) -> Self {
        self.balances.clear();
        self.expired.clear();
        self.released.clear();
        self.reset.clear();
        self.pooled.clear();
        self.tier_changes.clear();
        self.promotions.retain(|p| p.result == "applied");
        self
    }

    pub fn new(o: &Outcome, replayed: bool) -> Self {
        Self {
            status: if o.status.is_empty() {
                "processed".into()
            } else {
                o.status.to_string()
            },
            hold: o.hold.as_ref().map(|h| HoldReasonBody {
                rule: h.rule.clone(),
                reason: h.reason.clone(),
            }),
            external_id: o
                .external_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            journal_type: o
                .journal_type
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            replayed,
            awards: o
                .awards
                .iter()
                .map(|a: &Award| AwardBody {
                    source: a.source.to_string(),
                    currency: a.currency.to_string(),
                    points: a.points,
                })
                .collect(),
            debited: points(&o.debited),
            reversed: points(&o.reversed),
            unrecovered: points(&o.unrecovered),
            already_expired: points(&o.already_expired),
            restored: points(&o.restored),
            expired: points(&o.expired),
            released: points(&o.released),
            reset: points(&o.reset),
            pooled: points(&o.pooled),
            tier_changes: o.tier_changes.iter().map(TierChangeBody::from).collect(),
            refunded_amount: o.refunded_amount.clone(),
            promotions: o
                .promotions
                .iter()
                .map(|p| PromotionResultBody {
                    promotion: p.promotion.to_string(),
                    result: p.result.to_string(),
                    detail: p.detail.clone(),
                    points: points(&p.points),
                    rewards: p
                        .rewards
                        .iter()
                        .map(|r| RewardBody {
                            kind: r.kind.to_string(),
                            code: r.code.to_string(),
                            voucher: r.voucher.clone(),
                        })
                        .collect(),
                })
                .collect(),
            balances: o
                .balances
                .iter()
                .map(|b: &Balance| BalanceBody {
                    currency: b.currency.to_string(),
                    available: b.available,
                    pending: b.pending,
                })
                .collect(),
        }
    }
}

/// Enrolling a member.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The member's external id (the operator's customer number).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    /// Name, email, phone, birth date, custom attributes.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub profile: Option<serde_json::Map<String, serde_json::Value>>,
    /// RFC 3339; now when absent.
    #[schema(format = DateTime)]
    pub enrolled_at: Option<String>,
    /// Another member's referral code: that member referred this one.
    pub referral_code: Option<String>,
    /// `true`: also create a one-time link with which the member sets a portal password
    /// (answered once, as `portal_link`).
    #[serde(default)]
    pub portal_link: Option<bool>,
    /// The member's consents per channel, dated now (a channel left out: no consent).
    #[serde(default, deserialize_with = "crate::extract::object::optional")]
    pub consents: Option<ConsentsRequest>,
}

/// Consents to be contacted, per channel: `true` given, `false` withdrawn, absent unchanged.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentsRequest {
    #[serde(default)]
    pub email: Option<bool>,
    #[serde(default)]
    pub sms: Option<bool>,
    #[serde(default)]
    pub push: Option<bool>,
}

impl ConsentsRequest {
    /// The channels named, with their answer.
    pub fn changes(&self) -> Vec<(&'static str, bool)> {
        [
            ("email", self.email),
            ("sms", self.sms),
            ("push", self.push),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.map(|v| (c, v)))
        .collect()
    }
}

/// A one-time portal link: the member opens it and chooses a password.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortalLinkBody {
    /// The link's path on this server (`/portal/{program}/link/{secret}`): shown once.
    pub link: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberBody {
    pub member: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    pub enrolled_at: DateTime<Utc>,
    /// The code others enrol with to be referred by this member.
    pub referral_code: Option<String>,
    /// Who referred this member.
    pub referred_by: Option<String>,
    /// For a member merged into another: the survivor.
    pub merged_into: Option<String>,
    /// The group (household) the member belongs to: `GET /programs/{program}/groups/{group}`.
    pub group: Option<String>,
    pub balances: Vec<CurrencyBalanceBody>,
    /// Only when enrolment asked for one (`portal_link: true`): the one-time portal link,
    /// shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal_link: Option<PortalLinkBody>,
}

/// A member's balance in one currency, with what expires and becomes available when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencyBalanceBody {
    pub currency: String,
    /// `redeemable` or `qualifying`.
    pub kind: String,
    pub available: i64,
    pub pending: i64,
    pub arrears: i64,
    /// Reserved by open holds (pay with points) and not in `available` until captured or
    /// released; the holds open now, whatever `as_of`.
    pub held: i64,
    pub expiring: Vec<ScheduleBody>,
    pub releasing: Vec<ScheduleBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleBody {
    pub at: DateTime<Utc>,
    pub points: i64,
}

impl From<&fidelis_store::BalanceView> for CurrencyBalanceBody {
    fn from(b: &fidelis_store::BalanceView) -> Self {
        let schedule = |s: &[fidelis_store::ScheduledPoints]| {
            s.iter()
                .map(|p| ScheduleBody {
                    at: p.at,
                    points: p.points,
                })
                .collect()
        };
        Self {
            currency: b.currency.clone(),
            kind: b.kind.to_owned(),
            available: b.available,
            pending: b.pending,
            arrears: b.arrears,
            held: b.held,
            expiring: schedule(&b.expiring),
            releasing: schedule(&b.releasing),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalancesBody {
    pub member: String,
    pub as_of: DateTime<Utc>,
    pub balances: Vec<CurrencyBalanceBody>,
}

/// A member's standing in the promotions that count: cumulative progress toward targets,
/// and limits used.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromotionStandingBody {
    pub member: String,
    pub progress: Vec<ProgressBody>,
    pub limits_used: Vec<LimitUsedBody>,
    /// The opt-in promotions the member joined.
    pub joined: Vec<String>,
}

/// Progress of a cumulative promotion in one period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressBody {
    pub promotion: String,
    /// The period (`q:2026-Q2`, `m:2026-06`…); empty over the promotion's life.
    pub period: String,
    /// `count` or `amount`.
    pub measure: String,
    /// Toward the target: a count, or money (`"233.00"`).
    pub progress: String,
    pub target: String,
    /// How often the target was reached in this period.
    pub completed: i64,
}

/// What a member used of a promotion's limits in one period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LimitUsedBody {
    pub promotion: String,
    /// The period (`d:2026-06-13`, `w:2026-W24`, `m:2026-06`, `q:2026-Q2`, `y:2026`);
    /// empty over the promotion's life.
    pub period: String,
    pub times: i64,
    pub points: i64,
}

/// A page of members.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberListPage {
    pub members: Vec<MemberListItem>,
    /// Pass as `cursor` (with the same `sort`) for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A member as listed: who, status, tiers and recorded balances.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberListItem {
    pub member: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    pub enrolled_at: DateTime<Utc>,
    /// The tier held in each tier group.
    pub tiers: Vec<HeldTierBody>,
    /// Balances as recorded by the member's last journal or job run (the member's own
    /// page counts expiries and releases due since).
    pub balances: Vec<ListedBalanceBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeldTierBody {
    pub group: String,
    pub tier: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListedBalanceBody {
    pub currency: String,
    pub available: i64,
    pub pending: i64,
}

/// A page of ledger entries, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerPage {
    pub entries: Vec<EntryBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryBody {
    pub journal: Option<String>,
    pub journal_type: String,
    pub currency: String,
    /// `earn`, `redeem`, `refund`, `cancel`, `adjust`, `expire`, `release`, `arrears_recovery`.
    pub kind: String,
    /// `available` or `pending`.
    pub pool: String,
    pub points: i64,
    pub effective_at: DateTime<Utc>,
    /// For points earned (`earn`): what the journal awarded in this currency, by source —
    /// `base`, the code of each promotion that fired, `adjustment`, `reinstatement`, ….
    pub awards: Vec<AwardBody>,
}

/// Spending points.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    /// A loyalty currency code (`points`).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
    /// RFC 3339; now when absent.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// The partner where the points were spent: at most 128 printable characters.
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub partner: Option<String>,
}

/// A manual correction by an agent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    /// Positive to credit, negative to debit.
    pub points: i64,
    /// A reason code (`goodwill`, `service_failure`…).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub reason: String,
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
}

/// A member's new profile, replacing the old one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// The whole profile (a JSON object; see enrolment): fields left out are removed.
    #[schema(value_type = Object)]
    pub profile: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `active`, `suspended` or `closed`.
    #[schema(value_type = MemberStatusName)]
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsRequest {
    /// RFC 3339; now when absent.
    #[schema(format = DateTime)]
    pub as_of: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobsReport {
    pub as_of: DateTime<Utc>,
    /// Members whose expiries or releases were due.
    pub members: u64,
    /// Settlement journals written.
    pub settlements: u64,
    /// Scheduled rewards (birthday, anniversary, win-back) awarded.
    pub scheduled_rewards: u64,
    /// Holds (pay with points) released because their end passed.
    pub holds_released: u64,
    /// Members per segment after the segments' refresh (absent for a program without
    /// segments). A refresh as of an instant already refreshed changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<std::collections::BTreeMap<String, u64>>,
}

/// The scheduled rewards a job run would award (a dry run).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduledRewardsDue {
    pub as_of: DateTime<Utc>,
    pub rewards: Vec<DueRewardBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DueRewardBody {
    pub promotion: String,
    /// `birthday`, `anniversary` or `inactivity`.
    pub trigger: String,
    pub member: String,
    /// The year, or the inactive stretch (`since-…`, `never-active`): once per period.
    pub period: String,
    pub currency: String,
    pub points: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgramSaved {
    pub code: String,
    pub revision: i32,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgramListItem {
    pub code: String,
    pub name: String,
    pub revision: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateBody {
    pub name: String,
    pub description: String,
}

/// A journal as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JournalBody {
    pub external_id: Option<String>,
    pub member: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub journal_type: String,
    /// `processed` or `cancelled`.
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    #[schema(value_type = Option<Object>)]
    pub document: Option<serde_json::Value>,
    /// What processing it did, as first answered (for a partner, without the member's
    /// balances); absent for entries written without one.
    pub outcome: Option<OutcomeBody>,
}

/// One line's result in a batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchLineBody {
    pub line: u64,
    /// `processed`, `held` (by a fraud rule), `replayed` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BatchErrorBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchErrorBody {
    pub code: String,
    pub detail: String,
}

/// A role, as the `role` fields name it.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RoleName {
    Admin,
    ProgramManager,
    Agent,
    Partner,
    Member,
}

/// A permission a token can be narrowed to.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ScopeName {
    #[schema(rename = "programs:read")]
    ProgramsRead,
    #[schema(rename = "programs:write")]
    ProgramsWrite,
    #[schema(rename = "members:read")]
    MembersRead,
    #[schema(rename = "members:write")]
    MembersWrite,
    #[schema(rename = "journals:read")]
    JournalsRead,
    #[schema(rename = "journals:write")]
    JournalsWrite,
    #[schema(rename = "redemptions:write")]
    Redeem,
    #[schema(rename = "adjustments:write")]
    Adjust,
    #[schema(rename = "cancellations:write")]
    Cancel,
    #[schema(rename = "jobs:run")]
    JobsRun,
    #[schema(rename = "audit:read")]
    AuditRead,
    #[schema(rename = "tokens:manage")]
    TokensManage,
    #[schema(rename = "promotions:join")]
    JoinPromotions,
    #[schema(rename = "claims:write")]
    ClaimsWrite,
}

/// A member's status, as `PUT …/status` sets it.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MemberStatusName {
    Active,
    Suspended,
    Closed,
}

/// Who may spend a group's points.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RedeemRuleName {
    Owner,
    AnyMember,
}

/// Creating an API token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// `admin`, `program_manager`, `agent`, `partner` or `member`.
    #[schema(value_type = RoleName)]
    pub role: String,
    /// Limit the token to one program.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")]
    pub program: Option<String>,
    /// The partner a `partner` token acts for.
    pub partner: Option<String>,
    /// The member a `member` token acts for.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: Option<String>,
    /// Limit the token to these permissions (`journals:write`, `members:read`…).
    #[schema(value_type = Option<Vec<ScopeName>>)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenBody {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub program: Option<String>,
    pub partner: Option<String>,
    pub member: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenCreated {
    /// The token itself, shown this once: only its hash is stored.
    pub token: String,
    #[serde(flatten)]
    pub record: TokenBody,
}

impl From<&fidelis_store::TokenRecord> for TokenBody {
    fn from(t: &fidelis_store::TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            role: t.role.clone(),
            program: t.program.clone(),
            partner: t.partner.clone(),
            member: t.member.clone(),
            scopes: t
                .scopes
                .as_ref()
                .map(|s| s.split(',').map(str::to_owned).collect()),
            created_at: t.created_at,
            revoked: t.revoked,
        }
    }
}

/// Creating a user of the web pages.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub email: String,
    /// At least 12 characters; stored as an argon2id hash.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
    #[schema(value_type = RoleName)]
    pub role: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")]
    pub program: Option<String>,
    pub partner: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserCreated {
    pub id: i64,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditBody {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub program: Option<String>,
    pub subject: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Query parameters of list endpoints.
pub type Query = BTreeMap<String, String>;
