//! The member portal (`/portal/{program}`): sign-in (a password set through a one-time
//! link), balance and what expires, tier progress, history, promotions to join, transfers
//! and the profile — in English or Japanese.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Utc;
use minijinja::{Value, context};
use serde_json::json;

use super::i18n::{self, message};
use super::session::{self, Area, MemberSession};
use super::{
    Fields, PageError, PageResult, charts, merge, page, query_map, see_other, segment, to_value,
};
use crate::AppState;
use crate::auth::{hash_password, new_token, token_hash};
use crate::extract::ApiJson;
use crate::routes::{
    badges, catalog, claims, lifecycle, members, messages as messages_api, personal_data, vouchers,
};

/// The shortest portal password accepted.
const MIN_PASSWORD_CHARS: usize = 12;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/{program}", get(home))
        .route("/portal/{program}/sign-in", get(sign_in_form).post(sign_in))
        .route("/portal/{program}/sign-out", post(sign_out))
        .route(
            "/portal/{program}/link/{token}",
            get(link_form).post(set_password),
        )
        .route("/portal/{program}/history", get(history))
        .route("/portal/{program}/promotions", get(promotions))
        .route("/portal/{program}/promotions/{promotion}/join", post(join))
        .route("/portal/{program}/transfer", post(transfer))
        .route("/portal/{program}/rewards", get(rewards))
        .route("/portal/{program}/rewards/{item}/order", post(order))
        .route(
            "/portal/{program}/claims",
            get(claims_list).post(file_claim),
        )
        .route("/portal/{program}/data", get(my_data))
        .route("/portal/{program}/data/export", get(export_data))
        .route("/portal/{program}/data/erase", post(erase_data))
        .route("/portal/{program}/data/consents", post(save_consents))
}

/// The page's language and the jar remembering a switch to it.
fn language(
    jar: CookieJar,
    headers: &HeaderMap,
    query: &Fields,
    program: &str,
) -> (CookieJar, &'static str) {
    let lang = i18n::negotiate(query.get("lang").map(String::as_str), &jar, headers);
    let jar = if query.contains_key("lang") {
        jar.add(
            Cookie::build((i18n::LANG_COOKIE, lang))
                .path(format!("/portal/{}", segment(program)))
                .http_only(true)
                .same_site(SameSite::Lax)
                .build(),
        )
    } else {
        jar
    };
    (jar, lang)
}

async fn time_zone(state: &AppState, program: &str) -> Result<String, PageError> {
    let loaded = crate::routes::program(state, program).await?;
    Ok(loaded.program.time_zone.name().to_owned())
}

fn frame(program: &str, lang: &str, tz: &str, csrf: &str, member: Option<&str>) -> Value {
    context! {
        area => "portal",
        lang, tz, csrf,
        program,
        member,
        languages => i18n::LANGUAGES,
    }
}

fn home_url(program: &str) -> String {
    format!("/portal/{}", segment(program))
}

// ---- sign-in -------------------------------------------------------------------------

async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(program): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    let tz = time_zone(&state, &program).await?;
    let (jar, lang) = language(jar, &headers, &query, &program);
    let (jar, token) = session::form_token(&state, &headers, jar, home_url(&program));
    let body = page(
        "portal/sign_in.html",
        frame(&program, lang, &tz, &token, None),
    )?;
    Ok((jar, body).into_response())
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(program): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_form_token(&jar, &form)?;
    let tz = time_zone(&state, &program).await?;
    let (jar, lang) = language(jar, &headers, &Fields::new(), &program);
    let member: String = form
        .get("member")
        .map(|m| m.trim().to_owned())
        .unwrap_or_default()
        .chars()
        .take(128)
        .collect();
    let password = form.get("password").cloned().unwrap_or_default();
    let key = format!("portal:{program}:{member}");
    let now = Utc::now();
    let audit = |action: &str| fidelis_store::AuditEntry {
        at: now,
        actor: format!("member:{member}"),
        role: "member".into(),
        action: action.to_owned(),
        program: Some(program.clone()),
        subject: Some(member.clone()),
        before: None,
        after: None,
    };
    if let Some(wait) = state.throttle.blocked(&key) {
        state
            .store
            .append_audit(&audit("portal.signin.throttled"))
            .await?;
        let minutes = i64::try_from(wait.div_ceil(60)).unwrap_or(15);
        let mut args = fluent_bundle::FluentArgs::new();
        args.set("minutes", minutes);
        return Err(PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            message(lang, "signin-throttled", Some(&args)),
        ));
    }
    let loaded = crate::routes::program(&state, &program).await?;
    let view = match fidelis_core::ids::ExternalId::parse(&member) {
        Ok(_) => state.store.member(&loaded, &member).await?,
        Err(_) => None,
    };
    let hash = match &view {
        Some(v) => state.store.member_password(v.id).await?,
        None => None,
    };
    let ok = session::verify(&password, hash.as_deref()).await;
    let Some(view) = view.filter(|_| ok) else {
        state.throttle.failed(&key);
        state
            .store
            .append_audit(&audit("portal.signin.failed"))
            .await?;
        let (jar, token) = session::form_token(&state, &headers, jar, home_url(&program));
        let mut response = page(
            "portal/sign_in.html",
            merge(
                frame(&program, lang, &tz, &token, None),
                context! { error => message(lang, "signin-wrong", None), entered => member },
            ),
        )?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok((jar, response).into_response());
    };
    state.throttle.succeeded(&key);
    let jar = session::start(
        &state,
        &headers,
        jar,
        Area::Portal,
        None,
        Some((&program, &view.external_id)),
    )
    .await?;
    state.store.append_audit(&audit("portal.signin")).await?;
    Ok((jar, see_other(&home_url(&program))).into_response())
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    member: MemberSession,
    jar: CookieJar,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let jar = session::end(
        &state,
        jar,
        session::PORTAL_COOKIE,
        home_url(&member.program),
    )
    .await?;
    Ok((
        jar,
        see_other(&format!("{}/sign-in", home_url(&member.program))),
    )
        .into_response())
}

/// The one-time link's page: a form to choose a password. Opening it uses nothing (mail
/// scanners open links); setting the password does.
async fn link_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path((program, token)): Path<(String, String)>,
    Query(query): Query<Fields>,
) -> PageResult {
    let tz = time_zone(&state, &program).await?;
    let (jar, lang) = language(jar, &headers, &query, &program);
    let valid = link_member(&state, &program, &token).await?.is_some();
    let (jar, form_token) = session::form_token(&state, &headers, jar, home_url(&program));
    let mut response = page(
        "portal/set_password.html",
        merge(
            frame(&program, lang, &tz, &form_token, None),
            context! { valid, token, min => MIN_PASSWORD_CHARS },
        ),
    )?;
    if !valid {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok((jar, response).into_response())
}

/// The member row a link is for, when it is live and for this program.
async fn link_member(
    state: &AppState,
    program: &str,
    token: &str,
) -> Result<Option<i64>, PageError> {
    let Some(member_id) = state
        .store
        .signin_link(&token_hash(token), Utc::now())
        .await?
    else {
        return Ok(None);
    };
    Ok(match state.store.member_key(member_id).await? {
        Some((code, _)) if code == program => Some(member_id),
        _ => None,
    })
}

async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path((program, token)): Path<(String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_form_token(&jar, &form)?;
    let tz = time_zone(&state, &program).await?;
    let (jar, lang) = language(jar, &headers, &Fields::new(), &program);
    let password = form.get("password").cloned().unwrap_or_default();
    let again = form.get("password_again").cloned().unwrap_or_default();
    let problem = if password.chars().count() < MIN_PASSWORD_CHARS {
        let mut args = fluent_bundle::FluentArgs::new();
        args.set("min", MIN_PASSWORD_CHARS);
        Some(message(lang, "password-too-short", Some(&args)))
    } else if password != again {
        Some(message(lang, "password-mismatch", None))
    } else {
        None
    };
    if link_member(&state, &program, &token).await?.is_none() {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            message(lang, "link-invalid", None),
        ));
    }
    if let Some(problem) = problem {
        let (jar, form_token) = session::form_token(&state, &headers, jar, home_url(&program));
        let mut response = page(
            "portal/set_password.html",
            merge(
                frame(&program, lang, &tz, &form_token, None),
                context! { valid => true, token, min => MIN_PASSWORD_CHARS, error => problem },
            ),
        )?;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok((jar, response).into_response());
    }
    let hash = crate::auth::argon2_apart(move || hash_password(&password))
        .await
        .ok_or_else(crate::error::ApiError::internal)??;
    let Some(member_id) = state
        .store
        .use_signin_link(&token_hash(&token), &hash, Utc::now())
        .await?
    else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            message(lang, "link-invalid", None),
        ));
    };
    let Some((_, external_id)) = state.store.member_key(member_id).await? else {
        return Err(PageError::not_found());
    };
    let jar = session::start(
        &state,
        &headers,
        jar,
        Area::Portal,
        None,
        Some((&program, &external_id)),
    )
    .await?;
    let entry = fidelis_store::Actor {
        name: format!("member:{external_id}"),
        role: "member".into(),
    }
    .entry(
        Utc::now(),
        "portal.password_set",
        Some(&program),
        Some(&external_id),
    );
    state.store.append_audit(&entry).await?;
    Ok((jar, see_other(&home_url(&program))).into_response())
}

// ---- the member's pages --------------------------------------------------------------

async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let notice = query
        .get("done")
        .map(|d| message(lang, &format!("done-{d}"), None));
    let body = home_page(&state, &member, lang, notice, None).await?;
    Ok((jar, body).into_response())
}

async fn home_page(
    state: &AppState,
    member: &MemberSession,
    lang: &str,
    notice: Option<String>,
    error: Option<String>,
) -> PageResult {
    let key = || Path((member.program.clone(), member.member.clone()));
    let caller = &member.caller;
    let body = members::get_member(State(state.clone()), Arc::clone(caller), key())
        .await?
        .0;
    let tiers = lifecycle::tiers(
        State(state.clone()),
        Arc::clone(caller),
        key(),
        query_map(&[]),
    )
    .await?
    .0;
    let badges = badges::member_badges(State(state.clone()), Arc::clone(caller), key())
        .await?
        .0
        .badges;
    // Tiers' benefits are shown with their tier; these are the ones granted for a period.
    let granted: Vec<_> = badges::member_benefits(State(state.clone()), Arc::clone(caller), key())
        .await?
        .0
        .benefits
        .into_iter()
        .filter(|b| b.valid_until.is_some())
        .collect();
    let loaded = crate::routes::program(state, &member.program).await?;
    let tz = loaded.program.time_zone;
    let soon = Utc::now() + chrono::Duration::days(30);
    let mut balances = Vec::new();
    for b in body.balances.iter().filter(|b| b.kind == "redeemable") {
        let expiring_soon: i64 = b
            .expiring
            .iter()
            .filter(|s| s.at <= soon)
            .map(|s| s.points)
            .sum();
        let months = super::expiry_by_month(&b.expiring, tz);
        let labels: Vec<String> = months.keys().cloned().collect();
        // The schedule's table: per month, named in the page's language.
        let per_month: Vec<Value> = months
            .iter()
            .map(|(month, points)| context! { month => i18n::month_name(month, lang), points => *points })
            .collect();
        let chart = (!labels.is_empty()).then(|| {
            charts::bars(
                &labels,
                &[(
                    &message(lang, "chart-expiring", None),
                    months.values().map(|v| *v as f64).collect(),
                )],
            )
        });
        balances.push(context! {
            currency => b.currency.clone(),
            available => b.available,
            pending => b.pending,
            held => b.held,
            expiring_soon,
            schedule => per_month,
            chart,
        });
    }
    // Journals a fraud rule holds: the member sees that they wait, not why.
    let reviewing: Vec<Value> = state
        .store
        .member_held_journals(&loaded, &member.member, 20)
        .await?
        .into_iter()
        .map(|h| {
            let doc: serde_json::Value = serde_json::from_str(&h.document).unwrap_or_default();
            let kind = match h.journal_type.as_str() {
                "redemption" => "review-kind-redemption",
                "transfer" => "review-kind-transfer",
                _ => "review-kind-earning",
            };
            context! {
                id => h.external_id,
                kind => message(lang, kind, None),
                at => h.occurred_at.to_rfc3339(),
                points => doc["points"].as_i64(),
                currency => doc["currency"].as_str().map(str::to_owned),
            }
        })
        .collect();
    let tier_rows: Vec<Value> = tiers
        .tiers
        .iter()
        .map(|t| {
            let percent = match t.next_threshold {
                Some(n) if n > 0 => (t.progress.max(0) * 100 / n).min(100),
                _ => 100,
            };
            let to_go = t.next_threshold.map(|n| (n - t.progress).max(0));
            context! { t => to_value(t), percent, to_go }
        })
        .collect();
    let currencies: Vec<String> = loaded
        .program
        .currencies
        .iter()
        .filter(|c| c.kind == fidelis_core::program::CurrencyKind::Redeemable)
        .map(|c| c.code.to_string())
        .collect();
    let mut response = page(
        "portal/home.html",
        merge(
            frame(
                &member.program,
                lang,
                tz.name(),
                &member.csrf,
                Some(&member.member),
            ),
            context! {
                m => to_value(&body),
                balances,
                reviewing,
                tiers => tier_rows,
                badges => to_value(&badges),
                granted => to_value(&granted),
                currencies,
                notice,
                error => error.clone(),
                external_id => format!("portal-{}", &new_token()[4..24]),
            },
        ),
    )?;
    if error.is_some() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let ledger = members::ledger(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone())),
        query_map(&[
            ("limit", Some("25")),
            ("cursor", query.get("cursor").map(String::as_str)),
        ]),
    )
    .await?
    .0;
    let tz = time_zone(&state, &member.program).await?;
    let body = page(
        "portal/history.html",
        merge(
            frame(
                &member.program,
                lang,
                &tz,
                &member.csrf,
                Some(&member.member),
            ),
            context! { ledger => to_value(&ledger) },
        ),
    )?;
    Ok((jar, body).into_response())
}

async fn promotions(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let body = promotions_page(
        &state,
        &member,
        lang,
        query
            .get("done")
            .map(|d| message(lang, &format!("done-{d}"), None)),
    )
    .await?;
    Ok((jar, body).into_response())
}

async fn promotions_page(
    state: &AppState,
    member: &MemberSession,
    lang: &str,
    notice: Option<String>,
) -> PageResult {
    let standing = members::promotion_standing(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone())),
    )
    .await?
    .0;
    let loaded = crate::routes::program(state, &member.program).await?;
    let now = Utc::now();
    // What a member can see of a promotion: running now (or announced), not a scheduled one.
    let list: Vec<Value> = loaded
        .program
        .promotions
        .iter()
        .filter(|p| {
            p.status == fidelis_core::promotions::PromotionStatus::Active
                && p.ends_at.is_none_or(|e| now < e)
                && p.trigger.is_none()
        })
        .map(|p| {
            let joined = standing.joined.iter().any(|j| j == p.code.as_str());
            let progress = standing
                .progress
                .iter()
                .find(|g| g.promotion == p.code.as_str())
                .map(to_value);
            context! {
                code => p.code.to_string(),
                name => p.name.clone(),
                opt_in => p.opt_in,
                joined,
                progress,
                starts_at => p.starts_at.map(|t| t.to_rfc3339()),
                ends_at => p.ends_at.map(|t| t.to_rfc3339()),
            }
        })
        .collect();
    page(
        "portal/promotions.html",
        merge(
            frame(
                &member.program,
                lang,
                loaded.program.time_zone.name(),
                &member.csrf,
                Some(&member.member),
            ),
            context! { promotions => list, notice },
        ),
    )
}

async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path((program, promotion)): Path<(String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (_, lang) = language(jar, &headers, &Fields::new(), &program);
    match members::join_promotion(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone(), promotion)),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}/promotions?done=joined",
            home_url(&program)
        ))),
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY
                || e.status == StatusCode::NOT_FOUND =>
        {
            let mut response = promotions_page(&state, &member, lang, Some(e.detail)).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path(program): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (_, lang) = language(jar, &headers, &Fields::new(), &program);
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let Ok(points) = field("points").parse::<i64>() else {
        return home_page(
            &state,
            &member,
            lang,
            None,
            Some(message(lang, "transfer-points-invalid", None)),
        )
        .await;
    };
    let request = serde_json::from_value(json!({
        "external_id": field("external_id"), "to": field("to"), "currency": field("currency"), "points": points,
    }));
    let Ok(request) = request else {
        return home_page(
            &state,
            &member,
            lang,
            None,
            Some(message(lang, "transfer-points-invalid", None)),
        )
        .await;
    };
    match lifecycle::transfer(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone())),
        ApiJson(request),
    )
    .await
    {
        // Held by a fraud rule (202): the points are reserved, not given yet.
        Ok(r) if r.status() == axum::http::StatusCode::ACCEPTED => Ok(see_other(&format!(
            "{}?done=transfer-held",
            home_url(&program)
        ))),
        Ok(_) => Ok(see_other(&format!(
            "{}?done=transferred",
            home_url(&program)
        ))),
        Err(e) if e.status.is_client_error() => {
            home_page(&state, &member, lang, None, Some(e.detail)).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- rewards: the catalog, my vouchers, my orders -------------------------------------

async fn rewards(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let notice = query
        .get("done")
        .map(|d| message(lang, &format!("done-{d}"), None));
    let body = rewards_page(&state, &member, lang, notice, None).await?;
    Ok((jar, body).into_response())
}

async fn rewards_page(
    state: &AppState,
    member: &MemberSession,
    lang: &str,
    notice: Option<String>,
    error: Option<String>,
) -> PageResult {
    let items = catalog::list_catalog(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path(member.program.clone()),
        super::query_map(&[]),
    )
    .await?
    .0;
    let mine = vouchers::member_vouchers(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone())),
    )
    .await?
    .0;
    let orders = catalog::list_orders(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path(member.program.clone()),
        super::query_map(&[("limit", Some("20"))]),
    )
    .await?
    .0;
    let loaded = crate::routes::program(state, &member.program).await?;
    let money = loaded.program.money_currency.code().to_owned();
    // Orders name their item as the catalog does (its code when it left the catalog).
    let orders: Vec<Value> = orders
        .orders
        .iter()
        .map(|o| {
            let name = items
                .items
                .iter()
                .find(|i| i.code == o.item)
                .map_or_else(|| o.item.clone(), |i| i.name.clone());
            merge(to_value(o), context! { item_name => name })
        })
        .collect();
    // Each order form carries its own id: a double submission places one order.
    let items: Vec<Value> = items
        .items
        .iter()
        .map(|i| {
            merge(
                to_value(i),
                context! { order_id => format!("portal-{}", &new_token()[..20]) },
            )
        })
        .collect();
    page(
        "portal/rewards.html",
        merge(
            frame(
                &member.program,
                lang,
                loaded.program.time_zone.name(),
                &member.csrf,
                Some(&member.member),
            ),
            context! {
                items, money,
                vouchers => to_value(&mine.vouchers),
                orders,
                notice, error,
            },
        ),
    )
}

async fn order(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path((program, item)): Path<(String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (_, lang) = language(jar, &headers, &Fields::new(), &program);
    let request = serde_json::from_value(json!({
        "order_id": form.get("order_id").cloned().unwrap_or_default(),
        "member": member.member, "item": item,
    }))
    .map_err(|_| {
        crate::error::ApiError::bad_request("invalid_body", "an order names its id".to_owned())
    })?;
    match catalog::place_order(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path(member.program.clone()),
        ApiJson(request),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}/rewards?done=ordered",
            home_url(&program)
        ))),
        Err(e) if e.status.is_client_error() => {
            let mut response = rewards_page(&state, &member, lang, None, Some(e.detail)).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

async fn claims_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let notice = query
        .get("done")
        .map(|d| message(lang, &format!("done-{d}"), None));
    let body = claims_page(&state, &member, lang, notice, None, &Fields::new()).await?;
    Ok((jar, body).into_response())
}

/// The member's claims with their decisions, and the form to file one (filled in again
/// after a refusal).
async fn claims_page(
    state: &AppState,
    member: &MemberSession,
    lang: &str,
    notice: Option<String>,
    error: Option<String>,
    form: &Fields,
) -> PageResult {
    let mine = claims::list_claims(
        State(state.clone()),
        Arc::clone(&member.caller),
        Path(member.program.clone()),
        super::query_map(&[]),
    )
    .await?
    .0;
    let loaded = crate::routes::program(state, &member.program).await?;
    page(
        "portal/claims.html",
        merge(
            frame(
                &member.program,
                lang,
                loaded.program.time_zone.name(),
                &member.csrf,
                Some(&member.member),
            ),
            context! {
                claims => to_value(&mine.claims),
                money => loaded.program.money_currency.code(),
                form => to_value(form),
                notice, error,
            },
        ),
    )
}

/// Files the member's claim: the date is the transaction's local day (noon, in the
/// program's time zone). A refusal shows the page again with the form filled in.
async fn file_claim(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path(program): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (_, lang) = language(jar, &headers, &Fields::new(), &program);
    let loaded = crate::routes::program(&state, &member.program).await?;
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let occurred_at = field("date")
        .and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .and_then(|d| d.and_local_timezone(loaded.program.time_zone).single())
        .map(|d| d.with_timezone(&Utc));
    let request = occurred_at.and_then(|occurred_at| {
        serde_json::from_value(json!({
            "member": member.member, "reference": field("reference").unwrap_or_default(),
            "occurred_at": occurred_at, "amount": field("amount").unwrap_or_default(),
            "partner": field("partner"), "note": field("note"),
        }))
        .ok()
    });
    let refusal = match request {
        None => (
            message(lang, "claim-bad-date", None),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Some(request) => match claims::file_claim(
            State(state.clone()),
            Arc::clone(&member.caller),
            Path(member.program.clone()),
            ApiJson(request),
        )
        .await
        {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "{}/claims?done=claimed",
                    home_url(&program)
                )));
            }
            Err(e) if e.status.is_client_error() => (e.detail, e.status),
            Err(e) => return Err(e.into()),
        },
    };
    let mut response = claims_page(&state, &member, lang, None, Some(refusal.0), &form).await?;
    *response.status_mut() = refusal.1;
    Ok(response)
}

// ---- my data: export and erasure ------------------------------------------------------

/// What the program holds about the member: a download of all of it, and erasure.
async fn my_data(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Query(query): Query<Fields>,
) -> PageResult {
    let (jar, lang) = language(jar, &headers, &query, &member.program);
    let body = data_page(&state, &member, lang, None).await?;
    Ok((jar, body).into_response())
}

async fn data_page(
    state: &AppState,
    member: &MemberSession,
    lang: &'static str,
    error: Option<String>,
) -> PageResult {
    data_page_with(state, member, lang, error, None).await
}

async fn data_page_with(
    state: &AppState,
    member: &MemberSession,
    lang: &'static str,
    error: Option<String>,
    notice: Option<String>,
) -> PageResult {
    let loaded = crate::routes::program(state, &member.program).await?;
    let tz = loaded.program.time_zone.name().to_owned();
    let view = members::member(state, &loaded, &member.member).await?;
    let consents: std::collections::BTreeMap<String, bool> = state
        .store
        .consents(&view)
        .await
        .map_err(crate::error::ApiError::from)?
        .into_iter()
        .map(|c| (c.channel, c.granted))
        .collect();
    page(
        "portal/data.html",
        merge(
            frame(
                &member.program,
                lang,
                &tz,
                &member.csrf,
                Some(&member.member),
            ),
            context! { error, notice, erased => false, consents },
        ),
    )
}

/// The member's contact preferences from the form's boxes (a box left unticked withdraws).
async fn save_consents(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path(program): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (jar, lang) = language(jar, &headers, &Fields::new(), &program);
    let ticked = |c: &str| Some(form.contains_key(c));
    let request = crate::dto::ConsentsRequest {
        email: ticked("email"),
        sms: ticked("sms"),
        push: ticked("push"),
    };
    let _saved = messages_api::set_consents(
        &state,
        &member.caller,
        &member.program,
        &member.member,
        &request,
        "portal",
    )
    .await?;
    let body = data_page_with(
        &state,
        &member,
        lang,
        None,
        Some(message(lang, "consents-saved", None)),
    )
    .await?;
    Ok((jar, body).into_response())
}

/// Everything held about the member, as a JSON download (the API's export).
async fn export_data(State(state): State<AppState>, member: MemberSession) -> PageResult {
    personal_data::export_member(
        State(state),
        Arc::clone(&member.caller),
        Path((member.program.clone(), member.member.clone())),
    )
    .await
    .map_err(Into::into)
}

/// Erases the member's personal data once they typed their member number to confirm,
/// then ends the session: the pseudonymous account cannot be signed in to.
async fn erase_data(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    member: MemberSession,
    Path(program): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &member.csrf)?;
    let (jar, lang) = language(jar, &headers, &Fields::new(), &program);
    let confirmed = form
        .get("confirm")
        .is_some_and(|c| c.trim() == member.member);
    if !confirmed {
        let body = data_page(
            &state,
            &member,
            lang,
            Some(message(lang, "data-erase-unconfirmed", None)),
        )
        .await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, body).into_response());
    }
    let loaded = crate::routes::program(&state, &member.program).await?;
    state
        .store
        .erase_member(&loaded, &member.member, Utc::now(), &member.caller.actor())
        .await
        .map_err(crate::error::ApiError::from)?;
    let jar = session::end(&state, jar, session::PORTAL_COOKIE, home_url(&program)).await?;
    let tz = loaded.program.time_zone.name().to_owned();
    let body = page(
        "portal/data.html",
        merge(
            frame(&program, lang, &tz, "", None),
            context! { erased => true },
        ),
    )?;
    Ok((jar, body).into_response())
}
