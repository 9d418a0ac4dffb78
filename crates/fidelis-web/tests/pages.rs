//! The pages' authorization matrix: every console and portal page and form × every kind
//! of signed-in user (and nobody), on the router itself (no socket). A refused staff user
//! gets a 403 page; someone without a session of the area is sent to its sign-in. The
//! matrix is checked against the routes written in `src/pages/`, so a new page cannot go
//! unchecked. Forms are also refused without their anti-forgery token.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use fidelis_store::{Actor, Enrollment, Store, UserRecord};
use fidelis_web::auth::{hash_password, new_token, token_hash};
use fidelis_web::{AppState, ServerConfig, app};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

const PASSWORD: &str = "a long enough password";

/// Who asks: the console's users by role, the portal's member, nobody.
const WHO: [&str; 8] = [
    "admin",
    "program_manager",
    "agent",
    "other_manager",
    "partner",
    "member_user",
    "portal_member",
    "none",
];

struct Page {
    method: Method,
    path: &'static str,
    template: &'static str,
    form: &'static [(&'static str, &'static str)],
    allowed: &'static [&'static str],
}

const STAFF: &[&str] = &["admin", "program_manager", "agent"];
const MANAGERS: &[&str] = &["admin", "program_manager"];
/// Pages every staff user opens, each seeing only their own programs.
const ANY_STAFF: &[&str] = &["admin", "program_manager", "agent", "other_manager"];
const PORTAL: &[&str] = &["portal_member"];

fn pages() -> Vec<Page> {
    let get = |path, template, allowed| Page {
        method: Method::GET,
        path,
        template,
        form: &[],
        allowed,
    };
    let post = |path, template, form, allowed| Page {
        method: Method::POST,
        path,
        template,
        form,
        allowed,
    };
    vec![
        get("/console", "/console", ANY_STAFF),
        get(
            "/console/programs/shop",
            "/console/programs/{program}",
            STAFF,
        ),
        get(
            "/console/programs/shop/dashboard.csv?table=tiers",
            "/console/programs/{program}/dashboard.csv",
            STAFF,
        ),
        post(
            "/console/programs/shop/dashboard/refresh",
            "/console/programs/{program}/dashboard/refresh",
            &[],
            STAFF,
        ),
        get(
            "/console/programs/shop/members?q=m1",
            "/console/programs/{program}/members",
            STAFF,
        ),
        get(
            "/console/programs/shop/members/m1",
            "/console/programs/{program}/members/{member}",
            STAFF,
        ),
        post(
            "/console/programs/shop/members/m1/adjust",
            "/console/programs/{program}/members/{member}/{action}",
            &[
                ("external_id", "adj-{who}"),
                ("currency", "points"),
                ("points", "5"),
                ("reason", "goodwill"),
                ("confirm", "yes"),
            ],
            STAFF,
        ),
        post(
            "/console/programs/shop/members/m1/status",
            "/console/programs/{program}/members/{member}/{action}",
            &[("status", "active"), ("confirm", "yes")],
            STAFF,
        ),
        post(
            "/console/programs/shop/members/m1/signin-link",
            "/console/programs/{program}/members/{member}/{action}",
            &[("confirm", "yes")],
            STAFF,
        ),
        get(
            "/console/programs/shop/definition",
            "/console/programs/{program}/definition",
            MANAGERS,
        ),
        post(
            "/console/programs/shop/definition",
            "/console/programs/{program}/definition",
            &[("definition", "name: [")],
            MANAGERS,
        ),
        post(
            "/console/programs/shop/check-condition",
            "/console/programs/{program}/check-condition",
            &[("condition", "journal.amount > 1")],
            STAFF,
        ),
        get(
            "/console/programs/shop/dry-run",
            "/console/programs/{program}/dry-run",
            MANAGERS,
        ),
        post(
            "/console/programs/shop/dry-run",
            "/console/programs/{program}/dry-run",
            &[(
                "journal",
                r#"{"type": "purchase", "member": "m1", "amount": "10", "currency": "EUR"}"#,
            )],
            MANAGERS,
        ),
        get(
            "/console/programs/shop/journals/j1",
            "/console/programs/{program}/journals/{journal}",
            STAFF,
        ),
        get(
            "/console/programs/shop/promotions",
            "/console/programs/{program}/promotions",
            STAFF,
        ),
        get(
            "/console/programs/shop/catalog",
            "/console/programs/{program}/catalog",
            STAFF,
        ),
        post(
            "/console/programs/shop/orders/o-{who}/cancel",
            "/console/programs/{program}/orders/{order}/{action}",
            &[("confirm", "yes")],
            STAFF,
        ),
        get(
            "/console/programs/shop/partners",
            "/console/programs/{program}/partners",
            STAFF,
        ),
        get(
            "/console/programs/shop/segments",
            "/console/programs/{program}/segments",
            STAFF,
        ),
        post(
            "/console/programs/shop/claims/CL-NONE/approve",
            "/console/programs/{program}/claims/{claim}/{action}",
            &[("confirm", "yes")],
            STAFF,
        ),
        get(
            "/console/programs/shop/fraud",
            "/console/programs/{program}/fraud",
            STAFF,
        ),
        // No such held journal: the page says so.
        post(
            "/console/programs/shop/held-journals/H-NONE/release",
            "/console/programs/{program}/held-journals/{journal}/{action}",
            &[("confirm", "yes")],
            STAFF,
        ),
        get(
            "/console/programs/shop/webhooks",
            "/console/programs/{program}/webhooks",
            MANAGERS,
        ),
        // An address the pattern refuses: the form answers, nothing is added.
        post(
            "/console/programs/shop/webhooks",
            "/console/programs/{program}/webhooks",
            &[("url", "ftp://{who}"), ("event.all", "on")],
            MANAGERS,
        ),
        // No such webhook: the page says so.
        post(
            "/console/programs/shop/webhooks/999999/test",
            "/console/programs/{program}/webhooks/{webhook}/{action}",
            &[],
            MANAGERS,
        ),
        get(
            "/console/programs/shop/members/m1/export",
            "/console/programs/{program}/members/{member}/export",
            STAFF,
        ),
        get(
            "/console/programs/shop/messages",
            "/console/programs/{program}/messages",
            STAFF,
        ),
        post(
            "/console/programs/shop/messages/member.enrolled/ja/preview",
            "/console/programs/{program}/messages/{event}/{language}/{action}",
            &[("subject", "Hi {{ member.id }}"), ("text", "{who}")],
            MANAGERS,
        ),
        // A template that does not render: refused, nothing saved.
        post(
            "/console/programs/shop/messages/member.enrolled/en/save",
            "/console/programs/{program}/messages/{event}/{language}/{action}",
            &[("subject", "{{ x | nosuchfilter }}"), ("text", "{who}")],
            MANAGERS,
        ),
        get("/console/audit", "/console/audit", ANY_STAFF),
        get("/console/access", "/console/access", &["admin"]),
        post(
            "/console/access/token",
            "/console/access/{action}",
            &[("name", "t-{who}"), ("role", "agent"), ("program", "shop")],
            &["admin"],
        ),
        get("/portal/shop", "/portal/{program}", PORTAL),
        get("/portal/shop/history", "/portal/{program}/history", PORTAL),
        get(
            "/portal/shop/promotions",
            "/portal/{program}/promotions",
            PORTAL,
        ),
        post(
            "/portal/shop/promotions/club/join",
            "/portal/{program}/promotions/{promotion}/join",
            &[],
            PORTAL,
        ),
        get("/portal/shop/rewards", "/portal/{program}/rewards", PORTAL),
        post(
            "/portal/shop/rewards/mug/order",
            "/portal/{program}/rewards/{item}/order",
            &[("order_id", "po-{who}")],
            PORTAL,
        ),
        get("/portal/shop/claims", "/portal/{program}/claims", PORTAL),
        post(
            "/portal/shop/claims",
            "/portal/{program}/claims",
            &[
                ("reference", "pc-{who}"),
                ("date", "2026-11-20"),
                ("amount", "5"),
            ],
            PORTAL,
        ),
        get("/portal/shop/data", "/portal/{program}/data", PORTAL),
        get(
            "/portal/shop/data/export",
            "/portal/{program}/data/export",
            PORTAL,
        ),
        post(
            "/portal/shop/data/consents",
            "/portal/{program}/data/consents",
            &[("email", "on")],
            PORTAL,
        ),
        // Not confirmed (the member number is not typed): the form answers, nobody is erased.
        post(
            "/portal/shop/data/erase",
            "/portal/{program}/data/erase",
            &[("confirm", "not-{who}")],
            PORTAL,
        ),
        post(
            "/portal/shop/transfer",
            "/portal/{program}/transfer",
            &[
                ("external_id", "tr-{who}"),
                ("to", "m2"),
                ("currency", "points"),
                ("points", "1"),
            ],
            PORTAL,
        ),
    ]
}

/// Pages open to everyone (sign-in forms), checked by the browser test.
const OPEN: &[&str] = &[
    "/console/sign-in",
    "/console/sign-out",
    "/portal/{program}/sign-in",
    "/portal/{program}/sign-out",
    "/portal/{program}/link/{token}",
];

struct World {
    router: axum::Router,
    /// Per who: the cookies of their session, and its anti-forgery token.
    sessions: HashMap<&'static str, (String, String)>,
    _db: fidelis_testkit::SqliteDb,
}

fn definition(code: &str) -> serde_json::Value {
    json!({"code": code, "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
           "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"},
                           "transfer": {"daily_limit": 1000}}],
           "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
           "promotions": [{"code": "club", "name": "Club", "status": "active", "opt_in": true,
                           "actions": [{"type": "fixed", "currency": "points", "points": 5}]},
                          {"code": "measured", "name": "Measured bonus", "status": "active",
                           "control_group": {"share": "0.5"},
                           "actions": [{"type": "fixed", "currency": "points", "points": 1}]}]})
}

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    cookies: &str,
    form: Option<String>,
) -> (StatusCode, HashMap<String, String>, Vec<String>, String) {
    let mut request = Request::builder().method(method).uri(path);
    if !cookies.is_empty() {
        request = request.header(header::COOKIE, cookies);
    }
    let request = match form {
        Some(f) => request
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(f)),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let mut headers = HashMap::new();
    for (k, v) in response.headers() {
        headers.insert(k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned());
    }
    let set_cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or("").to_owned())
        .collect();
    let body = String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())
        .into_owned();
    (status, headers, set_cookies, body)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn form_body(fields: &[(&str, &str)], who: &str, csrf: Option<&str>) -> String {
    let mut pairs: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(&v.replace("{who}", who))))
        .collect();
    if let Some(token) = csrf {
        pairs.push(format!("_csrf={}", encode(token)));
    }
    pairs.join("&")
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form with a token")
        .to_owned()
}

/// Signs in through a sign-in form: the session's cookie and its anti-forgery token.
async fn sign_in(
    router: &axum::Router,
    form_path: &str,
    fields: &[(&str, &str)],
    home: &str,
) -> Option<(String, String)> {
    let (_, _, cookies, html) = call(router, Method::GET, form_path, "", None).await;
    let cookie = cookies.join("; ");
    let token = csrf_of(&html);
    let (status, headers, set, _) = call(
        router,
        Method::POST,
        form_path,
        &cookie,
        Some(form_body(fields, "", Some(&token))),
    )
    .await;
    if status != StatusCode::SEE_OTHER {
        return None;
    }
    assert_eq!(headers.get("location").map(String::as_str), Some(home));
    let session = set
        .into_iter()
        .find(|c| c.starts_with("fidelis_console=") || c.starts_with("fidelis_portal="))?;
    let (_, _, _, page) = call(router, Method::GET, home, &session, None).await;
    Some((session, csrf_of(&page)))
}

async fn world() -> World {
    let db = fidelis_testkit::sqlite_db();
    let store = Store::connect(&db.url).await.unwrap();
    let mut shop = None;
    for code in ["shop", "cafe"] {
        let doc = serde_json::from_value(definition(code)).unwrap();
        let program = fidelis_core::program::Program::compile(&doc, None).unwrap();
        let (loaded, _) = store
            .put_program(&program, Utc::now(), &Actor::cli())
            .await
            .unwrap();
        if code == "shop" {
            shop = Some(loaded);
        }
    }
    let shop = shop.unwrap();
    for m in ["m1", "m2"] {
        store
            .enroll(
                &shop,
                &Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse(m).unwrap(),
                    profile: json!({"name": m}),
                    enrolled_at: Utc::now() - chrono::Duration::days(30),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    // A journal for the journal page.
    let doc: fidelis_core::journal::JournalDocument = serde_json::from_value(json!({
        "external_id": "j1", "member": "m1", "type": "purchase", "amount": "10", "currency": "EUR",
        "occurred_at": Utc::now().to_rfc3339()}))
    .unwrap();
    let journal = fidelis_core::journal::Journal::parse(&doc, &shop.program).unwrap();
    let prepared = fidelis_store::Prepared::new(journal, &shop.program).unwrap();
    let posted = store
        .post_journals(&shop, &[prepared], Utc::now(), None)
        .await
        .unwrap();
    assert!(posted[0].is_ok(), "{:?}", posted[0]);
    let hash = hash_password(PASSWORD).unwrap();
    let users = [
        ("admin", "admin", None, None, None),
        (
            "program_manager",
            "program_manager",
            Some("shop"),
            None,
            None,
        ),
        ("agent", "agent", Some("shop"), None, None),
        ("other_manager", "program_manager", Some("cafe"), None, None),
        ("partner", "partner", Some("shop"), Some("p1"), None),
        ("member_user", "member", Some("shop"), None, Some("m1")),
    ];
    for (name, role, program, partner, member) in users {
        store
            .create_user(
                &UserRecord {
                    id: 0,
                    email: format!("{name}@test.example"),
                    password_hash: hash.clone(),
                    role: role.into(),
                    program: program.map(Into::into),
                    partner: partner.map(Into::into),
                    member: member.map(Into::into),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    // The portal member: a password set through a one-time link.
    let m1 = store.require_member(&shop, "m1").await.unwrap();
    let link = new_token();
    store
        .create_signin_link(
            m1.id,
            &token_hash(&link),
            Utc::now(),
            Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap();
    let router = app(AppState::new(store.clone(), ServerConfig::default()));
    let mut sessions = HashMap::new();
    for (name, ..) in users {
        let email = format!("{name}@test.example");
        let signed = sign_in(
            &router,
            "/console/sign-in",
            &[("email", &email), ("password", PASSWORD)],
            "/console",
        )
        .await;
        // Partners and members have no console: their sign-in is refused.
        assert_eq!(
            signed.is_some(),
            !matches!(name, "partner" | "member_user"),
            "{name}"
        );
        if let Some(s) = signed {
            sessions.insert(name, s);
        }
    }
    let portal = sign_in(
        &router,
        &format!("/portal/shop/link/{link}"),
        &[("password", PASSWORD), ("password_again", PASSWORD)],
        "/portal/shop",
    )
    .await
    .expect("the member set a password");
    sessions.insert("portal_member", portal);
    World {
        router,
        sessions,
        _db: db,
    }
}

#[tokio::test]
async fn every_page_and_form_answers_everyone_as_the_matrix_says() {
    let world = world().await;
    // The matrix names every route the pages define.
    let sources = [
        include_str!("../src/pages/console.rs"),
        include_str!("../src/pages/portal.rs"),
    ];
    let mut defined = Vec::new();
    for source in sources {
        for piece in source.split(".route(").skip(1) {
            let path = piece.trim_start().trim_start_matches('"');
            if let Some(end) = path.find('"') {
                defined.push(path[..end].to_owned());
            }
        }
    }
    assert!(defined.len() > 20, "{defined:?}");
    let matrix = pages();
    for route in &defined {
        assert!(
            matrix.iter().any(|p| p.template == route) || OPEN.contains(&route.as_str()),
            "page route {route} is not in the matrix"
        );
    }
    let mut failures = Vec::new();
    for page in &matrix {
        for who in WHO {
            let (cookies, csrf) = world.sessions.get(who).cloned().unwrap_or_default();
            let form =
                (page.method == Method::POST).then(|| form_body(page.form, who, Some(&csrf)));
            let (status, headers, _, body) = call(
                &world.router,
                page.method.clone(),
                page.path,
                &cookies,
                form,
            )
            .await;
            let location = headers.get("location").cloned().unwrap_or_default();
            let to_sign_in = status == StatusCode::SEE_OTHER && location.contains("/sign-in");
            let allowed = page.allowed.contains(&who);
            let ok = if allowed {
                !to_sign_in && status != StatusCode::FORBIDDEN && !status.is_server_error()
            } else if world.sessions.contains_key(who)
                && page.path.starts_with("/console")
                && who != "portal_member"
            {
                // Staff without the right: a 403 page that shows nothing of the program.
                status == StatusCode::FORBIDDEN && !body.contains("m1")
            } else {
                to_sign_in
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {who}: {status} {location}",
                    page.method, page.path
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // A manager of another program sees their own program, and nothing of this one in
    // the lists every staff user opens.
    let (cookies, _) = world.sessions["other_manager"].clone();
    let (status, _, _, _) = call(
        &world.router,
        Method::GET,
        "/console/programs/cafe",
        &cookies,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "their own program");
    let (_, _, _, programs) = call(&world.router, Method::GET, "/console", &cookies, None).await;
    assert!(
        programs.contains("/console/programs/cafe") && !programs.contains("/console/programs/shop")
    );
    let (_, _, _, audit) = call(&world.router, Method::GET, "/console/audit", &cookies, None).await;
    assert!(
        !audit.contains("member.adjustment") && !audit.contains("m1"),
        "another program's audit trail"
    );
    let (cookies, _) = world.sessions["admin"].clone();
    let (_, _, _, audit) = call(&world.router, Method::GET, "/console/audit", &cookies, None).await;
    assert!(
        audit.contains("member.adjustment"),
        "the admin sees the adjustments made above"
    );

    // Every form refuses a request without its token, whoever sends it.
    for page in matrix.iter().filter(|p| p.method == Method::POST) {
        let who = page.allowed[0];
        let (cookies, _) = world.sessions[who].clone();
        let (status, ..) = call(
            &world.router,
            Method::POST,
            page.path,
            &cookies,
            Some(form_body(page.form, who, None)),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} without its token",
            page.path
        );
        let (status, ..) = call(
            &world.router,
            Method::POST,
            page.path,
            &cookies,
            Some(form_body(page.form, who, Some("fid_forged"))),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} with a forged token",
            page.path
        );
    }
}

#[tokio::test]
async fn sign_in_is_throttled_after_failures_and_audited() {
    let world = world().await;
    let attempt = |password: &'static str| {
        let router = world.router.clone();
        async move {
            let (_, _, cookies, html) =
                call(&router, Method::GET, "/console/sign-in", "", None).await;
            let token = csrf_of(&html);
            let body = form_body(
                &[("email", "agent@test.example"), ("password", password)],
                "",
                Some(&token),
            );
            call(
                &router,
                Method::POST,
                "/console/sign-in",
                &cookies.join("; "),
                Some(body),
            )
            .await
            .0
        }
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong").await, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits.
    assert_eq!(attempt(PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    // Another account is not affected.
    let signed = sign_in(
        &world.router,
        "/console/sign-in",
        &[("email", "admin@test.example"), ("password", PASSWORD)],
        "/console",
    )
    .await;
    assert!(signed.is_some());
    let (cookies, _) = signed.unwrap();
    let (status, _, _, body) = call(
        &world.router,
        Method::GET,
        "/console/audit?action=signin.failed",
        &cookies,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body.matches("agent@test.example").count(),
        5,
        "each failure audited"
    );
    let (_, _, _, body) = call(
        &world.router,
        Method::GET,
        "/console/audit?action=signin.throttled",
        &cookies,
        None,
    )
    .await;
    assert!(body.contains("agent@test.example"));
}

#[tokio::test]
async fn sessions_end_at_sign_out_and_pages_are_not_cached() {
    let world = world().await;
    let (cookies, csrf) = world.sessions["agent"].clone();
    let (status, headers, _, _) = call(
        &world.router,
        Method::GET,
        "/console/programs/shop/members/m1",
        &cookies,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    assert!(
        headers
            .get("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'self'"))
    );
    let (status, ..) = call(
        &world.router,
        Method::POST,
        "/console/sign-out",
        &cookies,
        Some(format!("_csrf={}", encode(&csrf))),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The old cookie opens nothing any more.
    let (status, headers, _, _) = call(
        &world.router,
        Method::GET,
        "/console/programs/shop/members/m1",
        &cookies,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["location"].starts_with("/console/sign-in"));
}

/// The promotions page measures each promotion with a control group over the last 90
/// days: members rewarded and held out (here the one purchase's member in one of them),
/// and says the sample is too small to conclude.
#[tokio::test]
async fn the_promotions_page_measures_promotions_against_their_control_groups() {
    let world = world().await;
    let (cookies, _) = world.sessions["admin"].clone();
    let (status, _, _, body) = call(
        &world.router,
        Method::GET,
        "/console/programs/shop/promotions",
        &cookies,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = body
        .split("id=\"roi-measured\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for the measured promotion: {body}"));
    let counts: Vec<&str> = row
        .split("<td class=\"n\">")
        .skip(1)
        .take(2)
        .map(|c| c.split('<').next().unwrap_or(""))
        .collect();
    assert!(
        counts == ["1", "0"] || counts == ["0", "1"],
        "one member in one group: {counts:?}"
    );
    assert!(row.contains("sample too small"), "{row}");
    assert!(
        !body.contains("id=\"roi-club\""),
        "a promotion without a control group is not measured"
    );
    assert!(body.contains("<svg"), "the chart is drawn");
}
