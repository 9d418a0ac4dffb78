//! Administration: API tokens, users, the audit log.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use fidelis_store::{AuditFilter, NewToken, UserRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, query_param};
use crate::auth::{Caller, Permission, Role, hash_password, new_token, token_hash};
use crate::dto::{
    AuditBody, AuditPage, TokenBody, TokenCreated, TokenRequest, UserCreated, UserRequest,
};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

/// The name of the token `FIDELIS_ADMIN_TOKEN` provides.
pub const BOOTSTRAP_TOKEN: &str = "bootstrap-admin";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(create_user))
        .routes(routes!(audit))
}

/// The scope a token or user is bound to, checked for consistency with its role.
fn scope(
    role: Role,
    program: &Option<String>,
    partner: &Option<String>,
    member: &Option<String>,
) -> ApiResult<()> {
    let invalid = |detail: &str| ApiError::unprocessable("invalid_request", detail);
    match role {
        Role::Partner if partner.is_none() || program.is_none() => {
            Err(invalid("a partner token needs a program and a partner"))
        }
        Role::Member if member.is_none() || program.is_none() => {
            Err(invalid("a member token needs a program and a member"))
        }
        Role::Partner | Role::Member => Ok(()),
        _ if partner.is_some() || member.is_some() => Err(invalid(
            "only partner and member tokens name a partner or member",
        )),
        _ => Ok(()),
    }?;
    for value in [program, partner, member].into_iter().flatten() {
        if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
            return Err(invalid(
                "program, partner and member are 1 to 128 printable characters",
            ));
        }
    }
    Ok(())
}

/// The program and member a token or user is limited to exist: a token for nothing is a
/// typo that would fail later, far from its cause.
async fn scope_exists(
    state: &AppState,
    program: Option<&str>,
    member: Option<&str>,
) -> ApiResult<()> {
    let Some(code) = program else {
        return Ok(());
    };
    let program = super::program(state, code)
        .await
        .map_err(|_| ApiError::unprocessable("unknown_program", format!("no program {code:?}")))?;
    if let Some(member) = member
        && state.store.member(&program, member).await?.is_none()
    {
        return Err(ApiError::unprocessable(
            "unknown_member",
            format!("no member {member:?} in program {code:?}"),
        ));
    }
    Ok(())
}

/// An email address as stored and looked up: trimmed and lower-cased (addresses differing
/// only in case are one user), with a local part, an `@` and a dotted domain.
pub(crate) fn normalized_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.chars().count() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.chars().count() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
                && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::unprocessable(
            "invalid_request",
            "email is not an email address (name@example.com)",
        ))
    }
}

/// A password worth hashing: 12 to 1,024 characters, not only white space, and not one or
/// two characters repeated.
fn check_password(password: &str) -> ApiResult<()> {
    let distinct: std::collections::BTreeSet<char> = password.chars().collect();
    if password.chars().count() < 12
        || password.len() > 1024
        || password.trim().is_empty()
        || distinct.len() < 5
    {
        return Err(ApiError::unprocessable(
            "weak_password",
            "the password needs 12 to 1024 characters, at least 5 of them different, not only spaces",
        ));
    }
    Ok(())
}

/// Creates an API token. The token is in the answer once; only its hash is kept.
#[utoipa::path(post, path = "/tokens", tag = "operations", request_body = TokenRequest,
    responses((status = 201, body = TokenCreated, description = "The token was created; its secret is shown this once"), Problems))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    caller.require(Permission::TokensManage, None)?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_request",
            "role is one of admin, program_manager, agent, partner, member",
        )
    })?;
    scope(role, &request.program, &request.partner, &request.member)?;
    if request.name.trim() == BOOTSTRAP_TOKEN {
        return Err(ApiError::unprocessable(
            "invalid_request",
            format!(
                "the name {BOOTSTRAP_TOKEN:?} is reserved for the token of FIDELIS_ADMIN_TOKEN"
            ),
        ));
    }
    if request.name.trim().is_empty()
        || request.name.chars().count() > 128
        || request.name.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "name is 1 to 128 printable characters (no control characters such as NUL or a newline)",
        ));
    }
    let (scopes, permissions) = match &request.scopes {
        None => (None, None),
        Some(list) => {
            let mut permissions = Vec::new();
            for s in list {
                match Permission::parse(s) {
                    Some(p) => permissions.push(p),
                    None => {
                        return Err(ApiError::unprocessable(
                            "invalid_request",
                            format!("unknown scope {s:?}"),
                        ));
                    }
                }
            }
            (Some(list.join(",")), Some(permissions))
        }
    };
    caller.may_delegate(
        role,
        request.program.as_deref(),
        request.partner.as_deref(),
        request.member.as_deref(),
        permissions.as_deref(),
    )?;
    scope_exists(
        &state,
        request.program.as_deref(),
        request.member.as_deref(),
    )
    .await?;
    let token = new_token();
    let new = NewToken {
        name: request.name.clone(),
        token_hash: token_hash(&token),
        role: role.name().to_owned(),
        program: request.program.clone(),
        partner: request.partner.clone(),
        member: request.member.clone(),
        scopes,
    };
    let mut audit = caller.actor().entry(
        Utc::now(),
        "token.create",
        request.program.as_deref(),
        Some(&request.name),
    );
    audit.after = Some(
        serde_json::json!({"role": role.name(), "partner": request.partner, "member": request.member, "scopes": request.scopes}),
    );
    let record = state.store.create_token(&new, &audit).await?;
    state.tokens.learn(&new.token_hash);
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token,
            record: TokenBody::from(&record),
        }),
    ))
}

/// Every token (without the tokens themselves).
#[utoipa::path(get, path = "/tokens", tag = "operations", responses((status = 200, body = Vec<TokenBody>, description = "The tokens the caller may see"), Problems))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Arc<Caller>,
) -> ApiResult<Json<Vec<TokenBody>>> {
    caller.require(Permission::TokensManage, None)?;
    Ok(Json(
        state
            .store
            .tokens()
            .await?
            .iter()
            .filter(|t| caller.sees_program(t.program.as_deref()))
            .map(TokenBody::from)
            .collect(),
    ))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "operations",
    params(("id" = i64, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), Problems))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::TokensManage, None)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("unknown_token", "no live token with this id"))?;
    let Some(target) = state
        .store
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.id == id && !t.revoked && caller.sees_program(t.program.as_deref()))
    else {
        return Err(ApiError::not_found(
            "unknown_token",
            "no live token with this id",
        ));
    };
    if target.name == BOOTSTRAP_TOKEN {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "bootstrap_token",
            "the bootstrap token is managed by FIDELIS_ADMIN_TOKEN: change or unset it and restart",
        ));
    }
    let audit = caller
        .actor()
        .entry(Utc::now(), "token.revoke", None, Some(&id.to_string()));
    if !state.store.revoke_token(id, &audit).await? {
        return Err(ApiError::not_found(
            "unknown_token",
            "no live token with this id",
        ));
    }
    state.tokens.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a user of the web pages; the password is stored as an argon2id hash.
#[utoipa::path(post, path = "/users", tag = "operations", request_body = UserRequest,
    responses((status = 201, body = UserCreated, description = "The user was created"), Problems))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    ApiJson(request): ApiJson<UserRequest>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    caller.require(Permission::TokensManage, None)?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_request",
            "role is one of admin, program_manager, agent, partner, member",
        )
    })?;
    scope(role, &request.program, &request.partner, &request.member)?;
    caller.may_delegate(
        role,
        request.program.as_deref(),
        request.partner.as_deref(),
        request.member.as_deref(),
        None,
    )?;
    let email = normalized_email(&request.email)?;
    check_password(&request.password)?;
    scope_exists(
        &state,
        request.program.as_deref(),
        request.member.as_deref(),
    )
    .await?;
    let password = request.password.clone();
    let password_hash = crate::auth::argon2_apart(move || hash_password(&password))
        .await
        .ok_or_else(ApiError::internal)??;
    let user = UserRecord {
        id: 0,
        email: email.clone(),
        password_hash,
        role: role.name().to_owned(),
        program: request.program,
        partner: request.partner,
        member: request.member,
    };
    let id = state.store.create_user(&user, Utc::now()).await?;
    let mut audit = caller.actor().entry(
        Utc::now(),
        "user.create",
        user.program.as_deref(),
        Some(&email),
    );
    audit.after = Some(serde_json::json!({"role": user.role}));
    state.store.append_audit(&audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserCreated {
            id,
            email: user.email,
            role: user.role,
        }),
    ))
}

/// The audit log, newest first, filtered by program, actor, action or subject.
#[utoipa::path(get, path = "/audit", tag = "operations",
    params(("program" = Option<String>, Query, description = "Only this program's changes", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("actor" = Option<String>, Query, description = "Only this actor's changes", max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"),
           ("action" = Option<String>, Query, description = "Only this action (`program.update`, `member.status`…)", max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"),
           ("subject" = Option<String>, Query, description = "Only changes to this subject (a member's external id, a token's id…)", max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"),
           ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)", minimum = 1, maximum = 500),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", pattern = "^[0-9]{1,18}$")),
    responses((status = 200, body = AuditPage, description = "A page of the audit trail, newest first"), Problems))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<AuditPage>> {
    caller.require(
        Permission::AuditRead,
        query.get("program").map(String::as_str),
    )?;
    let limit: i64 = query_param(&query, "limit")?.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit is 1 to 500"));
    }
    if let Some(code) = query.get("program")
        && fidelis_core::ids::ProgramCode::parse(code).is_err()
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "program is a program's code: 1 to 64 of a-z, 0-9 and -",
        ));
    }
    for name in ["actor", "action", "subject"] {
        if query
            .get(name)
            .is_some_and(|v| v.chars().count() > 256 || v.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("{name} is at most 256 printable characters"),
            ));
        }
    }
    let program = match (&caller.program, query.get("program")) {
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked.cloned(),
    };
    let filter = AuditFilter {
        program,
        actor: query.get("actor").cloned(),
        action: query.get("action").cloned(),
        subject: query.get("subject").cloned(),
        before_id: query_param(&query, "cursor")?,
        limit,
    };
    let entries = state.store.audit(&filter).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|(id, _)| id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|(id, e)| AuditBody {
                id,
                at: e.at,
                actor: e.actor,
                role: e.role,
                action: e.action,
                program: e.program,
                subject: e.subject,
                before: e.before,
                after: e.after,
            })
            .collect(),
        next_cursor,
    }))
}
