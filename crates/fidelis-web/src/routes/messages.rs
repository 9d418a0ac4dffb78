//! Messages to members: consents per channel, the program's e-mail templates (with a
//! preview), and the messages sent, deferred, suppressed or dead. See `crate::messages`
//! for how a message is made and sent.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use fidelis_core::messaging::LANGUAGES;
use fidelis_store::{ConsentView, MAIL_EVENTS, MessageTemplate, MessageView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::member;
use super::{Problems, program};
use crate::AppState;
use crate::auth::{Caller, Permission, Role};
use crate::dto::ConsentsRequest;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::messages::{Rendered, context, render, sample_event, shipped, template_for};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_consents, put_consents))
        .routes(routes!(list_message_templates))
        .routes(routes!(put_message_template, delete_message_template))
        .routes(routes!(preview_message_template))
        .routes(routes!(list_messages))
}

/// A member's consent to one channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsentBody {
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub granted: bool,
    /// When it was given or withdrawn.
    pub at: DateTime<Utc>,
    /// `enrollment`, `api`, `portal` or `console`.
    pub source: String,
}

impl From<ConsentView> for ConsentBody {
    fn from(c: ConsentView) -> Self {
        Self {
            channel: c.channel,
            granted: c.granted,
            at: c.at,
            source: c.source,
        }
    }
}

/// A member's consents (a channel never asked about is absent: no consent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsentList {
    pub consents: Vec<ConsentBody>,
}

const PROGRAM: &str = "The program's code";
const MEMBER: &str = "The member's external id";

/// The member's consents to e-mail, SMS and push, with when and how each was given.
/// Staff, and a member for itself.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/consents", tag = "members",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = MEMBER, example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = ConsentList, description = "The consents"), Problems))]
pub(crate) async fn get_consents(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Json<ConsentList>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let program = program(&state, &code).await?;
    let m = member(&state, &program, &external_id).await?;
    let consents = state.store.consents(&m).await?;
    Ok(Json(ConsentList {
        consents: consents.into_iter().map(Into::into).collect(),
    }))
}

/// Gives (`true`) or withdraws (`false`) consents; a channel left out is unchanged, and
/// one whose answer does not change keeps its date. A message waiting to be sent is not
/// sent once its channel's consent is withdrawn. Staff who may change members, and a
/// member for itself. Audited.
#[utoipa::path(put, path = "/programs/{program}/members/{member}/consents", tag = "members",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = MEMBER, example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = ConsentsRequest,
    responses((status = 200, body = ConsentList, description = "The consents"), Problems))]
pub(crate) async fn put_consents(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<ConsentsRequest>,
) -> ApiResult<Json<ConsentList>> {
    let source = if caller.role == Role::Member {
        caller.require(Permission::MembersRead, Some(&code))?;
        caller.require_member(&external_id)?;
        "member"
    } else {
        caller.require(Permission::MembersWrite, Some(&code))?;
        caller.require_member(&external_id)?;
        "api"
    };
    set_consents(&state, &caller, &code, &external_id, &request, source).await
}

/// Records consents for `member` from `source` (the API, the portal, the console).
pub(crate) async fn set_consents(
    state: &AppState,
    caller: &Caller,
    code: &str,
    external_id: &str,
    request: &ConsentsRequest,
    source: &str,
) -> ApiResult<Json<ConsentList>> {
    let program = program(state, code).await?;
    let m = member(state, &program, external_id).await?;
    let changes = request.changes();
    let now = Utc::now();
    let mut audit = caller
        .actor()
        .entry(now, "member.consents", Some(code), Some(external_id));
    audit.after = Some(serde_json::json!({
        "consents": changes.iter().map(|(c, g)| (c.to_string(), *g)).collect::<std::collections::BTreeMap<_, _>>(),
        "source": source,
    }));
    let consents = state
        .store
        .set_consents(&program, &m, &changes, source, now, &audit)
        .await?;
    Ok(Json(ConsentList {
        consents: consents.into_iter().map(Into::into).collect(),
    }))
}

/// An e-mail template: the program's own or the shipped one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageTemplateBody {
    pub event_type: String,
    /// `en` or `ja`.
    pub language: String,
    pub subject: String,
    pub text: String,
    /// The HTML part; absent: the text in a plain layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Sent in quiet hours too.
    pub urgent: bool,
    /// Off: the event sends no e-mail in this language.
    pub active: bool,
    /// Sent only to members in one of these segments (as of their last refresh); empty:
    /// to every member who consents.
    pub segments: Vec<String>,
    /// The program's own (true) or the shipped one.
    pub own: bool,
}

fn body(t: MessageTemplate, own: bool) -> MessageTemplateBody {
    MessageTemplateBody {
        event_type: t.event_type,
        language: t.language,
        subject: t.subject,
        text: t.text_body,
        html: t.html_body,
        urgent: t.urgent,
        active: t.active,
        segments: t.segments,
        own,
    }
}

/// Every e-mail template of the program, per event type and language.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageTemplateList {
    pub templates: Vec<MessageTemplateBody>,
}

fn may_manage(caller: &Caller, code: &str) -> ApiResult<()> {
    caller.require(Permission::ProgramsWrite, Some(code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden(
            "message templates are for the program's staff",
        ));
    }
    Ok(())
}

fn may_read(caller: &Caller, code: &str) -> ApiResult<()> {
    caller.require(Permission::ProgramsRead, Some(code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden("messages are for the program's staff"));
    }
    Ok(())
}

/// The program's e-mail templates: for every event type that sends e-mail and every
/// language, the program's own or else the shipped one. Staff.
#[utoipa::path(get, path = "/programs/{program}/message-templates", tag = "messages",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    responses((status = 200, body = MessageTemplateList, description = "The templates"), Problems))]
pub(crate) async fn list_message_templates(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
) -> ApiResult<Json<MessageTemplateList>> {
    may_read(&caller, &code)?;
    let program = program(&state, &code).await?;
    let own = state.store.message_templates(program.id).await?;
    let mut templates = Vec::new();
    for event in MAIL_EVENTS {
        for lang in LANGUAGES {
            let mine = own
                .iter()
                .find(|t| t.event_type == event && t.language == lang);
            if let Some(t) = mine.cloned().or_else(|| shipped(event, lang)) {
                templates.push(body(t, mine.is_some()));
            }
        }
    }
    Ok(Json(MessageTemplateList { templates }))
}

/// A template written by the program.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplateRequest {
    /// A minijinja template of one line.
    #[schema(min_length = 1, max_length = 500)]
    pub subject: String,
    #[schema(min_length = 1, max_length = 20000)]
    pub text: String,
    #[serde(default)]
    #[schema(max_length = 50000)]
    pub html: Option<String>,
    #[serde(default)]
    pub urgent: Option<bool>,
    #[serde(default)]
    pub active: Option<bool>,
    /// Send only to members in one of these segments of the program (as of their last
    /// refresh); absent or empty: to every member who consents. An unknown code is
    /// `422 unknown_segment`.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub segments: Option<Vec<String>>,
}

fn check_key(event_type: &str, language: &str) -> ApiResult<()> {
    if !MAIL_EVENTS.contains(&event_type) {
        return Err(ApiError::not_found(
            "unknown_event_type",
            format!(
                "no e-mail for {event_type:?}: the types are {}",
                MAIL_EVENTS.join(", ")
            ),
        ));
    }
    if !LANGUAGES.contains(&language) {
        return Err(ApiError::not_found(
            "unknown_language",
            format!("messages are written in {}", LANGUAGES.join(", ")),
        ));
    }
    Ok(())
}

/// Renders `template` for the made-up event of its type (the preview, and the check on
/// save): a template that does not render is `422 invalid_template` with the part and line.
fn try_render(
    template: &MessageTemplate,
    program: &fidelis_store::LoadedProgram,
) -> ApiResult<Rendered> {
    let ctx = context(
        (program.program.code.as_str(), program.program.name.as_str()),
        "C-100000",
        &serde_json::json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
        (
            1,
            &template.event_type,
            Utc::now(),
            &sample_event(&template.event_type),
        ),
        &template.language,
    );
    render(template, &ctx).map_err(|e| ApiError::unprocessable("invalid_template", e))
}

fn check_lengths(request: &MessageTemplateRequest) -> ApiResult<()> {
    let bad = request.subject.is_empty()
        || request.subject.chars().count() > 500
        || request.text.is_empty()
        || request.text.chars().count() > 20_000
        || request
            .html
            .as_ref()
            .is_some_and(|h| h.chars().count() > 50_000);
    if bad {
        return Err(ApiError::unprocessable(
            "invalid_template",
            "subject 1 to 500 characters, text 1 to 20,000, html at most 50,000",
        ));
    }
    Ok(())
}

/// Writes the program's own template for an event type and language (it replaces the
/// shipped one). It must render for a made-up event of its type. Managers. Audited.
#[utoipa::path(put, path = "/programs/{program}/message-templates/{event_type}/{language}", tag = "messages",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("event_type" = String, Path, description = "An event type that sends e-mail", example = "member.enrolled"),
           ("language" = String, Path, description = "`en` or `ja`", example = "en")),
    request_body = MessageTemplateRequest,
    responses((status = 200, body = MessageTemplateBody, description = "The template"), Problems))]
pub(crate) async fn put_message_template(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, event_type, language)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<MessageTemplateRequest>,
) -> ApiResult<Json<MessageTemplateBody>> {
    may_manage(&caller, &code)?;
    check_key(&event_type, &language)?;
    check_lengths(&request)?;
    let program = program(&state, &code).await?;
    let shipped_urgent = shipped(&event_type, &language).is_some_and(|t| t.urgent);
    let template = MessageTemplate {
        event_type: event_type.clone(),
        language: language.clone(),
        subject: request.subject,
        text_body: request.text,
        html_body: request.html,
        urgent: request.urgent.unwrap_or(shipped_urgent),
        active: request.active.unwrap_or(true),
        segments: request.segments.unwrap_or_default(),
    };
    if let Some(unknown) = template.segments.iter().find(|s| {
        !program
            .program
            .segments
            .iter()
            .any(|d| d.code.as_str() == s.as_str())
    }) {
        return Err(ApiError::unprocessable(
            "unknown_segment",
            format!("the program has no segment {unknown:?}"),
        ));
    }
    try_render(&template, &program)?;
    let now = Utc::now();
    let mut audit = caller.actor().entry(
        now,
        "message_template.put",
        Some(&code),
        Some(&format!("{event_type}/{language}")),
    );
    audit.after = Some(
        serde_json::json!({"subject": template.subject, "urgent": template.urgent, "active": template.active,
            "segments": template.segments}),
    );
    state
        .store
        .put_message_template(&program, &template, now, &audit)
        .await?;
    Ok(Json(body(template, true)))
}

/// Removes the program's own template: the shipped one applies again. Managers. Audited.
#[utoipa::path(delete, path = "/programs/{program}/message-templates/{event_type}/{language}", tag = "messages",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("event_type" = String, Path, description = "An event type that sends e-mail", example = "member.enrolled"),
           ("language" = String, Path, description = "`en` or `ja`", example = "en")),
    responses((status = 204, description = "Removed"), Problems))]
pub(crate) async fn delete_message_template(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, event_type, language)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    may_manage(&caller, &code)?;
    check_key(&event_type, &language)?;
    let program = program(&state, &code).await?;
    let audit = caller.actor().entry(
        Utc::now(),
        "message_template.delete",
        Some(&code),
        Some(&format!("{event_type}/{language}")),
    );
    if state
        .store
        .delete_message_template(&program, &event_type, &language, &audit)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_template",
            "the program has no template of its own for this event and language",
        ))
    }
}

/// What to preview: a template as typed, or (without `subject` and `text`) the one that
/// applies.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagePreviewRequest {
    #[schema(example = "member.enrolled")]
    pub event_type: String,
    #[schema(example = "ja")]
    pub language: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500)]
    pub subject: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 20000)]
    pub text: Option<String>,
    #[serde(default)]
    #[schema(max_length = 50000)]
    pub html: Option<String>,
}

/// A rendered message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagePreviewBody {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders a template for a made-up event of its type and member: what the member would
/// get. `422 invalid_template` says what does not render, with its line. The template
/// that applies: staff; a template as typed: managers.
#[utoipa::path(post, path = "/programs/{program}/message-templates/preview", tag = "messages",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = MessagePreviewRequest,
    responses((status = 200, body = MessagePreviewBody, description = "The rendered message"), Problems))]
pub(crate) async fn preview_message_template(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<MessagePreviewRequest>,
) -> ApiResult<Json<MessagePreviewBody>> {
    // A typed template is a program's code to run: only those who may save one try one.
    if request.subject.is_some() || request.text.is_some() || request.html.is_some() {
        may_manage(&caller, &code)?;
    } else {
        may_read(&caller, &code)?;
    }
    check_key(&request.event_type, &request.language)?;
    let program = program(&state, &code).await?;
    let own = state.store.message_templates(program.id).await?;
    let mut template = template_for(&own, &request.event_type, &request.language)
        .ok_or_else(|| ApiError::not_found("unknown_template", "no template"))?;
    if let (Some(subject), Some(text)) = (request.subject, request.text) {
        let typed = MessageTemplateRequest {
            subject,
            text,
            html: request.html,
            urgent: None,
            active: None,
            segments: None,
        };
        check_lengths(&typed)?;
        template.subject = typed.subject;
        template.text_body = typed.text;
        template.html_body = typed.html;
    }
    let r = try_render(&template, &program)?;
    Ok(Json(MessagePreviewBody {
        subject: r.subject,
        text: r.text,
        html: r.html,
    }))
}

/// A message to a member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageBody {
    pub id: i64,
    /// The event that made it.
    pub event_id: String,
    pub event_type: String,
    pub member: String,
    pub channel: String,
    /// `pending`, `sent`, `suppressed` (not to be sent: the reason is `last_error`) or `dead`.
    pub status: String,
    pub attempts: i64,
    /// Waited for the end of quiet hours.
    pub deferred: bool,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<MessageView> for MessageBody {
    fn from(m: MessageView) -> Self {
        Self {
            id: m.id,
            event_id: crate::webhooks::event_id(m.event_id),
            event_type: m.event_type,
            member: m.member,
            channel: m.channel,
            status: m.status,
            attempts: m.attempts,
            deferred: m.deferred,
            next_attempt_at: m.next_attempt_at,
            language: m.language,
            last_error: m.last_error,
            sent_at: m.sent_at,
        }
    }
}

/// The program's messages, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageBody>,
}

/// The program's messages, newest first: `?status=pending|sent|suppressed|dead`, `limit`
/// up to 500 (50). Staff.
#[utoipa::path(get, path = "/programs/{program}/messages", tag = "messages",
    params(("program" = String, Path, description = PROGRAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("status" = Option<String>, Query, description = "Only this status", pattern = "^(pending|sent|suppressed|dead)$"),
           ("limit" = Option<i64>, Query, description = "At most this many", minimum = 1, maximum = 500)),
    responses((status = 200, body = MessageList, description = "The messages"), Problems))]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<MessageList>> {
    may_read(&caller, &code)?;
    let status = query.get("status").map(String::as_str);
    if status.is_some_and(|s| !["pending", "sent", "suppressed", "dead"].contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status is pending, sent, suppressed or dead",
        ));
    }
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => 50,
        Some(Ok(l)) if (1..=500).contains(&l) => l,
        Some(_) => {
            return Err(ApiError::bad_request("invalid_query", "limit is 1 to 500"));
        }
    };
    let program = program(&state, &code).await?;
    let messages = state.store.messages(&program, status, limit).await?;
    Ok(Json(MessageList {
        messages: messages.into_iter().map(Into::into).collect(),
    }))
}
