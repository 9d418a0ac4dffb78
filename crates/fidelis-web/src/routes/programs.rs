//! Programs: definition documents in and out, and industry templates.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use chrono::Utc;
use fidelis_core::program::{Problem, Program, ProgramDocument};
use fidelis_core::templates;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, program};
use crate::AppState;
use crate::auth::{Caller, Permission};
use crate::dto::{ProgramListItem, ProgramSaved, TemplateBody};
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_programs))
        .routes(routes!(put_program, get_program))
        .routes(routes!(from_template))
        .routes(routes!(list_templates))
}

/// Every program.
#[utoipa::path(get, path = "/programs", tag = "programs",
    responses((status = 200, body = Vec<ProgramListItem>, description = "The programs the token may see"), Problems))]
pub(crate) async fn list_programs(
    State(state): State<AppState>,
    caller: Arc<Caller>,
) -> ApiResult<Json<Vec<ProgramListItem>>> {
    caller.require(Permission::ProgramsRead, None)?;
    let programs = state.store.programs().await?;
    Ok(Json(
        programs
            .into_iter()
            .filter(|p| caller.program.as_ref().is_none_or(|own| *own == p.code))
            .map(|p| ProgramListItem {
                code: p.code,
                name: p.name,
                revision: p.revision,
                updated_at: p.updated_at,
            })
            .collect(),
    ))
}

/// Creates or replaces a program from its definition (JSON, or YAML with
/// `Content-Type: application/yaml`). Every problem is listed; nothing is changed if there
/// is one.
#[utoipa::path(put, path = "/programs/{program}", tag = "programs",
    params(("program" = String, Path, description = "The program's code, [a-z0-9-]{1,64}", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body(content = Object, description = "The program definition document", content_type = "application/json"),
    responses((status = 201, description = "Created", body = ProgramSaved), (status = 200, description = "Replaced", body = ProgramSaved), Problems))]
pub(crate) async fn put_program(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProgramSaved>)> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    let document = parse_definition(&headers, &body)?;
    if let Some(reason) = serde_json::to_value(&document)
        .ok()
        .as_ref()
        .and_then(fidelis_store::unstorable_json)
    {
        return Err(ApiError::invalid_program(&[Problem {
            path: "(document)".into(),
            message: reason.into(),
        }]));
    }
    save(&state, &caller, &document, &code).await
}

/// A program's definition, as `PUT` accepts it.
#[utoipa::path(get, path = "/programs/{program}", tag = "programs",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    responses((status = 200, body = Object, description = "The program definition document"), Problems))]
pub(crate) async fn get_program(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
) -> ApiResult<Json<ProgramDocument>> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    let program = program(&state, &code).await?;
    Ok(Json(program.program.document.clone()))
}

/// Creates a program from an industry template (`retail`…).
#[utoipa::path(post, path = "/programs/{program}/from-template/{template}", tag = "programs",
    params(("program" = String, Path, description = "The new program's code", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("template" = String, Path, description = "The template's name")),
    responses((status = 201, body = ProgramSaved, description = "The program was created from the template"), Problems))]
async fn from_template(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, template)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<ProgramSaved>)> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    let Some(t) = templates::find(&template) else {
        return Err(ApiError::not_found(
            "unknown_template",
            format!("no template {template:?}; see /api/v1/templates"),
        ));
    };
    if fidelis_core::ids::ProgramCode::parse(&code).is_ok()
        && state.store.program(&code).await?.is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "program_exists",
            format!("program {code:?} exists; change it with PUT"),
        ));
    }
    let document: ProgramDocument = yaml_serde::from_str(t.source).map_err(|e| {
        tracing::error!(template, error = %e, "a shipped template does not parse");
        ApiError::internal()
    })?;
    save(&state, &caller, &document, &code).await
}

/// The industry templates.
#[utoipa::path(get, path = "/templates", tag = "programs", responses((status = 200, body = Vec<TemplateBody>, description = "The industry templates"), Problems))]
async fn list_templates(caller: Arc<Caller>) -> ApiResult<Json<Vec<TemplateBody>>> {
    caller.require(Permission::ProgramsRead, None)?;
    Ok(Json(
        templates::TEMPLATES
            .iter()
            .map(|t| TemplateBody {
                name: t.name.to_owned(),
                description: t.description.to_owned(),
            })
            .collect(),
    ))
}

fn parse_definition(headers: &HeaderMap, body: &[u8]) -> ApiResult<ProgramDocument> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let structural = |path: String, message: String| {
        ApiError::invalid_program(&[Problem {
            path: if path == "." {
                "(document)".into()
            } else {
                path
            },
            message,
        }])
    };
    if content_type.starts_with("application/yaml")
        || content_type.starts_with("application/x-yaml")
    {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body is not UTF-8"))?;
        serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text))
            .map_err(|e| structural(e.path().to_string(), e.inner().to_string()))
    } else if content_type.starts_with("application/json") {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de).or_else(|e| {
            if e.inner().is_syntax() || e.inner().is_eof() {
                return Err(ApiError::bad_request("invalid_json", e.inner().to_string()));
            }
            // `24.0` where an integer is expected is the integer 24 (see `ApiJson`).
            crate::extract::with_whole_numbers(body)
                .and_then(Result::ok)
                .ok_or_else(|| structural(e.path().to_string(), e.inner().to_string()))
        })
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the definition as application/json or application/yaml",
        ))
    }
}

async fn save(
    state: &AppState,
    caller: &Caller,
    document: &ProgramDocument,
    code: &str,
) -> ApiResult<(StatusCode, Json<ProgramSaved>)> {
    let program = Program::compile(document, Some(code))
        .map_err(|problems| ApiError::invalid_program(&problems))?;
    let (loaded, created) = state
        .store
        .put_program(&program, Utc::now(), &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ProgramSaved {
            code: loaded.program.code.to_string(),
            revision: loaded.revision,
            created,
        }),
    ))
}
