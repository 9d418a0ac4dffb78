//! Why a journal was refused. Each variant has a stable machine code, the `code` of the
//! API's problem+json answers and of import reports.

/// A journal that cannot be applied. Refusing one changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0:?} is not a journal type of this program")]
    UnknownJournalType(String),
    #[error("{0:?} is not a currency of this program")]
    UnknownCurrency(String),
    #[error("{0:?} is a qualifying currency; it cannot be redeemed")]
    NotRedeemable(String),
    #[error("this program prices journals in {expected}, not {given}")]
    UnsupportedMoneyCurrency { given: String, expected: String },
    #[error("occurred_at is in the future")]
    FutureDated,
    #[error("no member {0:?} in this program")]
    UnknownMember(String),
    #[error("{0:?} is a group: its points are spent through the group's redemptions, by its rule")]
    MemberIsGroup(String),
    #[error("the member is suspended: no earning or redemption until reactivated")]
    MemberSuspended,
    #[error("the member's account is closed")]
    MemberClosed,
    #[error("{0}")]
    BeforeEnrolment(String),
    #[error("{requested} {currency} requested, {spendable} spendable{}", pending_note(.pending, .releases_at))]
    InsufficientPoints {
        currency: String,
        spendable: i64,
        requested: i64,
        /// Points earned but still pending (within the return window): not spendable yet.
        pending: i64,
        /// When the first of them become available.
        releases_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    #[error("no journal {0:?} in this program")]
    UnknownOriginal(String),
    #[error("journal {0:?} belongs to another member")]
    OriginalOfAnotherMember(String),
    #[error("{0}")]
    NotRefundable(String),
    #[error("{0}")]
    RefundExceedsOriginal(String),
    #[error("journal {0:?} is already cancelled")]
    AlreadyCancelled(String),
    #[error("{0}")]
    NotCancellable(String),
    #[error("journal {0:?} was already posted with a different content")]
    IdempotencyConflict(String),
    #[error("no hold for order {0:?}")]
    UnknownHold(String),
    #[error("the hold for order {order:?} expired at {expired_at}; its points are released")]
    HoldExpired { order: String, expired_at: String },
    #[error("the hold for order {0:?} was captured already")]
    HoldCaptured(String),
    #[error("the hold for order {0:?} was released already")]
    HoldReleased(String),
    #[error(
        "partner {partner:?} has {left} points left in its prepaid pack; this journal would award {needed}"
    )]
    PartnerPackEmpty {
        partner: String,
        left: i64,
        needed: i64,
    },
}

impl JournalError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_journal",
            Self::UnknownJournalType(_) => "unknown_journal_type",
            Self::UnknownCurrency(_) => "unknown_currency",
            Self::NotRedeemable(_) => "currency_not_redeemable",
            Self::UnsupportedMoneyCurrency { .. } => "unsupported_money_currency",
            Self::FutureDated => "future_dated",
            Self::UnknownMember(_) => "unknown_member",
            Self::MemberIsGroup(_) => "member_is_group",
            Self::MemberSuspended => "member_suspended",
            Self::MemberClosed => "member_closed",
            Self::BeforeEnrolment(_) => "before_enrolment",
            Self::InsufficientPoints { .. } => "insufficient_points",
            Self::UnknownOriginal(_) => "unknown_original",
            Self::OriginalOfAnotherMember(_) => "original_member_mismatch",
            Self::NotRefundable(_) => "not_refundable",
            Self::RefundExceedsOriginal(_) => "refund_exceeds_original",
            Self::AlreadyCancelled(_) => "already_cancelled",
            Self::NotCancellable(_) => "not_cancellable",
            Self::IdempotencyConflict(_) => "idempotency_conflict",
            Self::UnknownHold(_) => "unknown_hold",
            Self::HoldExpired { .. } => "hold_expired",
            Self::HoldCaptured(_) => "hold_captured",
            Self::HoldReleased(_) => "hold_released",
            Self::PartnerPackEmpty { .. } => "partner_pack_empty",
        }
    }
}

/// ", 120 more pending (the first available 2026-12-08T10:00:00Z)" when points are pending.
fn pending_note(pending: &i64, releases_at: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    match (*pending, *releases_at) {
        (0, _) => String::new(),
        (p, Some(at)) => format!(
            "; {p} more pending, the first available {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (p, None) => format!("; {p} more pending"),
    }
}
