//! Journals: realtime and batch posting, cancellation, reading, the dry run, and the
//! time-driven jobs.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use fidelis_core::journal::{Journal, JournalDocument, JournalError};
use fidelis_store::{LoadedProgram, Prepared, StoreError};
use futures::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program, instant, program};
use crate::auth::{Caller, Permission, Role};
use crate::dto::{
    BatchErrorBody, BatchLineBody, JobsReport, JobsRequest, JournalBody, JournalRequest,
    OutcomeBody,
};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState, metrics};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_journal))
        .routes(routes!(post_batch))
        .routes(routes!(get_journal))
        .routes(routes!(cancel))
        .routes(routes!(simulate))
        .routes(routes!(run_jobs))
        .routes(routes!(scheduled_rewards_due))
}

/// Journals per transaction of a batch request.
const BATCH_CHUNK: usize = 1_000;
/// The most bytes of batch lines held before they are committed.
const BATCH_CHUNK_BYTES: usize = 8 << 20;

/// Parses a journal document against the program. Without `occurred_at` the journal
/// happens now — and a retry of the same request, given another now, still replays the
/// first outcome ([`Prepared::with_time_filled`]).
fn prepare(program: &LoadedProgram, document: &JournalDocument) -> ApiResult<Prepared> {
    if document.occurred_at.is_some() {
        let journal = Journal::parse(document, &program.program)?;
        return Ok(Prepared::new(journal, &program.program)?.screened());
    }
    let timed = JournalDocument {
        occurred_at: Some(Utc::now().to_rfc3339()),
        ..document.clone()
    };
    let journal = Journal::parse(&timed, &program.program)?;
    Ok(Prepared::new(journal, &program.program)?
        .with_time_filled()
        .screened())
}

/// A client's `occurred_at`, checked (422 when malformed) and kept absent when absent.
pub(super) fn occurred_at(raw: Option<&str>) -> ApiResult<Option<String>> {
    raw.map(|t| instant(Some(t), "occurred_at").map(|t| t.to_rfc3339()))
        .transpose()
}

/// Posts one journal: 201 with its outcome, 202 when a fraud rule held it, or 200 with
/// the first outcome and `Idempotent-Replayed: true` for a replay.
pub(super) async fn post_one(
    state: &AppState,
    caller: &Caller,
    program: &Arc<LoadedProgram>,
    document: JournalDocument,
) -> ApiResult<Response> {
    let mut program = Arc::clone(program);
    let mut reloaded = false;
    let result = loop {
        let prepared = prepare(&program, &document)?;
        match state
            .store
            .post_realtime(&program, prepared, Utc::now())
            .await
        {
            // The program changed since it was cached: parse against the new revision.
            Err(StoreError::ProgramChanged(code)) if !reloaded => {
                program = state.store.require_program(&code).await?;
                reloaded = true;
            }
            other => break other?,
        }
    };
    match result {
        Ok(posted) => {
            metrics::journal(Ok((&posted.outcome, posted.replayed)));
            let body = seen_by(caller, &posted.outcome, posted.replayed);
            if posted.outcome.status == "held" && !posted.replayed {
                // Kept for review by a fraud rule: accepted, nothing earned yet.
                return Ok(axum::response::IntoResponse::into_response((
                    StatusCode::ACCEPTED,
                    axum::Json(body),
                )));
            }
            Ok(super::created_or_replayed(body, posted.replayed))
        }
        Err(e) => {
            metrics::journal(Err(e.code()));
            Err(refusal_seen_by(caller, e))
        }
    }
}

/// An outcome as the caller may see it: partners see no member standing
/// ([`OutcomeBody::for_partner`]).
fn seen_by(
    caller: &Caller,
    outcome: &fidelis_core::outcome::Outcome,
    replayed: bool,
) -> OutcomeBody {
    let body = OutcomeBody::new(outcome, replayed);
    if caller.role == Role::Partner {
        body.for_partner()
    } else {
        body
    }
}

/// A refused journal as the caller may see it: a partner is told that points are
/// insufficient, not how many the member has.
fn refusal_seen_by(caller: &Caller, e: JournalError) -> ApiError {
    match e {
        JournalError::InsufficientPoints { currency, .. } if caller.role == Role::Partner => {
            ApiError::unprocessable(
                "insufficient_points",
                format!("the member has too few spendable {currency} for this redemption"),
            )
        }
        e => e.into(),
    }
}

/// What a partner token may post: its own partner's journals (the partner is filled in
/// when absent). Refunds and cancellations carry no partner of their own: they belong to
/// the journal they refer to, which [`authorize_journal`] checks.
fn scope_partner(caller: &Caller, document: &mut JournalDocument) -> ApiResult<()> {
    if caller.role == Role::Partner {
        let refers = matches!(document.kind.as_deref(), Some("refund" | "cancellation"));
        if refers && document.partner.is_none() {
            return Ok(());
        }
        if document.partner.is_none() {
            document.partner.clone_from(&caller.partner);
        }
        caller.require_partner(document.partner.as_deref())?;
    }
    Ok(())
}

/// What a journal does decides the right it needs, whichever route it came through:
/// `journals:write` lets a token post accruals and refunds; a redemption also needs
/// `redemptions:write`, an adjustment `adjustments:write`, a cancellation
/// `cancellations:write`. A partner token posts only its own partner's journals, and
/// refunds or cancels only journals that were its own (one read of the original each).
async fn authorize_journal(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    document: &JournalDocument,
) -> ApiResult<()> {
    let code = program.program.code.as_str();
    let kind = document.kind.as_deref().unwrap_or_default();
    match kind {
        // A hold's steps are idempotent by the order and answer a hold: their own routes.
        "hold" | "capture" | "release" => {
            return Err(ApiError::unprocessable(
                "use_holds_routes",
                format!(
                    "a {kind} is posted through /programs/{code}/holds (POST), .../holds/ORDER/capture or .../release"
                ),
            ));
        }
        "redemption" => caller.require(Permission::Redeem, Some(code))?,
        "adjustment" => caller.require(Permission::Adjust, Some(code))?,
        "cancellation" if caller.role != Role::Partner => {
            caller.require(Permission::Cancel, Some(code))?;
        }
        _ => {}
    }
    if caller.role == Role::Partner && matches!(kind, "refund" | "cancellation") {
        let original = match document.original_external_id.as_deref() {
            Some(id) => state.store.journal(program, id).await?,
            None => None,
        };
        let owner = original
            .as_ref()
            .and_then(|j| j.document.as_ref())
            .and_then(|d| d.get("partner"))
            .and_then(|p| p.as_str());
        if owner.is_none() || owner != caller.partner.as_deref() {
            return Err(ApiError::forbidden(
                "a partner token may only refund or cancel its own partner's journals",
            ));
        }
    }
    Ok(())
}

/// The audit action of a journal an administrator must be able to trace, whichever route
/// posted it: adjustments and cancellations.
fn audited_action(document: &JournalDocument) -> Option<&'static str> {
    match document.kind.as_deref() {
        Some("adjustment") => Some("journal.adjustment"),
        Some("cancellation") => Some("journal.cancel"),
        _ => None,
    }
}

/// Records an applied adjustment or cancellation in the audit log.
async fn audit_journal(
    state: &AppState,
    caller: &Caller,
    program: &str,
    action: &str,
    document: &JournalDocument,
) -> ApiResult<()> {
    let mut audit = caller.actor().entry(
        Utc::now(),
        action,
        Some(program),
        document.member.as_deref(),
    );
    audit.after = Some(serde_json::json!({
        "journal": document.external_id, "original": document.original_external_id,
        "currency": document.currency, "points": document.points, "reason": document.reason,
    }));
    state.store.append_audit(&audit).await?;
    Ok(())
}

/// Processes one journal in real time: accrual (purchase or activity), refund, redemption,
/// adjustment or cancellation. Idempotent by `external_id`.
#[utoipa::path(post, path = "/programs/{program}/journals", tag = "journals",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = JournalRequest,
    responses((status = 201, body = OutcomeBody, description = "Processed"),
              (status = 202, body = OutcomeBody, description = "Held for review by a fraud rule (`status` `held`, with `hold`): nothing earned until an agent releases it"),
              (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))),
              Problems))]
async fn post_journal(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<JournalRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::JournalsWrite, Some(&code))?;
    let mut document: JournalDocument = request.into();
    scope_partner(&caller, &mut document)?;
    let program = cached_program(&state, &code).await?;
    authorize_journal(&state, &caller, &program, &document).await?;
    let action = audited_action(&document);
    let response = post_one(&state, &caller, &program, document.clone()).await?;
    if let Some(action) = action
        && response.status() == StatusCode::CREATED
    {
        audit_journal(&state, &caller, &code, action, &document).await?;
    }
    Ok(response)
}

/// Processes NDJSON journals (one document per line) and streams one NDJSON result per
/// line, in order, reading the body as it arrives. Lines are committed in groups of a
/// thousand (or 8 MiB); a client that loses the connection may post the same body again:
/// what was committed comes back as replays. A batch is at most 256 MiB (a partner's,
/// 16 MiB; past it the last result line says `body_too_large`), a line at most the JSON body
/// limit (`line_too_large`); a body that stalls, or an answer the client stops reading,
/// for longer than the request timeout ends the batch after what was committed.
#[utoipa::path(post, path = "/programs/{program}/journals/batch", tag = "journals",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body(content = Vec<JournalRequest>, description = "NDJSON: one journal document per line", content_type = "application/x-ndjson"),
    responses((status = 200, description = "NDJSON: one result per line, in order", body = Vec<BatchLineBody>, content_type = "application/x-ndjson"), Problems))]
async fn post_batch(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Permission::JournalsWrite, Some(&code))?;
    let ndjson = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/x-ndjson" || v == "application/jsonl");
    if !ndjson {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the journals as NDJSON, one document per line, with `Content-Type: application/x-ndjson`",
        ));
    }
    let program = program(&state, &code).await?;
    // Partners send their own journals; a batch of theirs is bounded tighter.
    let limit = if caller.role == Role::Partner {
        state.config.partner_batch_body_limit
    } else {
        state.config.batch_body_limit
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a batch from this token is at most {limit} bytes; split it"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let stall = state.config.request_timeout;
    let mut body = request.into_body().into_data_stream();
    // Read up to the first journal before answering: an empty batch is a 400, not a 200
    // with nothing in it.
    let mut first: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout(stall, body.next()).await {
            Err(_) => return Err(ApiError::timeout(stall)),
            Ok(None) => {
                return Err(ApiError::bad_request(
                    "empty_batch",
                    "the batch holds no journal: send one JSON document per line",
                ));
            }
            Ok(Some(Err(_))) => {
                return Err(ApiError::bad_request(
                    "body_unreadable",
                    "the request body could not be read",
                ));
            }
            Ok(Some(Ok(chunk))) => {
                first.extend_from_slice(&chunk);
                if first.len() > limit {
                    return Err(too_large());
                }
                if first.iter().any(|b| !b.is_ascii_whitespace()) {
                    break;
                }
            }
        }
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let input = BatchInput {
        first,
        rest: Box::pin(body),
        limit,
        stall,
    };
    tokio::spawn(process_batch(state, program, caller, input, sender));
    let stream = tokio_stream_from(receiver).map(Ok::<Bytes, std::io::Error>);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// A batch's body as it arrives: what was read before answering, the rest of the stream,
/// how much may come in all, and how long a stall (of the body, or of a client not reading
/// the answer) is tolerated.
struct BatchInput {
    first: Vec<u8>,
    rest: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, axum::Error>> + Send>>,
    limit: usize,
    stall: std::time::Duration,
}

/// Splits a byte stream into lines without holding more than one line: a line longer
/// than `max` is reported (by number) and skipped to its end.
struct Lines {
    buffer: Vec<u8>,
    max: usize,
    overlong: bool,
    number: u64,
}

/// One line of a batch: its number and its text, or that it was too long.
enum Line {
    Text(u64, Vec<u8>),
    TooLong(u64),
}

impl Lines {
    fn new(max: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max,
            overlong: false,
            number: 0,
        }
    }

    /// Takes in a chunk and hands every line it completes to `each`.
    fn push(&mut self, mut chunk: &[u8], mut each: impl FnMut(Line)) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            self.number += 1;
            if self.overlong || self.buffer.len() + end > self.max {
                each(Line::TooLong(self.number));
            } else {
                self.buffer.extend_from_slice(&chunk[..end]);
                each(Line::Text(self.number, std::mem::take(&mut self.buffer)));
            }
            self.buffer.clear();
            self.overlong = false;
            chunk = &chunk[end + 1..];
        }
        if !self.overlong {
            if self.buffer.len() + chunk.len() > self.max {
                self.overlong = true;
                self.buffer = Vec::new();
            } else {
                self.buffer.extend_from_slice(chunk);
            }
        }
    }

    /// The last line, when the body does not end with a newline.
    fn finish(&mut self) -> Option<Line> {
        if self.overlong {
            self.number += 1;
            return Some(Line::TooLong(self.number));
        }
        if self.buffer.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.number += 1;
        Some(Line::Text(self.number, std::mem::take(&mut self.buffer)))
    }
}

/// A line of a batch made ready to commit — its number with the prepared journal, or why
/// it is refused — and its size; `None` for an empty line.
async fn pending_line(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    line: Line,
) -> Option<(Pending, usize)> {
    match line {
        Line::TooLong(n) => Some((
            (
                n,
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "line_too_large",
                    format!(
                        "a journal line is at most {} bytes",
                        state.config.body_limit
                    ),
                )),
            ),
            0,
        )),
        Line::Text(n, raw) => {
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            Some((
                (n, prepare_line(state, caller, program, text).await),
                text.len(),
            ))
        }
    }
}

/// Parses and authorizes one line of a batch.
async fn prepare_line(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    text: &str,
) -> Result<(Prepared, Option<(&'static str, JournalDocument)>), ApiError> {
    let request = crate::extract::from_json_text::<JournalRequest>(text).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("not a journal document: {e}"))
    })?;
    let mut document: JournalDocument = request.into();
    scope_partner(caller, &mut document)?;
    authorize_journal(state, caller, program, &document).await?;
    let prepared = prepare(program, &document)?;
    Ok((prepared, audited_action(&document).map(|a| (a, document))))
}

/// Reads the batch line by line as it arrives — never more than a chunk of lines and one
/// partial line in memory — and streams one result per line. Stops (after answering what
/// was committed) when the body goes past the limit, stalls, or the client stops reading
/// the answer for longer than the stall bound.
async fn process_batch(
    state: AppState,
    program: Arc<LoadedProgram>,
    caller: Arc<Caller>,
    mut input: BatchInput,
    sender: tokio::sync::mpsc::Sender<Bytes>,
) {
    let out = Outbox {
        sender: &sender,
        stall: input.stall,
    };
    let mut lines = Lines::new(state.config.body_limit);
    let mut pending: Vec<Pending> = Vec::new();
    // Bytes of the lines in `pending`: a chunk is committed at a thousand lines or at
    // this many bytes, whichever comes first, so memory stays bounded with long lines.
    let mut pending_bytes = 0usize;
    let mut received = input.first.len();
    let mut chunk = std::mem::take(&mut input.first);
    loop {
        let mut complete = Vec::new();
        lines.push(&chunk, |line| complete.push(line));
        for line in complete {
            let Some((entry, bytes)) = pending_line(&state, &caller, &program, line).await else {
                continue;
            };
            pending.push(entry);
            pending_bytes += bytes;
            if pending.len() >= BATCH_CHUNK || pending_bytes >= BATCH_CHUNK_BYTES {
                pending_bytes = 0;
                if !flush(&state, &caller, &program, &mut pending, &out).await {
                    return;
                }
            }
        }
        let stop = match tokio::time::timeout(input.stall, input.rest.next()).await {
            Ok(Some(Ok(next))) => {
                received += next.len();
                if received > input.limit {
                    Some((
                        "body_too_large",
                        format!(
                            "the batch went past {} bytes: the lines before were processed; send the rest as another batch",
                            input.limit
                        ),
                    ))
                } else {
                    chunk = next.to_vec();
                    None
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => Some((
                "body_unreadable",
                "the body broke off: the lines before were processed; post the rest again"
                    .to_owned(),
            )),
            Err(_) => Some((
                "body_stalled",
                format!(
                    "no more of the body came for {} s: the lines before were processed; post the rest again",
                    input.stall.as_secs()
                ),
            )),
        };
        if let Some((code, detail)) = stop {
            if flush(&state, &caller, &program, &mut pending, &out).await {
                let _ = out
                    .send(ndjson(&rejected(lines.number + 1, code, detail)))
                    .await;
            }
            return;
        }
    }
    if let Some(line) = lines.finish()
        && let Some((entry, _)) = pending_line(&state, &caller, &program, line).await
    {
        pending.push(entry);
    }
    flush(&state, &caller, &program, &mut pending, &out).await;
}

/// Where a batch's answers go: a client that stops reading for longer than `stall` ends
/// the batch (what was committed stays; posting the same body again replays it).
struct Outbox<'a> {
    sender: &'a tokio::sync::mpsc::Sender<Bytes>,
    stall: std::time::Duration,
}

impl Outbox<'_> {
    async fn send(&self, bytes: Bytes) -> bool {
        self.sender.send_timeout(bytes, self.stall).await.is_ok()
    }
}

/// A batch line: its number, and the prepared journal (with what to audit once it is
/// applied), or why it is refused.
type Pending = (
    u64,
    Result<(Prepared, Option<(&'static str, JournalDocument)>), ApiError>,
);

/// Posts the parsed lines of `pending` as one transaction and sends one result per line.
async fn flush(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    pending: &mut Vec<Pending>,
    sender: &Outbox<'_>,
) -> bool {
    if pending.is_empty() {
        return true;
    }
    let lines: Vec<Pending> = std::mem::take(pending);
    let good: Vec<Prepared> = lines
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok().map(|(prepared, _)| prepared.clone()))
        .collect();
    let results = match state
        .store
        .post_journals(program, &good, Utc::now(), None)
        .await
    {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(error = %e, "batch chunk failed");
            let line = BatchLineBody {
                line: lines.first().map_or(0, |l| l.0),
                status: "rejected".into(),
                outcome: None,
                error: Some(BatchErrorBody {
                    code: "internal".into(),
                    detail: "the batch stopped here: post the same body again to resume".into(),
                }),
            };
            let _ = sender.send(ndjson(&line)).await;
            return false;
        }
    };
    let mut results = results.into_iter();
    let mut out = Vec::new();
    for (line, parsed) in lines {
        let body = match parsed {
            Err(e) => rejected(line, e.code, e.detail),
            Ok((_, audited)) => match results.next() {
                Some(Ok(posted)) => {
                    metrics::journal(Ok((&posted.outcome, posted.replayed)));
                    if let Some((action, document)) = audited.filter(|_| !posted.replayed)
                        && let Err(e) = audit_journal(
                            state,
                            caller,
                            program.program.code.as_str(),
                            action,
                            &document,
                        )
                        .await
                    {
                        tracing::error!(code = e.code, detail = %e.detail, "auditing a batch journal failed");
                    }
                    BatchLineBody {
                        line,
                        status: if posted.replayed {
                            "replayed"
                        } else if posted.outcome.status == "held" {
                            "held"
                        } else {
                            "processed"
                        }
                        .into(),
                        outcome: Some(seen_by(caller, &posted.outcome, posted.replayed)),
                        error: None,
                    }
                }
                Some(Err(e)) => {
                    metrics::journal(Err(e.code()));
                    let e = refusal_seen_by(caller, e);
                    rejected(line, e.code, e.detail)
                }
                None => rejected(line, "internal", "no result".into()),
            },
        };
        out.extend_from_slice(&ndjson(&body));
    }
    sender.send(Bytes::from(out)).await
}

fn rejected(line: u64, code: &str, detail: String) -> BatchLineBody {
    BatchLineBody {
        line,
        status: "rejected".into(),
        outcome: None,
        error: Some(BatchErrorBody {
            code: code.to_owned(),
            detail,
        }),
    }
}

fn ndjson(line: &BatchLineBody) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A journal as stored: its document and status.
#[utoipa::path(get, path = "/programs/{program}/journals/{external_id}", tag = "journals",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("external_id" = String, Path, description = "The journal's external id", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = JournalBody, description = "The journal as stored, with its outcome"), Problems))]
pub(crate) async fn get_journal(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Json<JournalBody>> {
    caller.require(Permission::JournalsRead, Some(&code))?;
    let program = program(&state, &code).await?;
    let unknown = || {
        ApiError::not_found(
            "unknown_journal",
            format!("no journal {external_id:?} in this program"),
        )
    };
    let journal = state
        .store
        .journal(&program, &external_id)
        .await?
        .ok_or_else(unknown)?;
    // A member or partner gets the same answer for another's journal as for one that
    // does not exist: external ids cannot be probed.
    let own = match caller.role {
        Role::Member => caller.require_member(&journal.member),
        Role::Partner => {
            // A refund or cancellation is the partner's whose journal it takes back.
            let field = |document: Option<&serde_json::Value>, name: &str| {
                document
                    .and_then(|d| d.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let mut partner = field(journal.document.as_ref(), "partner");
            if partner.is_none()
                && matches!(journal.kind.as_str(), "refund" | "cancellation")
                && let Some(original) = field(journal.document.as_ref(), "original_external_id")
                && let Some(original) = state.store.journal(&program, &original).await?
            {
                partner = field(original.document.as_ref(), "partner");
            }
            caller.require_partner(partner.as_deref())
        }
        _ => Ok(()),
    };
    own.map_err(|_| unknown())?;
    let outcome = match journal.outcome {
        None => None,
        Some(recorded) => {
            let outcome: fidelis_core::outcome::Outcome = serde_json::from_value(recorded)
                .map_err(|e| {
                    tracing::error!("journal {external_id:?}: its recorded outcome: {e}");
                    ApiError::internal()
                })?;
            Some(seen_by(&caller, &outcome, false))
        }
    };
    Ok(Json(JournalBody {
        outcome,
        external_id: journal.external_id,
        member: journal.member,
        kind: journal.kind,
        journal_type: journal.type_name,
        status: journal.status,
        occurred_at: journal.occurred_at,
        recorded_at: journal.recorded_at,
        document: journal.document,
    }))
}

/// Cancels a journal: every ledger entry it caused is reversed (points spent since are
/// taken back as the currency's return policy allows). Idempotent: cancelling again
/// answers the first outcome.
#[utoipa::path(post, path = "/programs/{program}/journals/{external_id}/cancel", tag = "journals",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("external_id" = String, Path, description = "The journal to cancel", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = OutcomeBody, description = "Cancelled"), (status = 200, body = OutcomeBody, description = "Already cancelled by this call before", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
async fn cancel(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::Cancel, Some(&code))?;
    let program = program(&state, &code).await?;
    let journal = state
        .store
        .journal(&program, &external_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_journal",
                format!("no journal {external_id:?} in this program"),
            )
        })?;
    let cancellation_id = format!("cancel:{external_id}");
    if cancellation_id.chars().count() > fidelis_core::ids::ExternalId::MAX_LEN {
        return Err(ApiError::unprocessable(
            "invalid_journal",
            "this journal's external id is too long to cancel through the API; post a cancellation journal",
        ));
    }
    let document = JournalDocument {
        external_id: Some(cancellation_id),
        member: Some(journal.member.clone()),
        kind: Some("cancellation".into()),
        // Now, by the server's clock: a retry replays the first outcome.
        occurred_at: None,
        original_external_id: Some(external_id.clone()),
        ..JournalDocument::default()
    };
    let response = post_one(&state, &caller, &program, document).await?;
    if response.status() == StatusCode::CREATED {
        let mut audit = caller.actor().entry(
            Utc::now(),
            "journal.cancel",
            Some(&code),
            Some(&external_id),
        );
        audit.before = Some(serde_json::json!({"status": journal.status}));
        audit.after = Some(serde_json::json!({"status": "cancelled"}));
        state.store.append_audit(&audit).await?;
    }
    Ok(response)
}

/// A dry run: what processing this journal would do, without changing anything. A journal
/// dated in the future is run as of its date (expiries and releases due by then settled
/// first), so a manager checks Saturday's promotion on Tuesday; posting it for real is
/// still refused as `future_dated`.
#[utoipa::path(post, path = "/programs/{program}/simulate", tag = "journals",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = JournalRequest,
    responses((status = 200, body = OutcomeBody, description = "What would happen"), Problems))]
pub(crate) async fn simulate(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<JournalRequest>,
) -> ApiResult<Json<OutcomeBody>> {
    caller.require(Permission::JournalsWrite, Some(&code))?;
    let mut document: JournalDocument = request.into();
    scope_partner(&caller, &mut document)?;
    let program = program(&state, &code).await?;
    authorize_journal(&state, &caller, &program, &document).await?;
    let prepared = prepare(&program, &document)?;
    let as_of = prepared.journal.occurred_at.max(Utc::now());
    let posted = state
        .store
        .dry_run(&program, &prepared, as_of)
        .await?
        .map_err(|e| refusal_seen_by(&caller, e))?;
    Ok(Json(seen_by(&caller, &posted.outcome, posted.replayed)))
}

/// The scheduled rewards (birthday, anniversary, win-back) a job run as of an instant (now
/// when absent) would award: a dry run that writes nothing, to check a program's scheduled
/// rewards before the jobs run them — a date ahead included.
#[utoipa::path(get, path = "/programs/{program}/scheduled-rewards", tag = "operations",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("as_of" = Option<String>, Query, description = "RFC 3339; now when absent (a future instant is fine: nothing is written)", format = DateTime),
           ("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)", minimum = 1, maximum = 1000)),
    responses((status = 200, body = crate::dto::ScheduledRewardsDue, description = "The rewards a job run would award"), Problems))]
async fn scheduled_rewards_due(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<Json<crate::dto::ScheduledRewardsDue>> {
    caller.require(Permission::JobsRun, Some(&code))?;
    let as_of = super::query_instant(&query, "as_of")?;
    let limit: i64 = super::query_param(&query, "limit")?.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit is 1 to 1000"));
    }
    let program = program(&state, &code).await?;
    let due = state
        .store
        .scheduled_rewards_due(&program, as_of, limit as usize)
        .await?;
    Ok(Json(crate::dto::ScheduledRewardsDue {
        as_of,
        rewards: due
            .into_iter()
            .map(|d| crate::dto::DueRewardBody {
                promotion: d.promotion,
                trigger: d.trigger.to_owned(),
                member: d.member,
                period: d.period,
                currency: d.currency,
                points: d.points,
            })
            .collect(),
    }))
}

/// Runs the time-driven jobs as of an instant (now when absent): expiries, pending releases
/// and tier assessments due by then. Idempotent: running again as of the same instant
/// changes nothing. Never ahead of the clock: an `as_of` more than five minutes after now
/// is refused with `as_of_in_future`, since what the jobs settle cannot be undone. One run
/// per program at a time, whichever server is asked: another meanwhile is `409
/// jobs_running`.
#[utoipa::path(post, path = "/programs/{program}/jobs/run", tag = "operations",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = JobsRequest,
    responses((status = 200, body = JobsReport, description = "What the jobs did"), Problems))]
async fn run_jobs(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<JobsRequest>,
) -> ApiResult<Json<JobsReport>> {
    caller.require(Permission::JobsRun, Some(&code))?;
    let as_of = instant(request.as_of.as_deref(), "as_of")?;
    let as_of = fidelis_core::lifecycle::jobs_as_of(as_of, Utc::now())
        .map_err(|r| ApiError::unprocessable(r.code, r.detail))?;
    let program = program(&state, &code).await?;
    let report = state.store.run_jobs(&program, as_of).await?;
    let mut audit = caller
        .actor()
        .entry(Utc::now(), "jobs.run", Some(&code), None);
    audit.after = Some(
        serde_json::json!({"as_of": as_of, "members": report.members, "settlements": report.journals,
                           "scheduled_rewards": report.scheduled_rewards, "holds_released": report.holds_released,
                           "segments": report.segments.as_ref().map(|r| &r.counts)}),
    );
    state.store.append_audit(&audit).await?;
    Ok(Json(JobsReport {
        as_of,
        members: report.members,
        settlements: report.journals,
        scheduled_rewards: report.scheduled_rewards,
        holds_released: report.holds_released,
        segments: report.segments.map(|r| r.counts),
    }))
}
