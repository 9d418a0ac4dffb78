//! The journal document: one JSON object per journal, as `POST /journals` accepts it and
//! as each line of an NDJSON import holds it (see `API.md`).
//!
//! The store keeps the canonical form of each document (amounts normalised, times in
//! UTC) so that a replay can be compared with the first post: the same `external_id` with
//! a different document is refused.

use serde::{Deserialize, Serialize};

/// A journal as written by an integrating system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalDocument {
    /// Idempotency key, unique per program.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The member's external id.
    #[serde(default)]
    pub member: Option<String>,
    /// `purchase`, `refund`, `redemption`, `adjustment`, `cancellation`, or an activity
    /// type the program declares.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// RFC 3339, with an offset.
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// Money, as a decimal string (`"79.90"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "decimal_text"
    )]
    pub amount: Option<String>,
    /// The money currency of `amount` (ISO 4217) — or, for a redemption or an adjustment,
    /// the loyalty currency's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Points to redeem, or to adjust by (negative to take away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
    /// An adjustment's reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a refund or cancellation refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::objects::optional_list"
    )]
    pub lines: Option<Vec<LineDocument>>,
    /// Custom attributes, any JSON values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    /// A hold's end (RFC 3339): past it the hold can no longer be captured, and the jobs
    /// release it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// An order line: of a purchase (what was bought), or of a refund (what comes back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineDocument {
    #[serde(default)]
    pub line_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// The line's total.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "decimal_text"
    )]
    pub amount: Option<String>,
    /// The price of one unit; the line's total is `quantity × unit_price` when `amount`
    /// is absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "decimal_text"
    )]
    pub unit_price: Option<String>,
}

/// A money amount: a decimal string. A JSON number is refused with the reason — binary
/// floating point cannot hold `79.90` exactly, so an amount never travels as one.
pub fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text)),
        Some(serde_json::Value::Number(n)) => Err(serde::de::Error::custom(format!(
            "an amount is a decimal string such as \"{n}\", not the JSON number {n} (numbers are not exact)"
        ))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "an amount is a decimal string such as \"79.90\", not {other}"
        ))),
    }
}
