//! Journals: every event that may change points.
//!
//! A [`JournalDocument`] comes from outside; [`Journal::parse`] checks it against the
//! program once and yields a [`Journal`] whose fields are all valid. Processing a journal
//! against a member's ledger is [`crate::process`].

mod document;
mod error;

use chrono::{DateTime, Utc};

pub use document::{JournalDocument, LineDocument, decimal_text};
pub use error::JournalError;

use crate::ids::{Code, CurrencyIx, ExternalId};
use crate::money::MinorUnits;
use crate::program::{CurrencyKind, PURCHASE, Program};

/// The most lines a journal may carry.
pub const MAX_LINES: usize = 1_000;
/// The most custom attributes a journal may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// The largest number of points a single redemption or adjustment may move.
pub const MAX_POINTS: i64 = 1_000_000_000_000;
/// The longest free text (sku, category, channel, store, partner) accepted.
pub const MAX_TEXT: usize = 128;

/// A validated journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub external_id: ExternalId,
    pub member: ExternalId,
    pub occurred_at: DateTime<Utc>,
    pub body: JournalBody,
}

/// What a journal does.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalBody {
    /// Earning: a purchase, or an activity type the program declares.
    Accrual(Accrual),
    /// Part or all of an earlier accrual comes back.
    Refund(Refund),
    Redemption {
        currency: CurrencyIx,
        points: i64,
        /// The partner where the points were spent (a partner's own redemption).
        partner: Option<String>,
        /// Set by the store, never read from a document: a fraud rule held this redemption
        /// and its points were reserved by this hold (see [`review_order`]). Processing
        /// the released redemption captures the hold instead of spending from the buckets,
        /// so it succeeds with exactly the points reserved, whatever expired meanwhile.
        reserved: Option<ExternalId>,
    },
    /// A manual correction by an agent, positive or negative.
    Adjustment {
        currency: CurrencyIx,
        points: i64,
        reason: Code,
    },
    /// Reverses every ledger entry of an earlier journal.
    Cancellation { original: ExternalId },
    /// Pay with points, first phase: points reserved for an order until `until`, spent
    /// from the buckets as a redemption would, not spendable elsewhere while held. Its
    /// external id is `hold:` and the order's id, so an order holds once.
    Hold {
        currency: CurrencyIx,
        points: i64,
        until: DateTime<Utc>,
        partner: Option<String>,
    },
    /// The held points become a redemption (external id `capture:` and the order's id).
    Capture { original: ExternalId },
    /// The held points go back to the buckets they came from (external id `release:` and
    /// the order's id).
    Release { original: ExternalId },
}

/// The prefixes of the external ids of a hold, its capture and its release.
pub const HOLD_PREFIX: &str = "hold:";
pub const CAPTURE_PREFIX: &str = "capture:";
pub const RELEASE_PREFIX: &str = "release:";
/// The orders Fidelis keeps for itself: the points of a held redemption or transfer are
/// reserved by the hold of order `review:` and the journal's external id (see
/// [`review_order`]). A document naming such an order is refused, so no client can
/// capture or release a reservation the review owns.
pub const REVIEW_PREFIX: &str = "review:";

/// The order whose hold reserves the points of the held journal `external_id`:
/// `review:` and the external id, or — when that would not fit in an external id with the
/// hold's prefix — `review:#` and the SHA-256 of the external id in hex (128 bits).
pub fn review_order(external_id: &str) -> String {
    let plain = format!("{REVIEW_PREFIX}{external_id}");
    if plain.chars().count()
        + HOLD_PREFIX
            .len()
            .max(RELEASE_PREFIX.len())
            .max(CAPTURE_PREFIX.len())
        <= ExternalId::MAX_LEN
    {
        return plain;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(external_id.as_bytes());
    let mut out = format!("{REVIEW_PREFIX}#");
    for byte in &digest[..16] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl JournalBody {
    /// The journal's `type`, as written in documents.
    pub fn type_name(&self) -> &str {
        match self {
            Self::Accrual(a) => a.activity.as_str(),
            Self::Refund(_) => "refund",
            Self::Redemption { .. } => "redemption",
            Self::Adjustment { .. } => "adjustment",
            Self::Cancellation { .. } => "cancellation",
            Self::Hold { .. } => "hold",
            Self::Capture { .. } => "capture",
            Self::Release { .. } => "release",
        }
    }

    /// The journal's `type` as a code. Shared for accruals (the hot path); the other
    /// types are rare enough to build theirs.
    pub fn type_code(&self) -> Code {
        match self {
            Self::Accrual(a) => a.activity.clone(),
            other => {
                Code::parse(other.type_name()).expect("built-in journal types are valid codes")
            }
        }
    }

    /// The earlier journal a refund or cancellation refers to.
    pub fn original(&self) -> Option<&ExternalId> {
        match self {
            Self::Refund(r) => Some(&r.original),
            Self::Cancellation { original }
            | Self::Capture { original }
            | Self::Release { original } => Some(original),
            Self::Redemption { reserved, .. } => reserved.as_ref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accrual {
    pub activity: Code,
    pub subtype: Option<Code>,
    /// The amount spent, when the journal has one. With lines, their sum.
    pub amount: Option<MinorUnits>,
    pub lines: Vec<Line>,
    pub channel: Option<String>,
    pub store: Option<String>,
    pub partner: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line_id: String,
    pub sku: Option<String>,
    pub category: Option<String>,
    pub quantity: u32,
    /// The line's total.
    pub amount: MinorUnits,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub original: ExternalId,
    /// The refunded amount when no lines are given; `None` with no lines means everything
    /// not yet refunded.
    pub amount: Option<MinorUnits>,
    pub lines: Vec<RefundLine>,
    /// Where the goods came back (kept for reporting by store and channel).
    pub channel: Option<String>,
    pub store: Option<String>,
}

/// A refunded line: by quantity, by amount, or (neither) all of what remains of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundLine {
    pub line_id: String,
    pub quantity: Option<u32>,
    pub amount: Option<MinorUnits>,
}

impl Journal {
    /// Checks a document against a program.
    pub fn parse(doc: &JournalDocument, program: &Program) -> Result<Self, JournalError> {
        let invalid = |msg: String| JournalError::Invalid(msg);
        let external_id = required_id(&doc.external_id, "external_id")?;
        let member = required_id(&doc.member, "member")?;
        let kind = doc
            .kind
            .as_deref()
            .ok_or_else(|| invalid("type is required".into()))?;
        let occurred_at = doc
            .occurred_at
            .as_deref()
            .ok_or_else(|| invalid("occurred_at is required".into()))
            .and_then(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        invalid(format!(
                            "occurred_at {:?} is not an RFC 3339 timestamp such as \"2026-11-25T10:42:00+01:00\"",
                            truncate(raw)
                        ))
                    })
            })?;
        if occurred_at < program.starts_at {
            return Err(invalid(format!(
                "occurred_at {} is before the program began ({}; the program's starts_on)",
                occurred_at.to_rfc3339(),
                program.starts_at.to_rfc3339()
            )));
        }
        if kind != "hold" && doc.expires_at.is_some() {
            return Err(invalid(format!(
                "a {kind} journal has no expires_at; only holds do"
            )));
        }
        let body = match kind {
            "refund" => JournalBody::Refund(parse_refund(doc, program)?),
            "redemption" => {
                reject_fields(
                    doc,
                    kind,
                    &[
                        doc.amount.is_some(),
                        doc.lines.is_some(),
                        doc.original_external_id.is_some(),
                        doc.reason.is_some(),
                    ],
                )?;
                let (currency, points) = points_to_spend(doc, program)?;
                JournalBody::Redemption {
                    currency,
                    points,
                    partner: optional_text(&doc.partner, "partner")?,
                    reserved: None,
                }
            }
            "adjustment" => {
                reject_fields(
                    doc,
                    kind,
                    &[
                        doc.amount.is_some(),
                        doc.lines.is_some(),
                        doc.original_external_id.is_some(),
                    ],
                )?;
                let currency = loyalty_currency(doc, program)?;
                let points = doc
                    .points
                    .ok_or_else(|| invalid("points is required".into()))?;
                if points == 0 || points.unsigned_abs() > MAX_POINTS.unsigned_abs() {
                    return Err(invalid(format!(
                        "points must be non-zero and at most {MAX_POINTS} either way"
                    )));
                }
                let reason = doc
                    .reason
                    .as_deref()
                    .ok_or_else(|| invalid("an adjustment needs a reason code".into()))
                    .and_then(|r| {
                        Code::parse(r).map_err(|e| invalid(format!("reason {:?} {e}", truncate(r))))
                    })?;
                JournalBody::Adjustment {
                    currency,
                    points,
                    reason,
                }
            }
            "cancellation" => {
                reject_fields(
                    doc,
                    kind,
                    &[
                        doc.amount.is_some(),
                        doc.lines.is_some(),
                        doc.points.is_some(),
                    ],
                )?;
                let original = required_id(&doc.original_external_id, "original_external_id")?;
                if original == external_id {
                    return Err(invalid("a journal cannot cancel itself".into()));
                }
                JournalBody::Cancellation { original }
            }
            "hold" => {
                reject_fields(
                    doc,
                    kind,
                    &[
                        doc.amount.is_some(),
                        doc.lines.is_some(),
                        doc.original_external_id.is_some(),
                        doc.reason.is_some(),
                    ],
                )?;
                order_of(&external_id, HOLD_PREFIX)?;
                let (currency, points) = points_to_spend(doc, program)?;
                let until = doc
                    .expires_at
                    .as_deref()
                    .ok_or_else(|| invalid("a hold needs expires_at".into()))
                    .and_then(|raw| {
                        DateTime::parse_from_rfc3339(raw)
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|e| {
                                invalid(format!("expires_at is not an RFC 3339 instant: {e}"))
                            })
                    })?;
                if until <= occurred_at {
                    return Err(invalid("expires_at must be after occurred_at".into()));
                }
                JournalBody::Hold {
                    currency,
                    points,
                    until,
                    partner: optional_text(&doc.partner, "partner")?,
                }
            }
            "capture" | "release" => {
                reject_fields(
                    doc,
                    kind,
                    &[
                        doc.amount.is_some(),
                        doc.lines.is_some(),
                        doc.points.is_some(),
                        doc.reason.is_some(),
                        doc.expires_at.is_some(),
                    ],
                )?;
                let prefix = if kind == "capture" {
                    CAPTURE_PREFIX
                } else {
                    RELEASE_PREFIX
                };
                let order = order_of(&external_id, prefix)?;
                let original = ExternalId::parse(&format!("{HOLD_PREFIX}{order}"))
                    .map_err(|e| invalid(format!("the hold's external id {e}")))?;
                if doc
                    .original_external_id
                    .as_deref()
                    .is_some_and(|o| o != original.as_str())
                {
                    return Err(invalid(format!(
                        "a {kind} refers to the hold of its order, {original}"
                    )));
                }
                if kind == "capture" {
                    JournalBody::Capture { original }
                } else {
                    JournalBody::Release { original }
                }
            }
            activity if program.accepts_activity(activity) => {
                JournalBody::Accrual(parse_accrual(doc, program, activity)?)
            }
            other => return Err(JournalError::UnknownJournalType(truncate(other))),
        };
        Ok(Self {
            external_id,
            member,
            occurred_at,
            body,
        })
    }

    /// The canonical document: what the store keeps and compares replays with. Amounts
    /// carry exactly the currency's decimals and times are in UTC, so two documents that
    /// mean the same journal have the same canonical form.
    pub fn canonical(&self, program: &Program) -> JournalDocument {
        let money = program.money_currency;
        let mut doc = JournalDocument {
            external_id: Some(self.external_id.to_string()),
            member: Some(self.member.to_string()),
            kind: Some(self.body.type_name().to_owned()),
            occurred_at: Some(
                self.occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            ..JournalDocument::default()
        };
        match &self.body {
            JournalBody::Accrual(a) => {
                doc.subtype = a.subtype.as_ref().map(ToString::to_string);
                doc.amount = a.amount.map(|m| money.format(m));
                doc.currency = a.amount.map(|_| money.code().to_owned());
                doc.channel.clone_from(&a.channel);
                doc.store.clone_from(&a.store);
                doc.partner.clone_from(&a.partner);
                if !a.lines.is_empty() {
                    doc.lines = Some(
                        a.lines
                            .iter()
                            .map(|l| LineDocument {
                                line_id: Some(l.line_id.clone()),
                                sku: l.sku.clone(),
                                category: l.category.clone(),
                                quantity: Some(l.quantity),
                                amount: Some(money.format(l.amount)),
                                unit_price: None,
                            })
                            .collect(),
                    );
                }
                if !a.attributes.is_empty() {
                    doc.attributes = Some(a.attributes.clone());
                }
            }
            JournalBody::Refund(r) => {
                doc.original_external_id = Some(r.original.to_string());
                doc.channel.clone_from(&r.channel);
                doc.store.clone_from(&r.store);
                doc.amount = r.amount.map(|m| money.format(m));
                doc.currency = r.amount.map(|_| money.code().to_owned());
                if !r.lines.is_empty() {
                    doc.lines = Some(
                        r.lines
                            .iter()
                            .map(|l| LineDocument {
                                line_id: Some(l.line_id.clone()),
                                quantity: l.quantity,
                                amount: l.amount.map(|m| money.format(m)),
                                ..LineDocument::default()
                            })
                            .collect(),
                    );
                }
            }
            JournalBody::Redemption {
                currency,
                points,
                partner,
                reserved: _,
            } => {
                doc.currency = Some(program.currency(*currency).code.to_string());
                doc.points = Some(*points);
                doc.partner.clone_from(partner);
            }
            JournalBody::Adjustment {
                currency,
                points,
                reason,
            } => {
                doc.currency = Some(program.currency(*currency).code.to_string());
                doc.points = Some(*points);
                doc.reason = Some(reason.to_string());
            }
            JournalBody::Cancellation { original } => {
                doc.original_external_id = Some(original.to_string());
            }
            JournalBody::Hold {
                currency,
                points,
                until,
                partner,
            } => {
                doc.currency = Some(program.currency(*currency).code.to_string());
                doc.points = Some(*points);
                doc.partner.clone_from(partner);
                doc.expires_at = Some(until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            }
            JournalBody::Capture { .. } | JournalBody::Release { .. } => {}
        }
        doc
    }
}

/// The order id of a hold's, capture's or release's external id (`hold:A-1` is order
/// `A-1`).
pub fn order_of<'a>(external_id: &'a ExternalId, prefix: &str) -> Result<&'a str, JournalError> {
    let order = external_id
        .as_str()
        .strip_prefix(prefix)
        .filter(|order| !order.is_empty())
        .ok_or_else(|| {
            JournalError::Invalid(format!(
                "the external id of a {} is {prefix:?} followed by the order's id",
                prefix.trim_end_matches(':')
            ))
        })?;
    if order.starts_with(REVIEW_PREFIX) {
        return Err(JournalError::Invalid(format!(
            "orders starting with {REVIEW_PREFIX:?} are Fidelis's own: they reserve the points of journals held for review"
        )));
    }
    Ok(order)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn required_id(value: &Option<String>, field: &str) -> Result<ExternalId, JournalError> {
    let raw = value
        .as_deref()
        .ok_or_else(|| JournalError::Invalid(format!("{field} is required")))?;
    ExternalId::parse(raw).map_err(|e| JournalError::Invalid(format!("{field} {e}")))
}

fn optional_text(value: &Option<String>, field: &str) -> Result<Option<String>, JournalError> {
    match value.as_deref() {
        None => Ok(None),
        Some(s) if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) => {
            Err(JournalError::Invalid(format!(
                "{field} must be at most {MAX_TEXT} printable characters"
            )))
        }
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Refuses fields that mean nothing for a journal type, so a mistaken document is not
/// silently half-read.
fn reject_fields(doc: &JournalDocument, kind: &str, present: &[bool]) -> Result<(), JournalError> {
    let unexpected = present.iter().any(|p| *p)
        || (!matches!(kind, "adjustment" | "redemption" | "hold") && doc.points.is_some());
    if unexpected {
        return Err(JournalError::Invalid(format!(
            "a {kind} journal takes only its own fields; see the journal document in the API reference"
        )));
    }
    Ok(())
}

/// The currency and points a redemption or a hold spends: a redeemable currency, 1 to
/// [`MAX_POINTS`] points.
fn points_to_spend(
    doc: &JournalDocument,
    program: &Program,
) -> Result<(CurrencyIx, i64), JournalError> {
    let currency = loyalty_currency(doc, program)?;
    if program.currency(currency).kind == CurrencyKind::Qualifying {
        return Err(JournalError::NotRedeemable(
            program.currency(currency).code.to_string(),
        ));
    }
    let points = doc
        .points
        .ok_or_else(|| JournalError::Invalid("points is required".into()))?;
    if !(1..=MAX_POINTS).contains(&points) {
        return Err(JournalError::Invalid(format!(
            "points must be 1 to {MAX_POINTS}"
        )));
    }
    Ok((currency, points))
}

fn loyalty_currency(doc: &JournalDocument, program: &Program) -> Result<CurrencyIx, JournalError> {
    let code = doc.currency.as_deref().ok_or_else(|| {
        JournalError::Invalid("currency (a loyalty currency code) is required".into())
    })?;
    program
        .currency_ix(code)
        .ok_or_else(|| JournalError::UnknownCurrency(truncate(code)))
}

fn money_amount(raw: &str, field: &str, program: &Program) -> Result<MinorUnits, JournalError> {
    program
        .money_currency
        .parse_amount(raw)
        .map_err(|e| JournalError::Invalid(format!("{field}: {e}")))
}

fn check_money_currency(doc: &JournalDocument, program: &Program) -> Result<(), JournalError> {
    match doc.currency.as_deref() {
        Some(c) if c == program.money_currency.code() => Ok(()),
        Some(c) => Err(JournalError::UnsupportedMoneyCurrency {
            given: truncate(c),
            expected: program.money_currency.code().to_owned(),
        }),
        None => Err(JournalError::Invalid(
            "currency is required with an amount".into(),
        )),
    }
}

fn parse_accrual(
    doc: &JournalDocument,
    program: &Program,
    activity: &str,
) -> Result<Accrual, JournalError> {
    let invalid = |msg: String| JournalError::Invalid(msg);
    reject_fields(
        doc,
        activity,
        &[doc.original_external_id.is_some(), doc.reason.is_some()],
    )?;
    let lines = match &doc.lines {
        None => Vec::new(),
        Some(lines) if lines.len() > MAX_LINES => {
            return Err(invalid(format!("at most {MAX_LINES} lines are allowed")));
        }
        Some(lines) => lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_line(i, l, program))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (i, line) in lines.iter().enumerate() {
        if lines[..i].iter().any(|l| l.line_id == line.line_id) {
            return Err(invalid(format!(
                "lines[{i}].line_id {:?} appears twice",
                line.line_id
            )));
        }
    }
    let lines_total = lines.iter().map(|l| l.amount.0).sum::<i64>();
    let amount = match doc.amount.as_deref() {
        Some(raw) => {
            check_money_currency(doc, program)?;
            let amount = money_amount(raw, "amount", program)?;
            if !lines.is_empty() && amount.0 != lines_total {
                return Err(invalid(format!(
                    "amount {} differs from the sum of the lines, {}",
                    program.money_currency.format(amount),
                    program.money_currency.format(MinorUnits(lines_total))
                )));
            }
            Some(amount)
        }
        None if !lines.is_empty() => {
            check_money_currency(doc, program)?;
            Some(MinorUnits(lines_total))
        }
        None if activity == PURCHASE => return Err(invalid("a purchase needs an amount".into())),
        None => None,
    };
    let attributes = doc.attributes.clone().unwrap_or_default();
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid(format!(
            "at most {MAX_ATTRIBUTES} attributes are allowed"
        )));
    }
    let subtype = match doc.subtype.as_deref() {
        None => None,
        Some(s) => {
            Some(Code::parse(s).map_err(|e| invalid(format!("subtype {:?} {e}", truncate(s))))?)
        }
    };
    Ok(Accrual {
        activity: Code::parse(activity).map_err(|e| invalid(format!("type {e}")))?,
        subtype,
        amount,
        lines,
        channel: optional_text(&doc.channel, "channel")?,
        store: optional_text(&doc.store, "store")?,
        partner: optional_text(&doc.partner, "partner")?,
        attributes,
    })
}

fn parse_line(i: usize, l: &LineDocument, program: &Program) -> Result<Line, JournalError> {
    let invalid = |msg: String| JournalError::Invalid(format!("lines[{i}].{msg}"));
    let line_id = match l.line_id.as_deref() {
        Some(id)
            if !id.is_empty()
                && id.chars().count() <= MAX_TEXT
                && !id.chars().any(char::is_control) =>
        {
            id.to_owned()
        }
        _ => {
            return Err(invalid(format!(
                "line_id is required, 1 to {MAX_TEXT} printable characters"
            )));
        }
    };
    let quantity = l.quantity.unwrap_or(1);
    if quantity == 0 || quantity > 1_000_000 {
        return Err(invalid("quantity must be 1 to 1000000".into()));
    }
    let amount = match (l.amount.as_deref(), l.unit_price.as_deref()) {
        (Some(raw), None) => money_amount(raw, &format!("lines[{i}].amount"), program)?,
        (None, Some(raw)) => {
            let unit = money_amount(raw, &format!("lines[{i}].unit_price"), program)?;
            MinorUnits(unit.0 * i64::from(quantity))
        }
        (Some(_), Some(_)) => return Err(invalid("give amount or unit_price, not both".into())),
        (None, None) => return Err(invalid("amount is required".into())),
    };
    Ok(Line {
        line_id,
        sku: optional_text(&l.sku, &format!("lines[{i}].sku"))?,
        category: optional_text(&l.category, &format!("lines[{i}].category"))?,
        quantity,
        amount,
    })
}

fn parse_refund(doc: &JournalDocument, program: &Program) -> Result<Refund, JournalError> {
    let invalid = |msg: String| JournalError::Invalid(msg);
    reject_fields(
        doc,
        "refund",
        &[doc.reason.is_some(), doc.partner.is_some()],
    )?;
    let original = required_id(&doc.original_external_id, "original_external_id")?;
    let amount = match doc.amount.as_deref() {
        Some(raw) => {
            check_money_currency(doc, program)?;
            let amount = money_amount(raw, "amount", program)?;
            if amount.0 == 0 {
                return Err(invalid("a refund's amount must be positive".into()));
            }
            Some(amount)
        }
        None => None,
    };
    let lines = match &doc.lines {
        None => Vec::new(),
        Some(_) if amount.is_some() => {
            return Err(invalid(
                "a refund gives lines or an amount, not both".into(),
            ));
        }
        Some(lines) if lines.is_empty() || lines.len() > MAX_LINES => {
            return Err(invalid(format!("a refund gives 1 to {MAX_LINES} lines")));
        }
        Some(lines) => lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let line_id = l
                    .line_id
                    .clone()
                    .filter(|id| !id.is_empty() && id.chars().count() <= MAX_TEXT)
                    .ok_or_else(|| invalid(format!("lines[{i}].line_id is required")))?;
                if l.sku.is_some() || l.category.is_some() || l.unit_price.is_some() {
                    return Err(invalid(format!(
                        "lines[{i}]: a refund line takes line_id and quantity or amount"
                    )));
                }
                let amount = l
                    .amount
                    .as_deref()
                    .map(|raw| money_amount(raw, &format!("lines[{i}].amount"), program))
                    .transpose()?;
                if l.quantity == Some(0) || amount == Some(MinorUnits(0)) {
                    return Err(invalid(format!(
                        "lines[{i}]: refund a positive quantity or amount"
                    )));
                }
                if l.quantity.is_some() && amount.is_some() {
                    return Err(invalid(format!(
                        "lines[{i}]: give quantity or amount, not both"
                    )));
                }
                Ok(RefundLine {
                    line_id,
                    quantity: l.quantity,
                    amount,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (i, line) in lines.iter().enumerate() {
        if lines[..i].iter().any(|l| l.line_id == line.line_id) {
            return Err(invalid(format!(
                "lines[{i}].line_id {:?} appears twice",
                line.line_id
            )));
        }
    }
    Ok(Refund {
        original,
        amount,
        lines,
        channel: optional_text(&doc.channel, "channel")?,
        store: optional_text(&doc.store, "store")?,
    })
}
