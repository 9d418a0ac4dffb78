//! Webhooks: a program's subscriptions to its events, their deliveries (with the dead
//! ones replayable), secret rotation and a test send. See [`crate::webhooks`] for what a
//! receiver gets and how to verify it.
//!
//! Program administrators only (`programs:write`; never partners or members): a
//! subscription sends the program's events, members' data included, to an address of the
//! operator's choosing.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use fidelis_store::{DeliveryView, EVENT_TYPES, NewWebhook, WebhookView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, program as require_program};
use crate::AppState;
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(test_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay))
}

/// What a subscription's address must look like (the same pattern is in the OpenAPI
/// document): http or https, a host name with a top-level domain, `localhost` or an IPv4
/// address, an optional port, path and query — no user or password.
pub const URL_PATTERN: &str = r"^https?://(localhost|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|([a-z0-9]+(-[a-z0-9]+)*\.)+[a-z]{2,63})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$";

static URL_RE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(URL_PATTERN).expect("the URL pattern compiles"));

const PROGRAM_PARAM: &str = "The program's code";
const WEBHOOK_PARAM: &str = "The webhook's id";

/// A subscription to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where events are POSTed.
    #[schema(
        max_length = 2000,
        pattern = "^https?://(localhost|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|([a-z0-9]+(-[a-z0-9]+)*\\.)+[a-z]{2,63})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$",
        example = "https://hooks.example.com/fidelis"
    )]
    pub url: String,
    /// Event types (`member.enrolled`, `points.earned`, `points.redeemed`, `points.expiring`, `tier.changed`,
    /// `voucher.issued`, `claim.decided`, `partner.pack_low`), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 20)]
    pub events: Vec<EventType>,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

/// An event type a subscription may name, or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "member.enrolled")]
    MemberEnrolled,
    #[serde(rename = "points.earned")]
    PointsEarned,
    #[serde(rename = "points.redeemed")]
    PointsRedeemed,
    #[serde(rename = "points.expiring")]
    PointsExpiring,
    #[serde(rename = "tier.changed")]
    TierChanged,
    #[serde(rename = "voucher.issued")]
    VoucherIssued,
    #[serde(rename = "claim.decided")]
    ClaimDecided,
    #[serde(rename = "partner.pack_low")]
    PartnerPackLow,
    #[serde(rename = "journal.held")]
    JournalHeld,
    #[serde(rename = "journal.released")]
    JournalReleased,
    #[serde(rename = "journal.rejected")]
    JournalRejected,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            Self::All => "*",
            Self::MemberEnrolled => "member.enrolled",
            Self::PointsEarned => "points.earned",
            Self::PointsRedeemed => "points.redeemed",
            Self::PointsExpiring => "points.expiring",
            Self::TierChanged => "tier.changed",
            Self::VoucherIssued => "voucher.issued",
            Self::ClaimDecided => "claim.decided",
            Self::PartnerPackLow => "partner.pack_low",
            Self::JournalHeld => "journal.held",
            Self::JournalReleased => "journal.released",
            Self::JournalRejected => "journal.rejected",
        }
    }
}

/// A subscription (its secret is shown only when created or rotated).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookBody {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    /// Off: new events are not sent to it.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    /// Until when the secret before the last rotation still signs (a second `v1=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Deliveries waiting (or between attempts), delivered, and dead.
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    /// The signing secret: only in the answer that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookBody {
    fn new(v: WebhookView, secret: Option<String>) -> Self {
        Self {
            id: v.id,
            url: v.url,
            events: v.events,
            description: v.description,
            active: v.active,
            created_at: v.created_at,
            previous_secret_until: v.previous_secret_until,
            pending: v.pending,
            delivered: v.delivered,
            dead: v.dead,
            secret,
        }
    }
}

/// The program's webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookBody>,
}

/// A change of a subscription.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    pub active: bool,
}

/// A rotation: how long the old secret keeps signing beside the new one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Hours (24 by default; 0 stops the old secret at once).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 168)]
    pub grace_hours: Option<i64>,
}

/// A delivery of an event to a subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryBody {
    pub id: i64,
    /// The event's id: the receiver's idempotency key.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    /// The receiver's last HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryView> for DeliveryBody {
    fn from(d: DeliveryView) -> Self {
        Self {
            id: d.id,
            event_id: crate::webhooks::event_id(d.event_id),
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
        }
    }
}

/// A subscription's deliveries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryBody>,
}

/// Which dead deliveries to send again.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// One delivery; all the subscription's dead ones when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub delivery: Option<i64>,
}

/// How many dead deliveries were sent back to the queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayBody {
    pub replayed: u64,
}

/// What a test send came to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestBody {
    /// The receiver answered 2xx.
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn may_manage(caller: &Caller, code: &str) -> ApiResult<()> {
    caller.require(Permission::ProgramsWrite, Some(code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden("webhooks are for the program's staff"));
    }
    Ok(())
}

/// The program's webhook `id`, or 404.
async fn webhook(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    id: i64,
) -> ApiResult<WebhookView> {
    state
        .store
        .webhooks(program)
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| unknown(id))
}

fn unknown(id: i64) -> ApiError {
    ApiError::not_found(
        "unknown_webhook",
        format!("no webhook {id} in this program"),
    )
}

/// The program's webhooks, with their deliveries counted.
#[utoipa::path(get, path = "/programs/{program}/webhooks", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    responses((status = 200, body = WebhookList, description = "The webhooks"), Problems))]
pub(crate) async fn list_webhooks(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
) -> ApiResult<axum::Json<WebhookList>> {
    may_manage(&caller, &code)?;
    let program = require_program(&state, &code).await?;
    let webhooks = state.store.webhooks(&program).await?;
    Ok(axum::Json(WebhookList {
        webhooks: webhooks
            .into_iter()
            .map(|w| WebhookBody::new(w, None))
            .collect(),
    }))
}

/// Subscribes an address to the program's events. The answer holds the signing secret,
/// shown this once. Audited (without the secret).
#[utoipa::path(post, path = "/programs/{program}/webhooks", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = WebhookRequest,
    responses((status = 201, body = WebhookBody, description = "Subscribed; `secret` is shown only here"), Problems))]
pub(crate) async fn create_webhook(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<WebhookRequest>,
) -> ApiResult<Response> {
    may_manage(&caller, &code)?;
    if request.url.len() > 2000 || !URL_RE.is_match(&request.url) {
        return Err(ApiError::unprocessable(
            "invalid_webhook",
            "url: an http or https address with a host name, localhost or an IPv4 address, and no user or password",
        ));
    }
    let description = request.description.unwrap_or_default();
    if description.chars().count() > 200 || description.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_webhook",
            "description: at most 200 characters, no control characters",
        ));
    }
    if request.events.is_empty() || request.events.len() > 20 {
        return Err(ApiError::unprocessable(
            "invalid_webhook",
            format!(
                "events: between 1 and 20 of {}, or \"*\"",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    let mut events: Vec<String> = Vec::new();
    for e in &request.events {
        if !events.iter().any(|x| x == e.name()) {
            events.push(e.name().to_owned());
        }
    }
    if events.iter().any(|e| e == "*") {
        events = vec!["*".to_owned()];
    }
    let program = require_program(&state, &code).await?;
    let secret = crate::webhooks::new_secret();
    let new = NewWebhook {
        url: request.url,
        events,
        description,
        secret: secret.clone(),
    };
    let now = Utc::now();
    let mut audit = caller
        .actor()
        .entry(now, "webhook.create", Some(&code), Some(&new.url));
    audit.after = Some(serde_json::json!({"url": new.url, "events": new.events}));
    let view = state
        .store
        .create_webhook(&program, &new, &audit, now)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(WebhookBody::new(view, Some(secret))),
    )
        .into_response())
}

/// Turns a webhook on or off (off: new events are not sent to it). Audited.
#[utoipa::path(patch, path = "/programs/{program}/webhooks/{webhook}", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1)),
    request_body = WebhookUpdate,
    responses((status = 200, body = WebhookBody, description = "Changed"), Problems))]
pub(crate) async fn update_webhook(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
    ApiJson(request): ApiJson<WebhookUpdate>,
) -> ApiResult<axum::Json<WebhookBody>> {
    may_manage(&caller, &code)?;
    let program = require_program(&state, &code).await?;
    let now = Utc::now();
    let mut audit = caller
        .actor()
        .entry(now, "webhook.update", Some(&code), Some(&id.to_string()));
    audit.after = Some(serde_json::json!({"active": request.active}));
    if !state
        .store
        .set_webhook_active(&program, id, request.active, &audit)
        .await?
    {
        return Err(unknown(id));
    }
    let view = webhook(&state, &program, id).await?;
    Ok(axum::Json(WebhookBody::new(view, None)))
}

/// Deletes a webhook and its deliveries. Audited.
#[utoipa::path(delete, path = "/programs/{program}/webhooks/{webhook}", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1)),
    responses((status = 204, description = "Deleted"), Problems))]
pub(crate) async fn delete_webhook(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    may_manage(&caller, &code)?;
    let program = require_program(&state, &code).await?;
    let audit = caller.actor().entry(
        Utc::now(),
        "webhook.delete",
        Some(&code),
        Some(&id.to_string()),
    );
    if state.store.delete_webhook(&program, id, &audit).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown(id))
    }
}

/// Gives a webhook a new signing secret (in the answer, shown this once). The old one
/// keeps signing beside it — a second `v1=` — for `grace_hours` (24 by default), so the
/// receiver can switch without refusing an event. Audited (without secrets).
#[utoipa::path(post, path = "/programs/{program}/webhooks/{webhook}/rotate-secret", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1)),
    request_body = RotateRequest,
    responses((status = 200, body = WebhookBody, description = "Rotated; `secret` is the new one"), Problems))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
    ApiJson(request): ApiJson<RotateRequest>,
) -> ApiResult<axum::Json<WebhookBody>> {
    may_manage(&caller, &code)?;
    let hours = request.grace_hours.unwrap_or(24);
    if !(0..=168).contains(&hours) {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "grace_hours: between 0 and 168",
        ));
    }
    let program = require_program(&state, &code).await?;
    let now = Utc::now();
    let secret = crate::webhooks::new_secret();
    let mut audit = caller
        .actor()
        .entry(now, "webhook.rotate", Some(&code), Some(&id.to_string()));
    audit.after = Some(serde_json::json!({"grace_hours": hours}));
    if !state
        .store
        .rotate_webhook_secret(
            &program,
            id,
            &secret,
            now + chrono::Duration::hours(hours),
            &audit,
        )
        .await?
    {
        return Err(unknown(id));
    }
    let view = webhook(&state, &program, id).await?;
    Ok(axum::Json(WebhookBody::new(view, Some(secret))))
}

/// Sends a `webhook.test` event to the webhook now, signed like any other, and answers
/// what the receiver said. Nothing is stored.
#[utoipa::path(post, path = "/programs/{program}/webhooks/{webhook}/test", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1)),
    responses((status = 200, body = TestBody, description = "What the receiver answered"), Problems))]
pub(crate) async fn test_webhook(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
) -> ApiResult<axum::Json<TestBody>> {
    may_manage(&caller, &code)?;
    let program = require_program(&state, &code).await?;
    Ok(axum::Json(send_test(&state, &program, id).await?))
}

/// Sends the test event (the API's route and the console's button).
pub(crate) async fn send_test(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    id: i64,
) -> ApiResult<TestBody> {
    let now = Utc::now();
    let (url, secrets) = state
        .store
        .webhook_target(program, id, now)
        .await?
        .ok_or_else(|| unknown(id))?;
    let client = crate::webhooks::client(
        std::time::Duration::from_secs(5),
        state.config.webhooks_public_only,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "building the webhook client");
        ApiError::internal()
    })?;
    let event = fidelis_store::EventEnvelope {
        id: 0,
        program: program.program.code.to_string(),
        kind: "webhook.test".into(),
        occurred_at: now,
        payload: serde_json::json!({"webhook": id}),
    };
    Ok(
        // A test is not an event of the outbox: an id of its own each time, so a receiver
        // deduplicating by it does not drop the next test.
        match crate::webhooks::post(
            &client,
            &url,
            &secrets,
            (&event, &format!("evt_test_{}", now.timestamp_micros())),
            1,
            now,
        )
        .await
        {
            Ok(status) => TestBody {
                delivered: true,
                status: Some(status),
                error: None,
            },
            Err((status, error)) => TestBody {
                delivered: false,
                status,
                error: Some(error),
            },
        },
    )
}

/// A webhook's deliveries, newest first (`status=dead` for the dead-letter list).
#[utoipa::path(get, path = "/programs/{program}/webhooks/{webhook}/deliveries", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1),
           ("status" = Option<String>, Query, description = "`pending`, `delivered` or `dead`", pattern = "^(pending|delivered|dead)$"),
           ("limit" = Option<i64>, Query, description = "At most this many (100 by default, at most 1000)", minimum = 1, maximum = 1000)),
    responses((status = 200, body = DeliveryList, description = "The deliveries"), Problems))]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<DeliveryList>> {
    may_manage(&caller, &code)?;
    let status = query.get("status").map(String::as_str);
    if let Some(s) = status
        && !matches!(s, "pending" | "delivered" | "dead")
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status: pending, delivered or dead",
        ));
    }
    let limit = match query.get("limit") {
        None => 100,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_query", "limit: 1 to 1000"))?,
    };
    let program = require_program(&state, &code).await?;
    webhook(&state, &program, id).await?;
    let deliveries = state
        .store
        .webhook_deliveries(&program, id, status, limit)
        .await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.into_iter().map(DeliveryBody::from).collect(),
    }))
}

/// Sends a webhook's dead deliveries again from a first attempt — all of them, or the one
/// named. Audited.
#[utoipa::path(post, path = "/programs/{program}/webhooks/{webhook}/replay", tag = "webhooks",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("webhook" = i64, Path, description = WEBHOOK_PARAM, minimum = 1)),
    request_body = ReplayRequest,
    responses((status = 200, body = ReplayBody, description = "How many were queued again"), Problems))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, id)): Path<(String, i64)>,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> ApiResult<axum::Json<ReplayBody>> {
    may_manage(&caller, &code)?;
    if request.delivery.is_some_and(|d| d < 1) {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "delivery: a delivery's id, from 1",
        ));
    }
    let program = require_program(&state, &code).await?;
    webhook(&state, &program, id).await?;
    let now = Utc::now();
    let audit = caller
        .actor()
        .entry(now, "webhook.replay", Some(&code), Some(&id.to_string()));
    let replayed = state
        .store
        .replay_deliveries(&program, id, request.delivery, &audit, now)
        .await?;
    Ok(axum::Json(ReplayBody { replayed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_enum_names_every_event_type_the_store_writes() {
        let all = [
            EventType::MemberEnrolled,
            EventType::PointsEarned,
            EventType::PointsRedeemed,
            EventType::PointsExpiring,
            EventType::TierChanged,
            EventType::VoucherIssued,
            EventType::ClaimDecided,
            EventType::PartnerPackLow,
        ];
        assert_eq!(all.map(EventType::name).as_slice(), EVENT_TYPES);
    }

    #[test]
    fn the_url_pattern_takes_addresses_and_refuses_the_rest() {
        for ok in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com/fidelis?x=1",
            "http://localhost:9/",
            "http://127.0.0.1:65535/x",
        ] {
            assert!(URL_RE.is_match(ok), "{ok}");
            assert!(reqwest::Url::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "http://999.1.1.1/",
            "http://127.0.0.1:65536/",
            "http://a.1/",
            "http://example.com/ space",
        ] {
            assert!(!URL_RE.is_match(bad), "{bad}");
        }
    }
}
