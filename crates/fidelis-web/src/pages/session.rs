//! Sessions for the pages: cookies, the anti-forgery token, throttling of failed sign-ins.
//!
//! A session cookie holds 32 random bytes; the store keeps only their SHA-256 (like API
//! tokens). Cookies are `HttpOnly`, `SameSite` (`Strict` for the console, `Lax` for the
//! portal so that a member following a link from an email arrives signed in), scoped to
//! their area's path, and `Secure` when the server is reached over TLS (`--secure-cookies`,
//! or a proxy's `X-Forwarded-Proto: https`). Every form carries the session's CSRF token;
//! the sign-in forms, before any session exists, carry a token that must match a cookie
//! set with the form (double submit). A POST whose `Origin` is another site is refused
//! before any of that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Utc;
use fidelis_store::{NewSession, UserRecord};
use sha2::{Digest, Sha256};

use super::PageError;
use crate::AppState;
use crate::auth::{Caller, Role, hash_password, new_token, token_hash};

/// The console's session cookie.
pub(crate) const CONSOLE_COOKIE: &str = "fidelis_console";
/// The portal's session cookie.
pub(crate) const PORTAL_COOKIE: &str = "fidelis_portal";
/// The double-submit cookie of the sign-in forms.
const FORM_COOKIE: &str = "fidelis_form";

/// How long a console session lasts (from sign-in).
pub(crate) const CONSOLE_TTL: chrono::Duration = chrono::Duration::hours(8);
/// How long a portal session lasts.
pub(crate) const PORTAL_TTL: chrono::Duration = chrono::Duration::hours(12);

/// Failed sign-ins allowed per account within [`THROTTLE_WINDOW`]; then sign-in is refused
/// until the window has passed, whatever the password.
pub(crate) const MAX_FAILURES: u32 = 5;
pub(crate) const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins per account (an email, or a program and member), in memory: a restart
/// forgets them, which costs an attacker a restart per five guesses.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// Seconds until `key` may try again, when it is throttled.
    pub(crate) fn blocked(&self, key: &str) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (n, first) = map.get(key)?;
        let elapsed = first.elapsed();
        (*n >= MAX_FAILURES && elapsed < THROTTLE_WINDOW)
            .then(|| (THROTTLE_WINDOW - elapsed).as_secs().max(1))
    }

    pub(crate) fn failed(&self, key: &str) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() > 100_000 {
            map.retain(|_, (_, first)| first.elapsed() < THROTTLE_WINDOW);
        }
        let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= THROTTLE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub(crate) fn succeeded(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

/// Whether `password` matches `hash`. Without a hash (no such account, or no password set)
/// a real argon2 hash of a random secret is verified instead, so an unknown account costs
/// the same time as a wrong password and sign-in timing tells nothing. The hash's tens of
/// milliseconds of CPU run apart from the runtime ([`crate::auth::argon2_apart`]), so a
/// sign-in never stalls other requests.
pub(crate) async fn verify(password: &str, hash: Option<&str>) -> bool {
    let password = password.to_owned();
    let hash = hash.map(str::to_owned);
    crate::auth::argon2_apart(move || verify_now(&password, hash.as_deref()))
        .await
        .unwrap_or(false)
}

fn verify_now(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match hash {
        Some(h) => crate::auth::verify_password(password, h),
        None => {
            let dummy = DUMMY.get_or_init(|| hash_password(&new_token()).unwrap_or_default());
            let _ = crate::auth::verify_password(password, dummy);
            false
        }
    }
}

/// Whether cookies must be `Secure`: configured so, or the request came over TLS through a
/// proxy.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie(
    state: &AppState,
    headers: &HeaderMap,
    name: &'static str,
    value: String,
    path: String,
    same_site: SameSite,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(same_site)
        .secure(secure(state, headers))
        .build()
}

/// Constant-time equality of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Refuses a state-changing request sent from another site: its `Origin` (when the browser
/// sends one) must be this server's.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form was sent from another site and was refused.",
        ))
    }
}

/// The anti-forgery check of a form: its `_csrf` field must be the expected token.
pub(crate) fn check_csrf(form: &HashMap<String, String>, expected: &str) -> Result<(), PageError> {
    match form.get("_csrf") {
        Some(sent) if same_token(sent, expected) => Ok(()),
        _ => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or stale. Reload the page and try again.",
        )),
    }
}

/// The token of a sign-in form (before a session exists), and the cookie that goes with
/// it: the one already set, or a new one.
pub(crate) fn form_token(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    path: String,
) -> (CookieJar, String) {
    if let Some(existing) = jar.get(FORM_COOKIE) {
        let value = existing.value().to_owned();
        return (jar, value);
    }
    let token = new_token();
    let jar = jar.add(cookie(
        state,
        headers,
        FORM_COOKIE,
        token.clone(),
        path,
        SameSite::Strict,
    ));
    (jar, token)
}

/// The double-submit check of a sign-in form.
pub(crate) fn check_form_token(
    jar: &CookieJar,
    form: &HashMap<String, String>,
) -> Result<(), PageError> {
    match jar.get(FORM_COOKIE) {
        Some(c) => check_csrf(form, c.value()),
        None => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or stale. Reload the page and try again.",
        )),
    }
}

/// Starts a session and answers the jar with its cookie.
pub(crate) async fn start(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    kind: Area,
    user_id: Option<i64>,
    member: Option<(&str, &str)>,
) -> Result<CookieJar, PageError> {
    let id = new_token();
    let now = Utc::now();
    let ttl = match kind {
        Area::Console => CONSOLE_TTL,
        Area::Portal => PORTAL_TTL,
    };
    state
        .store
        .create_session(&NewSession {
            id_hash: token_hash(&id),
            user_id,
            program: member.map(|(p, _)| p.to_owned()),
            member: member.map(|(_, m)| m.to_owned()),
            csrf: new_token(),
            created_at: now,
            expires_at: now + ttl,
        })
        .await?;
    let (name, path, same_site) = match kind {
        Area::Console => (CONSOLE_COOKIE, "/console".to_owned(), SameSite::Strict),
        Area::Portal => (
            PORTAL_COOKIE,
            format!("/portal/{}", super::segment(member.map_or("", |(p, _)| p))),
            SameSite::Lax,
        ),
    };
    Ok(jar
        .remove(Cookie::build(FORM_COOKIE).path(path.clone()))
        .add(cookie(state, headers, name, id, path, same_site)))
}

/// Ends the session named by the jar's cookie, and clears the cookie.
pub(crate) async fn end(
    state: &AppState,
    jar: CookieJar,
    name: &'static str,
    path: String,
) -> Result<CookieJar, PageError> {
    if let Some(c) = jar.get(name) {
        state.store.end_session(&token_hash(c.value())).await?;
    }
    Ok(jar.remove(Cookie::build(name).path(path)))
}

/// Which area a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    Console,
    Portal,
}

/// The caller of a staff user: the user's role, program, partner and member.
pub(crate) fn staff_caller(user: &UserRecord) -> Result<Caller, PageError> {
    let role = Role::parse(&user.role).ok_or_else(PageError::internal)?;
    Ok(Caller {
        name: user.email.clone(),
        role,
        program: user.program.clone(),
        partner: user.partner.clone(),
        member: user.member.clone(),
        scopes: None,
    })
}

/// A signed-in console user.
pub(crate) struct Staff {
    pub caller: Arc<Caller>,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str());
            super::see_other(&format!("/console/sign-in?next={}", super::segment(next)))
        };
        let Some(cookie) = jar.get(CONSOLE_COOKIE) else {
            return Err(sign_in());
        };
        let session = state
            .store
            .session(&token_hash(cookie.value()), Utc::now())
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        let Some(session) = session else {
            return Err(sign_in());
        };
        let Some(user) = session.user else {
            return Err(sign_in());
        };
        // A user of the member or partner role is not staff: the console is not theirs.
        let caller = staff_caller(&user).map_err(IntoResponse::into_response)?;
        if matches!(caller.role, Role::Member | Role::Partner) {
            return Err(
                PageError::new(StatusCode::FORBIDDEN, "The console is for program staff.")
                    .into_response(),
            );
        }
        Ok(Self {
            caller: Arc::new(caller),
            csrf: session.csrf,
        })
    }
}

/// A signed-in member (portal): the session's program and member.
pub(crate) struct MemberSession {
    pub caller: Arc<Caller>,
    pub program: String,
    pub member: String,
    pub csrf: String,
}

impl FromRequestParts<AppState> for MemberSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The program is the path's first segment after /portal/.
        let program = parts
            .uri
            .path()
            .strip_prefix("/portal/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("")
            .to_owned();
        let sign_in = || super::see_other(&format!("/portal/{}/sign-in", super::segment(&program)));
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(cookie) = jar.get(PORTAL_COOKIE) else {
            return Err(sign_in());
        };
        let session = state
            .store
            .session(&token_hash(cookie.value()), Utc::now())
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        let Some(session) = session else {
            return Err(sign_in());
        };
        let (Some(own_program), Some(member)) = (session.program, session.member) else {
            return Err(sign_in());
        };
        if own_program != program {
            return Err(sign_in());
        }
        Ok(Self {
            caller: Arc::new(Caller {
                name: format!("member:{member}"),
                role: Role::Member,
                program: Some(own_program.clone()),
                partner: None,
                member: Some(member.clone()),
                scopes: None,
            }),
            program: own_program,
            member,
            csrf: session.csrf,
        })
    }
}
