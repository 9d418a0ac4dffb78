//! The admin console (`/console`): sign-in, the program dashboard, members with the 360°
//! view and its actions, the program editor with live checks, the dry run, promotions, the
//! audit log, users and tokens.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use axum_extra::extract::cookie::CookieJar;
use chrono::{Datelike, Months, NaiveDate, TimeZone, Utc};
use minijinja::{Value, context};
use serde_json::json;

use super::session::{self, Area, Staff};
use super::{
    Fields, PageError, PageResult, charts, merge, page, query_map, see_other, segment, to_value,
};
use crate::AppState;
use crate::auth::{Caller, Permission, new_token};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::{
    admin, catalog as catalog_api, claims as claims_api, fraud as fraud_api, journals, lifecycle,
    members, messages as messages_api, partners as partners_api, personal_data, programs,
    webhooks as webhooks_api,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/programs/{program}", get(dashboard))
        .route(
            "/console/programs/{program}/dashboard.csv",
            get(dashboard_csv),
        )
        .route(
            "/console/programs/{program}/dashboard/refresh",
            post(dashboard_refresh),
        )
        .route("/console/programs/{program}/members", get(member_search))
        .route(
            "/console/programs/{program}/members/{member}",
            get(member_view),
        )
        .route(
            "/console/programs/{program}/members/{member}/export",
            get(member_export),
        )
        .route(
            "/console/programs/{program}/members/{member}/{action}",
            post(member_action),
        )
        .route(
            "/console/programs/{program}/definition",
            get(definition_form).post(definition_save),
        )
        .route(
            "/console/programs/{program}/check-condition",
            post(check_condition),
        )
        .route(
            "/console/programs/{program}/dry-run",
            get(dry_run_form).post(dry_run),
        )
        .route(
            "/console/programs/{program}/journals/{journal}",
            get(journal_view),
        )
        .route("/console/programs/{program}/promotions", get(promotions))
        .route("/console/programs/{program}/catalog", get(catalog))
        .route("/console/programs/{program}/partners", get(partners))
        .route("/console/programs/{program}/segments", get(segments_page))
        .route(
            "/console/programs/{program}/claims/{claim}/{action}",
            post(claim_action),
        )
        .route(
            "/console/programs/{program}/orders/{order}/{action}",
            post(order_action),
        )
        .route("/console/programs/{program}/fraud", get(fraud_page))
        .route(
            "/console/programs/{program}/held-journals/{journal}/{action}",
            post(held_action),
        )
        .route(
            "/console/programs/{program}/webhooks",
            get(webhooks_page).post(webhook_create),
        )
        .route(
            "/console/programs/{program}/webhooks/{webhook}/{action}",
            post(webhook_action),
        )
        .route("/console/programs/{program}/messages", get(messages_page))
        .route(
            "/console/programs/{program}/messages/{event}/{language}/{action}",
            post(message_action),
        )
        .route("/console/audit", get(audit))
        .route("/console/access", get(access))
        .route("/console/access/{action}", post(access_action))
}

/// What every console page's layout needs: who is signed in, what they may open.
fn frame(staff: &Staff, program: Option<&str>) -> Value {
    let c = &staff.caller;
    context! {
        area => "console",
        lang => "en",
        user => c.name.clone(),
        role => c.role.name(),
        csrf => staff.csrf.clone(),
        program => program,
        may => context! {
            edit_programs => c.has(Permission::ProgramsWrite),
            webhooks => c.has(Permission::ProgramsWrite),
            dry_run => c.has(Permission::JournalsWrite),
            journals => c.has(Permission::JournalsRead),
            audit => c.has(Permission::AuditRead),
            access => c.has(Permission::TokensManage),
            adjust => c.has(Permission::Adjust),
            members_write => c.has(Permission::MembersWrite),
            cancel => c.has(Permission::Cancel),
            redeem => c.has(Permission::Redeem),
        },
    }
}

/// A request body for an API handler, built from a form (a 422 page when it does not fit).
fn body<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<ApiJson<T>, PageError> {
    serde_json::from_value(value).map(ApiJson).map_err(|e| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The form is incomplete: {e}"),
        )
    })
}

// ---- sign-in -------------------------------------------------------------------------

async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<Fields>,
) -> Response {
    let (jar, token) = session::form_token(&state, &headers, jar, "/console".into());
    let next = query.get("next").cloned().unwrap_or_default();
    let body = page(
        "console/sign_in.html",
        context! { area => "console", lang => "en", csrf => token, next, email => "" },
    );
    (jar, body).into_response()
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => {
            n.clone()
        }
        _ => "/console".to_owned(),
    }
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_form_token(&jar, &form)?;
    let email: String = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let email: String = email.chars().take(256).collect();
    let password = form.get("password").cloned().unwrap_or_default();
    let key = format!("console:{email}");
    let now = Utc::now();
    let audit = |action: &str, role: &str| fidelis_store::AuditEntry {
        at: now,
        actor: email.clone(),
        role: role.to_owned(),
        action: action.to_owned(),
        program: None,
        subject: None,
        before: None,
        after: None,
    };
    if let Some(wait) = state.throttle.blocked(&key) {
        state
            .store
            .append_audit(&audit("signin.throttled", "unknown"))
            .await?;
        return Err(PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins for this account. Try again in {} minutes.",
                wait.div_ceil(60)
            ),
        ));
    }
    let user = state.store.user_by_email(&email).await?;
    let ok = session::verify(&password, user.as_ref().map(|u| u.password_hash.as_str())).await;
    let Some(user) = user.filter(|_| ok) else {
        state.throttle.failed(&key);
        state
            .store
            .append_audit(&audit("signin.failed", "unknown"))
            .await?;
        let (jar, token) = session::form_token(&state, &headers, jar, "/console".into());
        let mut response = page(
            "console/sign_in.html",
            context! {
                area => "console", lang => "en", csrf => token, email,
                next => form.get("next").cloned().unwrap_or_default(),
                error => "The email or the password is wrong.",
            },
        )?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok((jar, response).into_response());
    };
    let caller = session::staff_caller(&user)?;
    if matches!(
        caller.role,
        crate::auth::Role::Member | crate::auth::Role::Partner
    ) {
        state
            .store
            .append_audit(&audit("signin.refused", &user.role))
            .await?;
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "The console is for program staff; members sign in to their program's portal.",
        ));
    }
    state.throttle.succeeded(&key);
    let jar = session::start(&state, &headers, jar, Area::Console, Some(user.id), None).await?;
    let mut entry = audit("signin", &user.role);
    entry.program = user.program.clone();
    state.store.append_audit(&entry).await?;
    Ok((jar, see_other(&safe_next(form.get("next")))).into_response())
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    jar: CookieJar,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let jar = session::end(&state, jar, session::CONSOLE_COOKIE, "/console".into()).await?;
    let entry = staff
        .caller
        .actor()
        .entry(Utc::now(), "signout", None, None);
    state.store.append_audit(&entry).await?;
    Ok((jar, see_other("/console/sign-in")).into_response())
}

// ---- programs and the dashboard ------------------------------------------------------

async fn home(State(state): State<AppState>, staff: Staff) -> PageResult {
    let list = programs::list_programs(State(state), Arc::clone(&staff.caller))
        .await?
        .0;
    let visible: Vec<_> = list
        .into_iter()
        .filter(|p| staff.caller.sees_program(Some(&p.code)))
        .collect();
    page(
        "console/programs.html",
        merge(
            frame(&staff, None),
            context! { programs => to_value(&visible) },
        ),
    )
}

/// Month starts in the program's zone: the last `n` months and the next month's start.
pub(crate) fn month_bounds(
    tz: chrono_tz::Tz,
    now: chrono::DateTime<Utc>,
    n: u32,
) -> Vec<chrono::DateTime<Utc>> {
    let local = now.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap_or(local);
    (0..=n)
        .filter_map(|i| {
            let month = first
                .checked_sub_months(Months::new(n - 1))?
                .checked_add_months(Months::new(i))?;
            let midnight = month.and_hms_opt(0, 0, 0)?;
            tz.from_local_datetime(&midnight)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        })
        .collect()
}

/// A program's dashboard figures as computed at an instant.
pub(crate) struct Computed {
    at: chrono::DateTime<Utc>,
    labels: Vec<String>,
    figures: fidelis_store::Dashboard,
    /// The points liability as of `at`, with its month-end history.
    liability: fidelis_store::Liability,
}

/// How long dashboard figures are shown before they are computed again (in the
/// background, while the previous figures are still shown).
const DASHBOARD_TTL: chrono::Duration = chrono::Duration::minutes(5);

/// Dashboards per program: aggregating every journal of a large program takes seconds, so
/// the figures are kept and recomputed in the background once they are older than
/// [`DASHBOARD_TTL`] (or at once, with the page's Refresh button).
#[derive(Default)]
pub struct Dashboards {
    computed: std::sync::Mutex<HashMap<String, Arc<Computed>>>,
    refreshing: std::sync::Mutex<std::collections::HashSet<String>>,
}

async fn compute_dashboard(state: &AppState, code: &str) -> Result<Arc<Computed>, PageError> {
    let program = crate::routes::program(state, code).await?;
    let tz = program.program.time_zone;
    let now = Utc::now();
    let bounds = month_bounds(tz, now, 12);
    let labels = bounds
        .iter()
        .take(bounds.len().saturating_sub(1))
        .map(|b| b.with_timezone(&tz).format("%Y-%m").to_string())
        .collect();
    let figures = state.store.dashboard(&program, &bounds, now).await?;
    let liability = state.store.liability(&program, now).await?;
    let computed = Arc::new(Computed {
        at: now,
        labels,
        figures,
        liability,
    });
    if let Ok(mut map) = state.dashboards.computed.lock() {
        map.insert(code.to_owned(), Arc::clone(&computed));
    }
    Ok(computed)
}

/// Starts computing the program's figures in the background, unless that is under way.
fn start_compute(state: &AppState, code: &str) {
    if state
        .dashboards
        .refreshing
        .lock()
        .is_ok_and(|mut r| r.insert(code.to_owned()))
    {
        let (state, code) = (state.clone(), code.to_owned());
        tokio::spawn(async move {
            if let Err(e) = compute_dashboard(&state, &code).await {
                tracing::warn!(
                    program = code,
                    error = e.message,
                    "the dashboard could not be computed"
                );
            }
            if let Ok(mut r) = state.dashboards.refreshing.lock() {
                r.remove(&code);
            }
        });
    }
}

fn kept(state: &AppState, code: &str) -> Option<Arc<Computed>> {
    state
        .dashboards
        .computed
        .lock()
        .ok()
        .and_then(|m| m.get(code).cloned())
}

/// Figures computed at or after `since`, once they are there, waiting at most `wait`.
async fn computed_since(
    state: &AppState,
    code: &str,
    since: chrono::DateTime<Utc>,
    wait: std::time::Duration,
) -> Option<Arc<Computed>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(c) = kept(state, code).filter(|c| c.at >= since) {
            return Some(c);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// How long a page waits for figures nobody has computed yet before it says they are on
/// their way (the page must answer fast; the rollup's first pass over a large ledger may
/// take a minute).
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
/// How long *Refresh now* waits for the new figures.
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The program's dashboard figures for a caller who may read the program: kept ones (a
/// background recompute starts once they are older than [`DASHBOARD_TTL`]), new ones when
/// `fresh` is asked; `None` while the first ones are being computed.
async fn dashboard_data(
    state: &AppState,
    caller: &Caller,
    code: &str,
    fresh: bool,
) -> Result<Option<Arc<Computed>>, PageError> {
    caller.require(Permission::ProgramsRead, Some(code))?;
    crate::routes::program(state, code).await?;
    let since = Utc::now();
    match kept(state, code) {
        Some(kept) if !fresh => {
            if since - kept.at > DASHBOARD_TTL {
                start_compute(state, code);
            }
            Ok(Some(kept))
        }
        kept => {
            start_compute(state, code);
            let wait = if fresh { REFRESH_WAIT } else { FIRST_WAIT };
            Ok(computed_since(state, code, since, wait).await.or(kept))
        }
    }
}

async fn dashboard_refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path(code): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    dashboard_data(&state, &staff.caller, &code, true).await?;
    Ok(see_other(&format!("/console/programs/{}", segment(&code))))
}

async fn dashboard(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> PageResult {
    let Some(computed) = dashboard_data(&state, &staff.caller, &code, false).await? else {
        return page(
            "console/dashboard.html",
            merge(frame(&staff, Some(&code)), context! { pending => true }),
        );
    };
    let (labels, figures) = (&computed.labels, &computed.figures);
    let enrolment_chart = charts::bars(
        labels,
        &[(
            "Enrolments",
            figures.enrolments.iter().map(|n| *n as f64).collect(),
        )],
    );
    let mut currencies = Vec::new();
    for (currency, months) in &figures.points {
        let issued: i64 = months.iter().map(|m| m.issued).sum();
        let redeemed: i64 = months.iter().map(|m| m.redeemed).sum();
        let expired: i64 = months.iter().map(|m| m.expired).sum();
        let chart = charts::bars(
            labels,
            &[
                ("Issued", months.iter().map(|m| m.issued as f64).collect()),
                (
                    "Redeemed",
                    months.iter().map(|m| m.redeemed as f64).collect(),
                ),
                ("Expired", months.iter().map(|m| m.expired as f64).collect()),
            ],
        );
        let outstanding = figures
            .outstanding
            .iter()
            .find(|(c, _, _)| c == currency)
            .map_or((0, 0), |(_, a, p)| (*a, *p));
        // Redemption rate: the share of points issued in the window that were redeemed.
        let rate = if issued > 0 {
            format!("{:.1} %", redeemed as f64 * 100.0 / issued as f64)
        } else {
            "–".to_owned()
        };
        currencies.push(context! {
            code => currency,
            chart,
            months => months.iter().zip(labels).map(|(m, l)| context! { label => l, issued => m.issued, redeemed => m.redeemed, expired => m.expired }).collect::<Vec<_>>(),
            issued, redeemed, expired, rate,
            available => outstanding.0, pending => outstanding.1,
        });
    }
    let tier_chart = charts::bars(
        &figures
            .tiers
            .iter()
            .map(|(g, t, _)| format!("{g}: {t}"))
            .collect::<Vec<_>>(),
        &[(
            "Members",
            figures.tiers.iter().map(|(_, _, n)| *n as f64).collect(),
        )],
    );
    let money = crate::routes::program(&state, &code)
        .await?
        .program
        .money_currency
        .clone();
    let l = &computed.liability;
    let liability: Vec<Value> = l
        .currencies
        .iter()
        .map(|c| {
            // The last twelve month-ends, as money.
            let history: Vec<&fidelis_store::LiabilityPoint> = l
                .history
                .iter()
                .filter(|h| h.currency == c.currency)
                .collect();
            let recent = &history[history.len().saturating_sub(12)..];
            let chart = (!recent.is_empty()).then(|| {
                charts::bars(
                    &recent.iter().map(|h| h.month.clone()).collect::<Vec<_>>(),
                    &[(
                        "Liability at month end",
                        recent
                            .iter()
                            .map(|h| money.to_decimal(fidelis_core::money::MinorUnits(h.value)).to_string().parse().unwrap_or(0.0))
                            .collect(),
                    )],
                )
            });
            let amount = |v: i64| format!("{} {}", money.format(fidelis_core::money::MinorUnits(v)), money.code());
            context! {
                code => c.currency.clone(),
                outstanding => c.outstanding,
                value => amount(c.value),
                per_point => c.value_per_point.normalize().to_string(),
                rate => c.breakage_rate.map(|r| format!("{:.1} %", r * 100.0)),
                breakage => c.expected_breakage,
                net => c.net_value.map(amount),
                chart,
                months => recent.iter().map(|h| context! { month => h.month.clone(), outstanding => h.outstanding, value => amount(h.value) }).collect::<Vec<_>>(),
                partners => l.partners.iter().filter(|p| p.currency == c.currency).map(|p| context! { partner => p.partner.clone(), outstanding => p.outstanding, value => amount(p.value) }).collect::<Vec<_>>(),
            }
        })
        .collect();
    page(
        "console/dashboard.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                liability,
                computed_at => computed.at.to_rfc3339(),
                tz => crate::routes::program(&state, &code).await?.program.time_zone.name(),
                members => figures.members,
                active_30 => figures.active_30,
                active_90 => figures.active_90,
                enrolments => labels.iter().zip(&figures.enrolments).map(|(l, n)| context! { label => l, n => n }).collect::<Vec<_>>(),
                enrolment_chart,
                currencies,
                tiers => figures.tiers.iter().map(|(g, t, n)| context! { group => g, tier => t, n => n }).collect::<Vec<_>>(),
                tier_chart,
            },
        ),
    )
}

/// A dashboard table as CSV (`table` = `enrolments`, `points` or `tiers`).
async fn dashboard_csv(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    let computed = dashboard_data(&state, &staff.caller, &code, false)
        .await?
        .ok_or_else(|| {
            PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The figures are being computed; try again in a minute.",
            )
        })?;
    let (labels, figures) = (&computed.labels, &computed.figures);
    let mut out = csv::Writer::from_writer(Vec::new());
    let table = query.get("table").map_or("points", String::as_str);
    let write = |out: &mut csv::Writer<Vec<u8>>, row: &[String]| {
        out.write_record(row).map_err(|_| PageError::internal())
    };
    match table {
        "enrolments" => {
            write(&mut out, &["month".into(), "enrolments".into()])?;
            for (l, n) in labels.iter().zip(&figures.enrolments) {
                write(&mut out, &[l.clone(), n.to_string()])?;
            }
        }
        "tiers" => {
            write(&mut out, &["group".into(), "tier".into(), "members".into()])?;
            for (g, t, n) in &figures.tiers {
                write(&mut out, &[g.clone(), t.clone(), n.to_string()])?;
            }
        }
        "points" => {
            write(
                &mut out,
                &[
                    "month".into(),
                    "currency".into(),
                    "issued".into(),
                    "redeemed".into(),
                    "expired".into(),
                ],
            )?;
            for (currency, months) in &figures.points {
                for (l, m) in labels.iter().zip(months) {
                    write(
                        &mut out,
                        &[
                            l.clone(),
                            currency.clone(),
                            m.issued.to_string(),
                            m.redeemed.to_string(),
                            m.expired.to_string(),
                        ],
                    )?;
                }
            }
        }
        _ => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "table is enrolments, points or tiers",
            ));
        }
    }
    let bytes = out.into_inner().map_err(|_| PageError::internal())?;
    let disposition = format!("attachment; filename=\"{code}-{table}.csv\"");
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

// ---- members -------------------------------------------------------------------------

async fn member_search(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    let q = query
        .get("q")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cursor = query.get("cursor").cloned();
    let result = members::list_members(
        State(state),
        Arc::clone(&staff.caller),
        Path(code.clone()),
        query_map(&[
            ("q", Some(&q)),
            ("limit", Some("25")),
            ("cursor", cursor.as_deref()),
        ]),
    )
    .await;
    let (list, error) = match result {
        Ok(Json(page)) => (Some(to_value(&page)), None),
        Err(e)
            if e.status == StatusCode::BAD_REQUEST
                || e.status == StatusCode::UNPROCESSABLE_ENTITY =>
        {
            (None, Some(e.detail))
        }
        Err(e) => return Err(e.into()),
    };
    page(
        "console/members.html",
        merge(frame(&staff, Some(&code)), context! { q, list, error }),
    )
}

/// A message shown at the top of a page after an action.
fn notice(ok: bool, text: impl Into<String>) -> Value {
    context! { ok, text => text.into() }
}

const DONE: &[(&str, &str)] = &[
    ("adjusted", "The points were adjusted."),
    ("status", "The member's status was changed."),
    ("tier", "The tier was assigned."),
    ("merged", "The member was merged."),
    (
        "erased",
        "The member's personal data was erased; the account is kept, closed, under this pseudonym.",
    ),
    ("reinstated", "The expired points were reinstated."),
    ("flagged", "The member is flagged for review."),
    ("unflagged", "The member's flag was cleared."),
];

async fn member_view(
    State(state): State<AppState>,
    staff: Staff,
    Path((code, member)): Path<(String, String)>,
    Query(query): Query<Fields>,
) -> PageResult {
    let done = query
        .get("done")
        .and_then(|d| DONE.iter().find(|(k, _)| k == d))
        .map(|(_, text)| notice(true, *text));
    member_page(
        &state,
        &staff,
        &code,
        &member,
        query.get("ledger").cloned(),
        done,
        None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn member_page(
    state: &AppState,
    staff: &Staff,
    code: &str,
    member: &str,
    ledger_cursor: Option<String>,
    notice: Option<Value>,
    link: Option<String>,
) -> PageResult {
    let caller = &staff.caller;
    let key = || Path((code.to_owned(), member.to_owned()));
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
    let standing = members::promotion_standing(State(state.clone()), Arc::clone(caller), key())
        .await?
        .0;
    let ledger = members::ledger(
        State(state.clone()),
        Arc::clone(caller),
        key(),
        query_map(&[("limit", Some("20")), ("cursor", ledger_cursor.as_deref())]),
    )
    .await?
    .0;
    // The audit trail, for those who may read it.
    let trail = if caller.has(Permission::AuditRead) {
        admin::audit(
            State(state.clone()),
            Arc::clone(caller),
            query_map(&[
                ("program", Some(code)),
                ("subject", Some(member)),
                ("limit", Some("20")),
            ]),
        )
        .await
        .ok()
        .map(|j| to_value(&j.0))
    } else {
        None
    };
    // The household (group), read as the API would answer this caller.
    let household = match &body.group {
        Some(group) => Some(to_value(
            &lifecycle::get_group(
                State(state.clone()),
                Arc::clone(caller),
                Path((code.to_owned(), group.clone())),
            )
            .await?
            .0,
        )),
        None => None,
    };
    let engagement =
        crate::routes::segments::member_segments(State(state.clone()), Arc::clone(caller), key())
            .await?
            .0;
    let program = crate::routes::program(state, code).await?;
    let tz = program.program.time_zone;
    let money = &program.program.money_currency;
    let amount = |v: i64| {
        format!(
            "{} {}",
            money.format(fidelis_core::money::MinorUnits(v)),
            money.code()
        )
    };
    let clv = engagement.lifetime_value_12m.map(amount);
    let spend_90d = amount(engagement.spend_90d);
    // The expiry schedule per month, per currency.
    let mut schedules = Vec::new();
    for b in &body.balances {
        if b.expiring.is_empty() {
            continue;
        }
        let months = super::expiry_by_month(&b.expiring, tz);
        let labels: Vec<String> = months.keys().cloned().collect();
        let chart = charts::bars(
            &labels,
            &[("Expiring", months.values().map(|v| *v as f64).collect())],
        );
        schedules.push(
            context! { currency => b.currency.clone(), chart, rows => to_value(&b.expiring) },
        );
    }
    let currencies: Vec<String> = program
        .program
        .currencies
        .iter()
        .map(|c| c.code.to_string())
        .collect();
    let tier_options: Vec<Value> = program
        .program
        .tier_groups
        .iter()
        .flat_map(|g| g.tiers.iter().map(move |t| context! { group => g.code.to_string(), tier => t.code.to_string(), name => format!("{} — {}", g.name, t.name) }))
        .collect();
    let flagged = state.store.member_flag(&program, member).await?;
    page(
        "console/member.html",
        merge(
            frame(staff, Some(code)),
            context! {
                tz => tz.name(),
                m => to_value(&body),
                tiers => to_value(&tiers),
                standing => to_value(&standing),
                ledger => to_value(&ledger),
                household,
                promotion_codes => program.program.promotions.iter().map(|p| p.code.to_string()).collect::<Vec<_>>(),
                trail,
                schedules,
                currencies,
                tier_options,
                engagement => to_value(&engagement),
                clv,
                spend_90d,
                notice,
                link,
                flagged,
                external_id => format!("console-{}", &new_token()[4..24]),
            },
        ),
    )
}

async fn member_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, member, action)): Path<(String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return member_page(
            &state,
            &staff,
            &code,
            &member,
            None,
            Some(notice(false, "Tick the confirmation box to do this.")),
            None,
        )
        .await;
    }
    let caller = Arc::clone(&staff.caller);
    let key = Path((code.clone(), member.clone()));
    let s = State(state.clone());
    let result: Result<&str, ApiError> = match action.as_str() {
        "adjust" => {
            let points: i64 = match field("points").parse() {
                Ok(p) => p,
                Err(_) => {
                    return member_page(
                        &state,
                        &staff,
                        &code,
                        &member,
                        None,
                        Some(notice(
                            false,
                            "Points must be a whole number (negative to take points away).",
                        )),
                        None,
                    )
                    .await;
                }
            };
            let request = body(
                json!({"external_id": field("external_id"), "currency": field("currency"), "points": points, "reason": field("reason")}),
            )?;
            members::adjust(s, caller, key, request)
                .await
                .map(|_| "adjusted")
        }
        "status" => {
            let request = body(json!({"status": field("status")}))?;
            members::set_status(s, caller, key, request)
                .await
                .map(|_| "status")
        }
        "tier" => {
            let (group, tier) = field("tier")
                .split_once(':')
                .map(|(g, t)| (g.to_owned(), t.to_owned()))
                .unwrap_or_default();
            let request = body(json!({"tier": tier, "reason": field("reason")}))?;
            lifecycle::assign_tier(
                s,
                caller,
                Path((code.clone(), member.clone(), group)),
                request,
            )
            .await
            .map(|_| "tier")
        }
        "merge" => {
            let request = body(json!({"into": field("into")}))?;
            lifecycle::merge(s, caller, key, request)
                .await
                .map(|_| "merged")
        }
        "reinstate" => {
            let request = body(
                json!({"external_id": field("external_id"), "currency": field("currency"), "reason": field("reason")}),
            )?;
            lifecycle::reinstate(s, caller, key, request)
                .await
                .map(|_| "reinstated")
        }
        "erase" => {
            if field("erase_member") != member {
                return member_page(
                    &state,
                    &staff,
                    &code,
                    &member,
                    None,
                    Some(notice(
                        false,
                        "Type the member id exactly to confirm the erasure.",
                    )),
                    None,
                )
                .await;
            }
            match personal_data::erase_member(s, caller, key).await {
                Ok(done) => {
                    return Ok(see_other(&format!(
                        "/console/programs/{}/members/{}?done=erased",
                        segment(&code),
                        segment(&done.0.member)
                    )));
                }
                Err(e) => Err(e),
            }
        }
        "flag" => fraud_api::flag_member(
            s,
            caller,
            key,
            ApiJson(fraud_api::FlagRequest {
                reason: field("reason"),
            }),
        )
        .await
        .map(|_| "flagged"),
        "unflag" => fraud_api::unflag_member(s, caller, key)
            .await
            .map(|_| "unflagged"),
        "signin-link" => {
            let link = portal_link(&state, &staff.caller, &code, &member).await?;
            return member_page(&state, &staff, &code, &member, None, Some(notice(true, "A one-time sign-in link was created. It is shown once: give it to the member now.")), Some(link)).await;
        }
        _ => return Err(PageError::not_found()),
    };
    match result {
        Ok(done) => {
            let target = if done == "merged" {
                field("into")
            } else {
                member.clone()
            };
            Ok(see_other(&format!(
                "/console/programs/{}/members/{}?done={done}",
                segment(&code),
                segment(&target)
            )))
        }
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            let mut response = member_page(
                &state,
                &staff,
                &code,
                &member,
                None,
                Some(notice(false, e.detail)),
                None,
            )
            .await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// Everything held about the member, as a JSON download (the API's export).
async fn member_export(
    State(state): State<AppState>,
    staff: Staff,
    Path((code, member)): Path<(String, String)>,
) -> PageResult {
    personal_data::export_member(
        State(state),
        Arc::clone(&staff.caller),
        Path((code, member)),
    )
    .await
    .map_err(Into::into)
}

/// Creates a one-time portal link for a member through the API's own function.
async fn portal_link(
    state: &AppState,
    caller: &Caller,
    code: &str,
    member: &str,
) -> Result<String, PageError> {
    let program = crate::routes::program(state, code).await?;
    let view = members::member(state, &program, member).await?;
    Ok(members::create_portal_link(state, caller, &program, &view)
        .await?
        .link)
}

// ---- the program editor and the dry run ----------------------------------------------

/// Finds the line of a problem's path (`promotions[2].condition`) in a YAML text written
/// in block style: each key is looked for below its parent, each index counts the
/// parent's list items. `None` when the path cannot be followed (the problem then shows
/// its path alone).
pub(crate) fn yaml_line(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(Err(key.to_owned()));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                steps.push(Ok(i));
            }
        }
    }
    // (line, indentation of its content) of the node reached so far; the root before line 0.
    let (mut at, mut depth): (Option<usize>, Option<usize>) = (None, None);
    for step in steps {
        let start = at.map_or(0, |a| a + 1);
        let within = |i: usize| {
            let l = lines[i];
            // Below the node: indented further, or a list item at the key's own
            // indentation (`key:` then `- item`, as YAML writers print lists).
            l.trim().is_empty()
                || l.trim_start().starts_with('#')
                || depth.is_none_or(|d| {
                    indent(l) > d || (indent(l) == d && l.trim_start().starts_with("- "))
                })
        };
        let mut found = None;
        match step {
            Err(key) => {
                // On the node's own line (`- key: …` of a list item) or below it.
                if let Some(a) = at {
                    let own = lines[a].trim_start().trim_start_matches("- ");
                    if own.starts_with(&format!("{key}:")) {
                        continue;
                    }
                }
                let mut i = start;
                while i < lines.len() && within(i) {
                    let t = lines[i].trim_start();
                    let t = t.strip_prefix("- ").unwrap_or(t);
                    if t.starts_with(&format!("{key}:")) || t.starts_with(&format!("\"{key}\":")) {
                        found = Some((
                            i,
                            indent(lines[i]) + (lines[i].trim_start().len() - t.len()),
                        ));
                        break;
                    }
                    i += 1;
                }
            }
            Ok(n) => {
                let mut seen = 0;
                let mut item_indent = None;
                let mut i = start;
                while i < lines.len() && within(i) {
                    let l = lines[i];
                    if l.trim_start().starts_with("- ") || l.trim() == "-" {
                        let d = indent(l);
                        if item_indent.is_none_or(|x| x == d) {
                            item_indent = Some(d);
                            if seen == n {
                                found = Some((i, d + 1));
                                break;
                            }
                            seen += 1;
                        }
                    }
                    i += 1;
                }
            }
        }
        let (line, d) = found?;
        at = Some(line);
        depth = Some(d);
    }
    at.map(|a| a + 1)
}

async fn definition_form(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> PageResult {
    staff
        .caller
        .require(Permission::ProgramsWrite, Some(&code))?;
    let document =
        programs::get_program(State(state), Arc::clone(&staff.caller), Path(code.clone()))
            .await?
            .0;
    let yaml = yaml_serde::to_string(&document).map_err(|_| PageError::internal())?;
    page(
        "console/definition.html",
        merge(frame(&staff, Some(&code)), context! { yaml }),
    )
}

async fn definition_save(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path(code): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    staff
        .caller
        .require(Permission::ProgramsWrite, Some(&code))?;
    let yaml = form.get("definition").cloned().unwrap_or_default();
    let mut yaml_headers = HeaderMap::new();
    yaml_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    let result = programs::put_program(
        State(state),
        Arc::clone(&staff.caller),
        Path(code.clone()),
        yaml_headers,
        Bytes::from(yaml.clone()),
    )
    .await;
    match result {
        Ok((_, Json(saved))) => page(
            "console/definition.html",
            merge(
                frame(&staff, Some(&code)),
                context! { yaml, saved => to_value(&saved) },
            ),
        ),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let problems: Vec<Value> = match &e.problems {
                Some(list) => list
                    .iter()
                    .map(|p| context! { path => p.path.clone(), message => p.message.clone(), line => yaml_line(&yaml, &p.path) })
                    .collect(),
                None => vec![context! { path => "(document)", message => e.detail.clone(), line => yaml_error_line(&e.detail) }],
            };
            let mut response = page(
                "console/definition.html",
                merge(frame(&staff, Some(&code)), context! { yaml, problems }),
            )?;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// The line a YAML parser's message names (`… at line 3 column 5`).
fn yaml_error_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("line ")? + 5..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The live check of a condition as it is typed (htmx): whether it compiles, or the error
/// with its position.
async fn check_condition(
    headers: HeaderMap,
    staff: Staff,
    Path(code): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    staff
        .caller
        .require(Permission::ProgramsRead, Some(&code))?;
    let source = form.get("condition").cloned().unwrap_or_default();
    let ctx = if source.trim().is_empty() {
        context! { empty => true }
    } else {
        match fidelis_core::promotions::Condition::compile(&source) {
            Ok(c) => context! { ok => true, paths => c.paths() },
            Err(e) => {
                context! { ok => false, message => e.message, position => e.position.map(|(l, c)| format!("line {l}, column {c}")) }
            }
        }
    };
    page("console/condition_check.html", ctx)
}

const SAMPLE_JOURNAL: &str = r#"{
  "type": "purchase",
  "member": "C-100000",
  "amount": "120.00",
  "lines": [
    {"sku": "SH-1", "category": "shoes", "quantity": 1, "amount": "120.00"}
  ]
}"#;

/// The journal the dry run's compose form describes: the fields filled in, up to three
/// lines; numbers stay strings where the API takes decimal strings.
fn composed(form: &Fields) -> serde_json::Value {
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let mut journal = serde_json::Map::new();
    for name in [
        "type", "subtype", "member", "amount", "currency", "partner", "channel", "store",
    ] {
        if let Some(v) = field(name) {
            journal.insert(name.to_owned(), json!(v));
        }
    }
    if let Some(at) = field("occurred_at") {
        // `datetime-local` gives no zone: read it as UTC, say so in the form.
        let at = if at.len() == 16 {
            format!("{at}:00Z")
        } else {
            at
        };
        journal.insert("occurred_at".to_owned(), json!(at));
    }
    let mut lines = Vec::new();
    for i in 1..=3 {
        let (sku, category, amount) = (
            field(&format!("line{i}_sku")),
            field(&format!("line{i}_category")),
            field(&format!("line{i}_amount")),
        );
        if sku.is_none() && category.is_none() && amount.is_none() {
            continue;
        }
        let mut line = serde_json::Map::new();
        line.insert("line_id".to_owned(), json!(i.to_string()));
        if let Some(v) = sku {
            line.insert("sku".to_owned(), json!(v));
        }
        if let Some(v) = category {
            line.insert("category".to_owned(), json!(v));
        }
        let quantity = field(&format!("line{i}_quantity"))
            .and_then(|q| q.parse::<i64>().ok())
            .unwrap_or(1);
        line.insert("quantity".to_owned(), json!(quantity));
        if let Some(v) = amount {
            line.insert("amount".to_owned(), json!(v));
        }
        lines.push(serde_json::Value::Object(line));
    }
    if !lines.is_empty() {
        journal.insert("lines".to_owned(), json!(lines));
    }
    serde_json::Value::Object(journal)
}

async fn dry_run_form(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> PageResult {
    staff
        .caller
        .require(Permission::JournalsWrite, Some(&code))?;
    let program = crate::routes::program(&state, &code).await?;
    page(
        "console/dry_run.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                journal => SAMPLE_JOURNAL,
                money_currency => program.program.money_currency.to_string(),
                fields => context! { type => "purchase" },
            },
        ),
    )
}

async fn dry_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path(code): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let program = crate::routes::program(&state, &code).await?;
    // Composed from fields, or pasted as JSON; a composed journal is shown as the JSON it
    // became, so the operator can refine it by hand.
    let journal = if form.contains_key("compose") {
        serde_json::to_string_pretty(&composed(&form)).unwrap_or_default()
    } else {
        form.get("journal").cloned().unwrap_or_default()
    };
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&journal);
    let outcome = match parsed {
        Err(e) => Err(format!("The journal is not JSON: {e}")),
        Ok(mut value) => {
            if let Some(obj) = value.as_object_mut() {
                obj.entry("external_id")
                    .or_insert_with(|| json!(format!("dry-run-{}", &new_token()[4..16])));
            }
            match serde_json::from_value(value) {
                Err(e) => Err(format!("The journal does not fit: {e}")),
                Ok(request) => match journals::simulate(
                    State(state),
                    Arc::clone(&staff.caller),
                    Path(code.clone()),
                    ApiJson(request),
                )
                .await
                {
                    Ok(Json(o)) => Ok(to_value(&o)),
                    Err(e) if e.status == StatusCode::FORBIDDEN => return Err(e.into()),
                    Err(e) => Err(e.detail),
                },
            }
        }
    };
    let (outcome, error) = match outcome {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e)),
    };
    // The compose form keeps what was typed, so one field can be changed and run again.
    let mut fields = form.clone();
    fields.remove("_csrf");
    if !form.contains_key("compose") {
        fields = Fields::from([("type".to_owned(), "purchase".to_owned())]);
    }
    page(
        "console/dry_run.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                journal, outcome, error, fields,
                composed => form.contains_key("compose"),
                money_currency => program.program.money_currency.to_string(),
            },
        ),
    )
}

/// One journal: its document and what processing did — awards by source, the promotions
/// that fired and why the others did not, points debited, reversed or expired.
async fn journal_view(
    State(state): State<AppState>,
    staff: Staff,
    Path((code, journal)): Path<(String, String)>,
) -> PageResult {
    let body = journals::get_journal(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path((code.clone(), journal)),
    )
    .await?
    .0;
    let program = crate::routes::program(&state, &code).await?;
    page(
        "console/journal.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                tz => program.program.time_zone.name(),
                document => body.document.as_ref().map(|d| serde_json::to_string_pretty(d).unwrap_or_default()),
                j => to_value(&body),
            },
        ),
    )
}

async fn promotions(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> PageResult {
    // The API's read of the definition decides who may see the promotions.
    programs::get_program(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.clone()),
    )
    .await?
    .0;
    let program = crate::routes::program(&state, &code).await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for p in &program.program.promotions {
        let usage = if p.limits.budget_points.is_some() || p.limits.daily_points.is_some() {
            state
                .store
                .program_promotion_usage(&program, p.code.as_str())
                .await?
        } else {
            Vec::new()
        };
        let budget_used = usage
            .iter()
            .find(|(period, _, _)| period.is_empty())
            .map_or(0, |u| u.2);
        let today =
            fidelis_core::promotions::limits::Period::Day.key(program.program.time_zone, now);
        let daily_used = usage
            .iter()
            .find(|(period, _, _)| *period == today)
            .map_or(0, |u| u.2);
        let running = p.status == fidelis_core::promotions::PromotionStatus::Active
            && p.starts_at.is_none_or(|s| s <= now)
            && p.ends_at.is_none_or(|e| now < e);
        rows.push(context! {
            code => p.code.to_string(),
            name => p.name.clone(),
            status => format!("{:?}", p.status).to_lowercase(),
            running,
            starts_at => p.starts_at.map(|t| t.to_rfc3339()),
            ends_at => p.ends_at.map(|t| t.to_rfc3339()),
            opt_in => p.opt_in,
            scheduled => p.trigger.is_some(),
            member_times => p.limits.member_times,
            member_points => p.limits.member_points,
            period_times => p.limits.period_times,
            period_points => p.limits.period_points,
            budget_points => p.limits.budget_points,
            budget_used,
            daily_points => p.limits.daily_points,
            daily_used,
        });
    }
    // Promotions with a control group, measured over the last 90 days.
    let from = now - chrono::Duration::days(90);
    let money = &program.program.money_currency;
    let amount = |v: f64| {
        format!(
            "{} {}",
            money.format(fidelis_core::money::MinorUnits(v.round() as i64)),
            money.code()
        )
    };
    let mut measured = Vec::new();
    let (mut labels, mut treated_means, mut control_means) = (Vec::new(), Vec::new(), Vec::new());
    let minor = 10f64.powi(i32::from(money.scale()));
    for p in program
        .program
        .promotions
        .iter()
        .filter(|p| p.control.is_some())
    {
        let e = state
            .store
            .promotion_exposure(&program, p.code.as_str(), from, now)
            .await?;
        let r = fidelis_core::analytics::experiment::compare(&e.treated, &e.control, e.cost);
        let interval = |i: Option<(f64, f64)>, f: &dyn Fn(f64) -> String| {
            i.map(|(lo, hi)| format!("{} to {}", f(lo), f(hi)))
        };
        let ratio = |v: f64| format!("{v:.2}");
        labels.push(p.name.clone());
        treated_means.push(r.treated_mean / minor);
        control_means.push(r.control_mean / minor);
        measured.push(context! {
            code => p.code.to_string(),
            name => p.name.clone(),
            treated => r.treated,
            control => r.control,
            treated_mean => amount(r.treated_mean),
            control_mean => amount(r.control_mean),
            lift => amount(r.lift),
            lift_interval => interval(r.lift_interval, &|v| amount(v)),
            revenue => amount(r.incremental_revenue),
            cost => amount(e.cost as f64),
            roi => r.roi.map(ratio),
            roi_interval => interval(r.roi_interval, &ratio),
            conclusion => r.conclusion.name().replace('_', " "),
        });
    }
    let roi_chart = (!measured.is_empty()).then(|| {
        charts::bars(
            &labels,
            &[
                ("Rewarded members", treated_means),
                ("Control group", control_means),
            ],
        )
    });
    page(
        "console/promotions.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                tz => program.program.time_zone.name(),
                promotions => rows,
                measured,
                roi_chart,
                money => money.code(),
            },
        ),
    )
}

// ---- the reward catalog, its orders, voucher definitions ------------------------------

/// The catalog (inactive items too), the latest orders with what staff may do with them,
/// and the program's voucher definitions.
async fn catalog(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    catalog_page(
        &state,
        &staff,
        &code,
        query.get("done").map(String::as_str),
        None,
    )
    .await
}

async fn catalog_page(
    state: &AppState,
    staff: &Staff,
    code: &str,
    done: Option<&str>,
    refused: Option<String>,
) -> PageResult {
    // The API's read of the definition decides who may see the page.
    programs::get_program(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
    )
    .await?
    .0;
    let items = catalog_api::list_catalog(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        query_map(&[("all", Some("true"))]),
    )
    .await?
    .0;
    let orders = catalog_api::list_orders(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        query_map(&[("limit", Some("100"))]),
    )
    .await?
    .0;
    let program = crate::routes::program(state, code).await?;
    let money = program.program.money_currency.clone();
    let vouchers: Vec<Value> = program
        .program
        .vouchers
        .iter()
        .map(|v| {
            let value = match &v.value {
                fidelis_core::vouchers::VoucherValue::Fixed(m) => {
                    format!("{} {}", money.format(*m), money.code())
                }
                fidelis_core::vouchers::VoucherValue::Percent(p) => format!("{p} %"),
                fidelis_core::vouchers::VoucherValue::FreeProduct(sku) => format!("free {sku}"),
            };
            context! {
                code => v.code.to_string(),
                name => v.name.clone(),
                value,
                starts_on => v.validity.starts_on.map(|d| d.to_string()),
                ends_on => v.validity.ends_on.map(|d| d.to_string()),
                days => v.validity.days,
                uses => match (v.uses, &v.value) {
                    (Some(n), _) => n.to_string(),
                    (None, fidelis_core::vouchers::VoucherValue::Fixed(_)) => "as its value lasts".to_owned(),
                    (None, _) => "1".to_owned(),
                },
                prefix => v.format.prefix.clone(),
                length => v.format.length,
            }
        })
        .collect();
    let notice = match (done, refused) {
        (_, Some(text)) => Some(notice(false, text)),
        (Some("cancelled"), None) => Some(notice(
            true,
            "The order was cancelled: its points and stock are back.",
        )),
        (Some("fulfilled"), None) => Some(notice(true, "The order is fulfilled.")),
        _ => None,
    };
    page(
        "console/catalog.html",
        merge(
            frame(staff, Some(code)),
            context! {
                tz => program.program.time_zone.name(),
                items => to_value(&items.items),
                orders => to_value(&orders.orders),
                vouchers,
                notice,
            },
        ),
    )
}

/// Cancels or fulfils an order (with the confirmation box ticked).
async fn order_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, order, action)): Path<(String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return catalog_page(
            &state,
            &staff,
            &code,
            None,
            Some("Tick the confirmation box to do this.".into()),
        )
        .await;
    }
    let (s, caller, key) = (
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path((code.clone(), order.clone())),
    );
    let result = match action.as_str() {
        "cancel" => catalog_api::cancel_order(s, caller, key)
            .await
            .map(|_| "cancelled"),
        "fulfil" => catalog_api::fulfil_order(s, caller, key)
            .await
            .map(|_| "fulfilled"),
        _ => return Err(ApiError::not_found("not_found", "no such action".to_owned()).into()),
    };
    match result {
        Ok(done) => Ok(see_other(&format!(
            "/console/programs/{}/catalog?done={done}",
            segment(&code)
        ))),
        Err(e) if e.status == StatusCode::CONFLICT || e.status == StatusCode::NOT_FOUND => {
            let mut response = catalog_page(&state, &staff, &code, None, Some(e.detail)).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

// ---- the audit log, users and tokens -------------------------------------------------

async fn audit(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Fields>,
) -> PageResult {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let result = admin::audit(
        State(state),
        Arc::clone(&staff.caller),
        query_map(&[
            ("program", get("program")),
            ("actor", get("actor")),
            ("action", get("action")),
            ("subject", get("subject")),
            ("cursor", get("cursor")),
            ("limit", Some("50")),
        ]),
    )
    .await;
    let (entries, error) = match result {
        Ok(Json(p)) => (Some(to_value(&p)), None),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (None, Some(e.detail)),
        Err(e) => return Err(e.into()),
    };
    let filters = context! {
        program => get("program"), actor => get("actor"), action => get("action"), subject => get("subject"),
    };
    page(
        "console/audit.html",
        merge(frame(&staff, None), context! { entries, error, filters }),
    )
}

async fn access_page(state: &AppState, staff: &Staff, extra: Value) -> PageResult {
    let tokens = admin::list_tokens(State(state.clone()), Arc::clone(&staff.caller))
        .await?
        .0;
    let users: Vec<Value> = state
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| staff.caller.sees_program(u.program.as_deref()))
        .map(|u| context! { email => u.email, role => u.role, program => u.program, partner => u.partner, member => u.member })
        .collect();
    let roles: Vec<&str> = crate::auth::Role::ALL.iter().map(|r| r.name()).collect();
    page(
        "console/access.html",
        merge(
            frame(staff, None),
            merge(
                context! { tokens => to_value(&tokens), users, roles },
                extra,
            ),
        ),
    )
}

async fn access(State(state): State<AppState>, staff: Staff) -> PageResult {
    staff.caller.require(Permission::TokensManage, None)?;
    access_page(&state, &staff, context! {}).await
}

async fn access_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path(action): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let caller = Arc::clone(&staff.caller);
    let s = State(state.clone());
    let result: Result<Value, ApiError> = match action.as_str() {
        "token" => {
            let request = body(
                json!({"name": field("name"), "role": field("role"), "program": field("program"), "partner": field("partner"), "member": field("member")}),
            )?;
            admin::create_token(s, caller, request).await.map(|(_, Json(created))| {
                context! { created_token => created.token, notice => notice(true, format!("Token {} created. Copy its secret now: it is shown only once.", created.record.name)) }
            })
        }
        "revoke" => {
            let id = field("id").unwrap_or_default();
            admin::revoke_token(s, caller, Path(id.clone()))
                .await
                .map(|_| context! { notice => notice(true, format!("Token {id} revoked.")) })
        }
        "user" => {
            let request = body(
                json!({"email": field("email"), "password": field("password"), "role": field("role"), "program": field("program"), "partner": field("partner"), "member": field("member")}),
            )?;
            admin::create_user(s, caller, request).await.map(|(_, Json(u))| context! { notice => notice(true, format!("User {} created.", u.email)) })
        }
        _ => return Err(PageError::not_found()),
    };
    match result {
        Ok(extra) => access_page(&state, &staff, extra).await,
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            let mut response = access_page(
                &state,
                &staff,
                context! { notice => notice(false, e.detail) },
            )
            .await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::yaml_line;

    const DOC: &str = "code: demo
name: Demo
currencies:
  - code: points
    kind: redeemable
    expiry:
      months: 24
  - code: status
    kind: qualifying
promotions:
  - code: double
    name: Double
    condition: journal.amount > 10
    actions:
      - type: multiply
        factor: 2
  - code: shoes
    condition: bad (
";

    /// Lists written at their key's indentation, as the editor shows a definition.
    const COMPACT: &str = "name: Shop
currencies:
- code: points
  expiry:
    policy: rolling
    months: -3
- code: status
  kind: qualifying
earning:
  base:
  - currency: points
";

    #[test]
    fn problems_point_at_their_lines_in_compact_lists() {
        assert_eq!(yaml_line(COMPACT, "currencies[0].expiry.months"), Some(6));
        assert_eq!(yaml_line(COMPACT, "currencies[1].kind"), Some(8));
        assert_eq!(yaml_line(COMPACT, "earning.base[0].currency"), Some(11));
        assert_eq!(yaml_line(COMPACT, "currencies[2]"), None);
    }

    #[test]
    fn problems_point_at_their_lines() {
        assert_eq!(yaml_line(DOC, "name"), Some(2));
        assert_eq!(yaml_line(DOC, "currencies[0].expiry.months"), Some(7));
        assert_eq!(yaml_line(DOC, "currencies[1].kind"), Some(9));
        assert_eq!(yaml_line(DOC, "currencies[1]"), Some(8));
        assert_eq!(yaml_line(DOC, "promotions[0].actions[0].factor"), Some(16));
        assert_eq!(yaml_line(DOC, "promotions[1].condition"), Some(18));
        assert_eq!(yaml_line(DOC, "promotions[1].code"), Some(17));
        assert_eq!(yaml_line(DOC, "promotions[2]"), None);
        assert_eq!(yaml_line(DOC, "missing"), None);
    }
}

async fn partners(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    partners_page(
        &state,
        &staff,
        &code,
        query.get("done").map(String::as_str),
        None,
    )
    .await
}

/// Partners with their packs and figures, this month's and last month's statements, the
/// claims waiting for a decision, and the program's recent events.
async fn partners_page(
    state: &AppState,
    staff: &Staff,
    code: &str,
    done: Option<&str>,
    refused: Option<String>,
) -> PageResult {
    let list = partners_api::list_partners(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
    )
    .await?
    .0;
    let program = crate::routes::program(state, code).await?;
    let tz = program.program.time_zone;
    let money = program.program.money_currency.clone();
    let amount = |v: i64| {
        format!(
            "{} {}",
            money.format(fidelis_core::money::MinorUnits(v)),
            money.code()
        )
    };
    // This month and the last, in the program's time zone.
    let bounds = month_bounds(tz, Utc::now(), 2);
    let mut partners = Vec::new();
    for p in &list.partners {
        let mut statements = Vec::new();
        for w in bounds.windows(2) {
            let s = state
                .store
                .settlement(&program, &p.code, w[0], w[1])
                .await?;
            statements.push(context! {
                month => w[0].with_timezone(&tz).format("%Y-%m").to_string(),
                status => s.status,
                issued => s.totals.points_issued,
                redeemed => s.totals.points_redeemed,
                owed_by => amount(s.totals.owed_by_partner),
                owed_to => amount(s.totals.owed_to_partner),
                net => amount(s.totals.net),
                adjustments => s.adjustments.len(),
            });
        }
        partners.push(merge(
            to_value(p),
            context! {
                owed_by => amount(p.owed_by_partner),
                owed_to => amount(p.owed_to_partner),
                statements,
            },
        ));
    }
    let claims = claims_api::list_claims(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        query_map(&[("status", Some("open")), ("limit", Some("100"))]),
    )
    .await?
    .0;
    let events = partners_api::list_events(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        query_map(&[("limit", Some("20"))]),
    )
    .await?
    .0;
    let notice = match (done, refused) {
        (_, Some(text)) => Some(notice(false, text)),
        (Some("approved"), None) => Some(notice(
            true,
            "The claim is approved: its transaction was processed and the points awarded.",
        )),
        (Some("rejected"), None) => {
            Some(notice(true, "The claim is rejected; the member sees why."))
        }
        _ => None,
    };
    page(
        "console/partners.html",
        merge(
            frame(staff, Some(code)),
            context! {
                tz => tz.name(),
                money => money.code(),
                partners,
                claims => to_value(&claims.claims),
                events => to_value(&events.events),
                notice,
            },
        ),
    )
}

/// Approves or rejects a claim (with the confirmation box ticked; a rejection with its
/// reason).
async fn claim_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, claim, action)): Path<(String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return partners_page(
            &state,
            &staff,
            &code,
            None,
            Some("Tick the confirmation box to do this.".into()),
        )
        .await;
    }
    let (s, caller, key) = (
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path((code.clone(), claim.clone())),
    );
    let result = match action.as_str() {
        "approve" => claims_api::approve_claim(s, caller, key)
            .await
            .map(|_| "approved"),
        "reject" => {
            let reason = form.get("reason").cloned().unwrap_or_default();
            claims_api::reject_claim(
                s,
                caller,
                key,
                ApiJson(claims_api::RejectRequest { reason }),
            )
            .await
            .map(|_| "rejected")
        }
        _ => return Err(ApiError::not_found("not_found", "no such action".to_owned()).into()),
    };
    match result {
        Ok(done) => Ok(see_other(&format!(
            "/console/programs/{}/partners?done={done}",
            segment(&code)
        ))),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let mut response = partners_page(&state, &staff, &code, None, Some(e.detail)).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

// ---- fraud review: held journals, released or rejected ---------------------------------

async fn fraud_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    render_fraud(
        &state,
        &staff,
        &code,
        query.get("done").map(String::as_str),
        None,
    )
    .await
}

/// The held journals with their reasons and the decision forms, and the last decisions.
async fn render_fraud(
    state: &AppState,
    staff: &Staff,
    code: &str,
    done: Option<&str>,
    refused: Option<String>,
) -> PageResult {
    let list = |status: &'static str| {
        fraud_api::list_held_journals(
            State(state.clone()),
            Arc::clone(&staff.caller),
            Path(code.to_owned()),
            query_map(&[("status", Some(status)), ("limit", Some("200"))]),
        )
    };
    let held = list("held").await?.0.journals;
    let mut decided = list("released").await?.0.journals;
    decided.extend(list("rejected").await?.0.journals);
    decided.sort_by(|a, b| b.decided_at.cmp(&a.decided_at));
    decided.truncate(50);
    let notice = match (done, refused) {
        (_, Some(text)) => Some(notice(false, text)),
        (Some("released"), None) => Some(notice(
            true,
            "Released: the journal was processed as of its activity.",
        )),
        (Some("rejected"), None) => Some(notice(true, "Rejected: it will never earn.")),
        _ => None,
    };
    page(
        "console/fraud.html",
        merge(
            frame(staff, Some(code)),
            context! {
                held => to_value(&held),
                decided => to_value(&decided),
                may_decide => staff.caller.has(Permission::Adjust),
                notice,
            },
        ),
    )
}

/// Releases or rejects a held journal (with the confirmation box ticked).
async fn held_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, journal, action)): Path<(String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return render_fraud(
            &state,
            &staff,
            &code,
            None,
            Some("Tick the confirmation box to do this.".into()),
        )
        .await;
    }
    let (s, caller, key) = (
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path((code.clone(), journal.clone())),
    );
    let result = match action.as_str() {
        "release" => fraud_api::release_held_journal(s, caller, key)
            .await
            .map(|_| "released"),
        "reject" => {
            let note = form
                .get("note")
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty());
            fraud_api::reject_held_journal(
                s,
                caller,
                key,
                ApiJson(fraud_api::RejectHeldRequest { note }),
            )
            .await
            .map(|_| "rejected")
        }
        _ => return Err(ApiError::not_found("not_found", "no such action".to_owned()).into()),
    };
    match result {
        Ok(done) => Ok(see_other(&format!(
            "/console/programs/{}/fraud?done={done}",
            segment(&code)
        ))),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let mut response = render_fraud(&state, &staff, &code, None, Some(e.detail)).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// The program's segments: each one's condition and members at the last refresh, as a
/// chart and a table, with the refresh's instant and the churn model's state.
async fn segments_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> PageResult {
    staff
        .caller
        .require(Permission::ProgramsRead, Some(&code))?;
    let program = crate::routes::cached_program(&state, &code).await?;
    let list = crate::routes::segments::segment_list(&state, &program).await?;
    let chart = charts::bars(
        &list
            .segments
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        &[(
            "Members",
            list.segments.iter().map(|s| s.members as f64).collect(),
        )],
    );
    page(
        "console/segments.html",
        merge(
            frame(&staff, Some(&code)),
            context! {
                segments => to_value(&list.segments),
                chart,
                as_of => list.as_of.map(|t| t.to_rfc3339()),
                considered => list.members,
                scored => list.scored,
                model_error => list.model_error,
            },
        ),
    )
}

// ---- webhooks: subscriptions, dead letters, replay, test send -------------------------

async fn webhooks_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    let done = query.get("done").map(|d| match d.as_str() {
        "created" => notice(true, "The webhook was added."),
        "paused" => notice(
            true,
            "The webhook is paused: new events are not sent to it.",
        ),
        "resumed" => notice(true, "The webhook is active again."),
        "deleted" => notice(true, "The webhook was deleted."),
        other => notice(true, format!("Done: {other}.")),
    });
    render_webhooks(&state, &staff, &code, done, None).await
}

/// The program's webhooks with their counts and dead letters, the form to add one, and
/// `notice` (a result) or the secret of one just created (shown once).
async fn render_webhooks(
    state: &AppState,
    staff: &Staff,
    code: &str,
    notice_value: Option<Value>,
    secret: Option<(i64, String)>,
) -> PageResult {
    let list = webhooks_api::list_webhooks(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
    )
    .await?
    .0;
    let mut hooks = Vec::new();
    for w in list.webhooks {
        let dead = if w.dead > 0 {
            webhooks_api::list_deliveries(
                State(state.clone()),
                Arc::clone(&staff.caller),
                Path((code.to_owned(), w.id)),
                axum::extract::Query(
                    [("status", "dead"), ("limit", "20")]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
            )
            .await?
            .0
            .deliveries
        } else {
            Vec::new()
        };
        hooks.push(merge(
            to_value(&w),
            context! { dead_letters => to_value(&dead) },
        ));
    }
    page(
        "console/webhooks.html",
        merge(
            frame(staff, Some(code)),
            context! {
                webhooks => hooks,
                event_types => fidelis_store::EVENT_TYPES.to_vec(),
                notice => notice_value,
                secret => secret.map(|(id, s)| context! { id, secret => s }),
            },
        ),
    )
}

/// Adds a webhook from the form (the URL, a description, the event types ticked).
async fn webhook_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path(code): Path<String>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let mut events: Vec<&str> = fidelis_store::EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| form.get(&format!("event.{t}")).is_some())
        .collect();
    if form.get("event.all").is_some() {
        events = vec!["*"];
    }
    let request = body(json!({
        "url": form.get("url").map(|u| u.trim()).unwrap_or_default(),
        "events": events,
        "description": form.get("description").cloned().unwrap_or_default(),
    }))?;
    let created = webhooks_api::create_webhook(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.clone()),
        request,
    )
    .await;
    match created {
        Ok(response) => {
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .map_err(|_| PageError::internal())?;
            let created: webhooks_api::WebhookBody =
                serde_json::from_slice(&bytes).map_err(|_| PageError::internal())?;
            render_webhooks(
                &state,
                &staff,
                &code,
                Some(notice(
                    true,
                    "The webhook was added. Copy its signing secret now: it is shown only once.",
                )),
                created.secret.map(|s| (created.id, s)),
            )
            .await
        }
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let mut response =
                render_webhooks(&state, &staff, &code, Some(notice(false, e.detail)), None).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends a test event, replays the dead letters (all, or the one named), pauses, resumes
/// or deletes (with the confirmation box ticked) a webhook.
async fn webhook_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, id, action)): Path<(String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let Ok(id) = id.parse::<i64>() else {
        return Err(ApiError::not_found("unknown_webhook", format!("no webhook {id:?}")).into());
    };
    let (s, caller, key) = (
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path((code.clone(), id)),
    );
    let result: Result<Value, ApiError> = match action.as_str() {
        "test" => webhooks_api::test_webhook(s, caller, key).await.map(|r| {
            let r = r.0;
            match (r.delivered, r.status, r.error) {
                (true, status, _) => notice(
                    true,
                    format!(
                        "The test event was delivered (HTTP {}).",
                        status.unwrap_or(200)
                    ),
                ),
                (false, Some(status), _) => notice(
                    false,
                    format!("The receiver answered HTTP {status}: not delivered."),
                ),
                (false, None, error) => notice(
                    false,
                    format!("Not delivered: {}", error.unwrap_or_default()),
                ),
            }
        }),
        "replay" => {
            let delivery = form.get("delivery").and_then(|d| d.parse::<i64>().ok());
            webhooks_api::replay(
                s,
                caller,
                key,
                ApiJson(webhooks_api::ReplayRequest { delivery }),
            )
            .await
            .map(|r| {
                notice(
                    true,
                    format!("{} dead deliveries are queued again.", r.0.replayed),
                )
            })
        }
        "pause" | "resume" => webhooks_api::update_webhook(
            s,
            caller,
            key,
            ApiJson(webhooks_api::WebhookUpdate {
                active: action == "resume",
            }),
        )
        .await
        .map(|_| {
            notice(
                true,
                if action == "resume" {
                    "The webhook is active again."
                } else {
                    "The webhook is paused: new events are not sent to it."
                },
            )
        }),
        "delete" => {
            if form.get("confirm").map(String::as_str) != Some("yes") {
                Ok(notice(false, "Tick the confirmation box to do this."))
            } else {
                webhooks_api::delete_webhook(s, caller, key)
                    .await
                    .map(|_| notice(true, "The webhook was deleted."))
            }
        }
        _ => return Err(ApiError::not_found("not_found", "no such action".to_owned()).into()),
    };
    match result {
        Ok(n) => render_webhooks(&state, &staff, &code, Some(n), None).await,
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let mut response =
                render_webhooks(&state, &staff, &code, Some(notice(false, e.detail)), None).await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

// ---- messages: e-mail templates with a preview, and what was sent ----------------------

async fn messages_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
    Query(query): Query<Fields>,
) -> PageResult {
    let event = query
        .get("event")
        .cloned()
        .unwrap_or_else(|| fidelis_store::MAIL_EVENTS[0].to_owned());
    let language = query
        .get("language")
        .cloned()
        .unwrap_or_else(|| "en".to_owned());
    render_messages(&state, &staff, &code, &event, &language, None, None).await
}

/// The templates, the one selected in an editor with its preview (of `typed`, when the
/// form was previewed), and the program's last messages.
async fn render_messages(
    state: &AppState,
    staff: &Staff,
    code: &str,
    event: &str,
    language: &str,
    typed: Option<(String, String, Option<String>)>,
    notice_value: Option<Value>,
) -> PageResult {
    let list = messages_api::list_message_templates(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
    )
    .await?
    .0;
    let Some(selected) = list
        .templates
        .iter()
        .find(|t| t.event_type == event && t.language == language)
        .cloned()
    else {
        return Err(PageError::not_found());
    };
    let (subject, text, html) = typed.clone().unwrap_or((
        selected.subject.clone(),
        selected.text.clone(),
        selected.html.clone(),
    ));
    let preview = messages_api::preview_message_template(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        ApiJson(messages_api::MessagePreviewRequest {
            event_type: event.to_owned(),
            language: language.to_owned(),
            subject: typed.as_ref().map(|t| t.0.clone()),
            text: typed.as_ref().map(|t| t.1.clone()),
            html: typed.as_ref().and_then(|t| t.2.clone()),
        }),
    )
    .await;
    let (preview, preview_error) = match preview {
        Ok(p) => (Some(to_value(&p.0)), None),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            (None, Some(e.detail))
        }
        Err(e) => return Err(e.into()),
    };
    let recent = messages_api::list_messages(
        State(state.clone()),
        Arc::clone(&staff.caller),
        Path(code.to_owned()),
        Query(
            [("limit", "30")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
    )
    .await?
    .0;
    page(
        "console/messages.html",
        merge(
            frame(staff, Some(code)),
            context! {
                templates => to_value(&list.templates),
                selected => to_value(&selected),
                subject, text, html,
                preview, preview_error,
                messages => to_value(&recent.messages),
                notice => notice_value,
            },
        ),
    )
}

/// Previews the typed template, saves it as the program's own, or goes back to the
/// shipped one.
async fn message_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: Staff,
    Path((code, event, language, action)): Path<(String, String, String, String)>,
    Form(form): Form<Fields>,
) -> PageResult {
    session::same_origin(&headers)?;
    session::check_csrf(&form, &staff.csrf)?;
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let html = Some(field("html")).filter(|h| !h.trim().is_empty());
    let typed = (field("subject"), field("text"), html.clone());
    let result: Result<Value, ApiError> = match action.as_str() {
        "preview" => {
            return render_messages(&state, &staff, &code, &event, &language, Some(typed), None)
                .await;
        }
        "save" => messages_api::put_message_template(
            State(state.clone()),
            Arc::clone(&staff.caller),
            Path((code.clone(), event.clone(), language.clone())),
            ApiJson(messages_api::MessageTemplateRequest {
                subject: typed.0.clone(),
                text: typed.1.clone(),
                html,
                urgent: Some(form.contains_key("urgent")),
                active: Some(form.contains_key("active")),
                segments: Some(
                    field("segments")
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
            }),
        )
        .await
        .map(|_| {
            notice(
                true,
                "The template is saved: the program's messages use it from now on.",
            )
        }),
        "reset" => messages_api::delete_message_template(
            State(state.clone()),
            Arc::clone(&staff.caller),
            Path((code.clone(), event.clone(), language.clone())),
        )
        .await
        .map(|_| notice(true, "The shipped template applies again.")),
        _ => return Err(PageError::not_found()),
    };
    match result {
        Ok(n) => render_messages(&state, &staff, &code, &event, &language, None, Some(n)).await,
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let mut response = render_messages(
                &state,
                &staff,
                &code,
                &event,
                &language,
                Some(typed),
                Some(notice(false, e.detail)),
            )
            .await?;
            *response.status_mut() = e.status;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}
